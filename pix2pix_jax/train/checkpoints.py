"""Orbax checkpoints of the whole TrainState plus the config that made it.

`<workdir>/checkpoints/<step>/{state,config}`: the state (both networks, BatchNorm
statistics, both Adam states, step, rng) restores onto the devices with the shardings asked
for; the config lets inference rebuild the networks without being told their shapes.
Saves are asynchronous; orbax writes into `<step>.orbax-checkpoint-tmp` and renames it to
`<step>` when complete, so a save interrupted at any point (even by SIGKILL) is never taken
for the latest checkpoint; old checkpoints beyond max_to_keep are deleted only after the new
one is renamed into place, and leftover temporary folders are removed when a manager opens
the folder again.

Which ones stay: the latest keep_checkpoints, with keep_every_steps every multiple of it,
and with keep_best the best one by that validation metric (orbax preservation policies;
a checkpoint saved at a validation step carries the metrics, ranked by `RANK`).

A checkpoint damaged later (train/checkpoint_damage.py) is reported in one sentence; the
inference programs say which --step loads instead.
"""

import math
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp

from pix2pix_jax.config import base as config_base
from pix2pix_jax.config import validation
from pix2pix_jax.nn import models
from pix2pix_jax.train import checkpoint_damage as damage
from pix2pix_jax.train import ema
from pix2pix_jax.train.state import TrainState

Variables = dict[str, Any]

CHECKPOINT_DIR = "checkpoints"
# Config fields that decide the shapes in a checkpoint: a resume must not change them.
ARCHITECTURE_FIELDS = ("model.generator", "model.input_nc", "model.output_nc", "model.ngf",
                       "model.ndf", "model.num_downs", "model.n_layers_d", "model.norm",
                       "model.conditional_d", "model.num_d", "model.spectral_norm_d")
_ABSENT = "<absent>"  # A field the older (or newer) config does not have.
BEST = "best"  # The step name that means the best checkpoint by keep_best's metric.
RANK = "rank"  # In a checkpoint's metrics: higher is better, whatever the metric.
def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)


def _rank(metrics: Mapping[str, float]) -> float:
  return metrics.get(RANK, -math.inf)


def _preservation(max_to_keep: int, keep_every_steps: int, keep_best: bool
                  ) -> ocp.checkpoint_managers.PreservationPolicy:
  policies = [ocp.checkpoint_managers.LatestN(n=max_to_keep)]
  if keep_every_steps > 0:
    policies.append(ocp.checkpoint_managers.EveryNSteps(interval_steps=keep_every_steps))
  if keep_best:
    policies.append(ocp.checkpoint_managers.BestN(
        get_metric_fn=_rank, n=1,
        keep_checkpoints_without_metrics=False))
  return ocp.checkpoint_managers.AnyPreservationPolicy(policies)


def make_manager(workdir: str, max_to_keep: int = 3, async_save: bool = True,
                 read_only: bool = False, *, keep_every_steps: int = 0,
                 keep_best: bool = False) -> ocp.CheckpointManager:
  """The run's manager: keeps the latest max_to_keep, every keep_every_steps-th, the best."""
  # best_fn makes orbax write the metrics and read them back when the folder is reopened.
  best = dict(best_fn=_rank, best_mode="max") if keep_best else {}
  options = ocp.CheckpointManagerOptions(
      preservation_policy=_preservation(max_to_keep, keep_every_steps, keep_best),
      create=not read_only, read_only=read_only,
      enable_async_checkpointing=async_save, cleanup_tmp_directories=not read_only, **best)
  # Registered handlers (rather than bare item names) let `state_metadata` read shapes
  # without restoring anything.
  return ocp.CheckpointManager(
      checkpoint_dir(workdir), options=options,
      item_handlers={"state": ocp.StandardCheckpointHandler(),
                     "config": ocp.JsonCheckpointHandler()})


def save(manager: ocp.CheckpointManager, state: TrainState,
         config: ml_collections.ConfigDict, force: bool = False,
         metrics: Mapping[str, float] | None = None) -> bool:
  """Starts an (async) save of `state` at its own step; returns whether one was started.

  `metrics` (`ranked_metrics`) are those of a validation at this step, for keep_best.
  """
  step = int(jax.device_get(state.step))
  extra = {} if metrics is None else {"metrics": dict(metrics)}
  return manager.save(step, force=force, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config.to_dict())),
      **extra)


def ranked_metrics(values: Mapping[str, float], metric: str, higher_is_better: bool
                   ) -> dict[str, float]:
  """Validation `values` plus RANK, `metric`'s value signed so that higher is better.

  A NaN (a diverged G) ranks last.
  """
  value = float(values[metric])
  rank = -math.inf if math.isnan(value) else (value if higher_is_better else -value)
  return {**{k: float(v) for k, v in values.items()}, RANK: rank}


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


# --------------------------------------------------------------------------- resuming


def _lookup(config: dict[str, Any], dotted: str) -> Any:
  for part in dotted.split("."):
    if not isinstance(config, dict) or part not in config:
      return _ABSENT
    config = config[part]
  return config


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  flat = {}
  for key, value in config.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def _describe(diffs: list[str]) -> str:
  return "; ".join(diffs) + ". Use another --workdir, or the checkpoint's settings."


def check_resume_compatible(saved: ml_collections.ConfigDict,
                            requested: ml_collections.ConfigDict) -> None:
  """Names the architecture fields that differ between a checkpoint and the config."""
  saved_dict, requested_dict = saved.to_dict(), requested.to_dict()
  diffs = [f"{f} (checkpoint {_lookup(saved_dict, f)!r}, config {_lookup(requested_dict, f)!r})"
           for f in ARCHITECTURE_FIELDS
           if _lookup(saved_dict, f) != _lookup(requested_dict, f)]
  if diffs:
    raise validation.ConfigError(
        "the checkpoint in the workdir was trained with a different architecture: "
        + _describe(diffs))


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """{"g_params/down_0/kernel": shape} for a state or orbax's metadata of one."""
  def name(entry) -> str:
    for attr in ("key", "name", "idx"):
      if hasattr(entry, attr):
        return str(getattr(entry, attr))
    return str(entry)
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {"/".join(name(e) for e in path): tuple(leaf.shape) for path, leaf in leaves}


def check_state_shapes(saved_metadata: Any, abstract_state: Any,
                       saved: ml_collections.ConfigDict,
                       requested: ml_collections.ConfigDict) -> None:
  """Catches any config change that alters the state's arrays, named field or not.

  ARCHITECTURE_FIELDS names the usual culprits; this compares the arrays themselves so a
  field added later (or an optimizer change) cannot slip through into a cryptic orbax
  error. The message lists the config fields that differ from the checkpoint's.
  """
  have, want = _shapes(saved_metadata), _shapes(abstract_state)
  arrays = [f"{k} (checkpoint {have.get(k, 'missing')}, config {want.get(k, 'missing')})"
            for k in sorted(set(have) | set(want)) if have.get(k) != want.get(k)]
  if not arrays:
    return
  saved_flat, requested_flat = _flatten(saved.to_dict()), _flatten(requested.to_dict())
  fields = [f"{f} (checkpoint {saved_flat.get(f, _ABSENT)!r}, "
            f"config {requested_flat.get(f, _ABSENT)!r})"
            for f in sorted(set(saved_flat) | set(requested_flat))
            if saved_flat.get(f, _ABSENT) != requested_flat.get(f, _ABSENT)]
  raise validation.ConfigError(
      f"the checkpoint in the workdir holds arrays of other shapes than this config makes "
      f"({len(arrays)} differ, e.g. {arrays[0]}); config fields that differ from the "
      f"checkpoint's: " + _describe(fields or ["none"]))


# --------------------------------------------------------------------------- damage.reading a trained G


def _step_dirs(root: str) -> dict[int, str]:
  """Completed checkpoints under `root` (orbax names unfinished ones `<step>.orbax-...-tmp`)."""
  if not os.path.isdir(root):
    return {}
  return {int(name): os.path.join(root, name) for name in os.listdir(root)
          if name.isdigit() and os.path.isdir(os.path.join(root, name, "state"))}


def best_step(root: str) -> int:
  """The step of the best checkpoint under the checkpoints folder `root` (keep_best's)."""
  options = ocp.CheckpointManagerOptions(
      read_only=True, create=False, best_fn=_rank, best_mode="max")
  manager = ocp.CheckpointManager(root, options=options)
  try:
    step = manager.best_step()  # None when no checkpoint has metrics.
  finally:
    manager.close()
  if step is None:
    raise FileNotFoundError(
        f"no checkpoint in {root} has validation metrics: train with keep_best=<metric> "
        "(and eval_every_steps > 0) to keep a best one")
  return step


def checkpoint_step_dir(path: str, step: int | str | None = None) -> str:
  """`path` (a workdir, its checkpoints folder, or one step's folder) -> one step's folder.

  `step`: None the latest, a number, or "best" (keep_best's best checkpoint).
  """
  path = os.path.abspath(path)
  if os.path.isdir(os.path.join(path, "state")) and os.path.isdir(os.path.join(path, "config")):
    return path
  root = path
  if os.path.isdir(os.path.join(path, CHECKPOINT_DIR)):
    root = os.path.join(path, CHECKPOINT_DIR)
  steps = _step_dirs(root)
  if not steps:
    raise FileNotFoundError(f"no checkpoint in {path} (looked for {root}/<step>/state)")
  if step is None:
    return steps[max(steps)]
  if step == BEST:
    step = best_step(root)
  if step not in steps:
    raise FileNotFoundError(f"no checkpoint for step {step} in {root}; steps: {sorted(steps)}")
  return steps[step]


def generator_shapes(config: ml_collections.ConfigDict) -> Variables:
  """ShapeDtypeStructs of the generator's variables, without computing anything."""
  m = config.model
  size = models.size_multiple(m)
  x = jax.ShapeDtypeStruct((1, size, size, m.input_nc), jnp.float32)
  generator = models.make_generator(m)
  return jax.eval_shape(lambda x: generator.init(jax.random.key(0), x, train=False), x)


def load_config(step_dir: str) -> ml_collections.ConfigDict:
  """A checkpoint's config, on top of today's defaults (fields added since are filled in)."""
  try:
    return _load_config(step_dir)
  except damage.CheckpointDamagedError as e:
    raise damage.CheckpointDamagedError(step_dir, e.reason, _working_step(step_dir)) from None


def _load_config(step_dir: str) -> ml_collections.ConfigDict:
  with damage.reading(step_dir):
    saved = ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(
        os.path.join(step_dir, "config"), args=ocp.args.JsonRestore())
  config = config_base.base_config()
  config.update(saved)
  return config


def load_generator(path: str, step: int | str | None = None
                   ) -> tuple[ml_collections.ConfigDict, Variables]:
  """The config and generator variables ({"params", "batch_stats"}) of a checkpoint.

  Only the generator is read: the discriminator and the optimizer states stay on disk.
  With model.ema_decay > 0 the params are the moving average of the trained ones.
  A damaged checkpoint raises CheckpointDamagedError, which names the --step that loads.
  """
  step_dir = checkpoint_step_dir(path, step)
  try:
    return _load_generator(step_dir)
  except damage.CheckpointDamagedError as e:
    raise damage.CheckpointDamagedError(step_dir, e.reason, _working_step(step_dir)) from None


def _working_step(damaged: str) -> str:
  """Which other checkpoint beside `damaged` loads (newest first), as a hint."""
  for step, step_dir in sorted(_step_dirs(os.path.dirname(damaged)).items(), reverse=True):
    if step_dir == damaged:
      continue
    try:
      _load_generator(step_dir)
    except damage.CheckpointDamagedError:
      continue
    return f"--step={step} loads"
  return "no other checkpoint there loads"


def _load_generator(step_dir: str) -> tuple[ml_collections.ConfigDict, Variables]:
  damage.check_intact(step_dir)
  config = _load_config(step_dir)
  shapes = generator_shapes(config)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  field = ema.params_field(config)
  wanted = {field: shapes["params"]}
  if shapes.get("batch_stats"):
    wanted["g_batch_stats"] = shapes["batch_stats"]
  wanted = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), wanted)
  with damage.reading(step_dir):
    restored = ocp.PyTreeCheckpointer().restore(
        os.path.join(step_dir, "state"), args=ocp.args.PyTreeRestore(
            item=wanted, restore_args=ocp.checkpoint_utils.construct_restore_args(wanted),
            partial_restore=True))
  return config, {"params": restored[field],
                  "batch_stats": restored.get("g_batch_stats", {})}


def check_same_architecture(saved: ml_collections.ConfigDict,
                            requested: ml_collections.ConfigDict) -> None:
  """Refuses overrides that change the generator's variables (they would not load)."""
  shapes = lambda c: jax.tree.map(lambda s: (s.shape, s.dtype),
                                  generator_shapes(c))
  if shapes(saved) != shapes(requested):
    raise ValueError("--config.model.* overrides change the generator's shapes; the checkpoint "
                     "was trained with the architecture in its config")
