"""Trains pix2pix: `python train.py --config configs/<name>.py --workdir DIR [--config.<field>=<value> ...]`.

Rerunning the same command resumes from the latest checkpoint in --workdir. On several hosts,
run it on each; `jax.distributed.initialize()` finds the others on TPU pods and SLURM, or is
told with --coordinator_address/--num_processes/--process_id.
"""

import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from pix2pix_jax import config_validation
from pix2pix_jax import trainer

_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/default.py", "Training configuration file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, summaries and samples go here.",
                               required=True)
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, for multi-host runs.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in a multi-host run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index in a multi-host run.")
_MULTIHOST = flags.DEFINE_bool(
    "multihost", False, "Call jax.distributed.initialize() with the platform's auto-detection.")


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # Orbax and TF log every save at INFO.
  if _COORDINATOR.value is not None:
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  elif _MULTIHOST.value:
    jax.distributed.initialize()
  logging.info("JAX devices: %s (process %d of %d)", jax.devices(), jax.process_index(),
               jax.process_count())
  try:
    trainer.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except (config_validation.ConfigError, trainer.NonFiniteLossError) as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  app.run(main)
