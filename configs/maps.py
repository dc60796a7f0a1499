"""pix2pix on maps: aerial photo -> Google map (AtoB), batch 1, 100 + 100 epochs.

The 600x600 halves are resized to load_size 286 and cropped to 256, as in the paper.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  c = default.base_config()
  c.data.name = "maps"
  c.data.direction = "AtoB"
  c.batch_size = 1
  c.n_epochs = 100
  c.n_epochs_decay = 100
  return c
