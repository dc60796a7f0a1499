"""Bad configurations stop before compilation with one sentence naming the field."""

import pytest

import configs.default as default_config
from pix2pix_jax.config import validation


def config_with(**fields):
  c = default_config.get_config()
  for dotted, value in fields.items():
    *parents, leaf = dotted.split("__")
    node = c
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


def test_default_config_is_valid():
  validation.validate(default_config.get_config())


@pytest.mark.parametrize("fields, field_named", [
    ({"data__crop_size": 60}, "data.crop_size"),  # 60 is not a multiple of 2**6
    ({"data__crop_size": 128, "data__load_size": 72}, "data.crop_size"),
    ({"model__norm": "group"}, "model.norm"),
    ({"loss__gan_mode": "wgan"}, "loss.gan_mode"),
    ({"loss__reconstruction": "l3"}, "loss.reconstruction"),
    ({"model__n_layers_d": -1}, "model.n_layers_d"),
    ({"model__n_layers_d": 5}, "model.n_layers_d"),  # 64 px leaves no 286x286 patch
    ({"model__num_downs": 1}, "model.num_downs"),
    ({"data__direction": "AB"}, "data.direction"),
    ({"data__preprocess": "zoom"}, "data.preprocess"),
    ({"model__dropout_rate": 1.0}, "model.dropout_rate"),
    ({"batch_size": 0}, "batch_size"),
    ({"nan_policy": "ignore"}, "nan_policy"),
    ({"model__generator": "resnet_12blocks"}, "model.generator"),
    ({"model__init_type": "uniform"}, "model.init_type"),
    ({"model__init_gain": 0.0}, "model.init_gain"),
])
def test_bad_field_is_named(fields, field_named):
  with pytest.raises(validation.ConfigError) as e:
    validation.validate(config_with(**fields))
  message = str(e.value)
  assert message.startswith(field_named), message
  assert message.count(". ") <= 1 and "\n" not in message


def test_crop_check_only_applies_to_modes_that_crop_a_resized_image():
  validation.validate(
      config_with(data__crop_size=128, data__load_size=72, data__preprocess="crop"))


def test_sizes_are_free_when_the_pipeline_fits_each_image():
  # scale_width/none keep each image's size; data.size_mode pads or resizes it.
  validation.validate(config_with(data__crop_size=60, data__preprocess="scale_width"))
