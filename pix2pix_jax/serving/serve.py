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

import http.server
import io
import json
import os
import posixpath
import time
import urllib.parse
from typing import Any

from absl import app
from absl import flags

from pix2pix_jax.serving import checkpoint_flags
from pix2pix_jax.serving import demo as demo_lib
from pix2pix_jax.serving import http_guard
from pix2pix_jax.serving.demo import BadRequest

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
                 ".js": "text/javascript; charset=utf-8", ".png": "image/png",
                 ".svg": "image/svg+xml", ".ico": "image/x-icon"}
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_BODY_BYTES_TOTAL = 4 * MAX_UPLOAD_BYTES  # Bodies held at once, all connections together.
DRAIN_FACTOR = 8  # Refused bodies up to this many times the limit are read away.


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
  sys_version = ""  # Not the Python version in `Server:`.
  protocol_version = "HTTP/1.1"
  demo: demo_lib.Demo
  server: "http_guard.DemoServer"
  max_upload_bytes: int = MAX_UPLOAD_BYTES
  timeout: float = http_guard.IDLE_TIMEOUT_S  # StreamRequestHandler sets it on the socket.
  request_deadline: float = http_guard.REQUEST_DEADLINE_S
  quiet: bool = False
  deadline: float = 0.0
  unread: int = 0  # Bytes of a refused body, read away after the answer.

  def version_string(self) -> str:
    return self.server_version

  def setup(self) -> None:
    super().setup()
    self.deadline = time.monotonic() + self.request_deadline
    self.rfile.close()  # The plain socket file; reads go through the deadline instead.
    self.rfile = io.BufferedReader(http_guard.DeadlineReader(self), 1 << 16)

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
        body = demo_lib.multipart_file(content_type, body)
      image = demo_lib.decode_image(body)
      del body
      start = time.perf_counter()
      output = self.demo.translate(image)
    finally:
      self.server.body_budget.give(length)
    self.log_message("translated %dx%d in %.0f ms", output.shape[1], output.shape[0],
                     1000 * (time.perf_counter() - start))
    return demo_lib.encode_png(output)


def make_server(demo: demo_lib.Demo, host: str = "127.0.0.1", port: int = 8000, *,
                max_upload_bytes: int = MAX_UPLOAD_BYTES,
                max_body_bytes_total: int = MAX_BODY_BYTES_TOTAL,
                max_connections: int = http_guard.MAX_CONNECTIONS, idle_timeout: float = http_guard.IDLE_TIMEOUT_S,
                request_deadline: float = http_guard.REQUEST_DEADLINE_S,
                allowed_hosts: tuple[str, ...] = (), quiet: bool = False) -> http_guard.DemoServer:
  """A server for `demo` (not yet serving: call serve_forever); port 0 picks a free port."""
  handler = type("DemoHandler", (Handler,), {
      "demo": demo, "max_upload_bytes": max_upload_bytes, "timeout": idle_timeout,
      "request_deadline": request_deadline, "quiet": quiet})
  return http_guard.DemoServer((host, port), handler, max_connections=max_connections,
                    max_body_bytes_total=max(max_body_bytes_total, max_upload_bytes),
                    hosts=http_guard.HostPolicy(host, allowed_hosts))


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
  flags.DEFINE_integer("max_connections", http_guard.MAX_CONNECTIONS,
                       "Connections served at once; more get a 503.")


def main(argv: list[str]) -> None:
  del argv
  f = flags.FLAGS
  try:
    demo = demo_lib.Demo(checkpoint_flags.path(), f.step, eval_mode=f.eval_mode, seed=f.seed)
  except (FileNotFoundError, ValueError) as e:
    checkpoint_flags.exit_with(e)
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
