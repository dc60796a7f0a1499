"""Where the train step's time goes: per-op (XLA thunk) times from a jax.profiler trace.

Traces `--steps` steps of the paper's configuration, sums the duration of every executed
thunk by HLO instruction, and joins each with its op_name (module path and jvp/transpose,
i.e. forward vs backward), shape and FLOPs from the compiled HLO. Prints the top ops and
totals by category (conv forward / backward, other), so that a change can be aimed at the
ops that cost most.

  python benchmarks/profile_step.py --batch_size 1 --steps 3 --top 40
  python benchmarks/profile_step.py --generator eval --batch_size 16 --steps 3

`--generator eval|train` profiles the paper's generator at inference instead (benchmarks/
inference.py's program: running statistics, or batch statistics and dropout), whose "steps"
are calls.
"""

import argparse
import collections
import glob
import os
import re
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.profiler import ProfileData  # noqa: E402

import common  # noqa: E402
import inference as inference_bench  # noqa: E402
import train_step as train_step_bench  # noqa: E402
from pix2pix_jax.train import setup
from pix2pix_jax.train import sharding  # noqa: E402

_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%([\w.\-]+)\s*=\s*(.+?)\s+([\w\-]+)\(")
# oneDNN custom calls run as thunks named "<instruction>__onednn$<kind>".
_THUNK_SUFFIX = re.compile(r"__onednn\$\w+$")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_SKIP = ("ThreadpoolListener", "end: ", "ThunkExecutor", "ThunkSequence")
# The jitted function's own name at the front of every op_name: the step's or the generator's.
_JIT_PREFIX = re.compile(r"jit\((train_step|translate)\)/")


def hlo_index(hlo_text: str) -> dict[str, tuple[str, str, str]]:
  """instruction name -> (shape, opcode, op_name) for every instruction of the module."""
  index = {}
  for line in hlo_text.splitlines():
    m = _INSTR.match(line)
    if m:
      op = _OP_NAME.search(line)
      index[m.group(1)] = (m.group(2), m.group(3), op.group(1) if op else "")
  return index


def category(op_name: str) -> str:
  kind = "conv" if "conv" in op_name else "other"
  if "transpose(" in op_name:
    return kind + " backward"
  return kind + " forward"


_LAYER = re.compile(r"(UNetGenerator|Discriminator)\)*/(?:patch_\d+/)?(\w+)")


def layer(op_name: str) -> str:
  """'G dec_3 backward', 'D conv_1 forward', ...; ops outside the networks by their op_name."""
  m = _LAYER.search(op_name)
  direction = "backward" if "transpose(" in op_name else "forward"
  if m:
    net = "D" if m.group(1) == "Discriminator" else "G"
    return f"{net} {m.group(2)} {direction}"
  if not op_name:
    return "(no op_name: kernel slices, layout copies)"
  return _JIT_PREFIX.sub("", op_name)[:40]


def thunk_times(trace_dir: str) -> tuple[dict[str, float], dict[str, int]]:
  """Summed microseconds and call counts per thunk name over every XLA execute thread."""
  total: dict[str, float] = collections.defaultdict(float)
  count: dict[str, int] = collections.defaultdict(int)
  path = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True))[-1]
  for plane in ProfileData.from_file(path).planes:
    for line in plane.lines:
      if "XLA" not in line.name:
        continue
      for e in line.events:
        if not e.name.startswith(_SKIP):
          total[e.name] += e.duration_ns / 1e3
          count[e.name] += 1
  return total, count


def train_step_program(args: argparse.Namespace):
  """The compiled train step of the paper's configuration, and a call that runs one step
  (threading the state through)."""
  c = train_step_bench.paper_config(args, args.batch_size, args.dtype)
  mesh = sharding.make_mesh()
  state, step, _, _ = setup.fresh(c, mesh, 1000, train_step_bench.parts_for(args))
  rng = np.random.default_rng(0)
  shape = (args.batch_size, c.data.crop_size, c.data.crop_size, 3)
  batch = sharding.global_batch(
      {k: rng.uniform(-1, 1, shape).astype(np.float32) for k in ("input", "target")}, mesh)
  compiled = step.lower(state, batch).compile()

  def run():
    nonlocal state
    state, _ = compiled(state, batch)
    return state

  return compiled, run


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--batch_size", type=int, default=1)
  p.add_argument("--dtype", default="float32")
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--size", type=int, default=256)
  p.add_argument("--impl", default="auto", help="convolutions (train_step.py --impl)")
  p.add_argument("--smoke", action="store_true")
  p.add_argument("--top", type=int, default=30)
  p.add_argument("--generator", choices=("eval", "train"), default=None,
                 help="profile the generator's inference in this mode, not the train step")
  args = p.parse_args()

  if args.generator:
    compiled, operands, _ = inference_bench.jax_program(args, args.generator, args.batch_size)
    run = lambda: compiled(*operands)  # noqa: E731
  else:
    compiled, run = train_step_program(args)
  index = hlo_index(compiled.as_text())
  for _ in range(2):
    jax.block_until_ready(run())

  trace_dir = tempfile.mkdtemp(prefix="p2p_trace_")
  watch = common.OtherCpu()
  watch.start()
  t0 = time.perf_counter()
  jax.profiler.start_trace(trace_dir)
  for _ in range(args.steps):
    jax.block_until_ready(run())
  jax.profiler.stop_trace()
  wall = time.perf_counter() - t0
  others = watch.fraction(wall)
  total, count = thunk_times(trace_dir)

  by_cat: dict[str, float] = collections.defaultdict(float)
  rows = []
  for name, us in total.items():
    shape_, opcode, op_name = index.get(_THUNK_SUFFIX.sub("", name), ("?", "?", ""))
    by_cat[category(op_name)] += us
    rows.append((us / args.steps, name, opcode, shape_, op_name))
  rows.sort(reverse=True)
  busy = sum(total.values()) / args.steps / 1e3
  print(f"wall {wall / args.steps * 1e3:.1f} ms/step (incl. trace overhead), thunk time "
        f"{busy:.1f} ms/step, others_cpu_frac {others}, loadavg {common.loadavg()}")
  for cat, us in sorted(by_cat.items(), key=lambda kv: -kv[1]):
    print(f"  {cat:18s} {us / args.steps / 1e3:8.1f} ms/step")
  by_layer: dict[str, float] = collections.defaultdict(float)
  for us, name, opcode, shape_, op_name in rows:
    by_layer[layer(op_name)] += us
  print("by layer (ms/step):")
  for name, us in sorted(by_layer.items(), key=lambda kv: -kv[1])[:args.top]:
    print(f"  {name:40s} {us / 1e3:8.1f}")
  by_kind: dict[str, float] = collections.defaultdict(float)
  for us, name, *_ in rows:
    by_kind[re.sub(r"(\.\d+|\.clone)+", "", name)] += us
  print("by thunk kind (ms/step):")
  for kind, us in sorted(by_kind.items(), key=lambda kv: -kv[1])[:args.top]:
    print(f"  {kind:32s} {us / 1e3:8.1f}")
  print(f"\n{'ms/step':>8} {'calls':>5}  name / shape / op_name")
  for ms, name, opcode, shape_, op_name in rows[:args.top]:
    op_short = _JIT_PREFIX.sub("", op_name)[-110:]
    print(f"{ms / 1e3:8.2f} {count[name] // args.steps:5d}  {name} {shape_} {opcode}\n"
          f"{'':16}{op_short}")


if __name__ == "__main__":
  main()
