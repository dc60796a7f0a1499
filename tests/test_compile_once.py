"""The jitted train step compiles once: the state it returns is accepted as its next input.

A recompilation per step (a weak type, dtype or sharding that drifts between the state going
in and the one coming out) would cost the whole compile time again on every iteration.
"""

import jax
import numpy as np

from pix2pix_jax.train import setup
from pix2pix_jax.train import sharding
from conftest import tiny_config

# The event jax records once per XLA compilation (jax/_src/dispatch.py BACKEND_COMPILE_EVENT).
BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


class CompileCounter:
  """Counts XLA backend compilations through the public jax.monitoring listener API."""

  def __init__(self):
    self.count = 0

  def __call__(self, event: str, duration_secs: float, **kwargs) -> None:
    del duration_secs, kwargs
    if event == BACKEND_COMPILE_EVENT:
      self.count += 1

  def __enter__(self) -> "CompileCounter":
    jax.monitoring.register_event_duration_secs_listener(self)
    return self

  def __exit__(self, *exc) -> None:
    jax.monitoring.unregister_event_duration_listener(self)


def test_train_step_compiles_once_over_five_steps():
  c = tiny_config()
  mesh = sharding.make_mesh()
  state, step, _, _ = setup.fresh(c, mesh, 100)
  rng = np.random.default_rng(0)
  shape = (c.batch_size, c.data.crop_size, c.data.crop_size, 3)

  def batch():
    return sharding.global_batch(
        {k: rng.uniform(-1, 1, shape).astype(np.float32) for k in ("input", "target")}, mesh)

  first = batch()  # built outside the counter: only the step's compilations are counted
  with CompileCounter() as compiles:
    state, metrics = step(state, first)
    jax.block_until_ready(metrics)
    after_first = compiles.count
    later = [batch() for _ in range(4)]
    for b in later:
      state, metrics = step(state, b)
      float(metrics["G_loss"])  # the host reads a metric every step, as the trainer does
  assert after_first >= 1, "the counter saw no compilation at all: it is not counting"
  assert compiles.count == after_first, f"{compiles.count - after_first} recompilations"
  assert step._cache_size() == 1
  assert int(state.step) == 5
