"""The demo's model side: the loaded generator, its inputs fitted to a few size buckets.

Uploads are checked before decoding (format, size); every input is reflect-padded to one of
a few bucket shapes (tiled with the largest if larger), so the generator is compiled
for a bounded set of shapes whatever clients send.
"""

import email.parser
import email.policy
import io
import os
import threading
import time
from typing import Any

import ml_collections
import numpy as np
from PIL import Image

from pix2pix_jax.data import image_io
from pix2pix_jax.data import transforms
from pix2pix_jax.nn import generate as generate_lib
from pix2pix_jax.nn import models
from pix2pix_jax.serving import inference
from pix2pix_jax.serving import tiling
from pix2pix_jax.train import checkpoints

# Formats PIL may decode from an upload; anything else (PDF, TIFF, PSD, ...) is refused.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF")
MAX_SIDE = 8192  # Uploads larger than this a side are refused before decoding.
# Inputs are padded up to a bucket, crop_size * 2**k a side (k < BUCKET_LEVELS), and larger
# ones tiled with tiles of the largest: every shape compiles the generator once, so at most
# BUCKET_LEVELS**2 shapes are ever compiled.
BUCKET_LEVELS = 3

# CMP facades classes: the synthetic builder's colours, which follow the official label maps.
# Cityscapes: the dataset's own colour encoding of its 19 evaluation classes.
CITYSCAPES = (("road", (128, 64, 128)), ("sidewalk", (244, 35, 232)),
              ("building", (70, 70, 70)), ("wall", (102, 102, 156)),
              ("fence", (190, 153, 153)), ("pole", (153, 153, 153)),
              ("traffic light", (250, 170, 30)), ("traffic sign", (220, 220, 0)),
              ("vegetation", (107, 142, 35)), ("terrain", (152, 251, 152)),
              ("sky", (70, 130, 180)), ("person", (220, 20, 60)), ("rider", (255, 0, 0)),
              ("car", (0, 0, 142)), ("truck", (0, 0, 70)), ("bus", (0, 60, 100)),
              ("train", (0, 80, 100)), ("motorcycle", (0, 0, 230)),
              ("bicycle", (119, 11, 32)))
# What each side of a dataset's pairs shows: decides how the page lets one draw the input.
SIDES = {"synthetic": ("labels", "photo"), "facades": ("photo", "labels"),
         "cityscapes": ("photo", "labels"), "maps": ("photo", "photo"),
         "edges2shoes": ("edges", "photo"), "edges2handbags": ("edges", "photo"),
         "night2day": ("photo", "photo")}


class BadRequest(Exception):
  """A client error: its message goes back to the client with `status`."""

  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status = status


def palette(config: ml_collections.ConfigDict) -> list[dict[str, Any]]:
  """The label classes the page offers: a config's `data.palette`, else the dataset's own."""
  custom = config.data.get("palette")
  if custom:  # [[name, [r, g, b]], ...] or [[r, g, b], ...]
    entries = [(e[0], e[1]) if isinstance(e[0], str) else (f"class {i}", e)
               for i, e in enumerate(custom)]
  elif config.data.name in ("synthetic", "facades"):
    from pix2pix_jax.data.datasets import synthetic  # pylint: disable=g-import-not-at-top
    entries = list(zip(synthetic.CLASSES, synthetic.PALETTE.tolist()))
  elif config.data.name == "cityscapes":
    entries = list(CITYSCAPES)
  else:
    return []
  return [{"name": name, "color": "#%02x%02x%02x" % tuple(int(v) for v in rgb)}
          for name, rgb in entries]


def input_kind(config: ml_collections.ConfigDict) -> str:
  """labels (palette), edges (black pen on white) or photo (any colour) for the input side."""
  if config.data.get("palette"):
    return "labels"
  a, b = SIDES.get(config.data.name, ("photo", "photo"))
  return a if config.data.direction == "AtoB" else b


class Demo:
  """The loaded generator, compiled once, behind a lock (one translation at a time)."""

  def __init__(self, checkpoint: str, step: int | None = None, *, eval_mode: bool = False,
               seed: int = 0):
    self.step_dir = checkpoints.checkpoint_step_dir(checkpoint, step)
    self.config, self.variables = checkpoints.load_generator(self.step_dir)
    self.step = int(os.path.basename(self.step_dir))
    self.eval_mode = eval_mode
    self.seed = seed
    self.size = int(self.config.data.crop_size)
    self.bucket_sides = bucket_sides(self.size, models.size_multiple(self.config.model))
    self._generate = generate_lib.make_generate_fn(self.config, eval_mode)
    self._lock = threading.Lock()
    self._compiled: set[tuple[int, int]] = set()
    kind = input_kind(self.config)
    blank = np.full((self.size, self.size, 3), 0 if kind == "labels" else 255, np.uint8)
    start = time.perf_counter()
    self.translate(blank)  # Compiles for the canvas size now, not on the first stroke.
    self.warmup_seconds = time.perf_counter() - start
    self.info = {  # No absolute path: any page the browser shows could read it.
        "checkpoint": os.path.join(*self.step_dir.split(os.sep)[-3:]), "step": self.step,
        "dataset": self.config.data.name,
        "direction": self.config.data.direction, "input_size": self.size,
        "input_nc": int(self.config.model.input_nc),
        "output_nc": int(self.config.model.output_nc), "kind": kind,
        "palette": palette(self.config) if kind == "labels" else [],
        "eval_mode": eval_mode, "seed": seed}

  def compiled_shapes(self) -> frozenset[tuple[int, int]]:
    """The (height, width) buckets the generator has been compiled for so far."""
    with self._lock:
      return frozenset(self._compiled)

  def translate(self, image: np.ndarray) -> np.ndarray:
    """uint8 image -> uint8 output of the same size; image id 0, so same input, same output.

    The image is reflect-padded to its size bucket and the output cropped back; one larger
    than the largest bucket is translated in overlapping tiles of that size (serving/tiling.py),
    so that every shape the generator runs is a bucket's.
    """
    h, w = image.shape[:2]
    x = image_io.flatten_for_model(image, int(self.config.model.input_nc))
    top = self.bucket_sides[-1]
    if max(h, w) > top:
      padded, crop = transforms.pad_to(x, max(h, top), max(w, top))
      with self._lock:
        self._compiled.add((top, top))
        return tiling.translate_tiled(
            self.config, self.variables, padded, tile=top, eval_mode=self.eval_mode,
            seed=self.seed, batch_size=1, output_bits=8, generate_fn=self._generate)[crop]
    bucket = tuple(next(s for s in self.bucket_sides if s >= n) for n in x.shape[:2])
    padded, crop = transforms.pad_to(x, *bucket)
    with self._lock:
      self._compiled.add(bucket)
      return inference.translate(self.config, self.variables, [padded],
                                 eval_mode=self.eval_mode, seed=self.seed, batch_size=1,
                                 image_ids=[0], generate_fn=self._generate)[0][crop]


def bucket_sides(crop_size: int, multiple: int, levels: int = BUCKET_LEVELS) -> list[int]:
  """crop_size * 2**k for k < levels, each rounded up to a multiple of 2**num_downs."""
  return [-(-crop_size * 2**k // multiple) * multiple for k in range(levels)]


def decode_image(data: bytes) -> np.ndarray:
  """Upload bytes -> uint8 array, refusing what is not a small enough image (4xx)."""
  if not data:
    raise BadRequest(400, "empty body: send an image (PNG or JPEG)")
  try:
    with Image.open(io.BytesIO(data)) as probe:
      fmt, (w, h) = probe.format, probe.size
  except Exception as e:  # pylint: disable=broad-except  # PIL raises many kinds.
    raise BadRequest(415, f"not an image PIL can read ({type(e).__name__})") from e
  if fmt not in IMAGE_FORMATS:
    raise BadRequest(415, f"unsupported image format {fmt}; send one of {IMAGE_FORMATS}")
  if max(w, h) > MAX_SIDE:
    raise BadRequest(413, f"image {w}x{h} is too large (at most {MAX_SIDE} pixels a side)")
  try:
    return image_io.read_image(io.BytesIO(data))  # type: ignore[arg-type]  # PIL reads files.
  except Exception as e:  # pylint: disable=broad-except  # Truncated or corrupt data.
    raise BadRequest(400, f"could not decode the {fmt} image ({e})") from e


def multipart_file(content_type: str, body: bytes) -> bytes:
  """The first file (or `image` field) of a multipart/form-data body."""
  message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
      b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
  if not message.is_multipart():
    raise BadRequest(400, "malformed multipart/form-data body")
  for part in message.iter_parts():
    if part.get_filename() or part.get_param("name", header="content-disposition") == "image":
      return part.get_payload(decode=True) or b""
  raise BadRequest(400, "multipart body has no file part")


def encode_png(image: np.ndarray) -> bytes:
  out = io.BytesIO()
  image_io.write_png(out, image)
  return out.getvalue()
