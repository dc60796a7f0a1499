"""Validation while training: val metrics logged, the best checkpoint and snapshots kept,
--step best; validation scores as evaluate does and compiles once.

One module fixture trains a tiny model 12 steps on the synthetic data, validating every 4
steps on 8 val pairs, keeping the best checkpoint by val L1 and snapshots every 6 steps.
"""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import reliability_helpers as rh

from pix2pix_jax.config import validation
from pix2pix_jax.eval import evaluate as evaluate_lib
from pix2pix_jax.eval import lpips as lpips_lib
from pix2pix_jax.nn import generate as generate_lib
from pix2pix_jax.train import checkpoints
from pix2pix_jax.train import trainer
from pix2pix_jax.train import validation as validation_lib
from test_compile_once import CompileCounter

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = 12
FIELDS = dict(num_train_steps=N, eval_every_steps=4, eval_num_examples=8, eval_batch_size=4,
              keep_best="l1", keep_every_steps=6, keep_checkpoints=1,
              checkpoint_every_steps=100, log_every_steps=4)


@pytest.fixture(scope="module")
def lpips_params():
  return lpips_lib.load_params()


@pytest.fixture(scope="module")
def metric_set(lpips_params):
  return evaluate_lib.metric_set(lpips_params)


@pytest.fixture(scope="module")
def run(synthetic_config, metric_set, tmp_path_factory):
  config = rh.tiny_config(synthetic_config, **FIELDS)
  workdir = str(tmp_path_factory.mktemp("validated"))
  with rh.persistent_compilation_cache(rh.cache_dir(tmp_path_factory)):
    trainer.train_and_evaluate(config, workdir, metric_set=metric_set)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  val = {r["step"]: r for r in rows if "val_l1" in r}
  return dict(config=config, workdir=workdir, val=val)


def test_validation_metrics_go_to_metrics_jsonl_and_tensorboard(run):
  assert sorted(run["val"]) == [4, 8, 12]
  for row in run["val"].values():
    assert set(row) == {"step", "val_l1", "val_psnr", "val_ssim", "val_lpips"}
    assert 0 < row["val_l1"] < 2 and 0 < row["val_psnr"] < 60 and row["val_lpips"] > 0
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tags = set()
  for path in glob.glob(os.path.join(run["workdir"], "tensorboard", "*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      tags.update(v.tag for v in event.summary.value)
  assert {"val_l1", "val_psnr", "val_ssim", "val_lpips"} <= tags


def test_keeps_the_latest_the_snapshots_and_the_best_by_val_l1(run):
  l1 = {s: r["val_l1"] for s, r in run["val"].items()}
  best = min(l1, key=l1.get)
  # keep_checkpoints=1: the latest (12); keep_every_steps=6: 6 and 12; the best one.
  assert rh.complete_steps(run["workdir"]) == sorted({6, N, best})
  assert checkpoints.checkpoint_step_dir(run["workdir"], "best").endswith(f"/{best}")
  assert checkpoints.checkpoint_step_dir(run["workdir"], 6).endswith("/6")


def test_step_best_without_validated_checkpoints_says_so(trained_workdir):
  with pytest.raises(FileNotFoundError, match="keep_best"):
    checkpoints.checkpoint_step_dir(trained_workdir, "best")


def test_evaluate_cli_step_best_uses_the_best_checkpoint(run, tmp_path):
  best = int(os.path.basename(checkpoints.checkpoint_step_dir(run["workdir"], "best")))
  out = tmp_path / "eval"
  result = subprocess.run(
      [sys.executable, "-m", "pix2pix_jax.eval.evaluate", f"--workdir={run['workdir']}",
       "--step=best", "--split=val", f"--output={out}", "--batch_size=4", "--seed=0"],
      cwd=REPO, capture_output=True, text=True, timeout=400)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(out / evaluate_lib.METRICS_FILE) as f:
    saved = json.load(f)
  # Validation (seed config.seed = 0, the first 8 val pairs) and evaluate see the same images
  # the same way: the first 8 per-image L1s average to the logged val_l1 of that step.
  first = [r["l1"] for r in saved["images"][:FIELDS["eval_num_examples"]]]
  np.testing.assert_allclose(np.mean(first), run["val"][best]["val_l1"], rtol=1e-5)


def test_validate_compiles_once_and_matches_evaluate(trained_workdir, synthetic_config,
                                                     metric_set, lpips_params, tmp_path):
  config, variables = checkpoints.load_generator(trained_workdir)
  config.data.data_dir = synthetic_config.data.data_dir
  config.eval_num_examples, config.eval_batch_size = 6, 4  # Two batches, the last filled up.
  generate = generate_lib.make_generate_fn(config)
  first = validation_lib.validate(config, variables, generate, metric_set)
  with CompileCounter() as compiles:
    again = validation_lib.validate(config, variables, generate, metric_set)
  assert compiles.count == 0, f"{compiles.count} compilations on the second validation"
  assert again == first
  result = evaluate_lib.evaluate(config, variables, "val", str(tmp_path), batch_size=4,
                                 lpips_params=lpips_params)
  for m in ("l1", "psnr", "ssim", "lpips"):
    np.testing.assert_allclose(first[m], np.mean([r[m] for r in result["images"][:6]]),
                               rtol=1e-5)


def test_validation_needs_the_metric_set_and_a_known_metric(synthetic_config, metric_set,
                                                            tmp_path):
  config = rh.tiny_config(synthetic_config, **FIELDS)
  with pytest.raises(validation.ConfigError, match="metric_set"):
    trainer.train_and_evaluate(config, str(tmp_path))
  config.keep_best = "fid"
  with pytest.raises(validation.ConfigError, match="keep_best='fid'.*l1, psnr, ssim, lpips"):
    trainer.train_and_evaluate(config, str(tmp_path), metric_set=metric_set)
  config.keep_best, config.data.eval_split = "l1", "holdout"
  with pytest.raises(validation.ConfigError, match="eval_split='holdout'"):
    trainer.train_and_evaluate(config, str(tmp_path), metric_set=metric_set)


def test_ranked_metrics_rank_higher_is_better_and_nan_last():
  assert checkpoints.ranked_metrics({"l1": 0.25, "psnr": 20.0}, "l1", False)["rank"] == -0.25
  assert checkpoints.ranked_metrics({"l1": 0.25, "psnr": 20.0}, "psnr", True)["rank"] == 20.0
  assert checkpoints.ranked_metrics({"l1": float("nan")}, "l1", False)["rank"] == -np.inf



def test_the_best_is_kept_beside_the_latest_and_survives_a_resume(synthetic_config, tmp_path,
                                                                   tmp_path_factory):
  """Scripted validation L1s (0.5, 0.2, 0.4, then 0.3 after a resume): step 8 stays best."""
  scripted = iter([0.5, 0.2, 0.4, 0.3])
  value = {}

  def fn(outputs, targets):
    del targets
    return {"l1": np.full(outputs.shape[0], value["l1"], np.float32)}

  metric_set = validation_lib.MetricSet(fn=fn, higher_is_better={"l1": False})
  fields = dict(FIELDS, keep_every_steps=0, eval_num_examples=4)
  workdir = str(tmp_path)
  original = validation_lib.validate

  def validate(*args, **kwargs):
    value["l1"] = next(scripted)
    return original(*args, **kwargs)

  mp = pytest.MonkeyPatch()
  mp.setattr(validation_lib, "validate", validate)
  try:
    with rh.persistent_compilation_cache(rh.cache_dir(tmp_path_factory)):
      trainer.train_and_evaluate(rh.tiny_config(synthetic_config, **fields), workdir,
                                 metric_set=metric_set)
      assert rh.complete_steps(workdir) == [8, 12]  # The best and the latest.
      longer = rh.tiny_config(synthetic_config, **dict(fields, num_train_steps=16))
      trainer.train_and_evaluate(longer, workdir, metric_set=metric_set)  # Resumes at 12.
  finally:
    mp.undo()
  assert rh.complete_steps(workdir) == [8, 16]
  assert checkpoints.checkpoint_step_dir(workdir, "best").endswith("/8")
