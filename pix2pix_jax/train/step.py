"""One pix2pix iteration as a pure function: a D update, then a G update, on the same batch.

The order and the arithmetic are the official implementation's `optimize_parameters`:
fake = G(x) once (one dropout mask, one BatchNorm update of G); D learns from
(x, fake) and (x, y) with its loss halved; then G learns from D's *updated* opinion of
(x, fake) plus lambda * L1(fake, y). G's forward pass is differentiated once, through a VJP
whose cotangent the G loss supplies, so G is not run twice.
"""

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from pix2pix_jax.train import adam
from pix2pix_jax.train import ema
from pix2pix_jax.objectives import losses
from pix2pix_jax.nn import models
from pix2pix_jax.objectives import regularizers
from pix2pix_jax.train import sharding
from pix2pix_jax.train import state as train_state_lib
from pix2pix_jax.train.state import TrainState

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


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


def _global_norm(tree: Any) -> jax.Array:
  """optax.global_norm as dot products: XLA:CPU reads each gradient once, where jnp.square
  shared with Adam's second moment was materialised as a gradient-sized array."""
  return jnp.sqrt(sum(jnp.vdot(x, x) for x in jax.tree.leaves(tree)))


def train_step(state: TrainState, batch: Batch, *, generator: nn.Module,
               discriminator: nn.Module, g_tx: optax.GradientTransformation,
               d_tx: optax.GradientTransformation, objective: Objective,
               ema_decay: float = 0.0, guard_nonfinite: bool = True
               ) -> tuple[TrainState, Metrics]:
  """Returns the next state and this step's scalar measurements.

  A step whose losses or gradients are not finite leaves the state as it was (only `step`
  and `nonfinite_steps` advance): G's guard runs inside its Adam update, in place, the rest
  of the state goes through a select, and the host decides from `metrics["finite"]` whether
  to go on (config.nan_policy). `guard_nonfinite=False` exists only to measure that.
  """
  x, y = batch["input"], batch["target"]
  key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

  def run_g(g_params):
    fake, mutated = generator.apply(
        {"params": g_params, "batch_stats": state.g_batch_stats}, x, train=True,
        mutable=["batch_stats"], rngs={"dropout": key})
    return fake, mutated.get("batch_stats", {})

  fake, g_vjp, g_batch_stats = jax.vjp(run_g, state.g_params, has_aux=True)

  def run_d_features(d_params, batch_stats, image, condition=x):
    outputs, mutated = discriminator.apply(
        {"params": d_params, "batch_stats": batch_stats}, condition, image, train=True,
        mutable=["batch_stats"])
    return outputs, mutated.get("batch_stats", {})

  def run_d(d_params, batch_stats, image):
    outputs, batch_stats = run_d_features(d_params, batch_stats, image)
    return models.logits(outputs), batch_stats

  metrics: Metrics = {}
  use_gan = objective.gan_weight != 0.0
  d_params, d_opt_state, d_batch_stats = state.d_params, state.d_opt_state, state.d_batch_stats
  d_finite = jnp.array(True)
  if use_gan:
    def d_loss_fn(d_params):
      # Fake first, then real, as the official backward_D; BN statistics thread through.
      fake_logits, stats = run_d(d_params, d_batch_stats, jax.lax.stop_gradient(fake))
      real_logits, stats = run_d(d_params, stats, y)
      loss_real, loss_fake = objective.gan.discriminator(real_logits, fake_logits)
      # Penalties see D with this step's incoming state; what they would update is dropped.
      d_logits = lambda cond, image: models.logits(
          run_d_features(d_params, d_batch_stats, image, cond)[0])
      penalties = {f"D_{r.name}": r.fn(d_logits, x, y, jax.lax.stop_gradient(fake),
                                       jax.random.fold_in(key, i + 1))
                   for i, r in enumerate(objective.d_regularizers)}
      d_loss = 0.5 * (loss_real + loss_fake + sum(penalties.values()))
      return d_loss, (stats, loss_real, loss_fake, penalties)

    (d_loss, (d_batch_stats, loss_real, loss_fake, penalties)), d_grads = jax.value_and_grad(
        d_loss_fn, has_aux=True)(d_params)
    d_updates, d_opt_state = d_tx.update(d_grads, d_opt_state, d_params)
    d_params = adam.apply(d_params, d_updates)  # guarded with the rest of the state below
    d_grad_norm = _global_norm(d_grads)
    d_finite = jnp.isfinite(d_loss) & jnp.isfinite(d_grad_norm)
    metrics.update(penalties, D_real=loss_real, D_fake=loss_fake, D_loss=d_loss,
                   d_grad_norm=d_grad_norm)

  def g_loss_fn(fake):
    terms = {"G_L1": objective.lambda_reconstruction * objective.reconstruction(fake, y)}
    stats = d_batch_stats
    if use_gan:
      fake_out, stats = run_d_features(d_params, stats, fake)
      real_out, real_logits = None, None
      if objective.gan.generator_needs_real or objective.feature_matching_weight:
        real_out, stats = run_d_features(d_params, stats, y)
        real_out = jax.lax.stop_gradient(real_out)
        if objective.gan.generator_needs_real:
          real_logits = models.logits(real_out)
      terms["G_GAN"] = objective.gan_weight * objective.gan.generator(
          models.logits(fake_out), real_logits)
      if objective.feature_matching_weight:
        terms["G_FM"] = objective.feature_matching_weight * losses.feature_matching(
            real_out, fake_out)
    return sum(terms.values()), (stats, terms)

  (g_loss, (d_batch_stats, g_terms)), d_fake = jax.value_and_grad(
      g_loss_fn, has_aux=True)(fake)
  (g_grads,) = g_vjp(d_fake)
  g_grad_norm = _global_norm(g_grads)
  finite = d_finite & jnp.isfinite(g_loss) & jnp.isfinite(g_grad_norm)
  # G's update, by far the largest, is guarded inside the optimizer (adam.py: in place);
  # the rest of the state, small, by the select below.
  g_keep = finite if guard_nonfinite else True
  g_updates, g_opt_state = g_tx.update(g_grads, state.g_opt_state, state.g_params,
                                       finite=g_keep)
  g_params = adam.apply(state.g_params, g_updates, g_keep)
  g_ema_params = state.g_ema_params
  if ema_decay > 0:
    g_ema_params = ema.update(g_ema_params, g_params, ema_decay, state.step)
  metrics.update(g_terms, G_loss=g_loss, g_grad_norm=g_grad_norm)
  metrics["finite"] = finite.astype(jnp.float32)
  rest = dict(g_batch_stats=g_batch_stats, d_params=d_params, d_batch_stats=d_batch_stats,
              d_opt_state=d_opt_state, g_ema_params=g_ema_params)
  if guard_nonfinite:
    rest = {name: jax.tree.map(lambda new, old: jnp.where(finite, new, old), value,
                               getattr(state, name)) for name, value in rest.items()}
  new_state = state.replace(
      step=state.step + 1, g_params=g_params, g_opt_state=g_opt_state,
      nonfinite_steps=state.nonfinite_steps + (~finite).astype(jnp.int32), **rest)
  return new_state, metrics


def jit_train_step(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                   g_tx: optax.GradientTransformation, d_tx: optax.GradientTransformation,
                   guard_nonfinite: bool = True
                   ) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
  """The step bound to its networks and objective, jitted once over `mesh`, state donated."""
  step = functools.partial(
      train_step, generator=models.make_generator(config.model),
      discriminator=models.make_discriminator(config.model), g_tx=g_tx, d_tx=d_tx,
      objective=objective_from_config(config.loss),
      ema_decay=config.model.ema_decay, guard_nonfinite=guard_nonfinite)
  replicated = sharding.replicated(mesh)
  return jax.jit(step, in_shardings=(replicated, sharding.batch_sharded(mesh)),
                 out_shardings=(replicated, replicated), donate_argnums=0)


class Fresh(NamedTuple):
  """A new run's pieces: its state, replicated over the mesh, the jitted step, the optimizers."""

  state: TrainState
  step: Callable[[TrainState, Batch], tuple[TrainState, Metrics]]
  g_tx: optax.GradientTransformation
  d_tx: optax.GradientTransformation


def fresh(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, total_steps: int,
          guard_nonfinite: bool = True) -> Fresh:
  """Initial state and step for `config`, for code that starts from step 0 (tests,
  benchmarks); the trainer builds the same pieces itself because it may restore instead."""
  g_tx, d_tx = train_state_lib.make_optimizers(config, total_steps)
  state = jax.jit(lambda: train_state_lib.create_train_state(config, g_tx, d_tx),
                  out_shardings=sharding.replicated(mesh))()
  step = jit_train_step(config, mesh, g_tx, d_tx, guard_nonfinite=guard_nonfinite)
  return Fresh(state, step, g_tx, d_tx)
