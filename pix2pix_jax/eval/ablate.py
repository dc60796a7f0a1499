"""Trains, evaluates and tabulates a grid of config variants (the paper's ablation tables).

    python -m pix2pix_jax.eval.ablate --grid table1 --config configs/facades.py --steps 2000 --workdir DIR \
        [--row_index I] [--config.<field>=<value> ...]

Each row of `config.ablations.GRIDS[grid]` is the --config file plus the `--config.`
overrides plus the row's own overrides. Rows train one after another, each in
DIR/<grid>/<row>/ (rerunning resumes each row as train.py does, and a row already trained
and evaluated at its last checkpoint is not touched again), and are evaluated on --split
with `pix2pix_jax.eval.evaluate` (L1, PSNR, SSIM, LPIPS; the paper's test mode). Then
DIR/<grid>.md and DIR/<grid>.csv tabulate every row evaluated so far and DIR/<grid>.png shows
the same test inputs through every row: input | one column per row | ground truth, as the
paper's Figures 4 and 6. --row_index trains and evaluates one row only (one per host, say);
a final run without it then fills in the table.
"""

import csv
import json
import os
import re
import shlex
import sys
import textwrap
import time
from typing import Any, Sequence

from absl import app
from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags
from PIL import Image
from PIL import ImageDraw

from pix2pix_jax.config import ablations
from pix2pix_jax.config import base as config_base
from pix2pix_jax.eval import evaluate as evaluate_lib
from pix2pix_jax.eval import metrics
from pix2pix_jax.train import checkpoints
from pix2pix_jax.train import trainer

ROW_FILE = "ablation_row.json"
EVAL_DIR = "eval"
_HEADERS = {"l1": "L1 ↓", "psnr": "PSNR (dB) ↑", "ssim": "SSIM ↑", "lpips": "LPIPS ↓"}


def slug(name: str) -> str:
  """A row name as a folder name: 'L1+cGAN' -> 'l1_cgan'."""
  return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "row"


def _latest_step(row_dir: str) -> int | None:
  try:
    return int(os.path.basename(checkpoints.checkpoint_step_dir(row_dir)))
  except FileNotFoundError:
    return None


def _read_row(row_dir: str) -> dict[str, Any] | None:
  path = os.path.join(row_dir, ROW_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def run_row(config: ml_collections.ConfigDict, name: str, overrides: dict[str, Any],
            row_dir: str, split: str, *, lpips_params: Any = None) -> dict[str, Any]:
  """Trains (or resumes) one row, evaluates its last checkpoint; returns and saves the record."""
  row_config = config_base.with_overrides(config, overrides)
  previous = _read_row(row_dir)
  start = time.perf_counter()
  metric_set = evaluate_lib.metric_set(lpips_params) if row_config.eval_every_steps > 0 else None
  trainer.train_and_evaluate(row_config, row_dir, metric_set=metric_set)
  train_seconds = time.perf_counter() - start
  step = _latest_step(row_dir)
  if previous is not None and previous["step"] == step and previous["split"] == split:
    return previous  # Trained and evaluated at this checkpoint already.
  _, variables = checkpoints.load_generator(row_dir)
  result = evaluate_lib.evaluate(row_config, variables, split, os.path.join(row_dir, EVAL_DIR),
                                 lpips_params=lpips_params)
  record = {
      "name": name, "overrides": overrides, "step": step, "split": split,
      "num_images": result["num_images"],
      "train_seconds": round(train_seconds + (previous or {}).get("train_seconds", 0.0), 1),
      "metrics": {m: result[m] for m in metrics.METRICS},
      # Relative to the row folder: the figure's inputs, outputs and targets.
      "images": [{k: os.path.join(EVAL_DIR, r[k]) for k in ("input", "output", "target")}
                 for r in result["images"]],
  }
  with open(os.path.join(row_dir, ROW_FILE), "w") as f:
    json.dump(record, f, indent=1)
  return record


def _format(value: float | None, metric: str) -> str:
  if value is None:
    return "inf"
  return f"{value:.2f}" if metric == "psnr" else f"{value:.4f}"


def _describe(overrides: dict[str, Any]) -> str:
  return ", ".join(f"{k}={v}" for k, v in overrides.items()) or "(base config)"


def write_table(records: Sequence[dict[str, Any]], missing: Sequence[str], md_path: str,
                csv_path: str, title: str, notes: Sequence[str]) -> None:
  """One row per record: the four metrics, the step evaluated and the overrides."""
  lines = [f"# {title}", ""] + [f"{n}  " for n in notes] + [""]
  lines.append("| row | " + " | ".join(_HEADERS[m] for m in metrics.METRICS)
               + " | steps | overrides |")
  lines.append("| --- |" + " ---: |" * len(metrics.METRICS) + " ---: | --- |")
  for r in records:
    cells = [_format(r["metrics"][m], m) for m in metrics.METRICS]
    lines.append(f"| {r['name']} | " + " | ".join(cells)
                 + f" | {r['step']} | {_describe(r['overrides'])} |")
  lines += [f"| {name} | " + " | ".join("not run" for _ in metrics.METRICS) + " | | |"
            for name in missing]
  with open(md_path, "w") as f:
    f.write("\n".join(lines) + "\n")
  with open(csv_path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["row", *metrics.METRICS, "step", "split", "num_images", "train_seconds",
                     "overrides"])
    for r in records:
      writer.writerow([r["name"], *(r["metrics"][m] for m in metrics.METRICS), r["step"],
                       r["split"], r["num_images"], r["train_seconds"],
                       json.dumps(r["overrides"])])


def _load(path: str) -> Image.Image:
  return Image.open(path).convert("RGB")


def write_figure(records: Sequence[dict[str, Any]], row_dirs: Sequence[str], path: str,
                 num_images: int) -> None:
  """input | each row's output | ground truth, for the first `num_images` test images."""
  n = min([num_images] + [len(r["images"]) for r in records])
  first = records[0]["images"]
  w, h = _load(os.path.join(row_dirs[0], first[0]["input"])).size
  titles = ["input"] + [r["name"] for r in records] + ["ground truth"]
  # Titles wrapped to the column width (PIL's default font is ~6 px a character).
  titles = [textwrap.wrap(t, max(1, w // 6), break_long_words=True) or [""] for t in titles]
  header = 12 * max(len(t) for t in titles) + 4
  pad = 2
  canvas = Image.new("RGB", (len(titles) * (w + pad) - pad, header + n * (h + pad)), "white")
  draw = ImageDraw.Draw(canvas)
  for c, lines in enumerate(titles):
    draw.multiline_text((c * (w + pad) + 2, 1), "\n".join(lines), fill="black", spacing=2)
  for i in range(n):
    cells = [os.path.join(row_dirs[0], first[i]["input"])]
    cells += [os.path.join(d, r["images"][i]["output"]) for r, d in zip(records, row_dirs)]
    cells.append(os.path.join(row_dirs[0], first[i]["target"]))
    for c, cell in enumerate(cells):
      canvas.paste(_load(cell).resize((w, h)), (c * (w + pad), header + i * (h + pad)))
  canvas.save(path)


def run_grid(config: ml_collections.ConfigDict, grid: str, workdir: str, *,
             rows: dict[str, dict[str, Any]] | None = None, row_index: int | None = None,
             split: str = "test", figure_images: int = 4, command: str = "") -> dict[str, Any]:
  """Runs the grid's rows (or one of them) and writes <grid>.md/.csv/.png from all done rows."""
  rows = ablations.GRIDS[grid] if rows is None else rows
  names = list(rows)
  selected = names if row_index is None else [names[row_index]]
  row_dirs = {name: os.path.join(workdir, grid, slug(name)) for name in names}
  lpips_params = None
  for name in selected:
    logging.warning("ablation %s: row %r in %s", grid, name, row_dirs[name])
    if lpips_params is None:
      from pix2pix_jax.eval import lpips  # pylint: disable=g-import-not-at-top
      lpips_params = lpips.load_params()
    run_row(config, name, rows[name], row_dirs[name], split, lpips_params=lpips_params)

  done = {name: r for name in names if (r := _read_row(row_dirs[name])) is not None}
  records = [done[name] for name in names if name in done]
  missing = [name for name in names if name not in done]
  outputs = {k: os.path.join(workdir, f"{grid}.{k}") for k in ("md", "csv", "png")}
  if records:
    m = config.model
    notes = [
        f"Dataset {config.data.name}, split {records[0]['split']} "
        f"({records[0]['num_images']} images), {config.data.crop_size}x{config.data.crop_size}, "
        f"ngf {m.ngf}, ndf {m.ndf}, num_downs {m.num_downs}, batch {config.batch_size}, "
        f"{config.num_train_steps} steps per row.",
        "Metrics: mean over the split in the paper's test mode (dropout on, per-image "
        "BatchNorm statistics, seed 0); conventions in pix2pix_jax/eval/metrics.py.",
    ]
    if command:
      notes.append(f"Command: `{command}`")
    write_table(records, missing, outputs["md"], outputs["csv"],
                ablations.TITLES.get(grid, grid), notes)
    write_figure(records, [row_dirs[r["name"]] for r in records], outputs["png"],
                 figure_images)
  return {"records": records, "missing": missing, "outputs": outputs}


def define_flags() -> None:
  """Flags are defined only when run as a program, so that the module imports cleanly."""
  flags.DEFINE_enum("grid", None, list(ablations.GRIDS), "Which table to reproduce.")
  flags.DEFINE_integer("steps", None, "Training steps per row (config.num_train_steps).")
  flags.DEFINE_string("workdir", None, "Rows train in WORKDIR/<grid>/<row>; tables go here.")
  flags.DEFINE_integer("row_index", None, "Train and evaluate only this row (0-based).")
  flags.DEFINE_string("split", "test", "Split to evaluate every row on.")
  flags.DEFINE_integer("figure_images", 4, "Test images (figure rows) in <grid>.png.")


def main(argv: list[str]) -> None:
  del argv
  f = flags.FLAGS
  if not f["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  if f.grid is None or f.workdir is None or f.steps is None:
    sys.exit("error: --grid, --steps and --workdir are required")
  config = f.config
  config.num_train_steps = f.steps
  command = shlex.join(["python", "-m", "pix2pix_jax.eval.ablate", *sys.argv[1:]])
  try:
    out = run_grid(config, f.grid, f.workdir, row_index=f.row_index, split=f.split,
                   figure_images=f.figure_images, command=command)
  except (FileNotFoundError, KeyError, ValueError) as e:
    sys.exit(f"error: {e}")
  for r in out["records"]:
    print(json.dumps({"row": r["name"], "step": r["step"]} | r["metrics"]))
  if out["records"]:
    print("wrote", ", ".join(out["outputs"].values()))


def run(argv: list[str]) -> None:
  define_flags()
  config_flags.DEFINE_config_file("config", "configs/default.py",
                                  "The dataset's config file (overridable with --config.<field>).")
  app.run(main, argv)


if __name__ == "__main__":
  run(sys.argv)
