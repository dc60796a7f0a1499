"""Interactive demo: draw an input in the browser, see the generator's translation beside it.

    python -m pix2pix_jax.serving.serve --workdir DIR [--host 127.0.0.1] [--port 8000]

One page (pix2pix_jax/static/) and three endpoints: `GET /info` (JSON: checkpoint, step,
dataset, input size, drawing mode and label palette), `POST /translate` (a PNG/JPEG/WebP/BMP
body, raw or multipart/form-data -> a PNG of the same size) and the static files. Standard
library `http.server` only: a local demo needs no web framework. The generator is compiled
at start-up for the canvas size, so the first stroke answers as fast as the others.
"""

import email.parser
import email.policy
import http.server
import io
import json
import os
import posixpath
import sys
import threading
import time
import urllib.parse
from typing import Any

from absl import app
from absl import flags
import ml_collections
import numpy as np
from PIL import Image

from pix2pix_jax.data import image_io
from pix2pix_jax.nn import generate as generate_lib
from pix2pix_jax.serving import checkpoint_flags
from pix2pix_jax.serving import inference
from pix2pix_jax.train import checkpoints

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
                 ".js": "text/javascript; charset=utf-8", ".png": "image/png",
                 ".svg": "image/svg+xml", ".ico": "image/x-icon"}
# Formats PIL may decode from an upload; anything else (PDF, TIFF, PSD, ...) is refused.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF")
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
DRAIN_FACTOR = 8  # Refused bodies up to this many times the limit are read away.
MAX_SIDE = 2048  # Every new input shape compiles the generator again: keep them sane.

# CMP facades classes: the synthetic builder's colours, which follow the official label maps.
# Cityscapes: the dataset's own colour encoding of its 19 evaluation classes.
CITYSCAPES = (("road", (128, 64, 128)), ("sidewalk", (244, 35, 232)),
              ("building", (70, 70, 70)), ("wall", (102, 102, 156)),
              ("fence", (190, 153, 153)), ("pole", (153, 153, 153)),
              ("traffic light", (250, 170, 30)), ("traffic sign", (220, 220, 0)),
              ("vegetation", (107, 142, 35)), ("terrain", (152, 251, 152)),
              ("sky", (70, 130, 180)), ("person", (220, 20, 60)), ("rider", (255, 0, 0)),
              ("car", (0, 0, 142)), ("truck", (0, 0, 70)), ("bus", (0, 60, 100)),
              ("train", (0, 80, 100)), ("motorcycle", (0, 0, 230)),
              ("bicycle", (119, 11, 32)))
# What each side of a dataset's pairs shows: decides how the page lets one draw the input.
SIDES = {"synthetic": ("labels", "photo"), "facades": ("photo", "labels"),
         "cityscapes": ("photo", "labels"), "maps": ("photo", "photo"),
         "edges2shoes": ("edges", "photo"), "edges2handbags": ("edges", "photo"),
         "night2day": ("photo", "photo")}



class BadRequest(Exception):
  """A client error: its message goes back to the client with `status`."""

  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status = status


def palette(config: ml_collections.ConfigDict) -> list[dict[str, Any]]:
  """The label classes the page offers: a config's `data.palette`, else the dataset's own."""
  custom = config.data.get("palette")
  if custom:  # [[name, [r, g, b]], ...] or [[r, g, b], ...]
    entries = [(e[0], e[1]) if isinstance(e[0], str) else (f"class {i}", e)
               for i, e in enumerate(custom)]
  elif config.data.name in ("synthetic", "facades"):
    from pix2pix_jax.data.datasets import synthetic  # pylint: disable=g-import-not-at-top
    entries = list(zip(synthetic.CLASSES, synthetic.PALETTE.tolist()))
  elif config.data.name == "cityscapes":
    entries = list(CITYSCAPES)
  else:
    return []
  return [{"name": name, "color": "#%02x%02x%02x" % tuple(int(v) for v in rgb)}
          for name, rgb in entries]


def input_kind(config: ml_collections.ConfigDict) -> str:
  """labels (palette), edges (black pen on white) or photo (any colour) for the input side."""
  if config.data.get("palette"):
    return "labels"
  a, b = SIDES.get(config.data.name, ("photo", "photo"))
  return a if config.data.direction == "AtoB" else b


class Demo:
  """The loaded generator, compiled once, behind a lock (one translation at a time)."""

  def __init__(self, checkpoint: str, step: int | None = None, *, eval_mode: bool = False,
               seed: int = 0):
    self.step_dir = checkpoints.checkpoint_step_dir(checkpoint, step)
    self.config, self.variables = checkpoints.load_generator(self.step_dir)
    self.step = int(os.path.basename(self.step_dir))
    self.eval_mode = eval_mode
    self.seed = seed
    self.size = int(self.config.data.crop_size)
    self._generate = generate_lib.make_generate_fn(self.config, eval_mode)
    self._lock = threading.Lock()
    kind = input_kind(self.config)
    blank = np.full((self.size, self.size, 3), 0 if kind == "labels" else 255, np.uint8)
    start = time.perf_counter()
    self.translate(blank)  # Compiles for the canvas size now, not on the first stroke.
    self.warmup_seconds = time.perf_counter() - start
    self.info = {
        "checkpoint": self.step_dir, "step": self.step, "dataset": self.config.data.name,
        "direction": self.config.data.direction, "input_size": self.size,
        "input_nc": int(self.config.model.input_nc),
        "output_nc": int(self.config.model.output_nc), "kind": kind,
        "palette": palette(self.config) if kind == "labels" else [],
        "eval_mode": eval_mode, "seed": seed}

  def translate(self, image: np.ndarray) -> np.ndarray:
    """uint8 image -> uint8 output of the same size; image id 0, so same input, same output."""
    with self._lock:
      return inference.translate(self.config, self.variables, [image], eval_mode=self.eval_mode,
                                 seed=self.seed, batch_size=1, image_ids=[0],
                                 generate_fn=self._generate)[0]


def decode_image(data: bytes) -> np.ndarray:
  """Upload bytes -> uint8 array, refusing what is not a small enough image (4xx)."""
  if not data:
    raise BadRequest(400, "empty body: send an image (PNG or JPEG)")
  try:
    with Image.open(io.BytesIO(data)) as probe:
      fmt, (w, h) = probe.format, probe.size
  except Exception as e:  # pylint: disable=broad-except  # PIL raises many kinds.
    raise BadRequest(415, f"not an image PIL can read ({type(e).__name__})") from e
  if fmt not in IMAGE_FORMATS:
    raise BadRequest(415, f"unsupported image format {fmt}; send one of {IMAGE_FORMATS}")
  if max(w, h) > MAX_SIDE:
    raise BadRequest(413, f"image {w}x{h} is too large (at most {MAX_SIDE} pixels a side)")
  try:
    return image_io.read_image(io.BytesIO(data))  # type: ignore[arg-type]  # PIL reads files.
  except Exception as e:  # pylint: disable=broad-except  # Truncated or corrupt data.
    raise BadRequest(400, f"could not decode the {fmt} image ({e})") from e


def multipart_file(content_type: str, body: bytes) -> bytes:
  """The first file (or `image` field) of a multipart/form-data body."""
  message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
      b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
  if not message.is_multipart():
    raise BadRequest(400, "malformed multipart/form-data body")
  for part in message.iter_parts():
    if part.get_filename() or part.get_param("name", header="content-disposition") == "image":
      return part.get_payload(decode=True) or b""
  raise BadRequest(400, "multipart body has no file part")


def encode_png(image: np.ndarray) -> bytes:
  out = io.BytesIO()
  image_io.write_png(out, image)
  return out.getvalue()


def static_path(url_path: str) -> str | None:
  """The file under STATIC_DIR a URL path names, or None (missing, or outside the folder)."""
  path = urllib.parse.unquote(url_path)
  if "\x00" in path or "\\" in path:
    return None
  path = posixpath.normpath("/" + path.lstrip("/"))  # "/../x" normalises to "/x".
  if path == "/":
    path = "/index.html"
  elif path.startswith("/static/"):
    path = path[len("/static"):]
  root = os.path.realpath(STATIC_DIR)
  full = os.path.realpath(os.path.join(root, path.lstrip("/")))
  if os.path.commonpath([root, full]) != root or not os.path.isfile(full):
    return None
  return full


class Handler(http.server.BaseHTTPRequestHandler):
  """Routes: GET / and static files, GET /info, POST /translate."""

  server_version = "pix2pix-demo"
  protocol_version = "HTTP/1.1"
  demo: Demo
  max_upload_bytes: int = MAX_UPLOAD_BYTES
  quiet: bool = False

  def log_message(self, format: str, *args: Any) -> None:  # pylint: disable=redefined-builtin
    if not self.quiet:
      super().log_message(format, *args)

  def _send(self, status: int, body: bytes, content_type: str, **headers: str) -> None:
    self.send_response(status)
    self.send_header("Content-Type", content_type)
    self.send_header("Content-Length", str(len(body)))
    self.send_header("X-Content-Type-Options", "nosniff")
    self.send_header("Cache-Control", "no-store")
    self.send_header("Content-Security-Policy",
                     "default-src 'self'; img-src 'self' blob: data:; object-src 'none'")
    for name, value in headers.items():
      self.send_header(name.replace("_", "-"), value)
    self.end_headers()
    if self.command != "HEAD":
      self.wfile.write(body)

  def _error(self, status: int, message: str) -> None:
    self._send(status, json.dumps({"error": message}).encode(), "application/json")

  def do_GET(self) -> None:  # pylint: disable=invalid-name
    path = urllib.parse.urlsplit(self.path).path
    if path == "/info":
      self._send(200, json.dumps(self.demo.info).encode(), "application/json")
      return
    full = static_path(path)
    if full is None:
      self._error(404, "not found")
      return
    with open(full, "rb") as f:
      body = f.read()
    self._send(200, body, CONTENT_TYPES.get(os.path.splitext(full)[1], "application/octet-stream"))

  do_HEAD = do_GET  # pylint: disable=invalid-name

  def do_POST(self) -> None:  # pylint: disable=invalid-name
    try:
      if urllib.parse.urlsplit(self.path).path != "/translate":
        length = self.headers.get("Content-Length", "0")
        self._discard(int(length) if length.isdigit() else 0)
        raise BadRequest(404, "not found")
      png = self._translate()
    except BadRequest as e:
      self._error(e.status, str(e))
      return
    except Exception as e:  # pylint: disable=broad-except  # Keep serving; say what broke.
      self._error(500, f"{type(e).__name__}: {e}")
      return
    self._send(200, png, "image/png")

  def _discard(self, length: int) -> None:
    """Reads away a refused body so that the client, still sending it, gets the answer.

    Closing with unread data makes the kernel reset the connection, which can destroy the
    response before the client reads it. Bodies past DRAIN_FACTOR x the limit are not read.
    """
    self.close_connection = True
    if length > DRAIN_FACTOR * self.max_upload_bytes:
      return
    while length > 0:
      chunk = self.rfile.read(min(length, 1 << 16))
      if not chunk:
        break
      length -= len(chunk)

  def _translate(self) -> bytes:
    length = self.headers.get("Content-Length")
    if length is None or not length.isdigit():
      self.close_connection = True
      raise BadRequest(411, "Content-Length required")
    if int(length) > self.max_upload_bytes:
      self._discard(int(length))
      raise BadRequest(413, f"body of {int(length)} bytes is over the limit of "
                       f"{self.max_upload_bytes}")
    body = self.rfile.read(int(length))
    content_type = self.headers.get("Content-Type", "")
    if content_type.lower().startswith("multipart/form-data"):
      body = multipart_file(content_type, body)
    start = time.perf_counter()
    output = self.demo.translate(decode_image(body))
    self.log_message("translated %dx%d in %.0f ms", output.shape[1], output.shape[0],
                     1000 * (time.perf_counter() - start))
    return encode_png(output)


def make_server(demo: Demo, host: str = "127.0.0.1", port: int = 8000, *,
                max_upload_bytes: int = MAX_UPLOAD_BYTES,
                quiet: bool = False) -> http.server.ThreadingHTTPServer:
  """A server for `demo` (not yet serving: call serve_forever); port 0 picks a free port."""
  handler = type("DemoHandler", (Handler,), {"demo": demo, "max_upload_bytes": max_upload_bytes,
                                             "quiet": quiet})
  server = http.server.ThreadingHTTPServer((host, port), handler)
  server.daemon_threads = True
  return server


def define_flags() -> None:
  """Flags are defined only when run as a program, so that the module imports cleanly."""
  checkpoint_flags.define()
  flags.DEFINE_string("host", "127.0.0.1", "Address to bind; 0.0.0.0 exposes the demo.")
  flags.DEFINE_integer("port", 8000, "Port; 0 picks a free one.")
  flags.DEFINE_bool("eval_mode", False, "Deterministic: no dropout, BatchNorm running averages.")
  flags.DEFINE_integer("seed", 0, "Dropout noise seed (same drawing, same output).")
  flags.DEFINE_float("max_upload_mb", MAX_UPLOAD_BYTES / 2**20,
                     "Larger request bodies are refused with 413.")


def main(argv: list[str]) -> None:
  del argv
  f = flags.FLAGS
  try:
    demo = Demo(checkpoint_flags.path(), f.step, eval_mode=f.eval_mode, seed=f.seed)
  except (FileNotFoundError, ValueError) as e:
    sys.exit(f"error: {e}")
  server = make_server(demo, f.host, f.port, max_upload_bytes=int(f.max_upload_mb * 2**20))
  host, port = server.server_address[:2]
  shown = f"[{host}]" if ":" in host else host
  print(f"Serving {demo.step_dir} (step {demo.step}, {demo.config.data.name}, "
        f"{demo.size}x{demo.size}, compiled in {demo.warmup_seconds:.1f} s) at "
        f"http://{shown}:{port}/", flush=True)
  try:
    server.serve_forever()
  except KeyboardInterrupt:
    pass
  finally:
    server.server_close()


if __name__ == "__main__":
  define_flags()
  app.run(main)
