"""The six datasets of the pix2pix paper, as published by its authors.

Each archive holds `<name>/<split>/*.jpg`, every file a side-by-side pair with A on the
left. The builder downloads the archive from the official URL, or reads `<name>.tar.gz` or
an extracted `<name>/` from manual_dir, and writes A and B as separate lossless images.
Only facades' checksum is recorded (pix2pix_jax/datasets/checksums.tsv): it is the only
archive we could hash; the others are downloaded unverified.
"""

import dataclasses

from etils import epath
import tensorflow_datasets as tfds

from pix2pix_jax.data import image_io
from pix2pix_jax.data.datasets import pairs

URL = "http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/{}.tar.gz"
_CITATION = """@inproceedings{isola2017image,
  title={Image-to-Image Translation with Conditional Adversarial Networks},
  author={Isola, Phillip and Zhu, Jun-Yan and Zhou, Tinghui and Efros, Alexei A},
  booktitle={CVPR}, year={2017}}"""


@dataclasses.dataclass
class Pix2pixConfig(tfds.core.BuilderConfig):
  splits: tuple[str, ...] = ("train", "val")
  a: str = ""  # What the left half (A) shows.
  b: str = ""  # What the right half (B) shows.


CONFIGS = (
    Pix2pixConfig(name="facades", splits=("train", "val", "test"), a="photo",
                  b="CMP facades label map", description="400/100/106, 256x256"),
    Pix2pixConfig(name="cityscapes", a="photo", b="semantic label map",
                  description="2975/500, 256x256"),
    Pix2pixConfig(name="maps", a="aerial photo", b="Google map",
                  description="1096/1098, 600x600"),
    Pix2pixConfig(name="edges2shoes", a="edges", b="photo",
                  description="49825/200, 256x256"),
    Pix2pixConfig(name="edges2handbags", a="edges", b="photo",
                  description="138567/200, 256x256"),
    Pix2pixConfig(name="night2day", splits=("train", "val", "test"), a="night photo",
                  b="day photo", description="17823/10/2287, 256x256"),
)
NAMES = tuple(c.name for c in CONFIGS)


def find_manual(manual_dir: epath.PathLike, name: str) -> epath.Path | None:
  """`<name>/` (extracted) or `<name>.tar.gz` in manual_dir, if there."""
  for candidate in (epath.Path(manual_dir) / name, epath.Path(manual_dir) / f"{name}.tar.gz"):
    if candidate.exists():
      return candidate
  return None


def _root(extracted: epath.Path, name: str, splits: tuple[str, ...]) -> epath.Path:
  """The folder holding the split folders: `<name>/` inside the archive, or itself."""
  for root in (extracted / name, extracted):
    if all((root / s).is_dir() for s in splits):
      return root
  raise FileNotFoundError(
      f"{extracted}: expected folders {', '.join(f'{name}/{s}/' for s in splits)} (the "
      "layout of the official archive)")


class Pix2pix(tfds.core.GeneratorBasedBuilder):
  """Side-by-side pairs of the official pix2pix datasets, split into A and B."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First version."}
  BUILDER_CONFIGS = list(CONFIGS)
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Optional. Put <name>.tar.gz from http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/"
      " (or its extracted <name>/ folder) in manual_dir to skip the download.")

  def __init__(self, *, on_bad_file: str = "error", **kwargs):
    super().__init__(**kwargs)
    self._on_bad_file = on_bad_file

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    return pairs.info(
        self, f"pix2pix {cfg.name}: A = {cfg.a} (left), B = {cfg.b} (right).",
        homepage="https://phillipi.github.io/pix2pix/", citation=_CITATION)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    cfg = self.builder_config
    try:
      manual = find_manual(dl_manager.manual_dir, cfg.name)
    except AssertionError:  # No manual_dir, or an empty one.
      manual = None
    if manual is None:
      extracted = dl_manager.download_and_extract(URL.format(cfg.name))
    elif manual.is_dir():
      extracted = manual.parent
    else:
      extracted = dl_manager.extract(manual)
    root = _root(epath.Path(extracted), cfg.name, cfg.splits)
    return {s: self._generate_examples(root / s, s) for s in cfg.splits}

  def _generate_examples(self, folder: epath.Path, split: str):
    def load(path: epath.Path) -> pairs.Pair:
      a, b = image_io.split_ab(image_io.read(path), str(path))
      return path.name, a, b

    return pairs.generate(pairs.list_files(folder), load, self._on_bad_file,
                          f"{self.builder_config.name} {split} ({folder})")
