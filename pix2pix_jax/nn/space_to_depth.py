"""The U-Net's stride-2 layers as stride-1 2x2 convolutions on 2x2 pixel blocks.

Conv2d(4, 2, 1) is a 2x2 convolution of its space-to-depth input, and ConvTranspose2d(4, 2,
1) one to 4 * out channels followed by depth-to-space; the kernels regroup to match. Pure
reshapes, shared by the CPU forms that compute these layers (nn/cpu_lowering.py) and their
kernels prepared for inference (nn/cpu_inference.py).
"""

from typing import Callable

import jax
import jax.numpy as jnp

NO_PADDING = ((0, 0), (0, 0))


def space_to_depth(x: jax.Array) -> jax.Array:
  """(n, h, w, c) -> (n, ceil(h / 2), ceil(w / 2), (p, q, c)): pixel (2i + p, 2j + q) becomes
  channels (p, q) of block (i, j); odd sizes get a zero row/column at the bottom/right."""
  n, h, w, c = x.shape
  x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
  hb, wb = x.shape[1] // 2, x.shape[2] // 2
  return x.reshape(n, hb, 2, wb, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, hb, wb, 4 * c)


def strided_on_blocks(x: jax.Array, conv: Callable[[jax.Array], jax.Array]) -> jax.Array:
  """Conv2d(4, 2, 1) of x, given `conv`, its 2x2 convolution of the space-to-depth input."""
  h, w = x.shape[1:3]
  # Odd sizes get one more row/column of padding; the extra output row/column is dropped.
  y = conv(space_to_depth(jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))))
  return y[:, :h // 2, :w // 2]


def strided_kernel(kernel: jax.Array) -> jax.Array:
  """Conv2d(4, 2, 1)'s (4, 4, in, out) kernel as its space-to-depth form's (2, 2, 4 in, out)."""
  cin, cout = kernel.shape[2:]
  k = kernel.reshape(2, 2, 2, 2, cin, cout).transpose(0, 2, 1, 3, 4, 5)
  return k.reshape(2, 2, 4 * cin, cout)


def transposed_kernel(kernel: jax.Array) -> jax.Array:
  """ConvTranspose2d(4, 2, 1)'s (4, 4, in, out) kernel as its s2d form's (2, 2, in, 4 out)."""
  cin, cout = kernel.shape[2:]
  k = kernel.reshape(2, 2, 2, 2, cin, cout)[::-1, :, ::-1]  # (a', p, b', q, in, out)
  return k.transpose(0, 2, 4, 1, 3, 5).reshape(2, 2, cin, 4 * cout)


def depth_to_space(y: jax.Array, out_hw: tuple[int, int] | None = None) -> jax.Array:
  """The s2d form's (n, h + 1, w + 1, (p, q, out)) blocks as the (2h, 2w) output (or out_hw)."""
  n, hb, wb, c4 = y.shape
  h, w, cout = hb - 1, wb - 1, c4 // 4
  oh, ow = out_hw or (2 * h, 2 * w)
  y = y.reshape(n, hb, wb, 2, 2, cout).transpose(0, 1, 3, 2, 4, 5)
  return y.reshape(n, 2 * hb, 2 * wb, cout)[:, 1:1 + oh, 1:1 + ow]
