"""Reads PyTorch `.pth` files into numpy arrays without torch and without running their code.

A `.pth` file is a pickle whose tensors point at raw storages kept outside it. Two layouts:
- zip (torch >= 1.6): `<name>/data.pkl` plus one `<name>/data/<key>` file per storage;
- legacy (before 1.6): consecutive pickles (magic number, protocol version, sys info, the
  object, the storage keys), then for each key an int64 element count and the raw elements.
The object pickle may name only the tensor/storage rebuild functions a state dict needs; any
other callable (a malicious `os.system`, say) is refused before anything runs
(`safe_unpickle.UnsafePickleError`). Tensors are rebuilt here with numpy, from checked offsets.

No code runs, but a hostile file can still ask for memory and time: a small zip member that
inflates to gigabytes, a tensor of 2**40 elements over a one-element storage (stride 0), or a
pickle whose objects share each other level after level. So every size is checked before
anything is read or expanded (zip members against their storages, tensors against theirs),
objects the pickle shares stay shared, and a file may expand to MAX_TOTAL_BYTES at most.
Anything malformed is a PthFormatError naming the file, never a bare traceback.
"""

import collections
import dataclasses
import io
import math
import os
import struct
import zipfile
from typing import Any

import ml_dtypes
import numpy as np

from pix2pix_jax.interop import safe_unpickle

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001
# The largest official pix2pix network (unet_256, ngf 64) holds 218 MB of float32 weights;
# storages plus the tensors copied out of them may take a few times that, no more.
MAX_TOTAL_BYTES = 1 << 30
MAX_PICKLE_BYTES = 16 << 20  # The pickle of a state dict is kilobytes; its tensors live apart.
MAX_DEPTH = 64  # A state dict nests two or three levels.
_CHUNK = 1 << 20

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class PthFormatError(ValueError):
  """The file is not a `.pth` layout this reader knows, or its contents are inconsistent."""


@dataclasses.dataclass
class _Budget:
  """The bytes one file has expanded to so far (storages read, tensors copied)."""

  limit: int
  used: int = 0

  def take(self, nbytes: int, what: str) -> None:
    if nbytes < 0:
      raise PthFormatError(f"{what} has a negative size")
    self.used += nbytes
    if self.used > self.limit:
      raise PthFormatError(f"{what} would make the file expand past {self.limit} bytes, more "
                           "than any pix2pix checkpoint needs")


@dataclasses.dataclass(frozen=True)
class _StorageType:
  name: str

  @property
  def dtype(self) -> np.dtype:
    return np.dtype(_STORAGE_DTYPES[self.name])


@dataclasses.dataclass
class _Storage:
  """A storage a tensor refers to; its elements are attached once read."""

  dtype: np.dtype
  key: str
  numel: int
  view: tuple[str, int, int] | None = None  # Legacy views: (view key, offset, size).
  data: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class _TensorRef:
  storage: _Storage
  offset: int
  size: tuple[int, ...]
  stride: tuple[int, ...]


def _rebuild_tensor(storage, storage_offset, size, stride, *unused_args) -> _TensorRef:
  if not isinstance(storage, _Storage):
    raise PthFormatError("a tensor refers to something that is not a storage")
  if not isinstance(size, (tuple, list)) or not isinstance(stride, (tuple, list)):
    raise PthFormatError("a tensor's size or stride is not a tuple")
  if len(size) > MAX_DEPTH:
    raise PthFormatError(f"a tensor has {len(size)} dimensions")
  return _TensorRef(storage, _int(storage_offset), tuple(_int(s) for s in size),
                    tuple(_int(s) for s in stride))


def _int(x: Any) -> int:
  """An integer field of the pickle (bool and float are not integers here)."""
  if isinstance(x, bool) or not isinstance(x, int):
    raise PthFormatError(f"expected an integer, found {type(x).__name__}")
  return x


def _rebuild_parameter(data, *unused_args) -> Any:
  return data


def _allow_list() -> safe_unpickle.Allowed:
  allowed: dict[tuple[str, str], Any] = {
      ("collections", "OrderedDict"): collections.OrderedDict,
      ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
      ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
      ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
  }
  for name in _STORAGE_DTYPES:
    allowed[("torch", name)] = _StorageType(name)
  return allowed


def _decode(x: Any) -> Any:
  return x.decode("ascii") if isinstance(x, bytes) else x


def _storage_from_id(pid: Any) -> _Storage:
  """The persistent id ('storage', type, key, location, numel[, view]) -> a _Storage."""
  if not isinstance(pid, tuple) or len(pid) not in (5, 6) or _decode(pid[0]) != "storage":
    raise PthFormatError(f"unexpected persistent id {pid!r:.100}")
  storage_type, key, numel = pid[1], str(_decode(pid[2])), _int(pid[4])
  if not isinstance(storage_type, _StorageType):
    raise PthFormatError(f"unknown storage type {storage_type!r:.100}")
  if numel < 0:
    raise PthFormatError(f"storage {key:.100} has a negative element count {numel}")
  view = pid[5] if len(pid) == 6 else None
  if view is not None:
    if not isinstance(view, tuple) or len(view) != 3:
      raise PthFormatError(f"storage {key:.100} has a malformed view")
    view = (str(_decode(view[0])), _int(view[1]), _int(view[2]))
    if view[1] < 0 or view[2] < 0:
      raise PthFormatError(f"storage {key:.100} has a view of negative offset or size")
  return _Storage(storage_type.dtype, key, numel, view)


def _to_array(ref: _TensorRef, budget: _Budget) -> np.ndarray:
  """Copies the tensor out of its storage, after checking that it lies inside it.

  A tensor never has more elements than its storage: overlapping strides (0, say) would let
  a few bytes declare terabytes.
  """
  data = ref.storage.data
  if data is None:
    raise PthFormatError(f"storage {ref.storage.key} was never read")
  if len(ref.size) != len(ref.stride) or any(s < 0 for s in ref.size + ref.stride):
    raise PthFormatError(f"bad tensor geometry size={ref.size} stride={ref.stride}")
  numel = math.prod(ref.size)
  if numel > data.size:
    raise PthFormatError(f"a tensor of size {ref.size} has more elements than its "
                         f"{data.size}-element storage {ref.storage.key}")
  if numel == 0:
    return np.zeros(ref.size, data.dtype)
  last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
  if ref.offset < 0 or last >= data.size:
    raise PthFormatError(f"tensor reaches element {last} of a {data.size}-element storage")
  budget.take(numel * data.itemsize, f"tensor of size {ref.size}")
  strides = tuple(s * data.itemsize for s in ref.stride)
  return np.lib.stride_tricks.as_strided(data[ref.offset:], ref.size, strides).copy()


def _resolve(obj: Any, budget: _Budget, memo: dict[int, Any], depth: int = 0) -> Any:
  """The unpickled object with every tensor reference replaced by its numpy array.

  Memoised by id: what the pickle shares (the same tuple twice, level after level) is
  resolved once and stays shared, and a list that contains itself ends.
  """
  if id(obj) in memo:
    return memo[id(obj)]
  if depth > MAX_DEPTH:
    raise PthFormatError(f"objects nested deeper than {MAX_DEPTH} levels")
  if isinstance(obj, _TensorRef):
    out = _to_array(obj, budget)
  elif isinstance(obj, dict):
    out = memo[id(obj)] = type(obj)()
    for k, v in obj.items():
      out[k] = _resolve(v, budget, memo, depth + 1)
  elif isinstance(obj, list):
    out = memo[id(obj)] = []
    out.extend(_resolve(v, budget, memo, depth + 1) for v in obj)
  elif isinstance(obj, tuple):
    out = tuple(_resolve(v, budget, memo, depth + 1) for v in obj)
  else:
    return obj
  memo[id(obj)] = out
  return out


def _read_into(file: io.BufferedIOBase, out: np.ndarray, what: str) -> np.ndarray:
  """Fills `out` from `file` in chunks: no second copy of a storage is ever held."""
  view = memoryview(out.view(np.uint8).reshape(-1))
  pos = 0
  while pos < len(view):
    chunk = file.read(min(_CHUNK, len(view) - pos))
    if not chunk:
      raise PthFormatError(f"{what} is truncated")
    view[pos:pos + len(chunk)] = chunk
    pos += len(chunk)
  return out


def _load_pickle(data: bytes | io.BufferedIOBase, path: str, persistent_load) -> Any:
  """safe_unpickle.load, with anything a malformed pickle raises said as a PthFormatError."""
  try:
    return safe_unpickle.load(data, _allow_list(), path, persistent_load)
  except (safe_unpickle.UnsafePickleError, PthFormatError, zipfile.BadZipFile, MemoryError,
          RecursionError):
    raise  # Said by `load`; storages are read (and CRC-checked) while unpickling.
  except Exception as e:  # pylint: disable=broad-except  # Malformed pickles raise any kind.
    raise PthFormatError(f"malformed pickle ({type(e).__name__}: {str(e):.200})") from None


def _load_zip(path: str, budget: _Budget) -> Any:
  with zipfile.ZipFile(path) as archive:
    members = {info.filename: info for info in archive.infolist()}
    pickles = [n for n in members if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
      raise PthFormatError(f"expected one <name>/data.pkl in the zip, found {pickles[:5]}")
    prefix = pickles[0][:-len("data.pkl")]
    byteorder_little = True
    if prefix + "byteorder" in members:
      if members[prefix + "byteorder"].file_size > 16:
        raise PthFormatError("its byteorder record is not 'little' or 'big'")
      byteorder_little = archive.read(prefix + "byteorder").strip() == b"little"
    storages: dict[str, _Storage] = {}

    def persistent_load(pid: Any) -> _Storage:
      storage = _storage_from_id(pid)
      if storage.key not in storages:
        info = members.get(f"{prefix}data/{storage.key}")
        if info is None:
          raise PthFormatError(f"storage {storage.key!r:.100} is not in the zip")
        nbytes = storage.numel * storage.dtype.itemsize
        if info.file_size != nbytes:  # Checked before inflating anything.
          raise PthFormatError(f"storage {storage.key} holds {info.file_size} bytes, not the "
                               f"{nbytes} of its {storage.numel} elements")
        budget.take(nbytes, f"storage {storage.key}")
        with archive.open(info) as f:
          data = _read_into(f, np.empty(storage.numel, storage.dtype), f"storage {storage.key}")
        if byteorder_little != np.little_endian:
          data.byteswap(inplace=True)
        storage.data = data
        storages[storage.key] = storage
      return storages[storage.key]

    info = members[pickles[0]]
    if info.file_size > MAX_PICKLE_BYTES:
      raise PthFormatError(f"its pickle is {info.file_size} bytes, more than a state dict's")
    obj = _load_pickle(archive.read(info), path, persistent_load)
  return _resolve(obj, budget, {})


def _load_legacy(path: str, budget: _Budget) -> Any:
  # Legacy storages are stored raw: the file's size bounds what it expands to.
  size = os.path.getsize(path)
  budget.take(size, "the file")
  with open(path, "rb") as raw:
    f = io.BytesIO(raw.read())
  plain = lambda: safe_unpickle.load(f, {}, path)  # Header pickles hold plain values only.
  try:
    magic = plain()
  except safe_unpickle.UnsafePickleError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise PthFormatError(f"neither a zip nor a legacy torch file ({type(e).__name__})"
                         ) from None
  if magic != LEGACY_MAGIC_NUMBER:
    raise PthFormatError("not a torch file (bad magic number; very old tar-based files are "
                         "not supported)")
  header = lambda what: _load_header(plain, what)
  if header("protocol version") != LEGACY_PROTOCOL_VERSION:
    raise PthFormatError("unknown legacy protocol version")
  sys_info = header("system info")
  if not isinstance(sys_info, dict):
    raise PthFormatError("its legacy header's system info is not a dict")
  if not sys_info.get("little_endian", True):
    raise PthFormatError("written on a big-endian machine")
  storages: dict[str, _Storage] = {}

  def persistent_load(pid: Any) -> _Storage:
    storage = _storage_from_id(pid)
    return storages.setdefault(storage.key if storage.view is None else storage.view[0],
                               storage)

  obj = _load_pickle(f, path, persistent_load)
  keys = header("storage keys")
  if not isinstance(keys, (list, tuple)):
    raise PthFormatError("its storage keys are not a list")
  roots: dict[str, np.ndarray] = {}
  for key in map(str, keys):
    numel_bytes = f.read(8)
    if len(numel_bytes) != 8:
      raise PthFormatError(f"truncated (storage {key:.100})")
    (numel,) = struct.unpack("<q", numel_bytes)
    dtype = next((s.dtype for s in storages.values() if s.key == key), None)
    if dtype is None:
      raise PthFormatError(f"storage {key:.100} is not used by any tensor")
    if numel < 0:
      raise PthFormatError(f"storage {key:.100} has a negative element count {numel}")
    if numel * dtype.itemsize > size - f.tell():
      raise PthFormatError(f"truncated (storage {key:.100} needs {numel * dtype.itemsize} "
                           "bytes)")
    roots[key] = _read_into(f, np.empty(numel, dtype), f"storage {key:.100}")
  for storage in storages.values():
    root = roots.get(storage.key)
    if root is None:
      raise PthFormatError(f"no data for storage {storage.key:.100}")
    if storage.view is not None:
      _, offset, view_size = storage.view
      if offset + view_size > root.size:
        raise PthFormatError(f"storage view outside storage {storage.key:.100}")
      root = root[offset:offset + view_size]
    storage.data = root
  return _resolve(obj, budget, {})


def _load_header(plain, what: str) -> Any:
  try:
    return plain()
  except safe_unpickle.UnsafePickleError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise PthFormatError(f"truncated or malformed legacy header ({what}: "
                         f"{type(e).__name__})") from None


def load(path: str, max_bytes: int | None = None) -> Any:
  """The object saved in `path` (typically a state dict), tensors as numpy arrays.

  Raises PthFormatError ("<path>: what is wrong") for anything malformed or too large
  (more than `max_bytes`, default MAX_TOTAL_BYTES, once expanded); OSError if unreadable.
  """
  budget = _Budget(MAX_TOTAL_BYTES if max_bytes is None else max_bytes)
  try:
    if zipfile.is_zipfile(path):
      return _load_zip(path, budget)
    return _load_legacy(path, budget)
  except safe_unpickle.UnsafePickleError:
    raise
  except PthFormatError as e:
    raise PthFormatError(f"{path}: {e}") from None
  except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as e:
    raise PthFormatError(f"{path}: damaged zip archive ({e})") from None
  except MemoryError:
    raise PthFormatError(f"{path}: ran out of memory reading it") from None
  except RecursionError:
    raise PthFormatError(f"{path}: objects nested too deeply") from None
  except OSError as e:
    if e.filename is None and not isinstance(e, (FileNotFoundError, PermissionError)):
      raise PthFormatError(f"{path}: damaged file ({e})") from None  # zlib's, say.
    raise
  except Exception as e:  # pylint: disable=broad-except  # zlib.error, bad numbers, ...
    raise PthFormatError(f"{path}: malformed ({type(e).__name__}: {str(e):.200})") from None


def load_state_dict(path: str, max_bytes: int | None = None) -> dict[str, np.ndarray]:
  """A `.pth` holding a state dict -> {name: array}, in the file's order."""
  obj = load(path, max_bytes)
  if not isinstance(obj, dict) or not all(isinstance(v, np.ndarray) for v in obj.values()):
    raise PthFormatError(f"{path}: does not hold a state dict of tensors")
  return dict(obj)
