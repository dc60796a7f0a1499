"""The pix2pix objective as small pure functions: GAN losses on logits and reconstruction terms.

A GAN loss is a pair of functions over lists of logit maps (one per discriminator scale):
`discriminator(real, fake) -> (loss_on_real, loss_on_fake)` and
`generator(fake, real) -> loss`. The train step halves D's sum, as the paper does. Each
term is a mean over patches, summed over scales. Register a new one in `GAN_LOSSES`.
"""

from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

Logits = Sequence[jax.Array]


class GanLoss(NamedTuple):
  discriminator: Callable[[Logits, Logits], tuple[jax.Array, jax.Array]]
  generator: Callable[[Logits, Logits], jax.Array]
  # True when `generator` reads D's logits on real pairs (relativistic losses); the step then
  # runs D on real pairs once more, with D's updated weights.
  generator_needs_real: bool = False


def _sum_over_scales(fn: Callable[[jax.Array], jax.Array], maps: Logits) -> jax.Array:
  return sum(jnp.mean(fn(m)) for m in maps)


def bce_with_logits(logits: jax.Array, target_is_real: bool) -> jax.Array:
  """Elementwise BCE against a constant label, computed stably from logits."""
  return jax.nn.softplus(-logits) if target_is_real else jax.nn.softplus(logits)


def _vanilla() -> GanLoss:
  return GanLoss(
      discriminator=lambda real, fake: (
          _sum_over_scales(lambda l: bce_with_logits(l, True), real),
          _sum_over_scales(lambda l: bce_with_logits(l, False), fake)),
      generator=lambda fake, real: _sum_over_scales(lambda l: bce_with_logits(l, True), fake))


def _lsgan() -> GanLoss:
  return GanLoss(
      discriminator=lambda real, fake: (
          _sum_over_scales(lambda l: jnp.square(l - 1.0), real),
          _sum_over_scales(jnp.square, fake)),
      generator=lambda fake, real: _sum_over_scales(lambda l: jnp.square(l - 1.0), fake))


def _hinge() -> GanLoss:
  return GanLoss(
      discriminator=lambda real, fake: (
          _sum_over_scales(lambda l: jax.nn.relu(1.0 - l), real),
          _sum_over_scales(lambda l: jax.nn.relu(1.0 + l), fake)),
      generator=lambda fake, real: _sum_over_scales(lambda l: -l, fake))


def _wasserstein() -> GanLoss:
  """The critic's loss; the gradient penalty that makes it WGAN-GP is a D regulariser."""
  return GanLoss(
      discriminator=lambda real, fake: (
          _sum_over_scales(lambda l: -l, real), _sum_over_scales(lambda l: l, fake)),
      generator=lambda fake, real: _sum_over_scales(lambda l: -l, fake))


def _relativistic_average() -> GanLoss:
  """RaGAN (Jolicoeur-Martineau 2018): each side judged against the other's mean logit."""

  def rel(a: Logits, b: Logits, a_is_real: bool) -> jax.Array:
    return sum(jnp.mean(bce_with_logits(x - jnp.mean(y), a_is_real)) for x, y in zip(a, b))

  return GanLoss(
      discriminator=lambda real, fake: (rel(real, fake, True), rel(fake, real, False)),
      generator=lambda fake, real: rel(fake, real, True) + rel(real, fake, False),
      generator_needs_real=True)


GAN_LOSSES: dict[str, Callable[[], GanLoss]] = {
    "vanilla": _vanilla,
    "lsgan": _lsgan,
    "hinge": _hinge,
    "wgangp": _wasserstein,
    "ragan": _relativistic_average,
}


def l1(fake: jax.Array, target: jax.Array) -> jax.Array:
  return jnp.mean(jnp.abs(fake - target))


def l2(fake: jax.Array, target: jax.Array) -> jax.Array:
  return jnp.mean(jnp.square(fake - target))


def no_reconstruction(fake: jax.Array, target: jax.Array) -> jax.Array:
  return jnp.zeros((), jnp.float32)


RECONSTRUCTION_LOSSES: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "l1": l1,
    "l2": l2,
    "none": no_reconstruction,
}
