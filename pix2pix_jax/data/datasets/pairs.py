"""What every pix2pix builder writes: the features of a pair and the bad-file policy.

One place for the example layout keeps the official, folder and synthetic datasets readable
by the same input pipeline, and one place for `on_bad_file` keeps the promise that a build
never ends silently smaller than its source.
"""

import re
from typing import Any, Callable, Iterable, Iterator, TypeVar

from absl import logging
from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from pix2pix_jax.data import image_io

ON_BAD_FILE = ("error", "skip")
# Every builder writes array_record, which `tfds.data_source` (the numpy reader) needs.
FILE_FORMAT = "array_record"

Item = TypeVar("Item")
Pair = tuple[str, np.ndarray, np.ndarray]  # (name, A (H, W, Ca), B (H, W, Cb))


Format = tuple[str, int]  # (numpy dtype name: uint8 | uint16, channels 1..4) of a side.
RGB = ("uint8", 3)


def features(format_a: Format = RGB, format_b: Format = RGB) -> tfds.features.FeaturesDict:
  """A and B as lossless PNG (re-encoding JPEG would lose detail), name, size (H, W)."""

  def image(fmt: Format) -> tfds.features.Image:
    return tfds.features.Image(shape=(None, None, fmt[1]), dtype=np.dtype(fmt[0]).type,
                               encoding_format="png")

  return tfds.features.FeaturesDict({
      "image_a": image(format_a),
      "image_b": image(format_b),
      "name": tfds.features.Text(doc="File name of the pair (of A for A/ B/ folders)."),
      "size": tfds.features.Tensor(shape=(2,), dtype=np.int32,
                                   doc="(height, width) of A and of B in the source."),
  })


def info(builder: tfds.core.DatasetBuilder, description: str, format_a: Format = RGB,
         format_b: Format = RGB, homepage: str = "", citation: str = ""
         ) -> tfds.core.DatasetInfo:
  """Examples stay in generation (natural file name) order, so eval order is fixed."""
  return tfds.core.DatasetInfo(
      builder=builder, description=description, features=features(format_a, format_b),
      homepage=homepage, citation=citation, disable_shuffling=True)


def example(pair: Pair) -> dict[str, Any]:
  name, a, b = pair
  image_io.check_pair(a, b, name)
  return {"image_a": image_io.encode_png(a), "image_b": image_io.encode_png(b), "name": name,
          "size": np.array(a.shape[:2], np.int32)}


def generate(items: Iterable[Item], load: Callable[[Item], Pair], on_bad_file: str,
             where: str) -> Iterator[tuple[str, dict[str, Any]]]:
  """Yields (key, example) for each item; a bad one raises or is counted and skipped.

  `load` raises image_io.BadImageError for a bad item. Skips are logged with their names and
  a split left with no example at all is an error either way.
  """
  if on_bad_file not in ON_BAD_FILE:
    raise ValueError(f"on_bad_file must be one of {ON_BAD_FILE}, got {on_bad_file!r}")
  skipped = []
  count = 0
  for item in items:
    try:
      pair = load(item)
      ex = example(pair)
    except image_io.BadImageError as e:
      if on_bad_file == "error":
        raise image_io.BadImageError(
            e.name, f"{e.reason} (in {where}; set data.on_bad_file='skip' to leave bad "
            "files out)") from None
      skipped.append(str(e))
      continue
    count += 1
    yield pair[0], ex
  if skipped:
    logging.warning("%s: skipped %d bad file(s) of %d:\n  %s", where, len(skipped),
                    len(skipped) + count, "\n  ".join(skipped))
  if not count:
    raise ValueError(f"{where}: no usable image pairs"
                     + (f" ({len(skipped)} bad files skipped)" if skipped else ""))


def natural_key(name: str) -> list[Any]:
  """'2.jpg' before '10.jpg', as people number their files."""
  return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def list_files(folder: epath.PathLike) -> list[epath.Path]:
  """The non-hidden files of a folder in natural order; a missing or empty folder is an error.

  Every file counts, images or not: a stray non-image is reported, never silently ignored.
  """
  folder = epath.Path(folder)
  if not folder.is_dir():
    raise FileNotFoundError(f"{folder}: folder not found")
  # Not is_file(): a dangling link must be reported as unreadable, not left out.
  files = [p for p in folder.iterdir() if not p.name.startswith(".") and not p.is_dir()]
  files.sort(key=lambda p: natural_key(p.name))
  if not files:
    raise FileNotFoundError(f"{folder}: no image files in this folder")
  return files
