#!/usr/bin/env bash
# The GPU part of issue 7 as one script for the device machine (CUDA + PyTorch, no Rust, no network).
#
# Here:   cargo build --release -p pixmim-cli --no-default-features --features cuda --target-dir target-gpu
#         (without the `mpi` feature: the binary then needs no libmpi on the device machine)
#         mkdir -p gpu-bin && strip -o gpu-bin/pixmim target-gpu/release/pixmim && xz -f gpu-bin/pixmim
# There:  bash bench/gpu/run.sh                          # with gpu-bin/ carried along
# Dry run, anywhere (CI does, on Mesa's lavapipe; cli/tests/gpu_script.rs):
#         DEVICE=wgpu PRESET=tiny BATCH=4 SMOKE_BATCH=4 PRECISIONS=f32 TRAIN_PRECISION=f32 \
#         BENCH_STEPS=2 BENCH_WARMUP=1 TRAIN_STEPS=3 TRAIN_LOG_EVERY=1 STAGES="smoke bench train" bash bench/gpu/run.sh
#
# Every stage has its own time limit and writes as it goes, so a run cut short still reports
# what it measured. Results go to $OUT (default bench/results/gpu-<date>); copy them into
# bench/results/. Knobs: BATCH (default 128), STAGES (default "env smoke torch bench profile
# train autotune"; autotune runs only if gpu-bin/pixmim-autotune.xz was carried), PRECISIONS
# (bench, default f32,bf16), *_SECS (each stage's time limit), and for the dry run DEVICE
# (default cuda), PRESET (base), SMOKE_BATCH (16), BENCH_STEPS / BENCH_WARMUP (8 / 3),
# TRAIN_STEPS (200), TRAIN_PRECISION (bf16), TRAIN_LOG_EVERY (25).
set -uo pipefail
cd "$(dirname "$0")/../.."
DATE=$(date -u +%F)
OUT="${OUT:-bench/results/gpu-$DATE}"
mkdir -p "$OUT"
BATCH="${BATCH:-128}"
DEVICE="${DEVICE:-cuda}"
PRESET="${PRESET:-base}"
SMOKE_BATCH="${SMOKE_BATCH:-16}"
STAGES="${STAGES:-env smoke torch bench profile train autotune}"
LOG="$OUT/gpu.log"
exec > >(tee -a "$LOG") 2>&1
export PYTHONUNBUFFERED=1

BIN="${PIXMIM_BIN:-target/release/pixmim}"
if [ -f gpu-bin/pixmim.xz ]; then
  xz -dc gpu-bin/pixmim.xz >/tmp/pixmim && chmod +x /tmp/pixmim && BIN=/tmp/pixmim
fi
# burn-cuda compiles its kernels with NVRTC at run time and needs the CUDA headers.
export CUDA_PATH="${CUDA_PATH:-/usr/local/cuda}"
export LD_LIBRARY_PATH="$CUDA_PATH/lib64:${LD_LIBRARY_PATH:-}"

stage() { echo; echo "== $(date -u +%T) $*"; STAGE="$*"; }
# Each pixmim command's exit status; the script goes on after a failure (a run cut short still
# reports the rest) and exits 1 at the end naming the stages that failed.
FAILED=""
ran() { echo "exit $1"; [ "$1" = 0 ] || FAILED="$FAILED
  $STAGE (exit $1)"; }
has() { [[ " $STAGES " == *" $1 "* ]]; }

# GPU memory and load, sampled every 250 ms for the whole run; stage times above map onto it.
nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv,noheader -lms 250 \
  >"$OUT/gpu-memory.csv" 2>/dev/null &
SMI=$!
trap 'kill $SMI 2>/dev/null' EXIT

if has env; then
  stage "environment"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  "$CUDA_PATH/bin/nvcc" --version 2>&1 | tail -2
  ls "$CUDA_PATH/include/cuda.h" "$CUDA_PATH"/lib64/libnvrtc* 2>&1 | head -5
  ldconfig -p | grep -E "libcuda\.so|libnvrtc" | head -5
  python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0))'
  "$BIN" --version
fi

if has smoke; then
  # 1. Does burn-cuda 0.21 initialise and train on this card? Same seed on the CPU beside it:
  #    the losses should agree to float tolerance (different reduction orders).
  stage "smoke: tiny MAE, 5 steps, $DEVICE then cpu"
  rm -rf /tmp/smoke-gpu /tmp/smoke-cpu /tmp/smoke-bf16 /tmp/train-base
  SMOKE=(train --method mae --preset tiny --steps 5 --set "train.batch_size=$SMOKE_BATCH"
    --set train.log_every=1)
  RUST_BACKTRACE=1 timeout 120 "$BIN" "${SMOKE[@]}" --device "$DEVICE" --out /tmp/smoke-gpu
  ran $?
  timeout 60 "$BIN" "${SMOKE[@]}" --device cpu --out /tmp/smoke-cpu
  if [ "$DEVICE" = cuda ]; then
    timeout 90 "$BIN" "${SMOKE[@]}" --device cuda --set train.precision=bf16 --out /tmp/smoke-bf16
  fi
  for r in gpu cpu bf16; do
    sed "s/^/$r /" /tmp/smoke-$r/metrics.jsonl 2>/dev/null
  done >"$OUT/smoke-metrics.txt"
  if [ "$DEVICE" = cuda ]; then
    # NCCL's one-rank communicator (issue 26): the gradient sum's copies and all-reduce on the
    # card, checked against the expected values by the bench. PyTorch's wheel carries libnccl.
    NCCL_LIB=$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib"))' 2>/dev/null)
    LD_LIBRARY_PATH="${NCCL_LIB:+$NCCL_LIB:}$LD_LIBRARY_PATH" timeout 60 "$BIN" bench --only allreduce \
      --device cuda --warmup 1 --steps 5 --json >"$OUT/nccl-one-rank.json"
    ran $?
    echo "nccl one rank: $(cat "$OUT/nccl-one-rank.json")"
  fi
fi

if has torch; then
  # 2. PyTorch MAE-B on the same card: AMP fp16 as the official recipe, fp32, and fp32 with TF32
  #    matmuls (like for like with burn-cuda's f32, whose tensor-core matmuls round to TF32).
  stage "pytorch MAE-B, AMP fp16, fp32 and fp32+TF32, batch $BATCH"
  {
    timeout 90 python3 bench/torch/mae_step.py --batch "$BATCH" --steps 20
    timeout 90 python3 bench/torch/mae_step.py --batch "$BATCH" --steps 20 --no-amp
    timeout 90 python3 bench/torch/mae_step.py --batch "$BATCH" --steps 20 --no-amp --tf32
  } | tee "$OUT/torch.jsonl"
fi

if has bench; then
  # 3. pixmim bench on the GPU: MAE-B steps with and without PixMIM (f32), the low-pass paths,
  #    and the data pipeline on this machine's cores.
  stage "pixmim bench, MAE ($PRESET) batch $BATCH on $DEVICE, ${PRECISIONS:-f32,bf16}"
  CARD=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | tr -cd 'A-Za-z0-9')
  RUST_BACKTRACE=1 timeout "${BENCH_SECS:-240}" "$BIN" bench --device "$DEVICE" --methods mae \
    --presets "$PRESET" --precision "${PRECISIONS:-f32,bf16}" --batch "$BATCH" \
    --steps "${BENCH_STEPS:-8}" --warmup "${BENCH_WARMUP:-3}" \
    --pipeline-secs 1 --machine "${CARD:-$DEVICE}" --json >"$OUT/pixmim-bench.json"
  ran $?
fi

if has profile; then
  # 4. Where the GPU time of pixmim's MAE-B step goes: Nsight Systems' per-kernel summary of a
  #    few f32 steps with and without PixMIM (matrix products vs elementwise kernels, launch
#    counts), if nsys is here.
  stage "profile: nsys kernel summary of the MAE-B f32 step, batch $BATCH"
  NSYS=$(command -v nsys || ls "$CUDA_PATH"/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys \
    /usr/local/cuda/nsight-systems-*/bin/nsys 2>/dev/null | head -1)
  if [ -n "$NSYS" ]; then
    timeout "${PROFILE_SECS:-120}" "$NSYS" profile -t cuda -s none --cpuctxsw=none -f true \
      -o /tmp/pixmim-step "$BIN" bench --device cuda --only steps --methods mae --presets base \
      --precision f32 --batch "$BATCH" --steps 3 --warmup 2
    ran $?
    "$NSYS" stats -r cuda_gpu_kern_sum,cuda_api_sum --format csv -o "$OUT/nsys" \
      /tmp/pixmim-step.nsys-rep >/dev/null 2>&1
    head -25 "$OUT"/nsys_cuda_gpu_kern_sum*.csv 2>/dev/null | cut -c1-200
  else
    echo "nsys not found; skipped"
  fi
fi

if has train; then
  # 5. Real pretraining steps (data loading, schedule, checkpoint) of MAE-B + PixMIM.
  stage "pixmim train MAE ($PRESET) + PixMIM, batch $BATCH, ${TRAIN_PRECISION:-bf16}"
  timeout "${TRAIN_SECS:-90}" "$BIN" train --method mae --plugin pixmim --preset "$PRESET" \
    --device "$DEVICE" --steps "${TRAIN_STEPS:-200}" --set "train.batch_size=$BATCH" \
    --set "train.precision=${TRAIN_PRECISION:-bf16}" --set "train.log_every=${TRAIN_LOG_EVERY:-25}" --out /tmp/train-base
  ran $?
  cp /tmp/train-base/metrics.jsonl "$OUT/train-base-metrics.jsonl" 2>/dev/null
fi
if has autotune; then
  # 6. Optional: burn-cuda's matmul autotuning, if a binary built with it was carried too
  #    (`cargo build --release -p pixmim-cli --features cuda-autotune --target-dir target-autotune`,
  #    then strip and xz it to gpu-bin/pixmim-autotune.xz). Run 2 on 2026-11-27 tried it only
  #    together with fusion, and compilation never finished; this asks whether autotune alone
  #    reaches a steady state, and how fast.
  if [ -f gpu-bin/pixmim-autotune.xz ]; then
    stage "autotune: pixmim bench MAE-B f32 with burn-cuda's matmul autotuning, batch $BATCH"
    xz -dc gpu-bin/pixmim-autotune.xz >/tmp/pixmim-autotune && chmod +x /tmp/pixmim-autotune
    timeout "${AUTOTUNE_SECS:-150}" /tmp/pixmim-autotune bench --device cuda --only steps \
      --methods mae --presets base --precision f32 --batch "$BATCH" --steps 8 --warmup 3 --json \
      >"$OUT/pixmim-bench-autotune.json"
    ran $?
  fi
fi

stage "done"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader 2>/dev/null
if [ -n "$FAILED" ]; then
  echo "failed:$FAILED"
  exit 1
fi
