"""The training loop: config -> dataset -> jitted train step -> checkpoints and summaries.

Rerunning with the same workdir resumes from the latest checkpoint: the state (Adam moments
included) is restored, and the input pipeline starts at the restored step, so the run sees
the batches it would have seen without the interruption.

A SIGTERM or SIGINT (or, on several hosts, JAX's preemption sync point) makes the loop save
a checkpoint at the step it is at and raise `preemption.Preempted`; a crash or SIGKILL at
any moment leaves the previous complete checkpoint to resume from (see checkpointing).

Every eval_every_steps (and at the last step) G is validated on data.eval_split in the
paper's test mode with the metric set the caller passes (train.py: the evaluate metrics),
outside the jitted step; the means go to TensorBoard and metrics.jsonl as val_<metric>,
drive the plateau LR policy, and rank the checkpoint saved at that step for keep_best.
"""

import contextlib
import os
import time
from typing import Iterator

from absl import logging
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import tqdm

from pix2pix_jax.config import validation
from pix2pix_jax.data import pipeline
from pix2pix_jax.nn import generate as generate_lib
from pix2pix_jax.train import checkpoint_damage
from pix2pix_jax.train import checkpoints
from pix2pix_jax.train import ema
from pix2pix_jax.train import optimizers
from pix2pix_jax.train import preemption
from pix2pix_jax.train import setup
from pix2pix_jax.train import sharding
from pix2pix_jax.train import state as train_state_lib
from pix2pix_jax.train import summaries
from pix2pix_jax.train import validation as validation_lib

class NonFiniteLossError(RuntimeError):
  """Raised with nan_policy=stop; the state was not updated by the bad step."""


class OutOfMemoryError(RuntimeError):
  """The first step (or the initial state) did not fit in device memory."""


def ensure_writable_workdir(workdir: str) -> None:
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".write_probe_{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise validation.ConfigError(
        f"--workdir {workdir} cannot be written to ({e.strerror}); choose a folder you can write.")


def check_data_paths(config: ml_collections.ConfigDict) -> None:
  """Names the data field whose folder is missing, before anything is built or compiled."""
  d = config.data
  if d.name == "folder" and not d.path:
    raise validation.ConfigError(
        "data.name='folder' needs data.path, the folder holding your image pairs.")
  for field in ("path", "manual_dir"):
    value = d.get(field, "")
    if value and not os.path.isdir(os.path.expanduser(value)):
      what = "does not exist" if not os.path.exists(os.path.expanduser(value)) else (
          "is not a folder")
      raise validation.ConfigError(f"data.{field}={value!r} {what}.")


def _is_out_of_memory(error: Exception) -> bool:
  text = str(error)
  return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()


@contextlib.contextmanager
def _hint_out_of_memory(config: ml_collections.ConfigDict, what: str) -> Iterator[None]:
  """Turns XLA's out-of-memory error into one that says which fields to lower."""
  try:
    yield
  except jax.errors.JaxRuntimeError as e:
    if not _is_out_of_memory(e):
      raise
    per_device = config.batch_size // max(jax.device_count(), 1)
    first_line = str(e).strip().splitlines()[0]
    raise OutOfMemoryError(
        f"out of memory while {what} on {jax.devices()[0].device_kind} "
        f"(batch_size={config.batch_size}, i.e. {per_device} per device; "
        f"data.crop_size={config.data.crop_size}; model.ngf={config.model.ngf}, "
        f"model.ndf={config.model.ndf}; model.dtype={config.model.dtype}). Lower batch_size "
        "or data.crop_size (or ngf/ndf), use model.dtype=bfloat16, or spread the batch over "
        f"more devices. XLA said: {first_line}") from e


def _raise_if_stopping_on_nonfinite(config: ml_collections.ConfigDict,
                                    pending: list[dict[str, jax.Array]], first_step: int,
                                    last_checkpoint: int | None) -> None:
  """With nan_policy=stop, raises before a bad step can be logged past or checkpointed."""
  if config.nan_policy != "stop" or not pending:
    return
  bad_steps = _nonfinite(pending, first_step)
  if bad_steps:
    bad_step, bad = bad_steps[0]
    kept = (f"the last checkpoint (step {last_checkpoint}) is kept"
            if last_checkpoint is not None else "no checkpoint had been written yet")
    raise NonFiniteLossError(
        f"step {bad_step} had a non-finite loss or gradient (G_loss={bad['G_loss']}, "
        f"D_loss={bad.get('D_loss', 'n/a')}); stopped (nan_policy=stop) with the state as it "
        f"was before that step, and {kept}. Lower the learning rate or check the data; "
        "nan_policy=skip skips such steps instead.")


def _mean_metrics(pending: list[dict[str, jax.Array]]) -> dict[str, float]:
  stacked = jax.device_get(pending)
  return {k: float(np.mean([m[k] for m in stacked])) for k in stacked[0]}


def _nonfinite(pending: list[dict[str, jax.Array]], first_step: int) -> list[tuple[int, dict]]:
  """(step, metrics) of each step in `pending` (the first being `first_step`) that was skipped."""
  return [(first_step + i, m) for i, m in enumerate(jax.device_get(pending))
          if not m["finite"]]


def _check_validation(config: ml_collections.ConfigDict,
                      metric_set: validation_lib.MetricSet | None) -> None:
  """Validation needs the metric functions, and keep_best and plateau need their metric."""
  if config.eval_every_steps <= 0:
    return
  if metric_set is None:
    raise validation.ConfigError(
        f"eval_every_steps={config.eval_every_steps} needs the validation metrics: run "
        "train.py, or pass metric_set=pix2pix_jax.eval.evaluate.metric_set() (or set "
        "eval_every_steps=0).")
  names = list(metric_set.higher_is_better)
  if config.keep_best and config.keep_best not in names:
    raise validation.ConfigError(
        f"keep_best={config.keep_best!r} is not a validation metric; choose one of "
        f"{', '.join(names)}.")
  if config.optim.lr_policy == "plateau" and "l1" not in names:
    raise validation.ConfigError("optim.lr_policy='plateau' steps on the validation l1, "
                                 "which the metric set does not compute.")


def _check_config(config: ml_collections.ConfigDict, workdir: str,
                  metric_set: validation_lib.MetricSet | None = None) -> None:
  validation.validate(config)
  _check_validation(config, metric_set)
  check_data_paths(config)
  ensure_writable_workdir(workdir)
  if config.batch_size % jax.device_count():
    raise validation.ConfigError(
        f"batch_size={config.batch_size} must be a multiple of the {jax.device_count()} devices "
        "it is split over.")


def _initial_state(config: ml_collections.ConfigDict, run: setup.Run,
                   manager: ocp.CheckpointManager, mesh: jax.sharding.Mesh,
                   workdir: str) -> train_state_lib.TrainState:
  """The newest intact checkpoint's state, checked against the config, or a new one.

  A damaged checkpoint (truncated, corrupt or missing files) is said in one sentence, moved
  aside as `<step>.damaged` and the next older one tried.
  """
  while (step := manager.latest_step()) is not None:
    step_dir = os.path.join(checkpoints.checkpoint_dir(workdir), str(step))
    try:
      return _restore(config, run, manager, mesh, workdir, step, step_dir)
    except checkpoint_damage.CheckpointDamagedError as e:
      if jax.process_index() == 0:
        moved = checkpoint_damage.move_aside(step_dir)
        print(f"Checkpoint {step} is damaged ({e.reason}); moved it to {moved} and resuming "
              "from the newest intact checkpoint", flush=True)
      if jax.process_count() > 1:
        multihost_utils.sync_global_devices(f"moved damaged checkpoint {step} aside")
      manager.reload()
  with _hint_out_of_memory(config, "creating the initial state"):
    return jax.block_until_ready(run.create_state())


def _restore(config: ml_collections.ConfigDict, run: setup.Run,
             manager: ocp.CheckpointManager, mesh: jax.sharding.Mesh, workdir: str, step: int,
             step_dir: str) -> train_state_lib.TrainState:
  """Checkpoint `step`'s state; CheckpointDamagedError if its files say it is damaged."""
  checkpoint_damage.check_intact(step_dir)
  with checkpoint_damage.reading(step_dir):
    saved_config = checkpoints.restore_config(manager, step)
  checkpoints.check_resume_compatible(saved_config, config)
  abstract = checkpoints.abstract_like(jax.eval_shape(run.create_state),
                                       sharding.replicated(mesh))
  with checkpoint_damage.reading(step_dir):
    metadata = checkpoints.state_metadata(manager, step)
  checkpoints.check_state_shapes(metadata, abstract, saved_config, config)
  with _hint_out_of_memory(config, "restoring the checkpoint"), checkpoint_damage.reading(step_dir):
    state = checkpoints.restore_state(manager, abstract, step)
  if jax.process_index() == 0:
    print(f"Resumed from step {int(state.step)} in {workdir}", flush=True)
  return state


class _Logger:
  """Averages the step metrics of each log window and writes them (process 0 only)."""

  def __init__(self, config: ml_collections.ConfigDict, writer: summaries.SummaryWriter | None,
               bar: tqdm.tqdm, steps_per_epoch: int, total_steps: int, first_step: int):
    self.config, self.writer, self.bar = config, writer, bar
    self.steps_per_epoch = steps_per_epoch
    self.schedule = optimizers.learning_rate_schedule(config.optim.lr, config, total_steps,
                                                      steps_per_epoch)
    self.pending: list[dict[str, jax.Array]] = []
    self.start, self.first_step = time.perf_counter(), first_step

  def log(self, step: int, state: train_state_lib.TrainState) -> None:
    means = _mean_metrics(self.pending)
    for bad_step, bad in _nonfinite(self.pending, self.first_step + 1):
      logging.warning("step %d had a non-finite loss or gradient (G_loss=%s, D_loss=%s); "
                      "skipped it (nan_policy=skip).", bad_step, bad["G_loss"],
                      bad.get("D_loss", "n/a"))
    elapsed = time.perf_counter() - self.start
    means["images_per_s"] = len(self.pending) * self.config.batch_size / elapsed
    means["epoch"] = step / self.steps_per_epoch
    means["learning_rate"] = float(self.schedule(step - 1)) * float(
        jax.device_get(optimizers.lr_scale(state.g_opt_state)))
    means["skipped_steps"] = float(jax.device_get(state.nonfinite_steps))
    if self.writer:
      self.writer.scalars(step, means)
    self.bar.set_postfix({k: f"{means[k]:.3g}" for k in
                          ("epoch", "D_real", "D_fake", "G_GAN", "G_L1", "images_per_s")
                          if k in means}, refresh=False)
    self.pending, self.start, self.first_step = [], time.perf_counter(), step


def _validate(config: ml_collections.ConfigDict, state: train_state_lib.TrainState,
              generate: validation_lib.GenerateFn, metric_set: validation_lib.MetricSet
              ) -> dict[str, float]:
  variables = {"params": ema.generator_params(state, config),
               "batch_stats": state.g_batch_stats}
  return validation_lib.validate(config, validation_lib.local_copy(variables), generate,
                                 metric_set)


def _after_validation(config: ml_collections.ConfigDict, state: train_state_lib.TrainState,
                      values: dict[str, float]) -> train_state_lib.TrainState:
  """The plateau policy's step on the validation L1 (both optimizers, as the official)."""
  if config.optim.lr_policy != "plateau":
    return state
  o = config.optim
  lr_d = o.lr if o.lr_d < 0 else o.lr_d
  return state.replace(
      g_opt_state=optimizers.reduce_on_plateau(state.g_opt_state, values["l1"], o.lr),
      d_opt_state=optimizers.reduce_on_plateau(state.d_opt_state, values["l1"], lr_d))


def _check_eval_split(config: ml_collections.ConfigDict) -> None:
  if config.eval_every_steps <= 0:
    return
  splits = pipeline.builder(config.data).info.splits
  if config.data.eval_split not in splits:
    raise validation.ConfigError(
        f"data.eval_split={config.data.eval_split!r}: {config.data.name} has no such split "
        f"(has {', '.join(splits)}); validation (eval_every_steps > 0) needs one.")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       stop: preemption.StopRequest | None = None, *,
                       metric_set: validation_lib.MetricSet | None = None
                       ) -> train_state_lib.TrainState:
  """Trains until config's last step (resuming if `workdir` has a checkpoint); returns the state.

  `stop` decides when to save and leave early (default: SIGTERM/SIGINT, or the hosts'
  preemption sync point); it then raises `preemption.Preempted` once the checkpoint is on
  disk. `metric_set` scores validation (needed when eval_every_steps > 0).
  """
  _check_config(config, workdir, metric_set)
  mesh = sharding.make_mesh()
  is_main = jax.process_index() == 0
  if jax.process_count() > 1:
    # Process 0 prepares the dataset alone; the others wait and then read it.
    if is_main:
      pipeline.builder(config.data)
    multihost_utils.sync_global_devices("dataset prepared")
  _check_eval_split(config)
  steps_per_epoch = pipeline.steps_per_epoch(config)
  total_steps = train_state_lib.total_train_steps(config, steps_per_epoch)
  run = setup.build(config, mesh, total_steps, steps_per_epoch=steps_per_epoch)
  manager = checkpoints.make_manager(workdir, config.keep_checkpoints,
                                     keep_every_steps=config.keep_every_steps,
                                     keep_best=bool(config.keep_best))
  state = _initial_state(config, run, manager, mesh, workdir)
  start_step = int(jax.device_get(state.step))

  batches = sharding.prefetch_to_devices(pipeline.train_iterator(
      config, start_step=start_step, process_index=jax.process_index(),
      process_count=jax.process_count()), mesh)
  samples = pipeline.sample_pairs(config, config.num_sample_pairs)
  # The sample grids show G as translate would run it: the paper's test mode, EMA weights
  # when training keeps them, a fixed dropout key per pair.
  generate = generate_lib.make_generate_fn(config)
  sample_keys = generate_lib.image_keys(config.seed + 1, list(range(len(samples["input"]))))
  writer = summaries.SummaryWriter(workdir) if is_main else None
  bar = tqdm.tqdm(total=total_steps, initial=start_step, disable=not is_main, unit="step",
                  dynamic_ncols=True, desc="train")
  logger = _Logger(config, writer, bar, steps_per_epoch, total_steps, start_step)
  last_checkpoint = manager.latest_step()
  if stop is None:
    stop = preemption.for_this_run(jax.process_count(), jax.distributed.is_initialized())
  stop.install()
  try:
    for step in range(start_step + 1, total_steps + 1):
      if step == start_step + 1:
        # Compiles; blocking once surfaces an out-of-memory error here, with a hint.
        with _hint_out_of_memory(config, "compiling and running the first train step"):
          state, metrics = run.step(state, next(batches))
          jax.block_until_ready(metrics)
      else:
        state, metrics = run.step(state, next(batches))
      logger.pending.append(metrics)
      bar.update(1)
      last = step == total_steps
      if step % config.log_every_steps == 0 or last:
        _raise_if_stopping_on_nonfinite(config, logger.pending, logger.first_step + 1,
                                        last_checkpoint)
        logger.log(step, state)
      if writer and (step % config.sample_every_steps == 0 or last):
        variables = {"params": ema.generator_params(state, config),
                     "batch_stats": state.g_batch_stats}
        fake = generate(variables, jnp.asarray(samples["input"]), sample_keys)
        writer.image(step, "samples", summaries.sample_grid(
            samples["input"], np.asarray(fake), samples["target"]))
      ranked = None
      if config.eval_every_steps > 0 and (step % config.eval_every_steps == 0 or last):
        values = _validate(config, state, generate, metric_set)
        state = _after_validation(config, state, values)
        if writer:
          writer.scalars(step, {f"val_{m}": v for m, v in values.items()})
          bar.write(f"step {step} validation: " + ", ".join(
              f"{m} {v:.4g}" for m, v in values.items()))
        if config.keep_best:
          ranked = checkpoints.ranked_metrics(
              values, config.keep_best, metric_set.higher_is_better[config.keep_best])
      stopping = stop.should_stop(step) and not last
      snapshot = config.keep_every_steps > 0 and step % config.keep_every_steps == 0
      if (step % config.checkpoint_every_steps == 0 or last or stopping or snapshot
          or ranked is not None):
        # Never checkpoint past a bad step that nan_policy=stop has yet to report.
        _raise_if_stopping_on_nonfinite(config, logger.pending, logger.first_step + 1,
                                        last_checkpoint)
        if checkpoints.save(manager, state, config, metrics=ranked):
          last_checkpoint = step
      if stopping:
        manager.wait_until_finished()
        raise preemption.Preempted(step, checkpoints.checkpoint_dir(workdir), stop.signum)
  finally:
    bar.close()
    manager.wait_until_finished()
    manager.close()
    if writer:
      writer.close()
    stop.uninstall()  # Last: a second signal while the save finishes still exits at once.
  return state
