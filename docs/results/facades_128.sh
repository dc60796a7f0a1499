#!/usr/bin/env bash
# The 128 px facades model (the official unet_128 with the 70x70 PatchGAN, batch 1, random
# jitter 143 -> 128 and flips, Adam 2e-4 / 0.5, constant then linear decay) and the L1-only
# run of the same budget, each evaluated on the 106 test images in the paper's test mode and
# in eval mode, for the final and the best (by val L1) checkpoint. From the repository root:
#   docs/results/facades_128.sh MANUAL_DIR OUT [EPOCHS_CONSTANT] [EPOCHS_DECAY]
# MANUAL_DIR holds facades.tar.gz. The two runs train at once, sharing the machine's cores.
set -euo pipefail
MANUAL=$1 OUT=$2 CONSTANT=${3:-4} DECAY=${4:-4}
PY=${PY:-.venv/bin/python}
DATA=(--config.data.manual_dir="$MANUAL" --config.data.data_dir="${DATA_DIR:-$OUT/tfds}")
COMMON=(--config configs/facades.py "${DATA[@]}" --config.model.num_downs=7
        --config.data.load_size=143 --config.data.crop_size=128
        --config.n_epochs="$CONSTANT" --config.n_epochs_decay="$DECAY" --config.eval_every_steps=800)
$PY train.py "${COMMON[@]}" --workdir "$OUT/pix2pix" > "$OUT/pix2pix.log" 2>&1 &
$PY train.py "${COMMON[@]}" --config.loss.gan_weight=0 --workdir "$OUT/l1" > "$OUT/l1.log" 2>&1 &
wait
for run in pix2pix l1; do
  for step in final best; do
    which=(); [ "$step" = best ] && which=(--step best)
    $PY -m pix2pix_jax.eval.evaluate --workdir "$OUT/$run" "${which[@]}" --split test \
      --output "$OUT/eval/${run}_${step}_test" "${DATA[@]}"
    $PY -m pix2pix_jax.eval.evaluate --workdir "$OUT/$run" "${which[@]}" --split test \
      --eval_mode --output "$OUT/eval/${run}_${step}_evalmode" "${DATA[@]}"
  done
done
