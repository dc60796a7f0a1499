"""Interactive demo: draw an input in the browser, see the generator's translation beside it.

    python -m pix2pix_jax.serving.serve --workdir DIR [--host 127.0.0.1] [--port 8000]

One page (pix2pix_jax/static/) and three endpoints: `GET /info` (JSON: checkpoint, step,
dataset, input size, drawing mode and label palette), `POST /translate` (a PNG/JPEG/WebP/BMP
body, raw or multipart/form-data -> a PNG of the same size) and the static files. Standard
library `http.server` only: a local demo needs no web framework. The generator is compiled
at start-up for the canvas size, so the first stroke answers as fast as the others.

A demo, not a public web service, but any web page the user visits can reach 127.0.0.1 and
any client on the network can reach --host=0.0.0.0. So: the Host header must name the bound
address (DNS rebinding), a POST must carry an image or multipart type (no CORS-simple text
bodies) and no foreign Origin; connections are bounded in number (beyond, a fast 503), in idle
time and in time per request; bodies in size, each and all together; and inputs are fitted
to a few size buckets, so the generator is compiled for a bounded set of shapes.
"""

import email.parser
import email.policy
import http.server
import io
import ipaddress
import json
import os
import posixpath
import socket
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
MAX_BODY_BYTES_TOTAL = 4 * MAX_UPLOAD_BYTES  # Bodies held at once, all connections together.
DRAIN_FACTOR = 8  # Refused bodies up to this many times the limit are read away.
MAX_SIDE = 2048  # Uploads larger than this a side are refused before decoding.
# Inputs are padded up to a bucket, crop_size * 2**k a side (k < BUCKET_LEVELS), and larger
# ones resized down into the largest: every shape compiles the generator once, so at most
# BUCKET_LEVELS**2 shapes are ever compiled.
BUCKET_LEVELS = 3
MAX_CONNECTIONS = 32  # Each has a thread; beyond this a new connection gets a 503 at once.
IDLE_TIMEOUT_S = 10.0  # A connection that sends nothing for this long is closed.
REQUEST_DEADLINE_S = 30.0  # A request (headers and body) must arrive within this.
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_HOSTS = ("", "0.0.0.0", "::")
BUSY = json.dumps({"error": "server busy: too many connections; try again"}).encode()

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
    self.bucket_sides = bucket_sides(self.size, 2**int(self.config.model.num_downs))
    self._generate = generate_lib.make_generate_fn(self.config, eval_mode)
    self._lock = threading.Lock()
    self._compiled: set[tuple[int, int]] = set()
    kind = input_kind(self.config)
    blank = np.full((self.size, self.size, 3), 0 if kind == "labels" else 255, np.uint8)
    start = time.perf_counter()
    self.translate(blank)  # Compiles for the canvas size now, not on the first stroke.
    self.warmup_seconds = time.perf_counter() - start
    self.info = {  # No absolute path: any page the browser shows could read it.
        "checkpoint": os.path.join(*self.step_dir.split(os.sep)[-3:]), "step": self.step,
        "dataset": self.config.data.name,
        "direction": self.config.data.direction, "input_size": self.size,
        "input_nc": int(self.config.model.input_nc),
        "output_nc": int(self.config.model.output_nc), "kind": kind,
        "palette": palette(self.config) if kind == "labels" else [],
        "eval_mode": eval_mode, "seed": seed}

  def compiled_shapes(self) -> frozenset[tuple[int, int]]:
    """The (height, width) buckets the generator has been compiled for so far."""
    with self._lock:
      return frozenset(self._compiled)

  def translate(self, image: np.ndarray) -> np.ndarray:
    """uint8 image -> uint8 output of the same size; image id 0, so same input, same output.

    The image is reflect-padded to its size bucket (resized down first if it is larger than
    the largest), and the output cropped (and resized) back.
    """
    h, w = image.shape[:2]
    x = image_io.flatten_for_model(image, int(self.config.model.input_nc))
    top = self.bucket_sides[-1]
    if max(h, w) > top:
      scale = top / max(h, w)
      x = inference._resize_uint8(  # pylint: disable=protected-access
          x, max(1, round(h * scale)), max(1, round(w * scale)))
    bucket = tuple(next(s for s in self.bucket_sides if s >= n) for n in x.shape[:2])
    padded, crop = pad_to(x, *bucket)
    with self._lock:
      self._compiled.add(bucket)
      out = inference.translate(self.config, self.variables, [padded],
                                eval_mode=self.eval_mode, seed=self.seed, batch_size=1,
                                image_ids=[0], generate_fn=self._generate)[0][crop]
    if out.shape[:2] != (h, w):
      out = inference._resize_uint8(out, h, w)  # pylint: disable=protected-access
    return out


def bucket_sides(crop_size: int, multiple: int, levels: int = BUCKET_LEVELS) -> list[int]:
  """crop_size * 2**k for k < levels, each rounded up to a multiple of 2**num_downs."""
  return [-(-crop_size * 2**k // multiple) * multiple for k in range(levels)]


def pad_to(image: np.ndarray, height: int, width: int) -> tuple[np.ndarray, tuple[slice, slice]]:
  """Reflect-pads (split evenly around the image) to height x width; the crop that undoes it."""
  h, w = image.shape[:2]
  top, left = (height - h) // 2, (width - w) // 2
  pads = [(top, height - h - top), (left, width - w - left)] + [(0, 0)] * (image.ndim - 2)
  return (np.pad(image, pads, mode="reflect"),
          (slice(top, top + h), slice(left, left + w)))


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


def _host_name(value: str) -> str:
  """The host of a Host header or an Origin's netloc, lowercased, without port or brackets."""
  value = value.strip().lower()
  if value.startswith("["):
    return value[1:].split("]", 1)[0]
  if value.count(":") == 1:
    value = value.split(":", 1)[0]
  return value.rstrip(".")


def _is_ip(name: str) -> bool:
  try:
    ipaddress.ip_address(name)
  except ValueError:
    return False
  return True


class HostPolicy:
  """Which Host headers (and Origins) name this server: DNS rebinding sends a foreign name.

  Bound to a loopback address, only the localhost names; bound to a name or address, that too;
  bound to every interface (0.0.0.0), also any IP literal and this machine's host name (a
  rebinding attack needs a domain name it controls). `extra`: more names, e.g. a LAN alias.
  """

  def __init__(self, bind_host: str, extra: tuple[str, ...] = ()):
    names = set(LOCAL_HOSTS) | {_host_name(h) for h in extra if h}
    self.any_ip = bind_host in WILDCARD_HOSTS
    if self.any_ip:
      names.add(socket.gethostname().lower())
    else:
      names.add(_host_name(bind_host))
    self.names = frozenset(names)

  def allows(self, host: str | None) -> bool:
    if not host:
      return False
    name = _host_name(host)
    return name in self.names or (self.any_ip and _is_ip(name))


class _ByteBudget:
  """Bytes of request bodies held at once, by all connections together."""

  def __init__(self, limit: int):
    self.limit, self.used = limit, 0
    self._lock = threading.Lock()

  def take(self, n: int) -> bool:
    with self._lock:
      if self.used + n > self.limit:
        return False
      self.used += n
      return True

  def give(self, n: int) -> None:
    with self._lock:
      self.used -= n


class _DeadlineReader(io.RawIOBase):
  """The connection's reads, each waiting at most the idle timeout and none past the request's
  deadline: a client sending a byte now and then cannot hold a connection for ever."""

  def __init__(self, handler: "Handler"):
    super().__init__()
    self._handler = handler

  def readable(self) -> bool:
    return True

  def readinto(self, buffer) -> int:  # type: ignore[override]
    remaining = self._handler.deadline - time.monotonic()
    if remaining <= 0:
      raise TimeoutError("request deadline passed")
    self._handler.connection.settimeout(min(self._handler.timeout, remaining))
    return self._handler.connection.recv_into(buffer)


class Handler(http.server.BaseHTTPRequestHandler):
  """Routes: GET / and static files, GET /info, POST /translate."""

  server_version = "pix2pix-demo"
  sys_version = ""  # Not the Python version in `Server:`.
  protocol_version = "HTTP/1.1"
  demo: Demo
  server: "DemoServer"
  max_upload_bytes: int = MAX_UPLOAD_BYTES
  timeout: float = IDLE_TIMEOUT_S  # StreamRequestHandler sets it on the socket.
  request_deadline: float = REQUEST_DEADLINE_S
  quiet: bool = False
  deadline: float = 0.0
  unread: int = 0  # Bytes of a refused body, read away after the answer.

  def version_string(self) -> str:
    return self.server_version

  def setup(self) -> None:
    super().setup()
    self.deadline = time.monotonic() + self.request_deadline
    self.rfile.close()  # The plain socket file; reads go through the deadline instead.
    self.rfile = io.BufferedReader(_DeadlineReader(self), 1 << 16)

  def handle_one_request(self) -> None:
    self.deadline = time.monotonic() + self.request_deadline  # Each request its own.
    self.server.mark_idle(self.connection, True)  # Until its request line has come.
    super().handle_one_request()

  def parse_request(self) -> bool:
    self.server.mark_idle(self.connection, False)
    return super().parse_request()

  def finish(self) -> None:
    self.server.mark_idle(self.connection, False)
    super().finish()

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
    if self.close_connection:
      self.send_header("Connection", "close")
    for name, value in headers.items():
      self.send_header(name.replace("_", "-"), value)
    self.end_headers()
    if self.command != "HEAD":
      self.wfile.write(body)

  def _error(self, status: int, message: str) -> None:
    self._send(status, json.dumps({"error": message}).encode(), "application/json")

  def _check_host(self) -> None:
    if not self.server.hosts.allows(self.headers.get("Host")):
      raise BadRequest(403, "Host header does not name this server (start it with --host or "
                       "--allowed_hosts to allow another name)")

  def do_GET(self) -> None:  # pylint: disable=invalid-name
    try:
      self._check_host()
    except BadRequest as e:
      self.close_connection = True
      self._error(e.status, str(e))
      return
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
    self.unread = 0
    try:
      try:
        self._check_post()
      except BadRequest:
        self._refuse_body(self._content_length() or 0)
        raise
      png = self._translate()
    except BadRequest as e:
      self._error(e.status, str(e))
      self._discard()
      return
    except TimeoutError:
      self.close_connection = True
      self._error(408, "request not received in time")
      return
    except (ConnectionError, OSError):
      self.close_connection = True  # The client went away; nothing to answer.
      return
    except Exception as e:  # pylint: disable=broad-except  # Keep serving; say what broke.
      self.log_error("translate failed: %s: %s", type(e).__name__, e)
      self._error(500, f"internal error ({type(e).__name__})")
      return
    self._send(200, png, "image/png")

  def _check_post(self) -> None:
    """Refusals decided by the headers alone: host, origin, route, content type."""
    self._check_host()
    origin = self.headers.get("Origin")
    if origin is not None and not self.server.hosts.allows(
        urllib.parse.urlsplit(origin).netloc if "://" in origin else None):
      raise BadRequest(403, "cross-origin request refused")
    if urllib.parse.urlsplit(self.path).path != "/translate":
      raise BadRequest(404, "not found")
    if "Transfer-Encoding" in self.headers:
      self.close_connection = True
      raise BadRequest(411, "Content-Length required (chunked bodies are not accepted)")
    kind = self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    if not (kind.startswith("image/") or kind == "multipart/form-data"):
      raise BadRequest(415, "Content-Type must be an image type (image/png, ...) or "
                       "multipart/form-data")

  def _content_length(self) -> int | None:
    """The body's declared length; None if absent or not a plain decimal number."""
    length = self.headers.get("Content-Length", "").strip()
    if not (length.isascii() and length.isdigit()):  # "²" is a digit to str.isdigit.
      return None
    return int(length)

  def _refuse_body(self, length: int) -> None:
    """The body will not be used: answer at once, read it away after, then close."""
    self.close_connection = True
    self.unread = length

  def _discard(self) -> None:
    """Reads away a refused body after the answer, so that the client gets to read it.

    Closing with unread data makes the kernel reset the connection, which can destroy the
    response before the client reads it. Bodies past DRAIN_FACTOR x the limit are not read;
    the request's deadline bounds the rest.
    """
    length, self.unread = self.unread, 0
    if length > DRAIN_FACTOR * self.max_upload_bytes:
      return
    try:
      self.wfile.flush()
      while length > 0:
        chunk = self.rfile.read1(min(length, 1 << 16))
        if not chunk:
          break
        length -= len(chunk)
    except (TimeoutError, OSError):
      pass  # The connection closes now.

  def _translate(self) -> bytes:
    length = self._content_length()
    if length is None:
      self.close_connection = True
      raise BadRequest(411, "Content-Length required (a decimal number of bytes)")
    if length > self.max_upload_bytes:
      self._refuse_body(length)
      raise BadRequest(413, f"body of {length} bytes is over the limit of "
                       f"{self.max_upload_bytes}")
    if not self.server.body_budget.take(length):
      self._refuse_body(length)
      raise BadRequest(503, "server busy: too many uploads at once; try again")
    try:
      body = self.rfile.read(length)
      if len(body) != length:
        self.close_connection = True
        raise BadRequest(400, f"body ended after {len(body)} of {length} bytes")
      content_type = self.headers.get("Content-Type", "")
      if content_type.lower().startswith("multipart/form-data"):
        body = multipart_file(content_type, body)
      image = decode_image(body)
      del body
      start = time.perf_counter()
      output = self.demo.translate(image)
    finally:
      self.server.body_budget.give(length)
    self.log_message("translated %dx%d in %.0f ms", output.shape[1], output.shape[0],
                     1000 * (time.perf_counter() - start))
    return encode_png(output)


class DemoServer(http.server.ThreadingHTTPServer):
  """A thread per connection, at most `max_connections` of them.

  When all are taken, a new connection closes the oldest idle one (waiting for a request
  line: a keep-alive or a socket held open to exhaust the server) and takes its place; with
  none idle, it gets a 503 at once.
  """

  daemon_threads = True
  request_queue_size = 64

  def __init__(self, address: tuple[str, int], handler: type[Handler], *,
               max_connections: int, max_body_bytes_total: int, hosts: HostPolicy):
    super().__init__(address, handler)
    self.slots = threading.BoundedSemaphore(max_connections)
    self.body_budget = _ByteBudget(max_body_bytes_total)
    self.hosts = hosts
    self._idle: dict[socket.socket, None] = {}  # Oldest first.
    self._idle_lock = threading.Lock()

  def mark_idle(self, connection: socket.socket, idle: bool) -> None:
    with self._idle_lock:
      self._idle.pop(connection, None)
      if idle:
        self._idle[connection] = None

  def _close_oldest_idle(self) -> bool:
    with self._idle_lock:
      victim = next(iter(self._idle), None)
      if victim is None:
        return False
      del self._idle[victim]
    try:
      victim.shutdown(socket.SHUT_RDWR)  # Its handler's read returns: it ends, frees a slot.
    except OSError:
      pass
    return True

  def process_request(self, request, client_address) -> None:
    if not self.slots.acquire(blocking=False) and not (
        self._close_oldest_idle() and self.slots.acquire(timeout=1.0)):
      try:
        request.settimeout(1.0)
        request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json"
                        b"\r\nContent-Length: %d\r\nConnection: close\r\nRetry-After: 1\r\n"
                        b"\r\n%s" % (len(BUSY), BUSY))
      except OSError:
        pass
      self.shutdown_request(request)
      return
    try:
      super().process_request(request, client_address)
    except BaseException:
      self.slots.release()
      raise

  def process_request_thread(self, request, client_address) -> None:
    try:
      super().process_request_thread(request, client_address)
    finally:
      self.slots.release()

  def handle_error(self, request, client_address) -> None:
    """One line, not a traceback, for a connection that failed (reset, timed out, ...)."""
    error = sys.exc_info()[1]
    sys.stderr.write(f"{client_address[0]}: connection failed: {type(error).__name__}: "
                     f"{error}\n")


def make_server(demo: Demo, host: str = "127.0.0.1", port: int = 8000, *,
                max_upload_bytes: int = MAX_UPLOAD_BYTES,
                max_body_bytes_total: int = MAX_BODY_BYTES_TOTAL,
                max_connections: int = MAX_CONNECTIONS, idle_timeout: float = IDLE_TIMEOUT_S,
                request_deadline: float = REQUEST_DEADLINE_S,
                allowed_hosts: tuple[str, ...] = (), quiet: bool = False) -> DemoServer:
  """A server for `demo` (not yet serving: call serve_forever); port 0 picks a free port."""
  handler = type("DemoHandler", (Handler,), {
      "demo": demo, "max_upload_bytes": max_upload_bytes, "timeout": idle_timeout,
      "request_deadline": request_deadline, "quiet": quiet})
  return DemoServer((host, port), handler, max_connections=max_connections,
                    max_body_bytes_total=max(max_body_bytes_total, max_upload_bytes),
                    hosts=HostPolicy(host, allowed_hosts))


def define_flags() -> None:
  """Flags are defined only when run as a program, so that the module imports cleanly."""
  checkpoint_flags.define()
  flags.DEFINE_string("host", "127.0.0.1", "Address to bind; 0.0.0.0 exposes the demo.")
  flags.DEFINE_integer("port", 8000, "Port; 0 picks a free one.")
  flags.DEFINE_bool("eval_mode", False, "Deterministic: no dropout, BatchNorm running averages.")
  flags.DEFINE_integer("seed", 0, "Dropout noise seed (same drawing, same output).")
  flags.DEFINE_float("max_upload_mb", MAX_UPLOAD_BYTES / 2**20,
                     "Larger request bodies are refused with 413.")
  flags.DEFINE_list("allowed_hosts", [], "More names the Host header may give (besides "
                    "localhost and --host), e.g. a LAN name with --host=0.0.0.0.")
  flags.DEFINE_integer("max_connections", MAX_CONNECTIONS,
                       "Connections served at once; more get a 503.")


def main(argv: list[str]) -> None:
  del argv
  f = flags.FLAGS
  try:
    demo = Demo(checkpoint_flags.path(), f.step, eval_mode=f.eval_mode, seed=f.seed)
  except (FileNotFoundError, ValueError) as e:
    sys.exit(f"error: {e}")
  upload = int(f.max_upload_mb * 2**20)
  server = make_server(demo, f.host, f.port, max_upload_bytes=upload,
                       max_body_bytes_total=4 * upload, max_connections=f.max_connections,
                       allowed_hosts=tuple(f.allowed_hosts))
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
