"""Resuming: a run stopped at step k and restarted ends bit for bit where an unstopped run does.

One module fixture trains a tiny model twice in-process: straight through N steps, and
stopped at step K (the preemption path, driven by a StopRequest) then rerun on the same
workdir. Spies on `checkpoints.save` / `restore_state` capture what was saved at K and
what the rerun restored.
"""

import json

import jax
import numpy as np
import pytest
import reliability_helpers as rh

from pix2pix_jax.config import validation
from pix2pix_jax.train import checkpoints
from pix2pix_jax.train import optimizers
from pix2pix_jax.train import preemption
from pix2pix_jax.train import trainer

N, K = 16, 3


def stop_at(step: int) -> preemption.StopRequest:
  return preemption.StopRequest(signals=(), sync_point=lambda s: s == step)


assert_trees_bitwise_equal = rh.assert_trees_bitwise_equal


def losses(workdir):
  with open(f"{workdir}/metrics.jsonl") as f:
    rows = [json.loads(line) for line in f]
  keys = ("G_loss", "D_loss", "G_L1", "learning_rate", "finite")
  return {r["step"]: tuple(r[k] for k in keys) for r in rows}


@pytest.fixture(scope="module")
def runs(synthetic_config, tmp_path_factory):
  config = rh.tiny_config(synthetic_config, log_every_steps=1, checkpoint_every_steps=2)
  assert config.num_train_steps == N
  straight = str(tmp_path_factory.mktemp("straight"))
  stopped = str(tmp_path_factory.mktemp("stopped"))
  saved, restored = {}, {}
  mp = pytest.MonkeyPatch()
  save, restore = checkpoints.save, checkpoints.restore_state

  def spy_save(manager, state, config, force=False):
    saved[int(state.step)] = jax.device_get(state)
    return save(manager, state, config, force)

  def spy_restore(*args, **kwargs):
    state = restore(*args, **kwargs)
    restored[int(state.step)] = jax.device_get(state)
    return state

  mp.setattr(checkpoints, "save", spy_save)
  mp.setattr(checkpoints, "restore_state", spy_restore)
  try:
    with rh.persistent_compilation_cache(rh.cache_dir(tmp_path_factory)):
      final_straight = jax.device_get(trainer.train_and_evaluate(config, straight))
      with pytest.raises(preemption.Preempted) as stopped_at:
        trainer.train_and_evaluate(config, stopped, stop=stop_at(K))
      final_resumed = jax.device_get(trainer.train_and_evaluate(config, stopped))
  finally:
    mp.undo()
  return dict(config=config, straight=straight, stopped=stopped, saved=saved,
              restored=restored, final_straight=final_straight,
              final_resumed=final_resumed, preempted=stopped_at.value)


def test_stop_saves_a_checkpoint_at_the_requested_step(runs):
  assert runs["preempted"].step == K
  assert runs["saved"].keys() == {2, K, *range(4, N + 1, 2)}  # Every 2 steps, and K.
  assert rh.complete_steps(runs["stopped"]) == [N - 4, N - 2, N]  # keep_checkpoints=3.


def test_resume_restores_step_lr_and_adam_moments_as_saved(runs):
  restored, saved, config = runs["restored"][K], runs["saved"][K], runs["config"]
  assert_trees_bitwise_equal(restored, saved)
  assert int(restored.step) == K
  for opt_state in (restored.g_opt_state, restored.d_opt_state):
    adam, schedule = opt_state
    assert int(adam.count) == K and int(schedule.count) == K  # The LR schedule's position.
    assert any(np.abs(m).max() > 0 for m in jax.tree.leaves(adam.mu))  # Real moments.
    assert any(np.abs(v).max() > 0 for v in jax.tree.leaves(adam.nu))
  lr = optimizers.learning_rate_schedule(config.optim.lr, config, N)
  assert 0 < float(lr(int(restored.g_opt_state[1].count))) < config.optim.lr


def test_resumed_run_is_bitwise_equal_to_the_uninterrupted_run(runs):
  assert int(runs["final_resumed"].step) == N
  assert_trees_bitwise_equal(runs["final_resumed"], runs["final_straight"])
  # Same batches, same dropout, same LR at every step after the resume, too.
  straight, resumed = losses(runs["straight"]), losses(runs["stopped"])
  assert all(resumed[s] == straight[s] for s in range(1, N + 1))


def test_resume_refuses_a_different_architecture_naming_the_field(runs):
  config = runs["config"].copy_and_resolve_references()
  config.model.ngf = 8
  with pytest.raises(validation.ConfigError, match=r"model\.ngf \(checkpoint 4, config 8\)"):
    trainer.train_and_evaluate(config, runs["straight"])


def test_any_shape_change_is_caught_even_if_its_field_is_not_listed(runs, monkeypatch):
  """A field another change adds, but nobody lists: the arrays' shapes still give it away."""
  monkeypatch.setattr(checkpoints, "ARCHITECTURE_FIELDS", ())
  config = runs["config"].copy_and_resolve_references()
  config.model.ndf = 8
  with pytest.raises(validation.ConfigError,
                     match=r"other shapes.*\(checkpoint \(8,\), config \(16,\)\).*"
                           r"model\.ndf \(checkpoint 4, config 8\)"):
    trainer.train_and_evaluate(config, runs["straight"])
