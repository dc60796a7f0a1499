"""Generator inference, two sides interleaved call by call: robust to a host whose speed drifts.

`inference.py compare` alternates whole runs, minutes apart; on a shared host whose speed
moves by tens of percent between minutes, its per-round ratios say more about the host than
about the two implementations. Here each side is one warm process that waits on a pipe; the
driver asks them in turn for one timed call (A B, then B A, ...), so each pair of calls is a
second or two apart and sees the same host. The figure is the median over pairs of the ratio
of seconds per call (B / A: how many times faster A is), with its quartiles.

  python benchmarks/paired.py --a jax --b torch --mode train,eval --batch_size 1,16 \\
      --pairs 20 --torch_python /work/torchvenv/bin/python \\
      --reference ../shared/bench/torch_pix2pix_reference.py
  python benchmarks/paired.py --a jax --b jax:plain --smoke --pairs 4   # two JAX forms
  python benchmarks/paired.py --a jax --b jax_unprepared --mode eval --batch_size 16
  python benchmarks/paired.py --a jax --b jax --b_xla_flags=--xla_cpu_prefer_vector_width=512

Sides: `jax[:IMPL]` (inference.py's generator, conv.Parts.with_impl(IMPL), default auto, its
kernels prepared once as the serving paths do), `jax_unprepared[:IMPL]` (the same without the
preparation: every call transforms its kernels) and `torch` (the reference's own generator and
input, built by its functions, --threads 2). Both run under tcmalloc and JAX with the
Makefile's oneDNN flags, as in `compare`. The worker code imports only the standard library
before it knows its side: the torch side runs under another Python, without this project's
dependencies.
"""

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PREFIX = "PAIRED "  # Protocol lines on stdout; anything else a library prints is ignored.
WARMUP = 3


def _say(record: dict) -> None:
  print(PREFIX + json.dumps(record), flush=True)


def _torch_call(args: argparse.Namespace):
  """The reference's `infer` forward: its generator, init and random input, no autograd."""
  import torch  # pylint: disable=import-outside-toplevel,import-error
  spec = importlib.util.spec_from_file_location("torch_pix2pix_reference", args.reference)
  ref = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(ref)
  opts = argparse.Namespace(
      seed=0, num_downs=8 if not args.smoke else 5, ngf=64 if not args.smoke else 8, ndf=64,
      n_layers=3, norm="batch", no_dropout=False, channels_last=False, threads=2,
      device="cpu", size=args.size, no_cudnn_benchmark=False, tf32="default")
  # pylint: disable=protected-access
  device = ref._setup(opts)
  generator, _ = ref.build_models(opts, device)
  generator.train(args.mode == "train")
  gen = torch.Generator(device=device).manual_seed(1)
  x = ref._random_images(args.batch_size, args.size, device, gen, False)
  # pylint: enable=protected-access

  def call():
    with torch.no_grad():
      return generator(x)
  return call, lambda y: y


def _jax_call(args: argparse.Namespace):
  sys.path.insert(0, ROOT)
  sys.path.insert(0, HERE)
  import jax  # pylint: disable=import-outside-toplevel
  import inference  # pylint: disable=import-outside-toplevel
  call, _ = inference.jax_call(argparse.Namespace(smoke=args.smoke, size=args.size,
                                                  impl=args.impl, unprepared=args.unprepared),
                               args.mode, args.batch_size)
  return call, jax.block_until_ready


def worker(args: argparse.Namespace) -> None:
  """Builds, warms up, says ready, then times one call per `go` line until `quit`."""
  call, block = (_torch_call if args.worker == "torch" else _jax_call)(args)
  for _ in range(WARMUP):
    block(call())
  _say({"ready": True})
  for line in sys.stdin:
    if line.strip() != "go":
      break
    t0 = time.perf_counter()
    block(call())
    _say({"seconds": time.perf_counter() - t0})


class Side:
  """One warm worker process."""

  def __init__(self, spec: str, args: argparse.Namespace, mode: str, batch_size: int,
               xla_flags: str = ""):
    kind, _, impl = spec.partition(":")
    if kind not in ("jax", "jax_unprepared", "torch"):
      raise SystemExit(f"side {spec!r}: expected jax[:IMPL], jax_unprepared[:IMPL] or torch")
    self.name = spec
    python = args.torch_python if kind == "torch" else sys.executable
    command = [python, os.path.abspath(__file__), "--worker", kind.removesuffix("_unprepared"),
               "--mode", mode, "--batch_size", str(batch_size), "--size", str(args.size),
               "--impl", impl or "auto", "--reference", args.reference]
    command += ["--smoke"] if args.smoke else []
    command += ["--unprepared"] if kind == "jax_unprepared" else []
    env = _environment()
    env["XLA_FLAGS"] = f"{env['XLA_FLAGS']} {xla_flags}".strip()
    self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    text=True, env=env, cwd=ROOT)
    self._read()  # ready

  def _read(self) -> dict:
    for line in self.process.stdout:
      if line.startswith(PREFIX):
        return json.loads(line[len(PREFIX):])
    raise RuntimeError(f"{self.name}: the worker exited with {self.process.wait()}")

  def time_one(self) -> float:
    self.process.stdin.write("go\n")
    self.process.stdin.flush()
    return self._read()["seconds"]

  def close(self) -> None:
    if self.process.poll() is None:
      self.process.stdin.write("quit\n")
      self.process.stdin.close()
      self.process.wait(timeout=60)


def _environment() -> dict[str, str]:
  sys.path.insert(0, HERE)
  import inference  # pylint: disable=import-outside-toplevel
  return inference.worker_environment()


def paired(args: argparse.Namespace, mode: str, batch_size: int) -> dict:
  """`pairs` pairs of calls, the order swapped every pair; B/A per pair."""
  a = Side(args.a, args, mode, batch_size, args.a_xla_flags)
  try:
    b = Side(args.b, args, mode, batch_size, args.b_xla_flags)
    try:
      ta, tb = [], []
      for i in range(args.pairs):
        if i % 2:
          tb.append(b.time_one())
          ta.append(a.time_one())
        else:
          ta.append(a.time_one())
          tb.append(b.time_one())
    finally:
      b.close()
  finally:
    a.close()
  ratios = sorted(y / x for x, y in zip(ta, tb))
  q = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1 else ratios * 3
  return {"benchmark": "paired_inference", "a": args.a, "b": args.b, "mode": mode,
          "a_xla_flags": args.a_xla_flags, "b_xla_flags": args.b_xla_flags,
          "batch_size": batch_size, "image_size": args.size, "pairs": args.pairs,
          "a_images_per_s": batch_size / statistics.median(ta),
          "b_images_per_s": batch_size / statistics.median(tb),
          "ratio_median": statistics.median(ratios), "ratio_p25": q[0], "ratio_p75": q[2],
          "ratio_min": ratios[0], "ratio_max": ratios[-1],
          "a_seconds": [round(t, 7) for t in ta], "b_seconds": [round(t, 7) for t in tb],
          "loadavg": list(os.getloadavg())}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--a", default="jax")
  p.add_argument("--b", default="torch")
  p.add_argument("--mode", default="train,eval", help="comma list: train, eval")
  p.add_argument("--batch_size", default="1,16", help="comma list")
  p.add_argument("--pairs", type=int, default=20)
  p.add_argument("--a_xla_flags", default="", help="appended to side A's XLA_FLAGS")
  p.add_argument("--b_xla_flags", default="", help="appended to side B's XLA_FLAGS")
  p.add_argument("--size", type=int, default=256)
  p.add_argument("--smoke", action="store_true", help="tiny generator at 32x32")
  p.add_argument("--torch_python", default="/work/torchvenv/bin/python")
  p.add_argument("--reference", default=os.path.join(
      ROOT, "..", "shared", "bench", "torch_pix2pix_reference.py"))
  p.add_argument("--out", default=None, help="also append the JSON lines to this file")
  p.add_argument("--worker", choices=("jax", "torch"), default=None, help=argparse.SUPPRESS)
  p.add_argument("--impl", default="auto", help=argparse.SUPPRESS)
  p.add_argument("--unprepared", action="store_true", help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.smoke:
    args.size = 32
  if args.worker:
    args.batch_size = int(args.batch_size)
    worker(args)
    return
  print(f"{'mode':5}  {'batch':>5}  {args.a + ' img/s':>14}  {args.b + ' img/s':>14}  "
        f"{'B/A median':>10}  {'p25-p75':>11}  {'min-max':>11}")
  for mode in args.mode.split(","):
    for batch_size in [int(b) for b in args.batch_size.split(",")]:
      r = paired(args, mode, batch_size)
      print(json.dumps(r), file=sys.stderr)
      if args.out:
        with open(args.out, "a") as f:
          f.write(json.dumps(r, sort_keys=True) + "\n")
      print(f"{mode:5}  {batch_size:5}  {r['a_images_per_s']:14.2f}  "
            f"{r['b_images_per_s']:14.2f}  {r['ratio_median']:10.2f}  "
            f"{r['ratio_p25']:5.2f}-{r['ratio_p75']:5.2f}  "
            f"{r['ratio_min']:5.2f}-{r['ratio_max']:5.2f}", flush=True)


if __name__ == "__main__":
  main()
