"""What a person watches while training runs: scalars and sample grids in the workdir.

Scalars go to `metrics.jsonl` (one JSON object per log step, for scripts) and to TensorBoard;
sample grids (input | output | target, one row per fixed validation pair) go to
`samples/step_XXXXXXX.png` and TensorBoard. TensorBoard needs TensorFlow's summary writer;
on hosts without TensorFlow the JSON and PNG files are still written.
"""

import json
import os
from typing import Any, Mapping

import numpy as np

from pix2pix_jax.data import image_io


def to_rgb_uint8(images: np.ndarray) -> np.ndarray:
  """[-1, 1] floats to uint8, grayscale repeated to RGB so every panel of a grid is RGB."""
  images = np.asarray(images, np.float32)
  if images.shape[-1] == 1:
    images = np.repeat(images, 3, axis=-1)
  return image_io.to_uint8(images[..., :3])


def image_grid(rows: list[list[np.ndarray]], pad: int = 2) -> np.ndarray:
  """Tiles same-size HxWx3 uint8 panels into one image with `pad` white pixels between."""
  h, w = rows[0][0].shape[:2]
  n_rows, n_cols = len(rows), max(len(r) for r in rows)
  grid = np.full((n_rows * (h + pad) + pad, n_cols * (w + pad) + pad, 3), 255, np.uint8)
  for i, row in enumerate(rows):
    for j, panel in enumerate(row):
      y, x = pad + i * (h + pad), pad + j * (w + pad)
      grid[y:y + h, x:x + w] = panel
  return grid


def sample_grid(inputs: np.ndarray, outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
  """One row per pair: input | output | target."""
  inputs, outputs, targets = map(to_rgb_uint8, (inputs, outputs, targets))
  return image_grid([[a, b, c] for a, b, c in zip(inputs, outputs, targets)])


class SummaryWriter:
  """Writes scalars and images under a workdir; only process 0 should create one."""

  def __init__(self, workdir: str):
    self._workdir = workdir
    os.makedirs(os.path.join(workdir, "samples"), exist_ok=True)
    self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
    self._tb: Any = None
    try:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      self._tf = tf
      with tf.device("/cpu:0"):
        self._tb = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard"))
    except ImportError:
      self._tf = None

  def scalars(self, step: int, values: Mapping[str, float]) -> None:
    self._jsonl.write(json.dumps({"step": step, **{k: float(v) for k, v in values.items()}}) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      with self._tb.as_default(step=step):
        for name, value in values.items():
          self._tf.summary.scalar(name, float(value))
      self._tb.flush()

  def image(self, step: int, name: str, image: np.ndarray) -> str:
    path = os.path.join(self._workdir, "samples", f"{name}_step_{step:07d}.png")
    image_io.write_png(path, image)
    if self._tb is not None:
      with self._tb.as_default(step=step):
        self._tf.summary.image(name, image[None])
      self._tb.flush()
    return path

  def close(self) -> None:
    self._jsonl.close()
    if self._tb is not None:
      self._tb.close()
