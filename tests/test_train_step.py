"""The train step: the official update order, learning on one pair, and the NaN guard."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import configs.default as default_config
from pix2pix_jax.nn import models
from pix2pix_jax.train import optimizers
from pix2pix_jax.train import setup
from pix2pix_jax.train import sharding


def tiny_config(**loss):
  c = default_config.get_config()
  c.batch_size, c.data.crop_size = 2, 32
  c.model.update(num_downs=5, ngf=8, ndf=8, n_layers_d=2)
  c.loss.update(loss)
  return c


def build(config, total_steps=1000):
  mesh = sharding.make_mesh()
  state, step, g_tx, d_tx = setup.fresh(config, mesh, total_steps)
  return mesh, g_tx, d_tx, state, step


def random_batch(seed, config, n=None):
  rng = np.random.default_rng(seed)
  shape = (n or config.batch_size, config.data.crop_size, config.data.crop_size, 3)
  return {k: rng.uniform(-1, 1, shape).astype(np.float32) for k in ("input", "target")}


def test_step_matches_the_official_order_computed_plainly():
  """D update on (x, fake) and (x, y); then G on D's *updated* opinion + lambda * L1."""
  c = tiny_config()
  mesh, g_tx, d_tx, state, step = build(c)
  batch = random_batch(0, c)
  x, y = jnp.asarray(batch["input"]), jnp.asarray(batch["target"])
  G, D = models.make_generator(c.model), models.make_discriminator(c.model)
  s0 = jax.tree.map(jnp.copy, state)

  @jax.jit  # One program: op by op, the reference took a minute of dispatch.
  def plainly(s0):
    return official_order(G, D, g_tx, d_tx, s0, x, y)

  g_params, d_params, g_stats = plainly(s0)
  new, metrics = step(state, sharding.global_batch(batch, mesh))
  assert int(new.step) == 1 and float(metrics["finite"]) == 1.0
  for got, want in ((new.g_params, g_params), (new.d_params, d_params),
                    (new.g_batch_stats, g_stats["batch_stats"])):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got, want)


def official_order(G, D, g_tx, d_tx, s0, x, y):
  """The official step written out: D on (x, fake) then (x, y), then G against updated D."""
  key = jax.random.fold_in(jax.random.wrap_key_data(s0.rng), s0.step)

  def g_apply(p):
    return G.apply({"params": p, "batch_stats": s0.g_batch_stats}, x, train=True,
                   mutable=["batch_stats"], rngs={"dropout": key})

  fake, g_stats = g_apply(s0.g_params)

  def d_apply(p, stats, image):
    out, m = D.apply({"params": p, "batch_stats": stats}, x, image, train=True,
                     mutable=["batch_stats"])
    return out[0][-1], m["batch_stats"]

  def d_loss(p):
    lf, st = d_apply(p, s0.d_batch_stats, fake)
    lr, st = d_apply(p, st, y)
    return 0.5 * (jnp.mean(optax.sigmoid_binary_cross_entropy(lf, jnp.zeros_like(lf)))
                  + jnp.mean(optax.sigmoid_binary_cross_entropy(lr, jnp.ones_like(lr)))), st

  d_grads, d_stats = jax.grad(d_loss, has_aux=True)(s0.d_params)
  upd, _ = d_tx.update(d_grads, s0.d_opt_state, s0.d_params)
  d_params = optax.apply_updates(s0.d_params, upd)

  def g_loss(p):
    f, _ = g_apply(p)
    lf, _ = d_apply(d_params, d_stats, f)
    return (jnp.mean(optax.sigmoid_binary_cross_entropy(lf, jnp.ones_like(lf)))
            + 100.0 * jnp.mean(jnp.abs(f - y)))

  g_grads = jax.grad(g_loss)(s0.g_params)
  upd, _ = g_tx.update(g_grads, s0.g_opt_state, s0.g_params)
  g_params = optax.apply_updates(s0.g_params, upd)
  return g_params, d_params, g_stats


def structured_pair(size):
  """A label-like input (three binary masks) and a smooth colour target derived from it."""
  yy, xx = np.mgrid[0:size, 0:size] / (size - 1.0)
  x = np.stack([xx > 0.5, yy > 0.3, (xx - 0.5)**2 + (yy - 0.5)**2 < 0.1], -1) * 2.0 - 1.0
  y = np.stack([np.sin(6 * xx), np.cos(5 * yy), 2 * xx * yy - 1], -1)
  return {"input": x[None].astype(np.float32), "target": y[None].astype(np.float32)}


def test_overfits_one_pair():
  """The full objective drives L1(G(x), y) down by at least 80% on one pair."""
  c = tiny_config()
  c.batch_size = 1
  mesh, _, _, state, step = build(c)
  batch = sharding.global_batch(structured_pair(c.data.crop_size), mesh)
  l1 = []
  for _ in range(400):
    state, metrics = step(state, batch)
    l1.append(metrics["G_L1"])
  l1 = np.asarray(jax.device_get(l1)) / c.loss.lambda_l1
  assert l1[-10:].mean() < 0.2 * l1[:3].mean(), (l1[:3], l1[-10:])


@pytest.mark.parametrize("gan_weight", [1.0, 0.0])
def test_nonfinite_step_is_skipped(gan_weight):
  c = tiny_config(gan_weight=gan_weight)
  mesh, _, _, state, step = build(c)
  state, _ = step(state, sharding.global_batch(random_batch(0, c), mesh))
  before = jax.device_get(state)
  bad = random_batch(1, c)
  bad["input"][0, 3, 3, 0] = np.nan
  state, metrics = step(state, sharding.global_batch(bad, mesh))
  after = jax.device_get(state)
  assert float(metrics["finite"]) == 0.0
  assert int(after.step) == 2 and int(after.nonfinite_steps) == 1
  jax.tree.map(np.testing.assert_array_equal,
               (before.g_params, before.d_params, before.g_opt_state, before.d_batch_stats),
               (after.g_params, after.d_params, after.g_opt_state, after.d_batch_stats))
  state, metrics = step(state, sharding.global_batch(random_batch(2, c), mesh))
  assert float(metrics["finite"]) == 1.0


def test_l1_only_leaves_the_discriminator_alone():
  c = tiny_config(gan_weight=0.0)
  mesh, _, _, state, step = build(c)
  d0 = jax.device_get(state.d_params)
  state, metrics = step(state, sharding.global_batch(random_batch(0, c), mesh))
  assert "G_GAN" not in metrics and "D_loss" not in metrics
  jax.tree.map(np.testing.assert_array_equal, d0, jax.device_get(state.d_params))


def test_learning_rate_is_constant_then_decays_linearly_to_zero():
  c = tiny_config()
  c.n_epochs, c.n_epochs_decay = 3, 1
  schedule = optimizers.learning_rate_schedule(2e-4, c, total_steps=400)
  assert float(schedule(0)) == pytest.approx(2e-4)
  assert float(schedule(299)) == pytest.approx(2e-4)
  assert float(schedule(350)) == pytest.approx(1e-4)
  assert float(schedule(400)) == pytest.approx(0.0)
