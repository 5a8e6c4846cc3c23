#!/usr/bin/env bash
# The GPU part of issue 7 as one script, for the device machine (PyTorch and CUDA, no Rust):
# build the release binary here (`cargo build --release -p pixmim-cli`, cuda on by default),
# carry target/release/pixmim, then run `bash bench/gpu/run.sh` there. Results go to $OUT
# (or bench/results/) with the card and date; copy them into bench/results/.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-bench/results}"
mkdir -p "$OUT"
BIN="${PIXMIM_BIN:-target/release/pixmim}"
CARD=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -1)
DATE=$(date -u +%F)
LOG="$OUT/$DATE-gpu.log"
echo "card: $CARD, date: $DATE" | tee "$LOG"
export CUDA_PATH="${CUDA_PATH:-/usr/local/cuda}"

# 1. Does burn-cuda 0.21 initialise and run a step on this card? (the first thing to learn)
timeout 300 "$BIN" train --method mae --preset tiny --steps 3 --device cuda --out "$OUT/cuda-smoke" \
  2>&1 | tail -5 | tee -a "$LOG"

# 2. pixmim: the bench table on the GPU, tiny and base, with and without PixMIM (f32).
timeout 420 "$BIN" bench --device cuda --methods mae --presets tiny,base --batch "${BATCH:-128}" \
  --steps 10 --warmup 3 --json 2>>"$LOG" | tee "$OUT/$DATE-gpu-pixmim.json"

# 3. PyTorch MAE-B on the same card: AMP fp16 as the official recipe, and fp32.
python3 bench/gpu/torch_mae_step.py --batch "${BATCH:-128}" --steps 30 | tee "$OUT/$DATE-gpu-torch-amp.json"
python3 bench/gpu/torch_mae_step.py --batch "${BATCH:-128}" --steps 30 --no-amp | tee "$OUT/$DATE-gpu-torch-fp32.json"
nvidia-smi | tee -a "$LOG"
