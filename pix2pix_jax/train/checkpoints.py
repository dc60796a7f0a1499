"""Orbax checkpoints of the whole TrainState plus the config that made it.

`<workdir>/checkpoints/<step>/{state,config}`: the state (both networks, BatchNorm
statistics, both Adam states, step, rng) restores onto the devices with the shardings asked
for; the config lets inference rebuild the networks without being told their shapes.
Saves are asynchronous; orbax writes into `<step>.orbax-checkpoint-tmp` and renames it to
`<step>` when complete, so a save interrupted at any point (even by SIGKILL) is never taken
for the latest checkpoint; old checkpoints beyond max_to_keep are deleted only after the new
one is renamed into place, and leftover temporary folders are removed when a manager opens
the folder again.
"""

import os
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from pix2pix_jax.train.state import TrainState

CHECKPOINT_DIR = "checkpoints"


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)


def make_manager(workdir: str, max_to_keep: int = 3, async_save: bool = True,
                 read_only: bool = False) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, create=not read_only, read_only=read_only,
      enable_async_checkpointing=async_save, cleanup_tmp_directories=not read_only)
  # Registered handlers (rather than bare item names) let `state_metadata` read shapes
  # without restoring anything.
  return ocp.CheckpointManager(
      checkpoint_dir(workdir), options=options,
      item_handlers={"state": ocp.StandardCheckpointHandler(),
                     "config": ocp.JsonCheckpointHandler()})


def save(manager: ocp.CheckpointManager, state: TrainState,
         config: ml_collections.ConfigDict, force: bool = False) -> bool:
  """Starts an (async) save of `state` at its own step; returns whether one was started."""
  step = int(jax.device_get(state.step))
  return manager.save(step, force=force, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config.to_dict())))


def abstract_like(tree: Any, sharding: jax.sharding.Sharding) -> Any:
  """ShapeDtypeStructs with `sharding`: restore targets that allocate nothing up front."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def restore_state(manager: ocp.CheckpointManager, abstract_state: TrainState,
                  step: int | None = None) -> TrainState:
  """The state at `step` (default: the latest), laid out as `abstract_state` says."""
  step = manager.latest_step() if step is None else step
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state)))
  return restored["state"]


def restore_config(manager: ocp.CheckpointManager, step: int | None = None
                   ) -> ml_collections.ConfigDict:
  step = manager.latest_step() if step is None else step
  restored = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
  return ml_collections.ConfigDict(restored["config"])


def state_metadata(manager: ocp.CheckpointManager, step: int | None = None) -> Any:
  """The saved state's tree of array metadata (shape, dtype), read without restoring it."""
  step = manager.latest_step() if step is None else step
  return manager.item_metadata(step)["state"]
