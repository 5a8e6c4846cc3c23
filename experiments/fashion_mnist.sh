#!/usr/bin/env bash
# PixMIM vs MAE at small scale on Fashion-MNIST: pretrain the tiny MAE preset with and
# without the PixMIM plugin (same budget, same seed), then kNN and a linear probe on frozen
# features. Writes OUT/results.md (the table in docs/results.md comes from it).
#
# Data: Debian's dataset-fashion-mnist (`apt-get install dataset-fashion-mnist`), which puts
# the IDX files in /usr/share/datasets/fashion-mnist; or FMNIST=DIR.
#
# Default budget: about 30 minutes on a 2-core CPU. On a GPU, e.g.:
#   DEVICE=cuda STEPS=20000 BATCH=256 TRAIN_LIMIT=60000 VAL_LIMIT=10000 experiments/fashion_mnist.sh
# Radius sweep (paper Table 5a), one PixMIM run per radius (BASELINE=0 skips the MAE run):
#   RADII="3 8" BASELINE=0 OUT=runs/fashion_mnist_sweep experiments/fashion_mnist.sh
set -euo pipefail
cd "$(dirname "$0")/.."

FMNIST=${FMNIST:-/usr/share/datasets/fashion-mnist}
OUT=${OUT:-runs/fashion_mnist}
DEVICE=${DEVICE:-cpu}
STEPS=${STEPS:-400}
BATCH=${BATCH:-64}
SEED=${SEED:-0}
# `default`: the default radius, 40 x 32/224 = 5.714 at 32 px (numerics §11.1).
RADII=${RADII:-default}
BASELINE=${BASELINE:-1}
TRAIN_LIMIT=${TRAIN_LIMIT:-10000}
VAL_LIMIT=${VAL_LIMIT:-2000}
PROBE_EPOCHS=${PROBE_EPOCHS:-30}

TRAIN="$FMNIST/train-images-idx3-ubyte.gz"
TEST="$FMNIST/t10k-images-idx3-ubyte.gz"
for f in "$TRAIN" "$TEST"; do
  [ -e "$f" ] || { echo "missing $f: apt-get install dataset-fashion-mnist, or set FMNIST=DIR" >&2; exit 2; }
done

cargo build --release --workspace >&2
BIN=target/release/pixmim
mkdir -p "$OUT"
# Warm-up: 10% of the run, expressed in epochs of the 60,000 training images.
WARMUP=$(python3 -c "print($STEPS * 0.1 * $BATCH / 60000)")

row() { # name, checkpoint, pretrain seconds, radius
  local name=$1 ck=$2 secs=$3 radius=$4 t0 knn lin
  t0=$(date +%s)
  knn=$("$BIN" eval knn --checkpoint "$ck" --data "$TRAIN" --val-data "$TEST" \
        --train-limit "$TRAIN_LIMIT" --val-limit "$VAL_LIMIT" --crop-pct 1.0 --device "$DEVICE" | tail -1)
  # SGD: MAE's LARS with its lr rule is tuned for batch 16384; at batch 256 it barely moves.
  lin=$("$BIN" eval linear --checkpoint "$ck" --data "$TRAIN" --val-data "$TEST" \
        --train-limit "$TRAIN_LIMIT" --val-limit "$VAL_LIMIT" --crop-pct 1.0 --device "$DEVICE" \
        --optimizer sgd --blr 0.1 --epochs "$PROBE_EPOCHS" --warmup-epochs 3 \
        --out "$OUT/$name/linear" | tail -1)
  local knn1=${knn#top1=}; knn1=${knn1%%  *}
  local knn5=${knn##*top5=}
  echo "| $name | $radius | $STEPS x $BATCH | $secs s | $knn1 | $knn5 | ${lin#top1=} | $(( $(date +%s) - t0 )) s |" >> "$OUT/table.md"
}

pretrain() { # name, extra args...
  local name=$1; shift
  rm -rf "${OUT:?}/$name"
  local t0; t0=$(date +%s)
  "$BIN" train --method mae --preset tiny "$@" --data "$TRAIN" --out "$OUT/$name" --device "$DEVICE" \
    --steps "$STEPS" --set "train.batch_size=$BATCH" --set "seed=$SEED" \
    --set "schedule.warmup_epochs=$WARMUP" --set "train.checkpoint_every=$STEPS" >&2
  echo $(( $(date +%s) - t0 ))
}

ckpt() { ls "$OUT/$1/checkpoints/"step-*.safetensors | tail -1; }

: > "$OUT/table.md"
if [ "$BASELINE" = 1 ]; then
  secs=$(pretrain mae)
  row mae "$(ckpt mae)" "$secs" "-"
fi
for r in $RADII; do
  if [ "$r" = default ]; then
    name=pixmim; secs=$(pretrain "$name" --plugin pixmim); r=5.714
  else
    name=pixmim-r$r; secs=$(pretrain "$name" --plugin pixmim --set "target.radius=$r")
  fi
  row "$name" "$(ckpt "$name")" "$secs" "$r"
done

{
  echo "Fashion-MNIST, tiny MAE (32 px, patch 4, 192 x 4, decoder 128 x 2), seed $SEED, device $DEVICE"
  echo "Pretraining: $STEPS steps x batch $BATCH on the 60,000 training images."
  echo "Evaluation: first $TRAIN_LIMIT training / $VAL_LIMIT test images; kNN k=20 T=0.07;"
  echo "linear probe: BatchNorm + linear, SGD blr 0.1, $PROBE_EPOCHS epochs."
  echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(date -u +%F); commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo
  echo "| run | radius | steps x batch | pretrain wall | kNN top1 | kNN top5 | linear top1 | eval wall |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
  cat "$OUT/table.md"
} > "$OUT/results.md"
OUT=$OUT FMNIST=$FMNIST DEVICE=$DEVICE experiments/fashion_mnist_analyses.sh >&2
cat "$OUT/results.md"
