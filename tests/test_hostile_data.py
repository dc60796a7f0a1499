"""Hostile files in a user's folder (issue 19): odd names, pipes, devices, huge files."""

import io
import logging
import os
import threading

import numpy as np
from PIL import Image
import pytest

from conftest import data_config
from pix2pix_jax.data import image_io
from pix2pix_jax.data import pipeline


def _png(seed=0) -> bytes:
  array = np.random.default_rng(seed).integers(0, 256, (8, 16, 3), np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="PNG")
  return buffer.getvalue()


def _folder(root, good=3):
  root.mkdir(parents=True, exist_ok=True)
  for i in range(good):
    (root / f"{i}.png").write_bytes(_png(i))
  return root


def _build(tmp_path, path, **overrides):
  c = data_config(tmp_path / "tfds", **{"data.name": "folder", "data.path": str(path),
                                        "data.val_fraction": 0.0, **overrides})
  return pipeline.builder(c.data)


def _build_bounded(tmp_path, path, unblock, seconds=120, **overrides):
  """The build in a thread: a hang fails the test (after `unblock` frees the thread)."""
  result = {}

  def target():
    try:
      result["builder"] = _build(tmp_path, path, **overrides)
    except Exception as e:  # pylint: disable=broad-except
      result["error"] = e

  thread = threading.Thread(target=target, daemon=True)
  thread.start()
  thread.join(seconds)
  if thread.is_alive():
    unblock()
    thread.join(10)
    pytest.fail(f"the build blocked for {seconds} s")
  return result


@pytest.mark.parametrize("on_bad_file", ["error", "skip"])
def test_file_name_that_is_not_utf8_is_read_and_reported(tmp_path, caplog, on_bad_file):
  data = _folder(tmp_path / "data")
  with open(os.path.join(os.fsencode(data), b"caf\xe9.png"), "wb") as f:
    f.write(_png(9))
  with caplog.at_level(logging.WARNING):
    b = _build(tmp_path, data, **{"data.on_bad_file": on_bad_file})
  assert b.info.splits["train"].num_examples == 4
  names = {ex["name"] for ex in b.as_data_source("train")}
  assert "caf\\xe9.png" in {n.decode() if isinstance(n, bytes) else n for n in names}
  assert "not UTF-8" in caplog.text and "caf\\xe9.png" in caplog.text


def test_named_pipe_is_refused_without_blocking(tmp_path):
  data = _folder(tmp_path / "data")
  fifo = data / "fifo.png"
  os.mkfifo(fifo)

  def unblock():  # A writer that closes at once gives a blocked reader its EOF.
    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    os.close(fd)

  result = _build_bounded(tmp_path, data, unblock, seconds=20)
  error = result.get("error")
  assert isinstance(error, image_io.BadImageError), error
  assert "fifo.png" in str(error) and "not a regular file" in str(error)
  result = _build_bounded(tmp_path, data, unblock, seconds=20, **{"data.on_bad_file": "skip"})
  assert result["builder"].info.splits["train"].num_examples == 3


def test_link_to_a_device_is_refused(tmp_path):
  data = _folder(tmp_path / "data")
  os.symlink("/dev/zero", data / "zero.png")
  with pytest.raises(image_io.BadImageError, match="not a regular file") as error:
    _build(tmp_path, data)
  assert "zero.png" in str(error.value)


def test_read_refuses_devices_and_files_over_the_cap(tmp_path):
  with pytest.raises(image_io.BadImageError, match="^/dev/zero: not a regular file"):
    image_io.read("/dev/zero")
  path = tmp_path / "big.png"
  path.write_bytes(_png())
  assert image_io.read(path).shape == (8, 16, 3)
  with pytest.raises(image_io.BadImageError, match="more than the 100 an image file"):
    image_io.read(path, max_bytes=100)
  assert image_io.MAX_FILE_BYTES >= 64 << 20  # Room for any real photo or scan.

