"""Exports the trained generator for serving without this project's code (or Flax).

    python -m pix2pix_jax.serving.export --workdir DIR --output OUT \
        [--format stablehlo|saved_model|both|onnx] [--test_mode] [--size S]

The exported function is G in eval mode (no dropout, BatchNorm running averages): a
deterministic function of NHWC float32 images in [-1, 1] -> images in [-1, 1], with the
weights inside. The paper's test mode needs a dropout key and per-image statistics; use
`pix2pix_jax.serving.translate` for it (or --format onnx --test_mode, below).

- OUT/generator.stablehlo: `jax.export` serialization, polymorphic in the batch and in the
  spatial size (any multiple of models.size_multiple), for cpu, cuda and tpu. Load it with
  `jax.export.deserialize(open(path, "rb").read()).call(images)`: jax alone is needed.
- OUT/saved_model: a TensorFlow SavedModel through jax2tf, signature `serving_default`
  (images [batch, S, S, input_nc] float32 -> outputs), batch polymorphic, S fixed (--size,
  default the training crop size). jax2tf's own shape polymorphism is not used: jax 0.12 writes
  its shape checks as StableHLO 1.18 ops that TensorFlow 2.21 cannot read, so the SavedModel
  maps a one-image function over the batch (the images are independent in eval mode).
- OUT/generator.onnx (--format onnx): an ONNX graph (opset 23, standard Conv and
  ConvTranspose) converted by jax2onnx, for ONNX Runtime, TensorRT, onnxruntime-web or mobile.
  Input "images" [batch, H, W, input_nc], output "outputs", NHWC float32 in [-1, 1]. In eval
  mode the batch and the spatial size are symbolic (multiples of the size multiple). With
  --test_mode, the paper's test mode without the dropout noise: each image normalised with its
  own BatchNorm statistics; batch symbolic, H = W = --size (default the training crop size):
  jax2onnx 0.17.1 cannot lower the statistics' element count (`dim_as_value` of a size written
  as a multiple) for a symbolic spatial size ("No symbolic dim origin registered"). ResNet
  generators are refused: jax2onnx 0.17.1's lowering of a nested `jit` (their reflection
  padding) fails on JAX 0.12 (`jax._src.core` has no `ClosedJaxpr`).
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
from pix2pix_jax.nn import resnet
from pix2pix_jax.serving import checkpoint_flags
from pix2pix_jax.train import checkpoints

STABLEHLO_FILE = "generator.stablehlo"
SAVED_MODEL_DIR = "saved_model"
ONNX_FILE = "generator.onnx"
INFO_FILE = "export.json"
FORMATS = ("stablehlo", "saved_model", "both", "onnx")
PLATFORMS = ("cpu", "cuda", "tpu")
ONNX_OPSET = 23


def export_generator(config: ml_collections.ConfigDict, dropout: bool = True
                     ) -> models.UNetGenerator:
  """G with lax's own convolutions on every platform (conv.PLAIN): the runtime that loads the
  export optimises those, converters map them to standard operators, and they take symbolic
  shapes, where the CPU forms are chosen from concrete sizes. Same parameters, same function;
  `dropout=False` leaves the dropout layers out (they have no parameters)."""
  model = config.model
  if not dropout:
    model = ml_collections.ConfigDict(config.model.to_dict())
    model.dropout_rate = 0.0
  return models.make_generator(model, conv.PLAIN)


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


def check_onnx_config(config: ml_collections.ConfigDict) -> None:
  """Refuses, in one sentence, a generator whose ONNX graph ONNX Runtime could not run."""
  if config.model.generator in resnet.BLOCKS:
    raise ValueError(
        f"ONNX export supports the U-Net generators, not {config.model.generator}: jax2onnx "
        "0.17.1 cannot lower the nested jit of its reflection padding on JAX 0.12.")
  if config.model.dtype != "float32":
    raise ValueError(
        f"ONNX export needs model.dtype float32, not {config.model.dtype}: ONNX Runtime has no "
        "bfloat16 convolution kernels on CPU, so the graph would not run.")


def onnx_fn(config: ml_collections.ConfigDict, variables: generate_lib.Variables,
            test_mode: bool = False) -> Callable[[jax.Array], jax.Array]:
  """images -> G(images) without dropout: eval mode, or with `test_mode` each image
  normalised with its own BatchNorm statistics (a batch of one under vmap)."""
  generator = export_generator(config, dropout=False)
  if not test_mode:
    return lambda images: generator.apply(variables, images, train=False)

  def one(image: jax.Array) -> jax.Array:
    out, _ = generator.apply(variables, image[None], train=True, mutable=["batch_stats"])
    return out[0]

  return jax.vmap(one)


def onnx_input_spec(config: ml_collections.ConfigDict, test_mode: bool,
                    size: int | None = None) -> jax.ShapeDtypeStruct:
  """Symbolic batch; symbolic multiples of the size multiple as the spatial size in eval
  mode, `size` (default data.crop_size) in test mode (see the module docstring)."""
  m = config.model
  multiple = models.size_multiple(m)
  b, h, w = jax_export.symbolic_shape("batch, h, w")
  if not test_mode:
    return jax.ShapeDtypeStruct((b, multiple * h, multiple * w, m.input_nc), jnp.float32)
  size = size or config.data.crop_size
  if size % multiple:
    raise ValueError(f"--size {size} is not a multiple of the size multiple {multiple}")
  return jax.ShapeDtypeStruct((b, size, size, m.input_nc), jnp.float32)


def export_onnx(config: ml_collections.ConfigDict, variables: generate_lib.Variables,
                path: str, *, test_mode: bool = False, size: int | None = None
                ) -> dict[str, Any]:
  """Writes the generator as ONNX to `path`; returns its export.json entry."""
  import onnx  # pylint: disable=g-import-not-at-top
  from jax2onnx import to_onnx  # pylint: disable=g-import-not-at-top

  check_onnx_config(config)
  spec = onnx_input_spec(config, test_mode, size)
  try:
    model = to_onnx(onnx_fn(config, variables, test_mode), [spec], model_name="generator",
                    opset=ONNX_OPSET, input_names=["images"], output_names=["outputs"])
  except Exception as e:  # pylint: disable=broad-except  # The converter's own errors.
    raise ValueError(f"jax2onnx cannot convert this generator: {type(e).__name__}: {e}"
                     ) from None
  onnx.save(model, path)
  dims = [d.dim_param or d.dim_value
          for d in model.graph.input[0].type.tensor_type.shape.dim]
  return {"file": os.path.basename(path), "opset": ONNX_OPSET, "input": "images",
          "output": "outputs", "input_shape": dims,
          "mode": ("test (per-image BatchNorm statistics, no dropout noise)" if test_mode
                   else "eval (no dropout, BatchNorm running averages)")}


def export_all(checkpoint: str, output_dir: str, *, step: int | None = None,
               export_format: str = "both", size: int | None = None,
               platforms: Sequence[str] = PLATFORMS, test_mode: bool = False
               ) -> dict[str, Any]:
  """Writes the requested artifacts and export.json; returns export.json's contents."""
  if export_format not in FORMATS:
    raise ValueError(f"--format must be one of {FORMATS}")
  if test_mode and export_format != "onnx":
    raise ValueError("--test_mode is only exported as ONNX (--format onnx)")
  step_dir = checkpoints.checkpoint_step_dir(checkpoint, step)
  config, variables = checkpoints.load_generator(step_dir)
  m = config.model
  if export_format == "onnx":
    check_onnx_config(config)
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
  if export_format == "onnx":
    entry = export_onnx(config, variables, os.path.join(output_dir, ONNX_FILE),
                        test_mode=test_mode, size=size)
    info["mode"] = entry["mode"]
    info["artifacts"]["onnx"] = entry
  with open(os.path.join(output_dir, INFO_FILE), "w") as f:
    json.dump(info, f, indent=2)
  return info


def define_flags() -> None:
  """Flags are defined only when run as a program, so that the module imports cleanly."""
  checkpoint_flags.define()
  flags.DEFINE_string("output", None, "Folder for the exported artifacts.", required=True)
  flags.DEFINE_enum("format", "both", FORMATS, "What to export.")
  flags.DEFINE_integer("size", None, "SavedModel (and test-mode ONNX) image side; default "
                       "data.crop_size.")
  flags.DEFINE_list("platforms", list(PLATFORMS), "StableHLO target platforms.")
  flags.DEFINE_bool("test_mode", False, "ONNX: the paper's test mode without dropout noise "
                    "(per-image BatchNorm statistics) instead of eval mode.")


def main(argv: list[str]) -> None:
  del argv
  f = flags.FLAGS
  try:
    info = export_all(checkpoint_flags.path(), f.output, step=f.step, export_format=f.format,
                      size=f.size, platforms=f.platforms, test_mode=f.test_mode)
  except (FileNotFoundError, ValueError) as e:
    checkpoint_flags.exit_with(e)
  print(json.dumps(info["artifacts"], indent=2))

if __name__ == "__main__":
  define_flags()
  app.run(main)
