"""Batches of (input, target) pairs for training, evaluation and sample grids.

Every dataset is a prepared tfds builder written as array_record, read by index through
`tfds.data_source`, so that any batch is a pure function of (seed, step): the epoch order
is a permutation drawn from (seed, epoch), each example's crop and flip from
(seed, epoch, index). Resuming at a step therefore only jumps to a position, and each host
loads only its slice of every global batch. `data.reader` picks who runs the per-example
work (decode, `transforms.preprocess`): tf.data (parallel map, prefetch, AUTOTUNE) or a
thread pool with no TensorFlow import at all; both produce the same pixels.

Training examples get the training geometry (`spec`: load_size, random crop and flip);
every other read (evaluation, validation, sample grids, whatever the split) gets the
official test.py's (`test_spec`: the whole image resized to crop_size, no flip).
"""

import collections
import concurrent.futures
import dataclasses
import itertools
import os
from typing import Any, Callable, Iterator, Sequence

import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from pix2pix_jax.data import image_io
from pix2pix_jax.data import transforms
from pix2pix_jax.data.datasets import folder
from pix2pix_jax.data.datasets import official
from pix2pix_jax.data.datasets import pairs
from pix2pix_jax.data.datasets import synthetic
from pix2pix_jax.nn import models

Batch = dict[str, np.ndarray]
READERS = ("tf", "numpy")
DIRECTIONS = ("AtoB", "BtoA")
# Stream tags keep the epoch-order and the augmentation random streams apart.
_ORDER_STREAM, _AUGMENT_STREAM = 0, 1


def builder(data_config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """The builder for data.name, prepared (downloaded or read from manual_dir) if needed."""
  name = data_config.name
  data_dir = os.path.expanduser(data_config.data_dir) if data_config.data_dir else None
  manual_dir = os.path.expanduser(data_config.manual_dir) if data_config.manual_dir else None
  if manual_dir and not os.path.isdir(manual_dir):
    raise FileNotFoundError(f"data.manual_dir={manual_dir!r} is not a folder")
  if data_config.on_bad_file not in pairs.ON_BAD_FILE:
    raise ValueError(f"data.on_bad_file must be one of {pairs.ON_BAD_FILE}, got "
                     f"{data_config.on_bad_file!r}")
  kwargs = dict(data_dir=data_dir, file_format=pairs.FILE_FORMAT)
  if name == "synthetic":
    b = synthetic.Pix2pixSynthetic(**kwargs)
  elif name in official.NAMES:
    b = official.Pix2pix(config=name, on_bad_file=data_config.on_bad_file, **kwargs)
    if manual_dir and not b.is_prepared() and not official.find_manual(manual_dir, name):
      raise FileNotFoundError(
          f"data.manual_dir={manual_dir!r} has neither {name}.tar.gz nor {name}/; put the "
          f"archive there (from {official.URL.format(name)}) or leave data.manual_dir "
          "empty to download it")
  elif name == "folder":
    config = folder.make_config(data_config.path, val_fraction=data_config.val_fraction)
    b = folder.Pix2pixFolder(config=config, on_bad_file=data_config.on_bad_file, **kwargs)
  else:
    raise ValueError(f"Unknown data.name {name!r}; expected synthetic, folder or one of "
                     f"{official.NAMES}")
  b.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return b


def num_examples(data_config: ml_collections.ConfigDict, split: str) -> int:
  splits = builder(data_config).info.splits
  if split not in splits:
    raise KeyError(f"{data_config.name} has no split {split!r} (has {list(splits)})")
  return splits[split].num_examples


def num_train_examples(config: ml_collections.ConfigDict) -> int:
  """Training pairs used: the split's first data.max_dataset_size (-1: all), as the official."""
  n = num_examples(config.data, "train")
  limit = config.data.get("max_dataset_size", -1)
  return n if limit < 0 else min(n, limit)


def steps_per_epoch(config: ml_collections.ConfigDict) -> int:
  """Full global batches per epoch (the remainder is dropped), at least 1."""
  return max(1, num_train_examples(config) // config.batch_size)


@dataclasses.dataclass(frozen=True)
class _Loader:
  """Reads example `index` of a split and turns it into network-ready arrays."""
  source: Sequence[dict[str, Any]]
  formats: tuple[tuple[np.dtype, int], tuple[np.dtype, int]]  # (dtype, channels) of A, B
  spec: transforms.Spec
  swap: bool  # BtoA: B is the input.
  channels: tuple[int, int]  # (input_nc, output_nc)

  def __call__(self, index: int, rng: np.random.Generator | None) -> dict[str, Any]:
    record = self.source[index]
    a, b = (image_io.decode_png(record[k], dtype, c)
            for k, (dtype, c) in zip(("image_a", "image_b"), self.formats))
    x, y = (b, a) if self.swap else (a, b)
    x, y = image_io.to_channels(x, self.channels[0]), image_io.to_channels(y, self.channels[1])
    params = transforms.draw(rng, x.shape[0], x.shape[1], self.spec)
    (x, y), shape = transforms.preprocess([x, y], params, self.spec)
    name = record["name"]
    return {"input": x, "target": y, "shape": np.array(shape, np.int32),
            "size": np.asarray(record["size"], np.int32),
            "name": name.decode() if isinstance(name, bytes) else str(name)}


def spec(config: ml_collections.ConfigDict) -> transforms.Spec:
  """The training geometry."""
  d = config.data
  return transforms.Spec(preprocess=d.preprocess, load_size=d.load_size,
                         crop_size=d.crop_size, flip=d.flip,
                         multiple=models.size_multiple(config.model), size_mode=d.size_mode)


def test_spec(config: ml_collections.ConfigDict) -> transforms.Spec:
  """The test-time geometry: data.test_load_size (-1: crop_size, the official test's), no flip."""
  load = config.data.get("test_load_size", -1)
  return transforms.test_spec(spec(config), None if load < 0 else load)


def _loader(config: ml_collections.ConfigDict, split: str,
            geometry: transforms.Spec) -> _Loader:
  if config.data.direction not in DIRECTIONS:
    raise ValueError(f"data.direction must be one of {DIRECTIONS}, got "
                     f"{config.data.direction!r}")
  b = builder(config.data)
  if split not in b.info.splits:
    raise KeyError(f"{config.data.name} has no split {split!r} (has {list(b.info.splits)})")
  skip = tfds.decode.SkipDecoding()
  source = b.as_data_source(split=split, decoders={"image_a": skip, "image_b": skip})
  feats = b.info.features
  formats = tuple((np.dtype(feats[k].np_dtype), feats[k].shape[-1])
                  for k in ("image_a", "image_b"))
  return _Loader(source=source, formats=formats, spec=geometry,
                 swap=config.data.direction == "BtoA",
                 channels=(config.model.input_nc, config.model.output_nc))


def _rng(*key: int) -> np.random.Generator:
  return np.random.default_rng([k % 2**32 for k in key])


@dataclasses.dataclass(frozen=True)
class _Plan:
  """Which example fills slot k of this host's share of the global batch at a step."""
  seed: int
  num_examples: int
  serial: bool  # data.serial_batches: every epoch in stored order, as the official.
  global_batch: int
  steps_per_epoch: int
  process_index: int
  per_host: int

  def example(self, step: int, k: int, orders: dict[int, np.ndarray]) -> tuple[int, int]:
    """(epoch, index); `orders` caches epoch permutations for the caller."""
    epoch, position = divmod(step, self.steps_per_epoch)
    order = orders.get(epoch)
    if order is None:
      order = (np.arange(self.num_examples) if self.serial else
               _rng(_ORDER_STREAM, self.seed, epoch).permutation(self.num_examples))
      orders[epoch] = order
      for old in [e for e in list(orders) if e < epoch - 1]:  # Steps only go forward.
        orders.pop(old, None)
    slot = position * self.global_batch + self.process_index * self.per_host + k
    return epoch, int(order[slot % self.num_examples])


def _plan(config, process_index: int, process_count: int) -> _Plan:
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in [0, {process_count})")
  if config.batch_size % process_count:
    raise ValueError(f"batch_size {config.batch_size} is not divisible by the "
                     f"{process_count} processes")
  return _Plan(seed=config.seed, num_examples=num_train_examples(config),
               serial=bool(config.data.get("serial_batches", False)),
               global_batch=config.batch_size, steps_per_epoch=steps_per_epoch(config),
               process_index=process_index, per_host=config.batch_size // process_count)


def _stack(examples: list[dict[str, Any]], what: str) -> Batch:
  for key in ("input", "target"):
    shapes = sorted({e[key].shape for e in examples})
    if len(shapes) > 1:
      raise ValueError(
          f"{what}: the {key} images of one batch have different sizes {shapes}; with "
          "data.preprocess none, crop or scale_width and images of different sizes, use "
          "batch_size 1 (per host) or a cropping mode")
  return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def _thread_map(fn: Callable[[Any], Any], items: Iterator[Any], workers: int,
                ahead: int) -> Iterator[Any]:
  """fn over items on a thread pool, in order, keeping up to `ahead` results in flight."""
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    pending = collections.deque()
    try:
      for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) > ahead:
          yield pending.popleft().result()
      while pending:
        yield pending.popleft().result()
    finally:
      for f in pending:
        f.cancel()


def _workers(data_config) -> int:
  return data_config.num_workers or min(8, os.cpu_count() or 1)


def train_iterator(config: ml_collections.ConfigDict, *, start_step: int = 0,
                   process_index: int = 0, process_count: int = 1) -> Iterator[Batch]:
  """This host's share of the global batch for steps start_step, start_step + 1, ...

  {"input": (B/P, crop, crop, input_nc), "target": (..., output_nc)} float32 in [-1, 1].
  Infinite; identical whether started at 0 or resumed at start_step.
  """
  if config.data.reader not in READERS:
    raise ValueError(f"data.reader must be one of {READERS}, got {config.data.reader!r}")
  plan = _plan(config, process_index, process_count)
  load = _loader(config, "train", spec(config))

  def example(j: int) -> dict[str, np.ndarray]:
    step, k = divmod(j, plan.per_host)
    epoch, index = plan.example(step, k, orders)
    ex = load(index, _rng(_AUGMENT_STREAM, config.seed, epoch, index))
    return {"input": ex["input"], "target": ex["target"]}

  orders: dict[int, np.ndarray] = {}
  first = start_step * plan.per_host
  if config.data.reader == "numpy":
    examples = _thread_map(example, itertools.count(first), _workers(config.data),
                           ahead=4 * plan.per_host + 8)
    return _batches(examples, plan.per_host)
  return _tf_train(example, first, plan.per_host, config)


def _batches(examples: Iterator[dict[str, np.ndarray]], size: int) -> Iterator[Batch]:
  while True:
    yield _stack([next(examples) for _ in range(size)], "train_iterator")


def _tf_train(example: Callable[[int], dict[str, np.ndarray]], first: int, per_host: int,
              config: ml_collections.ConfigDict) -> Iterator[Batch]:
  """tf.data over example positions; the per-example work is the shared numpy code."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  def fn(j):
    ex = example(int(j))
    return ex["input"], ex["target"]

  def mapped(j):
    x, y = tf.numpy_function(fn, [j], (tf.float32, tf.float32), stateful=False)
    x.set_shape([None, None, config.model.input_nc])
    y.set_shape([None, None, config.model.output_nc])
    return {"input": x, "target": y}

  ds = tf.data.Dataset.counter(start=first)
  ds = ds.map(mapped, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(per_host, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
  options = tf.data.Options()
  if config.data.num_workers:
    options.threading.private_threadpool_size = config.data.num_workers
  return iter(tfds.as_numpy(ds.with_options(options)))


def eval_iterator(config: ml_collections.ConfigDict, split: str, batch_size: int, *,
                  process_index: int = 0, process_count: int = 1,
                  limit: int | None = None) -> Iterator[Batch]:
  """One pass over `split` (its first `limit` examples) in stored (file name) order, with
  the test-time geometry (`test_spec`).

  `batch_size` is global, as in training; this host gets batch_size // process_count of
  each batch. Every batch has the full size: the last one is padded with copies of a real
  example and "mask" (bool) is False for them, so all hosts see the same shapes. Also:
  "name" (file names), "size" (original (H, W)), "shape" ((H, W) before padding or
  resizing to a multiple of models.size_multiple: `transforms.restore` crops back to it).
  Examples of different sizes in one batch are zero-padded to the largest.
  """
  if batch_size % process_count:
    raise ValueError(f"batch_size {batch_size} not divisible by {process_count} processes")
  load = _loader(config, split, test_spec(config))
  n = len(load.source) if limit is None else min(limit, len(load.source))
  if n == 0:
    return
  per_host = batch_size // process_count
  num_batches = -(-n // batch_size)
  slots = (b * batch_size + process_index * per_host + k
           for b in range(num_batches) for k in range(per_host))

  def example(slot: int) -> dict[str, Any]:
    ex = load(min(slot, n - 1), None)
    ex["mask"] = np.bool_(slot < n)
    return ex

  examples = _thread_map(example, slots, _workers(config.data), ahead=2 * per_host + 4)
  for _ in range(num_batches):
    yield _stack_padded([next(examples) for _ in range(per_host)])


def _stack_padded(examples: list[dict[str, Any]]) -> Batch:
  h = max(e["input"].shape[0] for e in examples)
  w = max(e["input"].shape[1] for e in examples)
  pad = lambda a: np.pad(a, ((0, h - a.shape[0]), (0, w - a.shape[1]), (0, 0)))
  batch = {k: np.stack([pad(e[k]) for e in examples]) for k in ("input", "target")}
  for k in ("shape", "size", "mask"):
    batch[k] = np.stack([e[k] for e in examples])
  batch["name"] = np.array([e["name"] for e in examples], dtype=object)
  return batch


def sample_pairs(config: ml_collections.ConfigDict, num: int) -> Batch:
  """The first `num` pairs of data.eval_split (else test, else train), as eval sees them."""
  splits = builder(config.data).info.splits
  split = next(s for s in (config.data.eval_split, "test", "train") if s in splits)
  num = min(num, splits[split].num_examples)
  batch = next(eval_iterator(config, split, num))
  return {k: v for k, v in batch.items() if k != "mask"}
