"""Users' mistakes end in one line that says what to change, not in a traceback.

Mistakes caught by the command line itself (flags) run `train.py`; those the trainer
catches run in-process and are checked before anything is built or compiled.
"""

import os
import sys

import jax.numpy as jnp
import pytest
import reliability_helpers as rh

from pix2pix_jax.config import validation
from pix2pix_jax.train import sharding
from pix2pix_jax.train import step as train_step_lib
from pix2pix_jax.train import trainer


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  return rh.cache_dir(tmp_path_factory)


def one_line_error(result) -> str:
  assert result.returncode != 0, result.stderr[-2000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  return [line for line in result.stderr.splitlines() if line.strip()][-1]


@pytest.mark.parametrize("explicit_config", [False, True])
def test_unknown_config_field(cache, tmp_path, explicit_config):
  """Overrides of the default config apply at import time, of --config during parsing."""
  command = [sys.executable, "train.py", "--workdir", str(tmp_path), "--config.model.ngff=8"]
  if explicit_config:
    command[2:2] = ["--config", "configs/default.py"]
  line = one_line_error(rh.run(command, cache, timeout=120))
  assert line.startswith("error: --config.model.ngff: the config has no field 'model.ngff'.")
  assert 'Did you mean "ngf"' in line


def test_missing_workdir_flag(cache):
  result = rh.run([sys.executable, "train.py", "--config.model.ngf=8"], cache, timeout=120)
  assert "Flag --workdir must have a value other than None" in one_line_error(result) + (
      result.stderr)


def test_workdir_that_cannot_be_a_folder(cache, tmp_path, synthetic_config):
  """Root ignores chmod, so the unwritable workdir lies under a regular file."""
  blocker = tmp_path / "a_file"
  blocker.write_text("not a folder")
  command = rh.train_command(str(blocker / "workdir"), synthetic_config, {})
  line = one_line_error(rh.run(command, cache, timeout=120))
  assert line == (f"error: --workdir {blocker / 'workdir'} cannot be written to (Not a "
                  "directory); choose a folder you can write.")


def test_out_of_memory_says_which_fields_to_lower(cache, tmp_path, synthetic_config):
  # Two levels and one D layer: the least to compile before the 512 GiB kernel is refused.
  command = rh.train_command(str(tmp_path), synthetic_config, {
      "model.ngf": 65536, "model.num_downs": 2, "model.n_layers_d": 1})
  # A real out-of-memory error without risk to the machine: the allocation that fails is
  # 512 GiB, refused at once; anything that did get touched is capped at 16 GiB (a shell's
  # ulimit: preexec_fn is unsafe in a process with JAX's threads).
  capped = ["bash", "-c", 'ulimit -v $((16 << 20)) && exec "$@"', "--", *command]
  line = one_line_error(rh.run(capped, cache, timeout=180))
  assert line.startswith("error: out of memory while creating the initial state on cpu ")
  for hint in ("batch_size=2", "data.crop_size=64", "model.ngf=65536", "Lower batch_size",
               "RESOURCE_EXHAUSTED"):
    assert hint in line


def test_out_of_memory_in_the_first_step_says_which_fields_to_lower(
    synthetic_config, tmp_path, tmp_path_factory, monkeypatch):
  """The first step runs blocking, so an allocation failure surfaces there, with the hint."""
  real = train_step_lib.jit_train_step

  def oom_first_step(*args, **kwargs):
    step = real(*args, **kwargs)
    return lambda state, batch: (step(state, batch)[0], jnp.zeros(1 << 42))  # 16 TiB.

  monkeypatch.setattr(train_step_lib, "jit_train_step", oom_first_step)
  config = rh.tiny_config(synthetic_config)
  with rh.persistent_compilation_cache(rh.cache_dir(tmp_path_factory)):
    with pytest.raises(trainer.OutOfMemoryError,
                       match=r"out of memory while compiling and running the first train step "
                             r"on cpu \(batch_size=2, i\.e\. 2 per device; data\.crop_size=64"):
      trainer.train_and_evaluate(config, str(tmp_path))


@pytest.mark.parametrize("field, value, message", [
    ("path", "/nonexistent/pairs", "data.path='/nonexistent/pairs' does not exist."),
    ("manual_dir", "/nonexistent/archives",
     "data.manual_dir='/nonexistent/archives' does not exist."),
    ("manual_dir", __file__, f"data.manual_dir={__file__!r} is not a folder."),
])
def test_missing_dataset_folder_is_named_before_anything_is_built(
    synthetic_config, tmp_path, monkeypatch, field, value, message):
  monkeypatch.setattr(sharding, "make_mesh", lambda: pytest.fail("got past the checks"))
  config = rh.tiny_config(synthetic_config, **{f"data.{field}": value})
  if field == "path":
    config.data.name = "folder"
  with pytest.raises(validation.ConfigError) as error:
    trainer.train_and_evaluate(config, str(tmp_path))
  assert str(error.value) == message


def test_folder_dataset_without_a_path(synthetic_config, tmp_path):
  config = rh.tiny_config(synthetic_config)
  config.data.name = "folder"
  with pytest.raises(validation.ConfigError, match="needs data.path"):
    trainer.train_and_evaluate(config, str(tmp_path))
  assert not os.listdir(tmp_path)
