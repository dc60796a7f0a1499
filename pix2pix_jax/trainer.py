"""The training loop: config -> dataset -> jitted train step -> checkpoints and summaries.

Rerunning with the same workdir resumes from the latest checkpoint: the state (Adam moments
included) is restored, and the input pipeline starts at the restored step, so the run sees
the batches it would have seen without the interruption.
"""

import functools
import os
import time
from typing import Any

from absl import logging
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from pix2pix_jax import checkpointing
from pix2pix_jax import config_validation
from pix2pix_jax import input_pipeline
from pix2pix_jax import models
from pix2pix_jax import sharding
from pix2pix_jax import summaries
from pix2pix_jax import train_state as train_state_lib
from pix2pix_jax import train_step as train_step_lib

# Config fields that decide the shapes in a checkpoint: a resume must not change them.
ARCHITECTURE_FIELDS = ("model.generator", "model.input_nc", "model.output_nc", "model.ngf",
                       "model.ndf", "model.num_downs", "model.n_layers_d", "model.norm",
                       "model.conditional_d")


class NonFiniteLossError(RuntimeError):
  """Raised with nan_policy=stop; the state was not updated by the bad step."""


def ensure_writable_workdir(workdir: str) -> None:
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".write_probe_{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise config_validation.ConfigError(
        f"--workdir {workdir} cannot be written to ({e.strerror}); choose a folder you can write.")


def _lookup(config: Any, dotted: str) -> Any:
  for part in dotted.split("."):
    config = config.get(part) if isinstance(config, dict) else config[part]
  return config


def check_resume_compatible(saved: ml_collections.ConfigDict,
                            requested: ml_collections.ConfigDict) -> None:
  """Names the architecture fields that differ between a checkpoint and the config."""
  saved_dict, requested_dict = saved.to_dict(), requested.to_dict()
  diffs = [f"{f} (checkpoint {_lookup(saved_dict, f)!r}, config {_lookup(requested_dict, f)!r})"
           for f in ARCHITECTURE_FIELDS
           if _lookup(saved_dict, f) != _lookup(requested_dict, f)]
  if diffs:
    raise config_validation.ConfigError(
        "the checkpoint in the workdir was trained with a different architecture: "
        + "; ".join(diffs) + ". Use another --workdir or the checkpoint's settings.")


@functools.partial(jax.jit, static_argnums=0)
def _generate(generator: models.UNetGenerator, params: Any, batch_stats: Any,
              images: jax.Array, key: jax.Array) -> jax.Array:
  """G in the paper's test mode: dropout on, BatchNorm on the batch's own statistics."""
  out, _ = generator.apply({"params": params, "batch_stats": batch_stats}, images, train=True,
                           mutable=["batch_stats"], rngs={"dropout": key})
  return out


def _mean_metrics(pending: list[dict[str, jax.Array]]) -> dict[str, float]:
  stacked = jax.device_get(pending)
  return {k: float(np.mean([m[k] for m in stacked])) for k in stacked[0]}


def _first_nonfinite(pending: list[dict[str, jax.Array]], first_step: int) -> tuple[int, dict]:
  for i, m in enumerate(jax.device_get(pending)):
    if not m["finite"]:
      return first_step + i, m
  raise ValueError("no non-finite step")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> train_state_lib.TrainState:
  """Trains until config's last step (resuming if `workdir` has a checkpoint); returns the state."""
  config_validation.validate(config)
  ensure_writable_workdir(workdir)
  mesh = sharding.make_mesh()
  if config.batch_size % jax.device_count():
    raise config_validation.ConfigError(
        f"batch_size={config.batch_size} must be a multiple of the {jax.device_count()} devices "
        "it is split over.")
  is_main = jax.process_index() == 0

  if jax.process_count() > 1:
    # Process 0 prepares the dataset alone; the others wait and then read it.
    if is_main:
      input_pipeline.builder(config.data)
    multihost_utils.sync_global_devices("dataset prepared")
  steps_per_epoch = input_pipeline.steps_per_epoch(config)
  total_steps = train_state_lib.total_train_steps(config, steps_per_epoch)
  g_tx, d_tx = train_state_lib.make_optimizers(config, total_steps)
  create_state = functools.partial(train_state_lib.create_train_state, config, g_tx, d_tx)
  replicated = sharding.replicated(mesh)

  manager = checkpointing.make_manager(workdir, config.keep_checkpoints)
  if manager.latest_step() is not None:
    check_resume_compatible(checkpointing.restore_config(manager), config)
    abstract = checkpointing.abstract_like(jax.eval_shape(create_state), replicated)
    state = checkpointing.restore_state(manager, abstract)
    if is_main:
      print(f"Resumed from step {int(state.step)} in {workdir}", flush=True)
  else:
    state = jax.jit(create_state, out_shardings=replicated)()
  start_step = int(jax.device_get(state.step))

  train_step = train_step_lib.jit_train_step(config, mesh, g_tx, d_tx)
  batches = sharding.prefetch_to_devices(input_pipeline.train_iterator(
      config, start_step=start_step, process_index=jax.process_index(),
      process_count=jax.process_count()), mesh)
  samples = input_pipeline.sample_pairs(config, config.num_sample_pairs)
  generator = models.make_generator(config.model)
  sample_key = jax.random.key(config.seed + 1)
  writer = summaries.SummaryWriter(workdir) if is_main else None

  bar = tqdm.tqdm(total=total_steps, initial=start_step, disable=not is_main, unit="step",
                  dynamic_ncols=True, desc="train")
  pending: list[dict[str, jax.Array]] = []
  window_start, window_first_step = time.perf_counter(), start_step
  try:
    for step in range(start_step + 1, total_steps + 1):
      state, metrics = train_step(state, next(batches))
      pending.append(metrics)
      bar.update(1)
      last = step == total_steps
      if step % config.log_every_steps == 0 or last:
        means = _mean_metrics(pending)
        if means["finite"] < 1.0:
          bad_step, bad = _first_nonfinite(pending, window_first_step + 1)
          message = (f"step {bad_step} had a non-finite loss or gradient "
                     f"(G_loss={bad['G_loss']}, D_loss={bad.get('D_loss', 'n/a')}); ")
          if config.nan_policy == "stop":
            raise NonFiniteLossError(
                message + "the state was left as it was before that step and the last "
                "checkpoint is kept. Lower the learning rate or check the data.")
          logging.warning(message + "skipped it (nan_policy=skip).")
        elapsed = time.perf_counter() - window_start
        means["images_per_s"] = len(pending) * config.batch_size / elapsed
        means["epoch"] = step / steps_per_epoch
        means["learning_rate"] = float(train_state_lib.learning_rate_schedule(
            config.optim.lr, config, total_steps)(step - 1))
        means["skipped_steps"] = float(jax.device_get(state.nonfinite_steps))
        if writer:
          writer.scalars(step, means)
        bar.set_postfix({k: f"{means[k]:.3g}" for k in
                         ("epoch", "D_real", "D_fake", "G_GAN", "G_L1", "images_per_s")
                         if k in means}, refresh=False)
        pending, window_start, window_first_step = [], time.perf_counter(), step
      if writer and (step % config.sample_every_steps == 0 or last):
        fake = _generate(generator, state.g_params, state.g_batch_stats,
                         jnp.asarray(samples["input"]), sample_key)
        writer.image(step, "samples", summaries.sample_grid(
            samples["input"], np.asarray(fake), samples["target"]))
      if step % config.checkpoint_every_steps == 0 or last:
        checkpointing.save(manager, state, config)
  finally:
    bar.close()
    manager.wait_until_finished()
    manager.close()
    if writer:
      writer.close()
  return state
