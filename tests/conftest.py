"""Shared pytest fixtures; each group says which part of the project it serves."""

import numpy as np
import pytest

import configs.default as default_config
from pix2pix_jax.train import checkpoints
from pix2pix_jax.train import sharding

# --- Inference, evaluation, export and torch import (issue 4). ----------------------------


def tiny_config():
  """The default recipe shrunk to 64x64 and ngf/ndf 4: seconds to compile (also imported by
  tests that build a step from it).

  Six levels is the fewest with a dropout layer (levels 4..num_downs-2), whose noise the
  paper's test mode keeps.
  """
  c = default_config.get_config()
  c.data.load_size = 72
  c.data.crop_size = 64
  c.batch_size = 2
  c.model.ngf = 4
  c.model.ndf = 4
  c.model.num_downs = 6
  c.model.n_layers_d = 2
  c.num_train_steps = 1
  return c


@pytest.fixture(scope="session")
def trained_workdir(tmp_path_factory):
  """A workdir holding a checkpoint of a tiny model after one real training step.

  One step moves the BatchNorm running statistics away from their initial values, so eval
  mode and the paper's test mode give different outputs.
  """
  config = tiny_config()
  workdir = tmp_path_factory.mktemp("trained")
  state, step, _, _ = setup.fresh(config, sharding.make_mesh(), config.num_train_steps)
  rng = np.random.default_rng(0)
  shape = (config.batch_size, config.data.crop_size, config.data.crop_size, 3)
  batch = {"input": rng.uniform(-1, 1, shape).astype(np.float32),
           "target": rng.uniform(-1, 1, shape).astype(np.float32)}
  state, _ = step(state, batch)
  manager = checkpoints.make_manager(str(workdir), async_save=False)
  checkpoints.save(manager, state, config)
  manager.wait_until_finished()
  manager.close()
  return str(workdir)


def save_checkpoints(workdir, config, states) -> None:
  """Writes each state as a checkpoint of `workdir` (at the state's own step)."""
  manager = checkpoints.make_manager(str(workdir), async_save=False)
  for state in states:
    checkpoints.save(manager, state, config, force=True)
  manager.wait_until_finished()
  manager.close()


def random_state(config):
  """A TrainState of `config`'s shapes filled with small random numbers: tracing the
  initialisation takes a second where compiling it takes a minute on a busy CPU."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  abstract = jax.eval_shape(setup.build(config, sharding.make_mesh(), 1).create_state)
  rng = np.random.default_rng(0)

  def fill(leaf):
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      return jax.random.split(jax.random.key(0), leaf.shape) if leaf.shape else jax.random.key(0)
    if jnp.issubdtype(leaf.dtype, jnp.floating):
      return jnp.asarray(rng.uniform(0.0, 0.05, leaf.shape), leaf.dtype)
    return jnp.zeros(leaf.shape, leaf.dtype)

  return jax.tree.map(fill, abstract)


@pytest.fixture(scope="session")
def untrained_workdir(tmp_path_factory):
  """Checkpoints 1 and 2 of the tiny model with random weights (`random_state`): for tests
  that need a generator to serve, or two checkpoints to resume from (issue 19)."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  config = tiny_config()
  workdir = tmp_path_factory.mktemp("untrained")
  state = random_state(config)
  save_checkpoints(workdir, config, [state.replace(step=jnp.asarray(n, state.step.dtype))
                                     for n in (1, 2)])
  return str(workdir)


# --- Data: datasets and input pipeline (issue 3). ------------------------------------------

import pathlib  # pylint: disable=g-import-not-at-top,wrong-import-position

import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top,wrong-import-position
from pix2pix_jax.train import setup

tfds.disable_progress_bar()  # Builds would fill the test log with tqdm bars.

# The official archives, read-only, beside the repository (CI clones main next to shared/).
SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


def data_config(data_dir, **overrides):
  """The default (synthetic) config with its tfds data in `data_dir`, small for tests."""
  c = default_config.get_config()
  c.data.data_dir = str(data_dir)
  c.data.num_workers = 2
  for key, value in overrides.items():
    node = c
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory):
  """One tfds data_dir per session: each dataset is prepared once, then reused."""
  return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="session")
def synthetic_config(tfds_dir):
  """The default config over the embedded synthetic dataset, prepared once."""
  from pix2pix_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  c = data_config(tfds_dir)
  pipeline.builder(c.data)
  return c


@pytest.fixture(scope="session")
def facades_builder(tfds_dir):
  """Facades prepared from the shared archive through manual_dir (skips without it)."""
  from pix2pix_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  if not (SHARED_DATA / "facades.tar.gz").exists():
    pytest.skip(f"{SHARED_DATA}/facades.tar.gz not found")
  c = data_config(tfds_dir, **{"data.name": "facades", "data.manual_dir": str(SHARED_DATA)})
  return pipeline.builder(c.data)
