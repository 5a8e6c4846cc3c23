#!/usr/bin/env bash
# The paper's two analyses on the runs of experiments/fashion_mnist.sh (called at its end; can
# be rerun alone on an existing OUT): object coverage of RRC vs SRC on Fashion-MNIST test
# images (the object is the non-black pixels), and reconstruction PSNR per frequency band of
# every pretrained checkpoint. Appends to OUT/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."

FMNIST=${FMNIST:-/usr/share/datasets/fashion-mnist}
OUT=${OUT:-runs/fashion_mnist}
DEVICE=${DEVICE:-cpu}
TEST="$FMNIST/t10k-images-idx3-ubyte.gz"
BIN=target/release/pixmim

# Coverage: 500 test images as RGBA with alpha = foreground; the tiny preset's geometry.
python3 experiments/idx_to_rgba.py "$TEST" "$OUT/foreground" 500
coverage=$("$BIN" analyze coverage --data "$OUT/foreground" --transform rrc,src,cc \
  --img-size 32 --patch-size 4 --samples 20 --out "$OUT/coverage.csv")

# Frequency: every run's last checkpoint, 512 test images, the same masks for all.
args=()
for run in "$OUT"/*/checkpoints; do
  name=$(basename "$(dirname "$run")")
  args+=(--checkpoint "$(ls "$run"/step-*.safetensors | tail -1)" --label "$name")
done
"$BIN" analyze frequency "${args[@]}" --data "$TEST" --images 512 --bands 6 \
  --crop-pct 1.0 --device "$DEVICE" --out "$OUT/frequency" > "$OUT/frequency.txt"

{
  echo
  echo "Object coverage (500 test images, 20 views each, 32 px, patch 4, mask ratio 0.75):"
  echo
  echo '```'
  echo "$coverage"
  echo '```'
  echo
  echo "Reconstruction PSNR per frequency band (512 test images, 75% random masks; frequency.csv, frequency.png):"
  echo
  echo '```'
  cat "$OUT/frequency.txt"
  echo '```'
} >> "$OUT/results.md"
echo "$coverage"
cat "$OUT/frequency.txt"
