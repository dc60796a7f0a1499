"""Forward + backward time of each 4x4 stride-2 (transposed) convolution of the paper's nets
(`--kind down/up`), or of D's 4x4 stride-1 ones (`--kind stride1`), for every implementation
in nn/cpu_lowering.py (the CPU forms), alternated round by round so that load drifts hit all.

Each measurement is one jitted call computing y and (dx, dw) for a random cotangent, i.e. the
three convolutions training runs per layer. Prints per layer and implementation the median
wall time, the process CPU time, and GFLOP/s on the nominal 3x forward FLOPs; then per
implementation the totals over the layers run, and over the strided and transposed ones alone
(every implementation of those performs the nominal arithmetic; the stride-1 kind's Winograd
performs less, so there nominal GFLOP/s is not how busy the chip is).

  python benchmarks/layers_bench.py --batch_size 1 --kind up --rounds 5
  python benchmarks/layers_bench.py --batch_size 16 --kind stride1 --layers "D conv_3"
  python benchmarks/layers_bench.py --batch_size 16 --kind all --impls auto --rounds 3

`--forward` times the forward pass alone (inference: one convolution per layer, 1x FLOPs).
"""

import argparse
import os
import resource
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import common  # noqa: E402
from pix2pix_jax.nn import cpu_lowering  # noqa: E402

# (name, input side, in channels, out channels) of the unet_256 / 70x70 PatchGAN layers.
DOWN = [("G enc_1", 128, 64, 128), ("G enc_2", 64, 128, 256), ("G enc_3", 32, 256, 512),
        ("G enc_4", 16, 512, 512), ("G enc_5", 8, 512, 512), ("G enc_6", 4, 512, 512),
        ("G enc_7", 2, 512, 512), ("D conv_1", 128, 64, 128), ("D conv_2", 64, 128, 256),
        ("G enc_0", 256, 3, 64), ("D conv_0", 256, 6, 64)]
UP = [("G dec_7", 1, 512, 512), ("G dec_6", 2, 1024, 512), ("G dec_5", 4, 1024, 512),
      ("G dec_4", 8, 1024, 512), ("G dec_3", 16, 1024, 256), ("G dec_2", 32, 512, 128),
      ("G dec_1", 64, 256, 64), ("G dec_0", 128, 128, 3)]
STRIDE1 = [("D conv_3", 32, 256, 512), ("D conv_4", 31, 512, 1)]  # padding 1 on every side


def cpu_seconds() -> float:
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--batch_size", type=int, default=1)
  p.add_argument("--kind", choices=["up", "down", "stride1", "all"], default="up")
  p.add_argument("--impls", default=None,
                 help="comma list; default all of that kind (with --kind all: names every kind has)")
  p.add_argument("--layers", default=None, help="comma list of layer names (default all)")
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--dtype", default="float32")
  p.add_argument("--forward", action="store_true", help="forward pass only (inference)")
  args = p.parse_args()

  pad = ((1, 1), (1, 1))
  tables = {
      "down": (cpu_lowering.STRIDED_CONV_IMPLS, DOWN),
      "up": (cpu_lowering.TRANSPOSED_CONV_IMPLS, UP),
      "stride1": ({name: lambda x, k, f=f: f(x, k, pad)
                   for name, f in cpu_lowering.STRIDE1_CONV_IMPLS.items()}, STRIDE1),
  }
  kinds = list(tables) if args.kind == "all" else [args.kind]
  if args.impls:
    impls = args.impls.split(",")
  else:
    impls = sorted(set.intersection(*(set(tables[k][0]) for k in kinds)))
  dtype = jnp.dtype(args.dtype)
  n = args.batch_size
  print(f"batch {n}, {args.dtype}, {'forward' if args.forward else 'forward + backward'},"
        f" loadavg {common.loadavg()}")
  # (kind, impl, nominal FLOPs, median seconds) of every layer timed.
  timed = []
  for kind in kinds:
    table, shapes = tables[kind]
    if args.layers:
      shapes = [s for s in shapes if s[0] in args.layers.split(",")]
    for name, side, cin, cout in shapes:
      for impl, (flops, wall) in time_layer(table, impls, kind, n, side, cin, cout, dtype,
                                            args.rounds, name, args.forward).items():
        timed.append((kind, impl, flops, wall))
  totals = [("all layers run", kinds)]
  if args.kind == "all":
    totals.append(("strided + transposed", ["down", "up"]))
  for impl in impls:
    for label, ks in totals:
      rows = [(f, t) for k, i, f, t in timed if i == impl and k in ks]
      flops, wall = sum(f for f, _ in rows), sum(t for _, t in rows)
      if wall:
        print(f"total {label:22s} {impl:15s} wall {wall * 1e3:8.2f} ms"
              f"  {flops / wall / 1e9:6.0f} GFLOP/s nominal")

def time_layer(table, impls, kind, n, side, cin, cout, dtype, rounds, name, forward=False
               ) -> dict[str, tuple[float, float]]:
  """Prints one layer's line per implementation; returns impl -> (nominal FLOPs, median s)."""
  kx, kk, kc = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(kx, (n, side, side, cin), dtype)
  k = (0.02 * jax.random.normal(kk, (4, 4, cin, cout))).astype(dtype)
  out_side = {"up": 2 * side, "down": side // 2, "stride1": side - 1}[kind]
  g = jax.random.normal(kc, (n, out_side, out_side, cout), dtype)
  in_pixels = side * side if kind == "up" else out_side * out_side
  flops = (1 if forward else 3) * 2 * n * in_pixels * 16 * cin * cout

  fns = {}
  for impl in impls:
    def fwd_bwd(x, k, g, f=table[impl]):
      if forward:
        return f(x, k)
      y, vjp = jax.vjp(f, x, k)
      return y, vjp(g)
    fns[impl] = jax.jit(fwd_bwd)
    jax.block_until_ready(fns[impl](x, k, g))
  walls = {i: [] for i in impls}
  cpus = {i: [] for i in impls}
  others = {i: [] for i in impls}
  watch = common.OtherCpu()
  for _ in range(rounds):
    for impl in impls:
      watch.start()
      c0, t0 = cpu_seconds(), time.perf_counter()
      jax.block_until_ready(fns[impl](x, k, g))
      walls[impl].append(time.perf_counter() - t0)
      cpus[impl].append(cpu_seconds() - c0)
      others[impl].append(watch.fraction(walls[impl][-1]) or 0.0)
  out = {}
  for impl in impls:
    wall = statistics.median(walls[impl])
    out[impl] = (flops, wall)
    print(f"{name:9s} {side:4d}px {cin:4d}->{cout:4d} {impl:15s} wall {wall * 1e3:8.2f} ms"
          f"  cpu {statistics.median(cpus[impl]) * 1e3:8.2f} ms"
          f"  {flops / wall / 1e9:6.0f} GFLOP/s  others {max(others[impl]):.2f}")
  return out


if __name__ == "__main__":
  main()
