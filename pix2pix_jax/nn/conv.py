"""The one place that decides how the networks' convolutions are computed on each platform.

`Conv` and `ConvTranspose` have nn.Conv's and nn.ConvTranspose's parameters ('kernel' in
(kh, kw, in, out) and 'bias') and call signatures, so the models take them as parts, as
flax's own examples take `conv: ModuleDef = nn.Conv`. Each picks its computation for the
platform the function is lowered for, with `jax.lax.platform_dependent` (never the default
backend at trace time, which is wrong under `jax.export` or AOT lowering for another
platform): on CPU the rewrites of nn/cpu_lowering.py, which XLA:CPU runs faster (`cpu_conv`
and `cpu_up_conv` pick each layer kind's form); on every other platform plain lax
convolutions with XLA's own gradients, so that cuDNN and XLA:TPU choose their algorithms. Both branches compute the same function.

`impl` overrides the choice: "plain" lowers lax's convolutions everywhere (export to other
runtimes, reference checks); "kind=form,..." forces CPU forms (KINDS) for
benchmarks. `Parts` bundles a network's parts: AUTO (the default), PLAIN, and FLAX (flax's
own layers).
"""

import functools
from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from pix2pix_jax.nn import cpu_inference, cpu_lowering

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


# A CPU layer's form: "auto" (cpu_lowering's choices) or one for every layer of a kind, e.g.
# "down=gemm,up=s2d" (benchmarks compare forms this way).
KINDS = {"down": cpu_lowering.STRIDED_CONV_IMPLS, "up": cpu_lowering.TRANSPOSED_CONV_IMPLS,
         "stride1": cpu_lowering.STRIDE1_CONV_IMPLS}


# The collection that holds kernels in the forms CPU inference computes with
# (nn/generate.prepare): absent in training, where the step reads only the kernels.
PREPARED = "prepared"


def parse_impl(impl: str) -> dict[str, str]:
  """"auto" or "kind=form,..." -> {kind: form}; unnamed kinds stay "auto"."""
  chosen = {kind: "auto" for kind in KINDS}
  if impl == "auto":
    return chosen
  for item in impl.split(","):
    kind, sep, form = item.partition("=")
    if not sep or kind not in KINDS or form not in KINDS[kind]:
      options = "; ".join(f"{k}: {', '.join(v)}" for k, v in KINDS.items())
      raise ValueError(f"convolution impl {item!r} is not kind=form ({options})")
    chosen[kind] = form
  return chosen


def cpu_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding: Padding,
             impl: str = "auto") -> jax.Array:
  """lax.conv_general_dilated(x, kernel, strides, padding) in the form chosen for its kind."""
  forms = parse_impl(impl)
  kh, kw = kernel.shape[:2]
  if is_down_conv(kernel.shape, strides, padding):
    return KINDS["down"][forms["down"]](x, kernel)
  if (kh, kw, strides) == (4, 4, (1, 1)) and max(max(p) for p in padding) < 4:
    return KINDS["stride1"][forms["stride1"]](x, kernel, padding)
  if strides[0] == strides[1]:
    return cpu_lowering.conv_gemm_dw(x, kernel, strides[0], padding)
  return jax.lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=_NHWC)


def is_down_conv(kernel_shape: tuple[int, ...], strides: tuple[int, int], padding: Padding
                 ) -> bool:
  """Whether a convolution is the U-Net's Conv2d(4, 2, 1), the one with CPU forms "down"."""
  return (tuple(kernel_shape[:2]), strides, padding) == ((4, 4), (2, 2), ((1, 1), (1, 1)))


def is_up_conv(kernel_shape: tuple[int, ...], strides: tuple[int, int], padding: Padding
               ) -> bool:
  """Whether a transposed convolution is the U-Net's ConvTranspose2d(4, 2, 1), the one with
  CPU forms (in lax's padding of the dilated input: 4 - 1 - 1 = 2 on each side)."""
  return (tuple(kernel_shape[:2]), strides, padding) == ((4, 4), (2, 2), ((2, 2), (2, 2)))


def cpu_up_conv(x: jax.Array, kernel: jax.Array, impl: str = "auto") -> jax.Array:
  """PyTorch's ConvTranspose2d(k=4, s=2, p=1) in the form chosen for kind "up"."""
  return KINDS["up"][parse_impl(impl)["up"]](x, kernel)


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

  def kind(self, kernel_shape: tuple[int, ...], strides: tuple[int, int], padding: Padding
           ) -> str | None:
    """The layer's kind in KINDS, where inference_form may split its CPU form."""
    raise NotImplementedError

  def inference_form(self, x_shape: tuple[int, ...], kernel_shape: tuple[int, ...],
                     strides: tuple[int, int], padding: Padding
                     ) -> cpu_inference.InferenceForm | None:
    kind = None if self.impl == "plain" else self.kind(kernel_shape, strides, padding)
    if kind is None:
      return None
    return cpu_inference.inference_form(kind, parse_impl(self.impl)[kind], x_shape,
                                        kernel_shape, jnp.dtype(self.dtype))

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kh, kw = _pairs(self.kernel_size)
    kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features),
                        jnp.float32)
    strides, padding = _pairs(self.strides), tuple(tuple(p) for p in self.padding)
    cpu, plain = self.forms(kernel.shape, strides, padding)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    split = self.inference_form(x.shape, kernel.shape, strides, padding)
    # Not at init, where every collection is mutable: only prepare_kernels asks for it.
    if split and not self.is_initializing() and (self.is_mutable_collection(PREPARED)
                                                 or self.has_variable(PREPARED, "kernel")):
      # The kernel-only work of the CPU form, done once by nn/generate.prepare.
      prepared = self.variable(PREPARED, "kernel", split.prepare, kernel).value
      y = per_platform(self.impl, lambda x, k, p: split.apply(x, p),
                       lambda x, k, p: plain(x, k), x, kernel, prepared)
    else:
      y = per_platform(self.impl, cpu, plain, x, kernel)
    if self.use_bias:
      bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
      y = y + bias.astype(self.dtype)
    return y


class Conv(_Convolution):
  """nn.Conv with explicit padding: float32 parameters, computed in `dtype`."""

  def forms(self, kernel_shape, strides, padding):
    return (functools.partial(cpu_conv, strides=strides, padding=padding,
                              impl=self.impl),
            functools.partial(plain_conv, strides=strides, padding=padding))

  def kind(self, kernel_shape, strides, padding):
    return "down" if is_down_conv(kernel_shape, strides, padding) else None


class ConvTranspose(_Convolution):
  """nn.ConvTranspose's parameters and arguments (padding of the dilated input, as lax's),
  computing PyTorch's ConvTranspose2d: nn.ConvTranspose's function with the kernel
  spatially flipped, so official weights load as they are (`kernel = weight.transpose(2, 3,
  0, 1)`); ConvTranspose2d(4, 2, 1) is strides 2 and padding 2."""

  def forms(self, kernel_shape, strides, padding):
    plain = functools.partial(plain_conv_transpose, strides=strides, padding=padding)
    if is_up_conv(kernel_shape, strides, padding):
      return functools.partial(cpu_up_conv, impl=self.impl), plain
    return plain, plain

  def kind(self, kernel_shape, strides, padding):
    return "up" if is_up_conv(kernel_shape, strides, padding) else None


class Parts(NamedTuple):
  """The convolution modules a network is built from (nn.Conv's and nn.ConvTranspose's
  call signatures)."""

  conv: ModuleDef = Conv
  conv_transpose: ModuleDef = ConvTranspose

  @classmethod
  def with_impl(cls, impl: str) -> "Parts":
    """Parts whose computation is forced: "plain", or CPU forms "kind=form,..."."""
    parse_impl("auto" if impl == "plain" else impl)  # Refuse a bad name now.
    return cls(functools.partial(Conv, impl=impl), functools.partial(ConvTranspose, impl=impl))


AUTO = Parts()
PLAIN = Parts.with_impl("plain")
# flax's own layers: the same networks and parameter shapes; nn.ConvTranspose's kernel is
# PyTorch's flipped in space, so official weights do not load into it as they are.
FLAX = Parts(nn.Conv, nn.ConvTranspose)
