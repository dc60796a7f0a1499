"""The trained generator as a function of 8- or 16-bit images: load it, translate images.

    config, variables = checkpoints.load_generator("workdirs/facades")  # pix2pix_jax.train
    outputs = inference.translate(config, variables, [np.asarray(Image.open("a.jpg"))])

Test-time behaviour is the paper's by default (pix2pix_jax.nn.generate): dropout on, each
image's own BatchNorm statistics, a dropout key folded from the seed and the image's position
in the input, so outputs do not depend on the batch size or on the other images.
`eval_mode=True` is the deterministic alternative. uint16 images keep their 16 bits on the
way in (scaled to [-1, 1] from 65535); outputs are written in `output_bits`.
"""

from typing import Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from pix2pix_jax.data import image_io
from pix2pix_jax.data import transforms
from pix2pix_jax.nn import generate as generate_lib
from pix2pix_jax.nn import models
from pix2pix_jax.nn.generate import Variables

# How translate fits an image to the network: pad to the generator's size multiple, or resize.
FIT_MODES = ("pad", "resize")
# Bits per sample of the outputs: 8, 16, or the input's ("same").
OUTPUT_BITS = ("8", "16", "same")


def output_dtype(output_bits: int | str, input_dtype: np.dtype) -> np.dtype:
  """The dtype an output is written in: uint8, uint16, or the input's for "same"."""
  if str(output_bits) not in OUTPUT_BITS:
    raise ValueError(f"output_bits must be one of {OUTPUT_BITS}, got {output_bits!r}")
  if str(output_bits) == "same":
    return np.dtype(input_dtype)
  return np.dtype(np.uint16 if str(output_bits) == "16" else np.uint8)


def _batches(indices: list[int], batch_size: int) -> Iterable[list[int]]:
  for start in range(0, len(indices), batch_size):
    yield indices[start:start + batch_size]


def translate(config: ml_collections.ConfigDict, variables: Variables,
              images: Sequence[np.ndarray] | np.ndarray, *, size_mode: str = "pad",
              eval_mode: bool = False, seed: int = 0, batch_size: int = 8,
              image_ids: Sequence[int] | None = None,
              generate_fn: Callable[[Variables, jax.Array, jax.Array], jax.Array] | None = None,
              output_bits: int | str = "same") -> list[np.ndarray]:
  """uint8/uint16 images of any sizes and channel counts -> HxWx`output_nc` outputs, same
  sizes, in `output_bits` (8, 16, or "same": each input's own depth).

  size_mode "pad": reflect-pad to the generator's size multiple, crop the output back (keeps the
  pixel scale; in test mode the mirrored border also enters the BatchNorm statistics).
  "resize": resize to the training crop size and the output back (keeps the scale the
  network was trained at, relative to the image). Images of one padded shape share
  a compiled function; the last batch of a shape is filled up with copies so that every batch
  has `batch_size` images and each shape compiles once. Image i's dropout key is the seed's
  folded with image_ids[i] (default: i), so an image's output depends only on (seed, id).
  """
  if size_mode not in FIT_MODES:
    raise ValueError(f"size_mode must be one of {FIT_MODES}, got {size_mode!r}")
  m = config.model
  multiple = models.size_multiple(m)
  generate = generate_fn or generate_lib.make_generate_fn(config, eval_mode)
  ids = list(range(len(images))) if image_ids is None else list(image_ids)
  if len(ids) != len(images):
    raise ValueError(f"{len(ids)} image_ids for {len(images)} images")
  dtypes = [output_dtype(output_bits, np.asarray(image).dtype) for image in images]
  prepared, crops = [], []
  for image in images:
    x = image_io.flatten_for_model(image, m.input_nc)
    if size_mode == "pad":
      x, crop = transforms.pad_to_multiple(x, multiple)
    else:
      crop = x.shape[:2]
      size = config.data.crop_size
      if size % multiple:
        raise ValueError(f"data.crop_size {size} is not a multiple of {multiple}")
      x = image_io.resize_integer(x, size, size)
    prepared.append(x)
    crops.append(crop)

  by_shape: dict[tuple[int, ...], list[int]] = {}
  for i, x in enumerate(prepared):
    by_shape.setdefault(x.shape, []).append(i)
  outputs: list[np.ndarray | None] = [None] * len(prepared)
  for shape, indices in by_shape.items():
    shape_variables = variables
    if len(indices) > batch_size:  # Several calls: their kernel-only work once.
      shape_variables = generate_lib.prepare(config, variables, (batch_size, *shape),
                                             eval_mode)
    for batch in _batches(indices, batch_size):
      filled = batch + [batch[-1]] * (batch_size - len(batch))
      x = np.stack([image_io.to_float(prepared[i]) for i in filled])
      keys = generate_lib.image_keys(seed, [ids[i] for i in filled])
      y = np.asarray(generate(shape_variables, jnp.asarray(x), keys))
      for i, out in zip(batch, y):
        out = image_io.from_float(out, dtypes[i])
        if size_mode == "pad":
          outputs[i] = out[crops[i]]
        else:
          outputs[i] = image_io.resize_integer(out, *crops[i])
  return outputs  # type: ignore[return-value]
