"""The optimizers and learning-rate schedules: the paper's Adam for G and for D.

`guarded_adam` is optax.adam's arithmetic and state with the non-finite-step guard inside:
`where(finite, new, old)` over the moments, in place. Done after optax.adam instead, XLA:CPU
keeps copies of both moments alive across their update; materialising the guarded moments
once (on CPU, see nn.cpu_lowering) halves the update's memory traffic (benchmarks/RESULTS.md).
"""

import jax
import jax.numpy as jnp
import ml_collections
import optax

from pix2pix_jax.nn import cpu_lowering


def guarded_adam(learning_rate: optax.Schedule, b1: float, b2: float, eps: float = 1e-8
         ) -> optax.GradientTransformationExtraArgs:
  """Adam with a schedule; `update(grads, state, params, finite=flag)` leaves the state as it
  was where `flag` is false (updates are then garbage: select the params with the same flag).

  The state is optax.adam's, (ScaleByAdamState, ScaleByScheduleState), so checkpoints and
  optax's own `update` calls are interchangeable with it.
  """

  def init(params):
    return (optax.ScaleByAdamState(count=jnp.zeros([], jnp.int32),
                                   mu=optax.tree.zeros_like(params),
                                   nu=optax.tree.zeros_like(params)),
            optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32)))

  def update(grads, state, params=None, *, finite: jax.Array | bool = True, **unused_extra):
    del params, unused_extra
    moments, schedule = state
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    mu = keep(optax.tree.update_moment(grads, moments.mu, b1, 1), moments.mu)
    nu = keep(optax.tree.update_moment_per_elem_norm(grads, moments.nu, b2, 2), moments.nu)
    # On CPU the guarded moments are materialised once (cpu_lowering.materialise).
    mu, nu = jax.lax.platform_dependent((mu, nu), cpu=cpu_lowering.materialise,
                                        default=lambda moments: moments)
    count = optax.safe_increment(moments.count)
    mu_hat = optax.tree.bias_correction(mu, b1, count)
    nu_hat = optax.tree.bias_correction(nu, b2, count)
    step_size = -learning_rate(schedule.count)
    updates = jax.tree.map(lambda m, v: step_size * (m / (jnp.sqrt(v) + eps)), mu_hat, nu_hat)
    new_state = (optax.ScaleByAdamState(count=keep(count, moments.count), mu=mu, nu=nu),
                 optax.ScaleByScheduleState(
                     count=keep(optax.safe_increment(schedule.count), schedule.count)))
    return updates, new_state

  return optax.GradientTransformationExtraArgs(init, update)


def apply(params, updates, finite: jax.Array | bool = True):
  """params + updates where `finite`, params unchanged elsewhere (one fused pass each)."""
  return jax.tree.map(lambda p, u: jnp.where(finite, p + u.astype(p.dtype), p), params, updates)


def learning_rate_schedule(base_lr: float, config: ml_collections.ConfigDict,
                           total_steps: int) -> optax.Schedule:
  """Constant, then linear decay to 0, split in the ratio n_epochs : n_epochs_decay."""
  epochs = config.n_epochs + config.n_epochs_decay
  decay_start = round(total_steps * config.n_epochs / epochs) if epochs else 0
  return optax.join_schedules(
      [optax.constant_schedule(base_lr),
       optax.linear_schedule(base_lr, 0.0, max(total_steps - decay_start, 1))],
      [decay_start])


def make_optimizers(config: ml_collections.ConfigDict, total_steps: int
                    ) -> tuple[optax.GradientTransformationExtraArgs,
                               optax.GradientTransformationExtraArgs]:
  """Adam for G and for D (the paper: lr 2e-4, betas 0.5 / 0.999; optim.lr_d for TTUR)."""
  o = config.optim
  lr_d = o.lr if o.lr_d < 0 else o.lr_d
  g_tx = guarded_adam(learning_rate_schedule(o.lr, config, total_steps), b1=o.b1, b2=o.b2)
  d_tx = guarded_adam(learning_rate_schedule(lr_d, config, total_steps), b1=o.b1, b2=o.b2)
  return g_tx, d_tx
