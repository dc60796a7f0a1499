"""The optimizers and learning-rate schedules: the paper's Adam for G and for D.

optim.lr_policy picks the schedule (`learning_rate_schedule`): linear_per_step (the
default: constant, then linear to 0, step by step) or one of the official get_scheduler's
policies, stepped once an epoch as there: linear, step, plateau, cosine. A plateau run keeps
ReduceLROnPlateau's state (LR scale, best value, bad validations) in each optimizer's state,
so a resume continues it exactly and a change of LR is a change of array values, never a
recompilation of the step; the trainer feeds it the validation L1 (`reduce_on_plateau`).

`guarded_adam` is optax.adam's arithmetic and state with the non-finite-step guard inside:
`where(finite, new, old)` over the moments, in place. Done after optax.adam instead, XLA:CPU
keeps copies of both moments alive across their update; materialising the guarded moments
once (on CPU, see nn.cpu_lowering) halves the update's memory traffic (benchmarks/RESULTS.md).
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from pix2pix_jax.config import validation
from pix2pix_jax.nn import cpu_lowering


LR_POLICIES = validation.LR_POLICIES
# torch.optim.lr_scheduler.ReduceLROnPlateau as the official get_scheduler builds it: mode
# min, factor 0.2, threshold 0.01 (relative), patience 5; torch's defaults for the rest.
PLATEAU_FACTOR, PLATEAU_THRESHOLD, PLATEAU_PATIENCE, PLATEAU_EPS = 0.2, 0.01, 5, 1e-8
STEP_GAMMA = 0.1  # The official StepLR's gamma.


class PlateauState(NamedTuple):
  """ReduceLROnPlateau's state: the LR is the schedule's times `scale`."""
  scale: jax.Array  # float32 scalar, 1 until the first reduction.
  best: jax.Array  # float32 scalar: the best validation value so far (inf before any).
  num_bad: jax.Array  # int32 scalar: validations since the last improvement.


def guarded_adam(learning_rate: optax.Schedule, b1: float, b2: float, eps: float = 1e-8,
                 plateau: bool = False) -> optax.GradientTransformationExtraArgs:
  """Adam with a schedule; `update(grads, state, params, finite=flag)` leaves the state as it
  was where `flag` is false (updates are then garbage: select the params with the same flag).

  The state is optax.adam's, (ScaleByAdamState, ScaleByScheduleState), so checkpoints and
  optax's own `update` calls are interchangeable with it; `plateau` appends a PlateauState
  whose scale multiplies the learning rate.
  """

  def init(params):
    state = (optax.ScaleByAdamState(count=jnp.zeros([], jnp.int32),
                                    mu=optax.tree.zeros_like(params),
                                    nu=optax.tree.zeros_like(params)),
             optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32)))
    if plateau:
      state += (PlateauState(scale=jnp.ones([], jnp.float32),
                             best=jnp.full([], jnp.inf, jnp.float32),
                             num_bad=jnp.zeros([], jnp.int32)),)
    return state

  def update(grads, state, params=None, *, finite: jax.Array | bool = True, **unused_extra):
    del params, unused_extra
    moments, schedule = state[:2]
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    mu = keep(optax.tree.update_moment(grads, moments.mu, b1, 1), moments.mu)
    nu = keep(optax.tree.update_moment_per_elem_norm(grads, moments.nu, b2, 2), moments.nu)
    # On CPU the guarded moments are materialised once (cpu_lowering.materialise).
    mu, nu = jax.lax.platform_dependent((mu, nu), cpu=cpu_lowering.materialise,
                                        default=lambda moments: moments)
    count = optax.safe_increment(moments.count)
    mu_hat = optax.tree.bias_correction(mu, b1, count)
    nu_hat = optax.tree.bias_correction(nu, b2, count)
    step_size = -learning_rate(schedule.count) * lr_scale(state)
    updates = jax.tree.map(lambda m, v: step_size * (m / (jnp.sqrt(v) + eps)), mu_hat, nu_hat)
    new_state = (optax.ScaleByAdamState(count=keep(count, moments.count), mu=mu, nu=nu),
                 optax.ScaleByScheduleState(
                     count=keep(optax.safe_increment(schedule.count), schedule.count)))
    return updates, new_state + tuple(state[2:])

  return optax.GradientTransformationExtraArgs(init, update)


def apply(params, updates, finite: jax.Array | bool = True):
  """params + updates where `finite`, params unchanged elsewhere (one fused pass each)."""
  return jax.tree.map(lambda p, u: jnp.where(finite, p + u.astype(p.dtype), p), params, updates)


def lr_scale(opt_state) -> jax.Array | float:
  """The plateau policy's LR factor in a guarded_adam state (1 for the other policies)."""
  return opt_state[2].scale if len(opt_state) > 2 else 1.0


def reduce_on_plateau(opt_state, metric: float, base_lr: float):
  """ReduceLROnPlateau.step(metric) on a guarded_adam state with a PlateauState.

  Host-side, on the values of one validation: the new leaves have the old ones' shapes,
  dtypes and shardings, so the jitted step that takes them is not compiled again.
  """
  plateau = jax.device_get(opt_state[2])
  scale, best, num_bad = float(plateau.scale), float(plateau.best), int(plateau.num_bad)
  metric = float(metric)
  if metric < best * (1.0 - PLATEAU_THRESHOLD):  # mode min, relative threshold
    best, num_bad = metric, 0
  else:
    num_bad += 1  # NaN is never better, as in torch.
  if num_bad > PLATEAU_PATIENCE:
    if base_lr * scale * (1.0 - PLATEAU_FACTOR) > PLATEAU_EPS:  # torch's eps on the LR step
      scale *= PLATEAU_FACTOR
    num_bad = 0
  new = PlateauState(scale=np.float32(scale), best=np.float32(best), num_bad=np.int32(num_bad))
  new = jax.tree.map(lambda v, old: jax.device_put(v, old.sharding), new, opt_state[2])
  return tuple(opt_state[:2]) + (new,) + tuple(opt_state[3:])


def _epochs(config: ml_collections.ConfigDict, total_steps: int, steps_per_epoch: int) -> int:
  """Epochs in the run: n_epochs + n_epochs_decay, or what num_train_steps covers."""
  if config.num_train_steps > 0:
    return max(1, math.ceil(total_steps / steps_per_epoch))
  return max(1, config.n_epochs + config.n_epochs_decay)


def learning_rate_schedule(base_lr: float, config: ml_collections.ConfigDict,
                           total_steps: int, steps_per_epoch: int | None = None
                           ) -> optax.Schedule:
  """The LR at each optimizer step for optim.lr_policy (plateau: before its scale).

  linear_per_step: constant, then linear decay to 0 by the last step, split in the ratio
  n_epochs : n_epochs_decay. The others are the official get_scheduler's rules of the
  0-based epoch e = step // steps_per_epoch (the LR changes between epochs only):
  linear lr * (1 - max(0, e + 1 - n_epochs) / (n_epochs_decay + 1)); step
  lr * 0.1 ** (e // optim.lr_decay_iters); cosine lr * (1 + cos(pi * e / E)) / 2 over the
  run's E epochs (the official's T_max is n_epochs; the same when n_epochs_decay is 0);
  plateau lr. `steps_per_epoch` defaults to total_steps over n_epochs + n_epochs_decay.
  """
  policy = config.optim.get("lr_policy", "linear_per_step")
  if policy not in LR_POLICIES:
    raise ValueError(f"optim.lr_policy must be one of {LR_POLICIES}, got {policy!r}")
  epochs = config.n_epochs + config.n_epochs_decay
  if policy == "linear_per_step":
    decay_start = round(total_steps * config.n_epochs / epochs) if epochs else 0
    return optax.join_schedules(
        [optax.constant_schedule(base_lr),
         optax.linear_schedule(base_lr, 0.0, max(total_steps - decay_start, 1))],
        [decay_start])
  if steps_per_epoch is None:
    steps_per_epoch = max(1, total_steps // max(epochs, 1))
  run_epochs = _epochs(config, total_steps, steps_per_epoch)
  n_epochs, n_decay = config.n_epochs, config.n_epochs_decay
  decay_iters = config.optim.get("lr_decay_iters", 50)

  def schedule(count):
    epoch = (jnp.asarray(count) // steps_per_epoch).astype(jnp.float32)
    if policy == "linear":
      factor = 1.0 - jnp.maximum(0.0, epoch + 1 - n_epochs) / (n_decay + 1)
    elif policy == "step":
      factor = STEP_GAMMA ** jnp.floor(epoch / decay_iters)
    elif policy == "cosine":
      factor = (1.0 + jnp.cos(jnp.pi * epoch / run_epochs)) / 2.0
    else:  # plateau: the PlateauState's scale does the rest.
      factor = jnp.ones_like(epoch)
    return base_lr * factor

  return schedule


def make_optimizers(config: ml_collections.ConfigDict, total_steps: int,
                    steps_per_epoch: int | None = None
                    ) -> tuple[optax.GradientTransformationExtraArgs,
                               optax.GradientTransformationExtraArgs]:
  """Adam for G and for D (the paper: lr 2e-4, betas 0.5 / 0.999; optim.lr_d for TTUR)."""
  o = config.optim
  lr_d = o.lr if o.lr_d < 0 else o.lr_d
  plateau = o.get("lr_policy", "linear_per_step") == "plateau"
  g_tx = guarded_adam(learning_rate_schedule(o.lr, config, total_steps, steps_per_epoch),
                      b1=o.b1, b2=o.b2, plateau=plateau)
  d_tx = guarded_adam(learning_rate_schedule(lr_d, config, total_steps, steps_per_epoch),
                      b1=o.b1, b2=o.b2, plateau=plateau)
  return g_tx, d_tx
