"""Metrics against values that can be worked out by hand or by a plain numpy loop."""

import pickle

import numpy as np
import pytest

from pix2pix_jax.eval import lpips as lpips_lib
from pix2pix_jax.eval import metrics
from pix2pix_jax.interop import safe_unpickle


@pytest.fixture(scope="module")
def lpips_params():
  return lpips_lib.load_params()


def _images(seed, shape=(2, 32, 32, 3)):
  return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def test_identical_images(lpips_params):
  a = _images(0)
  m = metrics.all_metrics(a, a, lpips_params)
  np.testing.assert_array_equal(m["l1"], 0.0)
  np.testing.assert_allclose(m["ssim"], 1.0, atol=1e-6)
  np.testing.assert_allclose(m["lpips"], 0.0, atol=1e-7)
  assert np.all(np.isinf(m["psnr"]))


def test_l1_is_on_the_minus_one_to_one_scale():
  a = np.zeros((1, 8, 8, 3), np.float32)
  np.testing.assert_allclose(metrics.l1(a, a + 0.5), [0.5])


def test_psnr_of_known_noise():
  """|noise| = 0.1 on [0, 1] everywhere: MSE 0.01, PSNR exactly 20 dB."""
  rng = np.random.default_rng(1)
  clean = rng.uniform(0.2, 0.8, (2, 16, 16, 3))
  noisy = clean + 0.1 * rng.choice([-1.0, 1.0], clean.shape)
  to_signed = lambda x: (2 * x - 1).astype(np.float32)
  np.testing.assert_allclose(metrics.psnr(to_signed(clean), to_signed(noisy)), [20.0, 20.0],
                             atol=1e-3)


def test_ssim_of_constant_images_is_the_luminance_term():
  """No variance: SSIM = (2 m1 m2 + C1) / (m1^2 + m2^2 + C1), C1 = 0.01^2, on [0, 1]."""
  m1, m2 = 0.25, 0.75
  a = np.full((1, 16, 16, 1), 2 * m1 - 1, np.float32)
  b = np.full((1, 16, 16, 1), 2 * m2 - 1, np.float32)
  c1 = 0.01**2
  np.testing.assert_allclose(metrics.ssim(a, b), [(2 * m1 * m2 + c1) / (m1**2 + m2**2 + c1)],
                             rtol=1e-5)


def _ssim_by_loops(x, y):
  """Wang et al.'s definition written out window by window, in float64, on [0, 1] images."""
  g = metrics.gaussian_window().astype(np.float64)
  w = np.outer(g, g)
  h, wd = x.shape
  c1, c2 = 0.01**2, 0.03**2
  values = []
  for i in range(h - 10):
    for j in range(wd - 10):
      px, py = x[i:i + 11, j:j + 11], y[i:i + 11, j:j + 11]
      mx, my = (w * px).sum(), (w * py).sum()
      vx, vy = (w * (px - mx) ** 2).sum(), (w * (py - my) ** 2).sum()
      cov = (w * (px - mx) * (py - my)).sum()
      values.append((2 * mx * my + c1) * (2 * cov + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
  return np.mean(values)


def test_ssim_matches_the_windowed_definition():
  rng = np.random.default_rng(2)
  x = rng.uniform(0, 1, (1, 17, 15, 2))
  y = np.clip(x + rng.normal(0, 0.2, x.shape), 0, 1)
  expected = np.mean([_ssim_by_loops(x[0, :, :, c], y[0, :, :, c]) for c in range(2)])
  got = metrics.ssim((2 * x - 1).astype(np.float32), (2 * y - 1).astype(np.float32))
  assert 0.05 < expected < 0.95
  np.testing.assert_allclose(got, [expected], atol=2e-5)


def test_lpips_is_positive_symmetric_and_grows_with_distortion(lpips_params):
  a = _images(3)
  b = _images(4)
  ab = np.asarray(lpips_lib.lpips(lpips_params, a, b))
  ba = np.asarray(lpips_lib.lpips(lpips_params, b, a))
  assert np.all(ab > 0.05)
  np.testing.assert_allclose(ab, ba, rtol=1e-5)
  noise = np.random.default_rng(5).normal(0, 1, a.shape).astype(np.float32)
  small = lpips_lib.lpips(lpips_params, a, np.clip(a + 0.05 * noise, -1, 1))
  large = lpips_lib.lpips(lpips_params, a, np.clip(a + 0.5 * noise, -1, 1))
  assert np.all(small < large)


def test_metrics_of_grayscale_images(lpips_params):
  a, b = _images(6, (1, 32, 32, 1)), _images(7, (1, 32, 32, 1))
  m = metrics.all_metrics(a, b, lpips_params)
  assert all(v.shape == (1,) and np.isfinite(v).all() for v in m.values())


def test_lpips_weights_loader_refuses_code(tmp_path):
  class RunsCode:
    def __reduce__(self):
      return (print, ("this must not run",))

  path = tmp_path / "evil.ckpt"
  path.write_bytes(pickle.dumps({"AlexNet_0": RunsCode()}))
  with pytest.raises(safe_unpickle.UnsafePickleError, match="builtins.print"):
    lpips_lib.load_params(str(path))
