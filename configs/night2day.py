"""pix2pix on night2day: night -> day (AtoB), batch 4, 17 epochs (paper).

The paper gives 17 epochs in all; here 7 at the constant rate and 10 decaying to 0.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  c = default.base_config()
  c.data.name = "night2day"
  c.data.direction = "AtoB"
  c.batch_size = 4
  c.n_epochs = 7
  c.n_epochs_decay = 10
  # Validation on the val split every 2000 steps (val_<metric> in TensorBoard and
  # metrics.jsonl); with the best checkpoint by val L1 kept (--step best).
  c.eval_every_steps = 2000
  c.keep_best = "l1"
  return c
