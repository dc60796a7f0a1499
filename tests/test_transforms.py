"""The preprocess modes match the official code's PIL operations."""

import numpy as np
from PIL import Image
import pytest

from pix2pix_jax.data import image_io
from pix2pix_jax.data import transforms


def _image(h=40, w=60, c=3, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (h, w, c), np.uint8)


def test_resize_and_crop_is_pil_bicubic_then_crop_then_normalize():
  spec = transforms.Spec("resize_and_crop", load_size=50, crop_size=32, flip=True)
  image = _image()
  params = transforms.Params(y=5, x=11, flip=True)
  (out,), shape = transforms.preprocess([image], params, spec)
  resized = np.asarray(Image.fromarray(image).resize((50, 50), Image.Resampling.BICUBIC))
  expected = resized[5:37, 11:43][:, ::-1].astype(np.float32) / 255.0
  np.testing.assert_allclose(out, (expected - 0.5) / 0.5, atol=1e-6)
  assert shape == (32, 32)


def test_a_and_b_get_the_same_crop_and_flip():
  spec = transforms.Spec("resize_and_crop", load_size=48, crop_size=32)
  image = _image()
  for seed in range(5):
    params = transforms.draw(np.random.default_rng(seed), 40, 60, spec)
    (a, b), _ = transforms.preprocess([image, image.copy()], params, spec)
    np.testing.assert_array_equal(a, b)
  draws = {transforms.draw(np.random.default_rng(s), 40, 60, spec) for s in range(40)}
  assert {p.flip for p in draws} == {True, False} and len({(p.y, p.x) for p in draws}) > 10


def test_test_time_is_a_centre_crop_without_flip():
  spec = transforms.Spec("resize_and_crop", load_size=48, crop_size=32)
  assert transforms.draw(None, 40, 60, spec) == transforms.Params(y=8, x=8, flip=False)


@pytest.mark.parametrize("mode,size,expected", [
    ("scale_width", (40, 60), (53, 80)),  # Official __scale_width: h = load * oh / ow.
    ("scale_width", (10, 60), (32, 80)),  # ... but never below crop_size.
    ("scale_width", (40, 80), (40, 80)),  # Already load_size wide and >= crop: untouched.
    ("none", (50, 70), (48, 72)),  # __make_power_2(base=4), Python rounding.
    ("crop", (50, 70), (50, 70)),
])
def test_resize_step_follows_the_official_rules(mode, size, expected):
  spec = transforms.Spec(mode, load_size=80, crop_size=32)
  assert transforms.resized_shape(*size, spec) == expected


@pytest.mark.parametrize("size_mode", transforms.SIZE_MODES)
def test_fit_multiple(size_mode):
  spec = transforms.Spec(multiple=16, size_mode=size_mode)
  image = np.random.default_rng(0).uniform(-1, 1, (20, 33, 2)).astype(np.float32)
  out = transforms.fit_multiple(image, spec)
  assert out.shape == ((16, 32, 2) if size_mode == "resize" else (32, 48, 2))
  if size_mode == "zeros":
    assert (out[20:] == 0).all() and (out[:, 33:] == 0).all()
  if size_mode == "reflect":
    np.testing.assert_array_equal(out[20, :33], image[18])
  np.testing.assert_array_equal(transforms.restore(out, (20, 33), spec).shape, (20, 33, 2))
  # A 1-pixel side still pads (by repeating it).
  assert transforms.fit_multiple(image[:1], spec).shape[0] == 16


def test_channel_conversions_follow_pil():
  rgb = _image()
  gray = image_io.to_channels(rgb, 1)
  pil_gray = np.asarray(Image.fromarray(rgb).convert("L"))
  assert np.abs(gray[..., 0].astype(int) - pil_gray).max() <= 1
  rgba = image_io.to_channels(rgb, 4)
  assert (rgba[..., 3] == 255).all() and (rgba[..., :3] == rgb).all()
  np.testing.assert_array_equal(image_io.to_channels(rgba, 3), rgb)
  np.testing.assert_array_equal(image_io.to_channels(gray, 3), np.repeat(gray, 3, -1))
  with pytest.raises(ValueError):
    image_io.to_channels(rgb, 5)


def test_16_bit_resize_keeps_values_in_range():
  deep = np.random.default_rng(0).integers(0, 65536, (30, 30, 1)).astype(np.uint16)
  spec = transforms.Spec("resize_and_crop", load_size=40, crop_size=32)
  (out,), _ = transforms.preprocess([deep], transforms.Params(), spec)
  assert out.dtype == np.float32 and out.min() >= -1 and out.max() <= 1
  assert len(np.unique(out)) > 256  # Finer than 8 bits.
