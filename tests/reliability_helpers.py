"""What the reliability tests share: a tiny config, train.py as a subprocess, bitwise checks.

Compiling dominates these tests on a CPU, so every run (in-process or `train.py`) goes
through one persistent compilation cache per pytest session: the network is compiled once
and later runs, including restarts after a kill, load it.
"""

import contextlib
import os
import subprocess
import sys
import time
from typing import Any, Callable, Iterator

import jax
from jax.experimental.compilation_cache import compilation_cache
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from pix2pix_jax.train import checkpoints

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# 64 px and 6 levels: the smallest U-Net with a dropout layer, so resumes must also repeat
# the dropout masks. 4 filters keep a step to milliseconds. The learning rate decays from
# step 0 (n_epochs 0), so every step has its own. Tests change only fields that leave the
# compiled step alone (logging, checkpoints, nan_policy), so all of them share one compile.
TINY = {"data.crop_size": 64, "data.load_size": 72, "model.ngf": 4, "model.ndf": 4,
        "model.num_downs": 6, "model.n_layers_d": 2, "batch_size": 2,
        "num_train_steps": 16, "n_epochs": 0, "n_epochs_decay": 1,
        "num_sample_pairs": 2, "sample_every_steps": 1000, "data.num_workers": 1}


def tiny_config(base: ml_collections.ConfigDict, **overrides: Any) -> ml_collections.ConfigDict:
  """`base` (the synthetic config fixture) with TINY and `overrides` ("a.b" or a__b keys)."""
  c = base.copy_and_resolve_references()
  for key, value in {**TINY, **{k.replace("__", "."): v for k, v in overrides.items()}}.items():
    node = c
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


def cache_dir(tmp_path_factory) -> str:
  """One compilation cache folder for the whole pytest session."""
  path = tmp_path_factory.getbasetemp() / "jax_compilation_cache"
  path.mkdir(exist_ok=True)
  return str(path)


_CACHE_OPTIONS = {"jax_persistent_cache_min_compile_time_secs": 0.0,
                  "jax_persistent_cache_min_entry_size_bytes": 0}


@contextlib.contextmanager
def persistent_compilation_cache(path: str) -> Iterator[None]:
  """In-process runs share the subprocesses' cache; the previous settings come back after."""
  before = {name: getattr(jax.config, name)
            for name in ("jax_compilation_cache_dir", *_CACHE_OPTIONS)}
  jax.config.update("jax_compilation_cache_dir", path)
  for name, value in _CACHE_OPTIONS.items():
    jax.config.update(name, value)
  compilation_cache.reset_cache()
  try:
    yield
  finally:
    for name, value in before.items():
      jax.config.update(name, value)
    compilation_cache.reset_cache()


def env(compilation_cache_dir: str, **extra: str) -> dict[str, str]:
  e = dict(os.environ, **extra, TF_CPP_MIN_LOG_LEVEL="3",
           JAX_COMPILATION_CACHE_DIR=compilation_cache_dir, PYTHONUNBUFFERED="1")
  e.update({k.upper(): str(v) for k, v in _CACHE_OPTIONS.items()})
  return e


def train_command(workdir: str, config: ml_collections.ConfigDict, fields: dict[str, Any]
                  ) -> list[str]:
  """`python train.py` with --config.<field> flags for each of TINY, `fields` and data_dir."""
  values = {**TINY, **fields, "data.data_dir": config.data.data_dir}
  return [sys.executable, os.path.join(ROOT, "train.py"), "--workdir", workdir,
          *(f"--config.{k}={v}" for k, v in values.items())]


def run(command: list[str], compilation_cache_dir: str, timeout: float = 240,
        **kwargs: Any) -> subprocess.CompletedProcess:
  return subprocess.run(command, env=env(compilation_cache_dir), cwd=ROOT, text=True,
                        capture_output=True, timeout=timeout, check=False, **kwargs)


def start(command: list[str], compilation_cache_dir: str, log_path: str,
          **extra_env: str) -> subprocess.Popen:
  """train.py in the background, stdout and stderr into `log_path` (read it while it runs)."""
  with open(log_path, "w") as log:  # The child keeps its own copy of the descriptor.
    return subprocess.Popen(command, env=env(compilation_cache_dir, **extra_env), cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT, text=True)


def wait_for(process: subprocess.Popen, condition: Callable[[], bool],
             timeout: float = 240, poll_s: float = 0.001) -> bool:
  """Polls `condition` until true (True) or the process ends first (False)."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if condition():
      return True
    if process.poll() is not None:
      return condition()
    time.sleep(poll_s)
  process.kill()
  raise TimeoutError(f"{process.args} did not get there in {timeout} s")


def read(path: str) -> str:
  with open(path, errors="replace") as f:
    return f.read()


def checkpoint_entries(workdir: str) -> list[str]:
  try:
    return sorted(os.listdir(checkpoints.checkpoint_dir(workdir)))
  except FileNotFoundError:
    return []


def complete_steps(workdir: str) -> list[int]:
  """The steps orbax itself would offer for a resume (it skips unfinished saves)."""
  manager = checkpoints.make_manager(workdir, read_only=True)
  try:
    return list(manager.all_steps())
  finally:
    manager.close()


def restore_raw(workdir: str, step: int | None = None) -> Any:
  """The saved state as plain host arrays, without knowing the config that made it."""
  manager = checkpoints.make_manager(workdir, read_only=True)
  try:
    step = manager.latest_step() if step is None else step
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore()))
    return jax.device_get(restored["state"])
  finally:
    manager.close()


def assert_trees_bitwise_equal(a: Any, b: Any) -> None:
  leaves_a, tree_a = jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.structure(a)
  leaves_b, tree_b = jax.tree_util.tree_flatten_with_path(b)[0], jax.tree.structure(b)
  assert tree_a == tree_b
  for (path, x), (_, y) in zip(leaves_a, leaves_b):
    x, y = np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype and x.shape == y.shape, jax.tree_util.keystr(path)
    assert x.tobytes() == y.tobytes(), f"{jax.tree_util.keystr(path)} differs"
