"""Every (transposed-)convolution implementation computes PyTorch's (De)Conv2d(4, 2, 1).

Three independent references: a numpy scatter loop written from the definition
(out[2i - 1 + k] += x[i] * w[k]), `jax.lax.conv_transpose` with `transpose_kernel=True` (the
gradient-of-conv convention PyTorch uses), and the lhs-dilated convolution in cpu_lowering.py.
Gradients are compared with those of `lax.conv_transpose` through the same cotangent.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pix2pix_jax.nn import conv
from pix2pix_jax.nn import cpu_lowering

# (batch, height, width, in channels, out channels): square and not, odd sizes, 1x1 (the
# innermost U-Net level), one channel in or out, and 128 channels (their convolutions and
# input gradients steered to oneDNN on CPU, cpu_lowering._stride1_conv).
SHAPES = [(2, 4, 4, 3, 5), (1, 3, 5, 8, 2), (3, 1, 1, 16, 4), (1, 6, 2, 1, 7), (2, 5, 7, 4, 1),
          (1, 3, 4, 128, 128)]
IMPLS = sorted(cpu_lowering.TRANSPOSED_CONV_IMPLS)


def scatter_reference(x: np.ndarray, w: np.ndarray) -> np.ndarray:
  """ConvTranspose2d(k=4, s=2, p=1) by its definition, in float64."""
  n, h, wd, _ = x.shape
  out = np.zeros((n, 2 * h + 2, 2 * wd + 2, w.shape[-1]))  # one extra row/col each side
  for i in range(h):
    for j in range(wd):
      for ky in range(4):
        for kx in range(4):
          # Output index 2i - 1 + k, shifted by the one-pixel margin.
          out[:, 2 * i + ky, 2 * j + kx] += x[:, i, j] @ w[ky, kx]
  return out[:, 1:-1, 1:-1]


def lax_conv_transpose(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """lax's transposed conv; our (kh, kw, in, out) kernel is the forward conv's (kh, kw, O, I)."""
  return jax.lax.conv_transpose(
      x, jnp.swapaxes(kernel, 2, 3), strides=(2, 2), padding=((2, 2), (2, 2)),
      dimension_numbers=("NHWC", "HWIO", "NHWC"), transpose_kernel=True)


def random_inputs(shape, seed=0):
  n, h, w, cin, cout = shape
  kx, kk = jax.random.split(jax.random.key(seed))
  return (jax.random.normal(kx, (n, h, w, cin), jnp.float32),
          jax.random.normal(kk, (4, 4, cin, cout), jnp.float32))


def assert_close(actual, expected, tol=1e-5):
  expected = np.asarray(expected, np.float64)
  np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=tol,
                             atol=tol * max(1.0, np.abs(expected).max()))


def test_lax_reference_matches_definition():
  """Pins the convention of the lax reference used for the gradient checks below."""
  x, k = random_inputs(SHAPES[1])
  assert_close(lax_conv_transpose(x, k), scatter_reference(np.asarray(x), np.asarray(k)))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_definition(impl, shape):
  x, k = random_inputs(shape)
  y = jax.jit(cpu_lowering.TRANSPOSED_CONV_IMPLS[impl])(x, k)
  assert y.shape == (shape[0], 2 * shape[1], 2 * shape[2], shape[4])
  assert_close(y, scatter_reference(np.asarray(x, np.float64), np.asarray(k, np.float64)))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", SHAPES)
def test_gradients_match_lax(impl, shape):
  x, k = random_inputs(shape, seed=1)
  n, h, w, _, cout = shape
  cotangent = jax.random.normal(jax.random.key(2), (n, 2 * h, 2 * w, cout), jnp.float32)

  def grads(fn):
    _, vjp = jax.vjp(fn, x, k)
    return jax.jit(vjp)(cotangent)

  dx, dk = grads(cpu_lowering.TRANSPOSED_CONV_IMPLS[impl])
  dx_ref, dk_ref = grads(lax_conv_transpose)
  assert_close(dx, dx_ref)
  assert_close(dk, dk_ref)


@pytest.mark.parametrize("impl", IMPLS)
def test_upconv_bfloat16_close_to_float32(impl):
  """bf16 compute (float32 params) stays within bf16 rounding of the float32 result."""
  x, _ = random_inputs((1, 4, 6, 8, 3))
  up = lambda dtype: conv.ConvTranspose(3, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)),
                                        impl=f"up={impl}", dtype=dtype)
  params = up(jnp.float32).init(jax.random.key(0), x)
  y32 = up(jnp.float32).apply(params, x)
  y16 = up(jnp.bfloat16).apply(params, x)
  assert y16.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(y16, np.float32), y32, atol=0.05 * np.abs(y32).max())


# (batch, height, width, in channels, out channels) for the stride-2 convolution: even and
# odd sizes (PatchGAN on 286x286 inputs meets odd ones), the U-Net's innermost 2x2 -> 1x1.
STRIDED_SHAPES = [(2, 8, 8, 3, 5), (1, 6, 10, 4, 2), (1, 2, 2, 8, 3), (2, 7, 5, 2, 4),
                  (1, 9, 9, 1, 1)]


@pytest.mark.parametrize("impl", sorted(cpu_lowering.STRIDED_CONV_IMPLS))
@pytest.mark.parametrize("shape", STRIDED_SHAPES)
def test_strided_conv_matches_lax_with_gradients(impl, shape):
  n, h, w, cin, cout = shape
  x, k = random_inputs(shape, seed=3)

  def reference(x, k):  # what nn.Conv(4, strides 2, padding 1) computes
    return jax.lax.conv_general_dilated(x, k, (2, 2), ((1, 1), (1, 1)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

  y_ref, vjp_ref = jax.vjp(reference, x, k)
  y, vjp = jax.vjp(cpu_lowering.STRIDED_CONV_IMPLS[impl], x, k)
  assert y.shape == y_ref.shape == (n, (h - 2) // 2 + 1, (w - 2) // 2 + 1, cout)
  assert_close(y, y_ref)
  cotangent = jax.random.normal(jax.random.key(4), y.shape, jnp.float32)
  for got, want in zip(jax.jit(vjp)(cotangent), jax.jit(vjp_ref)(cotangent)):
    assert_close(got, want)


@pytest.mark.parametrize("impl", ["auto", "plain"])
def test_down_conv_has_nn_conv_parameters(impl):
  """conv.Conv(4, strides 2, padding 1) is a drop-in for nn.Conv: parameters and function."""
  x, _ = random_inputs((1, 8, 6, 3, 1))
  args = dict(features=5, kernel_size=(4, 4), strides=(2, 2), padding=((1, 1), (1, 1)))
  flax_conv = nn.Conv(**args)
  params = flax_conv.init(jax.random.key(0), x)
  params = jax.tree.map(lambda p: p + 0.1, params)  # a non-zero bias
  down = conv.Conv(**args, impl=impl)
  assert jax.tree.map(jnp.shape, down.init(jax.random.key(0), x)) == jax.tree.map(
      jnp.shape, params)
  assert_close(jax.jit(down.apply)(params, x), flax_conv.apply(params, x))


@pytest.mark.parametrize("impl", ["auto", "plain"])
def test_conv_transpose_is_pytorchs_with_nn_conv_transpose_parameters(impl):
  """conv.ConvTranspose has nn.ConvTranspose's parameters and arguments and computes
  PyTorch's ConvTranspose2d, which is nn.ConvTranspose's with the kernel flipped in space."""
  x, k = random_inputs(SHAPES[1], seed=9)
  args = dict(features=k.shape[-1], kernel_size=(4, 4), strides=(2, 2),
              padding=((2, 2), (2, 2)))
  ours = conv.ConvTranspose(**args, impl=impl)
  params = {"params": {"kernel": k, "bias": jnp.full((k.shape[-1],), 0.1)}}
  assert jax.tree.map(jnp.shape, ours.init(jax.random.key(0), x)) == jax.tree.map(
      jnp.shape, nn.ConvTranspose(**args).init(jax.random.key(0), x))
  y = jax.jit(ours.apply)(params, x)
  assert_close(y, scatter_reference(np.asarray(x, np.float64), np.asarray(k, np.float64)) + 0.1)
  flipped = {"params": {"kernel": k[::-1, ::-1], "bias": params["params"]["bias"]}}
  assert_close(y, nn.ConvTranspose(**args).apply(flipped, x))


# (stride, padding, in, out): each way conv_gemm_dw computes the weight gradient: im2col
# (in < 16), one product per input tap (in >= 16; stride 2 from 128), the shifted cotangent
# (stride 1, out < in, D's one-logit layer among them; stride 2 with 16 <= in < 128 on the
# space-to-depth input, odd sizes included), and one-sided paddings;
# the last three have 128 channels or more, so their forward pass and input gradient are
# steered to oneDNN on CPU (a wider output, cropped).
GEMM_DW_CASES = [(2, ((1, 1), (1, 1)), 3, 8), (2, ((1, 1), (1, 1)), 16, 8),
                 (2, ((1, 1), (1, 1)), 16, 24), (2, ((1, 1), (1, 1)), 128, 8),
                 (1, ((1, 1), (1, 1)), 16, 24),
                 (1, ((1, 1), (1, 1)), 24, 1), (1, ((1, 0), (0, 1)), 20, 6),
                 (1, ((0, 0), (0, 0)), 6, 4),
                 (1, ((1, 1), (1, 1)), 128, 136), (1, ((1, 0), (0, 1)), 144, 128),
                 (1, ((0, 0), (0, 0)), 128, 128)]


@pytest.mark.parametrize("stride,padding,cin,cout", GEMM_DW_CASES)
@pytest.mark.parametrize("height,width", [(9, 7), (8, 6)])
def test_conv_gemm_dw_matches_lax_with_gradients(stride, padding, cin, cout, height, width):
  """Odd and even sizes: the stride-2 input gradient crops its transposed convolution."""
  x, _ = random_inputs((2, height, width, cin, cout), seed=5)
  kh = 4 if padding[0] == (1, 1) else 2
  k = 0.1 * jax.random.normal(jax.random.key(6), (kh, kh, cin, cout), jnp.float32)

  def reference(x, k):
    return jax.lax.conv_general_dilated(x, k, (stride, stride), padding,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

  y_ref, vjp_ref = jax.vjp(reference, x, k)
  y, vjp = jax.vjp(lambda x, k: cpu_lowering.conv_gemm_dw(x, k, stride, padding), x, k)
  assert_close(y, y_ref)
  cotangent = jax.random.normal(jax.random.key(7), y.shape, jnp.float32)
  for got, want in zip(jax.jit(vjp)(cotangent), jax.jit(vjp_ref)(cotangent)):
    assert_close(got, want)


@pytest.mark.parametrize("cin,cout,steered", [(128, 136, True), (256, 64, False)])
def test_wide_stride1_convs_are_steered_past_ynnpack(cin, cout, steered):
  """On CPU, a stride-1 convolution with >= 128 channels each side is issued with an output
  one column wider than its input (which YNNPACK declines, so oneDNN runs it), then cropped;
  narrower ones are issued as they are."""
  x = jnp.zeros((1, 8, 8, cin))
  k = jnp.zeros((4, 4, cin, cout))
  (eqn,) = [e for e in jax.make_jaxpr(lambda x, k: cpu_lowering.conv_gemm_dw(
      x, k, 1, ((1, 1), (1, 1))))(x, k).jaxpr.eqns if e.primitive.name == "custom_vjp_call"]
  convs = [e for e in eqn.params["call_jaxpr"].jaxpr.eqns
           if e.primitive.name == "conv_general_dilated"]
  (conv,) = convs
  assert conv.outvars[0].aval.shape[2] == (9 if steered else 7)


@pytest.mark.parametrize("kernel,padding,features", [(4, 1, 8), (4, 1, 1), (1, 0, 5)])
def test_conv_has_nn_conv_parameters_and_function(kernel, padding, features):
  """conv.Conv (D's stride-1 layers) is a drop-in for nn.Conv, gradients included."""
  x, _ = random_inputs((2, 9, 8, 6, 1), seed=8)
  args = dict(features=features, kernel_size=(kernel, kernel),
              padding=((padding, padding), (padding, padding)))
  flax_conv = nn.Conv(**args)
  params = jax.tree.map(lambda p: p + 0.1, flax_conv.init(jax.random.key(0), x))
  ours = conv.Conv(**args)
  assert jax.tree.map(jnp.shape, ours.init(jax.random.key(0), x)) == jax.tree.map(
      jnp.shape, params)
  loss = lambda module: lambda p: jnp.sum(jnp.sin(module.apply(p, x)))
  assert_close(ours.apply(params, x), flax_conv.apply(params, x))
  for got, want in zip(jax.tree.leaves(jax.grad(loss(ours))(params)),
                       jax.tree.leaves(jax.grad(loss(flax_conv))(params))):
    assert_close(got, want)
