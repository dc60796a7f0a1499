#!/bin/bash
# Does bfloat16 compute train as well as float32? A short facades run per dtype and seed (64x64,
# num_downs 6, ngf/ndf 32, batch 4), each evaluated on the val split; prints val L1 per run.
#
#   benchmarks/mixed_precision.sh /path/with/facades.tar.gz [steps] [seeds]
#
# Defaults: 1500 steps, seeds "0 1". Work goes to $WORK (default /tmp/p2p_mixed_precision).
# $VARIANTS compares other settings the same way, one "name:config_field=value" each, e.g.
#   VARIANTS="bn:model.norm=batch in:model.norm=instance"
set -euo pipefail
MANUAL_DIR=${1:?usage: $0 MANUAL_DIR [steps] [seeds]}
STEPS=${2:-1500}
SEEDS=${3:-0 1}
VARIANTS=${VARIANTS:-float32:model.dtype=float32 bfloat16:model.dtype=bfloat16}
WORK=${WORK:-/tmp/p2p_mixed_precision}
PY=${PY:-.venv/bin/python}
cd "$(dirname "$0")/.."
mkdir -p "$WORK"
COMMON=(--config configs/facades.py --config.data.manual_dir="$MANUAL_DIR"
        --config.data.data_dir="$WORK/tfds" --config.data.load_size=72 --config.data.crop_size=64
        --config.model.num_downs=6 --config.model.ngf=32 --config.model.ndf=32
        --config.batch_size=4 --config.num_train_steps="$STEPS"
        --config.checkpoint_every_steps="$STEPS" --config.sample_every_steps="$STEPS")
for seed in $SEEDS; do
  for variant in $VARIANTS; do
    name=${variant%%:*}
    run="$WORK/${name}_seed$seed"
    start=$(date +%s)
    "$PY" train.py "${COMMON[@]}" "--config.${variant#*:}" --config.seed=$seed \
      --workdir "$run" > "$run.train.log" 2>&1
    "$PY" -m pix2pix_jax.eval.evaluate --workdir "$run" --split val --output "$run.eval" \
      > "$run.eval.log" 2>&1
    "$PY" -c "import json, sys; m = json.load(open(sys.argv[1])); print(
      f'{sys.argv[2]:9s} seed {sys.argv[3]}  val L1 {m[\"l1\"]:.4f}  PSNR {m[\"psnr\"]:.2f}  '
      f'SSIM {m[\"ssim\"]:.3f}  LPIPS {m[\"lpips\"]:.3f}  train {sys.argv[4]} s')" \
      "$run.eval/metrics.json" "$name" $seed $(( $(date +%s) - start ))
  done
done
