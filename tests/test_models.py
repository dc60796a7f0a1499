"""Network shapes and sizes (the official implementation's parameter counts and patch sizes) and
initialisation (the official init_weights)."""

import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import configs.default as default_config
from pix2pix_jax.config import sizes
from pix2pix_jax.nn import layers
from pix2pix_jax.nn import models


def full_size_config(**model):
  c = default_config.base_config()
  c.model.update(model)
  return c


def test_paper_network_parameter_counts():
  found = sizes.network_sizes(full_size_config())
  assert found == {"generator_params": 54_413_955, "discriminator_params": 2_768_705,
                   "patch_receptive_field": 70}


@pytest.mark.parametrize("n_layers, params", [
    (0, 9_024), (1, 139_585), (2, 666_433), (3, 2_768_705), (4, 6_964_033), (5, 11_159_361)])
def test_discriminator_parameter_counts(n_layers, params):
  assert sizes.network_sizes(full_size_config(n_layers_d=n_layers))["discriminator_params"] == params


@pytest.mark.parametrize("n_layers, field", [(0, 1), (1, 16), (2, 34), (3, 70), (4, 142), (5, 286)])
def test_patch_receptive_field_by_gradient_probing(n_layers, field):
  """The support of d(one interior logit)/d(input) is exactly a field x field square."""
  assert models.patch_receptive_field(n_layers) == field
  size = max(32, 2 ** n_layers * ((field + 64) // 2 ** n_layers + 1))
  d = models.Discriminator(ndf=2, n_layers=n_layers, norm="none", conditional=False)
  y = jax.random.normal(jax.random.key(0), (1, size, size, 3))
  params = d.init(jax.random.key(1), y, y, train=False)

  def center_logit(y):
    logits = models.logits(d.apply(params, y, y, train=False))[0]
    h, w = logits.shape[1:3]
    return logits[0, h // 2, w // 2, 0]

  grad = np.abs(np.asarray(jax.grad(center_logit)(y))).sum(axis=(0, 3))
  rows, cols = np.nonzero(grad.sum(axis=1))[0], np.nonzero(grad.sum(axis=0))[0]
  assert rows.min() > 0 and rows.max() < size - 1, "field touches the border: probe too small"
  assert rows.max() - rows.min() + 1 == field
  assert cols.max() - cols.min() + 1 == field


def test_conv_biases_follow_norm():
  """Biases are dropped only next to BatchNorm (the official code also drops them for none)."""
  x = jnp.zeros((1, 32, 32, 3))
  for norm, has_bias in (("batch", False), ("instance", True), ("none", True)):
    g = models.UNetGenerator(num_downs=5, ngf=4, norm=norm)
    params = jax.eval_shape(lambda: g.init(jax.random.key(0), x, train=False))["params"]
    assert ("bias" in params["enc_1"]) == has_bias, norm
    assert "bias" in params["dec_0"]  # The outermost transposed conv always has one.
    assert ("enc_norm_1" in params) == (norm == "batch")


@pytest.mark.parametrize("model, g_params, d_params", [
    (dict(norm="instance"), 54_409_603, 2_767_809),
    (dict(norm="instance", num_downs=7, n_layers_d=5), 41_825_667, 11_157_441),
])
def test_instance_norm_parameter_counts(model, g_params, d_params):
  # Counted by ../shared/bench/torch_pix2pix_reference.py params --norm instance [...], whose
  # networks were checked against the official ones.
  found = sizes.network_sizes(full_size_config(**model))
  assert (found["generator_params"], found["discriminator_params"]) == (g_params, d_params)


def test_generator_dropout_is_the_only_noise():
  g = models.UNetGenerator(num_downs=6, ngf=4)
  x = jax.random.normal(jax.random.key(0), (2, 64, 64, 3))
  variables = g.init(jax.random.key(1), x, train=False)

  def run(key):
    out, _ = g.apply(variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": key})
    return out

  a, b, a2 = run(jax.random.key(2)), run(jax.random.key(3)), run(jax.random.key(2))
  assert a.shape == (2, 64, 64, 3) and float(jnp.abs(a).max()) <= 1.0
  np.testing.assert_array_equal(a, a2)
  assert float(jnp.abs(a - b).max()) > 0
  e1 = g.apply(variables, x, train=False)
  np.testing.assert_array_equal(e1, g.apply(variables, x, train=False))


def test_encoder_decoder_has_no_skips():
  x = jnp.zeros((1, 32, 32, 3))
  unet = models.UNetGenerator(num_downs=5, ngf=4)
  ed = models.UNetGenerator(num_downs=5, ngf=4, skips=False)
  p_unet = jax.eval_shape(lambda: unet.init(jax.random.key(0), x, train=False))["params"]
  p_ed = jax.eval_shape(lambda: ed.init(jax.random.key(0), x, train=False))["params"]
  # Each decoder level but the innermost reads half as many channels without the skip.
  assert p_unet["dec_0"]["kernel"].shape[2] == 2 * p_ed["dec_0"]["kernel"].shape[2]
  assert p_unet["dec_4"]["kernel"].shape == p_ed["dec_4"]["kernel"].shape


def test_unconditional_discriminator_sees_only_the_output():
  d = models.Discriminator(ndf=4, n_layers=1, conditional=False)
  x, y = jnp.zeros((1, 32, 32, 3)), jnp.ones((1, 32, 32, 3))
  params = jax.eval_shape(lambda: d.init(jax.random.key(0), x, y, train=False))["params"]
  assert params["patch_0"]["conv_0"]["kernel"].shape[2] == 3


def test_batch_norm_matches_pytorch_batchnorm2d():
  """Train mode: biased batch variance; running variance: unbiased, momentum 0.1."""
  from pix2pix_jax.nn import layers  # pylint: disable=g-import-not-at-top
  x = jax.random.normal(jax.random.key(0), (2, 3, 3, 4)) * 3.0 + 1.0
  bn = layers.BatchNorm()
  variables = bn.init(jax.random.key(1), x, train=False)
  y, mutated = bn.apply(variables, x, train=True, mutable=["batch_stats"])
  xn = np.asarray(x, np.float64).reshape(-1, 4)
  mean, var = xn.mean(0), xn.var(0)
  scale = np.asarray(variables["params"]["scale"])
  want = (np.asarray(x) - mean) / np.sqrt(var + 1e-5) * scale
  np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(mutated["batch_stats"]["mean"], 0.1 * mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(mutated["batch_stats"]["var"], 0.9 + 0.1 * xn.var(0, ddof=1),
                             rtol=1e-5)
  eval_out = bn.apply({**variables, **mutated}, x, train=False)
  np.testing.assert_allclose(
      eval_out, (np.asarray(x) - 0.1 * mean) / np.sqrt(0.9 + 0.1 * xn.var(0, ddof=1) + 1e-5) * scale,
      rtol=1e-4, atol=1e-5)


def _fingerprint(tree) -> tuple[float, float]:
  """Each leaf projected on a fixed random direction seeded by its path, summed, and the sum of
  squares: another PRNG draw, a swapped leaf or another scale moves them far beyond rounding,
  while the last-bit differences of another CPU's vectorised init math (a bit hash failed on
  Zen 3) do not."""
  projection = squares = 0.0
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    v = np.asarray(leaf, np.float64).ravel()
    direction = np.random.default_rng(zlib.crc32(jax.tree_util.keystr(path).encode()))
    projection += v @ direction.standard_normal(v.size)
    squares += v @ v
  return projection, squares


def test_default_init_is_unchanged():
  """The default config's initial parameters are the ones of the code before init_type
  existed (recorded with jax 0.12 where the parameters' sha256 was still the one recorded
  then: a change of JAX's PRNG would change them)."""
  c = default_config.get_config()
  c.model.update(ngf=4, ndf=4, num_downs=6, n_layers_d=2)
  x = jnp.zeros((1, 64, 64, 3))
  g = models.make_generator(c.model).init(jax.random.key(0), x, train=False)
  d = models.make_discriminator(c.model).init(jax.random.key(1), x, x, train=False)
  np.testing.assert_allclose(_fingerprint(g["params"]), (-9.728323899495383, 226.23074600645836),
                             rtol=1e-5)
  np.testing.assert_allclose(_fingerprint(d["params"]), (-2.5783539854312423, 25.42217327327232),
                             rtol=1e-5)


# Our kernels are (kh, kw, in, out). torch.nn.init's fans (checked with torch 2.13): Conv2d's
# weight (out, in, kh, kw) has fan_in = in * kh * kw, ConvTranspose2d's (in, out, kh, kw)
# fan_in = out * kh * kw; orthogonal_ makes the rows of weight.view(size(0), -1) orthonormal.
_KH, _IN, _OUT, _GAIN = 3, 64, 512, 0.5


def _official_std(init_type: str, transposed: bool) -> float:
  fan_in = _KH * _KH * (_OUT if transposed else _IN)
  fan_out = _KH * _KH * (_IN if transposed else _OUT)
  rows, cols = (_IN, _OUT * _KH * _KH) if transposed else (_OUT, _IN * _KH * _KH)
  return {"normal": _GAIN, "xavier": _GAIN * np.sqrt(2 / (fan_in + fan_out)),
          "kaiming": np.sqrt(2 / fan_in),  # kaiming_normal_(a=0): init_gain is not used.
          "orthogonal": _GAIN * np.sqrt(min(rows, cols) / (rows * cols))}[init_type]


def _torch_matrix(kernel: np.ndarray, transposed: bool) -> np.ndarray:
  """weight.view(size(0), -1) of the torch weight our kernel holds."""
  weight = kernel.transpose((2, 3, 0, 1) if transposed else (3, 2, 0, 1))
  return weight.reshape(weight.shape[0], -1)


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("init_type", layers.INIT_TYPES)
def test_init_statistics_are_the_official_ones(init_type, transposed):
  init = layers.initializers(init_type, _GAIN)
  kernel_init = init.conv_transpose if transposed else init.conv
  kernel = np.asarray(kernel_init(jax.random.key(0), (_KH, _KH, _IN, _OUT)), np.float64)
  assert abs(kernel.mean()) < 0.01 * kernel.std()
  np.testing.assert_allclose(kernel.std(), _official_std(init_type, transposed), rtol=0.02)
  if init_type == "orthogonal":
    m = _torch_matrix(kernel, transposed)
    np.testing.assert_allclose(m @ m.T, _GAIN**2 * np.eye(m.shape[0]), atol=1e-5)


def test_batch_norm_scale_init_is_normal_around_one():
  scale = np.asarray(layers.initializers("kaiming", 0.3).norm_scale(jax.random.key(0),
                                                                    (100_000,)))
  assert abs(scale.mean() - 1.0) < 0.005 and abs(scale.std() - 0.3) < 0.005


def test_config_init_reaches_every_network():
  c = default_config.get_config()
  c.model.update(ngf=4, ndf=4, num_downs=5, n_layers_d=2, init_type="orthogonal", init_gain=1.0)
  x = jnp.zeros((1, 32, 32, 3))
  d = models.make_discriminator(c.model).init(jax.random.key(0), x, x, train=False)["params"]
  unet = models.make_generator(c.model).init(jax.random.key(0), x, train=False)["params"]
  c.model.generator = "resnet_6blocks"
  res = models.make_generator(c.model).init(jax.random.key(0), x, train=False)["params"]
  for kernel, transposed in ((d["patch_0"]["conv_1"]["kernel"], False),
                             (unet["enc_1"]["kernel"], False), (unet["dec_2"]["kernel"], True),
                             (res["block_0"]["conv_1"]["kernel"], False),
                             (res["up_0"]["kernel"], True)):
    m = _torch_matrix(np.asarray(kernel), transposed)
    np.testing.assert_allclose(m @ m.T, np.eye(m.shape[0]), atol=1e-5)
  assert float(np.std(unet["enc_norm_1"]["bn"]["scale"])) > 0.1  # N(1, init_gain = 1).
