"""An exponential moving average of the generator's weights (model.ema_decay > 0).

Averaged weights are a cheap, well-tested way to get smoother, less step-dependent outputs from
an adversarially trained G (Karras et al. 2018, Yazici et al. 2019). The average lives in
`TrainState.g_ema_params` (checkpointed with the rest of the state) and is what evaluation,
inference and export should use when it is on: read it through `generator_params` or
`PARAMS_FIELD`. BatchNorm statistics are not averaged: G's test mode normalises with the
batch's own statistics, and eval mode uses `g_batch_stats` as it is.
"""

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

PyTree = Any
EMA_FIELD = "g_ema_params"
RAW_FIELD = "g_params"


def enabled(model_config: ml_collections.ConfigDict) -> bool:
  return model_config.ema_decay > 0.0


def params_field(config: ml_collections.ConfigDict) -> str:
  """The TrainState field holding the weights to evaluate and export for this config."""
  return EMA_FIELD if enabled(config.model) else RAW_FIELD


def effective_decay(decay: float, step: jax.Array) -> jax.Array:
  """min(decay, (1 + t) / (10 + t)): early on the average forgets the random initial weights.

  The warm-up of TensorFlow's ExponentialMovingAverage(num_updates=t), so that short runs
  (and the first thousands of steps of long ones) do not evaluate a mostly untrained G.
  """
  t = step.astype(jnp.float32)
  return jnp.minimum(decay, (1.0 + t) / (10.0 + t))


def update(ema_params: PyTree, params: PyTree, decay: float, step: jax.Array) -> PyTree:
  """The average after G's update number `step` (0-based) produced `params`."""
  d = effective_decay(decay, step)
  return jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, ema_params, params)


def generator_params(state: Any, config: ml_collections.ConfigDict) -> PyTree:
  """G's weights to evaluate: the average when model.ema_decay > 0, else the trained ones."""
  return getattr(state, params_field(config))
