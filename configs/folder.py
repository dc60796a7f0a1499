"""pix2pix on your own pairs: --config.data.path=/your/folder (required).

The folder holds side-by-side AB images (A left) or A/ and B/ folders paired by file name,
optionally in train/ val/ test/ subfolders (else data.val_fraction is held out as val).
Any size or mode works: images are resized to load_size and cropped to crop_size, and
anything not a multiple of 2**model.num_downs is fitted by data.size_mode. Set
model.input_nc / output_nc to the channels you want (1 for gray, 4 with alpha).
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  c = default.base_config()
  c.data.name = "folder"
  c.data.path = ""  # Required: the folder of pairs.
  c.data.direction = "AtoB"
  c.batch_size = 1
  c.n_epochs = 100
  c.n_epochs_decay = 100
  # Validation on the val split every 2000 steps (val_<metric> in TensorBoard and
  # metrics.jsonl); with the best checkpoint by val L1 kept (--step best).
  c.eval_every_steps = 2000
  c.keep_best = "l1"
  return c
