"""Hostile clients of the demo server (issue 19): floods, slow clients, foreign pages, fuzz.

Every test is bounded: a few dozen sockets at most, only on 127.0.0.1, loops of fixed length,
and limits (idle timeout, deadline, connection count, body budget) shrunk so that each
defence shows within seconds. While each attack runs, `GET /` must keep answering within 1 s.
"""

import contextlib
import http.client
import io
import json
import socket
import threading
import time

from hypothesis import HealthCheck, example, given, settings, strategies as st
import numpy as np
from PIL import Image
import pytest

from pix2pix_jax.serving import demo as demo_lib
from pix2pix_jax.serving import http_guard
from pix2pix_jax.serving import serve


@pytest.fixture(scope="module")
def demo(untrained_workdir):
  return demo_lib.Demo(untrained_workdir)


@contextlib.contextmanager
def serving(demo, **limits):
  server = serve.make_server(demo, "127.0.0.1", 0, quiet=True, **limits)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    yield server.server_address[:2]
  finally:
    server.shutdown()
    server.server_close()


def get_root_seconds(address) -> float:
  """Seconds GET / takes on a fresh connection (fails the test if it is not a 200)."""
  start = time.perf_counter()
  conn = http.client.HTTPConnection(*address, timeout=5)
  try:
    conn.request("GET", "/")
    response = conn.getresponse()
    assert response.status == 200 and b"<canvas" in response.read()
  finally:
    conn.close()
  return time.perf_counter() - start


def answer(sock: socket.socket, timeout: float) -> bytes:
  """What the server sends before it closes (or `timeout` passes): b"" if it just closed."""
  sock.settimeout(timeout)
  out = b""
  with contextlib.suppress(OSError):
    while chunk := sock.recv(65536):
      out += chunk
  return out


def closed_within(sock: socket.socket, seconds: float) -> bool:
  """Whether the server ended the connection (answer, then EOF or reset) within `seconds`."""
  sock.settimeout(seconds)
  try:
    while sock.recv(65536):
      pass
    return True
  except TimeoutError:
    return False
  except OSError:
    return True  # Reset.


def threads_at_most(limit: int, seconds: float) -> bool:
  """Whether the thread count falls to `limit` within `seconds`: a handler's thread ends a
  moment after it closes its socket, later still when another test process holds the CPU."""
  deadline = time.monotonic() + seconds
  while threading.active_count() > limit and time.monotonic() < deadline:
    time.sleep(0.05)
  return threading.active_count() <= limit


def rss_mb() -> float:
  with open("/proc/self/status") as f:
    line = next(l for l in f if l.startswith("VmRSS:"))
  return int(line.split()[1]) / 1024


def png(height, width, seed=0) -> bytes:
  image = np.random.default_rng(seed).integers(0, 255, (height, width, 3), np.uint8)
  out = io.BytesIO()
  Image.fromarray(image).save(out, "PNG")
  return out.getvalue()


def post(address, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
  conn = http.client.HTTPConnection(*address, timeout=60)
  try:
    conn.request("POST", "/translate", body=body, headers=headers)
    response = conn.getresponse()
    return response.status, response.read()
  finally:
    conn.close()


def test_idle_connection_flood(demo):
  """40 sockets held open without a byte: threads bounded, GET / served, idle ones closed."""
  with serving(demo, max_connections=8, idle_timeout=1.0) as address:
    before = threading.active_count()
    socks = [socket.create_connection(address, timeout=5) for _ in range(40)]
    try:
      time.sleep(0.3)
      assert threading.active_count() <= before + 8 + 1
      assert get_root_seconds(address) < 1.0  # Takes the place of an idle socket.
      assert all(closed_within(s, 3.0) for s in socks)  # Turned away, evicted or timed out.
      assert threads_at_most(before + 1, 2.0), threading.active_count()
      assert get_root_seconds(address) < 1.0
    finally:
      for s in socks:
        s.close()


def test_all_busy_gets_a_fast_503(demo):
  """Every slot in a request (headers sent, body pending): a new connection gets 503 now."""
  with serving(demo, max_connections=3, idle_timeout=2.0, request_deadline=3.0) as address:
    busy = [socket.create_connection(address, timeout=5) for _ in range(3)]
    try:
      for s in busy:
        s.sendall(b"POST /translate HTTP/1.1\r\nHost: localhost\r\n"
                  b"Content-Type: image/png\r\nContent-Length: 1000\r\n\r\nx")
      time.sleep(0.3)
      start = time.perf_counter()
      with socket.create_connection(address, timeout=5) as late:
        assert answer(late, 2.0).startswith(b"HTTP/1.1 503")
      assert time.perf_counter() - start < 1.5
    finally:
      for s in busy:
        s.close()


def test_slow_headers_and_bodies_are_cut_at_the_deadline(demo):
  """10 clients trickling a byte every 0.25 s: each is closed by the 1.5 s request deadline."""
  with serving(demo, max_connections=16, idle_timeout=1.0, request_deadline=1.5) as address:
    socks = [socket.create_connection(address, timeout=5) for _ in range(10)]
    try:
      for i, s in enumerate(socks):  # Half send their headers slowly, half their body.
        if i % 2:
          s.sendall(b"POST /translate HTTP/1.1\r\nHost: localhost\r\n"
                    b"Content-Type: image/png\r\nContent-Length: 100000\r\n\r\n")
        else:
          s.sendall(b"GET / HTTP/1.1\r\n")
      start = time.perf_counter()
      open_ = set(range(10))
      for _ in range(10):  # 2.5 s of trickling at most.
        for i in list(open_):
          try:
            socks[i].sendall(b"X-a: b\r\n" if i % 2 == 0 else b"x")
          except OSError:
            open_.discard(i)
        assert get_root_seconds(address) < 1.0
        time.sleep(0.25)
      assert all(closed_within(s, 1.0) for s in socks)
      assert time.perf_counter() - start < 5
    finally:
      for s in socks:
        s.close()


def test_concurrent_large_bodies_are_bounded_in_memory(demo):
  """12 uploads of 1 MB - 1 at once under a 3 MB budget: 3 are read, 9 get 503 at once."""
  limit = 1 << 20
  with serving(demo, max_upload_bytes=limit, max_body_bytes_total=3 * limit,
               max_connections=32, idle_timeout=2.0, request_deadline=4.0) as address:
    rss_before = rss_mb()
    socks = [socket.create_connection(address, timeout=5) for _ in range(12)]
    try:
      for s in socks:
        s.sendall(b"POST /translate HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/png\r\n"
                  b"Content-Length: %d\r\n\r\n" % (limit - 1) + b"\0" * (limit // 2))
      answers = [answer(s, 0.5) for s in socks]
      busy = [a for a in answers if a.startswith(b"HTTP/1.1 503")]
      assert len(busy) >= 9, [a[:20] for a in answers]
      assert get_root_seconds(address) < 1.0
      # 3 bodies of 1 MB held (plus buffers): the test states 48 MB as the bound.
      assert rss_mb() - rss_before < 48
    finally:
      for s in socks:
        s.close()


def test_shape_flood_compiles_a_bounded_set_of_shapes(demo):
  """5 sizes that pad to 5 shapes (multiples of 64) fit 1 bucket (or are tiled with it)."""
  sizes = [(130, 130), (200, 200), (140, 250), (250, 140), (300, 260)]
  assert demo.bucket_sides == [64, 128, 256]
  statuses, latencies = [], []
  with serving(demo) as address:
    def flood():
      for i, (h, w) in enumerate(sizes):
        status, body = post(address, png(h, w, i), {"Content-Type": "image/png"})
        statuses.append(status)
        if status == 200:
          assert Image.open(io.BytesIO(body)).size == (w, h)
    thread = threading.Thread(target=flood)
    thread.start()
    while thread.is_alive() and len(latencies) < 200:
      latencies.append(get_root_seconds(address))
      time.sleep(0.05)
    thread.join(timeout=120)
  assert statuses == [200] * len(sizes)
  assert max(latencies) < 1.0
  assert demo.compiled_shapes() <= {(64, 64), (256, 256)}
  assert len(demo.compiled_shapes()) <= demo_lib.BUCKET_LEVELS**2


def test_bucket_translation_matches_plain_translate_for_a_bucket_shape(demo):
  image = np.random.default_rng(3).integers(0, 255, (64, 64, 3), np.uint8)
  from pix2pix_jax.serving import inference  # pylint: disable=g-import-not-at-top
  want = inference.translate(demo.config, demo.variables, [image], image_ids=[0], batch_size=1,
                             generate_fn=demo._generate)  # pylint: disable=protected-access
  np.testing.assert_array_equal(demo.translate(image), want[0])


@pytest.mark.parametrize("headers,status,message", [
    ({"Content-Type": "text/plain"}, 415, b"Content-Type must be"),
    ({}, 415, b"Content-Type must be"),
    ({"Content-Type": "application/x-www-form-urlencoded"}, 415, b"Content-Type must be"),
    ({"Content-Type": "image/png", "Host": "evil.example"}, 403, b"Host header"),
    ({"Content-Type": "image/png", "Origin": "http://evil.example"}, 403, b"cross-origin"),
    ({"Content-Type": "image/png", "Origin": "null"}, 403, b"cross-origin"),
], ids=["text_plain", "no_type", "form", "foreign_host", "foreign_origin", "null_origin"])
def test_requests_a_foreign_page_can_send_are_refused(demo, headers, status, message):
  with serving(demo) as address:
    got, body = post(address, png(64, 64), headers)
    assert got == status and message in body
    assert get_root_seconds(address) < 1.0


def test_host_header_is_checked_and_nothing_absolute_leaks(demo, untrained_workdir):
  with serving(demo) as address:
    for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example", ""):
      with socket.create_connection(address, timeout=5) as s:
        s.sendall(b"GET /info HTTP/1.1\r\nHost: %s\r\n\r\n" % host.encode())
        reply = answer(s, 3.0)
        assert reply.startswith(b"HTTP/1.1 403"), (host, reply[:80])
        assert b"checkpoint" not in reply
    conn = http.client.HTTPConnection(*address, timeout=5)
    conn.request("GET", "/info", headers={"Host": "localhost:8000"})
    response = conn.getresponse()
    info = response.read()
    assert response.status == 200
    assert untrained_workdir.encode() not in info
    assert not json.loads(info)["checkpoint"].startswith("/")
    assert "Python" not in response.getheader("Server") and response.getheader("Server")
    conn.close()


def test_host_policy():
  local = http_guard.HostPolicy("127.0.0.1")
  assert all(map(local.allows, ["localhost", "localhost:8000", "127.0.0.1:1", "[::1]:8000",
                                "LOCALHOST."]))
  assert not any(map(local.allows, ["evil.example", "10.0.0.2", "", None, "127.0.0.1.x"]))
  anywhere = http_guard.HostPolicy("0.0.0.0", ("pix.lan",))
  assert anywhere.allows("192.168.1.5:8000") and anywhere.allows("[fe80::1]:8000")
  assert anywhere.allows("pix.lan:8000") and not anywhere.allows("evil.example")
  named = http_guard.HostPolicy("myhost.lan")
  assert named.allows("myhost.lan:8000") and not named.allows("other.lan")


@pytest.mark.parametrize("length", ["²", "³", "-1", "1e3", " 12 x", "0x10"])
def test_bad_content_length_is_a_4xx_not_a_500(demo, length):
  with serving(demo) as address, socket.create_connection(address, timeout=5) as s:
    s.sendall(f"POST /translate HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/png\r\n"
              f"Content-Length: {length}\r\n\r\n".encode("latin-1"))  # As headers are read.
    reply = answer(s, 3.0)
    assert reply.startswith(b"HTTP/1.1 411") and b"Traceback" not in reply
    assert b"invalid literal" not in reply


# ------------------------------------------------------------------ fuzzing (bounded)

@pytest.fixture(scope="module")
def fuzz_address(demo):
  with serving(demo, max_upload_bytes=4096, idle_timeout=1.0, request_deadline=2.0) as address:
    yield address


HEADER_VALUES = st.one_of(st.sampled_from(["²", "-1", "99999999999999999999", "0", "5",
                                           "image/png", "text/plain", "multipart/form-data",
                                           "multipart/form-data; boundary=x", "evil.example",
                                           "localhost", "chunked", "null", "http://x"]),
                          st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF),
                                  max_size=30))


@settings(max_examples=60, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(method=st.sampled_from(["GET", "POST", "HEAD", "PUT", "OPTIONS", "G\x00T"]),
       path=st.sampled_from(["/", "/info", "/translate", "/static/../serve.py", "/%00",
                             "/" + "a" * 3000]),
       headers=st.dictionaries(st.sampled_from(["Host", "Content-Length", "Content-Type",
                                                "Origin", "Transfer-Encoding", "Connection"]),
                               HEADER_VALUES, max_size=6),
       body=st.binary(max_size=300))
@example(method="POST", path="/translate",
         headers={"Host": "localhost", "Content-Length": "²", "Content-Type": "image/png"},
         body=b"x")
@example(method="POST", path="/translate",
         headers={"Host": "localhost", "Content-Type": "text/plain", "Content-Length": "5"},
         body=b"hello")
@example(method="GET", path="/info", headers={"Host": "evil.example"}, body=b"")
@example(method="POST", path="/translate",
         headers={"Host": "localhost", "Content-Type": "multipart/form-data; boundary=x",
                  "Content-Length": "20"}, body=b"--x\r\n\r\n--x--\r\n\xff\xfe\x00")
def test_fuzz_requests(fuzz_address, method, path, headers, body):
  """Any request: an HTTP answer below 500, no traceback or Python version, still serving."""
  lines = [f"{method} {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items()]
  raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + body
  with socket.create_connection(fuzz_address, timeout=5) as s:
    s.sendall(raw)
    s.shutdown(socket.SHUT_WR)
    reply = answer(s, 5.0)
  if reply:  # The server may close without a word on a request it could not even parse.
    assert reply.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")), reply[:100]
    assert reply[9:12] not in (b"500", b"502"), reply[:200]  # 501 (method), 503 (busy) ok.
    assert b"Traceback" not in reply and b"Python" not in reply
  assert get_root_seconds(fuzz_address) < 1.0
