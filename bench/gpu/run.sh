#!/usr/bin/env bash
# The GPU measurement of issue 27 as one script for the device machine (CUDA + PyTorch, no Rust,
# no network). Three builds of the same commit, carried as gpu-bin/*.xz:
#
# Here:   F="--no-default-features --features cuda"      (no `mpi`: no libmpi needed there)
#         cargo build --release -p pixmim-cli $F --target-dir target-gpu
#         cargo build --release -p pixmim-cli $F,fusion --target-dir target-gpu-fusion
#         cargo build --release -p pixmim-cli $F,fusion,autotune --target-dir target-gpu-tuned
#         mkdir -p gpu-bin && for b in "" -fusion -tuned; do
#           strip -o gpu-bin/pixmim$b target-gpu$b/release/pixmim && xz -f gpu-bin/pixmim$b; done
# There:  bash bench/gpu/run.sh                          # with gpu-bin/ carried along
# Dry run, anywhere (CI does, on Mesa's lavapipe; cli/tests/gpu_script.rs):
#         DEVICE=wgpu PRESET=tiny BATCH=4 SMOKE_BATCH=4 PRECISIONS=f32 TRAIN_PRECISION=f32 \
#         BENCH_STEPS=2 BENCH_WARMUP=1 TRAIN_STEPS=3 TRAIN_LOG_EVERY=1 \
#         STAGES="smoke bench train decide" bash bench/gpu/run.sh
#
# Every stage has its own time limit and writes as it goes, so a run cut short still reports
# what it measured; `decide` ends it with decision.md, every build and precision beside PyTorch
# against the issue's goals (bench/gpu/decide.py). Results go to $OUT (default
# bench/results/gpu-<date>); copy them into bench/results/. Knobs: BATCH (default 128), STAGES
# (default "env smoke torch bench checkpointing fusion tune tuned profile train decide"; fusion, tune and
# tuned run only with their binaries: gpu-bin/pixmim-fusion.xz, gpu-bin/pixmim-tuned.xz, or
# PIXMIM_FUSION_BIN / PIXMIM_TUNED_BIN), PRECISIONS (bench, default f32,bf16), *_SECS (each
# stage's time limit; LIMITS=none drops them, as the dry run does), and for the dry run DEVICE (default cuda), PRESET (base), SMOKE_BATCH
# (16), BENCH_STEPS / BENCH_WARMUP (8 / 3), TRAIN_STEPS (200), TRAIN_PRECISION (bf16),
# TRAIN_LOG_EVERY (25).
set -uo pipefail
cd "$(dirname "$0")/../.."
DATE=$(date -u +%F)
OUT="${OUT:-bench/results/gpu-$DATE}"
mkdir -p "$OUT"
BATCH="${BATCH:-128}"
DEVICE="${DEVICE:-cuda}"
PRESET="${PRESET:-base}"
SMOKE_BATCH="${SMOKE_BATCH:-16}"
STAGES="${STAGES:-env smoke torch bench checkpointing fusion tune tuned profile train decide}"
LOG="$OUT/gpu.log"
exec > >(tee -a "$LOG") 2>&1
export PYTHONUNBUFFERED=1

# Scratch space of this run (unpacked binaries, run folders, profiles), removed at the end: two
# runs on one machine do not share or remove each other's files.
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/pixmim-gpu.XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT

# The carried binaries, unpacked; a variable stays empty when its binary was not carried.
unpack() { xz -dc "gpu-bin/$1.xz" >"$SCRATCH/$1" && chmod +x "$SCRATCH/$1" && echo "$SCRATCH/$1"; }
BIN="${PIXMIM_BIN:-target/release/pixmim}"
[ -f gpu-bin/pixmim.xz ] && BIN=$(unpack pixmim)
FUSION_BIN="${PIXMIM_FUSION_BIN:-}"
[ -f gpu-bin/pixmim-fusion.xz ] && FUSION_BIN=$(unpack pixmim-fusion)
TUNED_BIN="${PIXMIM_TUNED_BIN:-}"
[ -f gpu-bin/pixmim-tuned.xz ] && TUNED_BIN=$(unpack pixmim-tuned)
# burn-cuda compiles its kernels with NVRTC at run time and needs the CUDA headers.
export CUDA_PATH="${CUDA_PATH:-/usr/local/cuda}"
export LD_LIBRARY_PATH="$CUDA_PATH/lib64:${LD_LIBRARY_PATH:-}"

stage() { echo; echo "== $(date -u +%T) $*"; STAGE="$*"; }
# `limit SECS CMD...`: CMD under a time limit meant for a GPU machine; LIMITS=none (the dry
# run on a CPU, where a busy machine may take any time) runs it without one.
limit() {
  local secs="$1"; shift
  if [ "${LIMITS:-}" = none ]; then "$@"; else timeout "$secs" "$@"; fi
}
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
  SMOKE=(train --method mae --preset tiny --steps 5 --set "train.batch_size=$SMOKE_BATCH"
    --set train.log_every=1)
  RUST_BACKTRACE=1 limit 120 "$BIN" "${SMOKE[@]}" --device "$DEVICE" --out "$SCRATCH/smoke-gpu"
  ran $?
  limit 60 "$BIN" "${SMOKE[@]}" --device cpu --out "$SCRATCH/smoke-cpu"
  if [ "$DEVICE" = cuda ]; then
    limit 90 "$BIN" "${SMOKE[@]}" --device cuda --set train.precision=bf16 --out "$SCRATCH/smoke-bf16"
  fi
  for r in gpu cpu bf16; do
    sed "s/^/$r /" "$SCRATCH/smoke-$r/metrics.jsonl" 2>/dev/null
  done >"$OUT/smoke-metrics.txt"
  if [ "$DEVICE" = cuda ]; then
    # NCCL's one-rank communicator (issue 26): the gradient sum's copies and all-reduce on the
    # card, checked against the expected values by the bench. PyTorch's wheel carries libnccl.
    NCCL_LIB=$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib"))' 2>/dev/null)
    LD_LIBRARY_PATH="${NCCL_LIB:+$NCCL_LIB:}$LD_LIBRARY_PATH" limit 60 "$BIN" bench --only allreduce \
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
    limit 90 python3 bench/torch/mae_step.py --batch "$BATCH" --steps 20
    limit 90 python3 bench/torch/mae_step.py --batch "$BATCH" --steps 20 --no-amp
    limit 90 python3 bench/torch/mae_step.py --batch "$BATCH" --steps 20 --no-amp --tf32
  } | tee "$OUT/torch.jsonl"
fi

# One `pixmim bench` of MAE steps with and without PixMIM on $DEVICE, by binary $2, JSON to $1.
bench_mae() {
  local json=$1 bin=$2
  shift 2
  RUST_BACKTRACE=1 limit "$SECS" "$bin" bench --device "$DEVICE" --methods mae \
    --presets "$PRESET" --precision "${PRECISIONS:-f32,bf16}" --batch "$BATCH" \
    --steps "${BENCH_STEPS:-8}" --warmup "${BENCH_WARMUP:-3}" \
    --machine "${CARD:-$DEVICE}" --json "$@" >"$OUT/$json"
  ran $?
}
# Is stage $1's binary ($2, carried as gpu-bin/$3.xz) here? Says so when not.
carried() { [ -n "$2" ] || { echo; echo "== $1: gpu-bin/$3.xz not carried; skipped"; return 1; }; }
CARD=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr -cd 'A-Za-z0-9')

if has bench; then
  # 3. pixmim bench on the GPU, the default build (no fusion, no autotune): MAE steps with and
  #    without PixMIM, the low-pass paths, and the data pipeline on this machine's cores.
  stage "pixmim bench, MAE ($PRESET) batch $BATCH on $DEVICE, ${PRECISIONS:-f32,bf16}"
  SECS="${BENCH_SECS:-150}" bench_mae pixmim-bench.json "$BIN" --pipeline-secs 1
fi

if has checkpointing; then
  # 3a. The default build with activation checkpointing (train.activation_checkpointing):
  #     the device memory it saves, the time it costs.
  stage "pixmim bench, activation checkpointing, MAE ($PRESET) batch $BATCH"
  SECS="${CHECKPOINTING_SECS:-120}" bench_mae pixmim-bench-checkpointing.json "$BIN" --only steps \
    --set train.activation_checkpointing=balanced
fi

if has fusion && carried fusion "$FUSION_BIN" pixmim-fusion; then
  # 3b. The same steps with burn's kernel fusion (fixed strategies, no autotune).
  stage "pixmim bench, fusion build, MAE ($PRESET) batch $BATCH"
  SECS="${FUSION_SECS:-120}" bench_mae pixmim-bench-fusion.json "$FUSION_BIN" --only steps
fi

if has tune && carried tune "$TUNED_BIN" pixmim-tuned; then
  # 3c. The one-off tuning with the fusion + autotune build: MAE-B, ConvMAE-B, LSMAE-B steps
  #     into the repo's cache (bench/gpu/cache/<card>/), copied back with the results.
  stage "pixmim bench --tune, MAE / ConvMAE / LSMAE ($PRESET) batch $BATCH"
  RUST_BACKTRACE=1 limit "${TUNE_SECS:-180}" "$TUNED_BIN" bench --tune --device "$DEVICE" \
    --methods mae,convmae,lsmae --presets "$PRESET" --precision "${PRECISIONS:-f32,bf16}" \
    --batch "$BATCH" --steps 1 --warmup 1 --autotune-cache bench/gpu/cache --json >"$OUT/tune.json"
  ran $?
  mkdir -p "$OUT/autotune-cache" && cp -r bench/gpu/cache/. "$OUT/autotune-cache/"
fi

if has tuned && carried tuned "$TUNED_BIN" pixmim-tuned; then
  # 3d. The fusion + autotune build's steady state, reading the cache the tune stage wrote.
  stage "pixmim bench, fusion + autotune with the tuned cache, MAE ($PRESET) batch $BATCH"
  SECS="${TUNED_SECS:-120}" bench_mae pixmim-bench-tuned.json "$TUNED_BIN" --only steps \
    --autotune-cache bench/gpu/cache
fi

if has profile; then
  # 4. Where the GPU time of pixmim's MAE-B step goes: Nsight Systems' per-kernel summary of a
  #    few f32 steps with and without PixMIM (matrix products vs elementwise kernels, launch
#    counts), if nsys is here.
  stage "profile: nsys kernel summary of the MAE-B f32 step, batch $BATCH"
  NSYS=$(command -v nsys || ls "$CUDA_PATH"/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys \
    /usr/local/cuda/nsight-systems-*/bin/nsys 2>/dev/null | head -1)
  if [ -n "$NSYS" ]; then
    limit "${PROFILE_SECS:-120}" "$NSYS" profile -t cuda -s none --cpuctxsw=none -f true \
      -o "$SCRATCH/pixmim-step" "$BIN" bench --device cuda --only steps --methods mae --presets base \
      --precision f32 --batch "$BATCH" --steps 3 --warmup 2
    ran $?
    "$NSYS" stats -r cuda_gpu_kern_sum,cuda_api_sum --format csv -o "$OUT/nsys" \
      "$SCRATCH/pixmim-step.nsys-rep" >/dev/null 2>&1
    head -25 "$OUT"/nsys_cuda_gpu_kern_sum*.csv 2>/dev/null | cut -c1-200
  else
    echo "nsys not found; skipped"
  fi
fi

if has train; then
  # 5. Real pretraining steps (data loading, schedule, checkpoint) of MAE-B + PixMIM.
  stage "pixmim train MAE ($PRESET) + PixMIM, batch $BATCH, ${TRAIN_PRECISION:-bf16}"
  limit "${TRAIN_SECS:-90}" "$BIN" train --method mae --plugin pixmim --preset "$PRESET" \
    --device "$DEVICE" --steps "${TRAIN_STEPS:-200}" --set "train.batch_size=$BATCH" \
    --set "train.precision=${TRAIN_PRECISION:-bf16}" --set "train.log_every=${TRAIN_LOG_EVERY:-25}" --out "$SCRATCH/train-base"
  ran $?
  cp "$SCRATCH/train-base/metrics.jsonl" "$OUT/train-base-metrics.jsonl" 2>/dev/null
fi
if has decide; then
  # 6. Every build and precision beside PyTorch, against the issue's goals.
  stage "decision table"
  python3 bench/gpu/decide.py "$OUT" --preset "$PRESET"
  ran $?
fi

stage "done"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader 2>/dev/null
if [ -n "$FAILED" ]; then
  echo "failed:$FAILED"
  exit 1
fi
