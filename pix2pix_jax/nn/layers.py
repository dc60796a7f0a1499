"""Normalisation layers and initialisers shared by the generator and the discriminator.

They follow the official implementation's choices (PyTorch's BatchNorm2d, non-affine
InstanceNorm, init_weights('normal', 0.02)), so that the networks compute the same functions.
Convolutions are in nn/conv.py.
"""

from typing import Any

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

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    c = x.shape[-1]
    scale = self.param("scale", norm_scale_init, (c,), jnp.float32)
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

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    if self.kind == "batch":
      return BatchNorm(self.dtype, name="bn")(x, train)
    if self.kind == "instance":
      # InstanceNorm2d(affine=False, track_running_stats=False) in the official code.
      return nn.InstanceNorm(
          epsilon=1e-5, use_bias=False, use_scale=False, dtype=self.dtype, name="in")(x)
    if self.kind == "none":
      return x
    raise ValueError(f"unknown norm {self.kind!r}; expected one of {NORMS}")
