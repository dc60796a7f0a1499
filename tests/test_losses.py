"""Objectives (issue 7): loss values by hand, penalties against finite differences, variants train.

The train-step tests share one tiny network and pack several switches into each compiled step,
so that every GAN loss and every trick runs at least once in five compilations.
"""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import configs.default as default_config
from pix2pix_jax.config import sizes
from pix2pix_jax.config import validation
from pix2pix_jax.nn import models
from pix2pix_jax.objectives import losses
from pix2pix_jax.objectives import objective
from pix2pix_jax.objectives import regularizers
from pix2pix_jax.train import ema
from pix2pix_jax.train import optimizers
from pix2pix_jax.train import sharding
from pix2pix_jax.train import state as train_state_lib
from pix2pix_jax.train import step as train_step_lib


def softplus(v: float) -> float:
  return math.log1p(math.exp(v))


def mean(values) -> float:
  return sum(values) / len(values)


# Two scales of known logits: the per-scale means add up.
REAL = [jnp.array([[2.0, -1.0]]), jnp.array([[0.5]])]
FAKE = [jnp.array([[-0.5, 1.5]]), jnp.array([[-2.0]])]
R, F = [[2.0, -1.0], [0.5]], [[-0.5, 1.5], [-2.0]]


def by_hand(name: str, label: float = 1.0):
  """(D real, D fake, G) written out from each paper's formula, scale by scale."""
  if name == "vanilla":
    bce = lambda l, t: t * softplus(-l) + (1 - t) * softplus(l)
    return (sum(mean([bce(l, label) for l in s]) for s in R),
            sum(mean([softplus(l) for l in s]) for s in F),
            sum(mean([softplus(-l) for l in s]) for s in F))
  if name == "lsgan":
    return (sum(mean([(l - label)**2 for l in s]) for s in R),
            sum(mean([l**2 for l in s]) for s in F),
            sum(mean([(l - 1)**2 for l in s]) for s in F))
  if name == "hinge":
    return (sum(mean([max(0.0, 1 - l) for l in s]) for s in R),
            sum(mean([max(0.0, 1 + l) for l in s]) for s in F),
            sum(mean([-l for l in s]) for s in F))
  if name == "wgangp":
    return (sum(mean([-l for l in s]) for s in R), sum(mean(s) for s in F),
            sum(mean([-l for l in s]) for s in F))
  assert name == "ragan"
  rel = lambda a, b, real: sum(
      mean([softplus(-(l - mean(sb))) if real else softplus(l - mean(sb)) for l in sa])
      for sa, sb in zip(a, b))
  return rel(R, F, True), rel(F, R, False), rel(F, R, True) + rel(R, F, False)


@pytest.mark.parametrize("name, label", [
    ("vanilla", 1.0), ("vanilla", 0.9), ("lsgan", 1.0), ("lsgan", 0.9), ("hinge", 1.0),
    ("wgangp", 1.0), ("ragan", 1.0)])
def test_gan_losses_on_known_logits(name, label):
  gan = losses.GAN_LOSSES[name](real_label=label)
  d_real, d_fake = gan.discriminator(REAL, FAKE)
  g = gan.generator(FAKE, REAL if gan.generator_needs_real else None)
  np.testing.assert_allclose([d_real, d_fake, g], by_hand(name, label), rtol=1e-6)


@pytest.mark.parametrize("name", ["hinge", "wgangp", "ragan"])
def test_label_smoothing_is_refused_where_there_is_no_label(name):
  with pytest.raises(ValueError, match="real_label"):
    losses.GAN_LOSSES[name](real_label=0.9)


def test_reconstruction_losses():
  fake, target = jnp.array([0.5, -1.0, 0.0]), jnp.array([0.0, 1.0, 0.25])
  assert float(losses.l1(fake, target)) == pytest.approx((0.5 + 2.0 + 0.25) / 3)
  assert float(losses.l2(fake, target)) == pytest.approx((0.25 + 4.0 + 0.0625) / 3)
  assert float(losses.no_reconstruction(fake, target)) == 0.0


def test_feature_matching_weights_layers_and_scales_as_pix2pixhd():
  # Scale 0: two hidden maps and logits; scale 1: one hidden map and logits.
  real = [[jnp.zeros((1, 2)), jnp.ones((1, 2)), jnp.full((1, 1), 9.0)],
          [jnp.zeros((1, 4)), jnp.full((1, 1), 9.0)]]
  fake = [[jnp.full((1, 2), 0.5), jnp.array([[1.0, 3.0]]), jnp.full((1, 1), -9.0)],
          [jnp.full((1, 4), -0.25), jnp.full((1, 1), 0.0)]]
  want = ((4 / 2) * (0.5 + 1.0) + (4 / 1) * 0.25) / 2  # logits never matched
  assert float(losses.feature_matching(real, fake)) == pytest.approx(want)
  g = jax.grad(lambda r: losses.feature_matching(r, fake))(real)
  assert all(float(jnp.abs(leaf).max()) == 0 for leaf in jax.tree.leaves(g))


# --- Penalties against finite differences, in float64 on a tiny two-scale D. ---------------


def tiny_d_logits():
  """A conditional two-scale D in plain float64 on 8x8 pairs: conv, LeakyReLU, conv per scale.

  (models.Discriminator returns float32 logits, too coarse for finite differences.)
  """
  rng = np.random.default_rng(0)
  x, real, fake = (jnp.asarray(rng.uniform(-1, 1, (2, 8, 8, 3))) for _ in range(3))
  params = [{"k1": jnp.asarray(rng.normal(0, 0.5, (3, 3, 6, 4))),
             "k2": jnp.asarray(rng.normal(0, 0.5, (3, 3, 4, 1)))} for _ in range(2)]

  def conv(h, k):
    return jax.lax.conv_general_dilated(h, k, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

  def d_logits_with(params):
    def d_logits(cx, cy):
      h, maps = jnp.concatenate([cx, cy], -1), []
      for s, p in enumerate(params):
        if s:
          h = jax.lax.reduce_window(h, 0.0, jax.lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID") / 4
        maps.append(conv(jax.nn.leaky_relu(conv(h, p["k1"]), 0.2), p["k2"]))
      return maps
    return d_logits

  return d_logits_with, params, x, real, fake


def fd_input_grad(f, z, h=1e-6):
  """Central differences of f (values of shape (S,)) at every coordinate of z: (S,) + z.shape.

  All coordinates at once under vmap; D treats samples independently, so differentiating the
  sum over the batch gives each sample's own gradient.
  """
  eye = jnp.eye(z.size, dtype=z.dtype).reshape((z.size,) + z.shape) * h
  diff = (jax.vmap(lambda e: f(z + e))(eye) - jax.vmap(lambda e: f(z - e))(eye)) / (2 * h)
  return diff.T.reshape((-1,) + z.shape)


def scale_sums(d, cx, cy):
  return jnp.stack([jnp.sum(m) for m in d(cx, cy)])


def test_gradient_penalty_value_and_gradient_match_finite_differences():
  with jax.enable_x64(True):
    d_logits_with, params, x, real, fake = tiny_d_logits()
    key = jax.random.key(3)
    gp = lambda p: regularizers.gradient_penalty(d_logits_with(p), x, real, fake, key)

    # The value: per sample, per scale, (||d sum(logits_s) / d(x, y_hat)|| - 1)^2, mean, x10.
    alpha = jax.random.uniform(key, (2, 1, 1, 1), jnp.float64)
    y_hat = alpha * real + (1 - alpha) * fake
    d = d_logits_with(params)
    gx = fd_input_grad(lambda v: scale_sums(d, v, y_hat), x)
    gy = fd_input_grad(lambda v: scale_sums(d, x, v), y_hat)
    norms = np.sqrt(np.sum(gx**2, axis=(2, 3, 4)) + np.sum(gy**2, axis=(2, 3, 4)))  # (S, N)
    want = float(10.0 * np.sum(np.mean((norms - 1.0)**2, axis=1)))
    value = float(gp(params))
    assert value == pytest.approx(want, rel=1e-6)
    assert value > 1e-3  # not a trivially zero penalty

    # Its gradient for D (double backprop) along a random direction.
    direction = jax.tree.map(
        lambda p: jax.random.normal(jax.random.key(p.size), p.shape, jnp.float64), params)
    analytic = sum(jnp.vdot(g, v) for g, v in zip(
        jax.tree.leaves(jax.grad(gp)(params)), jax.tree.leaves(direction)))
    h = 1e-6
    shifted = lambda t: jax.tree.map(lambda p, v: p + t * v, params, direction)
    numeric = (gp(shifted(h)) - gp(shifted(-h))) / (2 * h)
    assert float(analytic) == pytest.approx(float(numeric), rel=1e-5)


def test_r1_penalty_matches_finite_differences_on_the_real_image():
  with jax.enable_x64(True):
    d_logits_with, params, x, real, fake = tiny_d_logits()
    d = d_logits_with(params)
    value = float(regularizers.r1_penalty(d, x, real, fake, jax.random.key(0), gamma=2.0))
    gy = fd_input_grad(lambda v: scale_sums(d, x, v), real)
    want = float(2.0 / 2 * np.sum(np.mean(np.sum(gy**2, axis=(2, 3, 4)), axis=1)))
    assert value == pytest.approx(want, rel=1e-6)


def test_penalties_are_switched_on_by_config_only():
  c = default_config.base_config().loss
  assert regularizers.from_config(c) == ()
  paper = objective.objective_from_config(c)
  assert paper.d_regularizers == () and paper.feature_matching_weight == 0.0
  c.gan_mode, c.r1_gamma = "wgangp", 1.0
  assert [r.name for r in regularizers.from_config(c)] == ["gp", "r1"]


# --- Networks: num_d and spectral norm. ----------------------------------------------------


def test_multiscale_and_spectral_norm_parameter_counts():
  base = default_config.base_config()
  d_params = lambda **m: sizes.network_sizes(
      ml_collections.ConfigDict({**base.to_dict(), "model": {**base.model.to_dict(), **m}})
  )["discriminator_params"]
  assert d_params(num_d=1) == d_params() == 2_768_705  # the official count, unchanged
  assert d_params(spectral_norm_d=True) == 2_768_705  # SN adds state, not parameters
  assert d_params(num_d=3) == 3 * 2_768_705


def test_multiscale_inputs_are_average_pooled_without_padding():
  """Scale 1 of a 1x1 PixelGAN D sees 3x3/2 averages whose padding is not counted."""
  d = models.Discriminator(ndf=1, n_layers=0, norm="none", conditional=False, num_d=2)
  y = jax.random.normal(jax.random.key(0), (1, 4, 4, 1))
  params = d.init(jax.random.key(1), y, y, train=False)
  features = d.apply(params, y, y, train=False)
  pooled = np.asarray(y)[0, :, :, 0]
  want = [[pooled[max(0, 2 * i - 1):2 * i + 2, max(0, 2 * j - 1):2 * j + 2].mean()
           for j in range(2)] for i in range(2)]
  scale_1 = models.PatchDiscriminator(ndf=1, n_layers=0, norm="none")
  again = scale_1.apply({"params": params["params"]["patch_1"]},
                        jnp.asarray(want, jnp.float32)[None, :, :, None], train=False)
  np.testing.assert_allclose(features[1][-1], again[-1], rtol=1e-5, atol=1e-6)


def test_spectral_norm_state_estimates_the_largest_singular_value():
  d = models.Discriminator(ndf=4, n_layers=1, norm="none", spectral_norm=True)
  x = jnp.ones((1, 16, 16, 3))
  variables = d.init(jax.random.key(0), x, x, train=False)
  apply = jax.jit(lambda v: d.apply(v, x, x, train=True, mutable=["batch_stats"])[1])
  for _ in range(30):
    variables = {**variables, **apply(variables)}
  kernel = np.asarray(variables["params"]["patch_0"]["conv_1"]["kernel"])
  sigma = variables["batch_stats"]["patch_0"]["conv_1_sn"]["conv_1/kernel/sigma"]
  top = np.linalg.svd(kernel.reshape(-1, kernel.shape[-1]), compute_uv=False)[0]
  assert float(sigma) == pytest.approx(float(top), rel=1e-3)
  # Eval mode neither advances nor needs a mutable collection.
  d.apply(variables, x, x, train=False)


# --- Every variant trains a tiny model without NaN. ----------------------------------------
# XLA:CPU takes seconds to compile a U-Net step even at 32x32, so the paper's networks run
# once with every network-side switch on at the same time; the other GAN losses run the same
# `train_step` with a one-convolution G (the objective does not care what G is).


def tiny_config(**fields):
  c = default_config.get_config()
  c.batch_size, c.data.crop_size = 2, 32
  c.model.update(num_downs=5, ngf=4, ndf=4, n_layers_d=2)
  for dotted, value in fields.items():
    group, name = dotted.split("__")
    c[group][name] = value
  return c


def random_batch(seed, c):
  rng = np.random.default_rng(seed)
  shape = (c.batch_size, c.data.crop_size, c.data.crop_size, 3)
  return {k: rng.uniform(-1, 1, shape).astype(np.float32) for k in ("input", "target")}


def run_steps(state, step, c, n=3):
  """n steps; returns the state after the first, the last state and every step's metrics."""
  history, after_one = [], None
  for i in range(n):
    state, metrics = step(state, random_batch(i, c))
    history.append(jax.device_get(metrics))
    after_one = after_one or jax.device_get(state)
  for m in history:
    assert m["finite"] == 1.0 and all(np.isfinite(v) for v in m.values()), m
  assert int(state.nonfinite_steps) == 0
  return after_one, state, history


def max_move(after, before):
  return max(float(np.abs(a - b).max())
             for a, b in zip(jax.tree.leaves(after), jax.tree.leaves(before)))


def test_paper_networks_train_with_every_network_side_switch():
  """U-Net + 2-scale SN PatchGAN, label smoothing, feature matching, R1, EMA and TTUR."""
  c = tiny_config(loss__real_label=0.9, loss__feature_matching_weight=10.0, loss__r1_gamma=1.0,
                  model__num_d=2, model__spectral_norm_d=True, model__ema_decay=0.99,
                  optim__lr=1e-4, optim__lr_d=4e-4, model__num_downs=2, model__n_layers_d=1)
  c.data.crop_size = 16
  validation.validate(c)
  g_tx, d_tx = optimizers.make_optimizers(c, 100)
  state = jax.jit(lambda: train_state_lib.create_train_state(c, g_tx, d_tx))()
  first = jax.device_get(state)
  after_one, state, history = run_steps(
      state, train_step_lib.jit_train_step(c, sharding.make_mesh(), g_tx, d_tx), c)
  assert {"D_r1", "G_FM", "G_GAN", "G_L1"} <= set(history[0]) and "D_gp" not in history[0]
  assert all(m["D_r1"] > 0 and m["G_FM"] > 0 for m in history)
  assert set(first.d_params) == {"patch_0", "patch_1"}

  # SN: the power-iteration vectors are state: they move each step and are checkpointed.
  u = lambda s: s.d_batch_stats["patch_1"]["conv_1_sn"]["conv_1/kernel/u"]
  assert np.abs(u(after_one) - u(first)).max() > 0

  # EMA: starts at G's initial weights; step 0's warm-up decay is min(0.99, 1 / 10).
  jax.tree.map(np.testing.assert_array_equal, first.g_ema_params, first.g_params)
  want = jax.tree.map(lambda e, p: 0.1 * e + 0.9 * p, first.g_ema_params, after_one.g_params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               after_one.g_ema_params, want)
  assert ema.params_field(c) == "g_ema_params"
  assert ema.generator_params(state, c) is state.g_ema_params

  # TTUR: Adam's first update moves each weight by ~lr, so D moves 4x as far as G.
  assert max_move(after_one.d_params, first.d_params) == pytest.approx(4e-4, rel=0.01)
  assert max_move(after_one.g_params, first.g_params) == pytest.approx(1e-4, rel=0.01)


class OneConvGenerator(nn.Module):
  """The smallest G the train step accepts: tanh(conv3x3(x))."""

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    del train
    return jnp.tanh(nn.Conv(3, (3, 3))(x))


@pytest.mark.parametrize("gan_mode", ["lsgan", "hinge", "wgangp", "ragan"])
def test_gan_loss_trains_without_nan(gan_mode):
  c = tiny_config(loss__gan_mode=gan_mode, model__norm="instance")
  g, d = OneConvGenerator(), models.make_discriminator(c.model)
  g_tx, d_tx = optimizers.make_optimizers(c, 100)
  x = jnp.zeros((1, 32, 32, 3))
  g_params, _ = train_state_lib.init_variables(g, jax.random.key(0), x)
  d_params, d_stats = train_state_lib.init_variables(d, jax.random.key(1), x, x)
  state = train_state_lib.TrainState(
      step=jnp.zeros((), jnp.int32), rng=jax.random.key_data(jax.random.key(2)),
      g_params=g_params, g_batch_stats={}, g_opt_state=g_tx.init(g_params), d_params=d_params,
      d_batch_stats=d_stats, d_opt_state=d_tx.init(d_params),
      nonfinite_steps=jnp.zeros((), jnp.int32))
  step = jax.jit(functools.partial(
      train_step_lib.train_step, generator=g, discriminator=d, g_tx=g_tx, d_tx=d_tx,
      objective=objective.objective_from_config(c.loss)))
  first = jax.device_get(state)
  after_one, _, history = run_steps(state, step, c)
  assert ("D_gp" in history[0]) == (gan_mode == "wgangp")
  assert all(m.get("D_gp", 1.0) > 0 for m in history)
  assert max_move(after_one.d_params, first.d_params) > 0
  assert max_move(after_one.g_params, first.g_params) > 0


def test_without_ema_the_state_carries_no_average():
  c = tiny_config()
  g_tx, d_tx = optimizers.make_optimizers(c, 100)
  shapes = jax.eval_shape(lambda: train_state_lib.create_train_state(c, g_tx, d_tx))
  assert shapes.g_ema_params == {} and ema.params_field(c) == "g_params"
  c.model.ema_decay = 0.999
  shapes_ema = jax.eval_shape(lambda: train_state_lib.create_train_state(c, g_tx, d_tx))
  assert jax.tree.structure(shapes_ema.g_ema_params) == jax.tree.structure(shapes.g_params)


@pytest.mark.parametrize("fields, message", [
    (dict(model__num_d=3), "model.num_d=3 is too many scales"),
    (dict(loss__gan_mode="hinge", loss__real_label=0.9), "label smoothing"),
    (dict(loss__real_label=0.0), "must be in \\(0, 1\\]"),
    (dict(model__ema_decay=1.0), "model.ema_decay"),
    (dict(loss__r1_gamma=-1.0), "loss.r1_gamma"),
])
def test_config_validation_names_the_bad_field(fields, message):
  with pytest.raises(validation.ConfigError, match=message):
    validation.validate(tiny_config(**fields))


def test_ema_weights_are_checkpointed_and_loaded_for_inference(tmp_path):
  from pix2pix_jax.train import checkpoints  # pylint: disable=g-import-not-at-top
  c = tiny_config(model__ema_decay=0.999, model__num_downs=2)
  c.data.crop_size = 16
  g_tx, d_tx = optimizers.make_optimizers(c, 100)
  shapes = jax.eval_shape(lambda: train_state_lib.create_train_state(c, g_tx, d_tx))
  state = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  state = state.replace(g_ema_params=jax.tree.map(jnp.ones_like, state.g_params))
  manager = checkpoints.make_manager(str(tmp_path), async_save=False)
  checkpoints.save(manager, state, c)
  manager.wait_until_finished()
  restored = checkpoints.restore_state(
      manager, checkpoints.abstract_like(shapes, sharding.replicated(sharding.make_mesh())))
  manager.close()
  assert all(float(jnp.min(p)) == 1.0 for p in jax.tree.leaves(restored.g_ema_params))
  _, variables = checkpoints.load_generator(str(tmp_path))
  assert all(float(jnp.min(p)) == 1.0 for p in jax.tree.leaves(variables["params"]))
