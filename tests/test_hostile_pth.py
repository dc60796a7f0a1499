"""Hostile .pth files (issue 19): bombs and malformed files end in one sentence, not a crash.

No code runs when these files load (test_torch_import checks that); what is checked here is
that sizes are checked before anything is read or expanded, that what the pickle shares stays
shared, and that every malformed file is a PthFormatError naming the file. The pickles are
written opcode by opcode (`enc`), so each file is exactly the attack it names.
"""

import os
import pickle
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from typing import Any, NamedTuple

from hypothesis import HealthCheck, example, given, settings, strategies as st
import numpy as np
import pytest

from pix2pix_jax.interop import safe_unpickle
from pix2pix_jax.interop import torch_import
from pix2pix_jax.interop import torch_pth

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "tests", "fixtures", "torch_pix2pix")


class G(NamedTuple):  # A GLOBAL opcode.
  module: str
  name: str


class R(NamedTuple):  # callable(*args): REDUCE.
  func: Any
  args: tuple


class P(NamedTuple):  # A persistent id (BINPERSID): a storage.
  pid: tuple


class Raw(bytes):  # Opcodes written as they are.
  pass


def enc(x: Any) -> bytes:
  """Protocol-2 opcodes that build `x` (no memo: sharing is written with Raw BINPUT/BINGET)."""
  if isinstance(x, Raw):
    return bytes(x)
  if isinstance(x, G):
    return b"c" + x.module.encode() + b"\n" + x.name.encode() + b"\n"
  if isinstance(x, R):
    return enc(x.func) + enc(tuple(x.args)) + b"R"
  if isinstance(x, P):
    return enc(x.pid) + b"Q"
  if isinstance(x, bool):
    return b"\x88" if x else b"\x89"
  if isinstance(x, int):
    n = x.to_bytes((x.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(n)]) + n
  if isinstance(x, str):
    return b"X" + struct.pack("<I", len(x.encode())) + x.encode()
  if isinstance(x, tuple):
    return b"(" + b"".join(map(enc, x)) + b"t"
  if isinstance(x, list):
    return b"](" + b"".join(map(enc, x)) + b"e"
  if isinstance(x, dict):
    return b"}(" + b"".join(enc(k) + enc(v) for k, v in x.items()) + b"u"
  raise TypeError(type(x))


def pickled(obj: Any) -> bytes:
  return b"\x80\x02" + enc(obj) + b"."


def tensor(key="0", numel=4, size=(2, 2), stride=(2, 1), offset=0, kind="FloatStorage"):
  storage = P(("storage", G("torch", kind), key, "cpu", numel))
  return R(G("torch._utils", "_rebuild_tensor_v2"),
           (storage, offset, tuple(size), tuple(stride), False,
            R(G("collections", "OrderedDict"), ())))


def write_zip(path, pkl: bytes, storages: dict[str, bytes],
              compression=zipfile.ZIP_STORED) -> str:
  with zipfile.ZipFile(path, "w", compression) as z:
    z.writestr("archive/data.pkl", pkl)
    z.writestr("archive/byteorder", "little")
    for key, data in storages.items():
      z.writestr(f"archive/data/{key}", data)
  return str(path)


LEGACY_HEADER = b"".join(pickle.dumps(x, protocol=2) for x in (
    torch_pth.LEGACY_MAGIC_NUMBER, torch_pth.LEGACY_PROTOCOL_VERSION,
    {"protocol_version": 1001, "little_endian": True}))


def write_legacy(path, pkl: bytes, storages: dict[str, tuple[int, bytes]],
                 header: bytes = LEGACY_HEADER) -> str:
  body = header + pkl + pickle.dumps(list(storages), protocol=2)
  for numel, data in storages.values():
    body += struct.pack("<q", numel) + data
  path.write_bytes(body)
  return str(path)


FLOATS = np.arange(4, dtype=np.float32).tobytes()


def nested_pairs(levels: int) -> bytes:
  """x0 = a tensor, x_i = (x_{i-1}, x_{i-1}): 2**levels leaves in ~10 bytes a level."""
  out = b"\x80\x02" + enc(tensor())
  for i in range(levels):
    out += b"r" + struct.pack("<I", i) + b"j" + struct.pack("<I", i) + b"\x86"
  return out + b"."


# name -> (layout, pickle, storages): files the old reader crashed on, inflated or hung on.
def crash_cases() -> dict[str, tuple[str, bytes, Any]]:
  sd = lambda *tensors: pickled({f"w{i}": t for i, t in enumerate(tensors)})
  return {
      "member_larger_than_storage": ("zip", sd(tensor(numel=4)), {"0": b"\0" * (1 << 20)}),
      "stride_0_gigabyte": ("zip", sd(tensor(numel=1, size=(16384, 16384), stride=(0, 0))),
                            {"0": FLOATS[:4]}),
      "stride_0_terabytes": ("zip", sd(tensor(numel=1, size=(1 << 20, 1 << 20),
                                              stride=(0, 0))), {"0": FLOATS[:4]}),
      "negative_numel": ("zip", sd(tensor(numel=-1, size=(1,), stride=(1,))), {"0": FLOATS}),
      "negative_size": ("zip", sd(tensor(size=(-2, -2), stride=(1, 1))), {"0": FLOATS}),
      "missing_storage": ("zip", sd(tensor(key="7")), {"0": FLOATS}),
      "dotdot_key": ("zip", sd(tensor(key="../data.pkl")), {"0": FLOATS}),
      "ext1_opcode": ("zip", b"\x80\x02\x82\x01.", {}),
      "deep_lists": ("zip", b"\x80\x02" + b"(" * 100_000 + b"]" + b"l" * 100_000 + b".", {}),
      "self_list_in_dict": ("zip", b"\x80\x02}X\x01\x00\x00\x00a]r\x00\x00\x00\x00j\x00\x00"
                            b"\x00\x00as.", {}),
      "size_not_a_tuple": ("zip", sd(R(G("torch._utils", "_rebuild_tensor_v2"),
                                       (P(("storage", G("torch", "FloatStorage"), "0", "cpu",
                                           4)), 0, 5, (1,), False))), {"0": FLOATS}),
      "legacy_negative_numel": ("legacy", sd(tensor()), {"0": (-1, FLOATS)}),
      "legacy_huge_numel": ("legacy", sd(tensor()), {"0": (1 << 60, FLOATS)}),
      "legacy_ext1_opcode": ("legacy", b"\x80\x02\x82\x01.", {}),
  }


def write_case(tmp_path, name: str) -> str:
  layout, pkl, storages = crash_cases()[name]
  path = tmp_path / f"{name}.pth"
  return (write_zip(path, pkl, storages) if layout == "zip"
          else write_legacy(path, pkl, storages))


def assert_one_sentence(error: Exception, path: str) -> None:
  message = str(error)
  assert message.startswith(f"{path}: "), message
  assert "\n" not in message and len(message) < 400, message


@pytest.mark.parametrize("name", sorted(crash_cases()))
def test_crash_cases_are_one_sentence_errors(tmp_path, name):
  path = write_case(tmp_path, name)
  start = time.perf_counter()
  if name == "self_list_in_dict":  # Not a bomb: a cycle, which loads and stays a cycle.
    obj = torch_pth.load(path)
    assert obj["a"][0] is obj["a"]
    with pytest.raises(torch_pth.PthFormatError) as error:
      torch_pth.load_state_dict(path)
  else:
    with pytest.raises(torch_pth.PthFormatError) as error:
      torch_pth.load_state_dict(path)
  assert_one_sentence(error.value, path)
  assert time.perf_counter() - start < 5


def test_member_size_is_checked_before_inflating(tmp_path):
  """A 32 KB member that inflates to 32 MB is refused from its declared size, unread."""
  path = write_zip(tmp_path / "bomb.pth", pickled({"w": tensor(numel=4)}),
                   {"0": b"\0" * (32 << 20)}, zipfile.ZIP_DEFLATED)
  assert os.path.getsize(path) < 100_000
  with pytest.raises(torch_pth.PthFormatError, match="holds 33554432 bytes, not the 16"):
    torch_pth.load_state_dict(path)


def test_total_expansion_is_bounded(tmp_path):
  """Storages that match their members, but more in all than the file may expand to."""
  numel = 1 << 20
  path = write_zip(tmp_path / "big.pth", pickled(
      {"a": tensor("0", numel, (numel,), (1,)), "b": tensor("1", numel, (numel,), (1,))}),
      {"0": b"\0" * (4 * numel), "1": b"\0" * (4 * numel)}, zipfile.ZIP_DEFLATED)
  assert len(torch_pth.load_state_dict(path)) == 2
  with pytest.raises(torch_pth.PthFormatError, match="expand past 6000000 bytes"):
    torch_pth.load_state_dict(path, max_bytes=6_000_000)
  assert torch_pth.MAX_TOTAL_BYTES >= 4 * 218_000_000  # A few unet_256 generators.


def test_shared_objects_stay_shared(tmp_path):
  """(x, x) nested 22 levels: 4 million leaves if expanded, one tensor if kept shared."""
  path = write_zip(tmp_path / "pairs.pth", nested_pairs(22), {"0": FLOATS})
  start = time.perf_counter()
  obj = torch_pth.load(path)
  assert time.perf_counter() - start < 2
  assert obj[0] is obj[1]
  leaf = obj
  for _ in range(22):
    leaf = leaf[0]
  np.testing.assert_array_equal(leaf, [[0, 1], [2, 3]])


def test_damaged_zip_crc(tmp_path):
  pattern = bytes(range(1, 17))
  path = write_zip(tmp_path / "crc.pth", pickled({"w": tensor()}), {"0": pattern})
  data = bytearray(open(path, "rb").read())
  at = data.index(pattern)
  data[at] ^= 0xFF
  open(path, "wb").write(bytes(data))
  with pytest.raises(torch_pth.PthFormatError, match="damaged zip") as error:
    torch_pth.load_state_dict(path)
  assert_one_sentence(error.value, path)


@pytest.mark.parametrize("header,reason", [
    (LEGACY_HEADER[:-7], "truncated or malformed legacy header"),
    (b"".join(pickle.dumps(x, protocol=2) for x in (
        torch_pth.LEGACY_MAGIC_NUMBER, torch_pth.LEGACY_PROTOCOL_VERSION, 5)),
     "system info is not a dict"),
], ids=["truncated", "sys_info_int"])
def test_bad_legacy_headers(tmp_path, header, reason):
  path = write_legacy(tmp_path / "legacy.pth", pickled({"w": tensor()}), {"0": (4, FLOATS)},
                      header)
  with pytest.raises(torch_pth.PthFormatError, match=reason) as error:
    torch_pth.load_state_dict(path)
  assert_one_sentence(error.value, path)


def _one_d_generator(tmp_path) -> str:
  return write_zip(tmp_path / "one_d.pth", pickled({
      "model.model.0.weight": tensor("0", 4, (4,), (1,)),
      "model.model.3.weight": tensor("0", 4, (4,), (1,))}), {"0": FLOATS})


def test_one_d_weight_is_a_conversion_error_naming_the_file(tmp_path):
  path = _one_d_generator(tmp_path)
  with pytest.raises(torch_import.ConversionError, match="not the 4-D weight") as error:
    torch_import.convert(path, str(tmp_path / "out"), torch_import.config_base.base_config())
  assert_one_sentence(error.value, path)


def test_cli_says_one_sentence_and_exits_1(tmp_path):
  """The converter on a 1-D weight and on a stride-0 bomb (run side by side)."""
  paths = [_one_d_generator(tmp_path), write_case(tmp_path, "stride_0_terabytes")]
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
  running = [(path, subprocess.Popen(
      [sys.executable, "-m", "pix2pix_jax.interop.torch_import", f"--pth={path}",
       f"--output={tmp_path / 'out'}"], cwd=REPO, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True, env=env)) for path in paths]
  for path, process in running:
    try:
      _, stderr = process.communicate(timeout=120)
    finally:
      process.kill()
    assert process.returncode == 1, stderr[-2000:]
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith(f"error: {path}: ")


# ------------------------------------------------------------------ fuzzing (bounded)

SEEDS = {name: crash_cases()[name] for name in ("stride_0_terabytes", "negative_numel",
                                                 "missing_storage", "ext1_opcode")}
FUZZ = settings(max_examples=120, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def _load_bounded(path: str) -> None:
  """Either loads within the bound or refuses with a PthFormatError; nothing else."""
  start = time.perf_counter()
  try:
    torch_pth.load(path, max_bytes=64 << 20)
  except (torch_pth.PthFormatError, safe_unpickle.UnsafePickleError) as e:
    assert str(e).startswith(path) or isinstance(e, safe_unpickle.UnsafePickleError)
  assert time.perf_counter() - start < 5


@FUZZ
@given(numel=st.integers(-2, 1 << 62), offset=st.integers(-2, 1 << 62),
       size=st.lists(st.integers(-1, 1 << 40), max_size=4),
       stride=st.lists(st.integers(-1, 1 << 40), max_size=4),
       legacy=st.booleans(), kind=st.sampled_from(["FloatStorage", "LongStorage",
                                                   "BoolStorage", "BFloat16Storage"]))
@example(numel=1, offset=0, size=[1 << 20, 1 << 20], stride=[0, 0], legacy=False,
         kind="FloatStorage")
@example(numel=-1, offset=0, size=[1], stride=[1], legacy=True, kind="FloatStorage")
@example(numel=4, offset=1 << 62, size=[2], stride=[1 << 62], legacy=False, kind="LongStorage")
def test_fuzz_tensor_geometry(numel, offset, size, stride, legacy, kind):
  pkl = pickled({"w": tensor("0", numel, size, stride, offset, kind)})
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "f.pth")
    data = b"\x01" * 64
    if legacy:
      import pathlib  # pylint: disable=g-import-not-at-top
      write_legacy(pathlib.Path(path), pkl, {"0": (numel, data)})
    else:
      write_zip(path, pkl, {"0": data})
    _load_bounded(path)


def _fixture_bytes(name: str) -> bytes:
  with open(os.path.join(FIXTURES, name), "rb") as f:
    return f.read()


@FUZZ
@given(pkl=st.binary(max_size=400), flips=st.lists(st.tuples(st.integers(0, 1 << 16),
                                                              st.integers(1, 255)),
                                                    max_size=8),
       base=st.sampled_from(["pickle", "legacy", "zip"]))
@example(pkl=nested_pairs(22), flips=[], base="pickle")
@example(pkl=SEEDS["ext1_opcode"][1], flips=[], base="pickle")
@example(pkl=crash_cases()["deep_lists"][1], flips=[], base="pickle")
@example(pkl=b"", flips=[(30, 1)], base="legacy")
def test_fuzz_file_bytes(pkl, flips, base):
  """Random pickles, and fixtures with random bytes changed (CRCs, headers, offsets)."""
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "f.pth")
    if base == "pickle":
      write_zip(path, pkl, {"0": FLOATS})
    else:
      data = bytearray(_fixture_bytes("latest_net_D_pixel_legacy.pth" if base == "legacy"
                                      else "latest_net_D.pth"))
      for at, xor in flips:
        data[at % len(data)] ^= xor
      with open(path, "wb") as f:
        f.write(bytes(data))
    _load_bounded(path)
