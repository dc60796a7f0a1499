"""A user's own pairs: side-by-side AB images, or A/ and B/ folders paired by file name.

Layouts (`path` is data.path):
  path/{train,val,test}/*.png       side by side, A left; splits from the subfolders
  path/{train,val,test}/{A,B}/*     A and B apart, paired by file name without extension
  path/*.png or path/{A,B}/*        no split folders: a seeded `val_fraction` is held out
Any size, aspect ratio and mode (1-bit, gray, gray+alpha, palette, RGB, RGBA, CMYK, 16-bit
gray, gray+alpha, RGB and RGBA PNG/TIFF); each side is stored with the fewest channels and
bits that hold all its files (16 bits if any file has them).
A tfds config is named after the folder plus a hash of its path and file listing, so two
folders (or a folder whose files changed) never share a data_dir entry.
Only regular files are read (a named pipe would block the build, a link to a device fill
memory), each up to image_io.MAX_FILE_BYTES; a file name that is not UTF-8 is kept with
surrogate escapes, stored as its \\xNN form, and reported.
"""

import dataclasses
import hashlib
import os
import re
import stat

from absl import logging
from etils import epath
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from pix2pix_jax.data import image_io
from pix2pix_jax.data.datasets import pairs

SPLITS = ("train", "val", "test")
_HOLDOUT_SEED = 0
_CHANNELS = {"1": 1, "L": 1, "I": 1, "LA": 2, "La": 2, "RGBA": 4, "RGBa": 4, "PA": 4}


@dataclasses.dataclass
class FolderConfig(tfds.core.BuilderConfig):
  path: str = ""
  paired_folders: bool = False  # A/ and B/ rather than side-by-side files.
  split_dirs: tuple[str, ...] = ()  # Split subfolders; () = hold val_fraction out.
  val_fraction: float = 0.1
  format_a: pairs.Format = pairs.RGB
  format_b: pairs.Format = pairs.RGB


def _layout_files(folder: epath.Path, paired: bool) -> list[epath.Path]:
  return ([*pairs.list_files(folder / "A"), *pairs.list_files(folder / "B")] if paired
          else pairs.list_files(folder))


def _format(modes: list[str]) -> pairs.Format:
  """The fewest channels and bits that hold every mode of one side."""
  sixteen = any(m.startswith("I") or m.endswith(_SIXTEEN) for m in modes)
  modes = [m.removesuffix(_SIXTEEN) for m in modes]
  counts = [1 if m.startswith("I") else _CHANNELS.get(m, 4 if m == "P+alpha" else 3)
            for m in modes]
  alpha = any(c in (2, 4) for c in counts)
  colour = any(c in (3, 4) for c in counts)
  channels = (3 if colour else 1) + alpha
  if sixteen and channels == 2:
    channels = 4  # 16-bit PNG has gray + alpha, but the encoder (OpenCV) does not write it.
  return ("uint16" if sixteen else "uint8", channels)


# Marks a mode whose file has 16-bit colour samples (PIL's mode names only 8-bit colour).
_SIXTEEN = ";16"
_HEADER_BYTES = 32  # Enough for a PNG's IHDR (its bit depth).


def _mode(path: epath.Path) -> str | None:
  """The PIL mode from the header, + ";16" for 16-bit colour; None if unreadable or not a
  regular file (the build reports it then)."""
  try:
    if not stat.S_ISREG(os.stat(path).st_mode):
      return None  # Opening a named pipe would block; a device could be read for ever.
    with open(path, "rb") as f:
      header = f.read(_HEADER_BYTES)
    with Image.open(path) as image:
      if image_io.is_sixteen_bit_colour(image, header):
        return image.mode + _SIXTEEN
      if image.mode == "P" and "transparency" in image.info:
        return "P+alpha"
      return image.mode
  except Exception:  # pylint: disable=broad-except
    return None


def make_config(path: str, val_fraction: float = 0.1) -> FolderConfig:
  """Finds the layout and formats of `path`, and names the config after its contents."""
  if not path:
    raise ValueError("data.name='folder' needs data.path (the folder of pairs)")
  root = epath.Path(os.path.abspath(os.path.expanduser(path)))
  if not root.is_dir():
    raise FileNotFoundError(f"data.path={path!r}: folder not found")
  split_dirs = tuple(s for s in SPLITS if (root / s).is_dir())
  if split_dirs and "train" not in split_dirs:
    raise FileNotFoundError(f"{root}: has {split_dirs} folders but no train/")
  if not split_dirs and not 0.0 <= val_fraction < 1.0:
    raise ValueError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
  first = root / split_dirs[0] if split_dirs else root
  paired = (first / "A").is_dir() and (first / "B").is_dir()
  files = [f for s in (split_dirs or ("",)) for f in _layout_files(root / s, paired)]
  modes = {"A": [], "B": []}
  for f in files:
    mode = _mode(f)
    for side in ("A", "B"):
      if mode is not None and (f.parent.name == side or not paired):
        modes[side].append(mode)
  stats = [(f, os.lstat(f)) for f in files]  # lstat: a dangling link is reported later.
  listing = "\n".join(f"{f.relative_to(root)}\t{st.st_size}\t{st.st_mtime_ns}"
                      for f, st in stats)
  odd = [image_io.display_name(f) for f in files
         if image_io.display_name(f.name) != os.fspath(f.name)]
  if odd:
    logging.warning("%s: %d file name(s) are not UTF-8; their pairs are named with \\xNN "
                    "escapes: %s", image_io.display_name(root), len(odd), ", ".join(odd[:10]))
  # surrogateescape: names that are not UTF-8 hash by their bytes, as the OS gave them.
  digest = hashlib.sha256(f"{root}\n{val_fraction}\n{listing}".encode(
      "utf-8", "surrogateescape")).hexdigest()[:12]
  slug = re.sub(r"[^a-z0-9]+", "_", root.name.lower()).strip("_") or "folder"
  return FolderConfig(
      name=f"{slug}_{digest}", description=f"Pairs from {root}", path=os.fspath(root),
      paired_folders=paired, split_dirs=split_dirs, val_fraction=val_fraction,
      format_a=_format(modes["A"] or ["RGB"]), format_b=_format(modes["B"] or ["RGB"]))


def _convert(array: np.ndarray, fmt: pairs.Format) -> np.ndarray:
  dtype, channels = np.dtype(fmt[0]), fmt[1]
  if array.dtype != dtype:
    array = (array.astype(np.uint16) * 257 if dtype == np.uint16
             else np.round(array / 257.0).astype(np.uint8))
  return image_io.to_channels(array, channels)


class Pix2pixFolder(tfds.core.GeneratorBasedBuilder):
  """Pairs from a folder; the config comes from `make_config(path)`."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First version."}

  def __init__(self, *, config: FolderConfig, on_bad_file: str = "error", **kwargs):
    super().__init__(config=config, **kwargs)
    self._on_bad_file = on_bad_file

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    return pairs.info(self, f"Pairs from {cfg.path}", cfg.format_a, cfg.format_b)

  def _split_generators(self, dl_manager):
    del dl_manager  # The data is already here.
    cfg = self.builder_config
    root = epath.Path(cfg.path)
    if cfg.split_dirs:
      return {s: self._generate_examples(root / s, None) for s in cfg.split_dirs}
    if cfg.val_fraction == 0:
      return {"train": self._generate_examples(root, None)}
    return {"train": self._generate_examples(root, False),
            "val": self._generate_examples(root, True)}

  def _items(self, folder: epath.Path) -> list[tuple[epath.Path | None, epath.Path | None]]:
    """(A file, B file); side-by-side files are (file, None); unmatched ones get a None."""
    if not self.builder_config.paired_folders:
      return [(f, None) for f in pairs.list_files(folder)]
    by_stem = {}
    for side, index in (("A", 0), ("B", 1)):
      for f in pairs.list_files(folder / side):
        entry = by_stem.setdefault(f.stem, [None, None])
        if entry[index] is not None:
          raise ValueError(f"{folder / side}: {entry[index].name} and {f.name} pair with the "
                           "same name; keep one")
        entry[index] = f
    return [tuple(by_stem[s]) for s in sorted(by_stem, key=pairs.natural_key)]

  def _load(self, item: tuple[epath.Path | None, epath.Path | None]) -> pairs.Pair:
    cfg = self.builder_config
    a_path, b_path = item
    if b_path is None and cfg.paired_folders:
      raise image_io.BadImageError(image_io.display_name(a_path),
                                   "has no file of the same name in B/")
    if a_path is None:
      raise image_io.BadImageError(image_io.display_name(b_path),
                                   "has no file of the same name in A/")
    if cfg.paired_folders:
      a, b = image_io.read(a_path), image_io.read(b_path)
    else:
      a, b = image_io.split_ab(image_io.read(a_path), image_io.display_name(a_path))
    return (image_io.display_name(a_path.name), _convert(a, cfg.format_a),
            _convert(b, cfg.format_b))

  def _generate_examples(self, folder: epath.Path, held_out: bool | None):
    items = self._items(folder)
    if held_out is not None:
      n_val = int(round(len(items) * self.builder_config.val_fraction))
      if self.builder_config.val_fraction > 0 and len(items) > 1:
        n_val = min(max(n_val, 1), len(items) - 1)
      chosen = set(np.random.default_rng(_HOLDOUT_SEED).permutation(len(items))[:n_val])
      items = [it for i, it in enumerate(items) if (i in chosen) == held_out]
    where = str(folder) if held_out is None else f"{folder} ({'val' if held_out else 'train'})"
    return pairs.generate(items, self._load, self._on_bad_file, where)
