"""Exports the trained generator for serving without this project's code (or Flax).

    python -m pix2pix_jax.serving.export --workdir DIR --output OUT [--format stablehlo|saved_model|both]

The exported function is G in eval mode (no dropout, BatchNorm running averages): a
deterministic function of NHWC float32 images in [-1, 1] -> images in [-1, 1], with the
weights inside. The paper's test mode needs a dropout key and per-image statistics; use
`pix2pix_jax.serving.translate` for it.

- OUT/generator.stablehlo: `jax.export` serialization, polymorphic in the batch and in the
  spatial size (any multiple of models.size_multiple), for cpu, cuda and tpu. Load it with
  `jax.export.deserialize(open(path, "rb").read()).call(images)`: jax alone is needed.
- OUT/saved_model: a TensorFlow SavedModel through jax2tf, signature `serving_default`
  (images [batch, S, S, input_nc] float32 -> outputs), batch polymorphic, S fixed (--size,
  default the training crop size). jax2tf's own shape polymorphism is not used: jax 0.12 writes
  its shape checks as StableHLO 1.18 ops that TensorFlow 2.21 cannot read, so the SavedModel
  maps a one-image function over the batch (the images are independent in eval mode).
- OUT/export.json: what the artifacts expect (layout, range, sizes, checkpoint step).
"""

import json
import os
from typing import Any, Callable, Sequence

from absl import app
from absl import flags
import jax
from jax import export as jax_export
import jax.numpy as jnp
import ml_collections
import numpy as np

from pix2pix_jax.nn import conv
from pix2pix_jax.nn import generate as generate_lib
from pix2pix_jax.nn import models
from pix2pix_jax.serving import checkpoint_flags
from pix2pix_jax.train import checkpoints

STABLEHLO_FILE = "generator.stablehlo"
SAVED_MODEL_DIR = "saved_model"
INFO_FILE = "export.json"
FORMATS = ("stablehlo", "saved_model", "both")
PLATFORMS = ("cpu", "cuda", "tpu")


def export_generator(config: ml_collections.ConfigDict) -> models.UNetGenerator:
  """G with lax's own convolutions on every platform (conv.PLAIN): the runtime that loads the
  export optimises those, and they take symbolic shapes, where the CPU forms are chosen from
  concrete sizes. Same parameters, same function."""
  return models.make_generator(config.model, conv.PLAIN)


def eval_fn(config: ml_collections.ConfigDict, variables: generate_lib.Variables
            ) -> Callable[[jax.Array], jax.Array]:
  """images -> G(images) in eval mode, the variables closed over (they become constants)."""
  generator = export_generator(config)
  return lambda images: generator.apply(variables, images, train=False)


def export_stablehlo(config: ml_collections.ConfigDict, variables: generate_lib.Variables,
                     platforms: Sequence[str] = PLATFORMS) -> jax_export.Exported:
  """The generator lowered once for shapes (b, m*h, m*w, input_nc), m = models.size_multiple."""
  m = models.size_multiple(config.model)
  # jnp.pad's reflection must know at lowering time that each side it pads is > 1 pixel.
  least = models.min_size(config.model) // m
  b, h, w = jax_export.symbolic_shape("b, h, w", constraints=(f"h >= {least}", f"w >= {least}"))
  spec = jax.ShapeDtypeStruct((b, m * h, m * w, config.model.input_nc), jnp.float32)
  return jax_export.export(jax.jit(eval_fn(config, variables)), platforms=tuple(platforms))(spec)


def save_saved_model(config: ml_collections.ConfigDict, variables: generate_lib.Variables,
                     path: str, size: int) -> None:
  """A TF SavedModel of the generator for [batch, size, size, input_nc] images."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from jax.experimental import jax2tf  # pylint: disable=g-import-not-at-top

  m = config.model
  if size % models.size_multiple(m):
    raise ValueError(f"--size {size} is not a multiple of {models.size_multiple(m)}")
  generator = export_generator(config)
  one_image = jax2tf.convert(
      lambda variables, image: generator.apply(variables, image[None], train=False)[0],
      with_gradient=False, native_serialization_platforms=("cpu", "cuda"))
  module = tf.Module()
  module.generator_variables = tf.nest.map_structure(
      lambda a: tf.Variable(np.asarray(a), trainable=False), jax.device_get(variables))

  @tf.function(autograph=False, input_signature=[
      tf.TensorSpec([None, size, size, m.input_nc], tf.float32, name="images")])
  def serve(images):
    outputs = tf.map_fn(lambda image: one_image(module.generator_variables, image), images,
                        fn_output_signature=tf.TensorSpec([size, size, m.output_nc],
                                                          tf.float32))
    return {"outputs": outputs}

  module.serve = serve
  tf.saved_model.save(module, path, signatures={"serving_default": serve})


def export_all(checkpoint: str, output_dir: str, *, step: int | None = None,
               export_format: str = "both", size: int | None = None,
               platforms: Sequence[str] = PLATFORMS) -> dict[str, Any]:
  """Writes the requested artifacts and export.json; returns export.json's contents."""
  if export_format not in FORMATS:
    raise ValueError(f"--format must be one of {FORMATS}")
  step_dir = checkpoints.checkpoint_step_dir(checkpoint, step)
  config, variables = checkpoints.load_generator(step_dir)
  m = config.model
  os.makedirs(output_dir, exist_ok=True)
  info: dict[str, Any] = {
      "checkpoint": step_dir, "mode": "eval (no dropout, BatchNorm running averages)",
      "layout": "NHWC float32", "value_range": [-1.0, 1.0], "input_channels": m.input_nc,
      "output_channels": m.output_nc, "spatial_multiple": models.size_multiple(m),
      "artifacts": {}}
  if export_format in ("stablehlo", "both"):
    exported = export_stablehlo(config, variables, platforms)
    with open(os.path.join(output_dir, STABLEHLO_FILE), "wb") as f:
      f.write(exported.serialize())
    info["artifacts"]["stablehlo"] = {
        "file": STABLEHLO_FILE, "input_shape": str(exported.in_avals[0].shape),
        "platforms": list(exported.platforms)}
  if export_format in ("saved_model", "both"):
    size = size or config.data.crop_size
    save_saved_model(config, variables, os.path.join(output_dir, SAVED_MODEL_DIR), size)
    info["artifacts"]["saved_model"] = {
        "dir": SAVED_MODEL_DIR, "signature": "serving_default",
        "input": f"images [batch, {size}, {size}, {m.input_nc}]", "output": "outputs"}
  with open(os.path.join(output_dir, INFO_FILE), "w") as f:
    json.dump(info, f, indent=2)
  return info


def define_flags() -> None:
  """Flags are defined only when run as a program, so that the module imports cleanly."""
  checkpoint_flags.define()
  flags.DEFINE_string("output", None, "Folder for the exported artifacts.", required=True)
  flags.DEFINE_enum("format", "both", FORMATS, "What to export.")
  flags.DEFINE_integer("size", None, "SavedModel image side; default data.crop_size.")
  flags.DEFINE_list("platforms", list(PLATFORMS), "StableHLO target platforms.")


def main(argv: list[str]) -> None:
  del argv
  f = flags.FLAGS
  try:
    info = export_all(checkpoint_flags.path(), f.output, step=f.step, export_format=f.format,
                      size=f.size, platforms=f.platforms)
  except (FileNotFoundError, ValueError) as e:
    checkpoint_flags.exit_with(e)
  print(json.dumps(info["artifacts"], indent=2))

if __name__ == "__main__":
  define_flags()
  app.run(main)
