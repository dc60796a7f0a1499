"""Reads PyTorch `.pth` files into numpy arrays without torch and without running their code.

A `.pth` file is a pickle whose tensors point at raw storages kept outside it. Two layouts:
- zip (torch >= 1.6): `<name>/data.pkl` plus one `<name>/data/<key>` file per storage;
- legacy (before 1.6): consecutive pickles (magic number, protocol version, sys info, the
  object, the storage keys), then for each key an int64 element count and the raw elements.
The object pickle may name only the tensor/storage rebuild functions a state dict needs; any
other callable (a malicious `os.system`, say) is refused before anything runs
(`safe_unpickle.UnsafePickleError`). Tensors are rebuilt here with numpy, from checked offsets.
"""

import collections
import dataclasses
import struct
import zipfile
from typing import Any

import ml_dtypes
import numpy as np

from pix2pix_jax.interop import safe_unpickle

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class PthFormatError(ValueError):
  """The file is not a `.pth` layout this reader knows, or its contents are inconsistent."""


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
  return _TensorRef(storage, int(storage_offset), tuple(int(s) for s in size),
                    tuple(int(s) for s in stride))


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
  storage_type, key, numel = pid[1], str(_decode(pid[2])), int(pid[4])
  if not isinstance(storage_type, _StorageType):
    raise PthFormatError(f"unknown storage type {storage_type!r:.100}")
  view = pid[5] if len(pid) == 6 else None
  if view is not None:
    view = (str(_decode(view[0])), int(view[1]), int(view[2]))
  return _Storage(storage_type.dtype, key, numel, view)


def _to_array(ref: _TensorRef) -> np.ndarray:
  """Copies the tensor out of its storage, after checking that it lies inside it."""
  data = ref.storage.data
  if data is None:
    raise PthFormatError(f"storage {ref.storage.key} was never read")
  if len(ref.size) != len(ref.stride) or any(s < 0 for s in ref.size + ref.stride):
    raise PthFormatError(f"bad tensor geometry size={ref.size} stride={ref.stride}")
  if 0 in ref.size:
    return np.zeros(ref.size, data.dtype)
  last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
  if ref.offset < 0 or last >= data.size:
    raise PthFormatError(f"tensor reaches element {last} of a {data.size}-element storage")
  strides = tuple(s * data.itemsize for s in ref.stride)
  return np.lib.stride_tricks.as_strided(data[ref.offset:], ref.size, strides).copy()


def _resolve(obj: Any) -> Any:
  """The unpickled object with every tensor reference replaced by its numpy array."""
  if isinstance(obj, _TensorRef):
    return _to_array(obj)
  if isinstance(obj, dict):
    return type(obj)((k, _resolve(v)) for k, v in obj.items())
  if isinstance(obj, (list, tuple)):
    return type(obj)(_resolve(v) for v in obj)
  return obj


def _load_zip(path: str, byteorder_little: bool = True) -> Any:
  with zipfile.ZipFile(path) as archive:
    names = archive.namelist()
    pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
      raise PthFormatError(f"{path}: expected one <name>/data.pkl in the zip, found {pickles}")
    prefix = pickles[0][:-len("data.pkl")]
    if prefix + "byteorder" in names:
      byteorder_little = archive.read(prefix + "byteorder").strip() == b"little"
    storages: dict[str, _Storage] = {}

    def persistent_load(pid: Any) -> _Storage:
      storage = _storage_from_id(pid)
      if storage.key not in storages:
        raw = archive.read(f"{prefix}data/{storage.key}")
        dtype = storage.dtype.newbyteorder("<" if byteorder_little else ">")
        if len(raw) < storage.numel * dtype.itemsize:
          raise PthFormatError(f"storage {storage.key} is shorter than its {storage.numel} "
                               "elements")
        storage.data = np.frombuffer(raw, dtype, storage.numel).astype(storage.dtype)
        storages[storage.key] = storage
      return storages[storage.key]

    obj = safe_unpickle.load(archive.read(pickles[0]), _allow_list(), path, persistent_load)
  return _resolve(obj)


def _load_legacy(path: str) -> Any:
  with open(path, "rb") as f:
    plain = lambda: safe_unpickle.load(f, {}, path)  # Header pickles hold plain values only.
    try:
      magic = plain()
    except safe_unpickle.UnsafePickleError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      raise PthFormatError(f"{path} is neither a zip nor a legacy torch file ({e})") from None
    if magic != LEGACY_MAGIC_NUMBER:
      raise PthFormatError(f"{path}: not a torch file (bad magic number; very old tar-based "
                           "files are not supported)")
    if plain() != LEGACY_PROTOCOL_VERSION:
      raise PthFormatError(f"{path}: unknown legacy protocol version")
    sys_info = plain()
    if not sys_info.get("little_endian", True):
      raise PthFormatError(f"{path} was written on a big-endian machine")
    storages: dict[str, _Storage] = {}

    def persistent_load(pid: Any) -> _Storage:
      storage = _storage_from_id(pid)
      return storages.setdefault(storage.key if storage.view is None else storage.view[0],
                                 storage)

    obj = safe_unpickle.load(f, _allow_list(), path, persistent_load)
    keys = [str(k) for k in plain()]
    roots: dict[str, np.ndarray] = {}
    for key in keys:
      (numel,) = struct.unpack("<q", f.read(8))
      dtype = next((s.dtype for s in storages.values() if s.key == key), None)
      if dtype is None:
        raise PthFormatError(f"{path}: storage {key} is not used by any tensor")
      raw = f.read(numel * dtype.itemsize)
      if len(raw) != numel * dtype.itemsize:
        raise PthFormatError(f"{path} is truncated (storage {key})")
      roots[key] = np.frombuffer(raw, dtype.newbyteorder("<")).astype(dtype)
  for storage in storages.values():
    root = roots.get(storage.key)
    if root is None:
      raise PthFormatError(f"{path}: no data for storage {storage.key}")
    if storage.view is not None:
      _, offset, size = storage.view
      if offset < 0 or offset + size > root.size:
        raise PthFormatError(f"{path}: storage view outside storage {storage.key}")
      root = root[offset:offset + size]
    storage.data = root
  return _resolve(obj)


def load(path: str) -> Any:
  """The object saved in `path` (typically a state dict), tensors as numpy arrays."""
  if zipfile.is_zipfile(path):
    return _load_zip(path)
  return _load_legacy(path)


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """A `.pth` holding a state dict -> {name: array}, in the file's order."""
  obj = load(path)
  if not isinstance(obj, dict) or not all(isinstance(v, np.ndarray) for v in obj.values()):
    raise PthFormatError(f"{path} does not hold a state dict of tensors")
  return dict(obj)
