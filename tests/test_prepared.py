"""Kernels prepared once per loaded model (nn/generate.prepare): the same outputs, the
prepared kernels read in place of the per-call transforms, and nothing prepared where no
layer's form has kernel-only work."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pix2pix_jax.config import base
from pix2pix_jax.nn import conv
from pix2pix_jax.nn import generate as generate_lib
from pix2pix_jax.nn import models


def _layer(kind, impl="auto"):
  """A wide Conv2d(4, 2, 1) or ConvTranspose2d(4, 2, 1): Winograd at inference at the
  shapes below (at least 64 output tiles, 128 channels each side)."""
  if kind == "down":
    return conv.Conv(128, (4, 4), (2, 2), ((1, 1), (1, 1)), impl=impl)
  return conv.ConvTranspose(64, (4, 4), (2, 2), ((2, 2), (2, 2)), impl=impl)


SHAPES = {"down": (4, 32, 32, 64), "up": (4, 16, 16, 128)}


@pytest.mark.parametrize("kind", ["down", "up"])
def test_a_prepared_layer_computes_the_same_function_from_its_prepared_kernel(kind):
  layer = _layer(kind)
  x = jax.random.normal(jax.random.key(0), SHAPES[kind])
  variables = layer.init(jax.random.key(1), x)
  apply = jax.jit(layer.apply)
  _, state = jax.jit(lambda v: layer.apply(v, x, mutable=[conv.PREPARED]))(variables)
  prepared = {**variables, **state}
  assert prepared[conv.PREPARED]["kernel"].shape[0] == 25  # F(4x4, 2x2)'s transformed taps
  want = np.asarray(apply(variables, x))
  np.testing.assert_allclose(np.asarray(apply(prepared, x)), want, rtol=1e-5,
                             atol=1e-5 * np.abs(want).max())
  # The prepared kernel is what the call reads: zeroed, the output is the bias alone.
  zeroed = {**prepared, conv.PREPARED: {"kernel": jnp.zeros_like(prepared[conv.PREPARED]["kernel"])}}
  bias = np.asarray(variables["params"]["bias"])
  np.testing.assert_allclose(np.asarray(apply(zeroed, x)),
                             np.broadcast_to(bias, want.shape), atol=1e-6)


@pytest.mark.parametrize("kind", ["down", "up"])
def test_plain_layers_and_small_inputs_prepare_nothing(kind):
  x = jax.random.normal(jax.random.key(0), SHAPES[kind])
  for layer, x in ((_layer(kind, impl="plain"), x), (_layer(kind), x[:1])):
    variables = layer.init(jax.random.key(1), x)
    _, state = layer.apply(variables, x, mutable=[conv.PREPARED])
    assert not state.get(conv.PREPARED)


@pytest.fixture(scope="module")
def config():
  c = base.base_config()
  c.model.num_downs, c.model.ngf = 5, 32
  c.data.crop_size = 64
  return c


@pytest.mark.parametrize("eval_mode", [True, False])
def test_prepared_generator_gives_the_same_outputs_at_every_shape(config, eval_mode):
  generator = models.make_generator(config.model)
  images = jax.random.uniform(jax.random.key(2), (16, 64, 64, 3), jnp.float32, -1, 1)
  variables = jax.jit(lambda: generator.init(jax.random.key(0), images[:1], train=False))()
  prepared = generate_lib.prepare(config, variables, images.shape, eval_mode)
  if eval_mode:  # at batch 16 the wide outer levels run by Winograd
    assert prepared[conv.PREPARED]
  generate = generate_lib.make_generate_fn(config, eval_mode)
  for n in (16, 2):  # the shape prepared for, and one whose forms differ
    keys = generate_lib.image_keys(0, range(n))
    want = np.asarray(generate(variables, images[:n], keys))
    np.testing.assert_allclose(np.asarray(generate(prepared, images[:n], keys)), want,
                               atol=1e-5)
  # Preparing again replaces the collection rather than nesting it.
  again = generate_lib.prepare(config, prepared, images.shape, eval_mode)
  assert set(again) == set(prepared)
