"""Building blocks shared by the generator and the discriminator.

Convolutions follow PyTorch's padding conventions so that the networks compute the same
functions (and have the same parameter counts) as the official implementation. Kernels are
stored in Flax layout (kh, kw, in, out).
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

# The official init_weights('normal', 0.02).
conv_init = nn.initializers.normal(stddev=0.02)


def norm_scale_init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
  """BatchNorm scale ~ N(1, 0.02), as the official implementation initialises it."""
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


NORMS = ("batch", "instance", "none")


def uses_bias(norm: str) -> bool:
  """Convs followed by a norm need no bias only when the norm has its own shift (batch).

  The official code also drops biases with norm 'none', which leaves those layers with no
  offset at all; here 'none' keeps them.
  """
  return norm != "batch"


class Norm(nn.Module):
  """batch: BatchNorm (running stats in 'batch_stats'); instance: non-affine InstanceNorm."""

  kind: str
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    if self.kind == "batch":
      # PyTorch momentum 0.1 == Flax momentum 0.9.
      return nn.BatchNorm(
          use_running_average=not train, momentum=0.9, epsilon=1e-5,
          scale_init=norm_scale_init, dtype=self.dtype, name="bn")(x)
    if self.kind == "instance":
      # InstanceNorm2d(affine=False, track_running_stats=False) in the official code.
      return nn.InstanceNorm(
          epsilon=1e-5, use_bias=False, use_scale=False, dtype=self.dtype, name="in")(x)
    if self.kind == "none":
      return x
    raise ValueError(f"unknown norm {self.kind!r}; expected one of {NORMS}")


def conv(features: int, kernel: int, stride: int, padding: int, use_bias: bool,
         dtype: Dtype, name: str | None = None) -> nn.Conv:
  return nn.Conv(
      features, (kernel, kernel), strides=(stride, stride),
      padding=((padding, padding), (padding, padding)), use_bias=use_bias,
      kernel_init=conv_init, dtype=dtype, name=name)


def _transposed_conv_reference(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """PyTorch ConvTranspose2d(k=4, s=2, p=1) as one dilated convolution.

  out[2i - 1 + k] += x[i] * w[k]: dilate x by 2, pad by k - 1 - p = 2, correlate with the
  spatially flipped kernel. This is how lax/Flax lower a transposed convolution.
  """
  return jax.lax.conv_general_dilated(
      x, kernel[::-1, ::-1], window_strides=(1, 1), padding=((2, 2), (2, 2)),
      lhs_dilation=(2, 2), dimension_numbers=("NHWC", "HWIO", "NHWC"))


# Output phase p in {0, 1} along one axis reads input rows (m - 1, m) for p = 0 and (m, m + 1)
# for p = 1, with kernel taps (3, 1) and (2, 0) respectively.
_PHASE_TAPS = ((3, 1), (2, 0))
_PHASE_PADS = ((1, 0), (0, 1))


def _transposed_conv_phases(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """The same function as four stride-1 2x2 convolutions, one per output phase, interleaved.

  No multiplications by the zeros that input dilation inserts, and a weight gradient that
  XLA:CPU handles an order of magnitude faster than the dilated form's.
  """
  n, h, w, _ = x.shape
  rows = []
  for py in (0, 1):
    cols = []
    for px in (0, 1):
      k = kernel[jnp.array(_PHASE_TAPS[py])][:, jnp.array(_PHASE_TAPS[px])]
      cols.append(jax.lax.conv_general_dilated(
          x, k, window_strides=(1, 1), padding=(_PHASE_PADS[py], _PHASE_PADS[px]),
          dimension_numbers=("NHWC", "HWIO", "NHWC")))
    rows.append(jnp.stack(cols, axis=3))  # (n, h, w, px, c)
  out = jnp.stack(rows, axis=2)  # (n, h, py, w, px, c)
  return out.reshape(n, 2 * h, 2 * w, out.shape[-1])


TRANSPOSED_CONV_IMPLS: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "phase": _transposed_conv_phases,
    "conv_transpose": _transposed_conv_reference,
}


class UpConv(nn.Module):
  """ConvTranspose2d(kernel 4, stride 2, padding 1): doubles height and width.

  `kernel[ky, kx, i, o]` is PyTorch's `weight[i, o, ky, kx]`; `impl` picks how it is computed
  without changing parameters or results.
  """

  features: int
  use_bias: bool
  impl: str = "phase"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", conv_init, (4, 4, x.shape[-1], self.features), jnp.float32)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    y = TRANSPOSED_CONV_IMPLS[self.impl](x, kernel)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32
                         ).astype(self.dtype)
    return y
