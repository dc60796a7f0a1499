"""The pix2pix objective as small pure functions: GAN losses on logits and reconstruction terms.

A GAN loss is a pair of functions over lists of logit maps (one per discriminator scale):
`discriminator(real, fake) -> (loss_on_real, loss_on_fake)` and
`generator(fake, real) -> loss`. The train step halves D's sum, as the paper does. Each
term is a mean over patches, summed over scales. Register a new one in `GAN_LOSSES`: a
factory taking `real_label` (the target D is taught for real pairs; 1.0 is the paper's, lower
values are one-sided label smoothing, which only label-based losses accept).
"""

from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

Logits = Sequence[jax.Array]
Features = Sequence[Sequence[jax.Array]]


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


def bce_with_soft_label(logits: jax.Array, label: float) -> jax.Array:
  """Elementwise BCE against a constant label in [0, 1]; the hard-label form at 0 and 1."""
  if label == 1.0:
    return bce_with_logits(logits, True)
  if label == 0.0:
    return bce_with_logits(logits, False)
  return label * jax.nn.softplus(-logits) + (1.0 - label) * jax.nn.softplus(logits)


def _no_label_smoothing(name: str, real_label: float) -> None:
  if real_label != 1.0:
    raise ValueError(f"loss.real_label={real_label} (label smoothing) applies to the label-based "
                     f"losses vanilla and lsgan, not to {name}; leave it at 1.0.")


def vanilla(real_label: float = 1.0) -> GanLoss:
  """The paper's: BCE on logits, non-saturating for G (G's target is always 1)."""
  return GanLoss(
      discriminator=lambda real, fake: (
          _sum_over_scales(lambda l: bce_with_soft_label(l, real_label), real),
          _sum_over_scales(lambda l: bce_with_logits(l, False), fake)),
      generator=lambda fake, real: _sum_over_scales(lambda l: bce_with_logits(l, True), fake))


def lsgan(real_label: float = 1.0) -> GanLoss:
  """Least squares (Mao et al. 2017) with the official 1/0 targets."""
  return GanLoss(
      discriminator=lambda real, fake: (
          _sum_over_scales(lambda l: jnp.square(l - real_label), real),
          _sum_over_scales(jnp.square, fake)),
      generator=lambda fake, real: _sum_over_scales(lambda l: jnp.square(l - 1.0), fake))


def hinge(real_label: float = 1.0) -> GanLoss:
  _no_label_smoothing("hinge", real_label)
  return GanLoss(
      discriminator=lambda real, fake: (
          _sum_over_scales(lambda l: jax.nn.relu(1.0 - l), real),
          _sum_over_scales(lambda l: jax.nn.relu(1.0 + l), fake)),
      generator=lambda fake, real: _sum_over_scales(lambda l: -l, fake))


def wasserstein(real_label: float = 1.0) -> GanLoss:
  """The critic's loss; the gradient penalty that makes it WGAN-GP is a D regulariser.

  `regularizers.from_config` adds that penalty (loss.lambda_gp) whenever gan_mode is wgangp,
  which the official implementation's wgangp mode leaves out.
  """
  _no_label_smoothing("wgangp", real_label)
  return GanLoss(
      discriminator=lambda real, fake: (
          _sum_over_scales(lambda l: -l, real), _sum_over_scales(lambda l: l, fake)),
      generator=lambda fake, real: _sum_over_scales(lambda l: -l, fake))


def relativistic_average(real_label: float = 1.0) -> GanLoss:
  """RaGAN (Jolicoeur-Martineau 2018): each side judged against the other's mean logit."""
  _no_label_smoothing("ragan", real_label)

  def rel(a: Logits, b: Logits, a_is_real: bool) -> jax.Array:
    return sum(jnp.mean(bce_with_logits(x - jnp.mean(y), a_is_real)) for x, y in zip(a, b))

  return GanLoss(
      discriminator=lambda real, fake: (rel(real, fake, True), rel(fake, real, False)),
      generator=lambda fake, real: rel(fake, real, True) + rel(real, fake, False),
      generator_needs_real=True)


GAN_LOSSES: dict[str, Callable[..., GanLoss]] = {
    "vanilla": vanilla,
    "lsgan": lsgan,
    "hinge": hinge,
    "wgangp": wasserstein,
    "ragan": relativistic_average,
}


def feature_matching(real_features: Features, fake_features: Features) -> jax.Array:
  """pix2pixHD's discriminator feature matching: L1 between D's activations on real and fake.

  Every activation but the logits, weighted 4 / (number of activations) per scale and averaged
  over scales, as pix2pixHD weights its `lambda_feat` term. Real features carry no gradient.
  """
  total = jnp.zeros((), jnp.float32)
  for real, fake in zip(real_features, fake_features):
    hidden = list(zip(real[:-1], fake[:-1]))
    for r, f in hidden:
      total += 4.0 / len(hidden) * jnp.mean(jnp.abs(f - jax.lax.stop_gradient(r)))
  return total / len(real_features)


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
