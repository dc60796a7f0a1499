"""Tiled translation: exact in eval mode, seamless in test mode, bounded in memory."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from conftest import tiny_config
from pix2pix_jax.nn import models
from pix2pix_jax.serving import inference
from pix2pix_jax.serving import tiling
from pix2pix_jax.serving import translate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _three_level_generator():
  """A U-Net of 3 levels (8-pixel grid): a context of tens of pixels, unlike the 6-level
  fixture's, whose innermost level sees the whole 64-pixel crop."""
  config = tiny_config()
  config.model.num_downs = 3
  generator = models.make_generator(config.model)
  variables = generator.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False)
  return config, generator, variables


def _context_radius(generator, variables, size: int = 128) -> int:
  """How far from an output pixel the input still changes it (its gradient's support)."""
  centre = size // 2
  grad = jax.grad(lambda x: generator.apply(variables, x, train=False)[0, centre, centre].sum())(
      jax.random.uniform(jax.random.key(1), (1, size, size, 3)))
  ys, xs = np.nonzero(np.abs(np.asarray(grad)[0]).sum(-1))
  return int(max(centre - ys.min(), ys.max() - centre, centre - xs.min(), xs.max() - centre))


def test_ramp_weights_sum_to_one_across_the_overlap():
  for overlap in (0, 8, 64, 100):
    r = tiling.ramp(overlap)
    np.testing.assert_allclose(r + r[::-1], 1.0, atol=1e-12)
    assert np.all(np.diff(r) >= 0) and np.all(r[:overlap // 4] == 0)


def test_eval_mode_tiles_equal_the_whole_image_away_from_its_border():
  """A quarter of the overlap (the window's zero margin) covers the network's context, so
  every blended pixel comes from tiles that saw all of its context."""
  config, generator, variables = _three_level_generator()
  radius = _context_radius(generator, variables)
  overlap = -(-4 * radius // 8) * 8
  tile = 2 * overlap
  image = np.random.default_rng(0).integers(0, 65536, (400, 336, 3)).astype(np.uint16)
  whole = inference.translate(config, variables, [image], eval_mode=True)[0].astype(int)
  tiled = tiling.translate_tiled(config, variables, image, tile=tile, overlap=overlap,
                                 eval_mode=True, batch_size=3)
  assert tiled.dtype == np.uint16 and tiled.shape == (400, 336, 3)
  inner = (slice(radius, -radius),) * 2  # The whole image's own border has zero padding.
  # Equal up to 1 in the uint16 output: a tile and the whole image are compiled for other
  # shapes, so a sum may round the other way (1 value in 339,660 did on Zen 3).
  np.testing.assert_allclose(tiled.astype(int)[inner], whole[inner], rtol=0, atol=1)
  # Without overlap each tile's border is its own: the same comparison fails.
  hard = tiling.translate_tiled(config, variables, image, tile=tile, overlap=0, eval_mode=True)
  assert np.abs(hard.astype(int)[inner] - whole[inner]).max() > 100


def _seam_energy(image: np.ndarray, seams: list[int], width: int) -> float:
  """Gradient energy across vertical tile borders against elsewhere: squared differences of
  neighbouring columns, averaged along the columns first (a seam runs along a whole column,
  where the network's own texture averages out), within `width` of the seams over the
  other columns'."""
  energy = np.square(np.diff(image.astype(np.float64).mean(axis=(0, 2))))
  near = np.zeros(energy.shape, bool)
  for s in seams:
    near[max(s - width, 0):s + width] = True
  return float(energy[near].mean() / energy[~near].mean())


def test_test_mode_seams_are_invisible():
  """In the paper's test mode every tile normalises with its own BatchNorm statistics: on an
  image whose brightness changes across it, hard tile edges show as steps, blended ones do
  not. (The last layer is scaled up so that the untrained network's output has contrast.)"""
  config, _, variables = _three_level_generator()
  variables["params"]["dec_0"]["kernel"] = variables["params"]["dec_0"]["kernel"] * 30.0
  rng = np.random.default_rng(0)
  ramp = np.linspace(0, 1, 448)[None, :, None] * np.linspace(0.2, 1, 192)[:, None, None]
  image = np.clip(255 * ramp + rng.normal(0, 8, (192, 448, 3)), 0, 255).astype(np.uint8)
  tile = 128
  blended = tiling.translate_tiled(config, variables, image, tile=tile, overlap=64, seed=3)
  hard = tiling.translate_tiled(config, variables, image, tile=tile, overlap=0, seed=3)
  # Overlap 64: tiles 64 apart, each blend centred 32 past a tile's start; hard edges at 128k.
  blended_seams = [64 * k + 32 for k in range(1, (448 - 64) // 64)]
  hard_seams = [tile * k for k in range(1, 448 // tile + 1)]
  assert _seam_energy(hard, hard_seams, 2) > 2.0
  assert _seam_energy(blended, blended_seams, 16) < 1.15
  assert _seam_energy(blended, hard_seams, 2) < 1.15


_MEASURE = textwrap.dedent("""
    import json, resource, sys, time
    import jax, jax.numpy as jnp, numpy as np
    sys.path.insert(0, sys.argv[1])
    from conftest import tiny_config
    from pix2pix_jax.nn import generate as generate_lib, models
    from pix2pix_jax.serving import tiling
    size, tile, overlap, batch = (int(a) for a in sys.argv[2:6])
    config = tiny_config()
    config.model.num_downs = 3
    generator = models.make_generator(config.model)
    variables = generator.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False)
    generate = generate_lib.make_generate_fn(config, eval_mode=True)
    peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # Warm up on a small image with the same tiles: compiled, and a call's buffers counted.
    warm = np.zeros((2 * tile, 2 * tile, 3), np.uint8)
    tiling.translate_tiled(config, variables, warm, tile=tile, overlap=overlap,
                           eval_mode=True, batch_size=batch, generate_fn=generate)
    before = peak()
    image = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    t0 = time.perf_counter()
    out = tiling.translate_tiled(config, variables, image, tile=tile, overlap=overlap,
                                 eval_mode=True, batch_size=batch, generate_fn=generate)
    seconds = time.perf_counter() - t0
    assert out.shape == (size, size, 3) and out.dtype == np.uint8
    print(json.dumps({"peak_rss": peak(), "before": before, "seconds": seconds,
                      "image_bytes": image.nbytes, "output_bytes": out.nbytes}))
""")


def _peak_memory(size: int, tile: int = 512, overlap: int = 64, batch: int = 4) -> None:
  """Peak RSS of a subprocess translating a size x size image, against a bound from the tile:
  the warmed-up process, the image and its output, and what tiling holds in flight (a float32
  strip of `tile` rows, the input rows it reads, and a batch of tiles in and out, each
  counted four times over for copies between numpy and XLA), plus 64 MiB for the allocator."""
  result = subprocess.run([sys.executable, "-c", _MEASURE, os.path.join(REPO, "tests"),
                           str(size), str(tile), str(overlap), str(batch)],
                          cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  r = json.loads(result.stdout.strip().splitlines()[-1])
  padded = size + tile
  in_flight = (tile * padded * 3 * 4 + tile * padded * 3 + 4 * batch * tile * tile * 3 * 4 * 2)
  bound = r["before"] + r["image_bytes"] + r["output_bytes"] + in_flight + 64 * 2**20
  print(f"{size}x{size} in {tile}-pixel tiles: peak RSS {r['peak_rss'] / 2**20:.0f} MiB "
        f"(before the image {r['before'] / 2**20:.0f} MiB, image and output "
        f"{(r['image_bytes'] + r['output_bytes']) / 2**20:.0f} MiB), bound "
        f"{bound / 2**20:.0f} MiB, {r['seconds']:.1f} s")
  assert r["peak_rss"] <= bound


def test_8192_image_in_bounded_memory():
  _peak_memory(8192)


def test_translate_command_tiles_any_size(trained_workdir, tmp_path):
  """translate --tile: an image that is no multiple of the tile or of 2**num_downs keeps its
  size; gray input, RGB output."""
  image = np.random.default_rng(0).integers(0, 256, (200, 130), dtype=np.uint8)
  Image.fromarray(image).save(tmp_path / "gray.png")
  [written] = translate.translate_files(trained_workdir, str(tmp_path / "gray.png"),
                                        str(tmp_path / "out"), tile=128, overlap=64)
  assert np.asarray(Image.open(written)).shape == (200, 130, 3)
  with pytest.raises(ValueError, match="size multiple, 64"):
    translate.translate_files(trained_workdir, str(tmp_path / "gray.png"),
                              str(tmp_path / "bad"), tile=100)
