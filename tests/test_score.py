"""Scoring another program's outputs: the same targets and metrics as evaluate."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from pix2pix_jax.data import image_io
from pix2pix_jax.eval import evaluate as evaluate_lib
from pix2pix_jax.eval import lpips as lpips_lib
from pix2pix_jax.eval import metrics
from pix2pix_jax.eval import score as score_lib
from pix2pix_jax.train import checkpoints

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVALUATE_PATTERN = "images/{index:05d}_{stem}_output.png"


@pytest.fixture(scope="module")
def evaluated(trained_workdir, synthetic_config, tmp_path_factory):
  config, variables = checkpoints.load_generator(trained_workdir)
  config.data.data_dir = synthetic_config.data.data_dir
  out = tmp_path_factory.mktemp("evaluated")
  lpips = lpips_lib.load_params()
  result = evaluate_lib.evaluate(config, variables, "test", str(out), lpips_params=lpips)
  return config, str(out), result, evaluate_lib.metric_set(lpips)


def test_scoring_evaluates_own_outputs_reproduces_its_metrics(evaluated):
  config, out, result, metric_set = evaluated
  scored = score_lib.score(config, "test", out, EVALUATE_PATTERN, batch_size=16,
                           metric_set=metric_set)
  assert scored["num_images"] == result["num_images"] == 50
  for m in metrics.METRICS:
    np.testing.assert_allclose(scored[m], result[m], rtol=1e-5)
    np.testing.assert_allclose([r[m] for r in scored["images"]],
                               [r[m] for r in result["images"]], rtol=1e-5, atol=1e-6)
  assert [r["name"] for r in scored["images"]] == [r["name"] for r in result["images"]]
  assert [r["output"] for r in scored["images"]] == [r["output"] for r in result["images"]]


def _copy_as(out, result, folder, transform):
  """Writes each evaluate output under its pair's stem, as another program would name it."""
  os.makedirs(folder, exist_ok=True)
  for r in result["images"]:
    image = image_io.read_image(os.path.join(out, r[transform[0]]))
    stem = os.path.splitext(os.path.basename(r["name"]))[0]
    image_io.write_png(os.path.join(folder, f"{stem}_fake_B.png"), transform[1](image))


def test_targets_score_perfectly_and_a_shift_scores_its_size(evaluated, tmp_path):
  config, out, result, metric_set = evaluated
  _copy_as(out, result, tmp_path / "same", ("target", lambda a: a))
  perfect = score_lib.score(config, "test", str(tmp_path / "same"), "{stem}_fake_B.png",
                            metric_set=metric_set)
  assert perfect["l1"] == 0 and perfect["psnr"] is None  # An exact match: infinite PSNR.
  np.testing.assert_allclose(perfect["ssim"], 1, atol=1e-5)
  np.testing.assert_allclose(perfect["lpips"], 0, atol=1e-5)
  # Each pixel 10 levels brighter where it can be: the L1 of exactly that change, per image.
  brighten = lambda a: np.minimum(a.astype(int) + 10, 255).astype(np.uint8)
  _copy_as(out, result, tmp_path / "bright", ("target", brighten))
  bright = score_lib.score(config, "test", str(tmp_path / "bright"), "{stem}_fake_B.png",
                           metric_set=metric_set)
  expected = [np.mean(brighten(t) - t.astype(int)) / 127.5 for t in (
      image_io.read_image(os.path.join(out, r["target"])) for r in result["images"])]
  assert min(expected) > 0
  np.testing.assert_allclose([r["l1"] for r in bright["images"]], expected, rtol=1e-5)


def test_missing_or_wrongly_sized_outputs_are_refused(evaluated, tmp_path):
  config, out, result, metric_set = evaluated
  _copy_as(out, result, tmp_path, ("output", lambda a: a))
  name = os.path.splitext(os.path.basename(result["images"][3]["name"]))[0]
  path = tmp_path / f"{name}_fake_B.png"
  image = image_io.read_image(path)
  image_io.write_png(path, np.concatenate([image, image], axis=1))
  with pytest.raises(ValueError, match="test view"):
    score_lib.score(config, "test", str(tmp_path), "{stem}_fake_B.png", metric_set=metric_set)
  os.remove(path)
  with pytest.raises(FileNotFoundError, match="no output for"):
    score_lib.score(config, "test", str(tmp_path), "{stem}_fake_B.png", metric_set=metric_set)


def test_command_line_writes_the_json(evaluated, synthetic_config, tmp_path):
  config, out, result, _ = evaluated
  target = tmp_path / "scored.json"
  run = subprocess.run(
      [sys.executable, "-m", "pix2pix_jax.eval.score", "--config", "configs/default.py",
       f"--config.data.data_dir={synthetic_config.data.data_dir}",
       f"--config.model.num_downs={config.model.num_downs}",
       f"--config.data.crop_size={config.data.crop_size}",
       f"--config.data.load_size={config.data.load_size}", "--split", "test",
       "--outputs", out, "--pattern", EVALUATE_PATTERN, "--output", str(target)],
      cwd=REPO, capture_output=True, text=True, check=False)
  assert run.returncode == 0, run.stderr[-2000:]
  saved = json.loads(target.read_text())
  np.testing.assert_allclose(saved["l1"], result["l1"], rtol=1e-5)
  assert json.loads(run.stdout.strip().splitlines()[-1])["images"] == 50
