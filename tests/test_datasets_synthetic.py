"""The embedded synthetic facades: deterministic, facade-like, learnable from the labels."""

import numpy as np
import tensorflow_datasets as tfds

from pix2pix_jax.data import image_io
from pix2pix_jax.data import pipeline
from pix2pix_jax.data.datasets import synthetic


def test_pairs_are_deterministic_and_differ_by_index_split_and_seed():
  a, b = synthetic.make_pair(0, "train", 3)
  a2, b2 = synthetic.make_pair(0, "train", 3)
  np.testing.assert_array_equal(a, a2)
  np.testing.assert_array_equal(b, b2)
  for other in ((0, "train", 4), (0, "val", 3), (1, "train", 3)):
    assert not np.array_equal(b, synthetic.make_pair(*other)[1])
  assert a.shape == b.shape == (128, 128, 3) and a.dtype == b.dtype == np.uint8


def test_label_map_uses_the_palette_and_the_photo_has_texture():
  for i in range(10):
    labels = synthetic.label_map(np.random.default_rng([0, 0, i]), 128)
    present = set(np.unique(labels))
    assert {synthetic.SKY, synthetic.FACADE, synthetic.WINDOW, synthetic.DOOR,
            synthetic.CORNICE} <= present
    a, b = synthetic.make_pair(0, "train", i)
    assert len(np.unique(a.reshape(-1, 3), axis=0)) == len(
        np.unique(labels)) <= len(synthetic.CLASSES)
    assert len(np.unique(b.reshape(-1, 3), axis=0)) > 1000


def test_classes_look_different_in_the_photo():
  """Each class has its own mean colour, so the labels determine much of the photo."""
  sums = np.zeros((len(synthetic.CLASSES), 3))
  counts = np.zeros(len(synthetic.CLASSES))
  for i in range(20):
    rng = np.random.default_rng([0, 0, i])
    labels = synthetic.label_map(rng, 128)
    photo = synthetic.render(labels, rng).astype(np.float64)
    for k in np.unique(labels):
      sums[k] += photo[labels == k].sum(0)
      counts[k] += (labels == k).sum()
  means = sums[counts > 0] / counts[counts > 0, None]
  distances = np.linalg.norm(means[:, None] - means[None], axis=-1)
  assert distances[np.triu_indices(len(means), 1)].min() > 8


def test_builder_splits_and_features(synthetic_config):
  b = pipeline.builder(synthetic_config.data)
  assert {s: b.info.splits[s].num_examples for s in b.info.splits} == {
      "train": 400, "val": 100, "test": 50}
  source = b.as_data_source("val")
  ex = source[7]
  a, photo = synthetic.make_pair(0, "val", 7)
  np.testing.assert_array_equal(ex["image_a"], a)
  np.testing.assert_array_equal(ex["image_b"], photo)
  assert ex["name"] in ("val_00007.png", b"val_00007.png")
  np.testing.assert_array_equal(ex["size"], (128, 128))
  # The stored PNGs decode with the package's own decoder too.
  skip = tfds.decode.SkipDecoding()
  raw = b.as_data_source("val", decoders={"image_b": skip})[7]["image_b"]
  np.testing.assert_array_equal(image_io.decode(raw, "x"), photo)
