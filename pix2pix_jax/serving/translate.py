"""Translates images with a trained generator: one PNG per input, named after it.

    python -m pix2pix_jax.serving.translate --workdir DIR --input IMG_OR_FOLDER --output FOLDER \
        [--size_mode pad|resize] [--eval_mode] [--seed N] [--batch_size N] [--step N]

`--checkpoint PATH` (a checkpoints folder or one step's folder) replaces --workdir. Any size
and aspect ratio, grayscale/RGB/RGBA inputs; outputs have the inputs' sizes. By default the
paper's test mode (dropout on, per-image BatchNorm statistics); --eval_mode is deterministic.
"""

import os
import zlib

from absl import app
from absl import flags

from pix2pix_jax.data import image_io
from pix2pix_jax.nn import generate as generate_lib
from pix2pix_jax.serving import checkpoint_flags
from pix2pix_jax.serving import inference
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
                    batch_size: int = 8) -> list[str]:
  """Translates every image of `input_path` into `output_dir`; returns the written paths."""
  files = list_inputs(input_path)
  names = output_names(files)
  config, variables = checkpoints.load_generator(checkpoint, step)
  generate = generate_lib.make_generate_fn(config, eval_mode)
  os.makedirs(output_dir, exist_ok=True)
  written = []
  for start in range(0, len(files), CHUNK):
    images = [image_io.read_image(f) for f in files[start:start + CHUNK]]
    outputs = inference.translate(config, variables, images, size_mode=size_mode,
                                  eval_mode=eval_mode, seed=seed, batch_size=batch_size,
                                  image_ids=[file_id(n) for n in names[start:start + CHUNK]],
                                  generate_fn=generate)
    for name, out in zip(names[start:start + CHUNK], outputs):
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
  flags.DEFINE_integer("batch_size", 8, "Images per generator call.")


def main(argv: list[str]) -> None:
  del argv
  f = flags.FLAGS
  try:
    written = translate_files(
        checkpoint_flags.path(), f.input, f.output, step=f.step, size_mode=f.size_mode,
        eval_mode=f.eval_mode, seed=f.seed, batch_size=f.batch_size)
  except (FileNotFoundError, ValueError) as e:
    checkpoint_flags.exit_with(e)
  print(f"wrote {len(written)} image(s) to {f.output}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
