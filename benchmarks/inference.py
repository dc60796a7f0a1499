"""Generator inference throughput: the jitted generator, ONNX Runtime on the exported graph and
the PyTorch reference, side by side (unet_256 at 256x256, float32, random data and weights).

Modes: `train` is the official test default (no --eval): BatchNorm uses the batch's statistics
and dropout stays on; `eval` uses the running statistics and no dropout. ONNX Runtime runs the
graphs `pix2pix_jax.serving.export --format onnx` writes: `eval`, and `test` (each image's
own statistics, no dropout noise: the official test mode at batch 1 without the noise).

  python benchmarks/inference.py jax --batch_size 1,16 --mode train,eval
  python benchmarks/inference.py onnx --batch_size 1,16 --mode eval,test
  python benchmarks/inference.py compare --torch_python /work/torchvenv/bin/python \\
      --reference ../shared/bench/torch_pix2pix_reference.py --rounds 2 --out results.jsonl

`compare` runs the sides in subprocesses, alternated round by round (JAX, PyTorch, then
again; ONNX Runtime after them in the first --onnx_rounds rounds), all under tcmalloc
(LD_PRELOAD, when installed) and JAX with the Makefile's CPU_XLA_FLAGS (oneDNN); the
reference with --threads 2, ONNX Runtime with 2 intra-op threads. The graphs are exported to
--onnx_dir first (or found there), outside the timed rounds. One JSON line per run (the
reference's own lines have "what": "infer"), then a summary with every round's ratio to the
reference and the load average.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"
# The Makefile's CPU_XLA_FLAGS: XLA:CPU's oneDNN convolutions and matmuls.
CPU_XLA_FLAGS = "--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_custom_call=true"
THREADS = 2
# Timed calls and warm-up calls per batch size (the third call of a process can stall once on
# first-touch page faults: benchmarks/RESULTS.md, "The batch-16 stall").
STEPS = {1: (10, 3), 16: (5, 3)}
# ONNX Runtime is several times slower here (its ConvTranspose above all): fewer calls.
ONNX_STEPS = {1: (5, 2), 16: (3, 1)}


def paper_config(args: argparse.Namespace):
  """unet_256, ngf 64, BatchNorm, dropout: the official default generator; --smoke shrinks
  it to 5 levels of 8 filters at 32x32 for a quick check."""
  from pix2pix_jax.config import base  # pylint: disable=import-outside-toplevel
  c = base.base_config()
  c.data.name = "synthetic"
  c.data.crop_size = args.size
  if args.smoke:
    c.model.num_downs, c.model.ngf = 5, 8
  return c


def _steps(args: argparse.Namespace, batch_size: int) -> tuple[int, int]:
  steps, warmup = (ONNX_STEPS if args.side == "onnx" else STEPS).get(batch_size, (5, 3))
  return args.steps or steps, args.warmup if args.warmup is not None else warmup


def jax_call(args: argparse.Namespace, mode: str, batch_size: int):
  """The compiled generator on its random batch, as a no-argument call, and its compile time
  (in seconds). Used here and by paired.py."""
  compiled, operands, compile_s = jax_program(args, mode, batch_size)
  return (lambda: compiled(*operands)), compile_s


def jax_program(args: argparse.Namespace, mode: str, batch_size: int):
  """The compiled generator, its operands (variables, random batch, dropout key) and its
  compile time in seconds (profile_step.py --generator reads the compiled program's HLO).
  The variables are prepared for the batch (nn/generate.prepare_kernels, as the serving
  paths do once per loaded model) unless args.unprepared."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from pix2pix_jax.nn import conv  # pylint: disable=import-outside-toplevel
  from pix2pix_jax.nn import generate  # pylint: disable=import-outside-toplevel
  from pix2pix_jax.nn import models  # pylint: disable=import-outside-toplevel

  c = paper_config(args)
  generator = models.make_generator(c.model, conv.Parts.with_impl(args.impl))
  x = jax.random.uniform(jax.random.key(1), (batch_size, args.size, args.size, 3),
                         jnp.float32, -1.0, 1.0)
  variables = jax.jit(lambda: generator.init(jax.random.key(0), x[:1], train=False))()
  if not getattr(args, "unprepared", False):
    variables = generate.prepare_kernels(generator, variables, x.shape)
  train = mode == "train"

  def translate(variables, x, key):
    if train:  # batch statistics (the running ones are left as they are), dropout on
      y, _ = generator.apply(variables, x, train=True, mutable=["batch_stats"],
                             rngs={"dropout": key})
      return y
    return generator.apply(variables, x, train=False)

  key = jax.random.key(2)
  t0 = time.perf_counter()
  compiled = jax.jit(translate).lower(variables, x, key).compile()
  return compiled, (variables, x, key), time.perf_counter() - t0


def run_jax(args: argparse.Namespace, mode: str, batch_size: int) -> dict:
  import common  # pylint: disable=import-outside-toplevel
  call, compile_s = jax_call(args, mode, batch_size)
  steps, warmup = _steps(args, batch_size)
  load_before = common.loadavg()
  times, others, cpus = common.time_calls(call, steps, warmup)
  record = {"benchmark": "inference", "side": "jax", "mode": mode, "batch_size": batch_size,
            "image_size": args.size, "impl": args.impl, "prepared": not args.unprepared,
            "steps": steps, "warmup": warmup,
            "compile_s": compile_s, "loadavg_before": load_before,
            "loadavg_after": common.loadavg()}
  record.update(common.timing_summary(times, others, batch_size, cpus))
  record.update(common.peak_memory())
  record["machine"] = common.machine()
  return record


def onnx_path(args: argparse.Namespace, mode: str) -> str:
  """The exported graph of a randomly initialised paper generator, written once per folder."""
  size = args.size
  name = f"generator_{mode}_{size}{'_smoke' if args.smoke else ''}.onnx"
  path = os.path.join(args.onnx_dir, name)
  if os.path.exists(path):
    return path
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from pix2pix_jax.serving import export  # pylint: disable=import-outside-toplevel

  c = paper_config(args)
  generator = export.export_generator(c)
  x = jnp.zeros((1, size, size, 3), jnp.float32)
  variables = jax.jit(lambda: generator.init(jax.random.key(0), x, train=False))()
  export.export_onnx(c, variables, path + ".tmp", test_mode=mode == "test", size=size)
  os.replace(path + ".tmp", path)
  return path


def run_onnx(args: argparse.Namespace, mode: str, batch_size: int) -> dict:
  import common  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import onnxruntime as ort  # pylint: disable=import-outside-toplevel

  t0 = time.perf_counter()
  path = onnx_path(args, mode)
  export_s = time.perf_counter() - t0
  options = ort.SessionOptions()
  options.intra_op_num_threads = THREADS
  options.inter_op_num_threads = 1
  t0 = time.perf_counter()
  session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
  session_s = time.perf_counter() - t0
  x = np.random.default_rng(1).uniform(-1, 1, (batch_size, args.size, args.size, 3))
  feed = {"images": x.astype(np.float32)}
  steps, warmup = _steps(args, batch_size)
  load_before = common.loadavg()
  times, others, cpus = common.time_calls(lambda: session.run(["outputs"], feed)[0], steps,
                                          warmup)
  record = {"benchmark": "inference", "side": "onnxruntime", "mode": mode,
            "batch_size": batch_size, "image_size": args.size, "steps": steps,
            "warmup": warmup, "export_s": export_s, "session_s": session_s,
            "onnxruntime": ort.__version__, "loadavg_before": load_before,
            "loadavg_after": common.loadavg()}
  record.update(common.timing_summary(times, others, batch_size, cpus))
  record.update(common.peak_memory())
  record["machine"] = common.machine()
  return record


def run_side(args: argparse.Namespace) -> None:
  import common  # pylint: disable=import-outside-toplevel
  run = run_jax if args.side == "jax" else run_onnx
  records = []
  for mode in args.mode.split(","):
    for bs in [int(b) for b in args.batch_size.split(",")]:
      record = run(args, mode, bs)
      common.emit(record, args.out)
      records.append(record)
  common.print_table(records, [
      ("side", "side", "{}"), ("mode", "mode", "{}"), ("batch", "batch_size", "{}"),
      ("img/s", "images_per_s", "{:.2f}"), ("s/batch", "step_time_median_s", "{:.4f}"),
      ("spread", "step_time_spread", "{:.1%}"),
      ("others CPU max", "others_cpu_frac_max", "{:.2f}")])


def worker_environment() -> dict[str, str]:
  """The environment each side runs in: one allocator and the Makefile's XLA flags (paired.py
  uses it too)."""
  env = dict(os.environ)
  if os.path.exists(TCMALLOC):
    env["LD_PRELOAD"] = TCMALLOC
  env["XLA_FLAGS"] = CPU_XLA_FLAGS
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  return env


def _json_lines(text: str) -> list[dict]:
  return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _run(command: list[str], env: dict[str, str]) -> list[dict]:
  result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600,
                          check=False)
  if result.returncode:
    raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
  return _json_lines(result.stdout)


def compare(args: argparse.Namespace) -> None:
  """Rounds of JAX, PyTorch (and ONNX Runtime), each at every batch size and mode."""
  env = worker_environment()
  sizes = args.batch_size
  me = [sys.executable, os.path.abspath(__file__)]
  # The graphs are exported before the first round: conversion time is not inference.
  os.makedirs(args.onnx_dir, exist_ok=True)
  if not all(os.path.exists(os.path.join(args.onnx_dir, f"generator_{m}_{args.size}.onnx"))
             for m in ("eval", "test")):
    _run(me + ["onnx", "--batch_size", "1", "--mode", "eval,test", "--steps", "1",
               "--warmup", "0", "--onnx_dir", args.onnx_dir], env)
  records = []
  started = time.time()
  for round_index in range(args.rounds):
    batch = [dict(r, round=round_index) for r in _run(
        me + ["jax", "--batch_size", sizes, "--mode", "train,eval"], env)]
    for mode in ("train", "eval"):
      for bs in [int(b) for b in sizes.split(",")]:
        steps, warmup = STEPS.get(bs, (5, 3))
        batch += [dict(r, side="pytorch", round=round_index)
                  for r in _run([args.torch_python, args.reference, "infer", "--bs", str(bs),
                                 "--mode", mode, "--iters", str(steps), "--warmup",
                                 str(warmup), "--threads", str(THREADS)], env)]
    if round_index < args.onnx_rounds:
      batch += [dict(r, round=round_index) for r in _run(
          me + ["onnx", "--batch_size", sizes, "--mode", "eval,test", "--onnx_dir",
                args.onnx_dir], env)]
    records += batch
    if args.out:
      with open(args.out, "a") as f:
        for r in batch:
          f.write(json.dumps(r, sort_keys=True) + "\n")
  summarize(records, time.time() - started)


def _bs(record: dict) -> int:
  return record.get("batch_size", record.get("bs"))


def summarize(records: list[dict], seconds: float) -> None:
  """Per mode and batch size: each round's images/s and the ratio to the same round's
  reference, then the median over rounds."""
  ref = {(r["round"], r["mode"], _bs(r)): r for r in records if r["side"] == "pytorch"}
  print(f"{len(records)} runs in {seconds / 60:.1f} min")
  print("side        mode   batch  img/s per round            / PyTorch per round   median"
        "  others CPU max  loadavg (1 min) before")
  for side, modes in (("pytorch", ("train", "eval")), ("jax", ("train", "eval")),
                      ("onnxruntime", ("eval", "test"))):
    for mode in modes:
      for bs in sorted({_bs(r) for r in records}):
        runs = sorted((r for r in records if r["side"] == side and r["mode"] == mode
                       and _bs(r) == bs), key=lambda r: r["round"])
        if not runs:
          continue
        # ONNX Runtime's test graph is compared with the reference's train mode (its
        # per-image statistics are the batch's at batch 1; neither has noise at batch 16).
        ref_mode = "train" if mode == "test" else mode
        ratios = [r["images_per_s"] / ref[(r["round"], ref_mode, bs)]["images_per_s"]
                  for r in runs if (r["round"], ref_mode, bs) in ref]
        others = max((max(r.get("others_cpu_frac") or [0.0]) for r in runs), default=0.0)
        loads = [(r.get("loadavg_before") or r.get("loadavg_at_start") or [None])[0]
                 for r in runs]
        print(f"{side:11s} {mode:5s} {bs:5d}  "
              f"{' '.join(f"{r['images_per_s']:6.2f}" for r in runs):25s}  "
              f"{' '.join(f'{q:5.2f}' for q in ratios):20s}  "
              f"{statistics.median(ratios) if ratios else float('nan'):5.2f}"
              f"  {others:14.2f}  {' '.join(str(l) for l in loads)}")


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("side", nargs="?", default="jax", choices=("jax", "onnx", "compare"))
  p.add_argument("--batch_size", default="1,16", help="comma list")
  p.add_argument("--mode", default=None,
                 help="comma list: jax train,eval (default both); onnx eval,test")
  p.add_argument("--steps", type=int, default=None, help="timed calls (default by batch)")
  p.add_argument("--warmup", type=int, default=None)
  p.add_argument("--size", type=int, default=256)
  p.add_argument("--impl", default="auto",
                 help="jax: the convolutions (conv.Parts.with_impl: auto, plain, kind=form,...)")
  p.add_argument("--unprepared", action="store_true",
                 help="jax: kernels not prepared (each call does its kernel transforms)")
  p.add_argument("--smoke", action="store_true", help="tiny generator at 32x32")
  p.add_argument("--onnx_dir", default=os.path.join(tempfile.gettempdir(), "p2p_onnx_bench"))
  p.add_argument("--torch_python", default="/work/torchvenv/bin/python")
  p.add_argument("--reference", default=os.path.join(
      ROOT, "..", "shared", "bench", "torch_pix2pix_reference.py"))
  p.add_argument("--rounds", type=int, default=2)
  p.add_argument("--onnx_rounds", type=int, default=1, help="compare: rounds with ONNX Runtime")
  p.add_argument("--out", default=None, help="also append the JSON lines to this file")
  args = p.parse_args()
  if args.smoke:
    args.size = 32
  if args.side == "compare":
    compare(args)
    return
  args.mode = args.mode or ("train,eval" if args.side == "jax" else "eval,test")
  os.makedirs(args.onnx_dir, exist_ok=True)
  run_side(args)


if __name__ == "__main__":
  main()
