"""The demo server (issue 8): its endpoints, and that bad requests get a 4xx, not a crash."""

import http.client
import io
import json
import os
import socket
import threading

import numpy as np
from PIL import Image
import pytest

from pix2pix_jax.serving import demo as demo_lib
from pix2pix_jax.serving import inference
from pix2pix_jax.serving import serve

MAX_UPLOAD = 64 * 1024


@pytest.fixture(scope="module")
def demo(trained_workdir):
  return demo_lib.Demo(trained_workdir)


@pytest.fixture(scope="module")
def address(demo):
  """(host, port) of a server on a free localhost port, serving in a thread."""
  server = serve.make_server(demo, "127.0.0.1", 0, max_upload_bytes=MAX_UPLOAD, quiet=True)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  yield server.server_address[:2]
  server.shutdown()
  server.server_close()


def request(address, method, path, body=None, headers=None):
  """(status, headers, body) of one request on a fresh connection; the path is sent as is."""
  conn = http.client.HTTPConnection(*address, timeout=60)
  try:
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    return response.status, dict(response.getheaders()), response.read()
  finally:
    conn.close()


def assert_still_serving(address):
  status, _, body = request(address, "GET", "/info")
  assert status == 200 and json.loads(body)["step"] == 1


def png_bytes(image, fmt="PNG"):
  out = io.BytesIO()
  Image.fromarray(image).save(out, fmt)
  return out.getvalue()


def label_image(size=64, seed=0):
  """A random label map in the facades palette, like the page sends."""
  from pix2pix_jax.data.datasets import synthetic  # pylint: disable=g-import-not-at-top
  return synthetic.make_pair(seed, "val", 0, size)[0]


def test_info_describes_checkpoint_and_palette(address, trained_workdir):
  status, headers, body = request(address, "GET", "/info")
  assert status == 200 and headers["Content-Type"] == "application/json"
  info = json.loads(body)
  # No absolute path (any page the browser shows could read it): the workdir's name on.
  assert info["checkpoint"] == f"{os.path.basename(trained_workdir)}/checkpoints/1"
  assert info["step"] == 1
  assert info["dataset"] == "synthetic" and info["kind"] == "labels"
  assert info["input_size"] == 64
  names = [entry["name"] for entry in info["palette"]]
  assert names[:3] == ["background", "facade", "window"] and len(names) == 12
  assert info["palette"][0]["color"] == "#0000aa"


def test_page_and_static_files(address):
  status, headers, body = request(address, "GET", "/")
  assert status == 200 and headers["Content-Type"].startswith("text/html")
  assert b'<canvas id="canvas"' in body
  for path, kind in (("/static/app.js", "text/javascript"), ("/static/style.css", "text/css")):
    status, headers, body = request(address, "GET", path)
    assert status == 200 and headers["Content-Type"].startswith(kind) and body


def test_translate_matches_inference(address, demo):
  image = label_image()
  status, headers, body = request(address, "POST", "/translate", png_bytes(image),
                                  {"Content-Type": "image/png"})
  assert status == 200 and headers["Content-Type"] == "image/png"
  out = np.asarray(Image.open(io.BytesIO(body)))
  expected = inference.translate(demo.config, demo.variables, [image], image_ids=[0],
                                 batch_size=1)[0]
  np.testing.assert_array_equal(out, expected)
  # Batched with others, XLA may sum in another order: a float ulp can flip one uint8 level.
  batched = inference.translate(demo.config, demo.variables, [image], image_ids=[0])[0]
  assert np.abs(out.astype(int) - batched).max() <= 1
  # The same drawing gives the same picture: the dropout key depends on nothing else.
  assert request(address, "POST", "/translate", png_bytes(image),
                 {"Content-Type": "image/png"})[2] == body


def test_translate_multipart_jpeg_of_another_size(address):
  image = label_image(96)[:70, :50]
  boundary = "----pix2pixtest"
  body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n"
          f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; "
          f"filename=\"a.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n").encode()
  body += png_bytes(image, "JPEG") + f"\r\n--{boundary}--\r\n".encode()
  status, _, out = request(address, "POST", "/translate", body,
                           {"Content-Type": f"multipart/form-data; boundary={boundary}"})
  assert status == 200
  assert Image.open(io.BytesIO(out)).size == (50, 70)


@pytest.mark.parametrize("body,status,message", [
    (b"hello, not an image", 415, b"not an image"),
    (b"", 400, b"empty body"),
    (png_bytes(np.random.default_rng(0).integers(0, 255, (32, 32, 3), np.uint8))[:-1500],
     400, b"could not decode"),
    (png_bytes(np.zeros((8, 8, 3), np.uint8), "TIFF"), 415, b"unsupported image format"),
    (png_bytes(np.zeros((1, demo_lib.MAX_SIDE + 1), np.uint8)), 413, b"too large"),
    (b"\xff" * (MAX_UPLOAD + 1), 413, b"over the limit"),
], ids=["text", "empty", "truncated", "tiff", "wide", "oversized"])
def test_bad_uploads_are_refused(address, body, status, message):
  got, headers, answer = request(address, "POST", "/translate", body,
                                 {"Content-Type": "image/png"})
  assert got == status and headers["Content-Type"] == "application/json"
  assert message in answer
  assert_still_serving(address)


def test_bad_multipart_and_missing_length(address):
  got, _, answer = request(address, "POST", "/translate", b"--x\r\n\r\n--x--\r\n",
                           {"Content-Type": "multipart/form-data; boundary=x"})
  assert got == 400 and b"no file part" in answer
  with socket.create_connection(address, timeout=30) as s:
    s.sendall(b"POST /translate HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/png\r\n\r\n")
    assert s.recv(100).startswith(b"HTTP/1.1 411")
  with socket.create_connection(address, timeout=30) as s:  # Answered before the body comes.
    s.sendall(b"POST /translate HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/png\r\n"
              b"Content-Length: 10000000000\r\n\r\n")
    assert s.recv(100).startswith(b"HTTP/1.1 413")
  got, _, _ = request(address, "POST", "/elsewhere", b"x")
  assert got == 404
  assert_still_serving(address)


@pytest.mark.parametrize("path", [
    "/../serve.py", "/static/../serve.py", "/static/../../configs/default.py",
    "/%2e%2e/serve.py", "/static/%2e%2e/serve.py", "/static/%2E%2E%2Fserve.py",
    "/static/..%2f..%2fconfigs%2fdefault.py", "/static/%252e%252e/serve.py",
    "/static/..%5cserve.py", "//etc/passwd", "/static//etc/passwd", "/static/app.js%00.png",
    "/static/", "/nothing-here.html"])
def test_no_file_outside_static(address, path):
  status, _, body = request(address, "GET", path)
  assert status in (403, 404)
  assert b"import" not in body and b"root:" not in body
  assert_still_serving(address)


def test_static_path_resolution():
  assert serve.static_path("/") == os.path.join(serve.STATIC_DIR, "index.html")
  assert serve.static_path("/static/app.js") == os.path.join(serve.STATIC_DIR, "app.js")
  assert serve.static_path("/app.js") == os.path.join(serve.STATIC_DIR, "app.js")
  assert serve.static_path("/%2e%2e/serve.py") is None


def test_input_kind_follows_dataset_and_direction(demo):
  config = demo.config.copy_and_resolve_references()
  assert demo_lib.input_kind(config) == "labels"
  config.data.direction = "BtoA"
  assert demo_lib.input_kind(config) == "photo"
  config.data.name = "edges2shoes"
  assert demo_lib.input_kind(config) == "photo"
  config.data.direction = "AtoB"
  assert demo_lib.input_kind(config) == "edges" and demo_lib.palette(config) == []
  config.data.name = "facades"
  assert demo_lib.input_kind(config) == "photo"
  config.data.direction = "BtoA"
  assert demo_lib.input_kind(config) == "labels" and len(demo_lib.palette(config)) == 12
  config.data.name = "cityscapes"
  assert demo_lib.palette(config)[0] == {"name": "road", "color": "#804080"}
  config.data.name = "folder"
  config.data.palette = [["sky", [0, 0, 255]], ["tree", [0, 128, 0]]]
  assert demo_lib.input_kind(config) == "labels"
  assert demo_lib.palette(config)[1] == {"name": "tree", "color": "#008000"}
