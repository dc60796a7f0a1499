"""The ablation runner: a 2-row grid on the synthetic data, tiny nets, a handful of steps."""

import csv
import os

import numpy as np
import pytest
from PIL import Image

from pix2pix_jax.config import ablations
from pix2pix_jax.config import base as config_base
from pix2pix_jax.eval import ablate
from conftest import data_config


def test_row_overrides_must_name_existing_fields():
  c = data_config("/nonexistent")
  assert config_base.with_overrides(c, {"loss.gan_weight": 0.0}).loss.gan_weight == 0.0
  assert c.loss.gan_weight == 1.0  # the base config is left alone
  with pytest.raises(KeyError, match="loss.gan_wieght"):
    config_base.with_overrides(c, {"loss.gan_wieght": 0.0})


def test_paper_grids_override_only_existing_fields():
  c = data_config("/nonexistent")
  for grid in ablations.GRIDS.values():
    for overrides in grid.values():
      config_base.with_overrides(c, overrides)
  assert list(ablations.TABLE1) == ["L1", "GAN", "cGAN", "L1+GAN", "L1+cGAN"]
  assert [o["model.n_layers_d"] for o in ablations.TABLE3.values()] == [0, 1, 3, 5]


def test_two_row_grid_trains_evaluates_and_resumes(synthetic_config, tmp_path):
  c = data_config(synthetic_config.data.data_dir)
  c.data.load_size, c.data.crop_size = 36, 32
  c.batch_size, c.num_train_steps = 2, 2
  c.model.update(num_downs=2, ngf=4, ndf=4, n_layers_d=1)
  c.log_every_steps = c.checkpoint_every_steps = c.sample_every_steps = 2
  rows = {name: ablations.TABLE1[name] for name in ("L1", "L1+cGAN")}
  workdir = str(tmp_path)

  first = ablate.run_grid(c, "table1", workdir, rows=rows, row_index=1, figure_images=3)
  assert [r["name"] for r in first["records"]] == ["L1+cGAN"] and first["missing"] == ["L1"]
  with open(first["outputs"]["md"]) as f:
    assert "| L1 | not run |" in f.read()
  row_file = os.path.join(workdir, "table1", "l1_cgan", ablate.ROW_FILE)
  mtime = os.path.getmtime(row_file)

  out = ablate.run_grid(c, "table1", workdir, rows=rows, figure_images=3)
  assert os.path.getmtime(row_file) == mtime  # trained and evaluated already: reused
  assert [r["name"] for r in out["records"]] == ["L1", "L1+cGAN"] and not out["missing"]
  assert all(r["step"] == 2 and r["num_images"] == 50 for r in out["records"])

  with open(out["outputs"]["md"]) as f:
    table = f.read()
  assert "| L1 |" in table and "| L1+cGAN |" in table and "not run" not in table
  assert "LPIPS" in table and "loss.gan_weight=0.0" in table
  with open(out["outputs"]["csv"]) as f:
    rows_csv = list(csv.DictReader(f))
  assert [r["row"] for r in rows_csv] == ["L1", "L1+cGAN"]
  for r in rows_csv:
    assert 0 < float(r["l1"]) < 2 and 0 <= float(r["lpips"]) and -1 <= float(r["ssim"]) <= 1
    assert np.isfinite(float(r["psnr"]))
  # The L1-only row never trained D; the cGAN row did, so their generators differ.
  assert rows_csv[0]["l1"] != rows_csv[1]["l1"]

  figure = Image.open(out["outputs"]["png"])
  cell = Image.open(os.path.join(workdir, "table1", "l1", out["records"][0]["images"][0]["input"]))
  w, h = cell.size
  assert figure.size[0] == 4 * w + 3 * 2  # input | L1 | L1+cGAN | ground truth
  assert figure.size[1] > 3 * h  # three test images under a title row
