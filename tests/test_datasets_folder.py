"""A user's own folder: AB files or A/ B/ folders, any mode and size, split or held out."""

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from conftest import data_config
from pix2pix_jax.data import image_io
from pix2pix_jax.data import pipeline
from pix2pix_jax.data import transforms
from pix2pix_jax.data.datasets import folder


def _random(rng, height, width, channels, top=255):
  dtype = np.uint16 if top > 255 else np.uint8
  return rng.integers(0, top + 1, (height, width, channels)).astype(dtype)


def _save(path, array):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path)


def _config(tmp_path, path, **overrides):
  return data_config(tmp_path / "tfds", **{"data.name": "folder", "data.path": str(path),
                                           "data.reader": "numpy", **overrides})


def _examples(builder, split):
  """Decoded by the package (tfds' own numpy decoder cannot read 16-bit PNGs)."""
  skip = tfds.decode.SkipDecoding()
  source = builder.as_data_source(split, decoders={"image_a": skip, "image_b": skip})
  examples = [dict(source[i]) for i in range(len(source))]
  for ex in examples:
    for key in ("image_a", "image_b"):
      ex[key] = image_io.decode(ex[key], key)
  return examples


def test_side_by_side_files_in_split_folders_non_square(tmp_path):
  rng = np.random.default_rng(0)
  data = tmp_path / "mine"
  written = {}
  for split, n in (("train", 3), ("val", 2), ("test", 1)):
    for i in range(n):
      ab = _random(rng, 20, 60, 3)
      _save(data / split / f"{i}.png", ab)
      written[(split, i)] = ab
  b = pipeline.builder(_config(tmp_path, data).data)
  assert {s: b.info.splits[s].num_examples for s in b.info.splits} == {
      "train": 3, "val": 2, "test": 1}
  ex = _examples(b, "val")[1]
  assert ex["name"] in ("1.png", b"1.png")
  np.testing.assert_array_equal(ex["image_a"], written[("val", 1)][:, :30])
  np.testing.assert_array_equal(ex["image_b"], written[("val", 1)][:, 30:])
  np.testing.assert_array_equal(ex["size"], (20, 30))


def test_a_and_b_folders_pair_by_name_gray_to_rgb_with_held_out_fraction(tmp_path):
  rng = np.random.default_rng(1)
  data = tmp_path / "ab"
  pairs = {}
  for i in range(8):
    a, b = _random(rng, 12, 16, 1), _random(rng, 12, 16, 3)
    _save(data / "A" / f"img{i}.png", a)
    _save(data / "B" / f"img{i}.bmp", b)  # Same name, another extension.
    pairs[f"img{i}.png"] = (a, b)
  c = _config(tmp_path, data, **{"data.val_fraction": 0.25})
  b = pipeline.builder(c.data)
  assert b.info.splits["train"].num_examples == 6 and b.info.splits["val"].num_examples == 2
  assert b.info.features["image_a"].shape[-1] == 1
  assert b.info.features["image_b"].shape[-1] == 3
  names = set()
  for split in ("train", "val"):
    for ex in _examples(b, split):
      name = ex["name"].decode() if isinstance(ex["name"], bytes) else ex["name"]
      names.add(name)
      np.testing.assert_array_equal(ex["image_a"], pairs[name][0])
      np.testing.assert_array_equal(ex["image_b"], pairs[name][1])
  assert names == set(pairs)
  # Gray input, colour target through the pipeline.
  c.model.input_nc, c.model.num_downs = 1, 2
  c.data.preprocess, c.batch_size = "none", 2
  batch = next(pipeline.train_iterator(c))
  assert batch["input"].shape == (2, 12, 16, 1) and batch["target"].shape == (2, 12, 16, 3)


def test_rgba_and_mixed_modes_keep_alpha(tmp_path):
  rng = np.random.default_rng(2)
  data = tmp_path / "rgba"
  _save(data / "A" / "0.png", _random(rng, 8, 8, 4))
  _save(data / "A" / "1.png", _random(rng, 8, 8, 3))
  _save(data / "B" / "0.png", _random(rng, 8, 8, 2))  # Gray + alpha.
  _save(data / "B" / "1.png", _random(rng, 8, 8, 1))
  c = _config(tmp_path, data, **{"data.val_fraction": 0.0})
  b = pipeline.builder(c.data)
  assert list(b.info.splits) == ["train"]
  assert b.info.features["image_a"].shape[-1] == 4
  assert b.info.features["image_b"].shape[-1] == 2
  second = _examples(b, "train")[1]
  assert (second["image_a"][..., 3] == 255).all()  # RGB got an opaque alpha.
  assert (second["image_b"][..., 1] == 255).all()
  # Any channel count per side reaches the network, here 4 in and 1 out.
  c.model.input_nc, c.model.output_nc, c.model.num_downs = 4, 1, 3
  c.data.preprocess, c.batch_size = "none", 1
  batch = next(pipeline.train_iterator(c))
  assert batch["input"].shape == (1, 8, 8, 4) and batch["target"].shape == (1, 8, 8, 1)


def test_16_bit_png_keeps_its_precision(tmp_path):
  data = tmp_path / "deep"
  a = np.array([[0, 1, 32768, 65535]] * 4, np.uint16)[..., None]
  _save(data / "A" / "x.png", a)
  _save(data / "B" / "x.png", np.full((4, 4, 3), 255, np.uint8))
  c = _config(tmp_path, data, **{"data.val_fraction": 0.0, "data.preprocess": "none",
                                 "data.flip": False, "model.input_nc": 1,
                                 "model.num_downs": 2, "batch_size": 1})
  b = pipeline.builder(c.data)
  assert b.info.features["image_a"].np_dtype == np.uint16
  np.testing.assert_array_equal(_examples(b, "train")[0]["image_a"], a)
  x = next(pipeline.train_iterator(c))["input"][0, 0, :, 0]
  np.testing.assert_allclose(x, [-1, -1 + 2 / 65535, 32768 * 2 / 65535 - 1, 1], atol=1e-6)
  assert x[1] != x[0]  # Not squeezed into 8 bits.


def test_non_square_sizes_not_a_multiple_pad_and_crop_back(tmp_path):
  rng = np.random.default_rng(3)
  data = tmp_path / "odd"
  for i in range(2):
    _save(data / "train" / f"{i}.png", _random(rng, 50, 140, 3))
  c = _config(tmp_path, data, **{"data.preprocess": "none", "model.num_downs": 5,
                                 "data.eval_split": "train"})
  samples = pipeline.sample_pairs(c, 2)
  # 50x70 -> 48x72 (rounded to multiples of 4, as the official "none"), padded to 32s.
  assert samples["input"].shape == (2, 64, 96, 3)
  np.testing.assert_array_equal(samples["shape"], [[48, 72]] * 2)
  np.testing.assert_array_equal(samples["size"], [[50, 70]] * 2)
  restored = transforms.restore(samples["input"][0], (48, 72), pipeline.spec(c))
  np.testing.assert_array_equal(restored, samples["input"][0, :48, :72])
  np.testing.assert_array_equal(samples["input"][0, 48:52], samples["input"][0, 46:42:-1])


def test_config_name_follows_the_folder_and_its_files(tmp_path):
  rng = np.random.default_rng(4)
  for name in ("one", "two"):
    _save(tmp_path / name / "0.png", _random(rng, 4, 8, 3))
    _save(tmp_path / name / "1.png", _random(rng, 4, 8, 3))
  one, two = folder.make_config(str(tmp_path / "one")), folder.make_config(str(tmp_path / "two"))
  assert one.name.startswith("one_") and two.name.startswith("two_")
  assert one.name != folder.make_config(str(tmp_path / "two")).name
  assert one.name == folder.make_config(str(tmp_path / "one")).name
  _save(tmp_path / "one" / "2.png", _random(rng, 4, 8, 3))
  assert folder.make_config(str(tmp_path / "one")).name != one.name


def test_folder_needs_a_path(tmp_path):
  with pytest.raises(ValueError, match="data.path"):
    pipeline.builder(_config(tmp_path, "").data)
