"""A/B of train-step variants in one process, their steps alternated.

Between two processes the same step on this VM differs by up to 4 % (placement, memory
layout, neighbours), more than most single optimisations gain; within one process, with the
variants' steps interleaved, 1 % differences reproduce. Each variant is the paper's
configuration (as `train_step.py` builds it) with config overrides and, under the key `impl`,
forced convolution forms (nn/conv.py; kinds separated by "/"), built from this tree or from
another checkout of the project (`name@TREE:...`, e.g. a `git worktree` of the commit before a
change: its package is imported afresh for that variant, which works because the package
keeps no module-level state; checkouts from before the subpackage layout work too). All are
compiled first, then called round-robin on the same batch. Prints one JSON line per variant
and a table of medians relative to the first.

  python benchmarks/ab_step.py --batch_size 1 --rounds 30 \\
      --variant auto: --variant gemm:impl=up=gemm/down=gemm
  git worktree add /tmp/base HEAD~1
  python benchmarks/ab_step.py --variant before@/tmp/base: --variant after:
"""

import argparse
import ast
import importlib
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import numpy as np  # noqa: E402

import common  # noqa: E402
# This tree's, for every variant (older checkouts may not have it).
from pix2pix_jax.config.base import with_overrides  # noqa: E402

# Modules a variant imports from its own tree.
_TREE_MODULES = ("pix2pix_jax", "configs", "train_step", "common")


def parse_variant(text: str) -> tuple[str, str, dict[str, object]]:
  """'name[@tree]:key=value,key=value' -> (name, tree, {dotted key: value}); values are
  Python literals where they parse as one (numbers, booleans), strings otherwise."""
  head, _, spec = text.partition(":")
  name, _, tree = head.partition("@")
  overrides = {}
  for item in filter(None, spec.split(",")):
    key, _, value = item.partition("=")
    try:
      overrides[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      overrides[key] = value
  return name, os.path.abspath(tree or ROOT), overrides


def import_from(tree: str):
  """(train_step benchmark module, sharding module, fresh(config, mesh, steps, impl)) of
  `tree`, freshly imported: earlier variants' modules are dropped from sys.modules first
  (their compiled steps stay valid)."""
  for mod in list(sys.modules):
    if mod.split(".")[0] in _TREE_MODULES:
      del sys.modules[mod]
  sys.path[:0] = [os.path.join(tree, "benchmarks"), tree]
  try:
    bench = importlib.import_module("train_step")
    try:
      sharding = importlib.import_module("pix2pix_jax.train.sharding")
      setup = importlib.import_module("pix2pix_jax.train.setup")
      conv = importlib.import_module("pix2pix_jax.nn.conv")
      fresh = lambda c, mesh, steps, impl: setup.fresh(c, mesh, steps,
                                                       conv.Parts.with_impl(impl))
    except ModuleNotFoundError:  # A checkout from before the subpackages: impl "auto" only.
      sharding = importlib.import_module("pix2pix_jax.sharding")
      step_lib = importlib.import_module("pix2pix_jax.train_step")
      fresh = lambda c, mesh, steps, impl: step_lib.fresh(c, mesh, steps)
    return bench, sharding, fresh
  finally:
    del sys.path[:2]


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--batch_size", type=int, default=1)
  p.add_argument("--dtype", default="float32")
  p.add_argument("--size", type=int, default=256)
  p.add_argument("--rounds", type=int, default=20, help="timed steps per variant")
  p.add_argument("--warmup", type=int, default=3)  # see train_step.py's --warmup
  p.add_argument("--variant", action="append", required=True,
                 help="name:key=value,... (config overrides; the first is the baseline)")
  p.add_argument("--smoke", action="store_true")
  p.add_argument("--out", help="append the JSON lines to this file")
  args = p.parse_args()
  args.impl = "auto"
  args.upsample, args.down_impl = "auto", "auto"  # What older trees' paper_config reads.

  rng = np.random.default_rng(0)
  runs = []
  for text in args.variant:
    name, tree, overrides = parse_variant(text)
    train_step_bench, sharding, fresh = import_from(tree)
    mesh = sharding.make_mesh()
    config_overrides = {k: v for k, v in overrides.items() if k != "impl"}
    c = with_overrides(
        train_step_bench.paper_config(args, args.batch_size, args.dtype), config_overrides)
    impl = str(overrides.get("impl", "auto")).replace("/", ",")
    state, step, _, _ = fresh(c, mesh, 1000, impl)
    shape = (args.batch_size, c.data.crop_size, c.data.crop_size, c.model.input_nc)
    batch = sharding.global_batch(
        {k: rng.uniform(-1, 1, shape).astype(np.float32) for k in ("input", "target")}, mesh)
    compiled = step.lower(state, batch).compile()
    for _ in range(args.warmup):
      state, _ = compiled(state, batch)
    jax.block_until_ready(state)
    package = os.path.dirname(sys.modules["pix2pix_jax"].__file__)
    runs.append({"name": name, "package": package, "overrides": overrides, "step": compiled,
                 "state": state, "batch": batch, "times": []})

  watch = common.OtherCpu()
  watch.start()
  t_all = time.perf_counter()
  for _ in range(args.rounds):
    for run in runs:
      t = time.perf_counter()
      run["state"], _ = run["step"](run["state"], run["batch"])
      jax.block_until_ready(run["state"])
      run["times"].append(time.perf_counter() - t)
  others = watch.fraction(time.perf_counter() - t_all)

  base = statistics.median(runs[0]["times"])
  print(f"batch {args.batch_size}, {args.dtype}, {args.rounds} alternated rounds, "
        f"others_cpu_frac {others}, loadavg {common.loadavg()}")
  for run in runs:
    med = statistics.median(run["times"])
    record = {"benchmark": "ab_step", "variant": run["name"], "package": run["package"],
              "overrides": run["overrides"],
              "batch_size": args.batch_size, "dtype": args.dtype, "rounds": args.rounds,
              "step_time_median_s": med, "images_per_s": args.batch_size / med,
              "relative_to_first": med / base, "samples_s": run["times"],
              "others_cpu_frac": others, "machine": common.machine()}
    common.emit(record, args.out)
    q1, q3 = np.percentile(run["times"], [25, 75])
    print(f"  {run['name']:24s} median {med * 1e3:9.1f} ms  p25-p75 {q1 * 1e3:.1f}-"
          f"{q3 * 1e3:.1f}  x{med / base:.3f}  {args.batch_size / med:.3f} img/s")


if __name__ == "__main__":
  main()
