"""Runs a few train steps of a tiny pix2pix on fixed batches and saves losses and parameters.

Started by test_data_parallel.py as a separate process, because the number of (fake) CPU
devices and jax.distributed must be set before JAX starts. Each process feeds only its own
slice of every global batch, as the trainer does.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--devices", type=int, required=True, help="CPU devices in this process")
  parser.add_argument("--output", required=True)
  parser.add_argument("--coordinator", default=None)
  parser.add_argument("--num_processes", type=int, default=1)
  parser.add_argument("--process_id", type=int, default=0)
  parser.add_argument("--steps", type=int, default=3)
  args = parser.parse_args()

  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_num_cpu_devices", args.devices)
  if args.coordinator:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
  import numpy as np  # pylint: disable=g-import-not-at-top
  import configs.default as default_config  # pylint: disable=g-import-not-at-top
  from pix2pix_jax.train import setup  # pylint: disable=g-import-not-at-top
  from pix2pix_jax.train import sharding  # pylint: disable=g-import-not-at-top

  c = default_config.get_config()
  c.batch_size, c.data.crop_size = 8, 32
  c.model.update(num_downs=5, ngf=4, ndf=4, n_layers_d=2)
  mesh = sharding.make_mesh()
  state, step, _, _ = setup.fresh(c, mesh, 100)
  rng = np.random.default_rng(0)
  per_process = c.batch_size // jax.process_count()
  lo = jax.process_index() * per_process
  losses = []
  for _ in range(args.steps):
    batch = {k: rng.uniform(-1, 1, (c.batch_size, 32, 32, 3)).astype(np.float32)
             for k in ("input", "target")}
    local = {k: v[lo:lo + per_process] for k, v in batch.items()}
    state, metrics = step(state, sharding.global_batch(local, mesh))
    losses.append([float(metrics[k].addressable_data(0)) for k in ("D_loss", "G_GAN", "G_L1")])
  leaves = jax.tree.leaves((state.g_params, state.d_params, state.g_batch_stats,
                            state.d_batch_stats))
  flat = np.concatenate([np.asarray(x.addressable_data(0)).ravel() for x in leaves])
  if jax.process_index() == 0:
    np.savez(args.output, losses=np.array(losses), params=flat,
             devices=jax.device_count())


if __name__ == "__main__":
  main()
