"""Loading a generator from a checkpoint and translating images of any size and mode."""

import os
import subprocess
import sys

import jax
import numpy as np
from PIL import Image
import pytest

from pix2pix_jax.data import image_io
from pix2pix_jax.data import transforms
from pix2pix_jax.nn import generate as generate_lib
from pix2pix_jax.nn import models
from pix2pix_jax.serving import inference
from pix2pix_jax.serving import translate as translate_cli
from pix2pix_jax.train import checkpoints

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def generator(trained_workdir):
  return checkpoints.load_generator(trained_workdir)


def _image(seed, shape):
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_load_generator_reads_only_the_generator(trained_workdir, generator):
  config, variables = generator
  assert config.model.num_downs == 6 and config.model.ngf == 4
  shapes = checkpoints.generator_shapes(config)
  assert jax.tree.structure(variables) == jax.tree.structure(shapes)
  assert jax.tree.map(lambda v: v.shape, variables) == jax.tree.map(lambda s: s.shape, shapes)
  # Running means moved away from their initial zeros during the training step.
  assert float(np.abs(variables["batch_stats"]["enc_norm_1"]["bn"]["mean"]).max()) > 0
  step_dir = checkpoints.checkpoint_step_dir(trained_workdir)
  assert step_dir.endswith(os.path.join("checkpoints", "1"))
  for path in (os.path.dirname(step_dir), step_dir):
    _, same = checkpoints.load_generator(path)
    assert jax.tree.all(jax.tree.map(np.array_equal, same, variables))
  with pytest.raises(FileNotFoundError, match="step 7"):
    checkpoints.load_generator(trained_workdir, step=7)


@pytest.mark.parametrize("size_mode", inference.FIT_MODES)
def test_any_size_and_channel_count(generator, size_mode):
  config, variables = generator
  images = [_image(0, (300, 517, 4)), _image(1, (45, 70)), _image(2, (64, 64, 3)),
            _image(3, (20, 33, 1))]
  outputs = inference.translate(config, variables, images, size_mode=size_mode, batch_size=2)
  for image, out in zip(images, outputs):
    assert out.dtype == np.uint8
    assert out.shape == image.shape[:2] + (3,)


def test_eval_mode_is_the_module_in_eval_mode(generator):
  config, variables = generator
  image = _image(4, (64, 64, 3))
  out = inference.translate(config, variables, [image], eval_mode=True)[0]
  x = image_io.to_float(image)[None]
  expected = models.make_generator(config.model).apply(variables, x, train=False)
  np.testing.assert_allclose(out.astype(int), image_io.to_uint8(expected[0]).astype(int),
                             atol=1)
  again = inference.translate(config, variables, [image], eval_mode=True, seed=5)[0]
  np.testing.assert_array_equal(out, again)


def test_test_mode_uses_each_images_statistics_and_seeded_dropout(generator):
  config, variables = generator
  generate = generate_lib.make_generate_fn(config)  # Compiled once for all the calls below.
  run = lambda images, **kw: inference.translate(config, variables, images, batch_size=2,
                                                 generate_fn=generate, **kw)
  a, b = _image(5, (64, 64, 3)), _image(6, (64, 64, 3))
  together = run([a, b], seed=3)
  alone = run([b], seed=3, image_ids=[1])  # Batched with a copy of itself.
  np.testing.assert_array_equal(together[1], alone[0])  # Independent of the batch.
  repeat = run([a, b], seed=3)
  np.testing.assert_array_equal(together[0], repeat[0])  # A seed fixes the noise.
  other_seed = run([a], seed=4)[0]
  assert np.abs(other_seed.astype(int) - together[0]).max() > 0  # Dropout is on.
  evaluated = inference.translate(config, variables, [a], eval_mode=True)[0]
  assert np.abs(evaluated.astype(int) - together[0]).mean() > 1  # Other BN statistics.


def test_padding_is_reflect_and_cropped_back():
  image = np.arange(3 * 5, dtype=np.uint8).reshape(3, 5, 1)
  padded, crop = transforms.pad_to_multiple(image, 4)
  assert padded.shape == (4, 8, 1)
  np.testing.assert_array_equal(padded[crop], image)
  np.testing.assert_array_equal(padded[:, 0, 0], padded[:, 2, 0])  # Mirrored about column 1.


def test_to_channels_composites_transparency_over_white():
  rgba = np.zeros((2, 2, 4), np.uint8)  # Fully transparent black.
  np.testing.assert_array_equal(image_io.flatten_for_model(rgba, 3), 255)
  np.testing.assert_array_equal(image_io.flatten_for_model(rgba, 1), 255)
  gray = np.full((2, 2), 7, np.uint8)
  np.testing.assert_array_equal(image_io.flatten_for_model(gray, 3), 7)
  with pytest.raises(TypeError):
    image_io.flatten_for_model(gray.astype(np.float32), 3)


def test_output_names_refuse_collisions():
  assert translate_cli.output_names(["a/photo.jpg", "a/b.png"]) == ["photo.png", "b.png"]
  with pytest.raises(ValueError, match="both"):
    translate_cli.output_names(["a/photo.jpg", "a/photo.png"])


def test_translate_cli(trained_workdir, tmp_path):
  inputs = tmp_path / "in"
  inputs.mkdir()
  Image.fromarray(_image(7, (300, 517, 4))).save(inputs / "wide.png")
  Image.fromarray(_image(8, (50, 40))).save(inputs / "gray.jpg")
  out = tmp_path / "out"
  result = subprocess.run(
      [sys.executable, "-m", "pix2pix_jax.serving.translate", f"--workdir={trained_workdir}",
       f"--input={inputs}", f"--output={out}", "--batch_size=2", "--seed=1"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert sorted(os.listdir(out)) == ["gray.png", "wide.png"]
  assert Image.open(out / "wide.png").size == (517, 300)
  assert Image.open(out / "gray.png").size == (40, 50)
  assert Image.open(out / "gray.png").mode == "RGB"
  written = translate_cli.translate_files(trained_workdir, str(inputs / "wide.png"),
                                          str(tmp_path / "again"), seed=1, batch_size=2)
  np.testing.assert_array_equal(np.asarray(Image.open(written[0])),
                                np.asarray(Image.open(out / "wide.png")))
