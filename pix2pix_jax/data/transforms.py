"""The official `--preprocess` modes, flip and size fixing, in numpy + PIL.

This is the only implementation of the geometric augmentation: the tf.data and the numpy
readers both call `preprocess`, so they give the same pixels for the same seed and index.
Resizing is PIL BICUBIC, as torchvision does on the PIL images of the official code.
"""

import dataclasses

import numpy as np

from pix2pix_jax.data import image_io

PREPROCESS = ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none")
SIZE_MODES = ("reflect", "zeros", "resize")


@dataclasses.dataclass(frozen=True)
class Spec:
  """Everything that decides the geometry of one example."""
  preprocess: str = "resize_and_crop"
  load_size: int = 286
  crop_size: int = 256
  flip: bool = True
  multiple: int = 1  # models.size_multiple: 2**num_downs for the U-Net, 4 for the ResNets.
  size_mode: str = "reflect"  # How to reach a multiple: pad (reflect | zeros) or resize.

  def __post_init__(self):
    if self.preprocess not in PREPROCESS:
      raise ValueError(f"data.preprocess must be one of {PREPROCESS}, got "
                       f"{self.preprocess!r}")
    if self.size_mode not in SIZE_MODES:
      raise ValueError(f"data.size_mode must be one of {SIZE_MODES}, got "
                       f"{self.size_mode!r}")
    if self.load_size < 1 or self.crop_size < 1:
      raise ValueError("data.load_size and data.crop_size must be positive")


@dataclasses.dataclass(frozen=True)
class Params:
  """The random draws for one example; shared by A and B so they stay aligned."""
  y: int = 0
  x: int = 0
  flip: bool = False


def test_spec(spec: Spec, load_size: int | None = None) -> Spec:
  """The official test.py's geometry for a training `spec`: no flip, load_size = crop_size.

  test_options sets load_size to crop_size ("to avoid cropping"), so resize_and_crop
  resizes the whole image to crop_size and crops nothing, the scale_width modes scale to
  crop_size wide, crop and none are unchanged; `load_size` overrides (the training
  load_size gives the old resize-then-centre-crop view). Crops, where any is left, are
  centred: the official test draws them at random.
  """
  return dataclasses.replace(spec, load_size=spec.crop_size if load_size is None else load_size,
                             flip=False)


def resized_shape(height: int, width: int, spec: Spec) -> tuple[int, int]:
  """(H, W) after the resize step of a preprocess mode, before any crop."""
  if spec.preprocess == "resize_and_crop":
    return spec.load_size, spec.load_size
  if spec.preprocess.startswith("scale_width"):
    # The official __scale_width: keep the aspect, but never lower than crop_size.
    if width == spec.load_size and height >= spec.crop_size:
      return height, width
    return int(max(spec.load_size * height / width, spec.crop_size)), spec.load_size
  if spec.preprocess == "none":
    # The official __make_power_2(base=4): round each side to a multiple of 4.
    return max(4, round(height / 4) * 4), max(4, round(width / 4) * 4)
  return height, width  # crop


def _crops(spec: Spec) -> bool:
  return spec.preprocess in ("resize_and_crop", "crop", "scale_width_and_crop")


def draw(rng: np.random.Generator | None, height: int, width: int, spec: Spec) -> Params:
  """Random crop corner and flip (the official get_params); None: centre crop, no flip."""
  if not _crops(spec):
    y = x = 0
  else:
    h, w = resized_shape(height, width, spec)
    max_y, max_x = max(0, h - spec.crop_size), max(0, w - spec.crop_size)
    if rng is None:
      y, x = max_y // 2, max_x // 2
    else:
      x, y = int(rng.integers(0, max_x + 1)), int(rng.integers(0, max_y + 1))
  flip = rng is not None and spec.flip and bool(rng.random() > 0.5)
  return Params(y=y, x=x, flip=flip)


def fit_multiple(image: np.ndarray, spec: Spec) -> np.ndarray:
  """Pads (bottom/right, so [:h, :w] crops back) or resizes to a multiple of spec.multiple.

  Without this, sizes that are not multiples of 2**num_downs break the U-Net's skips: the
  most common crash of the official code on users' own data.
  """
  m = spec.multiple
  h, w = image.shape[:2]
  if h % m == 0 and w % m == 0:
    return image
  if spec.size_mode == "resize":
    return image_io.resize(image, max(m, round(h / m) * m), max(m, round(w / m) * m))
  pad = ((0, -h % m), (0, -w % m), (0, 0))
  if spec.size_mode == "zeros":
    return np.pad(image, pad)
  # Reflection needs at least 2 pixels; a 1-pixel side can only repeat itself.
  return np.pad(image, pad, mode="reflect" if min(h, w) > 1 else "edge")


def preprocess(images: list[np.ndarray], params: Params, spec: Spec
               ) -> tuple[list[np.ndarray], tuple[int, int]]:
  """Resizes, crops and flips every image the same way; float32 in [-1, 1], fitted.

  Returns the images and their (H, W) before `fit_multiple` (where to crop back to).
  """
  out = []
  for image in images:
    top = float(np.iinfo(image.dtype).max)
    h, w = resized_shape(image.shape[0], image.shape[1], spec)
    image = image_io.resize(image, h, w)
    if _crops(spec):
      image = image[params.y:params.y + spec.crop_size, params.x:params.x + spec.crop_size]
    if params.flip:
      image = image[:, ::-1]
    out.append(image_io.to_float(image, top))
  shape = out[0].shape[:2]
  return [np.ascontiguousarray(fit_multiple(img, spec)) for img in out], shape


def restore(image: np.ndarray, shape: tuple[int, int], spec: Spec) -> np.ndarray:
  """Undoes `fit_multiple` on a network output: crop back or resize back to `shape`."""
  h, w = shape
  if spec.size_mode == "resize":
    return image_io.resize(image.astype(np.float32), h, w)
  return image[:h, :w]


def pad_to(image: np.ndarray, height: int, width: int) -> tuple[np.ndarray, tuple[slice, slice]]:
  """Reflect-pads H and W (split evenly around the image) to height x width.

  Returns the padded image and the slices that crop the original region back out.
  """
  h, w = image.shape[:2]
  top, left = (height - h) // 2, (width - w) // 2
  pads = [(top, height - h - top), (left, width - w - left)] + [(0, 0)] * (image.ndim - 2)
  return (np.pad(image, pads, mode="reflect"),
          (slice(top, top + h), slice(left, left + w)))


def pad_to_multiple(image: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[slice, slice]]:
  """`pad_to` the next multiples of `multiple`."""
  h, w = image.shape[:2]
  return pad_to(image, h + (-h) % multiple, w + (-w) % multiple)
