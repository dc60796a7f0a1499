"""Translates images with a trained generator: one PNG per input, named after it.

    python -m pix2pix_jax.serving.translate --workdir DIR --input IMG_OR_FOLDER --output FOLDER \
        [--size_mode pad|resize] [--eval_mode] [--seed N] [--batch_size N] [--step N] \
        [--output_bits 8|16|same] [--tile SIZE --overlap PIXELS]

`--checkpoint PATH` (a checkpoints folder or one step's folder) replaces --workdir. Any size
and aspect ratio, grayscale/RGB/RGBA inputs, 8 or 16 bits per sample (16-bit PNG and TIFF keep
all their bits); outputs have the inputs' sizes and, by default, their bit depth. By default
the paper's test mode (dropout on, per-image BatchNorm statistics); --eval_mode is
deterministic. --tile translates each image in overlapping SIZE x SIZE tiles, blended
(`pix2pix_jax.serving.tiling`): any image size in bounded memory.
"""

import os
import zlib

from absl import app
from absl import flags

from pix2pix_jax.data import image_io
from pix2pix_jax.nn import generate as generate_lib
from pix2pix_jax.serving import checkpoint_flags
from pix2pix_jax.serving import inference
from pix2pix_jax.serving import tiling
from pix2pix_jax.train import checkpoints

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# Files read and translated at a time, so that a large folder does not fill the memory.
CHUNK = 64

def list_inputs(path: str) -> list[str]:
  if os.path.isfile(path):
    return [path]
  if not os.path.isdir(path):
    raise FileNotFoundError(f"--input {path} does not exist")
  files = sorted(os.path.join(path, f) for f in os.listdir(path)
                 if f.lower().endswith(IMAGE_EXTENSIONS)
                 and os.path.isfile(os.path.join(path, f)))
  if not files:
    raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {path}")
  return files


def output_names(files: list[str]) -> list[str]:
  """photo.jpg -> photo.png; refuses two inputs that would write the same file."""
  names = [os.path.splitext(os.path.basename(f))[0] + ".png" for f in files]
  seen: dict[str, str] = {}
  for f, name in zip(files, names):
    if name in seen:
      raise ValueError(f"{seen[name]} and {f} would both be written to {name}; rename one")
    seen[name] = f
  return names


def file_id(name: str) -> int:
  """The dropout-noise id of an output name: a file's output depends only on it and the seed."""
  return zlib.crc32(name.encode("utf-8"))


def translate_files(checkpoint: str, input_path: str, output_dir: str, *, step: int | None = None,
                    size_mode: str = "pad", eval_mode: bool = False, seed: int = 0,
                    batch_size: int = 8, output_bits: int | str = "same",
                    tile: int | None = None, overlap: int = 0) -> list[str]:
  """Translates every image of `input_path` into `output_dir`; returns the written paths.

  With `tile`, one image at a time in tiles (size_mode does not apply: tiles keep the
  pixel scale)."""
  files = list_inputs(input_path)
  names = output_names(files)
  config, variables = checkpoints.load_generator(checkpoint, step)
  if tile is not None:
    tiling.check_tiles(config, tile, overlap)
  inference.output_dtype(output_bits, "uint8")  # A bad value fails before any work.
  generate = generate_lib.make_generate_fn(config, eval_mode)
  os.makedirs(output_dir, exist_ok=True)
  written = []
  chunk = 1 if tile is not None else CHUNK
  for start in range(0, len(files), chunk):
    images = [image_io.read_image(f, sixteen_bit=True) for f in files[start:start + chunk]]
    ids = [file_id(n) for n in names[start:start + chunk]]
    if tile is not None:
      outputs = [tiling.translate_tiled(
          config, variables, images[0], tile=tile, overlap=overlap, eval_mode=eval_mode,
          seed=seed, image_id=ids[0], batch_size=batch_size, output_bits=output_bits,
          generate_fn=generate)]
    else:
      outputs = inference.translate(config, variables, images, size_mode=size_mode,
                                    eval_mode=eval_mode, seed=seed, batch_size=batch_size,
                                    image_ids=ids, generate_fn=generate,
                                    output_bits=output_bits)
    del images
    for name, out in zip(names[start:start + chunk], outputs):
      path = os.path.join(output_dir, name)
      image_io.write_png(path, out)
      written.append(path)
  return written


def define_flags() -> None:
  """Flags are defined only when run as a program, so that the module imports cleanly."""
  checkpoint_flags.define()
  flags.DEFINE_string("input", None, "An image file or a folder of images.", required=True)
  flags.DEFINE_string("output", None, "Folder for the PNG outputs.", required=True)
  flags.DEFINE_enum("size_mode", "pad", inference.FIT_MODES,
                    "pad: reflect-pad to a multiple of 2**num_downs (resnet_*: 4) and crop back; "
                    "resize: resize to the training size and back.")
  flags.DEFINE_bool("eval_mode", False, "Deterministic: no dropout, BatchNorm running averages.")
  flags.DEFINE_integer("seed", 0, "Dropout noise seed (the default test mode).")
  flags.DEFINE_integer("batch_size", 8, "Images (or tiles) per generator call.")
  flags.DEFINE_enum("output_bits", "same", inference.OUTPUT_BITS,
                    "Bits per sample of the PNGs written; same: each input's.")
  flags.DEFINE_integer("tile", None, "Translate in SIZE x SIZE tiles (a multiple of "
                       "2**num_downs), blended: for images of any size.")
  flags.DEFINE_integer("overlap", 64, "Pixels neighbouring tiles share (with --tile; a "
                       "multiple of 2**num_downs, below the tile size).")


def main(argv: list[str]) -> None:
  del argv
  f = flags.FLAGS
  try:
    written = translate_files(
        checkpoint_flags.path(), f.input, f.output, step=f.step, size_mode=f.size_mode,
        eval_mode=f.eval_mode, seed=f.seed, batch_size=f.batch_size,
        output_bits=f.output_bits, tile=f.tile, overlap=f.overlap)
  except (FileNotFoundError, ValueError) as e:
    checkpoint_flags.exit_with(e)
  print(f"wrote {len(written)} image(s) to {f.output}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
