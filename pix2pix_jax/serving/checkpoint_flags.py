"""The --workdir / --checkpoint / --step flags of every program that loads a trained G.

Defined only when a program runs (not at import), so that the modules import together.
"""

import os
import sys
from typing import NoReturn

from absl import flags

from pix2pix_jax.train import checkpoint_damage
from pix2pix_jax.train import checkpoints


class StepParser(flags.ArgumentParser):
  """--step: a step number, or "best" (the best checkpoint by the run's keep_best metric)."""

  syntactic_help = f"a step number or {checkpoints.BEST!r}"

  def parse(self, argument):
    if isinstance(argument, int) or argument == checkpoints.BEST:
      return argument
    try:
      step = int(argument)
    except ValueError:
      raise ValueError(f"--step must be a number or {checkpoints.BEST!r}, got "
                       f"{argument!r}") from None
    if step < 0:
      raise ValueError(f"--step must be >= 0, got {step}")
    return step

  def flag_type(self) -> str:
    return "step"


def define() -> None:
  flags.DEFINE_string("workdir", None, "Training workdir (uses its latest checkpoint).")
  flags.DEFINE_string("checkpoint", None, "A checkpoints folder or one step's folder.")
  flags.DEFINE(StepParser(), "step", None, "Checkpoint step, or 'best' (the best by the "
               "run's keep_best validation metric); default the latest.",
               serializer=flags.ArgumentSerializer())


def given() -> bool:
  return flags.FLAGS.workdir is not None or flags.FLAGS.checkpoint is not None


def path() -> str:
  """The workdir or checkpoint given; exactly one of the two must be."""
  f = flags.FLAGS
  if (f.workdir is None) == (f.checkpoint is None):
    raise ValueError("give exactly one of --workdir and --checkpoint")
  return f.workdir or f.checkpoint


def exit_with(error: Exception) -> NoReturn:
  """Ends a program that cannot load what it was given: one line, exit status 1.

  After a damaged checkpoint, orbax's other reads fail in background threads, and their
  teardown at exit can print tracebacks after that line; such a program ends at once.
  """
  print(f"error: {error}", file=sys.stderr, flush=True)
  if isinstance(error, checkpoint_damage.CheckpointDamagedError):
    sys.stdout.flush()
    os._exit(1)  # pylint: disable=protected-access
  sys.exit(1)
