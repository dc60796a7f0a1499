"""The U-Net's stride-2 layers at inference on CPU: Winograd F(4x4, 2x2) of their
space-to-depth 2x2 convolutions (nn/space_to_depth.py), each split at its kernel.

`prepare_*` is the work on the kernel alone (nn/generate.prepare does it once per loaded
model, nn/cpu_inference.py); `*_apply(x, prepare_*(kernel))` is the layer, for inference
only: nn/cpu_lowering.py picks these where they pay and nothing differentiates them.
"""

import jax
import jax.numpy as jnp

from pix2pix_jax.nn import space_to_depth as s2d
from pix2pix_jax.nn import winograd


def prepare_strided(kernel: jax.Array) -> jax.Array:
  """Conv2d(4, 2, 1)'s (4, 4, in, out) kernel as `strided_apply` reads it: its s2d form's
  (2, 2, 4 in, out) kernel transformed for F(4x4, 2x2), (25, 4 in, out)."""
  return winograd.transform_kernel(s2d.strided_kernel(kernel), winograd.F4X4_2X2)


def strided_apply(x: jax.Array, u: jax.Array) -> jax.Array:
  """Conv2d(4, 2, 1) of x at inference, from `prepare_strided(kernel)`: its s2d outputs fill
  whole tiles at the U-Net's levels."""
  return s2d.strided_on_blocks(
      x, lambda x: winograd.correlate_transformed(x, u, s2d.NO_PADDING,
                                                  winograd.F4X4_2X2))


def prepare_transposed(kernel: jax.Array) -> jax.Array:
  """ConvTranspose2d(4, 2, 1)'s (4, 4, in, out) kernel as `transposed_apply` reads it:
  its s2d form's (2, 2, in, 4 out) kernel transformed for F(4x4, 2x2), (25, in, 4 out)."""
  return winograd.transform_kernel(s2d.transposed_kernel(kernel), winograd.F4X4_2X2)


def transposed_apply(x: jax.Array, u: jax.Array) -> jax.Array:
  """ConvTranspose2d(4, 2, 1) of x at inference, from `prepare_transposed(kernel)`.

  The s2d form's (h + 1) x (w + 1) blocks are one past whole 4x4 tiles at the U-Net's levels
  (17, 33, 65), and a row of tiles for one row of blocks would cost up to a third more
  products. So F(4x4, 2x2) computes the h x w blocks (x padded on the top and left only), and
  the last block row and column, of which the crop keeps one phase, are products with the
  kernel's taps, which u holds (winograd.kernel_taps): two taps each read the input, as one
  product of the two shifted rows (columns) stacked with K = 2 * in.
  """
  n, h, w, cin = x.shape
  cout = u.shape[-1] // 4
  taps = winograd.kernel_taps(u, winograd.F4X4_2X2)  # taps[a][b]: (in, (p, q, out))
  blocks = winograd.correlate_transformed(x, u, ((1, 0), (1, 0)), winograd.F4X4_2X2)
  y = s2d.depth_to_space(blocks, (2 * h - 1, 2 * w - 1))  # output rows, columns [0, 2h - 1)

  def edge(line: jax.Array, k0: jax.Array, k1: jax.Array, phase_axis: int) -> jax.Array:
    """(n, length, in) input line padded by one at its start -> block i reads entries i - 1
    and i with taps k0 and k1, keeping phase 0 along `phase_axis` (1: p, 2: q): (n, length,
    (other phase, out)) -> the output line (n, 2 * length, out) before its crop."""
    lhs = jnp.concatenate([line[:, :-1], line[:, 1:]], axis=-1)
    k = jnp.concatenate([k0, k1]).reshape(2 * cin, 2, 2, cout)
    k = jax.lax.index_in_dim(k, 0, phase_axis, keepdims=False).reshape(2 * cin, 2 * cout)
    z = jax.lax.dot_general(lhs, k, (((2,), (0,)), ((), ())),
                            preferred_element_type=jnp.float32).astype(x.dtype)
    return z.reshape(n, 2 * z.shape[1], cout)

  # Block row h, phase p = 0: output row 2h - 1, columns 2c + q - 1 for blocks c in [0, w].
  row = jnp.pad(x[:, h - 1], ((0, 0), (1, 1), (0, 0)))
  last_row = edge(row, taps[0][0], taps[0][1], 1)[:, 1:2 * w + 1]
  # Block column w, phase q = 0: output column 2w - 1, rows 2m + p - 1 for blocks m < h.
  col = jnp.pad(x[:, :, w - 1], ((0, 0), (1, 0), (0, 0)))
  last_col = edge(col, taps[0][0], taps[1][0], 2)[:, 1:2 * h]
  y = jnp.concatenate([y, last_col[:, :, None]], axis=2)
  return jnp.concatenate([y, last_row[:, None]], axis=1)
