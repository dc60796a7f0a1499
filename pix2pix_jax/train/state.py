"""Everything training changes, as one pytree of arrays.

Keeping the whole state in arrays (no functions, no Python scalars) lets one `jax.jit` donate
and shard it, and one orbax call save and restore it, Adam moments included.
"""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from pix2pix_jax.nn import models

PyTree = Any


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: D+G updates done.
  rng: jax.Array  # uint32 key data; the step's randomness is fold_in(rng, step).
  g_params: PyTree
  g_batch_stats: PyTree
  g_opt_state: PyTree
  d_params: PyTree
  d_batch_stats: PyTree
  d_opt_state: PyTree
  nonfinite_steps: jax.Array  # int32 scalar: steps skipped for a NaN/Inf loss or gradient.
  # model.ema_decay > 0: an exponential moving average of g_params, the weights to evaluate
  # and export (`ema.generator_params`); {} when off, so the state is unchanged in size.
  g_ema_params: PyTree = flax.struct.field(default_factory=dict)


def init_variables(module: flax.linen.Module, key: jax.Array, *inputs: jax.Array
                   ) -> tuple[PyTree, PyTree]:
  """(params, batch_stats) of a freshly initialised network; batch_stats {} without BN."""
  variables = module.init(key, *inputs, train=False)
  return variables["params"], variables.get("batch_stats", {})


def create_train_state(config: ml_collections.ConfigDict, g_tx: optax.GradientTransformation,
                       d_tx: optax.GradientTransformation) -> TrainState:
  """The initial state, a pure function of config.seed (jit it to build it on the devices)."""
  m, size = config.model, config.data.crop_size
  x = jnp.zeros((1, size, size, m.input_nc), jnp.float32)
  y = jnp.zeros((1, size, size, m.output_nc), jnp.float32)
  key = jax.random.key(config.seed)
  g_key, d_key, train_key = jax.random.split(key, 3)
  g_params, g_batch_stats = init_variables(models.make_generator(m), g_key, x)
  d_params, d_batch_stats = init_variables(models.make_discriminator(m), d_key, x, y)
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      rng=jax.random.key_data(train_key),
      g_params=g_params, g_batch_stats=g_batch_stats, g_opt_state=g_tx.init(g_params),
      d_params=d_params, d_batch_stats=d_batch_stats, d_opt_state=d_tx.init(d_params),
      nonfinite_steps=jnp.zeros((), jnp.int32),
      g_ema_params=jax.tree.map(jnp.copy, g_params) if m.ema_decay > 0 else {})


def total_train_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
  if config.num_train_steps > 0:
    return config.num_train_steps
  return (config.n_epochs + config.n_epochs_decay) * steps_per_epoch
