"""The embedded default dataset: facade label maps and "photos" rendered from them.

No download: numpy draws a few hundred CMP-facades-like label maps (sky, wall, a grid of
windows with sills, blinds and balconies, cornice, moldings, pillars, a door and shop
windows) and renders each to a photo with textures a generator has to learn (brick or
plaster walls, glass with gradients, reflections and frames, slatted blinds, wood, stone
shading, cast shadows, a sky gradient, sunlight falling off across the facade). The wall
material is not painted in the labels: brick goes with moldings, plaster without, so the
generator must look beyond the pixel. A is the label map and B the photo, so AtoB is
labels -> photo, as in the default config. Deterministic from (seed, split, index).
"""

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from pix2pix_jax.data.datasets import pairs

# CMP facades classes and (approximately) the jet-like colours of the pix2pix label maps.
CLASSES = ("background", "facade", "window", "door", "cornice", "sill", "balcony",
           "blind", "deco", "molding", "pillar", "shop")
PALETTE = np.array([
    (0, 0, 170), (0, 0, 255), (0, 85, 255), (0, 170, 255), (0, 255, 255), (85, 255, 170),
    (170, 255, 85), (255, 255, 0), (255, 170, 0), (255, 85, 0), (255, 0, 0), (170, 0, 0)],
                   np.uint8)
(SKY, FACADE, WINDOW, DOOR, CORNICE, SILL, BALCONY, BLIND, DECO, MOLDING, PILLAR,
 SHOP) = range(len(CLASSES))
SPLITS = ("train", "val", "test")


def label_map(rng: np.random.Generator, size: int) -> np.ndarray:
  """(size, size) class ids of one facade; all lengths scale with `size`."""
  s = size / 128.0
  r = lambda lo, hi: int(round(rng.integers(lo, hi + 1) * s))
  labels = np.full((size, size), SKY, np.uint8)
  roof, x0, x1 = r(6, 28), r(0, 12), size - r(0, 12)
  labels[roof:, x0:x1] = FACADE
  cornice = max(2, r(3, 5))
  labels[roof:roof + cornice, x0:x1] = CORNICE
  ground = r(20, 30)
  n_floors, n_cols = int(rng.integers(2, 5)), int(rng.integers(2, 6))
  top, bottom = roof + cornice + max(1, r(2, 4)), size - ground
  floor_h, col_w = (bottom - top) / n_floors, (x1 - x0) / n_cols
  win_w = max(2, int(col_w * rng.uniform(0.4, 0.65)))
  win_h = max(3, int(floor_h * rng.uniform(0.45, 0.7)))
  has_molding, has_pillars = rng.random() < 0.5, rng.random() < 0.35
  balcony_floors = rng.random(n_floors) < 0.3
  blinds = rng.random() < 0.5
  lintels = rng.random() < 0.4
  if has_pillars:
    for j in range(1, n_cols):
      cx = int(x0 + j * col_w)
      labels[top:, cx - max(1, r(1, 2)):cx + max(1, r(1, 2))] = PILLAR
  for f in range(n_floors):
    y_floor = int(top + f * floor_h)
    if has_molding and f > 0:
      labels[y_floor:y_floor + max(1, r(1, 2)), x0:x1] = MOLDING
    wy = int(y_floor + (floor_h - win_h) * 0.6)
    for j in range(n_cols):
      wx = int(x0 + j * col_w + (col_w - win_w) / 2)
      if lintels:
        labels[max(wy - 3, 0):wy - 1, wx - 1:wx + win_w + 1] = DECO
      labels[wy:wy + win_h, wx:wx + win_w] = WINDOW
      if blinds and rng.random() < 0.35:
        labels[wy:wy + int(win_h * rng.uniform(0.3, 0.8)), wx:wx + win_w] = BLIND
      if balcony_floors[f]:
        labels[wy + win_h - max(2, r(3, 4)):wy + win_h + 1, wx - 2:wx + win_w + 2] = BALCONY
      else:
        labels[wy + win_h:wy + win_h + max(1, r(1, 2)), wx - 1:wx + win_w + 1] = SILL
  door_col = int(rng.integers(n_cols))
  shops = rng.random() < 0.5
  for j in range(n_cols):
    cx = x0 + (j + 0.5) * col_w
    if j == door_col:
      w, h = max(3, int(col_w * 0.45)), int(ground * 0.8)
      labels[size - h:, int(cx - w / 2):int(cx + w / 2)] = DOOR
    elif shops:
      w, h = int(col_w * 0.75), int(ground * 0.65)
      labels[size - h - 2:size - 2, int(cx - w / 2):int(cx + w / 2)] = SHOP
    else:
      w, h = win_w, int(ground * 0.5)
      labels[size - h - r(4, 6):size - r(4, 6), int(cx - w / 2):int(cx + w / 2)] = WINDOW
  return labels


def _runs(mask: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
  """Position of each True pixel inside its run along `axis`, and that run's length."""
  n = mask.shape[axis]
  idx = np.arange(n).reshape([-1 if d == axis else 1 for d in range(mask.ndim)])
  before = np.maximum.accumulate(np.where(mask, -1, idx), axis=axis)
  after = np.flip(np.minimum.accumulate(np.flip(np.where(mask, n, idx), axis), axis), axis)
  return np.where(mask, idx - before - 1, 0), np.where(mask, after - before - 1, 0)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
  """Low-frequency noise in [-1, 1]: a coarse random grid, bilinearly upsampled."""
  grid = rng.uniform(-1, 1, (cells + 1, cells + 1))
  t = np.linspace(0, cells, size, endpoint=False)
  i, f = t.astype(int), t - t.astype(int)
  rows = grid[i] * (1 - f)[:, None] + grid[i + 1] * f[:, None]
  return (rows[:, i] * (1 - f)[None] + rows[:, i + 1] * f[None]).astype(np.float32)


def render(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """The photo of a label map, (H, W, 3) uint8."""
  size = labels.shape[0]
  s = size / 128.0
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
  img = np.zeros((size, size, 3), np.float32)
  paint = lambda cls, colour: np.copyto(img, np.asarray(colour, np.float32),
                                        where=(labels == cls)[..., None], casting="unsafe")
  jitter = lambda c, a=0.04: np.clip(np.asarray(c) + rng.uniform(-a, a, 3), 0, 1).astype(
      np.float32)

  # Sky: blue at the top, hazier towards the horizon.
  t = (yy / size)[..., None]
  sky = jitter((0.35, 0.55, 0.85)) * (1 - t) + np.float32((0.8, 0.85, 0.92)) * t
  paint(SKY, sky)

  # Wall: brick (buildings with moldings) or plaster.
  brick = bool((labels == MOLDING).any())
  if brick:
    bh, bw = max(2, int(4 * s)), max(4, int(8 * s))
    row = (yy // bh).astype(int)
    col = ((xx + (row % 2) * bw / 2) // bw).astype(int)
    tone = rng.uniform(-1, 1, (row.max() + 2, col.max() + 2))[row, col]
    wall = jitter((0.58, 0.28, 0.2))[None, None] * (1 + 0.12 * tone[..., None])
    mortar = ((yy % bh) < 1) | (((xx + (row % 2) * bw / 2) % bw) < 1)
    wall = np.where(mortar[..., None], np.array((0.78, 0.76, 0.72)), wall)
  else:
    wall = jitter((0.86, 0.78, 0.6))[None, None] * (
        1 + 0.06 * _smooth_noise(rng, size, 6)[..., None])
  paint(FACADE, wall)

  # Glass: dark to light down each pane, diagonal reflections, light frames.
  for cls, base in ((WINDOW, (0.16, 0.22, 0.32)), (SHOP, (0.08, 0.1, 0.14))):
    mask = labels == cls
    pos, length = _runs(mask, 0)
    frac = (pos / np.maximum(length, 1))[..., None]
    glass = np.asarray(base) * (1 - frac) + (np.asarray(base) + 0.25) * frac
    glass = glass + 0.18 * ((((xx + yy) % int(24 * s)) < int(4 * s)) & mask)[..., None]
    paint(cls, glass)
  glass_like = np.isin(labels, (WINDOW, SHOP))
  interior = glass_like.copy()
  interior[1:] &= glass_like[:-1]
  interior[:-1] &= glass_like[1:]
  interior[:, 1:] &= glass_like[:, :-1]
  interior[:, :-1] &= glass_like[:, 1:]
  np.copyto(img, np.array((0.93, 0.92, 0.88)), where=(glass_like & ~interior)[..., None])

  # Blinds: slats; door: dark wood with grain; stone parts: light, shaded.
  paint(BLIND, np.where(((yy % 2) < 1)[..., None], np.array((0.55, 0.5, 0.42)),
                        jitter((0.8, 0.74, 0.62))))
  grain = 0.05 * np.sin(xx * 1.7 + 3 * _smooth_noise(rng, size, 8))[..., None]
  paint(DOOR, jitter((0.36, 0.21, 0.11)) + grain)
  paint(CORNICE, np.array((0.9, 0.88, 0.82)) - 0.15 * ((yy % 3) < 1)[..., None])
  paint(SILL, np.array((0.86, 0.84, 0.8)))
  paint(MOLDING, np.array((0.84, 0.8, 0.74)))
  paint(DECO, np.array((0.72, 0.66, 0.55)) + 0.05 * _smooth_noise(rng, size, 16)[..., None])
  pos, length = _runs(labels == PILLAR, 1)
  roundness = np.sin(np.pi * (pos + 0.5) / np.maximum(length, 1))[..., None]
  paint(PILLAR, np.array((0.62, 0.6, 0.56)) + 0.25 * roundness)
  rail = np.where(((xx % 3) < 1)[..., None], np.array((0.12, 0.12, 0.13)), img * 0.45)
  paint(BALCONY, rail)

  # Cast shadows under cornice, sills and balconies.
  casters = np.isin(labels, (CORNICE, SILL, BALCONY))
  shadow = np.zeros_like(casters)
  for d in range(1, max(2, int(3 * s)) + 1):
    shadow[d:] |= casters[:-d]
  img *= np.where((shadow & (labels == FACADE))[..., None], 0.7, 1.0)

  # Sunlight from the left, a little sensor noise.
  building = labels != SKY
  img *= np.where(building[..., None], (1.08 - 0.2 * xx / size)[..., None], 1.0)
  img += rng.normal(0, 0.012, img.shape).astype(np.float32)
  return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


def make_pair(seed: int, split: str, index: int, size: int = 128
              ) -> tuple[np.ndarray, np.ndarray]:
  """(label map RGB, photo), both (size, size, 3) uint8, the same for the same arguments."""
  rng = np.random.default_rng([seed, SPLITS.index(split), index])
  labels = label_map(rng, size)
  return PALETTE[labels], render(labels, rng)


@dataclasses.dataclass
class SyntheticConfig(tfds.core.BuilderConfig):
  size: int = 128
  num_examples: tuple[tuple[str, int], ...] = (("train", 400), ("val", 100), ("test", 50))
  seed: int = 0


class Pix2pixSynthetic(tfds.core.GeneratorBasedBuilder):
  """Facade label maps (A) and rendered photos (B), made on the spot."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First version."}
  BUILDER_CONFIGS = [SyntheticConfig(name="default", description="400/100/50 pairs, 128px")]

  def _info(self) -> tfds.core.DatasetInfo:
    return pairs.info(self, __doc__)

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {split: self._generate_examples(split, n)
            for split, n in self.builder_config.num_examples}

  def _generate_examples(self, split: str, n: int):
    cfg = self.builder_config
    for i in range(n):
      a, b = make_pair(cfg.seed, split, i, cfg.size)
      name = f"{split}_{i:05d}.png"
      yield name, pairs.example((name, a, b))
