#!/usr/bin/env bash
# Robustness of the tiny MAE and PixMIM checkpoints of docs/results.md (runs/ablations, made
# by `pixmim sweep experiments/ablations.toml`), seeds 0 and 1: each fine-tuned on 5000
# Fashion-MNIST training images for 6 epochs at blr 5e-3 with the regularisers off (MAE's
# RandAugment / Mixup / CutMix / erasing are tuned for 100 epochs; at 4 epochs they left the
# tiny model at 28% against 47% without them), then evaluated under the 12 corruptions at
# severities 1-5 on the first 1000 test images, PixMIM against the MAE of the same seed.
#   PIXMIM=target/release/pixmim bash experiments/robustness.sh
set -euo pipefail
PIXMIM=${PIXMIM:-pixmim}
F=/usr/share/datasets/fashion-mnist
OUT=${OUT:-runs/robustness}
mkdir -p "$OUT"
for seed in 0 1; do
  for m in mae pixmim; do
    ft="$OUT/$m-seed-$seed"
    if [ ! -f "$ft/finetuned.safetensors" ]; then
      "$PIXMIM" eval finetune --checkpoint "runs/ablations/$m/seed-$seed/checkpoints/step-00000400.safetensors" \
        --data "$F/train-images-idx3-ubyte.gz" --val-data "$F/t10k-images-idx3-ubyte.gz" \
        --train-limit 5000 --val-limit 1000 --crop-pct 1.0 --epochs 6 --warmup-epochs 1 \
        --blr 5e-3 --aa none --reprob 0 --mixup 0 --cutmix 0 \
        --seed "$seed" --out "$ft" 2>"$ft.log" | tail -1
    fi
  done
  "$PIXMIM" eval robustness --checkpoint "$OUT/pixmim-seed-$seed/finetuned.safetensors" \
    --baseline "$OUT/mae-seed-$seed/finetuned.safetensors" \
    --val-data "$F/t10k-images-idx3-ubyte.gz" --val-limit 1000 --crop-pct 1.0 --seed "$seed" \
    --csv "$OUT/pixmim-seed-$seed.csv" 2>"$OUT/robustness-seed-$seed.log" | tee "$OUT/robustness-seed-$seed.txt"
done
