"""optim.lr_policy against the official get_scheduler's rules, written out here independently.

The official code steps its torch scheduler once an epoch (epoch_count 1): epoch e (0-based)
trains at the LR after e steps of the scheduler. Plateau is ReduceLROnPlateau(mode min,
factor 0.2, threshold 0.01 relative, patience 5), fed the validation L1.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from pix2pix_jax.config import validation
from pix2pix_jax.train import checkpoints
from pix2pix_jax.train import optimizers
from pix2pix_jax.train import setup
from pix2pix_jax.train import sharding
from test_compile_once import CompileCounter

LR, SPE, N_EPOCHS, N_DECAY = 2e-4, 10, 3, 2  # 5 epochs of 10 steps.
STEPS = [0, 9, 10, 19, 20, 29, 30, 39, 40, 49]


def _config(policy, **optim):
  c = tiny_config()
  c.n_epochs, c.n_epochs_decay = N_EPOCHS, N_DECAY
  c.num_train_steps = -1
  c.optim.lr_policy = policy
  for k, v in optim.items():
    c.optim[k] = v
  return c


def _lrs(policy, **optim):
  schedule = optimizers.learning_rate_schedule(LR, _config(policy, **optim),
                                               (N_EPOCHS + N_DECAY) * SPE, SPE)
  return [float(schedule(s)) for s in STEPS]


def official_linear(epoch):
  # networks.get_scheduler 'linear': lambda_rule(epoch) with opt.epoch_count = 1.
  return LR * (1.0 - max(0, epoch + 1 - N_EPOCHS) / float(N_DECAY + 1))


def official_step(epoch, step_size):
  return LR * 0.1 ** (epoch // step_size)  # StepLR(step_size=lr_decay_iters, gamma=0.1)


def official_cosine(epoch, t_max):
  return 0.0 + (LR - 0.0) * (1 + math.cos(math.pi * epoch / t_max)) / 2  # eta_min 0


def test_linear_is_the_official_per_epoch_rule():
  want = [official_linear(s // SPE) for s in STEPS]
  np.testing.assert_allclose(_lrs("linear"), want, rtol=1e-6)
  # Constant for n_epochs, and the last epoch trains at lr / (n_epochs_decay + 1), not 0.
  assert _lrs("linear")[:6] == pytest.approx([LR] * 6)
  assert _lrs("linear")[-1] == pytest.approx(LR / (N_DECAY + 1))


def test_step_decays_by_a_tenth_every_lr_decay_iters_epochs():
  want = [official_step(s // SPE, 2) for s in STEPS]
  np.testing.assert_allclose(_lrs("step", lr_decay_iters=2), want, rtol=1e-6)
  assert _lrs("step", lr_decay_iters=2)[-1] == pytest.approx(LR / 100)


def test_cosine_anneals_to_zero_over_the_run():
  want = [official_cosine(s // SPE, N_EPOCHS + N_DECAY) for s in STEPS]
  np.testing.assert_allclose(_lrs("cosine"), want, rtol=1e-5, atol=1e-12)


def test_plateau_schedule_is_constant_and_linear_per_step_is_unchanged():
  assert _lrs("plateau") == pytest.approx([LR] * len(STEPS))
  per_step = _lrs("linear_per_step")  # Constant for 30 of 50 steps, then to 0 at step 50.
  assert per_step[5] == pytest.approx(LR) and per_step[6] == pytest.approx(LR)
  assert per_step[-1] == pytest.approx(LR * (50 - 49) / 20)


class OfficialPlateau:
  """torch.optim.lr_scheduler.ReduceLROnPlateau(mode='min', factor=0.2, threshold=0.01,
  patience=5), threshold_mode 'rel', cooldown 0, min_lr 0, eps 1e-8."""

  def __init__(self, lr):
    self.lr, self.best, self.num_bad_epochs = lr, math.inf, 0

  def step(self, metric):
    if metric < self.best * (1 - 0.01):
      self.best, self.num_bad_epochs = metric, 0
    else:
      self.num_bad_epochs += 1
    if self.num_bad_epochs > 5:
      new_lr = max(self.lr * 0.2, 0.0)
      if self.lr - new_lr > 1e-8:
        self.lr = new_lr
      self.num_bad_epochs = 0


def test_plateau_reduces_as_torch_reduce_lr_on_plateau():
  tx = optimizers.guarded_adam(lambda count: LR, 0.5, 0.999, plateau=True)
  state = tx.init({"w": jnp.zeros(3)})
  official = OfficialPlateau(LR)
  # Improves, then stalls (within the 1 % threshold), improves again, stalls long.
  metrics = [1.0, 0.9, 0.895, 0.9, 0.899, 0.9, 0.898, 0.897, 0.7, 0.71] + [0.7] * 14
  for metric in metrics:
    state = optimizers.reduce_on_plateau(state, metric, LR)
    official.step(metric)
    assert LR * float(optimizers.lr_scale(state)) == pytest.approx(official.lr, rel=1e-6)
  assert official.lr == pytest.approx(LR * 0.2**3)  # The sequence does reduce, three times.


def _plateau_run():
  c = _config("plateau")
  c.eval_every_steps = 1
  return setup.fresh(c, sharding.make_mesh(), 100)


def _batch(config, seed):
  rng = np.random.default_rng(seed)
  shape = (config.batch_size, config.data.crop_size, config.data.crop_size, 3)
  return {k: rng.uniform(-1, 1, shape).astype(np.float32) for k in ("input", "target")}


def _reduced(state, times):
  for _ in range(times):
    state = state.replace(g_opt_state=optimizers.reduce_on_plateau(state.g_opt_state, 1.0, LR),
                          d_opt_state=optimizers.reduce_on_plateau(state.d_opt_state, 1.0, LR))
  return state


def test_a_plateau_reduction_changes_the_step_without_recompiling_it():
  state, step, _, _ = _plateau_run()
  config = _config("plateau")
  state, _ = step(state, _batch(config, 0))
  copy = jax.tree.map(jnp.copy, state)
  g_opt_state = copy.g_opt_state
  for _ in range(7):  # One stall (best 1.0, then six bad validations): one reduction.
    g_opt_state = optimizers.reduce_on_plateau(g_opt_state, 1.0, LR)
  # G's only, so that D (whose update G's gradient sees) takes the same step in both.
  reduced = copy.replace(g_opt_state=g_opt_state)
  assert float(optimizers.lr_scale(reduced.g_opt_state)) == pytest.approx(0.2)
  before = jax.device_get(state.g_params)
  with CompileCounter() as compiles:
    full, _ = step(state, _batch(config, 1))
    small, _ = step(reduced, _batch(config, 1))
    jax.block_until_ready((full, small))
  assert compiles.count == 0 and step._cache_size() == 1
  # Adam's step is proportional to the LR: the reduced one moves G a fifth as far.
  delta = lambda s: np.concatenate([np.ravel(a - b) for a, b in zip(
      jax.tree.leaves(jax.device_get(s.g_params)), jax.tree.leaves(before))])
  np.testing.assert_allclose(delta(small), 0.2 * delta(full), rtol=1e-3, atol=1e-7)  # p + u rounds.


def test_the_plateau_state_survives_a_checkpoint(tmp_path):
  state, _, _, _ = _plateau_run()
  state = _reduced(state, 9)  # Reduced once, and two bad validations since.
  manager = checkpoints.make_manager(str(tmp_path), async_save=False)
  checkpoints.save(manager, state, _config("plateau"))
  manager.wait_until_finished()
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                          state)
  restored = checkpoints.restore_state(manager, abstract)
  manager.close()
  for opt_state in (restored.g_opt_state, restored.d_opt_state):
    plateau = jax.device_get(opt_state[2])
    assert (float(plateau.scale), float(plateau.best), int(plateau.num_bad)) == (
        pytest.approx(0.2), 1.0, 2)


def test_policies_are_checked():
  c = _config("exponential")
  with pytest.raises(validation.ConfigError, match="optim.lr_policy"):
    validation.validate(c)
  c = _config("plateau")
  with pytest.raises(validation.ConfigError, match="plateau.*eval_every_steps"):
    validation.validate(c)
  c.eval_every_steps = 10
  validation.validate(c)
