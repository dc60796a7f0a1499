"""Stride-1 4x4 convolutions by Winograd's minimal filtering, F(2x2, 4x4) (Lavin & Gray 2016).

Each 2x2 output tile is read from a 5x5 input tile: y = A^T [(G w G^T) * (B^T d B)] A. The
products become 25 matrix products (one per transformed tap) over the tiles, 25 instead of
the direct convolution's 64 multiplications per 2x2 output and channel pair, 2.56x fewer;
the transforms are additions and power-of-two scalings over activations. The gradients are
written out (a custom VJP) instead of differentiated through the transforms, which XLA:CPU
runs slower than the direct convolution: the input gradient is the same Winograd correlation
of g with the flipped kernel; the weight gradient transforms g's tiles by A and contracts
them with the input's transformed tiles, then maps the 5x5 result back through G.

Exact in real arithmetic; in float32 the outputs and gradients differ from the direct
convolution by ~1e-5 of their largest value (tests/test_winograd.py), like cuDNN's Winograd
kernels. Interpolation points 0, 1, -1, 1/2 and infinity keep the transforms' entries small.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

Padding = tuple[tuple[int, int], tuple[int, int]]

# Points 0, 1, -1, 1/2, infinity: y = AT @ ((G @ w) * (BT @ d)) for the 1-D correlation
# y[i] = sum_k d[i + k] w[k], i = 0, 1 (checked in tests/test_winograd.py).
AT = np.array([[1, 1, 1, 1, 0],
               [0, 1, -1, 0.5, 1]], np.float64)
G = np.array([[1, 0, 0, 0],
              [1, 1, 1, 1],
              [1, -1, 1, -1],
              [1, 0.5, 0.25, 0.125],
              [0, 0, 0, 1]], np.float64)
BT = np.array([[1, -2, -1, 2, 0],
               [0, -0.5, 0.5, 1, 0],
               [0, -1 / 6, 0.5, -1 / 3, 0],
               [0, 8 / 3, 0, -8 / 3, 0],
               [0, 0.5, -1, -0.5, 1]], np.float64)


def _combine(terms: list[jax.Array], coefficients) -> jax.Array:
  """sum_i c_i * t_i over the non-zero coefficients (XLA fuses the views and the sums)."""
  out = None
  for t, c in zip(terms, coefficients):
    if c:
      t = t if c == 1 else t * float(c)
      out = t if out is None else out + t
  return out


def output_tiles(height: int, width: int, padding: Padding) -> tuple[int, int, int, int]:
  """(output height, output width, tile rows, tile columns) of a 4x4 stride-1 correlation."""
  (pt, pb), (pl, pr) = padding
  oh, ow = height + pt + pb - 3, width + pl + pr - 3
  return oh, ow, (oh + 1) // 2, (ow + 1) // 2


def _input_transform(x: jax.Array, padding: Padding, th: int, tw: int) -> jax.Array:
  """B^T d B for every 5x5 input tile (tiles overlap by 3): (25, n * th * tw, in)."""
  n, h, w, c = x.shape
  (pt, _), (pl, _) = padding
  # Tile (t, s) reads padded rows 2t .. 2t + 4 and columns 2s .. 2s + 4; the padding past
  # the lax padding only feeds outputs that are cropped.
  xp = jnp.pad(x, ((0, 0), (pt, 2 * th + 3 - h - pt), (pl, 2 * tw + 3 - w - pl), (0, 0)))
  rows = [xp[:, l:l + 2 * th - 1:2] for l in range(5)]
  by_rows = [_combine(rows, BT[i]) for i in range(5)]
  tiles = [_combine([r[:, :, l:l + 2 * tw - 1:2] for l in range(5)], BT[j])
           for r in by_rows for j in range(5)]
  return jnp.stack(tiles).reshape(25, n * th * tw, c)


def _output_transform(m: jax.Array, n: int, th: int, tw: int, oh: int, ow: int) -> jax.Array:
  """A^T M A for every tile, the 2x2 tiles put in place and cropped: (n, oh, ow, out)."""
  c = m.shape[-1]
  m = m.reshape(5, 5, n, th, tw, c)
  cols = [[_combine([m[i, j] for j in range(5)], AT[b]) for b in range(2)] for i in range(5)]
  y = jnp.stack([jnp.stack([_combine([cols[i][b] for i in range(5)], AT[a]) for b in range(2)],
                           axis=3) for a in range(2)], axis=2)  # (n, th, a, tw, b, out)
  return y.reshape(n, 2 * th, 2 * tw, c)[:, :oh, :ow]


def _batched(lhs: jax.Array, rhs: jax.Array, contract: tuple[int, int]) -> jax.Array:
  return jax.lax.dot_general(lhs, rhs, (((contract[0],), (contract[1],)), ((0,), (0,))),
                             preferred_element_type=jnp.float32).astype(lhs.dtype)


def _correlate(x: jax.Array, kernel: jax.Array, padding: Padding) -> jax.Array:
  n, h, w, _ = x.shape
  oh, ow, th, tw = output_tiles(h, w, padding)
  u = jnp.einsum("ik,jl,klco->ijco", G, G, kernel.astype(jnp.float32)).astype(kernel.dtype)
  m = _batched(_input_transform(x, padding, th, tw), u.reshape(25, *kernel.shape[2:]), (2, 1))
  return _output_transform(m, n, th, tw, oh, ow)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv4x4(x: jax.Array, kernel: jax.Array, padding: Padding) -> jax.Array:
  """lax.conv_general_dilated(x, kernel, (1, 1), padding) for a (4, 4, in, out) kernel, NHWC.

  Padding below the kernel size on each side (the input gradient's complementary padding must
  be non-negative)."""
  return _correlate(x, kernel, padding)


def _conv4x4_fwd(x, kernel, padding):
  return _correlate(x, kernel, padding), (x, kernel)


def _conv4x4_bwd(padding, residuals, g):
  x, kernel = residuals
  (pt, pb), (pl, pr) = padding
  dx = _correlate(g, kernel[::-1, ::-1].transpose(0, 1, 3, 2),
                  ((3 - pt, 3 - pb), (3 - pl, 3 - pr)))
  n, h, w, cin = x.shape
  oh, ow, th, tw = output_tiles(h, w, padding)
  # dM[i, j] = sum_ab A[a, i] A[b, j] g[2t + a, 2s + b]: the output transform's transpose.
  gp = jnp.pad(g, ((0, 0), (0, 2 * th - oh), (0, 2 * tw - ow), (0, 0)))
  gp = gp.reshape(n, th, 2, tw, 2, g.shape[-1])
  by_rows = [[_combine([gp[:, :, a, :, b] for a in range(2)], AT[:, i]) for b in range(2)]
             for i in range(5)]
  dm = jnp.stack([_combine(by_rows[i], AT[:, j]) for i in range(5) for j in range(5)])
  du = _batched(_input_transform(x, padding, th, tw), dm.reshape(25, n * th * tw, -1), (1, 1))
  dw = jnp.einsum("ik,jl,ijco->klco", G, G, du.reshape(5, 5, cin, -1).astype(jnp.float32))
  return dx, dw.astype(kernel.dtype)


conv4x4.defvjp(_conv4x4_fwd, _conv4x4_bwd)
