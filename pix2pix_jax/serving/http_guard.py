"""What keeps the demo server answering whatever its clients do: Host checks, bounded
connections, per-read and per-request deadlines, a budget for bodies held at once.

A demo, not a public web service; these bound what a page in the user's browser or a client
on the network can make it spend (README, "Demo").
"""

import http.server
import io
import ipaddress
import json
import socket
import sys
import threading
import time

MAX_CONNECTIONS = 32  # Each has a thread; beyond this a new connection gets a 503 at once.
IDLE_TIMEOUT_S = 10.0  # A connection that sends nothing for this long is closed.
REQUEST_DEADLINE_S = 30.0  # A request (headers and body) must arrive within this.
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_HOSTS = ("", "0.0.0.0", "::")
BUSY = json.dumps({"error": "server busy: too many connections; try again"}).encode()


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


class ByteBudget:
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


class DeadlineReader(io.RawIOBase):
  """The connection's reads, each waiting at most the idle timeout and none past the request's
  deadline: a client sending a byte now and then cannot hold a connection for ever."""

  def __init__(self, handler: http.server.BaseHTTPRequestHandler):
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


class DemoServer(http.server.ThreadingHTTPServer):
  """A thread per connection, at most `max_connections` of them.

  When all are taken, a new connection closes the oldest idle one (waiting for a request
  line: a keep-alive or a socket held open to exhaust the server) and takes its place; with
  none idle, it gets a 503 at once.
  """

  daemon_threads = True
  request_queue_size = 64

  def __init__(self, address: tuple[str, int], handler: type[http.server.BaseHTTPRequestHandler], *,
               max_connections: int, max_body_bytes_total: int, hosts: HostPolicy):
    super().__init__(address, handler)
    self.slots = threading.BoundedSemaphore(max_connections)
    self.body_budget = ByteBudget(max_body_bytes_total)
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
