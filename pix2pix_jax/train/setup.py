"""A new run's pieces from a config: the optimizers, the jitted initial state and train step.

The trainer builds them once and then restores or creates the state; tests and benchmarks
that start from step 0 take `fresh`.
"""

from typing import Callable, NamedTuple

import jax
import ml_collections
import optax

from pix2pix_jax.nn import conv
from pix2pix_jax.train import optimizers
from pix2pix_jax.train import sharding
from pix2pix_jax.train import state as state_lib
from pix2pix_jax.train import step as step_lib
from pix2pix_jax.train.state import TrainState

Step = Callable[[TrainState, step_lib.Batch], tuple[TrainState, step_lib.Metrics]]


class Run(NamedTuple):
  """`create_state()` builds the initial state on the mesh (replicated); `step` is jitted."""

  create_state: Callable[[], TrainState]
  step: Step
  g_tx: optax.GradientTransformation
  d_tx: optax.GradientTransformation


def build(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, total_steps: int,
          parts: conv.Parts = conv.AUTO, steps_per_epoch: int | None = None) -> Run:
  g_tx, d_tx = optimizers.make_optimizers(config, total_steps, steps_per_epoch)
  create = jax.jit(lambda: state_lib.create_train_state(config, g_tx, d_tx),
                   out_shardings=sharding.replicated(mesh))
  return Run(create, step_lib.jit_train_step(config, mesh, g_tx, d_tx, parts), g_tx, d_tx)


class Fresh(NamedTuple):
  state: TrainState
  step: Step
  g_tx: optax.GradientTransformation
  d_tx: optax.GradientTransformation


def fresh(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, total_steps: int,
          parts: conv.Parts = conv.AUTO) -> Fresh:
  """The initial state and the step, for code that starts from step 0."""
  run = build(config, mesh, total_steps, parts)
  return Fresh(run.create_state(), run.step, run.g_tx, run.d_tx)
