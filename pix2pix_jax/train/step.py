"""One pix2pix iteration as a pure function: a D update, then a G update, on the same batch.

The order and the arithmetic are the official implementation's `optimize_parameters`:
fake = G(x) once (one dropout mask, one BatchNorm update of G); D learns from
(x, fake) and (x, y) with its loss halved; then G learns from D's *updated* opinion of
(x, fake) plus lambda * L1(fake, y). G's forward pass is differentiated once, through a VJP
whose cotangent the G loss supplies, so G is not run twice.
"""

import functools
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from pix2pix_jax.nn import conv
from pix2pix_jax.nn import models
from pix2pix_jax.objectives import losses
from pix2pix_jax.objectives.objective import Objective
from pix2pix_jax.objectives.objective import objective_from_config
from pix2pix_jax.train import ema
from pix2pix_jax.train import optimizers
from pix2pix_jax.train import sharding
from pix2pix_jax.train.state import TrainState

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
PyTree = Any


def _global_norm(tree: PyTree) -> jax.Array:
  """optax.global_norm as dot products, so that no gradient-sized square is materialised."""
  return jnp.sqrt(sum(jnp.vdot(x, x) for x in jax.tree.leaves(tree)))


def _run_d(discriminator: nn.Module, d_params: PyTree, batch_stats: PyTree, condition: jax.Array,
           image: jax.Array) -> tuple[list[list[jax.Array]], PyTree]:
  """D's per-scale features (logits last) in train mode, and its updated BatchNorm state."""
  outputs, mutated = discriminator.apply(
      {"params": d_params, "batch_stats": batch_stats}, condition, image, train=True,
      mutable=["batch_stats"])
  return outputs, mutated.get("batch_stats", {})


class DUpdate(NamedTuple):
  params: PyTree
  opt_state: PyTree
  batch_stats: PyTree
  finite: jax.Array
  metrics: Metrics


def d_update(state: TrainState, x: jax.Array, y: jax.Array, fake: jax.Array, key: jax.Array, *,
             discriminator: nn.Module, d_tx: optax.GradientTransformation,
             objective: Objective) -> DUpdate:
  """D's step on (x, G(x)) and (x, y), its loss halved; unguarded (the caller selects)."""
  run_d = functools.partial(_run_d, discriminator)
  fake = jax.lax.stop_gradient(fake)

  def d_loss_fn(d_params):
    # Fake first, then real, as the official backward_D; BN statistics thread through.
    fake_out, stats = run_d(d_params, state.d_batch_stats, x, fake)
    real_out, stats = run_d(d_params, stats, x, y)
    loss_real, loss_fake = objective.gan.discriminator(models.logits(real_out),
                                                       models.logits(fake_out))
    # Penalties see D with this step's incoming state; what they would update is dropped.
    d_logits = lambda cond, image: models.logits(
        run_d(d_params, state.d_batch_stats, cond, image)[0])
    penalties = {f"D_{r.name}": r.fn(d_logits, x, y, fake, jax.random.fold_in(key, i + 1))
                 for i, r in enumerate(objective.d_regularizers)}
    d_loss = 0.5 * (loss_real + loss_fake + sum(penalties.values()))
    return d_loss, (stats, dict(penalties, D_real=loss_real, D_fake=loss_fake))

  (d_loss, (batch_stats, metrics)), grads = jax.value_and_grad(
      d_loss_fn, has_aux=True)(state.d_params)
  updates, opt_state = d_tx.update(grads, state.d_opt_state, state.d_params)
  params = optimizers.apply(state.d_params, updates)
  grad_norm = _global_norm(grads)
  metrics.update(D_loss=d_loss, d_grad_norm=grad_norm)
  return DUpdate(params, opt_state, batch_stats,
                 jnp.isfinite(d_loss) & jnp.isfinite(grad_norm), metrics)


def g_loss(fake: jax.Array, x: jax.Array, y: jax.Array, d_params: PyTree, d_batch_stats: PyTree,
           *, discriminator: nn.Module, objective: Objective
           ) -> tuple[jax.Array, tuple[PyTree, Metrics]]:
  """G's loss as a function of its output: D's (updated) opinion of (x, fake) + lambda * L1.

  Returns the loss and (D's BatchNorm state after these passes, the loss's terms).
  """
  terms = {"G_L1": objective.lambda_reconstruction * objective.reconstruction(fake, y)}
  stats = d_batch_stats
  if objective.gan_weight != 0.0:
    run_d = functools.partial(_run_d, discriminator, d_params)
    fake_out, stats = run_d(stats, x, fake)
    real_out, real_logits = None, None
    if objective.gan.generator_needs_real or objective.feature_matching_weight:
      real_out, stats = run_d(stats, x, y)
      real_out = jax.lax.stop_gradient(real_out)
      if objective.gan.generator_needs_real:
        real_logits = models.logits(real_out)
    terms["G_GAN"] = objective.gan_weight * objective.gan.generator(
        models.logits(fake_out), real_logits)
    if objective.feature_matching_weight:
      terms["G_FM"] = objective.feature_matching_weight * losses.feature_matching(
          real_out, fake_out)
  return sum(terms.values()), (stats, terms)


def train_step(state: TrainState, batch: Batch, *, generator: nn.Module,
               discriminator: nn.Module, g_tx: optax.GradientTransformation,
               d_tx: optax.GradientTransformation, objective: Objective,
               ema_decay: float = 0.0) -> tuple[TrainState, Metrics]:
  """Returns the next state and this step's scalar measurements.

  A step whose losses or gradients are not finite leaves the state as it was (only `step`
  and `nonfinite_steps` advance): G's guard runs inside its Adam update, in place, the rest
  of the state goes through a select, and the host decides from `metrics["finite"]` whether
  to go on (config.nan_policy).
  """
  x, y = batch["input"], batch["target"]
  key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

  def run_g(g_params):
    fake, mutated = generator.apply(
        {"params": g_params, "batch_stats": state.g_batch_stats}, x, train=True,
        mutable=["batch_stats"], rngs={"dropout": key})
    return fake, mutated.get("batch_stats", {})

  fake, g_vjp, g_batch_stats = jax.vjp(run_g, state.g_params, has_aux=True)

  metrics: Metrics = {}
  d = DUpdate(state.d_params, state.d_opt_state, state.d_batch_stats, jnp.array(True), {})
  if objective.gan_weight != 0.0:
    d = d_update(state, x, y, fake, key, discriminator=discriminator, d_tx=d_tx,
                 objective=objective)
    metrics.update(d.metrics)

  (loss, (d_batch_stats, g_terms)), d_fake = jax.value_and_grad(
      functools.partial(g_loss, discriminator=discriminator, objective=objective),
      has_aux=True)(fake, x, y, d.params, d.batch_stats)
  (g_grads,) = g_vjp(d_fake)
  g_grad_norm = _global_norm(g_grads)
  finite = d.finite & jnp.isfinite(loss) & jnp.isfinite(g_grad_norm)
  # G's update, by far the largest, is guarded inside the optimizer, in place; the rest of
  # the state, small, by the select below.
  g_updates, g_opt_state = g_tx.update(g_grads, state.g_opt_state, state.g_params,
                                       finite=finite)
  g_params = optimizers.apply(state.g_params, g_updates, finite)
  g_ema_params = state.g_ema_params
  if ema_decay > 0:
    g_ema_params = ema.update(g_ema_params, g_params, ema_decay, state.step)
  metrics.update(g_terms, G_loss=loss, g_grad_norm=g_grad_norm,
                 finite=finite.astype(jnp.float32))
  rest = dict(g_batch_stats=g_batch_stats, d_params=d.params, d_batch_stats=d_batch_stats,
              d_opt_state=d.opt_state, g_ema_params=g_ema_params)
  rest = {name: jax.tree.map(lambda new, old: jnp.where(finite, new, old), value,
                             getattr(state, name)) for name, value in rest.items()}
  new_state = state.replace(
      step=state.step + 1, g_params=g_params, g_opt_state=g_opt_state,
      nonfinite_steps=state.nonfinite_steps + (~finite).astype(jnp.int32), **rest)
  return new_state, metrics


def jit_train_step(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                   g_tx: optax.GradientTransformation, d_tx: optax.GradientTransformation,
                   parts: conv.Parts = conv.AUTO
                   ) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
  """The step bound to its networks and objective, jitted once over `mesh`, state donated.

  `parts`: the networks' convolutions (default: chosen per platform, nn/conv.py).
  """
  step = functools.partial(
      train_step, generator=models.make_generator(config.model, parts),
      discriminator=models.make_discriminator(config.model, parts), g_tx=g_tx, d_tx=d_tx,
      objective=objective_from_config(config.loss), ema_decay=config.model.ema_decay)
  replicated = sharding.replicated(mesh)
  return jax.jit(step, in_shardings=(replicated, sharding.batch_sharded(mesh)),
                 out_shardings=(replicated, replicated), donate_argnums=0)
