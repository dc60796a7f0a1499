"""Default config: the embedded synthetic facades data, sized for a 2-core CPU in ~10 minutes.

Every other config starts from `base_config()` (pix2pix_jax/config/base.py) and overrides what its dataset needs, so the
field names below are the whole interface (`--config.<field>=<value>` on the command line).
"""

import ml_collections

from pix2pix_jax.config.base import base_config


def get_config() -> ml_collections.ConfigDict:
  c = base_config()
  c.data.name = "synthetic"
  c.data.direction = "AtoB"  # labels -> photo
  c.data.load_size = 72
  c.data.crop_size = 64
  c.batch_size = 4
  c.n_epochs = 10
  c.n_epochs_decay = 10
  c.model.ngf = 32
  c.model.ndf = 32
  c.model.num_downs = 6
  c.log_every_steps = 20
  c.checkpoint_every_steps = 200
  c.sample_every_steps = 100
  return c
