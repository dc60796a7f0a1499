#!/usr/bin/env bash
# GPU benchmark in one go (< 10 minutes on one H100): JAX train step (batch 1, 16, 64;
# float32 and bfloat16), JAX generator inference, and the PyTorch reference (batch 1, 16).
# Every result is one JSON line in $RESULTS_DIR/*.jsonl (default: $OUT, else ./gpu_results).
#
# Needs: JAX with CUDA and PyTorch with CUDA in $PYTHON (no TensorFlow), run from the repo
# root. The PyTorch reference (/work/shared/bench/torch_pix2pix_reference.py) may not be
# committed: copy it to the git-ignored folder .gpu/ first:
#   mkdir -p .gpu && cp /work/shared/bench/torch_pix2pix_reference.py .gpu/
# Without it the PyTorch part is skipped (and says so in torch.jsonl).
#
#   bash benchmarks/gpu.sh            # the real run
#   bash benchmarks/gpu.sh --smoke    # tiny networks on whatever device there is (a check)
#
# fraction_of_peak uses PEAK_FP32_GFLOPS (default 494000: H100 SXM dense TF32, which XLA's
# default float32 matmul precision uses on GPU) and PEAK_BF16_GFLOPS (default 989000).
set -uo pipefail

SMOKE=0
[[ "${1:-}" == "--smoke" ]] && SMOKE=1
PYTHON=${PYTHON:-python3}
TORCH_PYTHON=${TORCH_PYTHON:-$PYTHON}
RESULTS_DIR=${RESULTS_DIR:-${OUT:-gpu_results}}
PEAK_FP32_GFLOPS=${PEAK_FP32_GFLOPS:-494000}
PEAK_BF16_GFLOPS=${PEAK_BF16_GFLOPS:-989000}
REFERENCE=${REFERENCE:-.gpu/torch_pix2pix_reference.py}
mkdir -p "$RESULTS_DIR"
export TF_CPP_MIN_LOG_LEVEL=2 XLA_PYTHON_CLIENT_PREALLOCATE=${XLA_PYTHON_CLIENT_PREALLOCATE:-true}

if (( SMOKE )); then
  SIZES="1,2"; STEPS=3; JAX_EXTRA=(--smoke); TRAIN_TIMEOUT=300; INFER_TIMEOUT=300; TORCH_TIMEOUT=120
  TORCH_ARGS=(--size 32 --num-downs 5 --ngf 8 --ndf 8 --iters 3 --warmup 1); TORCH_BS="1 2"
else
  # Worst case 2 x 150 + 110 + 2 x 75 = 560 s, inside a 10-minute slot with start-up.
  SIZES="1,16,64"; STEPS=10; JAX_EXTRA=(); TRAIN_TIMEOUT=150; INFER_TIMEOUT=110; TORCH_TIMEOUT=75
  TORCH_ARGS=(--iters 10 --warmup 3); TORCH_BS="1 16"
fi
DEVICE=$($PYTHON -c 'import jax; print(jax.devices()[0].platform)' 2>/dev/null || echo none)
echo "device: $DEVICE; results in $RESULTS_DIR"
"$PYTHON" -c 'import jax; print(jax.devices())' > "$RESULTS_DIR/devices.txt" 2>&1
nvidia-smi > "$RESULTS_DIR/nvidia-smi.txt" 2>&1 || true

run() {  # run NAME TIMEOUT CMD...: one piece, bounded, its log kept, a failure recorded
  local name=$1 limit=$2; shift 2
  echo "== $name"
  timeout "$limit" "$@" > "$RESULTS_DIR/$name.log" 2>&1
  local rc=$?
  tail -n 12 "$RESULTS_DIR/$name.log"
  (( rc )) && echo "{\"piece\": \"$name\", \"error\": \"exit $rc\"}" >> "$RESULTS_DIR/errors.jsonl"
  return 0
}

for dtype in float32 bfloat16; do
  peak=$PEAK_FP32_GFLOPS; [[ $dtype == bfloat16 ]] && peak=$PEAK_BF16_GFLOPS
  peak_args=(); [[ $DEVICE == gpu ]] && peak_args=(--peak_gflops "$peak")
  run "train_step_$dtype" "$TRAIN_TIMEOUT" "$PYTHON" benchmarks/train_step.py \
    --batch_size "$SIZES" --dtype "$dtype" --steps "$STEPS" "${peak_args[@]}" \
    "${JAX_EXTRA[@]}" --out "$RESULTS_DIR/train_step.jsonl"
done
run inference "$INFER_TIMEOUT" "$PYTHON" benchmarks/inference.py --batch_size 1,16 \
  --mode train,eval --dtype float32,bfloat16 --steps "$STEPS" "${JAX_EXTRA[@]}" \
  --out "$RESULTS_DIR/inference.jsonl"

if [[ -f "$REFERENCE" ]]; then
  torch_device=cpu; [[ $DEVICE == gpu ]] && torch_device=cuda
  for bs in $TORCH_BS; do
    run "torch_train_bs$bs" "$TORCH_TIMEOUT" "$TORCH_PYTHON" "$REFERENCE" train --device "$torch_device" \
      --bs "$bs" "${TORCH_ARGS[@]}"
    grep -h '^{' "$RESULTS_DIR/torch_train_bs$bs.log" >> "$RESULTS_DIR/torch.jsonl"
  done
else
  echo "{\"piece\": \"torch\", \"error\": \"$REFERENCE missing: copy the reference there\"}" \
    | tee -a "$RESULTS_DIR/torch.jsonl"
fi
echo "done: $(ls "$RESULTS_DIR")"
