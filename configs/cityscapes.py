"""pix2pix on Cityscapes: semantic labels -> photo (BtoA), batch 1, 100 + 100 epochs."""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  c = default.base_config()
  c.data.name = "cityscapes"
  c.data.direction = "BtoA"
  c.batch_size = 1
  c.n_epochs = 100
  c.n_epochs_decay = 100
  return c
