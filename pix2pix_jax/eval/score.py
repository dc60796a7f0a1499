"""Scores another program's outputs (e.g. the official PyTorch test.py's) under this protocol.

    python -m pix2pix_jax.eval.score --config configs/facades.py --split test \
        --outputs results/facades_pix2pix/test_latest/images --pattern "{stem}_fake_B.png" \
        --output OUT/metrics.json [--config.<field>=<value> ...]

Numbers from two code bases are comparable only when the same targets are scored by the same
code. This reads the split's targets exactly as evaluate does (`pipeline.eval_iterator`: the
test-time geometry of the config, rounded to 8 bits), finds each image's output in
--outputs by its pair's file-name stem and position in the split (`--pattern`: "{stem}" and
"{index}" are replaced; evaluate's own outputs, for file names of letters, digits, ".", "_" and
"-", are "images/{index:05d}_{stem}_output.png"), and scores
it with evaluate's metrics. An output must have its target's size: the other program must
have produced it at the same test view (for the official datasets: crop_size square).
Writes a JSON file shaped like evaluate's metrics.json (means, then per-image values).
"""

import json
import os
import sys
from typing import Any

from absl import app
from absl import flags
import ml_collections
from ml_collections import config_flags
import numpy as np

from pix2pix_jax.data import image_io
from pix2pix_jax.data import pipeline
from pix2pix_jax.data import transforms
from pix2pix_jax.eval import evaluate
from pix2pix_jax.eval import metrics
from pix2pix_jax.train import validation


def score(config: ml_collections.ConfigDict, split: str, outputs_dir: str,
          pattern: str = "{stem}.png", *, batch_size: int = 8,
          metric_set: validation.MetricSet | None = None) -> dict[str, Any]:
  """Means and per-image metrics of the outputs in `outputs_dir` against `split`'s targets."""
  metric_set = evaluate.metric_set() if metric_set is None else metric_set
  geometry = pipeline.test_spec(config)
  records: list[dict[str, Any]] = []
  for batch in pipeline.eval_iterator(config, split, batch_size):
    fakes, targets, names, files = [], [], [], []
    for k in np.flatnonzero(batch["mask"]):
      name = str(batch["name"][k])
      shape = tuple(int(s) for s in batch["shape"][k])
      target = image_io.from_float(transforms.restore(batch["target"][k], shape, geometry),
                                   np.uint8)
      file = pattern.format(stem=os.path.splitext(os.path.basename(name))[0],
                            index=len(records) + len(names))
      path = os.path.join(outputs_dir, file)
      if not os.path.exists(path):
        raise FileNotFoundError(f"no output for {name}: {path} does not exist")
      fake = image_io.flatten_for_model(image_io.read_image(path), target.shape[-1])
      if fake.shape != target.shape:
        raise ValueError(f"{path}: output is {fake.shape[1]}x{fake.shape[0]}, its target "
                         f"{target.shape[1]}x{target.shape[0]}; produce it at the test view")
      fakes.append(fake)
      targets.append(target)
      names.append(name)
      files.append(file)
    scores = validation.score_images(fakes, targets, metric_set)
    for name, file, values in zip(names, files, scores):
      records.append({"index": len(records), "name": name, "output": file} | values)
  if not records:
    raise ValueError(f"split {split!r} of {config.data.name} has no examples")
  means = {m: float(np.mean([r[m] for r in records])) for m in metrics.METRICS}
  number = evaluate.json_number
  return ({m: number(means[m]) for m in metrics.METRICS}
          | {"split": split, "dataset": config.data.name, "num_images": len(records),
             "outputs": os.path.abspath(outputs_dir), "pattern": pattern,
             "images": [{k: (number(v) if k in metrics.METRICS else v) for k, v in r.items()}
                        for r in records]})


def main(argv: list[str]) -> None:
  del argv
  f = flags.FLAGS
  try:
    result = score(f.config, f.split, f.outputs, f.pattern)
  except (FileNotFoundError, ValueError) as e:
    sys.exit(f"error: {e}")
  if f.output:
    os.makedirs(os.path.dirname(os.path.abspath(f.output)), exist_ok=True)
    with open(f.output, "w") as out:
      json.dump(result, out, indent=1, allow_nan=False)
  print(json.dumps({m: result[m] for m in metrics.METRICS} | {"images": result["num_images"]}))


if __name__ == "__main__":
  config_flags.DEFINE_config_file("config", None, "The dataset's config (data.*, model sizes).",
                                  lock_config=True)
  flags.DEFINE_string("split", "test", "Dataset split whose targets are scored.")
  flags.DEFINE_string("outputs", None, "Folder of the outputs to score.", required=True)
  flags.DEFINE_string("pattern", "{stem}.png",
                      "Output file name per pair; {stem}: the pair's file name without "
                      "extension (official test.py: {stem}_fake_B.png); {index}: its position.")
  flags.DEFINE_string("output", None, "JSON file for the means and per-image values.")
  flags.mark_flag_as_required("config")
  app.run(main)
