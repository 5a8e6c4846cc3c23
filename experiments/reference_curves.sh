#!/usr/bin/env bash
# The reference curves of docs/results.md: loss and the pretraining monitor's kNN top-1 of the
# tiny preset, to check a run against.
#
# - Fashion-MNIST: MAE and PixMIM, 400 steps x 64 images (the ablation sweep's budget), seed 0,
#   `[train.monitor]` every 50 steps on the first 1000 training / 500 test images.
# - The sample images in the repo (the README's main job): the loss only (they have no labels).
#
# Writes runs/reference/{mae,pixmim,samples}, then the plots and one CSV of every curve point
# into docs/img/ and docs/results/. About 6 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

FMNIST=${FMNIST:-/usr/share/datasets/fashion-mnist}
TRAIN="$FMNIST/train-images-idx3-ubyte.gz"
TEST="$FMNIST/t10k-images-idx3-ubyte.gz"
for f in "$TRAIN" "$TEST"; do
  [ -e "$f" ] || { echo "missing $f: apt-get install dataset-fashion-mnist, or set FMNIST=DIR" >&2; exit 2; }
done
cargo build --release -p pixmim-cli >&2
BIN=target/release/pixmim
OUT=runs/reference
rm -rf "$OUT"

fashion=(--preset tiny --data "$TRAIN" --steps 400 --set train.batch_size=64
  --set schedule.warmup_epochs=0.042667 --set train.log_every=10
  --set "train.monitor.data=\"$TRAIN\"" --set "train.monitor.val_data=\"$TEST\""
  --set train.monitor.every=50 --set train.monitor.crop_pct=1.0)
"$BIN" train --method mae "${fashion[@]}" --out "$OUT/mae"
"$BIN" train --method mae --plugin pixmim "${fashion[@]}" --out "$OUT/pixmim"
"$BIN" train --method mae --preset tiny --steps 200 --out "$OUT/samples"

"$BIN" plot "$OUT/mae" "$OUT/pixmim" --metric loss --metric knn_top1 --out "$OUT/plots"
"$BIN" plot "$OUT/samples" --metric loss --out "$OUT/plots-samples"
mkdir -p docs/img docs/results
cp "$OUT/plots/loss.png" docs/img/reference-fashion-mnist-loss.png
cp "$OUT/plots/knn_top1.png" docs/img/reference-fashion-mnist-knn.png
cp "$OUT/plots-samples/loss.png" docs/img/reference-samples-loss.png
python3 - "$OUT" > docs/results/reference-curves.csv <<'PY'
import json, sys
print("run,step,loss,knn_top1")
for run in ("mae", "pixmim", "samples"):
    for line in open(f"{sys.argv[1]}/{run}/metrics.jsonl"):
        m = json.loads(line)
        if "loss" in m or "knn_top1" in m:
            print(f'{run},{m["step"] + 1},{m.get("loss", "")},{m.get("knn_top1", "")}')
PY
echo "wrote docs/img/reference-*.png and docs/results/reference-curves.csv" >&2
