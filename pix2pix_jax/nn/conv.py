"""The one place that decides how the networks' convolutions are computed on each platform.

`Conv` and `ConvTranspose` have nn.Conv's and nn.ConvTranspose's parameters ('kernel' in
(kh, kw, in, out) and 'bias') and call signatures, so the models take them as parts, as
flax's own examples take `conv: ModuleDef = nn.Conv`. Each picks its computation for the
platform the function is lowered for, with `jax.lax.platform_dependent` (never the default
backend at trace time, which is wrong under `jax.export` or AOT lowering for another
platform): on CPU the rewrites of nn/cpu_lowering.py, which XLA:CPU runs faster; on every
other platform plain lax convolutions with XLA's own gradients, so that cuDNN and XLA:TPU
choose their algorithms. Both branches compute the same function.

`impl` overrides the choice: "plain" lowers lax's convolutions everywhere (export to other
runtimes, reference checks); "kind=form,..." forces CPU forms (cpu_lowering.KINDS) for
benchmarks. `Parts` bundles a network's parts: AUTO (the default), PLAIN, and FLAX (flax's
own layers).
"""

import functools
from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from pix2pix_jax.nn import cpu_lowering

Dtype = Any
ModuleDef = Any
Initializer = Callable[..., jax.Array]
Padding = tuple[tuple[int, int], tuple[int, int]]
_NHWC = ("NHWC", "HWIO", "NHWC")


def plain_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding: Padding
               ) -> jax.Array:
  return jax.lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=_NHWC)


def plain_conv_transpose(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                         padding: Padding) -> jax.Array:
  """PyTorch's ConvTranspose2d with kernel[ky, kx, i, o] = weight[i, o, ky, kx]: the gradient
  of a convolution, i.e. lax's transposed convolution of the spatially flipped kernel."""
  return jax.lax.conv_transpose(x, kernel[::-1, ::-1], strides, padding,
                                dimension_numbers=_NHWC)


def per_platform(impl: str, cpu: Callable[..., jax.Array], plain: Callable[..., jax.Array],
                 *args: jax.Array) -> jax.Array:
  """cpu(*args) where the computation is lowered for CPU, plain(*args) elsewhere."""
  if impl == "plain":
    return plain(*args)
  return jax.lax.platform_dependent(*args, cpu=cpu, default=plain)


def _pairs(value: int | Sequence[int]) -> tuple[int, int]:
  return (value, value) if isinstance(value, int) else tuple(value)  # type: ignore[return-value]


class _Convolution(nn.Module):
  """The fields, parameters and per-platform call the two convolutions share."""

  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] = (1, 1)
  padding: Padding = ((0, 0), (0, 0))
  use_bias: bool = True
  dtype: Dtype = jnp.float32
  kernel_init: Initializer = nn.initializers.lecun_normal()
  impl: str = "auto"

  def forms(self, kernel_shape: tuple[int, ...], strides: tuple[int, int], padding: Padding
            ) -> tuple[Callable[..., jax.Array], Callable[..., jax.Array]]:
    """(CPU form, plain form) of this layer, each a function of (x, kernel)."""
    raise NotImplementedError

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kh, kw = _pairs(self.kernel_size)
    kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features),
                        jnp.float32)
    strides, padding = _pairs(self.strides), tuple(tuple(p) for p in self.padding)
    cpu, plain = self.forms(kernel.shape, strides, padding)
    y = per_platform(self.impl, cpu, plain, x.astype(self.dtype), kernel.astype(self.dtype))
    if self.use_bias:
      bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
      y = y + bias.astype(self.dtype)
    return y


class Conv(_Convolution):
  """nn.Conv with explicit padding: float32 parameters, computed in `dtype`."""

  def forms(self, kernel_shape, strides, padding):
    return (functools.partial(cpu_lowering.conv, strides=strides, padding=padding,
                              impl=self.impl),
            functools.partial(plain_conv, strides=strides, padding=padding))


class ConvTranspose(_Convolution):
  """nn.ConvTranspose's parameters and arguments (padding of the dilated input, as lax's),
  computing PyTorch's ConvTranspose2d: nn.ConvTranspose's function with the kernel
  spatially flipped, so official weights load as they are (`kernel = weight.transpose(2, 3,
  0, 1)`); ConvTranspose2d(4, 2, 1) is strides 2 and padding 2."""

  def forms(self, kernel_shape, strides, padding):
    plain = functools.partial(plain_conv_transpose, strides=strides, padding=padding)
    if cpu_lowering.is_up_conv(kernel_shape, strides, padding):
      return functools.partial(cpu_lowering.up_conv, impl=self.impl), plain
    return plain, plain


class Parts(NamedTuple):
  """The convolution modules a network is built from (nn.Conv's and nn.ConvTranspose's
  call signatures)."""

  conv: ModuleDef = Conv
  conv_transpose: ModuleDef = ConvTranspose

  @classmethod
  def with_impl(cls, impl: str) -> "Parts":
    """Parts whose computation is forced: "plain", or CPU forms "kind=form,..."."""
    cpu_lowering.parse_impl("auto" if impl == "plain" else impl)  # Refuse a bad name now.
    return cls(functools.partial(Conv, impl=impl), functools.partial(ConvTranspose, impl=impl))


AUTO = Parts()
PLAIN = Parts.with_impl("plain")
# flax's own layers: the same networks and parameter shapes; nn.ConvTranspose's kernel is
# PyTorch's flipped in space, so official weights do not load into it as they are.
FLAX = Parts(nn.Conv, nn.ConvTranspose)
