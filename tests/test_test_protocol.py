"""Test-time geometry: every non-training read sees the whole image, as the official test.py.

A folder dataset whose images carry a 4-pixel red (A) and green (B) border: if evaluation
cropped anything (the training load_size's resize-then-crop), the border would be gone.
"""

import os

import numpy as np
from PIL import Image
import pytest

from pix2pix_jax.data import image_io
from pix2pix_jax.data import pipeline
from pix2pix_jax.eval import evaluate as evaluate_lib
from pix2pix_jax.eval import lpips as lpips_lib
from pix2pix_jax.train import checkpoints

SIZE, BORDER = 80, 4
RED, GREEN = (255, 0, 0), (0, 255, 0)


def _marked(rng, colour):
  image = rng.integers(90, 160, (SIZE, SIZE, 3)).astype(np.uint8)
  image[:BORDER], image[-BORDER:], image[:, :BORDER], image[:, -BORDER:] = (colour,) * 4
  return image


@pytest.fixture(scope="module")
def marked(tmp_path_factory):
  """(folder, {name: (A, B)}): 3 test pairs, 2 train, side by side."""
  root = tmp_path_factory.mktemp("marked")
  rng = np.random.default_rng(0)
  pairs = {}
  for split, n in (("train", 2), ("test", 3)):
    os.makedirs(root / "data" / split)
    for i in range(n):
      a, b = _marked(rng, RED), _marked(rng, GREEN)
      Image.fromarray(np.concatenate([a, b], axis=1)).save(root / "data" / split / f"{i}.png")
      if split == "test":
        pairs[f"{i}.png"] = (a, b)
  return root, pairs


def _config(trained_workdir, root, **data):
  config, variables = checkpoints.load_generator(trained_workdir)
  config.data.name, config.data.path = "folder", str(root / "data")
  config.data.data_dir = str(root / "tfds")
  config.data.direction = "AtoB"
  for k, v in data.items():
    config.data[k] = v
  return config, variables


def _edges(image):
  return np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])


def test_evaluated_outputs_cover_the_whole_input(trained_workdir, marked, tmp_path):
  root, pairs = marked
  config, variables = _config(trained_workdir, root)
  assert (config.data.load_size, config.data.crop_size) == (72, 64)  # Training geometry.
  result = evaluate_lib.evaluate(config, variables, "test", str(tmp_path), batch_size=2,
                                 lpips_params=lpips_lib.load_params())
  assert result["num_images"] == 3
  for record in result["images"]:
    a, b = pairs[record["name"]]
    seen = {role: np.asarray(Image.open(tmp_path / record[role]))
            for role in ("input", "output", "target")}
    assert {v.shape for v in seen.values()} == {(64, 64, 3)}
    # The whole photo resized to crop_size: no crop, the marked border on every side.
    for got, original, colour in ((seen["input"], a, RED), (seen["target"], b, GREEN)):
      np.testing.assert_allclose(got, image_io.resize(original, 64, 64), atol=1)
      np.testing.assert_allclose(_edges(got), np.broadcast_to(colour, (4 * 64, 3)), atol=2)


def test_sample_grids_see_the_whole_image_and_test_load_size_restores_the_crop(
    trained_workdir, marked):
  root, _ = marked
  config, _ = _config(trained_workdir, root, eval_split="test")
  red = np.array([1.0, -1.0, -1.0])
  np.testing.assert_allclose(_edges(pipeline.sample_pairs(config, 1)["input"][0]),
                             np.broadcast_to(red, (4 * 64, 3)), atol=0.02)
  # data.test_load_size = load_size: resize to 72 and centre-crop 64, the border cut off.
  config.data.test_load_size = config.data.load_size
  cropped = pipeline.sample_pairs(config, 1)["input"][0]
  assert cropped.shape == (64, 64, 3)
  assert np.abs(_edges(cropped) - red).max() > 1.0


def test_training_still_uses_the_training_geometry(trained_workdir, marked):
  root, _ = marked
  config, _ = _config(trained_workdir, root, flip=False)
  assert pipeline.spec(config).load_size == 72
  assert pipeline.test_spec(config).load_size == 64 and not pipeline.test_spec(config).flip
