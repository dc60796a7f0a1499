"""The --workdir / --checkpoint / --step flags of every program that loads a trained G.

Defined only when a program runs (not at import), so that the modules import together.
"""

from absl import flags


def define() -> None:
  flags.DEFINE_string("workdir", None, "Training workdir (uses its latest checkpoint).")
  flags.DEFINE_string("checkpoint", None, "A checkpoints folder or one step's folder.")
  flags.DEFINE_integer("step", None, "Checkpoint step; default the latest.")


def given() -> bool:
  return flags.FLAGS.workdir is not None or flags.FLAGS.checkpoint is not None


def path() -> str:
  """The workdir or checkpoint given; exactly one of the two must be."""
  f = flags.FLAGS
  if (f.workdir is None) == (f.checkpoint is None):
    raise ValueError("give exactly one of --workdir and --checkpoint")
  return f.workdir or f.checkpoint
