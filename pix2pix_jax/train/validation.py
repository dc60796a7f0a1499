"""G on a dataset split, scored per image: what validation while training and evaluate share.

`scored_examples` runs G (in the mode its `generate` function was made for) over a split
with the test-time geometry (`pipeline.test_spec`), crops each output back to its image,
rounds input, output and target to 8 bits (or `dtype`: evaluate's --output_bits; the
metrics are those of the PNGs evaluate writes) and scores each image with the caller's metric
functions. The metrics come in as a `MetricSet` because LPIPS's weights are read through
pix2pix_jax.interop, a layer above this one: pix2pix_jax.eval.evaluate.metric_set() is the
evaluate metrics (L1, PSNR, SSIM, LPIPS), and train.py passes it to the trainer.
"""

from typing import Any, Callable, Iterator, Mapping, NamedTuple

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np

from pix2pix_jax.data import image_io
from pix2pix_jax.data import pipeline
from pix2pix_jax.data import transforms
from pix2pix_jax.nn import generate as generate_lib

GenerateFn = Callable[[generate_lib.Variables, jax.Array, jax.Array], jax.Array]


class MetricSet(NamedTuple):
  """fn(outputs, targets) -> {name: per-image values (N,)}, NHWC in [-1, 1]; each name's
  direction (True: higher is better)."""
  fn: Callable[[jax.Array, jax.Array], Mapping[str, jax.Array]]
  higher_is_better: Mapping[str, bool]


class Example(NamedTuple):
  index: int  # Position in the split.
  name: str
  images: dict[str, np.ndarray]  # "input", "output", "target": HxWxC uint8 (or `dtype`).
  metrics: dict[str, float]


def score_images(outputs: list[np.ndarray], targets: list[np.ndarray], metric_set: MetricSet
           ) -> list[dict[str, float]]:
  """Per-image metric values of HxWxC uint8 (or uint16) outputs against their targets; one
  call for the whole batch when its images share a shape."""
  if len({o.shape for o in outputs}) > 1:
    return [score_images([o], [t], metric_set)[0] for o, t in zip(outputs, targets)]
  stack = lambda images: jnp.asarray(np.stack([image_io.to_float(i) for i in images]))
  values = jax.device_get(dict(metric_set.fn(stack(outputs), stack(targets))))
  return [{m: float(v[k]) for m, v in values.items()} for k in range(len(outputs))]


def scored_examples(config: ml_collections.ConfigDict, variables: generate_lib.Variables,
                    split: str, generate: GenerateFn, metric_set: MetricSet, *,
                    seed: int = 0, batch_size: int = 8, limit: int | None = None,
                    process_index: int = 0, process_count: int = 1,
                    dtype: np.dtype = np.uint8) -> Iterator[Example]:
  """This host's examples of the split's first `limit` (all: None), in order, scored.

  Image i's dropout key is `seed`'s folded with i, whatever the batch size or host count.
  Every batch has the same shape (the last is filled with copies, scored and dropped), so
  `generate` and the metrics compile once per image size.
  """
  geometry = pipeline.test_spec(config)
  per_host = batch_size // process_count
  batches = pipeline.eval_iterator(config, split, batch_size, process_index=process_index,
                                   process_count=process_count, limit=limit)
  for b, batch in enumerate(batches):
    first = b * batch_size + process_index * per_host
    keys = generate_lib.image_keys(seed, range(first, first + per_host))
    fake = np.asarray(generate(variables, jnp.asarray(batch["input"]), keys))
    images = []
    for k in range(per_host):
      shape = tuple(int(s) for s in batch["shape"][k])
      images.append({role: image_io.from_float(transforms.restore(a[k], shape, geometry),
                                               dtype)
                     for role, a in (("input", batch["input"]), ("output", fake),
                                     ("target", batch["target"]))})
    scores = score_images([i["output"] for i in images], [i["target"] for i in images],
                          metric_set)
    for k in range(per_host):
      if batch["mask"][k]:
        yield Example(first + k, str(batch["name"][k]), images[k], scores[k])


def validate(config: ml_collections.ConfigDict, variables: generate_lib.Variables,
             generate: GenerateFn, metric_set: MetricSet) -> dict[str, float]:
  """Mean of each metric over data.eval_split's first eval_num_examples, in the paper's test
  mode (seed config.seed), over all hosts; the names are the metric set's."""
  limit = None if config.eval_num_examples < 0 else config.eval_num_examples
  count, sums = 0, {m: 0.0 for m in metric_set.higher_is_better}
  for example in scored_examples(
      config, variables, config.data.eval_split, generate, metric_set, seed=config.seed,
      batch_size=config.eval_batch_size, limit=limit, process_index=jax.process_index(),
      process_count=jax.process_count()):
    count += 1
    for m in sums:
      sums[m] += example.metrics[m]
  totals = np.array([count, *sums.values()], np.float64)
  if jax.process_count() > 1:
    totals = np.sum(multihost_utils.process_allgather(totals), axis=0)
  if totals[0] == 0:
    raise ValueError(f"split {config.data.eval_split!r} of {config.data.name} has no examples")
  return {m: float(t / totals[0]) for m, t in zip(sums, totals[1:])}


def local_copy(tree: Any) -> Any:
  """Replicated arrays as arrays on this host's first device (what `generate` can take)."""
  return jax.tree.map(lambda a: a.addressable_data(0) if isinstance(a, jax.Array) else a, tree)
