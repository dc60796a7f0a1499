"""What the train step optimises: a GAN loss, a reconstruction term and D's penalties.

Built from `config.loss` by `objective_from_config`; research on loss variants swaps one of
its parts (objectives.losses, objectives.regularizers) without touching the step.
"""

import dataclasses
from typing import Callable

import jax
import ml_collections

from pix2pix_jax.objectives import losses
from pix2pix_jax.objectives import regularizers


@dataclasses.dataclass(frozen=True)
class Objective:
  """What the step optimises; built from config.loss by `objective_from_config`."""

  gan: losses.GanLoss
  gan_weight: float
  reconstruction: Callable[[jax.Array, jax.Array], jax.Array]
  lambda_reconstruction: float
  # Penalties added to D's loss (before the halving), e.g. WGAN-GP's and R1; see regularizers.
  d_regularizers: tuple[regularizers.NamedRegularizer, ...] = ()
  # > 0: G also matches D's hidden features on real pairs (pix2pixHD), metric G_FM.
  feature_matching_weight: float = 0.0


def objective_from_config(loss_config: ml_collections.ConfigDict) -> Objective:
  return Objective(
      gan=losses.GAN_LOSSES[loss_config.gan_mode](real_label=loss_config.real_label),
      gan_weight=loss_config.gan_weight,
      reconstruction=losses.RECONSTRUCTION_LOSSES[loss_config.reconstruction],
      lambda_reconstruction=loss_config.lambda_l1,
      d_regularizers=regularizers.from_config(loss_config),
      feature_matching_weight=loss_config.feature_matching_weight)
