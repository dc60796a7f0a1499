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

A complete checkpoint can still be damaged later (a disk error, a file truncated by a copy,
a deleted file): reading one raises CheckpointDamagedError, one sentence that says which and
why, instead of orbax's and TensorStore's tracebacks; training moves it aside and resumes from
the newest intact one, the inference programs say which --step loads.
"""

import contextlib
import gc
import json
import logging
import math
import os
import re
import sys
from typing import Any, Iterator, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp

from pix2pix_jax.config import base as config_base
from pix2pix_jax.config import validation
from pix2pix_jax.nn import models
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
# Files every complete checkpoint has; one missing means the checkpoint was damaged since.
REQUIRED_FILES = ("state/_METADATA", "state/manifest.ocdbt", "config/metadata")
DAMAGED_SUFFIX = ".damaged"


class CheckpointDamagedError(ValueError):
  """A checkpoint whose files are missing, truncated or corrupt; says which and why."""

  def __init__(self, step_dir: str, reason: str, hint: str = ""):
    self.step_dir, self.reason = step_dir, reason
    self.step = os.path.basename(step_dir)
    super().__init__(f"checkpoint {self.step} ({step_dir}) is damaged: {reason}"
                     + (f"; {hint}" if hint else ""))


def check_intact(step_dir: str) -> None:
  """Raises CheckpointDamagedError if a file every checkpoint has is missing or unreadable.

  Cheap (no array is read); catches what the loaders would misreport, e.g. a deleted
  state/_METADATA, which otherwise reads as arrays of other shapes than the config's.
  """
  for name in REQUIRED_FILES:
    path = os.path.join(step_dir, name)
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
      raise CheckpointDamagedError(step_dir, f"{name} is missing or empty")
  for name in ("state/_METADATA", "config/metadata"):
    try:
      with open(os.path.join(step_dir, name), "rb") as f:
        json.loads(f.read())
    except (OSError, ValueError) as e:
      raise CheckpointDamagedError(step_dir, f"{name} is not readable JSON ({e})") from None


def damage_reason(error: BaseException) -> str | None:
  """What an orbax/TensorStore error says is wrong with the files; None if it is not that."""
  seen: list[BaseException] = []
  e: BaseException | None = error
  while e is not None and len(seen) < 8:
    seen.append(e)
    e = e.__cause__ or e.__context__
  for e in seen:
    message = str(e)
    array = re.search(r'Error reading "([^"/]+)', message)
    where = f" (array {array.group(1)})" if array else ""
    if "OUT_OF_RANGE" in message or "byte range" in message or "truncated" in message.lower():
      return f"an array file is truncated{where}"
    if "DATA_LOSS" in message or "corrupt" in message.lower() or "checksum" in message:
      return f"an array file is corrupt{where}"
    if isinstance(e, FileNotFoundError) or "NOT_FOUND" in message:
      return f"a file is missing{where}: {message.splitlines()[0][:200]}"
    if isinstance(e, json.JSONDecodeError):
      return f"a metadata file is not valid JSON ({e})"
    status = re.search(r"\b([A-Z_]{5,}): Error (reading|opening)", message)
    if status:  # TensorStore's other statuses on a file it could not read.
      return f"an array file cannot be read ({status.group(1)}){where}"
  return None


@contextlib.contextmanager
def reading(step_dir: str) -> Iterator[None]:
  """Errors that say `step_dir`'s files are damaged become one CheckpointDamagedError."""
  reason = None
  try:
    yield
  except CheckpointDamagedError:
    raise
  except Exception as e:  # pylint: disable=broad-except  # TensorStore raises bare Exception.
    reason = damage_reason(e)
    if reason is None:
      raise
  if reason is not None:
    _drop_failed_reads()
    raise CheckpointDamagedError(step_dir, reason)


class _FailedReadFilter(logging.Filter):
  """Drops asyncio's "Future exception was never retrieved" for a damaged checkpoint's reads."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not (record.exc_info and damage_reason(record.exc_info[1]) is not None)


def _drop_failed_reads() -> None:
  """Silences the other reads of a damaged checkpoint that failed too.

  Orbax awaits the first failed read and leaves the others; when they are collected (now, or
  at exit) each would print a traceback through asyncio's logger or sys.unraisablehook. Only
  those are dropped, from the first damaged checkpoint on, for the rest of the process.
  """
  logger = logging.getLogger("asyncio")
  if not any(isinstance(f, _FailedReadFilter) for f in logger.filters):
    logger.addFilter(_FailedReadFilter())
  previous = sys.unraisablehook
  if not getattr(previous, "drops_failed_reads", False):
    # Self-contained (bound defaults, no module globals): it may run at interpreter exit.
    def hook(unraisable: Any, previous: Any = previous, reason: Any = damage_reason,
             marks: tuple[str, ...] = ("Encountered error while reading array",
                                       "Event loop is closed")) -> None:
      error = unraisable.exc_value  # The read's error, or its loop's, closed before it ended.
      try:
        ours = any(m in str(error) for m in marks) or reason(error) is not None
      except Exception:  # pylint: disable=broad-except
        ours = False
      if not ours:
        previous(unraisable)
    hook.drops_failed_reads = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook
  gc.collect()


def move_aside(step_dir: str) -> str:
  """Renames a damaged checkpoint `<step>.damaged` (kept for a look, never read again)."""
  target, n = step_dir + DAMAGED_SUFFIX, 1
  while os.path.exists(target):
    target, n = f"{step_dir}{DAMAGED_SUFFIX}-{n}", n + 1
  os.rename(step_dir, target)
  return target


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


# --------------------------------------------------------------------------- reading a trained G


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
  size = 2**m.num_downs
  x = jax.ShapeDtypeStruct((1, size, size, m.input_nc), jnp.float32)
  generator = models.make_generator(m)
  return jax.eval_shape(lambda x: generator.init(jax.random.key(0), x, train=False), x)


def load_config(step_dir: str) -> ml_collections.ConfigDict:
  """A checkpoint's config, on top of today's defaults (fields added since are filled in)."""
  try:
    return _load_config(step_dir)
  except CheckpointDamagedError as e:
    raise CheckpointDamagedError(step_dir, e.reason, _working_step(step_dir)) from None


def _load_config(step_dir: str) -> ml_collections.ConfigDict:
  with reading(step_dir):
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
  except CheckpointDamagedError as e:
    raise CheckpointDamagedError(step_dir, e.reason, _working_step(step_dir)) from None


def _working_step(damaged: str) -> str:
  """Which other checkpoint beside `damaged` loads (newest first), as a hint."""
  for step, step_dir in sorted(_step_dirs(os.path.dirname(damaged)).items(), reverse=True):
    if step_dir == damaged:
      continue
    try:
      _load_generator(step_dir)
    except CheckpointDamagedError:
      continue
    return f"--step={step} loads"
  return "no other checkpoint there loads"


def _load_generator(step_dir: str) -> tuple[ml_collections.ConfigDict, Variables]:
  check_intact(step_dir)
  config = _load_config(step_dir)
  shapes = generator_shapes(config)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  field = ema.params_field(config)
  wanted = {field: shapes["params"]}
  if shapes.get("batch_stats"):
    wanted["g_batch_stats"] = shapes["batch_stats"]
  wanted = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), wanted)
  with reading(step_dir):
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
