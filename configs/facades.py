"""pix2pix on CMP facades (paper Sec. 4): labels -> photo, batch 1, 100 + 100 epochs.

The archive's left half (A) is the photo, so labels -> photo is BtoA. Reads
facades.tar.gz from data.manual_dir when given, else downloads it.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  c = default.base_config()
  c.data.name = "facades"
  c.data.direction = "BtoA"
  c.batch_size = 1
  c.n_epochs = 100
  c.n_epochs_decay = 100
  # Validation on the val split every 2000 steps (val_<metric> in TensorBoard and
  # metrics.jsonl); with the best checkpoint by val L1 kept (--step best).
  c.eval_every_steps = 2000
  c.keep_best = "l1"
  return c
