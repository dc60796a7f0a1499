"""Unpickling with an allow-list: data files from the internet must not run code when read.

A pickle names the callables that rebuild its objects (GLOBAL/STACK_GLOBAL opcodes); the
standard unpickler imports and calls whatever is named, which is how a malicious weights file
runs `os.system`. `load` resolves only the (module, name) pairs its caller allows and refuses
the first other one before anything from the file has been called.
"""

import io
import pickle
from typing import Any, Callable, Mapping

Allowed = Mapping[tuple[str, str], Any]


class UnsafePickleError(pickle.UnpicklingError):
  """The file asks for a callable outside the allow-list; nothing it names was run."""


class _RestrictedUnpickler(pickle.Unpickler):

  def __init__(self, file: io.BufferedIOBase, allowed: Allowed, what: str,
               persistent_load: Callable[[Any], Any] | None):
    super().__init__(file)
    self._allowed = allowed
    self._what = what
    if persistent_load is not None:
      self.persistent_load = persistent_load  # type: ignore[method-assign]

  def find_class(self, module: str, name: str) -> Any:
    try:
      return self._allowed[(module, name)]
    except KeyError:
      raise UnsafePickleError(
          f"refusing to load {self._what}: its pickle asks for `{module}.{name}`, which is not "
          "one of the tensor/array rebuild functions such files need; loading it could run "
          "arbitrary code. Only load files from sources you trust with their own tools."
      ) from None


def load(data: bytes | io.BufferedIOBase, allowed: Allowed, what: str = "the file",
         persistent_load: Callable[[Any], Any] | None = None) -> Any:
  """One pickled object from `data`, building only objects whose constructors are allowed."""
  file = io.BytesIO(data) if isinstance(data, bytes) else data
  return _RestrictedUnpickler(file, allowed, what, persistent_load).load()
