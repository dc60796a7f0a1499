#!/usr/bin/env bash
# The project and the PyTorch reference (the official networks and step) on facades at 64 px,
# the same work on each side: unet_64 (num_downs 6), ngf/ndf 32, batch 4, load 72 / crop 64,
# 3000 steps at a constant learning rate; val outputs in the paper's test mode, both scored
# by pix2pix_jax.eval (same targets, same rounding). Usage, from the repository root:
#   docs/results/facades_side_by_side.sh MANUAL_DIR AB_DIR TORCH_PYTHON BENCH_DIR OUT [SEEDS...]
# MANUAL_DIR holds facades.tar.gz; AB_DIR is that archive extracted (train/ val/ test/);
# BENCH_DIR holds torch_pix2pix_fit.py. Writes OUT/{jax,torch}_seed<N>/metrics.json.
set -euo pipefail
MANUAL=$1 AB=$2 TORCH_PY=$3 BENCH=$4 OUT=$5; shift 5
SEEDS=${*:-0 1 2}
PY=${PY:-.venv/bin/python}
DATA_DIR=${DATA_DIR:-$OUT/tfds}
SIZES=(--config.model.num_downs=6 --config.model.ngf=32 --config.model.ndf=32
       --config.batch_size=4 --config.data.load_size=72 --config.data.crop_size=64)
for seed in $SEEDS; do
  work=$OUT/jax_seed$seed/workdir
  $PY train.py --config configs/facades.py --workdir "$work" "${SIZES[@]}" \
    --config.data.manual_dir="$MANUAL" --config.data.data_dir="$DATA_DIR" --config.seed="$seed" \
    --config.num_train_steps=3000 --config.n_epochs_decay=0 --config.eval_every_steps=0 \
    --config.keep_best= --config.sample_every_steps=100000 --config.checkpoint_every_steps=3000
  $PY -m pix2pix_jax.eval.evaluate --workdir "$work" --split val --output "$OUT/jax_seed$seed" \
    --config.data.manual_dir="$MANUAL" --config.data.data_dir="$DATA_DIR"
  $TORCH_PY "$BENCH/torch_pix2pix_fit.py" --data "$AB" --direction BtoA --steps 3000 \
    --out "$OUT/torch_seed$seed/images" --load 72 --crop 64 --bs 4 --num-downs 6 --ngf 32 \
    --ndf 32 --seed "$seed" --split val
  $PY -m pix2pix_jax.eval.score --config configs/facades.py "${SIZES[@]}" \
    --config.data.manual_dir="$MANUAL" --config.data.data_dir="$DATA_DIR" --split val \
    --outputs "$OUT/torch_seed$seed/images" --output "$OUT/torch_seed$seed/metrics.json"
done
