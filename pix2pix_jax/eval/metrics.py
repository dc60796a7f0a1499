"""Per-image image-quality metrics as pure jitted functions of NHWC batches in [-1, 1].

One convention for every metric: inputs are the generator's range [-1, 1], outputs have one
value per image (shape (N,)).
- l1: mean |a - b| on [-1, 1], the scale of the paper's L1 objective (twice the [0, 1] value).
- psnr: on [0, 1] images (data range 1): 10 log10(1 / MSE); +inf for identical images.
- ssim: Wang et al. 2004: 11x11 Gaussian window (sigma 1.5), K1 0.01, K2 0.03, on [0, 1]
  images, statistics over the 'valid' window positions (as their reference code and
  scikit-image's `gaussian_weights=True, use_sample_covariance=False`), each channel's mean
  SSIM map averaged over channels.
- lpips: see `pix2pix_jax.eval.lpips` (AlexNet LPIPS v0.1).
FID is left out: it is a statistic of a whole set (not per image), needs Inception weights this
project does not ship, and is unreliable on test sets as small as facades' 106 images.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pix2pix_jax.eval import lpips as lpips_lib

METRICS = ("l1", "psnr", "ssim", "lpips")
# Which direction is better, for reports that sort by a metric.
HIGHER_IS_BETTER = {"l1": False, "psnr": True, "ssim": True, "lpips": False}

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _unit(x: jax.Array) -> jax.Array:
  return (x.astype(jnp.float32) + 1.0) / 2.0


@jax.jit
def l1(a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.mean(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32)), axis=(1, 2, 3))


@jax.jit
def psnr(a: jax.Array, b: jax.Array) -> jax.Array:
  mse = jnp.mean((_unit(a) - _unit(b)) ** 2, axis=(1, 2, 3))
  return -10.0 * jnp.log10(mse)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
  """The normalised 1-D Gaussian; the 2-D window is its outer product (separable)."""
  x = np.arange(size, dtype=np.float64) - (size - 1) / 2
  g = np.exp(-(x**2) / (2 * sigma**2))
  return (g / g.sum()).astype(np.float32)


def _filter_valid(x: jax.Array, g: jax.Array) -> jax.Array:
  """Separable Gaussian filtering of each channel of NHWC `x`, 'valid' positions only."""
  c = x.shape[-1]
  k = len(g)
  rows = jnp.tile(g.reshape(k, 1, 1, 1), (1, 1, 1, c))
  cols = jnp.tile(g.reshape(1, k, 1, 1), (1, 1, 1, c))
  dn = ("NHWC", "HWIO", "NHWC")
  hp = jax.lax.Precision.HIGHEST
  x = jax.lax.conv_general_dilated(x, rows, (1, 1), "VALID", dimension_numbers=dn,
                                   feature_group_count=c, precision=hp)
  return jax.lax.conv_general_dilated(x, cols, (1, 1), "VALID", dimension_numbers=dn,
                                      feature_group_count=c, precision=hp)


def ssim_map(a: jax.Array, b: jax.Array) -> jax.Array:
  """SSIM at each valid window position, per channel: (N, H - 10, W - 10, C)."""
  if min(a.shape[1:3]) < SSIM_WINDOW:
    raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}")
  x, y = _unit(a), _unit(b)
  g = jnp.asarray(gaussian_window())
  mu_x, mu_y = _filter_valid(x, g), _filter_valid(y, g)
  var_x = _filter_valid(x * x, g) - mu_x**2
  var_y = _filter_valid(y * y, g) - mu_y**2
  cov = _filter_valid(x * y, g) - mu_x * mu_y
  c1, c2 = SSIM_K1**2, SSIM_K2**2
  luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
  contrast_structure = (2 * cov + c2) / (var_x + var_y + c2)
  return luminance * contrast_structure


@jax.jit
def ssim(a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.mean(ssim_map(a, b), axis=(1, 2, 3))


def all_metrics(a: jax.Array, b: jax.Array, lpips_params: Any) -> dict[str, jax.Array]:
  """Every metric of METRICS, per image, for outputs `a` against targets `b`.

  LPIPS sees grayscale images as RGB with three equal channels.
  """
  gray = a.shape[-1] == 1
  rgb_a = jnp.repeat(a, 3, axis=-1) if gray else a
  rgb_b = jnp.repeat(b, 3, axis=-1) if gray else b
  return {"l1": l1(a, b), "psnr": psnr(a, b), "ssim": ssim(a, b),
          "lpips": lpips_lib.lpips(lpips_params, rgb_a, rgb_b)}
