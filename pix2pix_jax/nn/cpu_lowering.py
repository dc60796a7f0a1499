"""How the networks' convolutions (and Adam's moments) are computed on XLA:CPU, and only there.

nn/conv.py and train/optimizers.py pick these with `jax.lax.platform_dependent` where a
computation is lowered for CPU; other platforms get lax's convolutions. Each form computes
lax's function with the same parameters (tests/test_layers.py, tests/test_winograd.py); the
form per layer is chosen from static shapes. Why each is faster, with figures:
benchmarks/RESULTS.md.
"""

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from pix2pix_jax.nn import space_to_depth as s2d
from pix2pix_jax.nn import stride2_winograd
from pix2pix_jax.nn import winograd

PyTree = Any

Padding = tuple[tuple[int, int], tuple[int, int]]
_NHWC = ("NHWC", "HWIO", "NHWC")


def _window_taps(xp: jax.Array, kh: int, kw: int, stride: int, ho: int, wo: int
                 ) -> list[jax.Array]:
  """The (n, ho, wo, in) input window of each kernel tap of a padded input, row-major."""
  return [xp[:, ky:ky + stride * (ho - 1) + 1:stride, kx:kx + stride * (wo - 1) + 1:stride]
          for ky in range(kh) for kx in range(kw)]


def _lax_conv(x: jax.Array, kernel: jax.Array, stride: int, padding: Padding) -> jax.Array:
  if stride == 1:
    return _stride1_conv(x, kernel, padding)
  return jax.lax.conv_general_dilated(x, kernel, (stride, stride), padding,
                                      dimension_numbers=_NHWC)


# Stride-1 convolutions with at least this many input and output channels go to oneDNN (D's
# conv_3, the space-to-depth transposed convolutions' own convolutions, their input
# gradients); narrower ones are as fast or faster in YNNPACK (benchmarks/RESULTS.md).
_ONEDNN_MIN_CHANNELS = 128


def _stride1_conv(x: jax.Array, kernel: jax.Array, padding: Padding) -> jax.Array:
  """lax's stride-1 convolution, wide layers steered from YNNPACK to oneDNN.

  XLA:CPU hands YNNPACK every convolution it accepts, and YNNPACK declines those whose
  output is wider than their input; oneDNN (with the Makefile's XLA flags; XLA's own
  convolution without them) then runs them. So the right padding grows until the output is
  one column wider than the input, and the extra columns (one or two in the paper's
  networks) are dropped: the same sums, a few per cent more products, a faster step
  (benchmarks/RESULTS.md).
  """
  (pt, pb), (pl, pr) = padding
  kh, kw, cin, cout = kernel.shape
  wo = x.shape[2] + pl + pr - kw + 1
  extra = 0
  if min(cin, cout) >= _ONEDNN_MIN_CHANNELS:
    extra = max(0, x.shape[2] + 1 - wo)
  y = jax.lax.conv_general_dilated(x, kernel, (1, 1), ((pt, pb), (pl, pr + extra)),
                                   dimension_numbers=_NHWC)
  return y[:, :, :wo] if extra else y


def _stride1_conv_dx(g: jax.Array, kernel: jax.Array, padding: Padding) -> jax.Array:
  """The input gradient of a stride-1 convolution with padding below the kernel size: g
  correlated with the flipped kernel (in and out swapped) under the complementary padding,
  itself a `_stride1_conv` (so steered like the forward pass).

  Where the kernel outweighs g (D's conv_3 at batch 1), g and the result are flipped instead
  of the kernel: XLA:CPU's fused reverse-and-transpose of a kernel is much slower than a
  plain transpose.
  """
  (pt, pb), (pl, pr) = padding
  kh, kw = kernel.shape[:2]
  if g.size >= kernel.size:
    # Reverse, then transpose: the other order is slower (benchmarks/RESULTS.md).
    return _stride1_conv(g, kernel[::-1, ::-1].transpose(0, 1, 3, 2),
                         ((kh - 1 - pt, kh - 1 - pb), (kw - 1 - pl, kw - 1 - pr)))
  # Correlating flip(g) with the unflipped kernel is the flip of the same correlation; the
  # complementary padding is mirrored with it.
  dx = _stride1_conv(g[:, ::-1, ::-1], kernel.transpose(0, 1, 3, 2),
                     ((kh - 1 - pb, kh - 1 - pt), (kw - 1 - pr, kw - 1 - pl)))
  return dx[:, ::-1, ::-1]


# F(4x4, 2x2) pays for a stride-1 2x2 convolution (Conv2d(4, 2, 1) and ConvTranspose2d(4, 2,
# 1) in space-to-depth form) from about this many 4x4 output tiles and channels each side,
# where its multiplications are at most this fraction of the direct convolution's (partial
# tiles at the edges cost whole ones): the U-Net's outer levels, not its innermost ones or
# the 3-channel output layer; at batch 1, no layer whose 2x2 convolution has fewer than
# 32x32 outputs (benchmarks/RESULTS.md, "Winograd's input transform, and the transposed
# layers").
_WINOGRAD2_MIN_TILES = 64
_WINOGRAD2_MIN_CHANNELS = 128
_WINOGRAD2_MAX_PRODUCTS = 0.6


def _winograd2x2_pays(n: int, oh: int, ow: int, cin: int, cout: int, dtype: Any) -> bool:
  """Whether F(4x4, 2x2) pays for a stride-1 2x2 convolution with this (n, oh, ow) output
  and these channels, at inference."""
  tiles = n * -(-oh // winograd.TILE) * -(-ow // winograd.TILE)
  return (dtype == jnp.float32 and min(cin, cout) >= _WINOGRAD2_MIN_CHANNELS
          and tiles >= _WINOGRAD2_MIN_TILES
          and 25 * tiles <= _WINOGRAD2_MAX_PRODUCTS * 4 * n * oh * ow)


def strided_winograd_pays(x_shape: tuple[int, ...], cout: int, dtype: Any) -> bool:
  """Whether Conv2d(4, 2, 1) of an input of this shape runs as its space-to-depth 2x2
  convolution by Winograd at inference (4 * in channels, the strided output)."""
  n, h, w, cin = x_shape
  return _winograd2x2_pays(n, -(-h // 2), -(-w // 2), 4 * cin, cout, dtype)


def transposed_winograd_pays(x_shape: tuple[int, ...], cout: int, dtype: Any) -> bool:
  """Whether ConvTranspose2d(4, 2, 1)'s s2d form runs its 2x2 convolution ((h + 1) x (w + 1)
  outputs, 4 * out channels) by Winograd at inference."""
  n, h, w, cin = x_shape
  return _winograd2x2_pays(n, h + 1, w + 1, cin, 4 * cout, dtype)


def _forward_conv(x: jax.Array, kernel: jax.Array, stride: int, padding: Padding
                  ) -> jax.Array:
  """conv_gemm_dw's function where nothing differentiates it: inference.

  Conv2d(4, 2, 1) runs as its space-to-depth 2x2 convolution by Winograd F(4x4, 2x2) where
  that pays: 2.6x fewer multiplications. Training keeps the direct forms, whose gradients
  are fast. The same function; float32 rounding within 3e-5 of the largest value
  (tests/test_winograd.py).
  """
  cout = kernel.shape[-1]
  if ((stride, *kernel.shape[:2], padding) == (2, 4, 4, ((1, 1), (1, 1)))
      and strided_winograd_pays(x.shape, cout, x.dtype)):
    return stride2_winograd.strided_apply(x, stride2_winograd.prepare_strided(kernel))
  return _lax_conv(x, kernel, stride, padding)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_gemm_dw(x: jax.Array, kernel: jax.Array, stride: int, padding: Padding
                 ) -> jax.Array:
  """lax's convolution, with the weight gradient as matrix products.

  XLA:CPU computes a convolution's weight gradient as another convolution, several times
  slower than the forward one; as one product per tap, dw[ky, kx] = x_tap^T dy contracting
  pixels, the same sums run at GEMM speed. Few input channels (the RGB layers) stack the
  taps into one im2col product; stride-1 layers with fewer outputs than inputs shift the
  cotangent instead; stride-2 layers with 16-127 input channels do that on the
  space-to-depth input. The input gradient is lax's, except for Conv2d(4, 2, 1) (below).
  Undifferentiated (inference), the convolution is `_forward_conv`'s.
  """
  return _forward_conv(x, kernel, stride, padding)


def _conv_gemm_dw_fwd(x, kernel, stride, padding):
  # Differentiated: the direct form.
  return _lax_conv(x, kernel, stride, padding), (x, kernel)


def _conv_gemm_dw_bwd(stride, padding, residuals, g):
  x, kernel = residuals
  kh, kw, cin, cout = kernel.shape
  if (stride, kh, kw, padding) == (2, 4, 4, ((1, 1), (1, 1))):
    # Conv2d(4, 2, 1)'s input gradient is ConvTranspose2d(4, 2, 1) of g with in and out
    # swapped, here as one stride-1 convolution; lax's is an input-dilated convolution
    # (three quarters of its products with inserted zeros), slower on XLA:CPU.
    dx = _transposed_conv_s2d(g, kernel.transpose(0, 1, 3, 2), x.shape[1:3])
  elif stride == 1 and max(max(p) for p in padding) < min(kh, kw):
    dx = _stride1_conv_dx(g, kernel, padding)
  else:
    dx, = jax.vjp(lambda x: _lax_conv(x, kernel, stride, padding), x)[1](g)
  n, ho, wo, _ = g.shape
  xp = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
  pixels = (((0,), (0,)), ((), ()))  # contract the pixel axis of both operands

  def shifted_frames_dw(xp, kh, kw):
    """Tap (ky, kx) pairs xp[i + ky, j + kx] with g[i, j], i.e. g placed at offset (ky, kx)
    in an xp-sized frame: one product of all taps' frames with xp, which is read once.
    Returns (kh, kw, out, in)."""
    _, hp, wp, c = xp.shape
    frames = jnp.stack([jnp.pad(g, ((0, 0), (ky, hp - ho - ky), (kx, wp - wo - kx), (0, 0)))
                        for ky in range(kh) for kx in range(kw)], axis=-2)  # (n, hp, wp, t, out)
    dw = jax.lax.dot_general(frames.reshape(n * hp * wp, kh * kw * cout),
                             xp.reshape(n * hp * wp, c), pixels,
                             preferred_element_type=jnp.float32)  # (t * out, in)
    return dw.reshape(kh, kw, cout, c)

  if stride == 1 and cout < cin:
    # Shift the (smaller) cotangent instead of the input.
    dw = shifted_frames_dw(xp, kh, kw).transpose(0, 1, 3, 2)
    return dx, dw.astype(kernel.dtype)
  if stride == 2 and kh % 2 == 0 and kw % 2 == 0 and 16 <= cin < 128:
    # Tap (2a + p, 2b + q) reads phase (p, q) of block (i + a, j + b) of the space-to-depth
    # input: the stride-1 (kh/2, kw/2) case above with 4 * in channels, one product with
    # K = 4 * in where the per-tap products have K = in (below GEMM speed under 128).
    dw = shifted_frames_dw(s2d.space_to_depth(xp), kh // 2, kw // 2)
    dw = dw.reshape(kh // 2, kw // 2, cout, 2, 2, cin)
    dw = dw.transpose(0, 3, 1, 4, 5, 2).reshape(kernel.shape)  # (a, p, b, q, in, out)
    return dx, dw.astype(kernel.dtype)
  taps = _window_taps(xp, kh, kw, stride, ho, wo)
  g = g.reshape(n * ho * wo, cout)
  if cin < 16:
    cols = jnp.stack(taps, axis=3).reshape(n * ho * wo, kh * kw * cin)
    dw = jax.lax.dot_general(cols, g, pixels, preferred_element_type=jnp.float32)
  else:
    dw = jnp.stack([jax.lax.dot_general(t.reshape(n * ho * wo, cin), g, pixels,
                                        preferred_element_type=jnp.float32) for t in taps])
  return dx, dw.reshape(kernel.shape).astype(kernel.dtype)


conv_gemm_dw.defvjp(_conv_gemm_dw_fwd, _conv_gemm_dw_bwd)


def _conv_direct(x: jax.Array, kernel: jax.Array, padding: Padding) -> jax.Array:
  return conv_gemm_dw(x, kernel, 1, padding)


# Winograd pays from about this many 4x4 output tiles (D's conv_3 at 256x256: 64 tiles an
# image) and channels each side (D's conv_3: 256 and 512); measured there, not below.
_WINOGRAD_MIN_TILES = 64
_WINOGRAD_MIN_CHANNELS = 128


def _conv_auto(x: jax.Array, kernel: jax.Array, padding: Padding) -> jax.Array:
  """Winograd F(4x4, 4x4) for wide float32 layers with enough tiles (D's conv_3: forward and
  both gradients, more than twice as fast), the direct convolution elsewhere."""
  n, h, w, cin = x.shape
  _, _, th, tw = winograd.output_tiles(h, w, padding)
  if (x.dtype == jnp.float32 and min(cin, kernel.shape[-1]) >= _WINOGRAD_MIN_CHANNELS
      and n * th * tw >= _WINOGRAD_MIN_TILES):
    return winograd.conv4x4(x, kernel, padding)
  return _conv_direct(x, kernel, padding)


# How a 4x4 stride-1 convolution (D's last two layers) is computed: same parameters and
# function, different speed; Winograd's float32 rounding differs from the direct sums' by up
# to ~3e-5 of the largest value.
STRIDE1_CONV_IMPLS: dict[str, Callable[[jax.Array, jax.Array, Padding], jax.Array]] = {
    "auto": _conv_auto,
    "direct": _conv_direct,
    "winograd": winograd.conv4x4,
}


def _strided_conv_lax(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Conv2d(k=4, s=2, p=1) as lax (and nn.Conv) compute it."""
  return _lax_conv(x, kernel, 2, ((1, 1), (1, 1)))


def _strided_conv_lax_gemm_dw(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """lax's convolution with conv_gemm_dw's gradients (weight gradient as matrix products)."""
  return conv_gemm_dw(x, kernel, 2, ((1, 1), (1, 1)))


def _strided_conv_s2d(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Conv2d(k=4, s=2, p=1) as a stride-1 2x2 convolution of the space-to-depth input.

  Tap 2a + p of the 4x4 window reads block a, phase p of the padded input, so the kernel
  regrouped as (a, b, (p, q, in), out) computes the same sums. Its gradients are stride-1
  convolutions too, where lax's stride-2 form differentiates into an input-dilated
  convolution (three quarters of its multiplications by inserted zeros, off XLA:CPU's fast
  path) and a window-dilated weight gradient.
  """
  k = s2d.strided_kernel(kernel)
  return s2d.strided_on_blocks(x, lambda x: _lax_conv(x, k, 1, s2d.NO_PADDING))


def _strided_conv_gemm(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Conv2d(k=4, s=2, p=1) as im2col and one matrix product with the (16 * in, out) kernel.

  The (4, 4, in, out) kernel is already that matrix, so neither this product nor its two
  gradients (dx contracts `out`, dw contracts pixels) moves weights in memory; XLA's
  convolution gradients reverse and transpose the kernel every step instead. That matters
  where the kernel outweighs the activations (the U-Net's inner levels).
  """
  n, h, w, cin = x.shape
  cout = kernel.shape[-1]
  ho, wo = (h - 2) // 2 + 1, (w - 2) // 2 + 1
  x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  cols = jnp.stack(_window_taps(x, 4, 4, 2, ho, wo), axis=3)  # (n, ho, wo, 16, in)
  y = jnp.dot(cols.reshape(n * ho * wo, 16 * cin), kernel.reshape(16 * cin, cout))
  return y.reshape(n, ho, wo, cout)


def _strided_conv_auto(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """gemm where the kernel outweighs the output (fewer than 4 * out output pixels: the inner
  levels), lax_gemm_dw elsewhere: the per-layer optimum of the paper's networks at batch 1
  and 16 (benchmarks/layers_bench.py --kind down)."""
  if strided_uses_gemm(x.shape, kernel.shape[-1]):
    return _strided_conv_gemm(x, kernel)
  return _strided_conv_lax_gemm_dw(x, kernel)


def strided_uses_gemm(x_shape: tuple[int, ...], cout: int) -> bool:
  """Whether the "auto" Conv2d(4, 2, 1) of an input of this shape is its gemm form."""
  n, h, w, _ = x_shape
  return n * (h // 2) * (w // 2) < 4 * cout


STRIDED_CONV_IMPLS: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "auto": _strided_conv_auto,
    "s2d": _strided_conv_s2d,
    "gemm": _strided_conv_gemm,
    "lax": _strided_conv_lax,
    "lax_gemm_dw": _strided_conv_lax_gemm_dw,
}


def _transposed_conv_reference(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """ConvTranspose2d(k=4, s=2, p=1) as lax lowers it: x dilated by 2, padded by k - 1 - p = 2,
  correlated with the spatially flipped kernel (out[2i - 1 + k] += x[i] * w[k])."""
  return jax.lax.conv_general_dilated(
      x, kernel[::-1, ::-1], window_strides=(1, 1), padding=((2, 2), (2, 2)),
      lhs_dilation=(2, 2), dimension_numbers=_NHWC)


def _transposed_conv_s2d(x: jax.Array, kernel: jax.Array,
                         out_hw: tuple[int, int] | None = None) -> jax.Array:
  """The same function as one stride-1 2x2 convolution to 4 * out channels, depth-to-space.

  Writing the output (padded by one pixel) as 2x2 blocks, block m, phase p receives
  x[m - a] * w[2a + p] for a in {0, 1}: one "full" 2x2 correlation of x with the kernel
  regrouped as (a, b, in, (p, q, out)) and flipped in (a, b). One large convolution instead
  of four small ones and no interleave of four outputs; it computes (h + 1)(w + 1) blocks for
  h * w outputs' worth, which is little waste except at the innermost levels. `out_hw`
  (at most (2h + 1, 2w + 1)) keeps one more output row/column: a stride-2 convolution's input
  gradient for odd input sizes. The convolution's weight gradient is conv_gemm_dw's.
  """
  y = conv_gemm_dw(x, s2d.transposed_kernel(kernel), 1, ((1, 1), (1, 1)))
  return s2d.depth_to_space(y, out_hw)


@jax.custom_vjp
def _transposed_conv_winograd_at_inference(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """nn/stride2_winograd.py's form where nothing differentiates it; differentiated, the s2d
  form and its fast gradients (so the train step is unchanged)."""
  return stride2_winograd.transposed_apply(x, stride2_winograd.prepare_transposed(kernel))


# Differentiated: the s2d form's value and vjp (a Partial: the residuals).
_transposed_conv_winograd_at_inference.defvjp(
    lambda x, kernel: jax.vjp(_transposed_conv_s2d, x, kernel), lambda vjp, g: vjp(g))


def _transposed_conv_gemm(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """The same function as 16 matrix products, x @ kernel[ky, kx] for every tap, then four
  shifted adds of the tap planes into 2x2 output blocks (col2im).

  The taps are a batch dimension of one dot_general on the (16, in, out) view of the kernel
  (x broadcast over them), so the forward pass, dx (contracting `out`) and dw (batch, in,
  out: the kernel's own layout) all read or write the kernel in place; an einsum over
  "nhwi,yxio" instead makes XLA transpose the kernel three times a step. The broadcast
  copies x 16 times, cheap where this is used: where the kernel outweighs the activations
  (the U-Net's inner levels).
  """
  n, h, w, cin = x.shape
  cout = kernel.shape[-1]
  xb = jnp.broadcast_to(x.reshape(1, n * h * w, cin), (16, n * h * w, cin))
  z = jnp.einsum("tmi,tio->tmo", xb, kernel.reshape(16, cin, cout))
  z = z.reshape(2, 2, 2, 2, n, h, w, cout).transpose(4, 5, 6, 0, 1, 2, 3, 7)
  # Now (n, h, w, a, p, b, q, out): tap (2a + p, 2b + q) of pixel (i, j) lands in output
  # block (i + a, j + b), phase (p, q) of the output padded by one pixel.
  y = sum(jnp.pad(z[:, :, :, a, :, b], ((0, 0), (a, 1 - a), (b, 1 - b), (0, 0), (0, 0), (0, 0)))
          for a in (0, 1) for b in (0, 1))  # (n, h + 1, w + 1, p, q, out)
  y = y.transpose(0, 1, 3, 2, 4, 5).reshape(n, 2 * h + 2, 2 * w + 2, cout)
  return y[:, 1:-1, 1:-1]


def _transposed_conv_auto(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """gemm where the kernel dominates (fewer than 4 * out input pixels: the inner levels), s2d
  elsewhere (the outer levels, where convolutions are large): its one convolution is wider
  than its input, so oneDNN runs it, or Winograd at inference where that pays. The per-layer
  optimum of the paper's U-Net at batch 1 and 16 (benchmarks/layers_bench.py --kind up,
  benchmarks/ab_step.py)."""
  if transposed_uses_gemm(x.shape, kernel.shape[-1]):
    return _transposed_conv_gemm(x, kernel)
  if transposed_winograd_pays(x.shape, kernel.shape[-1], x.dtype):
    return _transposed_conv_winograd_at_inference(x, kernel)
  return _transposed_conv_s2d(x, kernel)


def transposed_uses_gemm(x_shape: tuple[int, ...], cout: int) -> bool:
  """Whether the "auto" ConvTranspose2d(4, 2, 1) of an input of this shape is its gemm form."""
  n, h, w, _ = x_shape
  return n * h * w < 4 * cout


TRANSPOSED_CONV_IMPLS: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "auto": _transposed_conv_auto,
    "s2d": _transposed_conv_s2d,
    "gemm": _transposed_conv_gemm,
    "conv_transpose": _transposed_conv_reference,
}


def materialise(tree: PyTree) -> PyTree:
  """`tree` computed once, behind a barrier: XLA:CPU otherwise duplicates cheap elementwise
  producers into each consumer, so their inputs stay alive (Adam's guarded moments)."""
  return jax.lax.optimization_barrier(tree)
