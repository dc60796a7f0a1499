#!/bin/bash
# Side-by-side CPU training throughput: this project (default XLA flags, then the oneDNN flags
# `make bench` uses) and the PyTorch reference, alternated round by round, same allocator.
#
#   benchmarks/compare_torch.sh TORCH_PYTHON REFERENCE_PY [rounds] [out.jsonl]
#   e.g. benchmarks/compare_torch.sh /work/torchvenv/bin/python \
#          ../shared/bench/torch_pix2pix_reference.py 2 /tmp/compare.jsonl
#
# Batch 1: 10 timed steps after 3 warm-up; batch 16: 5 after 3 (one early call, usually the
# third, first touches XLA's second temporary buffer: ~4.5 s of page faults at batch 16, once).
# Every line of the output file is one run's JSON record (the reference's has "what":
# "train"); a summary follows, with the fraction of the peak in the model's FLOPs (86.94 GFLOP
# per image, both sides) and in the arithmetic each side executes (XLA's count for JAX, less
# where Winograd runs; the reference executes the direct algorithm's). The peak is this
# machine's, measured by each JAX run (benchmarks/common.py: peak); the CPU model is printed.
set -euo pipefail
TORCH_PY=${1:?usage: $0 TORCH_PYTHON REFERENCE_PY [rounds] [out.jsonl]}
REFERENCE=$(realpath "${2:?usage: $0 TORCH_PYTHON REFERENCE_PY [rounds] [out.jsonl]}")
ROUNDS=${3:-2}
OUT=$(realpath -m "${4:-/tmp/p2p_compare_torch.jsonl}")
PY=${PY:-.venv/bin/python}
cd "$(dirname "$0")/.."
TCMALLOC=${TCMALLOC:-/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4}
[ -e "$TCMALLOC" ] && export LD_PRELOAD=$TCMALLOC
ONEDNN="--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_custom_call=true"
: > "$OUT"
for round in $(seq "$ROUNDS"); do
  for bs in 1 16; do
    if [ "$bs" = 1 ]; then n=10; w=3; else n=5; w=3; fi
    "$PY" benchmarks/train_step.py --batch_size $bs --steps $n --warmup $w --out "$OUT" >/dev/null
    XLA_FLAGS="$ONEDNN" "$PY" benchmarks/train_step.py --batch_size $bs --steps $n --warmup $w \
      --out "$OUT" >/dev/null
    "$TORCH_PY" "$REFERENCE" train --bs $bs --size 256 --iters $n --warmup $w --threads 2 \
      2>/dev/null | grep '^{' >> "$OUT"
  done
done
"$PY" - "$OUT" <<'EOF'
import json, sys
print("side        batch  img/s  / PyTorch (same round)  of peak (86.94 GFLOP/img)"
      "  (executed)  others CPU  peak GFLOP/s")
pending, machines = [], set()
for line in open(sys.argv[1]):
  r = json.loads(line)
  if r.get("what") != "train":
    pending.append(r)
    continue
  for j in pending:  # this round's JAX runs at this batch size, then the reference's
    flags = "oneDNN" if "onednn" in (j["machine"].get("XLA_FLAGS") or "") else "default"
    print(f"jax {flags:7s} {j['batch_size']:5d}  {j['images_per_s']:5.2f}  "
          f"{j['images_per_s'] / r['images_per_s']:22.2f}  "
          f"{j['reference_fraction_of_peak']:26.1%}  {j['fraction_of_peak']:10.1%}"
          f"  {j['others_cpu_frac_max']:10.2f}  {j['peak_gflops']:12.1f}")
    machines.add((j["machine"].get("cpu"), j.get("nominal_peak_basis"),
                  j.get("nominal_peak_gflops")))
  ref = j["reference_gflop_per_image"] * r["images_per_s"] / j["peak_gflops"]  # same counts
  print(f"pytorch     {r['bs']:5d}  {r['images_per_s']:5.2f}  {'':22s}  "
        f"{ref:26.1%}  {ref:10.1%}  {max(r['others_cpu_frac']):10.2f}")
  pending = []
for cpu, basis, nominal in sorted(machines, key=str):
  print(f"CPU: {cpu}; nominal FMA peak: {basis} = {nominal and round(nominal)} GFLOP/s")
EOF
