"""Data parallelism over every device of every host: one ("data",) mesh axis.

The state is replicated, batches are split along their first axis. With `jax.jit` and these
shardings, XLA inserts the gradient all-reduce, and BatchNorm sees global-batch statistics.
"""

import collections
import itertools
from typing import Any, Iterator

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices: list[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh with an Auto axis (Explicit axes, `make_mesh`'s default, break nn.Dropout)."""
  devices = jax.devices() if devices is None else devices
  return jax.make_mesh((len(devices),), (DATA_AXIS,), devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles each host's slice into one global array per key (no cross-host copies)."""
  sharding = batch_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v)
          for k, v in local_batch.items()}


def prefetch_to_devices(local_batches: Iterator[dict[str, np.ndarray]], mesh: Mesh,
                        size: int = 2) -> Iterator[dict[str, jax.Array]]:
  """Keeps `size` batches in flight to the devices so the step never waits on a copy."""
  queue: collections.deque[Any] = collections.deque()
  batches = iter(local_batches)
  for batch in itertools.islice(batches, size):
    queue.append(global_batch(batch, mesh))
  while queue:
    yield queue.popleft()
    for batch in itertools.islice(batches, 1):
      queue.append(global_batch(batch, mesh))
