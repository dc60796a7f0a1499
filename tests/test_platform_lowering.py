"""Accelerators get plain XLA convolutions; CPU keeps its rewrites (nn/conv.py).

Checked without an accelerator by lowering for each platform with `jax.export`: the StableHLO
is what that platform would compile. The paper's networks at 256x256, as trained and served.
"""

import functools
import re

import jax
import jax.numpy as jnp
import pytest

import configs.default as default_config
from pix2pix_jax.nn import conv
from pix2pix_jax.nn import generate
from pix2pix_jax.objectives import objective
from pix2pix_jax.train import optimizers
from pix2pix_jax.train import state as state_lib
from pix2pix_jax.train import step as step_lib

ACCELERATORS = ("cuda", "tpu")
# dot_general ops whose operands are both rank 1: the gradient norms (jnp.vdot over flattened
# parameters); any other is a convolution or dense layer computed as a matrix product.
_DOT = re.compile(r"stablehlo\.dot_general[^\n]*?:\s*\((tensor<[^>]*>),\s*(tensor<[^>]*>)\)")


def paper_config(batch_size: int, dtype: str):
  c = default_config.base_config()
  c.data.name = "synthetic"
  c.batch_size = batch_size
  c.model.dtype = dtype
  return c


def _rank(tensor_type: str) -> int:
  dims = tensor_type[len("tensor<"):-1].split("x")[:-1]
  return len(dims)


def ops(text: str) -> dict[str, int]:
  dots = _DOT.findall(text)
  return {"convolution": text.count("stablehlo.convolution"),
          "custom_call": text.count("stablehlo.custom_call"),
          "matrix_dot": sum(1 for a, b in dots if _rank(a) > 1 or _rank(b) > 1),
          "vector_dot": sum(1 for a, b in dots if _rank(a) == 1 and _rank(b) == 1)}


def train_step_fn(config, parts):
  g_tx, d_tx = optimizers.make_optimizers(config, 100)
  state = jax.eval_shape(lambda: state_lib.create_train_state(config, g_tx, d_tx))
  from pix2pix_jax.nn import models  # pylint: disable=g-import-not-at-top
  step = functools.partial(
      step_lib.train_step, generator=models.make_generator(config.model, parts),
      discriminator=models.make_discriminator(config.model, parts), g_tx=g_tx, d_tx=d_tx,
      objective=objective.objective_from_config(config.loss))
  size = config.data.crop_size
  image = jax.ShapeDtypeStruct((config.batch_size, size, size, 3), jnp.float32)
  return jax.jit(step, donate_argnums=0), (state, {"input": image, "target": image})


def generate_fn(config, parts, eval_mode):
  from pix2pix_jax.nn import models  # pylint: disable=g-import-not-at-top
  size, n = config.data.crop_size, config.batch_size
  variables = jax.eval_shape(lambda: models.make_generator(config.model).init(
      jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False))
  images = jax.ShapeDtypeStruct((n, size, size, 3), jnp.float32)
  keys = jax.eval_shape(lambda: generate.image_keys(0, list(range(n))))
  return generate.make_generate_fn(config, eval_mode, parts), (variables, images, keys)


def lowered(fn_and_args, platform: str) -> str:
  fn, args = fn_and_args
  return jax.export.export(fn, platforms=(platform,))(*args).mlir_module()


@pytest.mark.parametrize("dtype,batch_size", [
    ("float32", 1),  # The others lower the same networks at another batch or dtype: test-slow.
    pytest.param("float32", 16, marks=pytest.mark.slow),
    pytest.param("bfloat16", 1, marks=pytest.mark.slow),
    pytest.param("bfloat16", 16, marks=pytest.mark.slow)])
def test_train_step_lowers_to_plain_convolutions_off_cpu(dtype, batch_size):
  c = paper_config(batch_size, dtype)
  flax_counts = ops(lowered(train_step_fn(c, conv.FLAX), "cuda"))
  assert flax_counts["custom_call"] == 0 and flax_counts["matrix_dot"] == 0
  for platform in ACCELERATORS:
    counts = ops(lowered(train_step_fn(c, conv.AUTO), platform))
    assert counts["custom_call"] == 0, platform
    assert counts["matrix_dot"] == 0, platform
    assert counts["vector_dot"] > 0  # The gradient norms are there, and only they.
    assert counts["convolution"] == flax_counts["convolution"], (platform, counts, flax_counts)
  cpu = ops(lowered(train_step_fn(c, conv.AUTO), "cpu"))
  assert cpu["matrix_dot"] > 0, "the CPU rewrites are gone from the CPU lowering"


@pytest.mark.parametrize("eval_mode", [False, True])
def test_generator_inference_lowers_to_plain_convolutions_off_cpu(eval_mode):
  c = paper_config(4, "float32")
  flax_counts = ops(lowered(generate_fn(c, conv.FLAX, eval_mode), "cuda"))
  for platform in ACCELERATORS:
    counts = ops(lowered(generate_fn(c, conv.AUTO, eval_mode), platform))
    assert counts["custom_call"] == 0 and counts["matrix_dot"] == 0, platform
    assert counts["convolution"] == flax_counts["convolution"] == 16, (platform, counts)
  cpu = ops(lowered(generate_fn(c, conv.AUTO, eval_mode), "cpu"))
  assert cpu["matrix_dot"] > 0  # The inner levels' im2col products.


def test_resnet_generator_inference_lowers_to_plain_convolutions_on_cuda():
  c = paper_config(4, "float32")
  c.model.generator = "resnet_9blocks"
  text = lowered(generate_fn(c, conv.AUTO, eval_mode=False), "cuda")
  assert "stablehlo.dot_general" not in text and "stablehlo.custom_call" not in text
  # stem, 2 down, 2 per block, 2 up (transposed: lax's input-dilated convolutions), head.
  assert ops(text)["convolution"] == 1 + 2 + 2 * 9 + 2 + 1


def test_cpu_placement_picks_the_cpu_branch_whatever_the_default_backend(monkeypatch):
  """The choice follows the lowering platform: a function jitted onto a CPU device gets the
  CPU forms even when the process's default backend says otherwise."""
  c = paper_config(1, "float32")
  fn, args = generate_fn(c, conv.AUTO, eval_mode=True)
  expected = ops(fn.lower(*args).as_text())
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  with jax.default_device(jax.devices("cpu")[0]):
    counts = ops(fn.lower(*args).as_text())
  assert counts == expected and counts["matrix_dot"] > 0


def test_plain_parts_are_plain_on_every_platform():
  c = paper_config(1, "float32")
  for platform in ("cpu",) + ACCELERATORS:
    counts = ops(lowered(generate_fn(c, conv.PLAIN, eval_mode=True), platform))
    assert counts["matrix_dot"] == 0 and counts["convolution"] == 16, platform
