"""Discriminator regularisers: penalties added to D's loss, each a pure function.

A regulariser is `fn(d_logits, x, real, fake, key) -> scalar`, where `d_logits(x, y)` is D's
per-scale logit maps for the pair (x, y) with D's current weights (train mode, its state
updates discarded), `real` and `fake` are the target and G's output (no gradient to G), and
`key` is this step's randomness for it. The train step adds each one's value to D's summed
loss before the paper's halving, so a weight means what its paper says relative to the GAN
loss: WGAN-GP's critic + lambda * GP, Mescheder et al.'s L_D + gamma / 2 * R1.

Penalties on multi-scale D sum over scales, as the losses do. On a PatchGAN the gradient is
that of the sum of the scale's logits, as the official `cal_gradient_penalty` takes it
(grad_outputs of ones).
"""

import functools
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import ml_collections

DLogits = Callable[[jax.Array, jax.Array], Sequence[jax.Array]]
Regularizer = Callable[[DLogits, jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]


class NamedRegularizer(NamedTuple):
  name: str  # Reported as metric `D_<name>`.
  fn: Regularizer


def _per_scale_input_grads(d_logits: DLogits, x: jax.Array, y: jax.Array,
                           ) -> list[tuple[jax.Array, jax.Array]]:
  """d(sum of scale s's logits) / d(x, y), one (gx, gy) per scale, from one forward pass."""
  maps, vjp = jax.vjp(lambda x, y: list(d_logits(x, y)), x, y)
  grads = []
  for s in range(len(maps)):
    cotangent = [jnp.ones_like(m) if i == s else jnp.zeros_like(m) for i, m in enumerate(maps)]
    grads.append(vjp(cotangent))
  return grads


def _per_sample_sq_norm(*grads: jax.Array) -> jax.Array:
  return sum(jnp.sum(jnp.square(g.reshape(g.shape[0], -1)), axis=1) for g in grads)


def gradient_penalty(d_logits: DLogits, x: jax.Array, real: jax.Array, fake: jax.Array,
                     key: jax.Array, *, weight: float = 10.0, target: float = 1.0,
                     eps: float = 1e-16) -> jax.Array:
  """WGAN-GP (Gulrajani et al. 2017): weight * E[(||grad D(pair_hat)|| - target)^2].

  pair_hat = alpha * (x, real) + (1 - alpha) * (x, fake), one alpha ~ U[0, 1] per sample, and
  the norm is per sample over the whole pair, as the official `cal_gradient_penalty` (type
  mixed) does on the concatenated pair; `eps` keeps the norm's gradient finite at zero.
  """
  alpha = jax.random.uniform(key, (real.shape[0],) + (1,) * (real.ndim - 1), real.dtype)
  interpolated = alpha * real + (1.0 - alpha) * fake
  total = jnp.zeros((), jnp.float32)
  for gx, gy in _per_scale_input_grads(d_logits, x, interpolated):
    norm = jnp.sqrt(_per_sample_sq_norm(gx, gy) + eps)
    total += jnp.mean(jnp.square(norm - target))
  return weight * total


def r1_penalty(d_logits: DLogits, x: jax.Array, real: jax.Array, fake: jax.Array,
               key: jax.Array, *, gamma: float = 10.0) -> jax.Array:
  """R1 (Mescheder et al. 2018): gamma / 2 * E[||grad_y D(x, y)||^2] on real pairs.

  The gradient is taken with respect to the image y only: x is the condition, not data D
  tells apart (StyleGAN2-ADA penalises conditional D the same way).
  """
  del fake, key
  total = jnp.zeros((), jnp.float32)
  for _, gy in _per_scale_input_grads(d_logits, x, real):
    total += jnp.mean(_per_sample_sq_norm(gy))
  return 0.5 * gamma * total


def from_config(loss_config: ml_collections.ConfigDict) -> tuple[NamedRegularizer, ...]:
  """The D regularisers config.loss switches on: WGAN-GP's penalty with wgangp, R1 if gamma > 0."""
  regs = []
  if loss_config.gan_mode == "wgangp" and loss_config.lambda_gp > 0:
    regs.append(NamedRegularizer(
        "gp", functools.partial(gradient_penalty, weight=loss_config.lambda_gp)))
  if loss_config.r1_gamma > 0:
    regs.append(NamedRegularizer("r1", functools.partial(r1_penalty, gamma=loss_config.r1_gamma)))
  return tuple(regs)
