"""Training throughput of the jitted pix2pix step (the paper's networks, random data).

For each (batch size, dtype) this runs one child process (clean peak-memory and compile
figures), which builds the state, lowers and compiles the step once (timed), and times
`--steps` calls after `--warmup`. Each prints one JSON line; a table follows at the end.
FLOPs come from XLA's cost analysis of the lowered step and are printed beside the
PyTorch reference's count (86.94 GFLOP per image at 256x256). Two fractions of the peak
follow: `fraction_of_peak` by the arithmetic the step executes (how busy the chip is;
Winograd's layer executes less) and `reference_fraction_of_peak` by the model's 86.94
GFLOP (model-FLOPs utilisation: what the throughput is worth against the direct algorithm).
The peak is this machine's, measured in the same run (common.peak: the best float32 matrix
product through XLA), since machines of one kind differ in CPU model; the nominal FMA-bound
figure is printed beside it where the clock can be read.

  python benchmarks/train_step.py --batch_size 16 --steps 10
  python benchmarks/train_step.py --batch_size 1,4,16 --dtype float32,bfloat16 --out r.jsonl
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402  (after the path set-up above)


def paper_config(args: argparse.Namespace, batch_size: int, dtype: str):
  """unet_256 + 70x70 PatchGAN at args.size; --smoke shrinks everything for a quick check."""
  import configs.default as default_config  # pylint: disable=import-outside-toplevel
  c = default_config.base_config()
  c.data.name = "synthetic"
  c.data.crop_size = args.size
  c.batch_size = batch_size
  c.model.dtype = dtype
  if args.smoke:
    c.data.crop_size = 32
    c.model.num_downs = 5
    c.model.ngf = c.model.ndf = 8
  return c


def parts_for(args: argparse.Namespace):
  from pix2pix_jax.nn import conv  # pylint: disable=import-outside-toplevel
  return conv.Parts.with_impl(args.impl)


def run_one(args: argparse.Namespace, batch_size: int, dtype: str) -> dict:
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from pix2pix_jax.train import setup  # pylint: disable=import-outside-toplevel
  from pix2pix_jax.train import sharding  # pylint: disable=import-outside-toplevel

  c = paper_config(args, batch_size, dtype)
  mesh = sharding.make_mesh()
  state, step, _, _ = setup.fresh(c, mesh, 1000, parts_for(args))
  rng = np.random.default_rng(0)
  shape = (batch_size, c.data.crop_size, c.data.crop_size, c.model.input_nc)
  batch = sharding.global_batch(
      {k: rng.uniform(-1, 1, shape).astype(np.float32) for k in ("input", "target")}, mesh)
  jax.block_until_ready((state, batch))

  t0 = time.perf_counter()
  lowered = step.lower(state, batch)
  t1 = time.perf_counter()
  compiled = lowered.compile()
  t2 = time.perf_counter()
  stats = common.compiled_stats(lowered, compiled)

  holder = {"state": state}

  def one_step():
    holder["state"], metrics = compiled(holder["state"], batch)
    return holder["state"], metrics

  load_before = common.loadavg()
  times, others, cpus = common.time_calls(one_step, args.steps, args.warmup)
  _, metrics = one_step()
  record = {"benchmark": "train_step", "batch_size": batch_size, "dtype": dtype,
            "image_size": c.data.crop_size, "impl": args.impl, "smoke": args.smoke, "steps": args.steps, "warmup": args.warmup,
            "lower_s": t1 - t0, "compile_s": t2 - t0, "xla_compile_s": t2 - t1,
            "finite": float(metrics["finite"]), "loadavg_before": load_before,
            "loadavg_after": common.loadavg()}
  record.update(common.timing_summary(times, others, batch_size, cpus))
  record.update(stats)
  flops = stats["hlo_flops"]
  peak = args.peak_gflops
  if flops:
    record["hlo_gflop_per_image"] = flops / batch_size / 1e9
    record["gflops_per_s"] = flops / record["step_time_median_s"] / 1e9
    record["fraction_of_peak"] = record["gflops_per_s"] / peak if peak else None
  if not args.smoke and c.data.crop_size == 256:
    record["reference_gflop_per_image"] = common.REFERENCE_TRAIN_GFLOP_PER_IMAGE
    ref_gflops = common.REFERENCE_TRAIN_GFLOP_PER_IMAGE * record["images_per_s"]
    record["reference_gflops_per_s"] = ref_gflops
    record["reference_fraction_of_peak"] = ref_gflops / peak if peak else None
  record["peak_gflops"] = peak
  record.update(common.nominal_cpu_peak_gflops() if jax.devices()[0].platform == "cpu" else {})
  record.update(common.peak_memory())
  record["machine"] = common.machine()
  return record


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--batch_size", default=None,
                 help="comma list; default 1,4,16 on CPU, 1,16,64 on an accelerator")
  p.add_argument("--dtype", default="float32", help="comma list of float32, bfloat16")
  p.add_argument("--steps", type=int, default=10, help="timed steps per configuration")
  # Three: XLA:CPU's second temporary buffer (2.9 GiB at batch 16) is first touched by one
  # early call, usually the third: ~4.5 s of page faults once per process (RESULTS.md).
  p.add_argument("--warmup", type=int, default=3, help="untimed steps after compiling")
  p.add_argument("--size", type=int, default=256, help="image side")
  p.add_argument("--impl", default="auto",
                 help='convolutions: auto, plain, or CPU forms "down=gemm,up=s2d,stride1=direct"')
  p.add_argument("--peak_gflops", type=float, default=None,
                 help="peak for fraction_of_peak; CPU default: measured in this run")
  p.add_argument("--smoke", action="store_true", help="tiny networks at 32x32 (a quick check)")
  p.add_argument("--out", default=None, help="also append the JSON lines to this file")
  p.add_argument("--child", default=None, help=argparse.SUPPRESS)
  args = p.parse_args()

  if args.child:
    batch_size, dtype = args.child.split(":")
    print("RESULT " + json.dumps(run_one(args, int(batch_size), dtype)), flush=True)
    return
  peaks = common.peak(measure=args.peak_gflops is None)
  if args.peak_gflops is None:
    args.peak_gflops = peaks["peak_gflops"]
  print("peak: " + ", ".join(f"{k} {v}" for k, v in peaks.items()), flush=True)

  if args.batch_size is None:
    import jax  # pylint: disable=import-outside-toplevel
    accel = jax.devices()[0].platform != "cpu"
    args.batch_size = "1,16,64" if accel else "1,4,16"
  records = []
  for dtype in args.dtype.split(","):
    for bs in [int(b) for b in args.batch_size.split(",")]:
      cmd = [sys.executable, os.path.abspath(__file__), "--child", f"{bs}:{dtype}"]
      for flag in ("steps", "warmup", "size", "impl", "peak_gflops"):
        if getattr(args, flag) is not None:
          cmd += [f"--{flag}", str(getattr(args, flag))]
      if args.smoke:
        cmd.append("--smoke")
      proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
      lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
      if proc.returncode or not lines:
        record = {"benchmark": "train_step", "batch_size": bs, "dtype": dtype,
                  "error": f"child exited {proc.returncode}", "stdout_tail": proc.stdout[-2000:]}
      else:
        record = json.loads(lines[-1][len("RESULT "):])
      common.emit(record, args.out)
      records.append(record)
  common.print_table(records, [
      ("batch", "batch_size", "{}"), ("dtype", "dtype", "{}"),
      ("img/s", "images_per_s", "{:.2f}"), ("step s (median)", "step_time_median_s", "{:.3f}"),
      ("spread", "step_time_spread", "{:.1%}"), ("GFLOP/img HLO", "hlo_gflop_per_image", "{:.1f}"),
      ("GFLOP/img ref", "reference_gflop_per_image", "{:.1f}"),
      ("GFLOP/s", "gflops_per_s", "{:.0f}"), ("of peak", "fraction_of_peak", "{:.1%}"),
      ("of peak (ref FLOPs)", "reference_fraction_of_peak", "{:.1%}"),
      ("compile s", "compile_s", "{:.1f}"), ("RSS MiB", "host_peak_rss_mib", "{:.0f}"),
      ("CPU s/step", "cpu_s_per_step_median", "{:.2f}"),
      ("others CPU max", "others_cpu_frac_max", "{:.2f}")])


if __name__ == "__main__":
  main()
