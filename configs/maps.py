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
  # Validation every 2000 steps (val_<metric> in TensorBoard and metrics.jsonl). No
  # keep_best: val is the split the paper reports, choosing on it would be tuning on test.
  c.eval_every_steps = 2000
  c.eval_num_examples = 200  # Of the val split's images, for speed.
  return c
