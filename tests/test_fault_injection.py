"""Acceptance: `train.py` killed at random moments, and rerun, ends bit for bit where an
uninterrupted run ends.

SIGKILL gives no chance to clean up, so whatever it leaves (a half-written checkpoint, a
half-deleted old one) must be survivable; it is sent at random steps and in the middle of
checkpoint saves (a save every step, only one checkpoint kept, so a new save that deleted
the old checkpoint early would leave nothing to resume from). SIGTERM must save at the step
it arrives and say how to resume; a second SIGTERM must exit at once and still leave a
usable workdir.
"""

import os
import random
import re
import signal
import socket
import time

import pytest
import reliability_helpers as rh

from pix2pix_jax.train import preemption
from pix2pix_jax.train import trainer

TMP = ".orbax-checkpoint-tmp"  # orbax's name for a checkpoint still being written.
SEED = int(os.environ.get("FAULT_INJECTION_SEED", "0"))  # Other seeds, other kill points.


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  return rh.cache_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def reference(synthetic_config, tmp_path_factory, cache):
  """The final checkpoint of an uninterrupted run (in-process: the same code, no restarts)."""
  config = rh.tiny_config(synthetic_config)
  workdir = str(tmp_path_factory.mktemp("uninterrupted"))
  with rh.persistent_compilation_cache(cache):
    trainer.train_and_evaluate(config, workdir)
  return rh.restore_raw(workdir)


def test_stop_request_first_signal_asks_second_exits_and_handlers_come_back():
  """In-process, real signals: SIGINT sets the flag, the second calls exit_now(130)."""
  exits = []
  before = signal.getsignal(signal.SIGINT)
  with preemption.StopRequest(sync_point=lambda step: False, exit_now=exits.append) as stop:
    assert not stop.should_stop(1)
    os.kill(os.getpid(), signal.SIGINT)
    assert stop.should_stop(2) and stop.signum == signal.SIGINT and not exits
    os.kill(os.getpid(), signal.SIGINT)
    assert exits == [128 + signal.SIGINT]
  assert signal.getsignal(signal.SIGINT) is before
  assert preemption.Preempted(7, "ckpt", signal.SIGINT).exit_code == 130
  assert preemption.Preempted(7, "ckpt", None).exit_code == 143  # The hosts' sync point.


def saving(workdir: str, after: int) -> list[str]:
  return [e for e in rh.checkpoint_entries(workdir)
          if TMP in e and int(e.split(".")[0]) > after]


def finished(workdir: str) -> list[int]:
  return sorted(int(e) for e in rh.checkpoint_entries(workdir) if e.isdigit())


def test_sigkill_at_random_moments_and_mid_save_then_resume_is_bitwise_exact(
    synthetic_config, tmp_path, cache, reference):
  rng = random.Random(SEED)
  workdir = str(tmp_path / "workdir")
  command = rh.train_command(workdir, synthetic_config, {
      "checkpoint_every_steps": 1, "keep_checkpoints": 1, "log_every_steps": 1})
  steps = rh.TINY["num_train_steps"]
  kills = ["step", "save", "save"]
  for run, kind in enumerate(kills):
    start = max(finished(workdir), default=0)
    # Saves the last kill interrupted are still lying there: wait for a later one.
    leftover = max((int(e.split(".")[0]) for e in saving(workdir, -1)), default=0)
    log = str(tmp_path / f"run{run}.log")
    process = rh.start(command, cache, log)
    if kind == "step":  # A random step, at a random moment within it.
      target = start + rng.randint(1, 3)
      reached = rh.wait_for(process, lambda: max(finished(workdir), default=0) >= target)
      time.sleep(rng.uniform(0.0, 0.05))
    else:  # While a checkpoint is being written, at a random moment of the write.
      target = max(start, leftover) + rng.randint(0, 2)
      reached = rh.wait_for(process, lambda: bool(saving(workdir, target)))
      time.sleep(rng.uniform(0.0, 0.005) if run > 1 else 0.0)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert reached, f"run {run} ended before the kill point:\n{rh.read(log)[-3000:]}"
    if run:
      assert f"Resumed from step {start}" in rh.read(log)
    kept = finished(workdir)
    assert kept, f"no complete checkpoint left after kill {run}: {rh.checkpoint_entries(workdir)}"
    in_progress = [e for e in rh.checkpoint_entries(workdir) if TMP in e]
    if kind == "save" and run == 1:  # Killed the instant the save began: it is unfinished.
      assert in_progress, rh.checkpoint_entries(workdir)
    # What orbax offers for a resume is only ever the complete ones, and they restore.
    assert rh.complete_steps(workdir) == kept and max(kept) >= start
    assert all(int(e.split(".")[0]) > max(kept) for e in in_progress)
    assert int(rh.restore_raw(workdir)["step"]) == max(kept)

  final = rh.run(command, cache)
  assert final.returncode == 0, final.stderr[-3000:]
  assert f"Resumed from step {max(kept)}" in final.stdout
  assert rh.complete_steps(workdir) == [steps]
  assert not [e for e in rh.checkpoint_entries(workdir) if TMP in e]  # Leftovers cleaned.
  rh.assert_trees_bitwise_equal(rh.restore_raw(workdir), reference)


def test_sigterm_saves_at_that_step_and_a_second_one_exits_at_once(
    synthetic_config, tmp_path, cache, reference):
  workdir = str(tmp_path / "workdir")
  # No periodic checkpoints: the only ones are those the signals cause (and the last).
  command = rh.train_command(workdir, synthetic_config, {
      "checkpoint_every_steps": 1000, "log_every_steps": 1})
  metrics = os.path.join(workdir, "metrics.jsonl")

  def logged() -> int:
    return len(rh.read(metrics).splitlines()) if os.path.exists(metrics) else 0

  # One SIGTERM: finish the step, save it, say how to resume, exit 128 + 15.
  log = str(tmp_path / "term.log")
  process = rh.start(command, cache, log)
  assert rh.wait_for(process, lambda: logged() >= 2), rh.read(log)[-3000:]
  process.send_signal(signal.SIGTERM)
  assert process.wait(timeout=120) == 128 + signal.SIGTERM, rh.read(log)[-3000:]
  out = rh.read(log)
  match = re.search(r"stopped on SIGTERM after saving a checkpoint at step (\d+) in (\S+)\. "
                    r"To resume, run the same command again:\n  (.*)\n", out)
  assert match, out[-3000:]
  stopped_at = int(match.group(1))
  assert 2 <= stopped_at < rh.TINY["num_train_steps"]
  assert rh.complete_steps(workdir) == [stopped_at]
  assert match.group(3).endswith(" ".join(command[1:]))
  assert int(rh.restore_raw(workdir)["step"]) == stopped_at

  # Resume, then SIGTERM twice: the second exits without waiting for the save.
  log = str(tmp_path / "term_twice.log")
  process = rh.start(command, cache, log)
  assert rh.wait_for(process, lambda: logged() >= stopped_at + 2), rh.read(log)[-3000:]
  process.send_signal(signal.SIGTERM)
  assert rh.wait_for(process, lambda: "SIGTERM received" in rh.read(log))
  process.send_signal(signal.SIGTERM)
  assert process.wait(timeout=120) == 128 + signal.SIGTERM
  out = rh.read(log)
  assert f"Resumed from step {stopped_at}" in out
  assert "SIGTERM again: exiting without waiting for the checkpoint" in out, out[-3000:]
  kept = rh.complete_steps(workdir)
  assert kept and kept[0] == stopped_at  # The old one survives; a new one, if it finished.
  assert int(rh.restore_raw(workdir)["step"]) == max(kept)

  final = rh.run(command, cache)
  assert final.returncode == 0, final.stderr[-3000:]
  assert f"Resumed from step {max(kept)}" in final.stdout
  rh.assert_trees_bitwise_equal(rh.restore_raw(workdir), reference)


@pytest.mark.slow
def test_sigterm_on_one_host_makes_every_host_save_the_same_step(synthetic_config, tmp_path,
                                                                cache):
  """Two processes under jax.distributed; only process 1 gets SIGTERM (JAX's sync point)."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  workdir = str(tmp_path / "workdir")
  command = rh.train_command(workdir, synthetic_config, {
      "checkpoint_every_steps": 1000, "log_every_steps": 1, "num_train_steps": 400})
  command += ["--coordinator_address", f"127.0.0.1:{port}", "--num_processes", "2"]
  processes = [rh.start(command + ["--process_id", str(i)], cache, str(tmp_path / f"p{i}"),
                        JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo")
               for i in range(2)]
  metrics = os.path.join(workdir, "metrics.jsonl")
  assert rh.wait_for(processes[0], lambda: os.path.exists(metrics) and len(
      rh.read(metrics).splitlines()) >= 3, timeout=400), rh.read(str(tmp_path / "p0"))[-3000:]
  processes[1].send_signal(signal.SIGTERM)
  codes = [p.wait(timeout=120) for p in processes]
  logs = [rh.read(str(tmp_path / f"p{i}")) for i in range(2)]
  assert codes == [128 + signal.SIGTERM] * 2, logs[1][-3000:]
  steps = [re.search(r"stopped on a preemption notice after saving a checkpoint at step (\d+)",
                     log).group(1) for log in logs]
  assert steps[0] == steps[1]
  assert rh.complete_steps(workdir) == [int(steps[0])]
