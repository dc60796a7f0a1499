"""nan_policy end to end: a NaN planted in one batch is skipped (and counted), or stops the run.

The NaN goes into the real input pipeline's output (a wrapped `train_iterator`), so the
whole path runs: the step's guard, the trainer's check, its log and its checkpoints.
"""

import logging

import jax
import numpy as np
import pytest
import reliability_helpers as rh

from pix2pix_jax.data import pipeline
from pix2pix_jax.train import trainer

BAD_STEP = 5


@pytest.fixture
def poisoned(monkeypatch, synthetic_config, tmp_path_factory):
  """A tiny config whose batch for step BAD_STEP has one NaN pixel."""
  real = pipeline.train_iterator

  def train_iterator(config, *, start_step=0, **kwargs):
    for step, batch in enumerate(real(config, start_step=start_step, **kwargs), start_step + 1):
      if step == BAD_STEP:
        batch = dict(batch, input=batch["input"].copy())
        batch["input"][0, 0, 0, 0] = np.nan
      yield batch

  monkeypatch.setattr(pipeline, "train_iterator", train_iterator)
  with rh.persistent_compilation_cache(rh.cache_dir(tmp_path_factory)):
    yield rh.tiny_config(synthetic_config, log_every_steps=4, checkpoint_every_steps=2,
                         keep_checkpoints=10)


def test_skip_policy_skips_counts_and_logs_the_bad_step(poisoned, tmp_path, caplog):
  poisoned.nan_policy = "skip"
  with caplog.at_level(logging.WARNING):
    state = trainer.train_and_evaluate(poisoned, str(tmp_path))
  assert int(state.step) == poisoned.num_train_steps
  assert int(state.nonfinite_steps) == 1
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(jax.device_get(state.g_params)))
  assert f"step {BAD_STEP} had a non-finite loss" in caplog.text and "skipped" in caplog.text
  assert rh.complete_steps(str(tmp_path)) == list(range(2, poisoned.num_train_steps + 1, 2))
  last_log = rh.read(tmp_path / "metrics.jsonl").splitlines()[-1]
  assert '"skipped_steps": 1.0' in last_log


def test_stop_policy_names_step_and_loss_and_keeps_the_last_good_checkpoint(poisoned, tmp_path):
  poisoned.nan_policy = "stop"
  with pytest.raises(trainer.NonFiniteLossError,
                     match=rf"step {BAD_STEP} had a non-finite loss .*G_loss=nan.*"
                           r"the last checkpoint \(step 4\) is kept"):
    trainer.train_and_evaluate(poisoned, str(tmp_path))
  # Step 6 would have been saved after the bad step: the check runs before every save.
  assert rh.complete_steps(str(tmp_path)) == [2, 4]
  kept = rh.restore_raw(str(tmp_path))
  assert int(kept["step"]) == 4 and int(kept["nonfinite_steps"]) == 0
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(kept))
