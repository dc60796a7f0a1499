"""Recognising a damaged checkpoint: one sentence that says which and why.

A complete checkpoint can still be damaged later (a disk error, a file truncated by a copy,
a deleted file); orbax and TensorStore then fail with long tracebacks, or with errors that
look like a config mismatch. `reading` turns those into CheckpointDamagedError; training
moves the checkpoint aside (`move_aside`) and resumes from the newest intact one.
"""

import contextlib
import gc
import json
import logging
import os
import re
import sys
from typing import Any, Iterator

# Files every complete checkpoint has; one missing means the checkpoint was damaged since.
REQUIRED_FILES = ("state/_METADATA", "state/manifest.ocdbt", "config/metadata")
DAMAGED_SUFFIX = ".damaged"


class CheckpointDamagedError(ValueError):
  """A checkpoint whose files are missing, truncated or corrupt; says which and why."""

  def __init__(self, step_dir: str, reason: str, hint: str = ""):
    self.step_dir, self.reason = step_dir, reason
    self.step = os.path.basename(step_dir)
    super().__init__(f"checkpoint {self.step} ({step_dir}) is damaged: {reason}"
                     + (f"; {hint}" if hint else ""))


def check_intact(step_dir: str) -> None:
  """Raises CheckpointDamagedError if a file every checkpoint has is missing or unreadable.

  Cheap (no array is read); catches what the loaders would misreport, e.g. a deleted
  state/_METADATA, which otherwise reads as arrays of other shapes than the config's.
  """
  for name in REQUIRED_FILES:
    path = os.path.join(step_dir, name)
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
      raise CheckpointDamagedError(step_dir, f"{name} is missing or empty")
  for name in ("state/_METADATA", "config/metadata"):
    try:
      with open(os.path.join(step_dir, name), "rb") as f:
        json.loads(f.read())
    except (OSError, ValueError) as e:
      raise CheckpointDamagedError(step_dir, f"{name} is not readable JSON ({e})") from None


def damage_reason(error: BaseException) -> str | None:
  """What an orbax/TensorStore error says is wrong with the files; None if it is not that."""
  seen: list[BaseException] = []
  e: BaseException | None = error
  while e is not None and len(seen) < 8:
    seen.append(e)
    e = e.__cause__ or e.__context__
  for e in seen:
    message = str(e)
    array = re.search(r'Error reading "([^"/]+)', message)
    where = f" (array {array.group(1)})" if array else ""
    if "OUT_OF_RANGE" in message or "byte range" in message or "truncated" in message.lower():
      return f"an array file is truncated{where}"
    if "DATA_LOSS" in message or "corrupt" in message.lower() or "checksum" in message:
      return f"an array file is corrupt{where}"
    if isinstance(e, FileNotFoundError) or "NOT_FOUND" in message:
      return f"a file is missing{where}: {message.splitlines()[0][:200]}"
    if isinstance(e, json.JSONDecodeError):
      return f"a metadata file is not valid JSON ({e})"
    status = re.search(r"\b([A-Z_]{5,}): Error (reading|opening)", message)
    if status:  # TensorStore's other statuses on a file it could not read.
      return f"an array file cannot be read ({status.group(1)}){where}"
  return None


@contextlib.contextmanager
def reading(step_dir: str) -> Iterator[None]:
  """Errors that say `step_dir`'s files are damaged become one CheckpointDamagedError.

  The filters for the other failed reads go in first: orbax's background reads can fail,
  and print, before the first failure reaches this frame.
  """
  _drop_failed_reads()
  reason = None
  try:
    yield
  except CheckpointDamagedError:
    raise
  except Exception as e:  # pylint: disable=broad-except  # TensorStore raises bare Exception.
    reason = damage_reason(e)
    if reason is None:
      raise
  if reason is not None:
    _drop_failed_reads()
    raise CheckpointDamagedError(step_dir, reason)


class _FailedReadFilter(logging.Filter):
  """Drops asyncio's "Future exception was never retrieved" for a damaged checkpoint's reads."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not (record.exc_info and damage_reason(record.exc_info[1]) is not None)


def _drop_failed_reads() -> None:
  """Silences the other reads of a damaged checkpoint that failed too.

  Orbax awaits the first failed read and leaves the others; when they are collected (now, or
  at exit) each would print a traceback through asyncio's logger or sys.unraisablehook. Only
  those are dropped, from the first checkpoint read on, for the rest of the process.
  """
  logger = logging.getLogger("asyncio")
  if not any(isinstance(f, _FailedReadFilter) for f in logger.filters):
    logger.addFilter(_FailedReadFilter())
  previous = sys.unraisablehook
  if not getattr(previous, "drops_failed_reads", False):
    # Self-contained (bound defaults, no module globals): it may run at interpreter exit.
    def hook(unraisable: Any, previous: Any = previous, reason: Any = damage_reason,
             marks: tuple[str, ...] = ("Encountered error while reading array",
                                       "Event loop is closed")) -> None:
      error = unraisable.exc_value  # The read's error, or its loop's, closed before it ended.
      try:
        ours = any(m in str(error) for m in marks) or reason(error) is not None
      except Exception:  # pylint: disable=broad-except
        ours = False
      if not ours:
        previous(unraisable)
    hook.drops_failed_reads = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook
  gc.collect()


def move_aside(step_dir: str) -> str:
  """Renames a damaged checkpoint `<step>.damaged` (kept for a look, never read again)."""
  target, n = step_dir + DAMAGED_SUFFIX, 1
  while os.path.exists(target):
    target, n = f"{step_dir}{DAMAGED_SUFFIX}-{n}", n + 1
  os.rename(step_dir, target)
  return target
