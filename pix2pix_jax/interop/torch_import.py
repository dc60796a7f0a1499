"""Converts official PyTorch pix2pix checkpoints (latest_net_G.pth, ...) to this project's.

    python -m pix2pix_jax.interop.torch_import --pth latest_net_G.pth --output DIR \
        [--pth_d latest_net_D.pth --netD basic|n_layers|pixel --n_layers_D 3] \
        [--netG unet_256|resnet_9blocks|resnet_6blocks] [--norm batch] [--no_dropout] \
        [--config.<field>=<value> ...]

writes DIR/checkpoints/0/{state,config}, which translate, evaluate and export read like a
training checkpoint (and train.py can fine-tune from: without --pth_d the discriminator is
freshly initialised). The generator's widths, channels and depth are read from the state dict;
--netG/--norm only check them. Works without torch (see `torch_pth`).

Official names (junyanz/pytorch-CycleGAN-and-pix2pix, networks.py): the U-Net is nested
UnetSkipConnectionBlocks, each an nn.Sequential `model`: the outermost [downconv, submodule,
relu, upconv, tanh], the middle ones [lrelu, downconv, downnorm, submodule, relu, upconv, upnorm
(, dropout)], the innermost [lrelu, downconv, relu, upconv, upnorm]. So level i's layers live
under `model.model.` + `1.model.` (i >= 1) + `3.model.` * (i - 1). The ResnetGenerator is one
Sequential `model`: [pad, conv, norm, relu] + 2 x [conv, norm, relu] + n blocks (at 10..9+n,
each a Sequential `conv_block`: [pad, conv, norm, relu, (dropout,) pad, conv, norm]) + 2 x
[convT, norm, relu] + [pad, conv, tanh]. NLayerDiscriminator is one Sequential `model` (conv
k at index 3k - 1, its norm at 3k), PixelDiscriminator one `net`.
"""

import os
import re
import sys
from typing import Any

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import numpy as np

from pix2pix_jax.config import base as config_base
from pix2pix_jax.interop import torch_pth
from pix2pix_jax.nn import models
from pix2pix_jax.nn import resnet
from pix2pix_jax.train import checkpoints
from pix2pix_jax.train import optimizers
from pix2pix_jax.train import state as train_state_lib

Variables = dict[str, Any]


class ConversionError(ValueError):
  """The state dict does not fit the architecture it is converted to."""


def _conv(w: np.ndarray) -> np.ndarray:
  """Conv2d weight (out, in, kh, kw) -> Flax kernel (kh, kw, in, out)."""
  return np.transpose(w, (2, 3, 1, 0))


def _conv_transpose(w: np.ndarray) -> np.ndarray:
  """ConvTranspose2d weight (in, out, kh, kw) -> UpConv kernel (kh, kw, in, out)."""
  return np.transpose(w, (2, 3, 0, 1))


def strip_prefixes(state_dict: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Drops the `module.` that nn.DataParallel adds to every name."""
  return {re.sub(r"^(module\.)+", "", k): v for k, v in state_dict.items()}


def _unet_prefix(level: int) -> str:
  return "model.model." + ("1.model." if level >= 1 else "") + "3.model." * max(level - 1, 0)


def unet_layout(num_downs: int) -> dict[str, tuple[str, str]]:
  """Our layer name -> (kind, official prefix), kind one of conv, conv_t, bn."""
  layout = {}
  for i in range(num_downs):
    p = _unet_prefix(i)
    if i == 0:
      layout.update(enc_0=("conv", p + "0"), dec_0=("conv_t", p + "3"))
    elif i < num_downs - 1:
      layout.update({f"enc_{i}": ("conv", p + "1"), f"enc_norm_{i}": ("bn", p + "2"),
                     f"dec_{i}": ("conv_t", p + "5"), f"dec_norm_{i}": ("bn", p + "6")})
    else:
      layout.update({f"enc_{i}": ("conv", p + "1"), f"dec_{i}": ("conv_t", p + "3"),
                     f"dec_norm_{i}": ("bn", p + "4")})
  return layout


RESNET_FIRST_BLOCK = 10  # model.10 is the first residual block.


def _resnet_second_conv(state_dict: dict[str, np.ndarray]) -> int:
  """conv_block's index of a block's second conv: 6 after a Dropout, else 5."""
  weight = state_dict.get(f"model.{RESNET_FIRST_BLOCK}.conv_block.6.weight")
  return 6 if weight is not None and weight.ndim == 4 else 5


def resnet_layout(n_blocks: int, second_conv: int) -> dict[str, tuple[str, str]]:
  """Our layer name (a block's layers: block_k/conv_0, ...) -> (kind, official prefix)."""
  layout = {"stem": ("conv", "model.1"), "stem_norm": ("bn", "model.2")}
  for i in range(2):
    layout.update({f"down_{i}": ("conv", f"model.{4 + 3 * i}"),
                   f"down_norm_{i}": ("bn", f"model.{5 + 3 * i}")})
  for k in range(n_blocks):
    p = f"model.{RESNET_FIRST_BLOCK + k}.conv_block."
    layout.update({f"block_{k}/conv_0": ("conv", p + "1"), f"block_{k}/norm_0": ("bn", p + "2"),
                   f"block_{k}/conv_1": ("conv", p + str(second_conv)),
                   f"block_{k}/norm_1": ("bn", p + str(second_conv + 1))})
  up = RESNET_FIRST_BLOCK + n_blocks
  for i in range(2):
    layout.update({f"up_{i}": ("conv_t", f"model.{up + 3 * i}"),
                   f"up_norm_{i}": ("bn", f"model.{up + 1 + 3 * i}")})
  layout["head"] = ("conv", f"model.{up + 7}")
  return layout


def patch_layout(n_layers: int) -> dict[str, tuple[str, str]]:
  if n_layers == 0:
    return {"conv_0": ("conv", "net.0"), "conv_1": ("conv", "net.2"),
            "norm_1": ("bn", "net.3"), "conv_2": ("conv", "net.5")}
  layout = {"conv_0": ("conv", "model.0")}
  for k in range(1, n_layers + 1):
    layout[f"conv_{k}"] = ("conv", f"model.{3 * k - 1}")
    layout[f"norm_{k}"] = ("bn", f"model.{3 * k}")
  layout[f"conv_{n_layers + 1}"] = ("conv", f"model.{3 * n_layers + 2}")
  return layout


def _layer(names: list[str], layout: dict[str, tuple[str, str]]) -> str:
  """The layout's name for the layer a leaf belongs to: the shortest path prefix it lists."""
  for end in range(1, len(names)):
    if "/".join(names[:end]) in layout:
      return "/".join(names[:end])
  raise ConversionError(f"no official layer for {'/'.join(names)}")


def _leaf_source(kind: str, prefix: str, leaf: str) -> tuple[str, Any]:
  """(official name, weight transform) of one of our leaves."""
  if kind == "bn":
    name = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}
    return f"{prefix}.{name[leaf]}", np.asarray
  if leaf == "bias":
    return f"{prefix}.bias", np.asarray
  return f"{prefix}.weight", _conv if kind == "conv" else _conv_transpose


def _convert(state_dict: dict[str, np.ndarray], shapes: Variables,
             layout: dict[str, tuple[str, str]], scope: tuple[str, ...], norm: str,
             what: str) -> Variables:
  """Fills `shapes` (our variables' ShapeDtypeStructs) from the official state dict."""
  state_dict = strip_prefixes(state_dict)
  used = set()
  out: Variables = {}
  for collection, tree in shapes.items():
    flat = {}
    for path, shape in jax.tree_util.tree_flatten_with_path(tree)[0]:
      names = [p.key for p in path]
      kind, prefix = layout[_layer(names[len(scope):], layout)]
      leaf = names[-1]  # kernel, bias, or a BatchNorm's scale, bias, mean, var.
      key, transform = _leaf_source(kind, prefix, leaf)
      if key not in state_dict:
        if leaf == "bias" and kind != "bn" and norm == "none":
          # The official code drops these biases with norm 'none'; ours keeps them (zero).
          flat[tuple(names)] = np.zeros(shape.shape, np.float32)
          continue
        raise ConversionError(f"{what}: {key} (for {'/'.join(names)}) is not in the checkpoint")
      value = transform(state_dict[key]).astype(np.float32)
      if value.shape != shape.shape:
        raise ConversionError(f"{what}: {key} has shape {state_dict[key].shape}, which does not "
                              f"fit {'/'.join(names)} {shape.shape}; check the architecture flags")
      used.add(key)
      flat[tuple(names)] = value
    out[collection] = _unflatten(flat)
  # Old official InstanceNorm layers tracked running statistics that test mode never used.
  ignorable = (".num_batches_tracked",) + (
      (".running_mean", ".running_var") if norm == "instance" else ())
  unused = [k for k in state_dict if k not in used and not k.endswith(ignorable)]
  if unused:
    raise ConversionError(f"{what}: the checkpoint has layers this architecture lacks: "
                          f"{unused[:5]}{' ...' if len(unused) > 5 else ''}")
  return out


def _unflatten(flat: dict[tuple[str, ...], np.ndarray]) -> dict[str, Any]:
  tree: dict[str, Any] = {}
  for names, value in flat.items():
    node = tree
    for name in names[:-1]:
      node = node.setdefault(name, {})
    node[names[-1]] = value
  return tree


def _infer_resnet_config(sd: dict[str, np.ndarray]) -> dict[str, Any]:
  n_blocks = 0
  while f"model.{RESNET_FIRST_BLOCK + n_blocks}.conv_block.1.weight" in sd:
    n_blocks += 1
  generator = f"resnet_{n_blocks}blocks"
  if generator not in resnet.BLOCKS:
    raise ConversionError(f"the ResNet generator has {n_blocks} blocks; only "
                          f"{', '.join(resnet.BLOCKS)} are supported")
  if "model.2.weight" in sd:  # Old InstanceNorm layers also kept running statistics.
    norm = "batch"
  elif "model.1.bias" in sd:
    norm = "instance"
  else:
    norm = "none"
  ngf, input_nc = sd["model.1.weight"].shape[:2]
  head = f"model.{RESNET_FIRST_BLOCK + n_blocks + 7}.weight"
  return {"generator": generator, "ngf": int(ngf), "input_nc": int(input_nc),
          "output_nc": int(sd[head].shape[0]), "norm": norm,
          "dropout": _resnet_second_conv(sd) == 6}


def infer_generator_config(state_dict: dict[str, np.ndarray]) -> dict[str, Any]:
  """generator, ngf, input_nc, output_nc, norm (U-Net: num_downs; ResNet: whether its blocks
  have dropout), read off an official generator's state dict."""
  sd = strip_prefixes(state_dict)
  if "model.1.weight" in sd and f"model.{RESNET_FIRST_BLOCK}.conv_block.1.weight" in sd:
    return _infer_resnet_config(sd)
  if "model.model.0.weight" not in sd or "model.model.3.weight" not in sd:
    raise ConversionError("not an official U-Net or ResNet generator state dict (no "
                          "model.model.0.weight nor model.1.weight)")
  for key in ("model.model.0.weight", "model.model.3.weight"):
    if np.ndim(sd[key]) != 4:
      raise ConversionError(f"{key} has shape {np.shape(sd[key])}, not the 4-D weight of a "
                            "convolution: not an official U-Net generator")
  num_downs = 1
  while _unet_prefix(num_downs) + "1.weight" in sd:
    num_downs += 1
  enc_1 = _unet_prefix(1) + "1"
  if _unet_prefix(1) + "2.running_mean" in sd:
    norm = "batch"
  elif enc_1 + ".bias" in sd:
    norm = "instance"
  else:
    norm = "none"
  ngf, input_nc = sd["model.model.0.weight"].shape[:2]
  return {"generator": "unet", "ngf": int(ngf), "input_nc": int(input_nc),
          "output_nc": int(sd["model.model.3.weight"].shape[1]), "num_downs": num_downs,
          "norm": norm}


def _shapes(module: Any, *inputs: jax.ShapeDtypeStruct) -> Variables:
  return jax.eval_shape(lambda *x: module.init(jax.random.key(0), *x, train=False), *inputs)


def generator_from_torch(state_dict: dict[str, np.ndarray],
                         model_config: ml_collections.ConfigDict) -> Variables:
  """Our generator's {"params", "batch_stats"} from an official unet_*/resnet_* state dict."""
  m = model_config
  size = models.size_multiple(m)
  shapes = _shapes(models.make_generator(m),
                   jax.ShapeDtypeStruct((1, size, size, m.input_nc), jnp.float32))
  if m.generator in resnet.BLOCKS:
    layout = resnet_layout(resnet.BLOCKS[m.generator],
                           _resnet_second_conv(strip_prefixes(state_dict)))
  else:
    layout = unet_layout(m.num_downs)
  return _convert(state_dict, shapes, layout, (), m.norm, "generator")


def discriminator_from_torch(state_dict: dict[str, np.ndarray],
                             model_config: ml_collections.ConfigDict) -> Variables:
  """Our discriminator's variables from an official basic/n_layers/pixel state dict."""
  m = model_config
  x = jax.ShapeDtypeStruct((1, 64, 64, m.input_nc), jnp.float32)
  y = jax.ShapeDtypeStruct((1, 64, 64, m.output_nc), jnp.float32)
  shapes = _shapes(models.make_discriminator(m), x, y)
  return _convert(state_dict, shapes, patch_layout(m.n_layers_d), ("patch_0",), m.norm,
                  "discriminator")


NET_D_LAYERS = {"basic": 3, "pixel": 0}


def model_config_from(g_state_dict: dict[str, np.ndarray], config: ml_collections.ConfigDict,
                      *, net_g: str | None = None, norm: str | None = None,
                      net_d: str = "basic", n_layers_d: int = 3, ndf: int = 64,
                      no_dropout: bool = False) -> ml_collections.ConfigDict:
  """`config` with model.* set to the checkpoint's architecture (flags are checked)."""
  found = infer_generator_config(g_state_dict)
  if found["generator"] == "unet":
    net_g_found = f"unet_{2**found['num_downs']}"
  else:
    net_g_found = found["generator"]
    if found.pop("dropout") == no_dropout:
      raise ConversionError(
          f"--no_dropout is {no_dropout}, but the checkpoint's residual blocks "
          f"{'have' if no_dropout else 'have no'} dropout layers; "
          f"{'drop' if no_dropout else 'pass'} --no_dropout")
  if net_g is not None and net_g != net_g_found:
    if not re.fullmatch(r"unet_(\d+)", net_g) and net_g not in resnet.BLOCKS:
      raise ConversionError(f"--netG {net_g}: only unet_<size> and "
                            f"{', '.join(resnet.BLOCKS)} generators can be converted")
    raise ConversionError(f"--netG {net_g}, but the checkpoint's generator is {net_g_found}")
  if norm is not None and norm != found["norm"]:
    raise ConversionError(f"--norm {norm}, but the checkpoint's layers say {found['norm']}")
  config = ml_collections.ConfigDict(config.to_dict())
  config.model.update(found)
  config.model.ndf = ndf
  config.model.n_layers_d = NET_D_LAYERS.get(net_d, n_layers_d)
  config.model.dropout_rate = 0.0 if no_dropout else 0.5
  return config


def convert(g_pth: str, output: str, config: ml_collections.ConfigDict, *,
            d_pth: str | None = None, **architecture: Any) -> str:
  """Writes an orbax checkpoint (step 0) of the converted networks; returns its step folder."""
  g_sd = torch_pth.load_state_dict(g_pth)
  try:
    config = model_config_from(g_sd, config, **architecture)
    g_vars = generator_from_torch(g_sd, config.model)
  except ConversionError as e:
    raise ConversionError(f"{g_pth}: {e}") from None
  g_tx, d_tx = optimizers.make_optimizers(config, max(config.num_train_steps, 1))
  state = jax.jit(lambda: train_state_lib.create_train_state(config, g_tx, d_tx))()
  state = state.replace(g_params=g_vars["params"], g_batch_stats=g_vars.get("batch_stats", {}))
  if d_pth is not None:
    try:
      d_vars = discriminator_from_torch(torch_pth.load_state_dict(d_pth), config.model)
    except ConversionError as e:
      raise ConversionError(f"{d_pth}: {e}") from None
    state = state.replace(d_params=d_vars["params"], d_batch_stats=d_vars.get("batch_stats", {}))
  state = jax.tree.map(jnp.asarray, state)
  manager = checkpoints.make_manager(output, async_save=False)
  try:
    checkpoints.save(manager, state, config, force=True)
    manager.wait_until_finished()
  finally:
    manager.close()
  return os.path.join(checkpoints.checkpoint_dir(output), "0")


def define_flags() -> None:
  """Flags are defined only when run as a program, so that the module imports cleanly."""
  config_flags.DEFINE_config_dict(
      "config", config_base.base_config(),
      "Non-architecture settings to store with the checkpoint (data.*, loss.*, ...).")
  flags.DEFINE_string("pth", None, "The official generator, e.g. latest_net_G.pth.",
                      required=True)
  flags.DEFINE_string("pth_d", None, "Optional: the discriminator, latest_net_D.pth.")
  flags.DEFINE_string("output", None, "Workdir to write checkpoints/0 into.",
                      required=True)
  flags.DEFINE_string("netG", None, "Checked against the checkpoint: unet_256, unet_128, "
                      "resnet_9blocks, resnet_6blocks.")
  flags.DEFINE_enum("norm", None, ["batch", "instance", "none"], "Checked, like --netG.")
  flags.DEFINE_enum("netD", "basic", ["basic", "n_layers", "pixel"], "The official netD.")
  flags.DEFINE_integer("n_layers_D", 3, "Layers of an n_layers discriminator.")
  flags.DEFINE_integer("ndf", 64, "Discriminator width.")
  flags.DEFINE_bool("no_dropout", False, "The model was trained with --no_dropout.")


def main(argv: list[str]) -> None:
  del argv
  f = flags.FLAGS
  try:
    step_dir = convert(f.pth, f.output, f.config, d_pth=f.pth_d, net_g=f.netG, norm=f.norm,
                       net_d=f.netD, n_layers_d=f.n_layers_D, ndf=f.ndf,
                       no_dropout=f.no_dropout)
  except (ConversionError, torch_pth.PthFormatError, torch_pth.safe_unpickle.UnsafePickleError,
          OSError) as e:
    sys.exit(f"error: {e}")
  print(f"wrote {step_dir}")

if __name__ == "__main__":
  define_flags()
  app.run(main)
