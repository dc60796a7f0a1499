"""Checks a config before anything is compiled, and says in one sentence what is wrong.

A bad field otherwise surfaces minutes later as a shape error deep inside XLA.
"""

import ml_collections

from pix2pix_jax.nn import layers
from pix2pix_jax.nn import models
from pix2pix_jax.nn import resnet
from pix2pix_jax.objectives import losses

PREPROCESS_MODES = ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none")
NAN_POLICIES = ("skip", "stop")
LR_POLICIES = ("linear_per_step", "linear", "step", "plateau", "cosine")


class ConfigError(ValueError):
  """A config field has a value that cannot work; the message names the field."""


def _choice(value, field: str, choices) -> None:
  if value not in choices:
    options = ", ".join(map(str, choices))
    raise ConfigError(f"{field}={value!r} is not supported; choose one of {options}.")


def _at_least(value, field: str, minimum) -> None:
  if value < minimum:
    raise ConfigError(f"{field}={value} must be at least {minimum}.")


def _validate_successor_tricks(config: ml_collections.ConfigDict) -> None:
  """The issue-7 switches (multi-scale D, SN, EMA, penalties, label smoothing)."""
  m, loss = config.model, config.loss
  num_d = m.num_d
  _at_least(num_d, "model.num_d", 1)
  for field in ("lambda_gp", "r1_gamma", "feature_matching_weight"):
    _at_least(loss.get(field, 0.0), f"loss.{field}", 0.0)
  if not 0.0 <= m.ema_decay < 1.0:
    raise ConfigError(f"model.ema_decay={m.ema_decay} must be in [0, 1) (0 turns the EMA off).")
  real_label = loss.real_label
  if not 0.0 < real_label <= 1.0:
    raise ConfigError(f"loss.real_label={real_label} must be in (0, 1].")
  if real_label != 1.0 and loss.gan_mode not in ("vanilla", "lsgan"):
    raise ConfigError(f"loss.real_label={real_label} (label smoothing) applies to gan_mode "
                      f"vanilla or lsgan, not {loss.gan_mode!r}; leave it at 1.0.")
  # Each coarser scale halves the input (rounding up); the coarsest must still give a logit.
  coarsest = -(-config.data.crop_size // 2**(num_d - 1))
  if num_d > 1 and m.n_layers_d > 0 and coarsest // 2**m.n_layers_d - 2 < 1:
    raise ConfigError(
        f"model.num_d={num_d} is too many scales for data.crop_size={config.data.crop_size} "
        f"and model.n_layers_d={m.n_layers_d}: the coarsest ({coarsest}x{coarsest}) "
        "discriminator would output no patch.")


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first field that cannot work."""
  m, d, loss = config.model, config.data, config.loss
  _at_least(config.batch_size, "batch_size", 1)
  _choice(d.direction, "data.direction", ("AtoB", "BtoA"))
  _choice(d.preprocess, "data.preprocess", PREPROCESS_MODES)
  _choice(m.norm, "model.norm", layers.NORMS)
  _choice(m.generator, "model.generator", ("unet", "encoder_decoder", *resnet.BLOCKS))
  _choice(m.init_type, "model.init_type", layers.INIT_TYPES)
  if not m.init_gain > 0:
    raise ConfigError(f"model.init_gain={m.init_gain} must be positive.")
  _choice(m.dtype, "model.dtype", ("float32", "bfloat16"))
  _choice(loss.gan_mode, "loss.gan_mode", tuple(losses.GAN_LOSSES))
  _choice(loss.reconstruction, "loss.reconstruction", tuple(losses.RECONSTRUCTION_LOSSES))
  _choice(config.nan_policy, "nan_policy", NAN_POLICIES)
  _at_least(m.n_layers_d, "model.n_layers_d", 0)
  _at_least(m.num_downs, "model.num_downs", 2)
  for field in ("ngf", "ndf", "input_nc", "output_nc"):
    _at_least(m[field], f"model.{field}", 1)
  if not 0.0 <= m.dropout_rate < 1.0:
    raise ConfigError(f"model.dropout_rate={m.dropout_rate} must be in [0, 1).")
  _at_least(loss.lambda_l1, "loss.lambda_l1", 0.0)
  _at_least(loss.gan_weight, "loss.gan_weight", 0.0)
  _validate_successor_tricks(config)

  multiple = models.size_multiple(m)
  # Modes that crop give the network crop_size squares; the others keep each image's own
  # size and data.size_mode pads or resizes it to a multiple of `multiple`.
  crops = d.preprocess in ("resize_and_crop", "crop", "scale_width_and_crop")
  if crops and d.crop_size % multiple:
    raise ConfigError(
        f"data.crop_size={d.crop_size} must be a multiple of {multiple} (2**model.num_downs "
        f"for a U-Net, 4 for a ResNet generator) so that the generator's output has its "
        f"input's size (e.g. {max(multiple, d.crop_size // multiple * multiple)}).")
  if crops and d.crop_size < models.min_size(m):
    raise ConfigError(f"data.crop_size={d.crop_size} must be at least {models.min_size(m)} for "
                      f"model.generator={m.generator}.")
  if d.preprocess in ("resize_and_crop", "scale_width_and_crop") and d.crop_size > d.load_size:
    raise ConfigError(
        f"data.crop_size={d.crop_size} is larger than data.load_size={d.load_size}: "
        f"preprocess {d.preprocess!r} crops crop_size out of an image resized to load_size.")
  # The PatchGAN's n_layers stride-2 convolutions and two 4x4 valid-ish convolutions must
  # leave at least one logit.
  if m.n_layers_d > 0 and d.crop_size // 2**m.n_layers_d - 2 < 1:
    raise ConfigError(
        f"model.n_layers_d={m.n_layers_d} is too deep for data.crop_size={d.crop_size}: "
        f"the discriminator would output no patch.")
  for field in ("log_every_steps", "checkpoint_every_steps", "sample_every_steps",
                "keep_checkpoints"):
    _at_least(config[field], field, 1)
  _validate_validation_and_schedule(config)


def _validate_validation_and_schedule(config: ml_collections.ConfigDict) -> None:
  """Validation, the checkpoints it keeps, the LR policy and the data-size options."""
  d, o = config.data, config.optim
  for field in ("eval_every_steps", "keep_every_steps", "eval_batch_size"):
    _at_least(config[field], field, 1 if field == "eval_batch_size" else 0)
  if config.eval_num_examples == 0 or config.eval_num_examples < -1:
    raise ConfigError(f"eval_num_examples={config.eval_num_examples} must be -1 (the whole "
                      "split) or at least 1.")
  if d.max_dataset_size == 0 or d.max_dataset_size < -1:
    raise ConfigError(f"data.max_dataset_size={d.max_dataset_size} must be -1 (all) or at "
                      "least 1.")
  if d.test_load_size == 0 or d.test_load_size < -1:
    raise ConfigError(f"data.test_load_size={d.test_load_size} must be -1 (crop_size) or "
                      "positive.")
  if (d.test_load_size > 0 and d.preprocess in ("resize_and_crop", "scale_width_and_crop")
      and d.test_load_size < d.crop_size):
    raise ConfigError(f"data.test_load_size={d.test_load_size} is smaller than "
                      f"data.crop_size={d.crop_size}: there would be nothing to crop from.")
  _choice(o.lr_policy, "optim.lr_policy", LR_POLICIES)
  _at_least(o.lr_decay_iters, "optim.lr_decay_iters", 1)
  needs_validation = [f"keep_best={config.keep_best!r}"] if config.keep_best else []
  if o.lr_policy == "plateau":
    needs_validation.append("optim.lr_policy='plateau' (it steps on the validation L1)")
  if needs_validation and config.eval_every_steps <= 0:
    raise ConfigError(f"{' and '.join(needs_validation)} needs validation while training: "
                      "set eval_every_steps > 0.")
