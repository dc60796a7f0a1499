"""The input pipeline on the embedded synthetic dataset: shapes, determinism, resume, hosts."""

import itertools
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import data_config
from pix2pix_jax.data import pipeline
from pix2pix_jax.data import transforms


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _config(base, **overrides):
  return data_config(base.data.data_dir, **{"data.reader": "numpy", **overrides})


def test_shapes_dtypes_and_range(synthetic_config):
  c = _config(synthetic_config, **{"model.input_nc": 1})
  assert pipeline.num_examples(c.data, "train") == 400
  assert pipeline.steps_per_epoch(c) == 400 // c.batch_size
  batch = next(pipeline.train_iterator(c))
  assert set(batch) == {"input", "target"}
  assert batch["input"].shape == (c.batch_size, 64, 64, 1)
  assert batch["target"].shape == (c.batch_size, 64, 64, 3)
  for v in batch.values():
    assert v.dtype == np.float32 and v.min() >= -1 and v.max() <= 1
    assert v.min() < -0.5 and v.max() > 0.5  # Uses the range, not a constant.


def test_deterministic_for_a_seed(synthetic_config):
  c = _config(synthetic_config)
  a = _take(pipeline.train_iterator(c), 3)
  b = _take(pipeline.train_iterator(c), 3)
  c.seed = 1
  other = _take(pipeline.train_iterator(c), 3)
  for x, y, z in zip(a, b, other):
    np.testing.assert_array_equal(x["input"], y["input"])
    np.testing.assert_array_equal(x["target"], y["target"])
    assert not np.array_equal(x["input"], z["input"])


def test_resume_gives_the_uninterrupted_batches_across_an_epoch(synthetic_config):
  c = _config(synthetic_config, batch_size=64)  # 6 steps per epoch.
  assert pipeline.steps_per_epoch(c) == 6
  full = _take(pipeline.train_iterator(c), 9)
  resumed = _take(pipeline.train_iterator(c, start_step=5), 4)
  for x, y in zip(full[5:], resumed):
    np.testing.assert_array_equal(x["input"], y["input"])
    np.testing.assert_array_equal(x["target"], y["target"])
  # Epoch 1 is a new order with new jitter, not a replay of epoch 0.
  assert not np.array_equal(full[0]["input"], full[6]["input"])


def test_each_host_loads_its_half_of_the_global_batch(synthetic_config):
  c = _config(synthetic_config)
  one = _take(pipeline.train_iterator(c, start_step=3), 2)
  halves = [_take(pipeline.train_iterator(c, start_step=3, process_index=p,
                                                process_count=2), 2) for p in range(2)]
  for step in range(2):
    parts = [h[step]["input"] for h in halves]
    assert parts[0].shape[0] == c.batch_size // 2
    assert not np.array_equal(parts[0], parts[1])
    np.testing.assert_array_equal(np.concatenate(parts), one[step]["input"])


def test_tf_and_numpy_readers_give_the_same_pixels(synthetic_config):
  c = _config(synthetic_config)
  numpy_batches = _take(pipeline.train_iterator(c, start_step=7), 2)
  c.data.reader = "tf"
  tf_batches = _take(pipeline.train_iterator(c, start_step=7), 2)
  for x, y in zip(numpy_batches, tf_batches):
    np.testing.assert_array_equal(x["input"], y["input"])
    np.testing.assert_array_equal(x["target"], y["target"])


def test_direction_swaps_input_and_target(synthetic_config):
  c = _config(synthetic_config, **{"data.flip": False, "data.preprocess": "none"})
  a_to_b = pipeline.sample_pairs(c, 2)
  c.data.direction = "BtoA"
  b_to_a = pipeline.sample_pairs(c, 2)
  np.testing.assert_array_equal(a_to_b["input"], b_to_a["target"])
  # A is the label map: few colours; B the photo: many.
  colours = lambda x: len(np.unique(x.reshape(-1, 3), axis=0))
  assert colours(a_to_b["input"][0]) <= 12 < 200 < colours(a_to_b["target"][0])


@pytest.mark.parametrize("mode,load,crop,expected,at_test", [
    ("resize_and_crop", 72, 64, (64, 64), (64, 64)),
    ("crop", 72, 64, (64, 64), (64, 64)),
    # At test time load_size is crop_size (the official test): 64 wide.
    ("scale_width", 96, 64, (96, 96), (64, 64)),
    ("scale_width_and_crop", 96, 64, (64, 64), (64, 64)),
    ("none", 72, 64, (128, 128), (128, 128)),
])
def test_preprocess_mode_sizes(synthetic_config, mode, load, crop, expected, at_test):
  c = _config(synthetic_config, **{"data.preprocess": mode, "data.load_size": load,
                                   "data.crop_size": crop, "model.num_downs": 5})
  assert next(pipeline.train_iterator(c))["input"].shape[1:3] == expected
  assert pipeline.sample_pairs(c, 1)["input"].shape[1:3] == at_test


@pytest.mark.parametrize("size_mode", ["reflect", "zeros", "resize"])
def test_sizes_not_a_multiple_of_2_to_the_num_downs(synthetic_config, size_mode):
  c = _config(synthetic_config, **{"data.load_size": 70, "data.crop_size": 60,
                                   "data.size_mode": size_mode, "model.num_downs": 6})
  batch = next(pipeline.train_iterator(c))
  assert batch["input"].shape[1:3] == (64, 64)
  samples = pipeline.sample_pairs(c, 2)
  assert samples["input"].shape[1:3] == (64, 64)
  np.testing.assert_array_equal(samples["shape"], [[60, 60]] * 2)
  spec = pipeline.spec(c)
  restored = transforms.restore(samples["input"][0], (60, 60), spec)
  assert restored.shape == (60, 60, 3)
  if size_mode != "resize":
    unpadded = c.copy_and_resolve_references()
    unpadded.model.num_downs = 2  # 60 is a multiple of 4: nothing to fit.
    reference = pipeline.sample_pairs(unpadded, 2)["input"][0]
    np.testing.assert_array_equal(restored, reference)


def test_eval_iterator_covers_the_split_once_in_order_with_a_mask(synthetic_config):
  c = _config(synthetic_config)
  batches = list(pipeline.eval_iterator(c, "val", 32))
  assert len(batches) == 4  # 100 = 3 * 32 + 4.
  assert all(b["input"].shape == (32, 64, 64, 3) for b in batches)
  mask = np.concatenate([b["mask"] for b in batches])
  assert mask.sum() == 100 and mask[:100].all()
  names = list(itertools.chain(*(b["name"][b["mask"]] for b in batches)))
  assert names == [f"val_{i:05d}.png" for i in range(100)]
  np.testing.assert_array_equal(batches[0]["size"][0], (128, 128))
  # Two hosts split each global batch.
  halves = [list(pipeline.eval_iterator(c, "val", 32, process_index=p,
                                              process_count=2)) for p in range(2)]
  np.testing.assert_array_equal(
      np.concatenate([halves[0][1]["input"], halves[1][1]["input"]]), batches[1]["input"])
  # No jitter: the same pixels every time.
  again = next(pipeline.eval_iterator(c, "val", 32))
  np.testing.assert_array_equal(again["input"], batches[0]["input"])


def test_sample_pairs_falls_back_to_an_existing_split(synthetic_config):
  c = _config(synthetic_config, **{"data.eval_split": "nope"})
  samples = pipeline.sample_pairs(c, 3)
  assert list(samples["name"]) == [f"test_{i:05d}.png" for i in range(3)]


def test_bad_config_values_are_named(synthetic_config):
  for key, value in (("data.reader", "torch"), ("data.preprocess", "zoom"),
                     ("data.size_mode", "stretch"), ("data.direction", "AtoC")):
    c = _config(synthetic_config, **{key: value})
    with pytest.raises(ValueError, match=key.split(".")[1]):
      next(pipeline.train_iterator(c))
  with pytest.raises(ValueError, match="on_bad_file"):
    pipeline.builder(_config(synthetic_config, **{"data.on_bad_file": "ignore"}).data)
  with pytest.raises(ValueError, match="Unknown data.name"):
    pipeline.builder(_config(synthetic_config, **{"data.name": "imagenet"}).data)


def test_numpy_reader_never_imports_tensorflow(synthetic_config):
  code = (
      "import sys; import configs.default as d; from pix2pix_jax.data import pipeline as ip\n"
      "c = d.get_config(); c.data.reader = 'numpy'; c.data.data_dir = sys.argv[1]\n"
      "b = next(ip.train_iterator(c, start_step=3)); s = ip.sample_pairs(c, 2)\n"
      "print(b['input'].shape, 'tensorflow' in sys.modules)")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, "-c", code, synthetic_config.data.data_dir], cwd=root,
                       capture_output=True, text=True, check=True).stdout
  assert out.strip().endswith("(4, 64, 64, 3) False"), out
