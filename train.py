"""Trains pix2pix: `python train.py --config configs/<name>.py --workdir DIR [--config.<field>=<value> ...]`.

Rerunning the same command resumes from the latest checkpoint in --workdir. SIGTERM or
Ctrl-C saves a checkpoint at the current step and exits (a second one exits at once); the
message says which command resumes. On several hosts, run it on each;
`jax.distributed.initialize()` finds the others on TPU pods and SLURM, or is told with
--coordinator_address/--num_processes/--process_id.
"""

import os
import re
import shlex
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from pix2pix_jax.config import validation
from pix2pix_jax.data import image_io
from pix2pix_jax.eval import evaluate
from pix2pix_jax.train import preemption
from pix2pix_jax.train import trainer

_DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs",
                               "default.py")


def _unknown_field_message(error: Exception, argv: list[str]) -> str:
  """ml_collections' KeyError/AttributeError for `--config.a.nope=1`, as one clear line."""
  while error.args and isinstance(error.args[0], BaseException):
    error = error.args[0]
  text = str(error.args[0]) if error.args else str(error)
  key, _, hint = text.partition("\n")
  key = key.strip("'\"")
  overrides = [m.group(1) for a in argv
               if (m := re.match(r"^--?config\.([\w.]+)", a)) and key in m.group(1).split(".")]
  field = overrides[0] if overrides else key
  return (f"error: --config.{field}: the config has no field {field!r}. {hint.strip()} "
          "Each --config.<field> must name a field of the config file.").replace("  ", " ")


try:
  _CONFIG = config_flags.DEFINE_config_file(
      "config", _DEFAULT_CONFIG, "Training configuration file.", lock_config=True)
except (AttributeError, KeyError) as e:  # Overrides of the default config apply right here.
  sys.exit(_unknown_field_message(e, sys.argv))
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
    config = _CONFIG.value
    # Validation scores with the evaluate metrics (LPIPS reads its weights: only if used).
    metric_set = evaluate.metric_set() if config.eval_every_steps > 0 else None
    trainer.train_and_evaluate(config, _WORKDIR.value, metric_set=metric_set)
  except (validation.ConfigError, trainer.NonFiniteLossError,
          trainer.OutOfMemoryError, image_io.BadImageError) as e:  # A bad file names itself.
    sys.exit(f"error: {e}")
  except preemption.Preempted as e:
    command = shlex.join([os.path.basename(sys.executable), *sys.argv])
    print(f"{e}. To resume, run the same command again:\n  {command}", file=sys.stderr,
          flush=True)
    sys.exit(e.exit_code)


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's parsing, plus a clear message for `--config <file> --config.<unknown>=...`."""
  try:
    return app.parse_flags_with_usage(argv)
  except (AttributeError, KeyError) as e:
    sys.exit(_unknown_field_message(e, argv))


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
