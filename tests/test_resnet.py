"""The ResNet generators: the official parameter counts, sizes, dropout, training and translate.

Their outputs against official PyTorch weights are checked in tests/test_torch_import.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import configs.default as default_config
from conftest import tiny_config
from pix2pix_jax.config import sizes
from pix2pix_jax.config import validation
from pix2pix_jax.data import pipeline
from pix2pix_jax.nn import models
from pix2pix_jax.nn import resnet
from pix2pix_jax.serving import export
from pix2pix_jax.serving import inference
from pix2pix_jax.train import checkpoints
from pix2pix_jax.train import setup
from pix2pix_jax.train import sharding


@pytest.mark.parametrize("generator, norm, params", [
    ("resnet_9blocks", "batch", 11_383_427), ("resnet_9blocks", "instance", 11_378_179),
    ("resnet_6blocks", "batch", 7_841_411), ("resnet_6blocks", "instance", 7_837_699)])
def test_official_parameter_counts(generator, norm, params):
  # The official ResnetGenerator's counts (ngf 64, 3 in, 3 out), as torch counts them for
  # tests/fixtures/make_torch_fixture.py's copy of it.
  c = default_config.base_config()
  c.model.update(generator=generator, norm=norm)
  assert sizes.network_sizes(c)["generator_params"] == params


def test_reflect_pad_does_not_repeat_the_edge():
  x = jnp.arange(4.0).reshape(1, 1, 4, 1)
  padded = resnet.reflect_pad(jnp.broadcast_to(x, (1, 3, 4, 1)), 2)
  np.testing.assert_array_equal(padded[0, 0, :, 0], [2, 1, 0, 1, 2, 3, 2, 1])
  assert padded.shape == (1, 7, 8, 1)


@pytest.mark.parametrize("norm, has_bias", [("batch", False), ("instance", True)])
def test_output_has_the_input_size_and_biases_follow_norm(norm, has_bias):
  g = resnet.ResnetGenerator(output_nc=2, ngf=2, n_blocks=1, norm=norm)
  x = jnp.zeros((1, 12, 20, 3))
  variables = jax.eval_shape(lambda: g.init(jax.random.key(0), x, train=False))
  out = jax.eval_shape(lambda v: g.apply(v, x, train=False), variables)
  assert out.shape == (1, 12, 20, 2)
  params = variables["params"]
  for layer in ("stem", "down_0", "up_1"):
    assert ("bias" in params[layer]) == has_bias, layer
  assert ("bias" in params["block_0"]["conv_1"]) == has_bias
  assert "bias" in params["head"]  # The last conv always has one.
  assert params["up_0"]["kernel"].shape == (3, 3, 8, 4)


def test_dropout_is_the_blocks_noise():
  g = resnet.ResnetGenerator(ngf=2, n_blocks=2)
  x = jax.random.normal(jax.random.key(0), (1, 16, 16, 3))
  variables = g.init(jax.random.key(1), x, train=False)

  def run(module, key):
    out, _ = module.apply(variables, x, train=True, mutable=["batch_stats"],
                          rngs={"dropout": key})
    return out

  a, b = run(g, jax.random.key(2)), run(g, jax.random.key(3))
  np.testing.assert_array_equal(a, run(g, jax.random.key(2)))
  assert float(jnp.abs(a - b).max()) > 0
  no_dropout = g.clone(dropout_rate=0.0)
  np.testing.assert_array_equal(run(no_dropout, jax.random.key(2)),
                                run(no_dropout, jax.random.key(3)))


def resnet_config(generator="resnet_6blocks"):
  c = tiny_config()
  c.model.generator = generator
  return c


def test_size_multiple_is_4_for_the_resnet_generators():
  c = resnet_config()
  assert models.size_multiple(c.model) == 4
  assert models.size_multiple(tiny_config().model) == 2**6
  assert pipeline.spec(c).multiple == 4
  c.data.update(crop_size=60, load_size=72)  # Not a multiple of 2**6, but of 4.
  validation.validate(c)
  c.data.crop_size = 62
  with pytest.raises(validation.ConfigError, match=r"^data.crop_size=62 must be a multiple of 4"):
    validation.validate(c)
  c.data.crop_size = 4  # Blocks would reflect-pad 1x1 maps.
  with pytest.raises(validation.ConfigError, match=r"^data.crop_size=4 must be at least 8"):
    validation.validate(c)


def test_exports_for_any_multiple_of_4():
  """The StableHLO export is polymorphic in the size: reflection padding needs it to know that
  the quarter-size maps have two pixels."""
  c = resnet_config()
  g = models.make_generator(c.model)
  variables = g.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)), train=False)
  exported = export.export_stablehlo(c, variables, platforms=("cpu",))
  x = jax.random.normal(jax.random.key(1), (2, 12, 20, 3))
  np.testing.assert_allclose(exported.call(x), g.apply(variables, x, train=False), atol=1e-5)


def test_trains_and_translates_any_size(tmp_path):
  config = resnet_config()
  # Each Dropout layer's random bits cost seconds of XLA:CPU compilation; the blocks' dropout
  # is checked above.
  config.model.dropout_rate = 0.0
  config.data.update(crop_size=32, load_size=36)
  state, step, _, _ = setup.fresh(config, sharding.make_mesh(), 2)
  before = jax.tree.map(np.asarray, state.g_params)
  rng = np.random.default_rng(0)
  shape = (config.batch_size, config.data.crop_size, config.data.crop_size, 3)
  for _ in range(2):
    batch = {k: rng.uniform(-1, 1, shape).astype(np.float32) for k in ("input", "target")}
    state, metrics = step(state, batch)
    assert all(np.isfinite(float(v)) for v in jax.tree.leaves(metrics))
  assert not np.array_equal(before["block_0"]["conv_0"]["kernel"],
                            state.g_params["block_0"]["conv_0"]["kernel"])

  manager = checkpoints.make_manager(str(tmp_path), async_save=False)
  checkpoints.save(manager, state, config)
  manager.wait_until_finished()
  manager.close()
  loaded_config, variables = checkpoints.load_generator(str(tmp_path))
  assert loaded_config.model.generator == "resnet_6blocks"
  image = rng.integers(0, 256, (30, 22, 3), dtype=np.uint8)  # Padded to 32 x 24.
  (output,) = inference.translate(loaded_config, variables, [image], eval_mode=True)
  assert output.shape == (30, 22, 3)
