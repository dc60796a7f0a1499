"""Evaluation over dataset splits: metrics.json, index.html and the PNGs, in-process and CLI."""

import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from pix2pix_jax.data import image_io
from pix2pix_jax.eval import evaluate as evaluate_lib
from pix2pix_jax.eval import lpips as lpips_lib
from pix2pix_jax.eval import metrics
from pix2pix_jax.train import checkpoints

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO), "shared", "data")


@pytest.fixture(scope="module")
def lpips_params():
  return lpips_lib.load_params()


def _check_outputs(out_dir, result, num_images):
  with open(os.path.join(out_dir, evaluate_lib.METRICS_FILE)) as f:
    saved = json.load(f)
  assert saved == result
  assert saved["num_images"] == len(saved["images"]) == num_images
  for m in metrics.METRICS:
    values = [r[m] for r in saved["images"]]
    assert all(v is not None for v in values)
    np.testing.assert_allclose(saved[m], np.mean(values), rtol=1e-6)
  assert 0 < saved["l1"] < 2 and 0 < saved["psnr"] < 60 and -1 < saved["ssim"] < 1
  assert saved["lpips"] > 0
  page = open(os.path.join(out_dir, evaluate_lib.HTML_FILE)).read()
  assert page.count(".png") >= 3 * num_images and "sortBy('lpips')" in page
  for r in saved["images"]:
    for role in ("input", "output", "target"):
      assert os.path.isfile(os.path.join(out_dir, r[role])), r[role]
  return saved


def test_evaluate_synthetic_test_split(trained_workdir, synthetic_config, lpips_params,
                                       tmp_path):
  config, variables = checkpoints.load_generator(trained_workdir)
  config.data.data_dir = synthetic_config.data.data_dir
  result = evaluate_lib.evaluate(config, variables, "test", str(tmp_path), batch_size=8,
                                 lpips_params=lpips_params)
  saved = _check_outputs(str(tmp_path), result, num_images=50)
  # The metrics are those of the PNGs written.
  first = saved["images"][0]
  out, target = (image_io.to_float(np.asarray(Image.open(tmp_path / first[role])))[None]
                 for role in ("output", "target"))
  np.testing.assert_allclose(metrics.l1(out, target), [first["l1"]], rtol=1e-5)
  np.testing.assert_allclose(metrics.ssim(out, target), [first["ssim"]], rtol=1e-4)


def test_architecture_overrides_are_refused(trained_workdir):
  config, _ = checkpoints.load_generator(trained_workdir)
  other = checkpoints.load_config(checkpoints.checkpoint_step_dir(trained_workdir))
  other.data.manual_dir = "/somewhere/else"  # Data overrides are fine.
  checkpoints.check_same_architecture(config, other)
  other.model.ngf = 8
  with pytest.raises(ValueError, match="shapes"):
    checkpoints.check_same_architecture(config, other)


def test_evaluate_cli_with_config_overrides(trained_workdir, synthetic_config, tmp_path):
  out = tmp_path / "eval"
  result = subprocess.run(
      [sys.executable, "-m", "pix2pix_jax.eval.evaluate", f"--workdir={trained_workdir}",
       "--split=val", f"--output={out}", "--eval_mode", "--batch_size=16",
       f"--config.data.data_dir={synthetic_config.data.data_dir}"],
      cwd=REPO, capture_output=True, text=True, timeout=400)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(out / evaluate_lib.METRICS_FILE) as f:
    saved = json.load(f)
  assert saved["split"] == "val" and saved["mode"].startswith("eval")
  _check_outputs(str(out), saved, num_images=100)


def test_evaluate_facades_test_split(trained_workdir, facades_builder, tfds_dir, lpips_params,
                                     tmp_path):
  """The real facades test split (106 pairs) from the shared archive, at 256x256: each
  output covers the whole test photo resized to 256 (the official test's view, no crop)."""
  config, variables = checkpoints.load_generator(trained_workdir)
  config.data.name = "facades"
  config.data.manual_dir = SHARED_DATA  # Prepared already by facades_builder.
  config.data.data_dir = str(tfds_dir)
  config.data.direction = "BtoA"
  config.data.load_size, config.data.crop_size = 286, 256  # The facades training geometry.
  result = evaluate_lib.evaluate(config, variables, "test", str(tmp_path), batch_size=16,
                                 lpips_params=lpips_params)
  _check_outputs(str(tmp_path), result, num_images=106)
  assert result["dataset"] == "facades"
  source = facades_builder.as_data_source("test")
  photos = {str(source[i]["name"], "utf-8") if isinstance(source[i]["name"], bytes)
            else str(source[i]["name"]): source[i]["image_a"] for i in range(3)}
  for record in result["images"][:3]:
    images = {role: np.asarray(Image.open(tmp_path / record[role]))
              for role in ("input", "output", "target")}
    assert {v.shape for v in images.values()} == {(256, 256, 3)}
    np.testing.assert_allclose(images["target"],
                               image_io.resize(photos[record["name"]], 256, 256), atol=1)
