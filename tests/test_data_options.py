"""data.max_dataset_size and data.serial_batches (the official options), and the new
fields' checks."""

import numpy as np
import pytest
from absl import flags

from conftest import data_config
from pix2pix_jax.config import validation
from pix2pix_jax.data import pipeline
from pix2pix_jax.serving import checkpoint_flags

# Training geometry equal to the test geometry (no resize, crop or flip), so that a training
# example can be recognised among the eval iterator's.
SAME_VIEW = {"data.reader": "numpy", "data.preprocess": "none", "data.flip": False,
             "model.num_downs": 5}


def _config(base, **overrides):
  return data_config(base.data.data_dir, **{**SAME_VIEW, **overrides})


def _train_split(config, n):
  return next(pipeline.eval_iterator(config, "train", n))["input"][:n]


def _which(batch_inputs, candidates):
  return [int(np.flatnonzero([np.array_equal(x, c) for c in candidates])[0])
          for x in batch_inputs]


def test_max_dataset_size_uses_the_first_pairs_only(synthetic_config):
  c = _config(synthetic_config, batch_size=2, **{"data.max_dataset_size": 6})
  assert pipeline.num_train_examples(c) == 6 and pipeline.steps_per_epoch(c) == 3
  first = _train_split(c, 6)
  it = pipeline.train_iterator(c)
  seen = [i for _ in range(6) for i in _which(next(it)["input"], first)]  # Two epochs.
  assert sorted(seen[:6]) == sorted(seen[6:]) == list(range(6))
  assert seen[:6] != list(range(6)) or seen[6:] != list(range(6))  # Shuffled.


def test_serial_batches_read_in_stored_order_every_epoch(synthetic_config):
  c = _config(synthetic_config, batch_size=2,
              **{"data.max_dataset_size": 6, "data.serial_batches": True})
  first = _train_split(c, 6)
  it = pipeline.train_iterator(c)
  seen = [i for _ in range(6) for i in _which(next(it)["input"], first)]
  assert seen == list(range(6)) * 2
  resumed = pipeline.train_iterator(c, start_step=4)  # Resuming keeps the position.
  assert _which(next(resumed)["input"], first) == [2, 3]


def test_eval_iterator_limit(synthetic_config):
  c = _config(synthetic_config)
  batches = list(pipeline.eval_iterator(c, "val", 4, limit=6))
  assert len(batches) == 2 and int(np.sum([b["mask"] for b in batches])) == 6


@pytest.mark.parametrize("field,value,match", [
    ("data.max_dataset_size", 0, "max_dataset_size"),
    ("data.test_load_size", 32, "test_load_size"),
    ("eval_num_examples", 0, "eval_num_examples"),
    ("keep_best", "l1", "keep_best.*eval_every_steps"),
    ("keep_every_steps", -1, "keep_every_steps"),
    ("optim.lr_decay_iters", 0, "lr_decay_iters"),
])
def test_bad_values_are_named(synthetic_config, field, value, match):
  c = data_config(synthetic_config.data.data_dir, **{field: value})
  with pytest.raises(validation.ConfigError, match=match):
    validation.validate(c)


def test_step_flag_takes_a_number_or_best():
  values = flags.FlagValues()
  flags.DEFINE(checkpoint_flags.StepParser(), "step", None, "", flag_values=values)
  values(["prog", "--step=best"])
  assert values.step == "best"
  values(["prog", "--step=12"])
  assert values.step == 12
  with pytest.raises(flags.IllegalFlagValueError, match="number or 'best'"):
    values(["prog", "--step=latest"])
