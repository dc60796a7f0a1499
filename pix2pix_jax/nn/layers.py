"""Normalisation layers and initialisers shared by the generator and the discriminator.

They follow the official implementation's choices (PyTorch's BatchNorm2d, non-affine
InstanceNorm, init_weights(init_type, init_gain)), so that the networks compute the same
functions and start from the same distributions. Convolutions are in nn/conv.py.
"""

import dataclasses
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any
Shape = tuple[int, ...]
Initializer = Callable[..., jax.Array]

INIT_TYPES = ("normal", "xavier", "kaiming", "orthogonal")


# Frozen dataclasses rather than closures: equal by value, so two modules built from one
# config compare (and hash) equal.
@dataclasses.dataclass(frozen=True)
class KernelInit:
  """The official init_weights of a Conv2d weight (`transposed`: a ConvTranspose2d's), for
  our (kh, kw, in, out) kernels: normal(0, gain), xavier_normal(gain), kaiming_normal(a=0,
  fan_in; the official code passes it no gain) or orthogonal(gain).

  torch reads the fans off its weight's layout: fan_in = weight.size(1) * kh * kw, which is
  the input channels of Conv2d's (out, in, kh, kw) but the *output* channels of
  ConvTranspose2d's (in, out, kh, kw); orthogonal flattens the weight to (size(0), rest).
  """

  init_type: str = "normal"
  gain: float = 0.02
  transposed: bool = False

  def __post_init__(self):
    if self.init_type not in INIT_TYPES:
      raise ValueError(f"unknown init_type {self.init_type!r}; expected one of {INIT_TYPES}")

  def __call__(self, key: jax.Array, shape: Shape, dtype: Dtype = jnp.float32) -> jax.Array:
    # Our axes holding torch's weight.size(1) (fan_in) and weight.size(0) (fan_out, rows).
    in_axis, out_axis = (-1, -2) if self.transposed else (-2, -1)
    initializers = jax.nn.initializers
    if self.init_type == "normal":
      init = initializers.normal(self.gain)
    elif self.init_type == "xavier":
      init = initializers.variance_scaling(self.gain**2, "fan_avg", "normal", in_axis, out_axis)
    elif self.init_type == "kaiming":
      init = initializers.variance_scaling(2.0, "fan_in", "normal", in_axis, out_axis)
    else:  # orthogonal
      # Our (rest, size(0)) matrix with orthonormal columns is torch's (size(0), rest) one
      # with orthonormal rows, transposed: the same distribution.
      init = initializers.orthogonal(self.gain, column_axis=out_axis)
    return init(key, shape, dtype)


@dataclasses.dataclass(frozen=True)
class ScaleInit:
  """BatchNorm scale ~ N(1, gain), as init_weights sets it whatever the init_type."""

  gain: float = 0.02

  def __call__(self, key: jax.Array, shape: Shape, dtype: Dtype = jnp.float32) -> jax.Array:
    return 1.0 + self.gain * jax.random.normal(key, shape, dtype)


class Init(NamedTuple):
  """A network's initialisers: convolutions, transposed convolutions, BatchNorm scales.
  The defaults are init_weights('normal', 0.02), the official default."""

  conv: KernelInit = KernelInit()
  conv_transpose: KernelInit = KernelInit(transposed=True)
  norm_scale: ScaleInit = ScaleInit()


def initializers(init_type: str = "normal", gain: float = 0.02) -> Init:
  """The official init_weights(init_type, init_gain) (biases are zero in every layer)."""
  return Init(KernelInit(init_type, gain), KernelInit(init_type, gain, transposed=True),
              ScaleInit(gain))


NORMS = ("batch", "instance", "none")


def uses_bias(norm: str) -> bool:
  """Convs followed by a norm need no bias only when the norm has its own shift (batch).

  The official code also drops biases with norm 'none', which leaves those layers with no
  offset at all; here 'none' keeps them.
  """
  return norm != "batch"


class BatchNorm(nn.Module):
  """PyTorch's BatchNorm2d: momentum 0.1, eps 1e-5, and an *unbiased* running variance.

  Training normalises with the batch's biased variance, as both frameworks do, but PyTorch
  accumulates var * n / (n - 1) into the running variance and Flax's nn.BatchNorm the biased
  one; at the U-Net's inner levels (2x2 maps at batch 1: n = 4) that changes eval-mode
  outputs by a third. Variables are named as nn.BatchNorm's: params scale/bias, batch_stats
  mean/var. Under jit with a batch-sharded input, the means are over the global batch.
  """

  dtype: Dtype = jnp.float32
  momentum: float = 0.1
  epsilon: float = 1e-5
  scale_init: ScaleInit = ScaleInit()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    c = x.shape[-1]
    scale = self.param("scale", self.scale_init, (c,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    running_mean = self.variable("batch_stats", "mean", jnp.zeros, (c,), jnp.float32)
    running_var = self.variable("batch_stats", "var", jnp.ones, (c,), jnp.float32)
    if train:
      axes = tuple(range(x.ndim - 1))
      xf = x.astype(jnp.float32)
      mean = jnp.mean(xf, axes)
      var = jnp.mean(jnp.square(xf - mean), axes)
      if not self.is_initializing():
        n = x.size // c
        running_mean.value = (1 - self.momentum) * running_mean.value + self.momentum * mean
        running_var.value = ((1 - self.momentum) * running_var.value
                             + self.momentum * var * (n / max(n - 1, 1)))
    else:
      mean, var = running_mean.value, running_var.value
    mul = scale * jax.lax.rsqrt(var + self.epsilon)
    return (x * mul.astype(self.dtype) + (bias - mean * mul).astype(self.dtype)).astype(self.dtype)


class Norm(nn.Module):
  """batch: BatchNorm (running stats in 'batch_stats'); instance: non-affine InstanceNorm."""

  kind: str
  dtype: Dtype = jnp.float32
  scale_init: ScaleInit = ScaleInit()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    if self.kind == "batch":
      return BatchNorm(self.dtype, scale_init=self.scale_init, name="bn")(x, train)
    if self.kind == "instance":
      # InstanceNorm2d(affine=False, track_running_stats=False) in the official code.
      return nn.InstanceNorm(
          epsilon=1e-5, use_bias=False, use_scale=False, dtype=self.dtype, name="in")(x)
    if self.kind == "none":
      return x
    raise ValueError(f"unknown norm {self.kind!r}; expected one of {NORMS}")
