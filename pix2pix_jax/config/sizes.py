"""Prints a config's network sizes: `python -m pix2pix_jax.config.sizes --config configs/<name>.py`.

One line each: generator_params N, discriminator_params N, patch_receptive_field N. Shapes are
traced abstractly, so even the paper's full-size networks cost no memory or compilation.
"""

from absl import app
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags

from pix2pix_jax.config import validation
from pix2pix_jax.nn import models

_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/default.py", "Configuration file.", lock_config=True)


def count_params(tree) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(tree))


def network_sizes(config: ml_collections.ConfigDict) -> dict[str, int]:
  m, size = config.model, config.data.crop_size
  x = jax.ShapeDtypeStruct((1, size, size, m.input_nc), jnp.float32)
  y = jax.ShapeDtypeStruct((1, size, size, m.output_nc), jnp.float32)
  key = jax.random.key(0)
  g = jax.eval_shape(lambda x: models.make_generator(m).init(key, x, train=False), x)
  d = jax.eval_shape(lambda x, y: models.make_discriminator(m).init(key, x, y, train=False),
                     x, y)
  return {"generator_params": count_params(g["params"]),
          "discriminator_params": count_params(d["params"]),
          "patch_receptive_field": models.patch_receptive_field(m.n_layers_d)}


def main(argv):
  del argv
  validation.validate(_CONFIG.value)
  for name, value in network_sizes(_CONFIG.value).items():
    print(name, value)


if __name__ == "__main__":
  app.run(main)
