"""Evaluates a generator on a dataset split: L1, PSNR, SSIM and LPIPS per image and on average.

    python -m pix2pix_jax.eval.evaluate --workdir DIR --split test --output OUT \
        [--eval_mode] [--seed N] [--batch_size N] [--output_bits 8|16|same] \
        [--config.<field>=<value> ...]

The config is the checkpoint's; `--config.` overrides change where and how the data is read
(data.manual_dir, data.data_dir, ...), never the network's shapes. Writes OUT/metrics.json
(means under "l1", "psnr", "ssim", "lpips"; per-image values under "images"), OUT/index.html
(input | output | target, sortable by each metric) and the PNGs it shows under OUT/images.

`--step best` evaluates the best checkpoint by the run's keep_best validation metric.

Outputs come from G in the paper's test mode by default (dropout on, each image's own
BatchNorm statistics, noise fixed by --seed), or in eval mode with --eval_mode. Each test
image is seen as the official test.py sees it: the whole image resized to crop_size (256x256
for the official datasets), no crop, no flip (`pipeline.test_spec`; data.test_load_size
changes it). Outputs are compared with the targets at that resolution, after both are
rounded to --output_bits (default "same": 16 bits where the dataset stores the input side in
16, else 8): the metrics are those of the PNGs written. The protocol and each metric's
convention: docs/evaluation.md and `pix2pix_jax.eval.metrics`.
"""

import functools
import json
import os
import re
import sys
from typing import Any

from absl import app
from absl import flags
import ml_collections
from ml_collections import config_flags
import numpy as np

from pix2pix_jax.config import base as config_base
from pix2pix_jax.data import image_io
from pix2pix_jax.data import pipeline
from pix2pix_jax.eval import lpips as lpips_lib
from pix2pix_jax.eval import metrics
from pix2pix_jax.eval import report
from pix2pix_jax.nn import generate as generate_lib
from pix2pix_jax.serving import checkpoint_flags
from pix2pix_jax.serving import inference
from pix2pix_jax.train import checkpoints
from pix2pix_jax.train import validation

METRICS_FILE = "metrics.json"
HTML_FILE = "index.html"
IMAGES_DIR = "images"


def _file_stem(index: int, name: str) -> str:
  """A safe, unique file-name stem for example `index` called `name`."""
  stem = os.path.splitext(os.path.basename(str(name)))[0]
  return f"{index:05d}_" + (re.sub(r"[^A-Za-z0-9._-]+", "_", stem)[:60] or "image")


def json_number(x: float) -> float | None:
  """JSON has no infinity: +inf (PSNR of an exact match) is written as null."""
  return float(x) if np.isfinite(x) else None


def _input_dtype(config: ml_collections.ConfigDict) -> np.dtype:
  """The dtype the dataset stores the network's input side in (uint8 or uint16)."""
  side = "image_b" if config.data.direction == "BtoA" else "image_a"
  return np.dtype(pipeline.builder(config.data).info.features[side].np_dtype)


def metric_set(lpips_params: Any = None) -> validation.MetricSet:
  """The evaluate metrics (L1, PSNR, SSIM, LPIPS) as validation while training takes them."""
  lpips_params = lpips_lib.load_params() if lpips_params is None else lpips_params
  return validation.MetricSet(
      fn=functools.partial(metrics.all_metrics, lpips_params=lpips_params),
      higher_is_better=dict(metrics.HIGHER_IS_BETTER))


def evaluate(config: ml_collections.ConfigDict, variables: generate_lib.Variables, split: str,
             output_dir: str, *, eval_mode: bool = False, seed: int = 0, batch_size: int = 8,
             lpips_params: Any = None, output_bits: int | str = "same") -> dict[str, Any]:
  """Writes metrics.json, index.html and images/ into `output_dir`; returns the JSON dict."""
  dtype = inference.output_dtype(output_bits, _input_dtype(config))
  generate = generate_lib.make_generate_fn(config, eval_mode)
  os.makedirs(os.path.join(output_dir, IMAGES_DIR), exist_ok=True)
  records: list[dict[str, Any]] = []
  for example in validation.scored_examples(config, variables, split, generate,
                                            metric_set(lpips_params), seed=seed,
                                            batch_size=batch_size, dtype=dtype):
    stem = _file_stem(example.index, example.name)
    record: dict[str, Any] = {"index": example.index, "name": example.name}
    for role in ("input", "output", "target"):
      record[role] = f"{IMAGES_DIR}/{stem}_{role}.png"
      image_io.write_png(os.path.join(output_dir, record[role]), example.images[role])
    record.update({m: example.metrics[m] for m in metrics.METRICS})
    records.append(record)
  if not records:
    raise ValueError(f"split {split!r} of {config.data.name} has no examples")

  means = {m: float(np.mean([r[m] for r in records])) for m in metrics.METRICS}
  result: dict[str, Any] = {m: json_number(means[m]) for m in metrics.METRICS}
  result.update(
      split=split, dataset=config.data.name, num_images=len(records),
      mode="eval (no dropout, running BatchNorm averages)" if eval_mode else
      f"test (the paper's: dropout on, per-image BatchNorm statistics, seed {seed})",
      conventions={
          "l1": "mean |output - target| on [-1, 1] images (the scale of the L1 objective)",
          "psnr": "dB on [0, 1] images (data range 1); null = infinite (exact match)",
          "ssim": "Gaussian 11x11, sigma 1.5, K1 0.01, K2 0.03, on [0, 1], channel mean",
          "lpips": "AlexNet LPIPS v0.1 (lower is closer)",
          "images": f"outputs and targets rounded to {8 * dtype.itemsize} bits, as the PNGs",
          "fid": "not computed: a set statistic needing Inception weights; unreliable on "
                 "test sets of ~100 images"},
      images=[{k: (json_number(v) if k in metrics.METRICS else v) for k, v in r.items()}
              for r in records])
  with open(os.path.join(output_dir, METRICS_FILE), "w") as f:
    json.dump(result, f, indent=1, allow_nan=False)
  page = report.render(
      f"pix2pix {config.data.name} / {split}: {len(records)} images",
      {m: result[m] for m in metrics.METRICS}, metrics.HIGHER_IS_BETTER, result["images"],
      notes=[result["mode"]] + [f"{m}: {result['conventions'][m]}" for m in metrics.METRICS])
  with open(os.path.join(output_dir, HTML_FILE), "w") as f:
    f.write(page)
  return result


def define_flags() -> None:
  """Flags are defined only when run as a program, so that the module imports cleanly."""
  checkpoint_flags.define()
  flags.DEFINE_string("split", "test", "Dataset split to evaluate.")
  flags.DEFINE_string("output", None, "Folder for metrics.json, index.html, images/.")
  flags.DEFINE_bool("eval_mode", False, "Deterministic: no dropout, BatchNorm running averages.")
  flags.DEFINE_integer("seed", 0, "Dropout noise seed (the default test mode).")
  flags.DEFINE_integer("batch_size", 8, "Images per generator call.")
  flags.DEFINE_enum("output_bits", "same", inference.OUTPUT_BITS,
                    "Bits per sample of the images written and scored; same: the dataset's.")


def _step_dir() -> str:
  return checkpoints.checkpoint_step_dir(checkpoint_flags.path(), flags.FLAGS.step)


def main(argv: list[str]) -> None:
  del argv
  f = flags.FLAGS
  if f.output is None:
    sys.exit("error: --output is required")
  try:
    config, variables = checkpoints.load_generator(_step_dir())
    checkpoints.check_same_architecture(config, f.config)
    result = evaluate(f.config, variables, f.split, f.output, eval_mode=f.eval_mode,
                      seed=f.seed, batch_size=f.batch_size, output_bits=f.output_bits)
  except (FileNotFoundError, KeyError, ValueError) as e:
    checkpoint_flags.exit_with(e)
  print(json.dumps({m: result[m] for m in metrics.METRICS} | {"images": result["num_images"]}))
  print(f"wrote {os.path.join(f.output, HTML_FILE)}")

def run(argv: list[str]) -> None:
  """Reads the checkpoint's config first, so that --config.<field> overrides it."""
  define_flags()
  flags.FLAGS(argv, known_only=True)
  config = config_base.base_config()  # Without a checkpoint: for --help; main() refuses.
  if checkpoint_flags.given():
    try:
      config = checkpoints.load_config(_step_dir())
    except (FileNotFoundError, ValueError) as e:
      checkpoint_flags.exit_with(e)
  config_flags.DEFINE_config_dict("config", config, "The checkpoint's config (overridable).")
  app.run(main, argv)


if __name__ == "__main__":
  run(sys.argv)
