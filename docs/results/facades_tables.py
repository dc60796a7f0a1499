"""Markdown rows of docs/results/facades.md from metrics.json files (evaluate's or score's).

    python docs/results/facades_tables.py "LABEL=DIR_OR_JSON[,DIR_OR_JSON...]" ...

Each argument is one row: its label, then the metrics.json files (or folders holding one) of
its runs, e.g. one per seed. A row gives each metric's mean over the runs, and with two or
more runs the sample standard deviation and the range over the runs. A second table lists
each run: its mean and, in brackets, the standard deviation over its images.
"""

import json
import os
import sys

import numpy as np

METRICS = (("l1", "L1 ↓"), ("psnr", "PSNR (dB) ↑"), ("ssim", "SSIM ↑"), ("lpips", "LPIPS ↓"))


def load(path: str) -> dict:
  if os.path.isdir(path):
    path = os.path.join(path, "metrics.json")
  with open(path) as f:
    return json.load(f)


def cell(values: list[float]) -> str:
  mean = f"{np.mean(values):.4f}"
  if len(values) < 2:
    return mean
  return (f"{mean} ± {np.std(values, ddof=1):.4f} "
          f"({min(values):.4f}–{max(values):.4f})")


def per_image_sd(result: dict, metric: str) -> float:
  values = [i[metric] for i in result["images"] if i[metric] is not None]
  return float(np.std(values, ddof=1))


def main(argv: list[str]) -> None:
  rows = [(a.rsplit("=", 1)[0], a.rsplit("=", 1)[1].split(",")) for a in argv]
  print("| run | n | " + " | ".join(name for _, name in METRICS) + " |")
  print("| --- | ---: | " + " | ".join("---:" for _ in METRICS) + " |")
  for label, paths in rows:
    runs = [load(p) for p in paths]
    print(f"| {label} | {len(runs)} | "
          + " | ".join(cell([r[m] for r in runs]) for m, _ in METRICS) + " |")
  print()
  print("| run | file | images | " + " | ".join(name for _, name in METRICS) + " |")
  print("| --- | --- | ---: | " + " | ".join("---:" for _ in METRICS) + " |")
  for label, paths in rows:
    for p in paths:
      r = load(p)
      print(f"| {label} | `{os.path.basename(os.path.normpath(p))}` | {r['num_images']} | "
            + " | ".join(f"{r[m]:.4f} ({per_image_sd(r, m):.4f})" for m, _ in METRICS) + " |")


if __name__ == "__main__":
  main(sys.argv[1:])
