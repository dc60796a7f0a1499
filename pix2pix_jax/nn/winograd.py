"""Stride-1 4x4 and 2x2 convolutions by Winograd's minimal filtering, F(4x4, 4x4) and
F(4x4, 2x2) (Lavin & Gray 2016).

Each 4x4 output tile is read from a 7x7 (5x5) input tile: y = A^T [(G w G^T) * (B^T d B)] A.
The products become 49 (25) matrix products, one per transformed tap, over the tiles: 49
multiplications per tile and channel pair where the direct convolution takes 256 (5.2x
fewer), 25 where it takes 64 (2.6x fewer); the transforms are additions and scalings over
activations. F(4x4, 4x4) is D's 4x4 stride-1 convolution with its gradients (`conv4x4`);
F(4x4, 2x2) the stride-1 2x2 convolution that the U-Net's strided and transposed
convolutions reduce to in space-to-depth form, at inference only (`transform_kernel` and
`correlate_transformed`, called by nn/stride2_winograd.py). conv4x4's gradients are written out (a
custom VJP) instead of differentiated through the transforms, which XLA:CPU runs slower than
the direct convolution: the input gradient is the same Winograd correlation
of g with the flipped kernel; the weight gradient transforms g's tiles by A, contracts them
with the input's transformed tiles and maps the result back through G.

Exact in real arithmetic. In float32 the outputs and gradients differ from the direct
convolution's by up to ~3e-5 of their largest value (the direct sums: ~1e-7;
tests/test_winograd.py), the price of Winograd kernels everywhere (cuDNN's among them;
PyTorch's default TF32 convolutions on recent GPUs are at ~1e-3).
"""

import fractions
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Padding = tuple[tuple[int, int], tuple[int, int]]


def _matrix(text: str) -> np.ndarray:
  return np.array([[float(fractions.Fraction(v)) for v in row.split()]
                   for row in text.strip().splitlines()], np.float64)


TILE = 4
# Interpolation points 0, 1, -1, 2, -2, 1/2 and infinity. y = AT @ ((G @ w) * (BT @ d)) is the
# 1-D correlation y[i] = sum_k d[i + k] w[k], i < 4, of 7 inputs d (tests/test_winograd.py).
AT = _matrix("""
    1 1  1 1  1  1   0
    0 1 -1 2 -2 1/2  0
    0 1  1 4  4 1/4  0
    0 1 -1 8 -8 1/8  1""")
G = _matrix("""
    1  0   0   0
    1  1   1   1
    1 -1   1  -1
    1  2   4   8
    1 -2   4  -8
    1 1/2 1/4 1/8
    0  0   0   1""")
BT = _matrix("""
    1   -2    -5/4   5/2    1/4  -1/2   0
    0  -2/3    2/3   3/2   -1/6  -1/3   0
    0  -2/9    2/3  -7/18  -1/6   1/9   0
    0  1/36  -1/24  -1/18  1/24  1/36   0
    0  1/60  -1/24    0    1/24 -1/60   0
    0 128/45   0    -32/9    0   32/45  0
    0   -2     4     5/2    -5   -1/2   1""")
_A = TILE + 3  # input tile side of F(4x4, 4x4)

# F(4x4, 2x2) from the points 0, 1, -1, 1/2 and infinity: y[i] = sum_k d[i + k] w[k], i < 4,
# of 5 inputs d (tests/test_winograd.py).
AT2 = _matrix("""
    1 1  1  1   0
    0 1 -1 1/2  0
    0 1  1 1/4  0
    0 1 -1 1/8  1""")
G2 = _matrix("""
    1  0
    1  1
    1 -1
    1 1/2
    0  1""")
BT2 = _matrix("""
    1  -2    -1    2    0
    0 -1/2   1/2   1    0
    0 -1/6   1/2 -1/3   0
    0  8/3    0  -8/3   0
    0  1/2   -1  -1/2   1""")


class Transform(NamedTuple):
  """The matrices of one F(4x4, r x r): A^T (4, a), G (a, r), B^T (a, a), a = 4 + r - 1."""

  at: np.ndarray
  g: np.ndarray
  bt: np.ndarray


F4X4_4X4 = Transform(AT, G, BT)
F4X4_2X2 = Transform(AT2, G2, BT2)


def _combine(terms: list[jax.Array], coefficients) -> jax.Array:
  """sum_i c_i * t_i over the non-zero coefficients (XLA fuses the views and the sums)."""
  out = None
  for t, c in zip(terms, coefficients):
    if c:
      t = t if c == 1 else t * float(c)
      out = t if out is None else out + t
  return out


def output_tiles(height: int, width: int, padding: Padding, kernel_size: int = 4
                 ) -> tuple[int, int, int, int]:
  """(output height, output width, tile rows, tile columns) of a k x k correlation."""
  (pt, pb), (pl, pr) = padding
  oh, ow = height + pt + pb - kernel_size + 1, width + pl + pr - kernel_size + 1
  return oh, ow, -(-oh // TILE), -(-ow // TILE)


def _overlapping_windows(x: jax.Array, axis: int, count: int, a: int) -> jax.Array:
  """x's `axis` as `count` windows of a entries, TILE apart (overlapping by a - TILE): a new
  window axis of length a after it. The first TILE entries of each window are a reshape; the
  a - TILE overlapping ones are strided slices."""
  head = jax.lax.slice_in_dim(x, 0, TILE * count, axis=axis)
  shape = head.shape[:axis] + (count, TILE) + head.shape[axis + 1:]
  parts = [head.reshape(shape)]
  for k in range(TILE, a):
    tail = jax.lax.slice_in_dim(x, k, k + TILE * (count - 1) + 1, TILE, axis=axis)
    parts.append(jnp.expand_dims(tail, axis + 1))
  return jnp.concatenate(parts, axis=axis + 1)


def _input_transform(x: jax.Array, padding: Padding, th: int, tw: int,
                     bt: np.ndarray = BT) -> jax.Array:
  """B^T d B for every a x a input tile (tiles 4 apart, overlapping by a - 4): (a^2, tiles,
  in); a = 7 for F(4x4, 4x4).

  The input is materialised first (a barrier): XLA:CPU would otherwise fuse its producers
  (the previous layer's activation, the space-to-depth transpose) into each of the a^2
  outputs' fusions and recompute them there. Rows, then columns, are combined into one array
  each."""
  n, h, w, c = x.shape
  a = bt.shape[0]
  (pt, _), (pl, _) = padding
  # Tile (t, s) reads padded rows 4t .. 4t + a - 1 and the same columns; the padding past
  # the given one only feeds outputs that are cropped.
  xp = jnp.pad(jax.lax.optimization_barrier(x),
               ((0, 0), (pt, TILE * th + a - TILE - h - pt),
                (pl, TILE * tw + a - TILE - w - pl), (0, 0)))
  rows = _overlapping_windows(xp, 1, th, a)  # (n, th, a, wp, c)
  by_rows = jnp.stack([_combine([rows[:, :, l] for l in range(a)], b) for b in bt])
  cols = _overlapping_windows(by_rows, 3, tw, a)  # (a, n, th, tw, a, c)
  tiles = jnp.stack([_combine([cols[..., l, :] for l in range(a)], b) for b in bt], axis=1)
  return tiles.reshape(a * a, n * th * tw, c)


def _output_transform(mm: jax.Array, n: int, th: int, tw: int, oh: int, ow: int,
                      at: np.ndarray = AT) -> jax.Array:
  """A^T M A for every tile, the 4x4 tiles put in place and cropped: (n, oh, ow, out)."""
  c = mm.shape[-1]
  a = at.shape[1]
  mm = mm.reshape(a, a, n, th, tw, c)
  # Materialised (the barrier) rather than recomputed inside each of the 16 outputs' sums.
  cols = jax.lax.optimization_barrier(
      [[_combine([mm[i, j] for j in range(a)], at[q]) for q in range(TILE)] for i in range(a)])
  y = jnp.stack([jnp.stack([_combine([cols[i][q] for i in range(a)], at[p])
                            for q in range(TILE)], axis=3)
                 for p in range(TILE)], axis=2)  # (n, th, p, tw, q, out)
  return y.reshape(n, TILE * th, TILE * tw, c)[:, :oh, :ow]


def _batched(lhs: jax.Array, rhs: jax.Array, contract: tuple[int, int]) -> jax.Array:
  return jax.lax.dot_general(lhs, rhs, (((contract[0],), (contract[1],)), ((0,), (0,))),
                             preferred_element_type=jnp.float32).astype(lhs.dtype)


def _sandwich(w: jax.Array, left: np.ndarray, right: np.ndarray) -> jax.Array:
  """left @ w @ right^T over the two leading (spatial) axes, as sums of scaled planes: an
  einsum with these 4- and 7-long contractions runs several times slower on XLA:CPU."""
  rows = [_combine(list(w), c) for c in left]
  return jnp.stack([jnp.stack([_combine([r[l] for l in range(w.shape[1])], c) for c in right])
                    for r in rows])


def transform_kernel(kernel: jax.Array, transform: Transform = F4X4_4X4, flipped: bool = False
                     ) -> jax.Array:
  """G w G^T for every (in, out) pair of an (r, r, in, out) kernel: (a^2, in, out). Or, with
  `flipped`, of kernel[::-1, ::-1]: G's columns reversed (a reversed and transposed copy of
  the kernel made this transform an order of magnitude slower)."""
  g = transform.g[:, ::-1] if flipped else transform.g
  a = transform.bt.shape[0]
  return _sandwich(kernel, g, g).reshape(a * a, *kernel.shape[2:])


def kernel_taps(u: jax.Array, transform: Transform) -> list[list[jax.Array]] | None:
  """The r x r kernel's taps read back from its transform u = G w G^T: (in, out) each, where
  each tap has a row of G that is a unit vector (F(4x4, 2x2)'s points 0 and infinity, so
  u[0], u[4], u[20], u[24] are its four taps). None where some tap has none (F(4x4, 4x4))."""
  g = transform.g
  a, r = g.shape
  rows = []
  for k in range(r):
    unit = [i for i in range(a) if g[i, k] == 1 and np.count_nonzero(g[i]) == 1]
    if not unit:
      return None
    rows.append(unit[0])
  return [[u[rows[i] * a + rows[j]] for j in range(r)] for i in range(r)]


def correlate_transformed(x: jax.Array, u: jax.Array, padding: Padding,
                          transform: Transform = F4X4_4X4, flipped: bool = False
                          ) -> jax.Array:
  """x correlated with the kernel whose transform (`transform_kernel`) is u or, `flipped`,
  with the flipped kernel with in and out swapped (an input gradient: the swap is the
  product's contracted axis)."""
  n, h, w, _ = x.shape
  oh, ow, th, tw = output_tiles(h, w, padding, transform.g.shape[1])
  mm = _batched(_input_transform(x, padding, th, tw, bt=transform.bt), u,
                (2, 2) if flipped else (2, 1))
  return _output_transform(mm, n, th, tw, oh, ow, transform.at)


def _correlate(x: jax.Array, kernel: jax.Array, padding: Padding, flipped: bool = False,
               transform: Transform = F4X4_4X4) -> jax.Array:
  return correlate_transformed(x, transform_kernel(kernel, transform, flipped), padding,
                               transform, flipped)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv4x4(x: jax.Array, kernel: jax.Array, padding: Padding) -> jax.Array:
  """lax.conv_general_dilated(x, kernel, (1, 1), padding) for a (4, 4, in, out) kernel, NHWC.

  Padding below 4 on each side (so that the input gradient's complementary padding is not
  negative)."""
  return _correlate(x, kernel, padding)


def _conv4x4_fwd(x, kernel, padding):
  return _correlate(x, kernel, padding), (x, kernel)


def _conv4x4_bwd(padding, residuals, g):
  x, kernel = residuals
  (pt, pb), (pl, pr) = padding
  dx = _correlate(g, kernel, ((3 - pt, 3 - pb), (3 - pl, 3 - pr)), flipped=True)
  n, h, w, cin = x.shape
  oh, ow, th, tw = output_tiles(h, w, padding)
  # dM[i, j] = sum_pq A[p, i] A[q, j] g[4t + p, 4s + q]: the output transform's transpose.
  gp = jnp.pad(g, ((0, 0), (0, TILE * th - oh), (0, TILE * tw - ow), (0, 0)))
  gp = gp.reshape(n, th, TILE, tw, TILE, g.shape[-1])
  # Materialised, as in the output transform.
  by_rows = jax.lax.optimization_barrier(
      [[_combine([gp[:, :, p, :, q] for p in range(TILE)], AT[:, i]) for q in range(TILE)]
       for i in range(_A)])
  dm = jnp.stack([_combine(by_rows[i], AT[:, j]) for i in range(_A) for j in range(_A)])
  du = _batched(_input_transform(x, padding, th, tw), dm.reshape(_A * _A, n * th * tw, -1),
                (1, 1))
  dw = _sandwich(du.reshape(_A, _A, cin, -1), G.T, G.T)
  return dx, dw.astype(kernel.dtype)


conv4x4.defvjp(_conv4x4_fwd, _conv4x4_bwd)
