"""The official pix2pix datasets: facades from the real archive, the rest from fake ones."""

import functools
import hashlib
import importlib
import http.server
import io
import tarfile
import threading

import numpy as np
from PIL import Image
import pytest

from conftest import SHARED_DATA
from conftest import data_config
from pix2pix_jax.data import pipeline
from pix2pix_jax.data.datasets import official

_LEFT, _RIGHT = (200, 40, 40), (40, 40, 200)


def _flatness(image: np.ndarray) -> float:
  """Share of pixels whose neighbours have nearly the same colour (label maps are flat)."""
  x = image.astype(int)
  d = (np.abs(np.diff(x, axis=1)).sum(-1)[:-1] + np.abs(np.diff(x, axis=0)).sum(-1)[:, :-1])
  return float((d < 6).mean())


def test_facades_from_the_shared_archive(facades_builder):
  splits = facades_builder.info.splits
  assert {s: splits[s].num_examples for s in splits} == {"train": 400, "val": 100,
                                                        "test": 106}
  source = facades_builder.as_data_source("train")
  first = source[0]
  assert first["name"] in ("1.jpg", b"1.jpg")
  np.testing.assert_array_equal(first["size"], (256, 256))
  # Pixel for pixel the halves of the JPEG in the archive: A (photo) left, B (labels) right.
  with tarfile.open(SHARED_DATA / "facades.tar.gz") as tar:
    ab = np.asarray(Image.open(io.BytesIO(tar.extractfile("facades/train/1.jpg").read())))
  np.testing.assert_array_equal(first["image_a"], ab[:, :256])
  np.testing.assert_array_equal(first["image_b"], ab[:, 256:])
  for i in range(0, 400, 40):
    ex = source[i]
    assert ex["image_a"].shape == ex["image_b"].shape == (256, 256, 3)
    assert _flatness(ex["image_b"]) > _flatness(ex["image_a"])


def test_facades_checksum_is_the_shared_archives():
  archive = SHARED_DATA / "facades.tar.gz"
  if not archive.exists():
    pytest.skip(f"{archive} not found")
  info = official.Pix2pix.url_infos[official.URL.format("facades")]
  assert int(info.size) == archive.stat().st_size
  assert info.checksum == hashlib.sha256(archive.read_bytes()).hexdigest()


def _jpeg(height: int, width: int, shade: int) -> bytes:
  ab = np.zeros((height, 2 * width, 3), np.uint8)
  ab[:, :width] = _LEFT
  ab[:, width:] = _RIGHT
  ab[0, 0, 1] = shade
  buffer = io.BytesIO()
  Image.fromarray(ab).save(buffer, format="JPEG", quality=95)
  return buffer.getvalue()


def _fake_archive(folder, name: str, splits: tuple[str, ...], per_split: int = 3):
  """`<name>.tar.gz` with the official layout: <name>/<split>/<i>_AB.jpg."""
  path = folder / f"{name}.tar.gz"
  with tarfile.open(path, "w:gz") as tar:
    for split in splits:
      for i in range(per_split):
        data = _jpeg(16, 24, 10 * i)
        member = tarfile.TarInfo(f"{name}/{split}/{i + 1}_AB.jpg")
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))
  return path


def _check(builder, splits, per_split=3):
  assert {s: builder.info.splits[s].num_examples for s in builder.info.splits} == {
      s: per_split for s in splits}
  ex = builder.as_data_source(splits[0])[1]
  assert ex["name"] in ("2_AB.jpg", b"2_AB.jpg")
  np.testing.assert_array_equal(ex["size"], (16, 24))
  np.testing.assert_allclose(ex["image_a"][8:, 8:].mean((0, 1)), _LEFT, atol=6)
  np.testing.assert_allclose(ex["image_b"][8:, 8:].mean((0, 1)), _RIGHT, atol=6)


@pytest.mark.parametrize("name", ["cityscapes", "maps", "edges2shoes", "edges2handbags",
                                  "night2day"])
def test_other_datasets_from_an_archive_in_manual_dir(name, tmp_path):
  config = next(c for c in official.CONFIGS if c.name == name)
  manual = tmp_path / "manual"
  manual.mkdir()
  _fake_archive(manual, name, config.splits)
  c = data_config(tmp_path / "tfds", **{"data.name": name, "data.manual_dir": str(manual)})
  _check(pipeline.builder(c.data), config.splits)


def test_extracted_folder_in_manual_dir(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  with tarfile.open(_fake_archive(tmp_path, "night2day", ("train", "val", "test"))) as tar:
    tar.extractall(manual, filter="data")
  c = data_config(tmp_path / "tfds", **{"data.name": "night2day",
                                        "data.manual_dir": str(manual)})
  _check(pipeline.builder(c.data), ("train", "val", "test"))


def test_manual_dir_without_the_archive_is_an_error(tmp_path):
  c = data_config(tmp_path / "tfds", **{"data.name": "maps", "data.manual_dir": str(tmp_path)})
  with pytest.raises(FileNotFoundError, match="maps.tar.gz"):
    pipeline.builder(c.data)
  c.data.manual_dir = str(tmp_path / "missing")
  with pytest.raises(FileNotFoundError, match="missing"):
    pipeline.builder(c.data)


@pytest.fixture
def loopback_server(tmp_path):
  """An HTTP server on 127.0.0.1 serving tmp_path/www."""
  root = tmp_path / "www"
  root.mkdir()
  handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  yield root, f"http://127.0.0.1:{server.server_address[1]}"
  server.shutdown()
  server.server_close()


def test_download_path(loopback_server, tmp_path, monkeypatch):
  root, url = loopback_server
  _fake_archive(root, "maps", ("train", "val"))
  monkeypatch.setattr(official, "URL", url + "/{}.tar.gz")
  monkeypatch.setenv("NO_PROXY", "127.0.0.1")
  c = data_config(tmp_path / "tfds", **{"data.name": "maps"})
  _check(pipeline.builder(c.data), ("train", "val"))
  assert list((tmp_path / "tfds" / "downloads").glob("*/127.0.0.1_*maps*.tar.gz"))


@pytest.mark.parametrize("name,direction,batch_size,epochs", [
    ("facades", "BtoA", 1, 200), ("cityscapes", "BtoA", 1, 200), ("maps", "AtoB", 1, 200),
    ("edges2shoes", "AtoB", 4, 15), ("edges2handbags", "AtoB", 4, 15),
    ("night2day", "AtoB", 4, 17), ("folder", "AtoB", 1, 200)])
def test_dataset_configs_carry_the_papers_settings(name, direction, batch_size, epochs):
  c = importlib.import_module(f"configs.{name}").get_config()
  assert c.data.name == name and c.data.direction == direction
  assert c.batch_size == batch_size and c.n_epochs + c.n_epochs_decay == epochs
  assert name == "folder" or name in official.NAMES
