"""16-bit images keep their 16 bits: reading, translating, writing, and training."""

import struct
import zlib

import cv2
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import data_config
from pix2pix_jax.data import image_io
from pix2pix_jax.data import pipeline
from pix2pix_jax.nn import models
from pix2pix_jax.serving import translate
from pix2pix_jax.train import checkpoints
from pix2pix_jax.train import trainer


def _low_byte_image(rng: np.random.Generator, height: int, width: int, channels: int
                    ) -> np.ndarray:
  """Random uint16 with a random non-zero low byte (so `image & 0xFF00` differs everywhere)."""
  image = (rng.integers(0, 256, (height, width, channels)) * 256
           + rng.integers(1, 256, (height, width, channels))).astype(np.uint16)
  return image[..., 0] if channels == 1 else image


def _write(path, image: np.ndarray) -> None:
  """PNG / TIFF written by OpenCV (BGR order), independently of image_io."""
  bgr = image if image.ndim == 2 else image[..., [2, 1, 0, 3][:image.shape[-1]]]
  assert cv2.imwrite(str(path), bgr)


def _png16(image: np.ndarray) -> bytes:
  """A 16-bit PNG written by hand: OpenCV cannot write gray + alpha."""
  h, w, c = image.shape
  rows = b"".join(b"\0" + image[y].astype(">u2").tobytes() for y in range(h))
  chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data
                              + struct.pack(">I", zlib.crc32(kind + data)))
  header = struct.pack(">IIBBBBB", w, h, 16, {1: 0, 2: 4, 3: 2, 4: 6}[c], 0, 0, 0)
  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
          + chunk(b"IEND", b""))


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_decode_keeps_every_bit(channels):
  image = _low_byte_image(np.random.default_rng(channels), 6, 8, channels)
  image = image[..., None] if image.ndim == 2 else image
  decoded = image_io.decode(_png16(image), "x.png")
  assert decoded.dtype == np.uint16
  np.testing.assert_array_equal(decoded, image)


def test_sixteen_bit_rgb_png_encodes_and_decodes_losslessly():
  image = _low_byte_image(np.random.default_rng(0), 5, 6, 3)
  data = image_io.encode_png(image)
  np.testing.assert_array_equal(image_io.decode_png(data, np.uint16, 3), image)
  np.testing.assert_array_equal(image_io.decode(data, "x"), image)


@pytest.mark.parametrize("ext", ["png", "tiff"])
@pytest.mark.parametrize("channels", [1, 3])
def test_translate_keeps_sixteen_bits(trained_workdir, tmp_path, ext, channels):
  """The file reads back exactly, the output is 16-bit and is G's output rounded to 16 bits,
  and the low byte of the input reaches G (an 8-bit reader would drop it)."""
  image = _low_byte_image(np.random.default_rng(channels), 64, 128, channels)
  inputs = tmp_path / "in"
  inputs.mkdir()
  _write(inputs / f"full.{ext}", image)
  _write(inputs / f"high.{ext}", image & 0xFF00)  # The same image without its low byte.
  np.testing.assert_array_equal(
      image_io.read_image(str(inputs / f"full.{ext}"), sixteen_bit=True), image)
  written = translate.translate_files(trained_workdir, str(inputs), str(tmp_path / "out"),
                                      eval_mode=True)
  full, high = (image_io.read_image(path, sixteen_bit=True) for path in written)
  assert full.dtype == np.uint16 and full.shape == (64, 128, 3)
  assert np.abs(full.astype(int) - high).max() > 0

  config, variables = checkpoints.load_generator(trained_workdir)
  x = image_io.flatten_for_model(image, config.model.input_nc)
  y = models.make_generator(config.model).apply(
      variables, jnp.asarray(image_io.to_float(x))[None], train=False)[0]
  np.testing.assert_allclose(full.astype(int), image_io.to_uint16(np.asarray(y)).astype(int),
                             atol=8)  # 8 / 65535: float32 rounding, jitted against not
  eight = translate.translate_files(trained_workdir, str(inputs), str(tmp_path / "out8"),
                                    eval_mode=True, output_bits=8)
  full8 = image_io.read_image(eight[0], sixteen_bit=True)
  assert full8.dtype == np.uint8
  np.testing.assert_allclose(full8.astype(int), np.round(full / 257.0), atol=1)


def _sixteen_bit_pairs(root, rng, count: int) -> set[int]:
  values = set()
  for i in range(count):
    for side in ("A", "B"):
      image = rng.integers(0, 65536, (72, 72, 3)).astype(np.uint16)
      (root / side).mkdir(parents=True, exist_ok=True)
      _write(root / side / f"{i}.png", image)
      values.update(np.unique(image).tolist())
  return values


def test_sixteen_bit_rgb_folder_trains_on_sixteen_bit_values(tmp_path):
  data = tmp_path / "pairs"
  values = _sixteen_bit_pairs(data, np.random.default_rng(0), 4)
  config = data_config(tmp_path / "tfds", **{
      "data.name": "folder", "data.path": str(data), "data.reader": "numpy",
      "data.preprocess": "crop", "data.load_size": 72, "data.crop_size": 64,
      "data.val_fraction": 0.25, "data.num_workers": 1, "model.ngf": 4, "model.ndf": 4,
      "model.num_downs": 6, "model.n_layers_d": 2, "batch_size": 2, "num_train_steps": 2,
      "num_sample_pairs": 1, "sample_every_steps": 1000})
  features = pipeline.builder(config.data).info.features
  assert features["image_a"].np_dtype == np.uint16 and features["image_a"].shape[-1] == 3

  batch = next(pipeline.train_iterator(config))
  seen = np.round((batch["input"].astype(np.float64) + 1.0) * 32767.5).astype(np.int64)
  assert set(np.unique(seen).tolist()) <= values  # Cropped and flipped, never re-quantised.
  assert np.mean(seen % 257 != 0) > 0.9  # 8-bit data scaled to 16 bits: multiples of 257.

  trainer.train_and_evaluate(config, str(tmp_path / "work"))
  assert checkpoints.checkpoint_step_dir(str(tmp_path / "work"), None).endswith("2")
