"""Stopping a training run cleanly when the machine is being taken away.

A scheduler (Slurm, Kubernetes, a cloud's spot/preemptible VMs) sends SIGTERM some seconds
before killing a job, and a person presses Ctrl-C (SIGINT). Either way the trainer should
save a checkpoint at the step it is at, wait until it is on disk, and exit, so that the same
command picks up where it left off. A second signal means "now": the process exits at once,
and the previous checkpoint stays intact because orbax only ever renames a finished
checkpoint into place.

On several hosts a local flag is not enough: every host must save at the same step, or the
collectives of the save deadlock. There, JAX's preemption sync manager (started by
`jax.distributed.initialize`) owns SIGTERM, and `reached_preemption_sync_point(step)` agrees
on a step across hosts.
"""

import os
import signal
import sys
import threading
import types
from typing import Callable, Iterable

from jax.experimental import multihost_utils

# Signals that ask for a clean stop on a single-process run.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):  # pylint: disable=g-bad-exception-name
  """Training stopped early on request, after a checkpoint at `step` was written."""

  def __init__(self, step: int, checkpoint_dir: str, signum: int | None):
    self.step, self.checkpoint_dir, self.signum = step, checkpoint_dir, signum
    why = signal.Signals(signum).name if signum else "a preemption notice"
    super().__init__(f"stopped on {why} after saving a checkpoint at step {step} in "
                     f"{checkpoint_dir}")

  @property
  def exit_code(self) -> int:
    """128 + the signal number, as a shell reports a process ended by that signal."""
    return 128 + (self.signum or signal.SIGTERM)


def distributed_sync_point(step: int) -> bool:
  """Whether all hosts of a `jax.distributed` run agreed to stop and save at `step`.

  False without `jax.distributed` or with the preemption service disabled.
  """
  try:
    return multihost_utils.reached_preemption_sync_point(step)
  except RuntimeError:  # jax_enable_preemption_service=False.
    return False


class StopRequest:
  """A flag set by SIGTERM/SIGINT (or the hosts' sync point) that the train loop polls.

  `install` before the loop and `uninstall` after it (or use it as a context manager), so
  nothing outlives the run. The first signal only sets
  the flag (the loop saves and stops at the end of its current step); a second one calls
  `exit_now`, which by default leaves without unwinding: no save is started or awaited.
  """

  def __init__(self, signals: Iterable[int] = STOP_SIGNALS,
               sync_point: Callable[[int], bool] = distributed_sync_point,
               exit_now: Callable[[int], None] = os._exit):  # pylint: disable=protected-access
    self._signals = tuple(signals)
    self._sync_point = sync_point
    self._exit_now = exit_now
    self._previous: dict[int, object] = {}
    self.signum: int | None = None

  def _handle(self, signum: int, frame: types.FrameType | None) -> None:
    del frame
    if self.signum is not None:
      sys.stderr.write(f"\n{signal.Signals(signum).name} again: exiting without waiting for "
                       "the checkpoint; the last complete one is kept.\n")
      sys.stderr.flush()
      self._exit_now(128 + signum)
      return
    self.signum = signum
    sys.stderr.write(f"\n{signal.Signals(signum).name} received: saving a checkpoint at the "
                     "end of this step, then exiting (send it again to exit at once).\n")
    sys.stderr.flush()

  def install(self) -> None:
    """Takes over the signals (from the main thread only: Python delivers them there)."""
    if threading.current_thread() is threading.main_thread():
      for s in self._signals:
        self._previous[s] = signal.signal(s, self._handle)

  def uninstall(self) -> None:
    """Gives the signals back to whatever handled them before `install`."""
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous.clear()

  def __enter__(self) -> "StopRequest":
    self.install()
    return self

  def __exit__(self, *exc_info) -> None:
    self.uninstall()

  def should_stop(self, step: int) -> bool:
    """Polled once per step by every host, with the step just completed."""
    return self._sync_point(step) or self.signum is not None


def for_this_run(process_count: int, distributed: bool) -> StopRequest:
  """The stop request that fits how the run was launched.

  Single process: SIGTERM and SIGINT are ours. Under `jax.distributed`, JAX's preemption
  notifier already listens to SIGTERM and a signal seen by one host alone must not stop it
  (the others would wait forever), so only the hosts' sync point counts; with one process,
  SIGINT is still ours.
  """
  if not distributed:
    return StopRequest()
  return StopRequest(signals=() if process_count > 1 else (signal.SIGINT,))
