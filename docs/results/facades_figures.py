"""The figures of docs/results/facades.md, from the runs' evaluate folders and TensorBoard logs.

    python docs/results/facades_figures.py --pix2pix EVAL_DIR --l1 EVAL_DIR \
        --logs PIX2PIX_WORKDIR L1_WORKDIR --out docs/results [--images 8] [--first 0]

EVAL_DIR: what `python -m pix2pix_jax.eval.evaluate` wrote (metrics.json, images/). Writes
facades_test.png (rows: test images; columns: input | L1 only | pix2pix | ground truth) and
facades_curves.png (the training losses from each workdir's tensorboard/, as TensorBoard logs
them). Needs matplotlib (`pip install matplotlib`), which the library itself does not.
"""

import argparse
import glob
import json
import os

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position
from PIL import Image  # pylint: disable=wrong-import-position
from PIL import ImageDraw  # pylint: disable=wrong-import-position
from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=wrong-import-position
from tensorboard.util import tensor_util  # pylint: disable=wrong-import-position

COLUMNS = ("input", "L1 only", "pix2pix (cGAN + L1)", "ground truth")


def grid(pix2pix_dir: str, l1_dir: str, path: str, count: int, first: int, scale: int) -> None:
  records = [json.load(open(os.path.join(d, "metrics.json")))["images"]
             for d in (pix2pix_dir, l1_dir)]
  rows = []
  for k in range(first, first + count):
    gan, l1 = records[0][k], records[1][k]
    assert gan["name"] == l1["name"], (gan["name"], l1["name"])
    files = [(pix2pix_dir, gan["input"]), (l1_dir, l1["output"]), (pix2pix_dir, gan["output"]),
             (pix2pix_dir, gan["target"])]
    rows.append([Image.open(os.path.join(d, f)).convert("RGB") for d, f in files])
  w, h = rows[0][0].size
  w, h, header, gap = w * scale, h * scale, 22, 4
  canvas = Image.new("RGB", (4 * w + 3 * gap, header + len(rows) * (h + gap)), "white")
  draw = ImageDraw.Draw(canvas)
  for c, title in enumerate(COLUMNS):
    draw.text((c * (w + gap) + 4, 4), title, fill="black")
  for r, row in enumerate(rows):
    for c, image in enumerate(row):
      canvas.paste(image.resize((w, h), Image.NEAREST), (c * (w + gap), header + r * (h + gap)))
  canvas.save(path, optimize=True)


def scalars(workdir: str) -> dict[str, tuple[list[int], list[float]]]:
  events = event_accumulator.EventAccumulator(
      os.path.join(workdir, "tensorboard"), size_guidance={event_accumulator.TENSORS: 0,
                                                           event_accumulator.SCALARS: 0})
  events.Reload()
  out = {}
  for tag in events.Tags().get("tensors", []):  # tf.summary.scalar in TF 2 logs tensors.
    items = events.Tensors(tag)
    out[tag] = ([e.step for e in items],
                [float(tensor_util.make_ndarray(e.tensor_proto).reshape(-1)[0]) for e in items])
  for tag in events.Tags().get("scalars", []):
    out[tag] = ([e.step for e in events.Scalars(tag)], [e.value for e in events.Scalars(tag)])
  return out


def curves(workdirs: dict[str, str], path: str) -> None:
  logs = {name: scalars(d) for name, d in workdirs.items()}
  panels = [("G_L1", "G's L1 term (x lambda 100), training batches"),
            ("G_GAN", "G's GAN term"), ("D_loss", "D's loss (halved)"),
            ("val_l1", "validation L1 (val split, test mode)"),
            ("val_lpips", "validation LPIPS"), ("learning_rate", "learning rate")]
  fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
  for ax, (tag, title) in zip(axes.flat, panels):
    for name, log in logs.items():
      if tag in log:
        ax.plot(*log[tag], label=name, marker="o" if tag.startswith("val_") else None, ms=3)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=90)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--pix2pix", required=True)
  p.add_argument("--l1", required=True)
  p.add_argument("--logs", nargs=2, required=True, metavar=("PIX2PIX_WORKDIR", "L1_WORKDIR"))
  p.add_argument("--out", required=True)
  p.add_argument("--images", type=int, default=8)
  p.add_argument("--first", type=int, default=0)
  p.add_argument("--scale", type=int, default=1)
  a = p.parse_args()
  os.makedirs(a.out, exist_ok=True)
  grid(a.pix2pix, a.l1, os.path.join(a.out, "facades_test.png"), a.images, a.first, a.scale)
  curves({"pix2pix": a.logs[0], "L1 only": a.logs[1]},
         os.path.join(a.out, "facades_curves.png"))
  print("wrote", *glob.glob(os.path.join(a.out, "facades_*.png")))


if __name__ == "__main__":
  main()
