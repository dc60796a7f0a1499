"""Bad input stops the build with the file's name, or is skipped and counted: never silent."""

import io
import logging
import os

import numpy as np
from PIL import Image
import pytest

from conftest import data_config
from pix2pix_jax.data import image_io
from pix2pix_jax.data import pipeline


def _png(height=8, width=16, channels=3, seed=0) -> bytes:
  array = np.random.default_rng(seed).integers(0, 256, (height, width, channels), np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="PNG")
  return buffer.getvalue()


def _jpeg(height=32, width=64) -> bytes:
  array = np.random.default_rng(0).integers(0, 256, (height, width, 3), np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="JPEG")
  return buffer.getvalue()


def _folder(root, bad_name: str | None = None, bad: bytes | None = None, good: int = 3):
  root.mkdir(parents=True, exist_ok=True)
  for i in range(good):
    (root / f"{i}.png").write_bytes(_png(seed=i))
  if bad_name:
    (root / bad_name).write_bytes(bad)
  return root


def _build(tmp_path, path, **overrides):
  c = data_config(tmp_path / "tfds", **{"data.name": "folder", "data.path": str(path),
                                        "data.val_fraction": 0.0, **overrides})
  return pipeline.builder(c.data)


@pytest.mark.parametrize("name,content,reason", [
    pytest.param(name, content, reason, id=name) for name, content, reason in (
        ("corrupt.png", b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20, "corrupt or truncated"),
        ("truncated.jpg", _jpeg()[:700], "corrupt or truncated"),
        ("empty.png", b"", "empty"),
        ("notes.txt", b"these are not pixels", "not an image"),
        # Seeded: pytest-xdist workers must collect the same parameters.
        ("fake.jpg", np.random.default_rng(0).bytes(64), "not an image"))])
def test_bad_file_stops_the_build_naming_it(tmp_path, name, content, reason):
  data = _folder(tmp_path / "data", name, content)
  with pytest.raises(image_io.BadImageError, match=reason) as error:
    _build(tmp_path, data)
  assert str(data / name) in str(error.value)
  assert "on_bad_file" in str(error.value)  # Says how to go on.


def test_unreadable_file(tmp_path):
  data = _folder(tmp_path / "data")
  os.symlink(tmp_path / "nowhere.png", data / "link.png")
  with pytest.raises(image_io.BadImageError, match="cannot read") as error:
    _build(tmp_path, data)
  assert "link.png" in str(error.value)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # PIL warns, we refuse.
def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
  data = _folder(tmp_path / "data", "big.png", _png(100, 200))
  monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
  with pytest.raises(image_io.BadImageError, match="MAX_IMAGE_PIXELS") as error:
    _build(tmp_path, data)
  assert "big.png" in str(error.value)


def test_pair_of_different_sizes(tmp_path):
  data = tmp_path / "data"
  for side, (h, w) in (("A", (8, 8)), ("B", (8, 6))):
    (data / side).mkdir(parents=True)
    (data / side / "x.png").write_bytes(_png(h, w))
  with pytest.raises(image_io.BadImageError, match="same size") as error:
    _build(tmp_path, data)
  assert "x.png" in str(error.value)


def test_file_without_a_partner(tmp_path):
  data = tmp_path / "data"
  for side in ("A", "B"):
    _folder(data / side, good=2)
  (data / "A" / "lonely.png").write_bytes(_png())
  with pytest.raises(image_io.BadImageError, match="no file of the same name in B/"):
    _build(tmp_path, data)


def test_empty_folder_and_missing_path(tmp_path):
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="no image files"):
    _build(tmp_path, tmp_path / "empty")
  with pytest.raises(FileNotFoundError, match="not found"):
    _build(tmp_path, tmp_path / "missing")


def test_skip_counts_and_names_what_it_left_out(tmp_path, caplog):
  data = _folder(tmp_path / "data", "empty.png", b"", good=3)
  (data / "notes.txt").write_bytes(b"text")
  with caplog.at_level(logging.WARNING):
    b = _build(tmp_path, data, **{"data.on_bad_file": "skip"})
  assert b.info.splits["train"].num_examples == 3
  log = caplog.text
  assert "skipped 2 bad file(s) of 5" in log and "empty.png" in log and "notes.txt" in log


def test_skip_with_nothing_left_is_an_error(tmp_path):
  data = _folder(tmp_path / "data", "empty.png", b"", good=0)
  with pytest.raises(ValueError, match="no usable image pairs"):
    _build(tmp_path, data, **{"data.on_bad_file": "skip"})


def test_decode_errors_name_the_file():
  with pytest.raises(image_io.BadImageError, match="^photo.jpg: "):
    image_io.decode(b"nope", "photo.jpg")
  with pytest.raises(image_io.BadImageError, match="not a side-by-side"):
    image_io.split_ab(np.zeros((4, 1, 3), np.uint8), "thin.png")
