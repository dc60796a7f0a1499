"""Jitted generator inference throughput (unet_256 at 256x256, random data and weights).

mode=train is the official test default (no --eval): BatchNorm uses the batch's statistics
and dropout stays on; mode=eval uses running statistics and no dropout. One JSON line per
(mode, batch size, dtype), then a table. Peak host RSS is this process's, cumulative.

  python benchmarks/inference.py --batch_size 1,16 --mode train,eval
"""

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import common  # noqa: E402
import train_step as train_step_bench  # noqa: E402
from pix2pix_jax.nn import models  # noqa: E402


def run_one(args: argparse.Namespace, mode: str, batch_size: int, dtype: str) -> dict:
  c = train_step_bench.paper_config(args, batch_size, dtype)
  generator = models.make_generator(c.model, train_step_bench.parts_for(args))
  size = c.data.crop_size
  x = jax.random.uniform(jax.random.key(1), (batch_size, size, size, c.model.input_nc),
                         jnp.float32, -1.0, 1.0)
  variables = jax.jit(lambda: generator.init(jax.random.key(0), x[:1], train=False))()
  train = mode == "train"

  def translate(variables, x, key):
    if train:  # batch statistics (the running ones are left as they are), dropout on
      y, _ = generator.apply(variables, x, train=True, mutable=["batch_stats"],
                             rngs={"dropout": key})
      return y
    return generator.apply(variables, x, train=False)

  key = jax.random.key(2)
  t0 = time.perf_counter()
  lowered = jax.jit(translate).lower(variables, x, key)
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t0
  stats = common.compiled_stats(lowered, compiled)
  load_before = common.loadavg()
  times, others, cpus = common.time_calls(lambda: compiled(variables, x, key), args.steps,
                                          args.warmup)
  record = {"benchmark": "inference", "mode": mode, "batch_size": batch_size, "dtype": dtype,
            "image_size": size, "impl": args.impl, "smoke": args.smoke,
            "steps": args.steps, "compile_s": compile_s, "loadavg_before": load_before,
            "loadavg_after": common.loadavg()}
  record.update(common.timing_summary(times, others, batch_size, cpus))
  record.update(stats)
  if stats["hlo_flops"]:
    record["gflops_per_s"] = stats["hlo_flops"] / record["step_time_median_s"] / 1e9
    record["hlo_gflop_per_image"] = stats["hlo_flops"] / batch_size / 1e9
  if not args.smoke and size == 256:
    record["reference_gflop_per_image"] = common.REFERENCE_G_FWD_GFLOP_PER_IMAGE
  record.update(common.peak_memory())
  record["machine"] = common.machine()
  return record


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--batch_size", default="1,16", help="comma list")
  p.add_argument("--mode", default="train,eval", help="comma list of train, eval")
  p.add_argument("--dtype", default="float32", help="comma list of float32, bfloat16")
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--size", type=int, default=256)
  p.add_argument("--impl", default="auto", help="convolutions (train_step.py --impl)")
  p.add_argument("--smoke", action="store_true", help="tiny generator at 32x32")
  p.add_argument("--out", default=None, help="also append the JSON lines to this file")
  args = p.parse_args()
  records = []
  for dtype in args.dtype.split(","):
    for mode in args.mode.split(","):
      for bs in [int(b) for b in args.batch_size.split(",")]:
        record = run_one(args, mode, bs, dtype)
        common.emit(record, args.out)
        records.append(record)
  common.print_table(records, [
      ("mode", "mode", "{}"), ("batch", "batch_size", "{}"), ("dtype", "dtype", "{}"),
      ("img/s", "images_per_s", "{:.2f}"), ("s/batch", "step_time_median_s", "{:.4f}"),
      ("spread", "step_time_spread", "{:.1%}"), ("GFLOP/s", "gflops_per_s", "{:.0f}"),
      ("compile s", "compile_s", "{:.1f}"), ("others CPU max", "others_cpu_frac_max", "{:.2f}")])


if __name__ == "__main__":
  main()
