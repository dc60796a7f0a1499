"""The trained generator as a function of uint8 images: load it, then translate images.

    config, variables = inference.load_generator("workdirs/facades")
    outputs = inference.translate(config, variables, [np.asarray(Image.open("a.jpg"))])

Test-time behaviour is the paper's by default: dropout stays on and BatchNorm normalises with
the statistics of the image being translated (the official test.py, which runs one image at a
time in train mode). Images are batched for speed but each keeps its own statistics and its own
dropout noise (a key folded from the seed and the image's position in the input), so outputs do
not depend on the batch size or on the other images. `eval_mode=True` is the deterministic
alternative: no dropout, BatchNorm with the running averages.
"""

import os
from typing import Any, Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from PIL import Image
from PIL import ImageOps

import configs.default as default_config
from pix2pix_jax.train import checkpoints
from pix2pix_jax.train import ema
from pix2pix_jax.nn import models

Variables = dict[str, Any]
SIZE_MODES = ("pad", "resize")
_PIL_MODE = {1: "L", 3: "RGB", 4: "RGBA"}


# --------------------------------------------------------------------------- checkpoints


def _step_dirs(root: str) -> dict[int, str]:
  """Completed checkpoints under `root` (orbax names unfinished ones `<step>.orbax-...-tmp`)."""
  if not os.path.isdir(root):
    return {}
  return {int(name): os.path.join(root, name) for name in os.listdir(root)
          if name.isdigit() and os.path.isdir(os.path.join(root, name, "state"))}


def checkpoint_step_dir(path: str, step: int | None = None) -> str:
  """`path` (a workdir, its checkpoints folder, or one step's folder) -> one step's folder."""
  path = os.path.abspath(path)
  if os.path.isdir(os.path.join(path, "state")) and os.path.isdir(os.path.join(path, "config")):
    return path
  root = path
  if os.path.isdir(os.path.join(path, checkpoints.CHECKPOINT_DIR)):
    root = os.path.join(path, checkpoints.CHECKPOINT_DIR)
  steps = _step_dirs(root)
  if not steps:
    raise FileNotFoundError(f"no checkpoint in {path} (looked for {root}/<step>/state)")
  if step is None:
    return steps[max(steps)]
  if step not in steps:
    raise FileNotFoundError(f"no checkpoint for step {step} in {root}; steps: {sorted(steps)}")
  return steps[step]


def generator_shapes(config: ml_collections.ConfigDict) -> Variables:
  """ShapeDtypeStructs of the generator's variables, without computing anything."""
  m = config.model
  size = 2**m.num_downs
  x = jax.ShapeDtypeStruct((1, size, size, m.input_nc), jnp.float32)
  generator = models.make_generator(m)
  return jax.eval_shape(lambda x: generator.init(jax.random.key(0), x, train=False), x)


def load_config(step_dir: str) -> ml_collections.ConfigDict:
  """A checkpoint's config, on top of today's defaults (fields added since are filled in)."""
  saved = ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(
      os.path.join(step_dir, "config"), args=ocp.args.JsonRestore())
  config = default_config.base_config()
  config.update(saved)
  return config


def load_generator(path: str, step: int | None = None
                   ) -> tuple[ml_collections.ConfigDict, Variables]:
  """The config and generator variables ({"params", "batch_stats"}) of a checkpoint.

  Only the generator is read: the discriminator and the optimizer states stay on disk.
  With model.ema_decay > 0 the params are the moving average of the trained ones.
  """
  step_dir = checkpoint_step_dir(path, step)
  config = load_config(step_dir)
  shapes = generator_shapes(config)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  field = ema.params_field(config)
  wanted = {field: shapes["params"]}
  if shapes.get("batch_stats"):
    wanted["g_batch_stats"] = shapes["batch_stats"]
  wanted = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), wanted)
  restored = ocp.PyTreeCheckpointer().restore(
      os.path.join(step_dir, "state"), args=ocp.args.PyTreeRestore(
          item=wanted, restore_args=ocp.checkpoint_utils.construct_restore_args(wanted),
          partial_restore=True))
  return config, {"params": restored[field],
                  "batch_stats": restored.get("g_batch_stats", {})}


# --------------------------------------------------------------------------- images


def read_image(path: str) -> np.ndarray:
  """A file as uint8 HxW or HxWxC, upright (EXIF orientation applied), 16-bit gray scaled."""
  with Image.open(path) as image:
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
      return (np.asarray(image, np.float64) / 257.0).clip(0, 255).round().astype(np.uint8)
    if image.mode not in ("L", "LA", "RGB", "RGBA"):
      image = image.convert("RGBA")
    return np.asarray(image)


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
  """uint8 HxW / HxWx{1,2,3,4} -> HxWx`channels`; transparency is composited over white."""
  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise TypeError(f"images must be uint8, got {image.dtype}")
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (2, 3, 4)):
    raise ValueError(f"expected an HxW or HxWx{{1,2,3,4}} image, got shape {image.shape}")
  if channels not in _PIL_MODE:
    raise ValueError(f"models with {channels} input channels are not supported (1, 3 or 4)")
  pil = Image.fromarray(image)
  if pil.mode in ("LA", "RGBA") and channels != 4:
    white = Image.new("RGBA", pil.size, (255, 255, 255, 255))
    pil = Image.alpha_composite(white, pil.convert("RGBA"))
  out = np.asarray(pil.convert(_PIL_MODE[channels]))
  return out[..., None] if out.ndim == 2 else out


def pad_to_multiple(image: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[slice, slice]]:
  """Reflect-pads H and W (split evenly around the image) up to multiples of `multiple`.

  Returns the padded image and the slices that crop the original region back out.
  """
  h, w = image.shape[:2]
  pads = [((-n) % multiple) for n in (h, w)]
  before = [p // 2 for p in pads]
  padded = np.pad(image, [(before[0], pads[0] - before[0]), (before[1], pads[1] - before[1]),
                          (0, 0)], mode="reflect")
  return padded, (slice(before[0], before[0] + h), slice(before[1], before[1] + w))


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """Bicubic resize of a uint8 HxWxC image (the official pipeline's interpolation)."""
  if image.shape[:2] == (height, width):
    return image
  pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
  out = np.asarray(pil.resize((width, height), Image.Resampling.BICUBIC))
  return out[..., None] if out.ndim == 2 else out


def to_float(image: np.ndarray) -> np.ndarray:
  return image.astype(np.float32) / 127.5 - 1.0


def to_uint8(image: np.ndarray | jax.Array) -> np.ndarray:
  return np.clip(np.round((np.asarray(image, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- the generator


def make_generate_fn(config: ml_collections.ConfigDict, eval_mode: bool = False
                     ) -> Callable[[Variables, jax.Array, jax.Array], jax.Array]:
  """jit((variables, images NHWC in [-1, 1], keys (N,)) -> outputs), images independent.

  Train mode (the default, the paper's test mode) applies G to each image as a batch of one,
  under `vmap`: BatchNorm uses that image's statistics and dropout that image's key.
  """
  generator = models.make_generator(config.model)

  def one(variables: Variables, image: jax.Array, key: jax.Array) -> jax.Array:
    out, _ = generator.apply(variables, image[None], train=True, mutable=["batch_stats"],
                             rngs={"dropout": key})
    return out[0]

  def generate(variables: Variables, images: jax.Array, keys: jax.Array) -> jax.Array:
    if eval_mode:
      return generator.apply(variables, images, train=False)
    return jax.vmap(one, in_axes=(None, 0, 0))(variables, images, keys)

  return jax.jit(generate)


def image_keys(seed: int, image_ids: Sequence[int]) -> jax.Array:
  """One dropout key per image: the seed's key folded with the image's id (< 2**32)."""
  base = jax.random.key(seed)
  return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(image_ids, jnp.uint32))


def _batches(indices: list[int], batch_size: int) -> Iterable[list[int]]:
  for start in range(0, len(indices), batch_size):
    yield indices[start:start + batch_size]


def translate(config: ml_collections.ConfigDict, variables: Variables,
              images: Sequence[np.ndarray] | np.ndarray, *, size_mode: str = "pad",
              eval_mode: bool = False, seed: int = 0, batch_size: int = 8,
              image_ids: Sequence[int] | None = None,
              generate_fn: Callable[[Variables, jax.Array, jax.Array], jax.Array] | None = None
              ) -> list[np.ndarray]:
  """uint8 images of any sizes and channel counts -> uint8 HxWx`output_nc` outputs, same sizes.

  size_mode "pad": reflect-pad to a multiple of 2**num_downs, crop the output back (keeps the
  pixel scale; in test mode the mirrored border also enters the BatchNorm statistics).
  "resize": resize to the training crop size and the output back (keeps the scale the
  network was trained at, relative to the image). Images of one padded shape share
  a compiled function; the last batch of a shape is filled up with copies so that every batch
  has `batch_size` images and each shape compiles once. Image i's dropout key is the seed's
  folded with image_ids[i] (default: i), so an image's output depends only on (seed, id).
  """
  if size_mode not in SIZE_MODES:
    raise ValueError(f"size_mode must be one of {SIZE_MODES}, got {size_mode!r}")
  m = config.model
  multiple = 2**m.num_downs
  generate = generate_fn or make_generate_fn(config, eval_mode)
  ids = list(range(len(images))) if image_ids is None else list(image_ids)
  if len(ids) != len(images):
    raise ValueError(f"{len(ids)} image_ids for {len(images)} images")
  prepared, crops = [], []
  for image in images:
    x = to_channels(image, m.input_nc)
    if size_mode == "pad":
      x, crop = pad_to_multiple(x, multiple)
    else:
      crop = x.shape[:2]
      size = config.data.crop_size
      if size % multiple:
        raise ValueError(f"data.crop_size {size} is not a multiple of 2**num_downs={multiple}")
      x = resize(x, size, size)
    prepared.append(x)
    crops.append(crop)

  by_shape: dict[tuple[int, ...], list[int]] = {}
  for i, x in enumerate(prepared):
    by_shape.setdefault(x.shape, []).append(i)
  outputs: list[np.ndarray | None] = [None] * len(prepared)
  for indices in by_shape.values():
    for batch in _batches(indices, batch_size):
      filled = batch + [batch[-1]] * (batch_size - len(batch))
      x = np.stack([to_float(prepared[i]) for i in filled])
      keys = image_keys(seed, [ids[i] for i in filled])
      y = np.asarray(generate(variables, jnp.asarray(x), keys))
      for i, out in zip(batch, y):
        out = to_uint8(out)
        if size_mode == "pad":
          outputs[i] = out[crops[i]]
        else:
          outputs[i] = resize(out, *crops[i])
  return outputs  # type: ignore[return-value]
