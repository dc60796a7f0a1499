"""Winograd F(4x4, 4x4) against lax's direct convolution: values and both gradients; and
F(4x4, 2x2), which the U-Net's wide strided convolutions use at inference only."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pix2pix_jax.nn import conv
from pix2pix_jax.nn import cpu_lowering
from pix2pix_jax.nn import models
from pix2pix_jax.nn import winograd

# float32 rounding through the transforms: up to ~3e-5 of the largest value (the direct
# sums agree with float64 to ~1e-7).
TOL = 1e-4


def assert_close(actual, expected, tol=TOL):
  expected = np.asarray(expected, np.float64)
  np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=tol,
                             atol=tol * np.abs(expected).max())


def lax_conv(x, k, padding, stride=1):
  return jax.lax.conv_general_dilated(x, k, (stride, stride), padding,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("transform", [winograd.F4X4_4X4, winograd.F4X4_2X2])
def test_transform_matrices_compute_the_1d_correlation_exactly(transform):
  """y[i] = sum_k d[i + k] w[k] for i < 4, as AT ((G w) * (BT d)), for every unit d, w."""
  a, r = transform.g.shape
  for l, k in itertools.product(range(a), range(r)):
    d, w = np.eye(a)[l], np.eye(r)[k]
    want = [d[i:i + r] @ w for i in range(4)]
    np.testing.assert_allclose(transform.at @ ((transform.g @ w) * (transform.bt @ d)), want,
                               atol=1e-12)


@pytest.mark.parametrize("padding", [((1, 1), (1, 1)), ((2, 0), (0, 3)), ((0, 0), (3, 3))])
@pytest.mark.parametrize("height,width", [(9, 7), (12, 6)])
def test_conv4x4_matches_lax_with_gradients(padding, height, width):
  """Whole and partial tiles, one-sided paddings: partial tiles are padded and cropped."""
  kx, kk, kg = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(kx, (2, height, width, 8), jnp.float32)
  k = 0.1 * jax.random.normal(kk, (4, 4, 8, 12), jnp.float32)
  y_ref, vjp_ref = jax.vjp(lambda x, k: lax_conv(x, k, padding), x, k)
  y, vjp = jax.vjp(lambda x, k: winograd.conv4x4(x, k, padding), x, k)
  assert y.shape == y_ref.shape
  assert_close(y, y_ref)
  g = jax.random.normal(kg, y.shape, jnp.float32)
  for got, want in zip(jax.jit(vjp)(g), jax.jit(vjp_ref)(g)):
    assert_close(got, want)


@pytest.mark.slow  # The paper's widest layer; the smaller cases above run in `make test`.
def test_conv4x4_rounding_at_the_paper_layer_size():
  """D's conv_3 (256 -> 512 channels, 32 -> 31 pixels, N(0, 0.02) weights): values and
  gradients within 3e-5 of the largest, where the float32 rounding of 4096-term sums shows."""
  kx, kk, kg = jax.random.split(jax.random.key(4), 3)
  x = jax.random.normal(kx, (1, 32, 32, 256), jnp.float32)
  k = 0.02 * jax.random.normal(kk, (4, 4, 256, 512), jnp.float32)
  padding = ((1, 1), (1, 1))
  y_ref, vjp_ref = jax.vjp(lambda x, k: lax_conv(x, k, padding), x, k)
  y, vjp = jax.vjp(lambda x, k: winograd.conv4x4(x, k, padding), x, k)
  g = jax.random.normal(kg, y.shape, jnp.float32)
  for got, want in zip((y, *jax.jit(vjp)(g)), (y_ref, *jax.jit(vjp_ref)(g))):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert np.abs(got - want).max() <= 3e-5 * np.abs(want).max()


def _uses_winograd(fn, *args) -> bool:
  """Whether fn's program holds the (49, tiles, channels) transformed tiles of Winograd."""
  return "f32[49," in str(jax.make_jaxpr(fn)(*args))


@pytest.mark.parametrize("side,winograd_expected", [(32, True), (16, False)])
def test_auto_uses_winograd_for_wide_layers_with_many_tiles(side, winograd_expected):
  """D's conv_3 at 256x256 (32 -> 31 pixels; here 128 channels each side): 64 tiles, at the
  threshold; at 128x128 (16 -> 15 pixels, 16 tiles) the direct convolution stays."""
  x = jnp.zeros((1, side, side, 128))
  k = jnp.zeros((4, 4, 128, 128))
  padding = ((1, 1), (1, 1))
  tiles = ((side - 1 + 3) // 4) ** 2
  assert (tiles >= cpu_lowering._WINOGRAD_MIN_TILES) == winograd_expected
  assert _uses_winograd(lambda x, k: cpu_lowering._conv_auto(x, k, padding), x, k) == winograd_expected
  assert _uses_winograd(lambda x, k: winograd.conv4x4(x, k, padding), x, k)
  assert not _uses_winograd(lambda x, k: cpu_lowering._conv_direct(x, k, padding), x, k)


def test_auto_keeps_the_direct_convolution_in_bfloat16():
  """Winograd's transforms would round in bfloat16; auto is for float32 layers only."""
  x = jnp.zeros((1, 32, 32, 128), jnp.bfloat16)
  k = jnp.zeros((4, 4, 128, 128), jnp.bfloat16)
  fn = lambda x, k: cpu_lowering._conv_auto(x, k, ((1, 1), (1, 1)))
  assert "bf16[49," not in str(jax.make_jaxpr(fn)(x, k))
  assert "bf16[49," in str(jax.make_jaxpr(
      lambda x, k: winograd.conv4x4(x, k, ((1, 1), (1, 1))))(x, k))


def test_discriminator_with_winograd_matches_direct():
  """The same parameters give the same logits and gradients with either stride-1 impl."""
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3), jnp.float32)
  y = jax.random.normal(jax.random.key(2), (2, 32, 32, 3), jnp.float32)
  direct, wino = (models.Discriminator(ndf=8, n_layers=3, conv=conv.Parts.with_impl(
      f"stride1={form}").conv) for form in ("direct", "winograd"))
  variables = direct.init(jax.random.key(3), x, y, train=False)

  def loss(params, d):
    out, _ = d.apply({**variables, "params": params}, x, y, train=True,
                     mutable=["batch_stats"])
    return jnp.mean(models.logits(out)[0] ** 2), models.logits(out)[0]

  (_, logits_d), g_d = jax.value_and_grad(loss, has_aux=True)(variables["params"], direct)
  (_, logits_w), g_w = jax.value_and_grad(loss, has_aux=True)(variables["params"], wino)
  assert_close(logits_w, logits_d)
  for got, want in zip(jax.tree.leaves(g_w), jax.tree.leaves(g_d)):
    assert_close(got, want)


@pytest.mark.parametrize("padding", [((0, 0), (0, 0)), ((1, 1), (1, 1)), ((1, 0), (0, 1))])
def test_f4x4_2x2_correlation_matches_lax(padding):
  """Whole and partial tiles, one-sided paddings."""
  kx, kk = jax.random.split(jax.random.key(5))
  x = jax.random.normal(kx, (2, 11, 9, 8), jnp.float32)
  k = 0.1 * jax.random.normal(kk, (2, 2, 8, 12), jnp.float32)
  y = jax.jit(lambda x, k: winograd.correlate_transformed(
      x, winograd.transform_kernel(k, winograd.F4X4_2X2), padding, winograd.F4X4_2X2))(x, k)
  assert_close(y, lax_conv(x, k, padding))


def test_kernel_taps_read_back_from_the_f4x4_2x2_transform():
  """F(4x4, 2x2)'s transformed kernel holds the taps themselves (points 0 and infinity), so
  the transposed layers' last block row and column need no second copy of the kernel;
  F(4x4, 4x4)'s does not hold all of them."""
  k = jax.random.normal(jax.random.key(8), (2, 2, 3, 5), jnp.float32)
  taps = winograd.kernel_taps(winograd.transform_kernel(k, winograd.F4X4_2X2),
                               winograd.F4X4_2X2)
  np.testing.assert_array_equal(np.stack([np.stack(row) for row in taps]), k)
  k4 = jax.random.normal(jax.random.key(8), (4, 4, 3, 5), jnp.float32)
  assert winograd.kernel_taps(winograd.transform_kernel(k4), winograd.F4X4_4X4) is None


@pytest.mark.parametrize("n,cin,side,winograd_expected", [
    (4, 64, 64, True),    # 4 * 64 = 256 channels into the 2x2 convolution, 4 * 64 tiles
    (1, 32, 64, True),    # 4 * 32 = 128 channels, 64 tiles: the least that pays
    (4, 16, 64, False),   # 4 * 16 = 64 channels, too narrow
    (1, 64, 32, False)])  # 16 tiles, too few
def test_strided_conv_uses_winograd_at_inference_only(n, cin, side, winograd_expected):
  """Conv2d(4, 2, 1) undifferentiated (inference) runs as F(4x4, 2x2) where it is wide and
  has enough tiles, with lax's values; differentiated (training) it keeps lax's convolution
  and conv_gemm_dw's gradients, which match lax's."""
  kx, kk, kg = jax.random.split(jax.random.key(6), 3)
  x = jax.random.normal(kx, (n, side, side, cin), jnp.float32)
  k = 0.02 * jax.random.normal(kk, (4, 4, cin, 256), jnp.float32)
  fn = lambda x, k: conv.cpu_conv(x, k, (2, 2), ((1, 1), (1, 1)))
  assert ("f32[25," in str(jax.make_jaxpr(fn)(x, k))) == winograd_expected
  strided = lambda x, k: lax_conv(x, k, ((1, 1), (1, 1)), stride=2)
  want = strided(x, k)
  got = np.asarray(jax.jit(fn)(x, k), np.float64)
  assert np.abs(got - np.asarray(want, np.float64)).max() <= 3e-5 * np.abs(want).max()
  y, vjp = jax.vjp(fn, x, k)
  assert "f32[25," not in str(jax.make_jaxpr(lambda x, k: jax.vjp(fn, x, k)[0])(x, k))
  y_ref, vjp_ref = jax.vjp(strided, x, k)
  assert_close(y, y_ref)
  g = jax.random.normal(kg, y.shape, jnp.float32)
  for got, want in zip(jax.jit(vjp)(g), jax.jit(vjp_ref)(g)):
    assert_close(got, want)


@pytest.mark.parametrize("n,side,cout,winograd_expected", [
    (3, 16, 64, True),    # 2x2 convolution 128 -> 256 channels, 17x17 outputs: 75 tiles
    (3, 18, 64, True),    # 18x18 blocks in partial tiles, then the last row and column
    (2, 23, 64, True),    # odd
    (3, 16, 16, False),   # 75 tiles, but 4 * 16 = 64 output channels, too narrow
    (8, 8, 64, False)])   # 72 tiles, but 9x9 outputs in 3x3 tiles: edge tiles mostly waste
def test_transposed_conv_uses_winograd_at_inference_only(n, side, cout, winograd_expected):
  """ConvTranspose2d(4, 2, 1) in `auto` form runs its 2x2 convolution as F(4x4, 2x2) where
  that pays and nothing differentiates it, with lax's values; differentiated it keeps the
  direct form, whose gradients match lax's."""
  kx, kk, kg = jax.random.split(jax.random.key(7), 3)
  x = jax.random.normal(kx, (n, side, side, 128), jnp.float32)
  k = 0.02 * jax.random.normal(kk, (4, 4, 128, cout), jnp.float32)
  fn = lambda x, k: conv.cpu_up_conv(x, k)
  assert ("f32[25," in str(jax.make_jaxpr(fn)(x, k))) == winograd_expected
  want = conv.plain_conv_transpose(x, k, (2, 2), ((2, 2), (2, 2)))
  got = np.asarray(jax.jit(fn)(x, k), np.float64)
  assert np.abs(got - np.asarray(want, np.float64)).max() <= 3e-5 * np.abs(want).max()
  assert "f32[25," not in str(jax.make_jaxpr(lambda x, k: jax.vjp(fn, x, k)[0])(x, k))
  y, vjp = jax.vjp(fn, x, k)
  y_ref, vjp_ref = jax.vjp(
      lambda x, k: conv.plain_conv_transpose(x, k, (2, 2), ((2, 2), (2, 2))), x, k)
  assert_close(y, y_ref)
  g = jax.random.normal(kg, y.shape, jnp.float32)
  for got, want in zip(jax.jit(vjp)(g), jax.jit(vjp_ref)(g)):
    assert_close(got, want)
