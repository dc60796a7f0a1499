"""Translates an image of any size in overlapping tiles, blended, in bounded memory.

    output = tiling.translate_tiled(config, variables, image, tile=512, overlap=128)

The image is cut into `tile` x `tile` tiles that share `overlap` pixels with their
neighbours (the last row and column reach past the image into its mirror image, as
`inference.translate`'s padding does). Tiles go through the jitted generator `batch_size` at
a time, one row of tiles after another, and are blended with a separable window: along an
edge shared with a neighbour, the first quarter of the overlap has weight 0 (the tile's
output there has seen its own border), the middle half rises as sin^2 (a neighbour's falls as
cos^2, so the weights sum to 1) and the rest has weight 1. Only the rows of tiles in flight
are held in float: besides the input and the output image, memory is one float32 strip of
`tile` rows the image's width and one batch of tiles.

In eval mode, where G is a function of its input alone, the result equals the whole image's
(away from the image's own border) when a quarter of the overlap covers the network's
context and tile and overlap are multiples of the generator's size multiple (2**num_downs
for the U-Net: every tile then sits on the same grid of strided convolutions as the whole
image). In the paper's test mode each tile
normalises with its own BatchNorm statistics and draws its own dropout noise; the window
hides the seams.
"""

import math
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from pix2pix_jax.data import image_io
from pix2pix_jax.nn import generate as generate_lib
from pix2pix_jax.nn import models
from pix2pix_jax.nn.generate import Variables
from pix2pix_jax.serving import inference


def check_tiles(config: ml_collections.ConfigDict, tile: int, overlap: int) -> None:
  """Raises ValueError for a tile size the network cannot take or an overlap that breaks the
  window's sum (at most two tiles may overlap anywhere)."""
  multiple = models.size_multiple(config.model)
  if tile < multiple or tile % multiple:
    raise ValueError(f"--tile {tile} must be a positive multiple of the generator's size "
                     f"multiple, {multiple}")
  if not 0 <= overlap <= tile // 2:
    raise ValueError(f"--overlap {overlap} must be in [0, tile / 2 = {tile // 2}]")


def ramp(overlap: int) -> np.ndarray:
  """Weights of a tile's first `overlap` pixels along an edge it shares with a neighbour:
  0 for a quarter, sin^2 over the middle half, then 1; ramp[d] + ramp[overlap - 1 - d] = 1."""
  margin = overlap // 4
  rise = overlap - 2 * margin
  d = np.arange(overlap, dtype=np.float64)
  t = np.clip((d - margin + 0.5) / max(rise, 1), 0.0, 1.0)
  return np.sin(0.5 * np.pi * t)**2


def axis_tiles(size: int, tile: int, overlap: int, multiple: int) -> tuple[list[int], int]:
  """(tile starts, tile length) along one axis of `size` pixels: one tile padded to a
  multiple when the image fits in it, else tiles `tile - overlap` apart that cover it."""
  if size <= tile:
    return [0], -(-size // multiple) * multiple
  stride = tile - overlap
  count = math.ceil((size - overlap) / stride)
  return [i * stride for i in range(count)], tile


def axis_window(length: int, overlap: int, first: bool, last: bool) -> np.ndarray:
  """One tile's weights along an axis: ramps only at edges shared with a neighbour."""
  w = np.ones(length, np.float64)
  if overlap:
    r = ramp(overlap)
    if not first:
      w[:overlap] = r
    if not last:
      w[length - overlap:] = r[::-1]
  return w.astype(np.float32)


def reflect_indices(start: int, length: int, size: int) -> np.ndarray:
  """Indices of pixels start..start+length-1 of an axis mirrored past its end (numpy's
  'reflect': the edge pixel is not repeated)."""
  i = np.arange(start, start + length)
  if size == 1:
    return np.zeros_like(i)
  period = 2 * (size - 1)
  i = i % period
  return np.where(i < size, i, period - i)


def _balanced_batch(count: int, batch_size: int) -> int:
  """The batch size that runs `count` tiles in as few calls as `batch_size` would, with the
  fewest filler tiles (every call has one shape, so one compilation)."""
  calls = -(-count // batch_size)
  return -(-count // calls)


def translate_tiled(config: ml_collections.ConfigDict, variables: Variables,
                    image: np.ndarray, *, tile: int, overlap: int | None = None,
                    eval_mode: bool = False, seed: int = 0, image_id: int = 0,
                    batch_size: int = 8, output_bits: int | str = "same",
                    generate_fn: Callable[[Variables, jax.Array, jax.Array], jax.Array]
                    | None = None) -> np.ndarray:
  """uint8/uint16 HxW(xC) image of any size -> HxWx`output_nc` output in `output_bits`.

  `overlap` defaults to a quarter of the tile. Tile k (row-major) of image `image_id` draws
  its dropout key from (seed, image_id, k), so outputs do not depend on the batch size.
  """
  image = np.asarray(image)
  overlap = tile // 4 if overlap is None else overlap
  check_tiles(config, tile, overlap)
  m = config.model
  multiple = models.size_multiple(m)
  dtype = inference.output_dtype(output_bits, image.dtype)
  generate = generate_fn or generate_lib.make_generate_fn(config, eval_mode)
  height, width = image.shape[:2]
  row_starts, tile_h = axis_tiles(height, tile, overlap, multiple)
  col_starts, tile_w = axis_tiles(width, tile, overlap, multiple)
  # Neighbouring tiles share `overlap` pixels only where the axis has several tiles.
  overlap_h = overlap if len(row_starts) > 1 else 0
  overlap_w = overlap if len(col_starts) > 1 else 0
  col_windows = [axis_window(tile_w, overlap_w, j == 0, j == len(col_starts) - 1)
                 for j in range(len(col_starts))]
  col_index = [reflect_indices(c, tile_w, width) for c in col_starts]
  batch = _balanced_batch(len(col_starts), batch_size)
  if len(row_starts) * len(col_starts) > batch:  # Several calls: their kernel work once.
    variables = generate_lib.prepare(config, variables, (batch, tile_h, tile_w, m.input_nc),
                                     eval_mode)
  image_key = generate_lib.image_keys(seed, [image_id])[0]
  padded_w = col_starts[-1] + tile_w
  out = np.empty((height, width, m.output_nc), dtype)
  strip = np.zeros((tile_h, padded_w, m.output_nc), np.float32)  # rows row_start + [0, tile_h)

  for i, row_start in enumerate(row_starts):
    rows = reflect_indices(row_start, tile_h, height)
    row_window = axis_window(tile_h, overlap_h, i == 0, i == len(row_starts) - 1)
    band = image[rows]  # The tile row: tile_h x width, of the input's dtype.
    for first in range(0, len(col_starts), batch):
      cols = list(range(first, min(first + batch, len(col_starts))))
      filled = cols + [cols[-1]] * (batch - len(cols))
      x = np.stack([image_io.to_float(image_io.flatten_for_model(band[:, col_index[j]],
                                                                  m.input_nc))
                    for j in filled])
      indices = jnp.asarray([i * len(col_starts) + j for j in filled], jnp.uint32)
      keys = jax.vmap(lambda k: jax.random.fold_in(image_key, k))(indices)
      y = np.asarray(generate(variables, jnp.asarray(x), keys))
      for j, tile_out in zip(cols, y):
        weights = row_window[:, None, None] * col_windows[j][None, :, None]
        strip[:, col_starts[j]:col_starts[j] + tile_w] += weights * tile_out
    del band
    done = (row_starts[i + 1] - row_start if i + 1 < len(row_starts) else tile_h)
    rows_out = min(done, height - row_start)
    out[row_start:row_start + rows_out] = image_io.from_float(strip[:rows_out, :width], dtype)
    # The overlap with the next row of tiles carries over; the rest starts again from 0.
    strip[:tile_h - done] = strip[done:]
    strip[tile_h - done:] = 0.0
  return out
