#!/usr/bin/env bash
# The one prepared script for a GPU machine (H100/H200, CUDA 13): it has no Rust toolchain, so
# it runs what scripts/build-cuda.sh built here (dist/*.gz). Prints a summary for a note; full
# output goes to $OUT. Sized to finish in a few minutes. See docs/gpu.md.
set -u
OUT=${OUT:-/tmp/ahtsgd-device}
mkdir -p "$OUT"
BIN=/tmp/ahtsgd-cuda
gunzip -c dist/ahtsgd-cuda.gz > "$BIN" && chmod +x "$BIN"
gunzip -c dist/ahtsgd-device-tests.gz > /tmp/ahtsgd-device-tests && chmod +x /tmp/ahtsgd-device-tests
# CUDA libraries (cuBLAS, cuRAND, NVRTC) from the machine's PyTorch environment
SP=$(python3 -c 'import os, nvidia; print(os.path.dirname(list(nvidia.__path__)[0]))' 2>/dev/null)
for d in "$SP"/nvidia/cu13/lib "$SP"/nvidia/*/lib; do [ -d "$d" ] && LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done
export LD_LIBRARY_PATH

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"

echo "== device tests (CPU and CUDA)"
/tmp/ahtsgd-device-tests --test-threads 1 2>&1 | tee "$OUT/device-tests.txt" | grep -E "^test |test result"

echo "== ahtsgd bench --device cuda"
timeout 300 "$BIN" bench --device cuda --steps ${STEPS:-100} --reps 3 --warmup 10 2>&1 | tee "$OUT/bench-cuda.txt"

echo "== ratio series: SGD, fixed-α and adaptive MLP steps, three alternating runs"
for i in 1 2 3; do
  timeout 60 "$BIN" bench --device cuda --steps 300 --reps 3 --warmup 20 \
    mlp-sgd mlp-ahtsgd-fixed mlp-ahtsgd-adaptive 2>&1 | grep -E "^mlp"
done | tee "$OUT/series.txt"

echo "== ResNet-18 with cuDNN's fastest guesses (AHTSGD_CUDNN_DETERMINISTIC=0)"
AHTSGD_CUDNN_DETERMINISTIC=0 timeout 60 "$BIN" bench --device cuda --steps ${STEPS:-100} \
  --reps 3 --warmup 10 resnet18-sgd resnet18-grads 2>&1 | tee "$OUT/bench-cuda-nondeterministic.txt"

if [ -f .device/torch-gpu/torch_gpu_bench.py ]; then
  echo "== PyTorch beside it (same card)"
  timeout 240 python3 .device/torch-gpu/torch_gpu_bench.py --steps ${STEPS:-100} --warmup 10 > "$OUT/torch-gpu.txt" 2>&1
  tail -25 "$OUT/torch-gpu.txt"
  echo "== PyTorch's ResNet-18 costs of SGD + noise, H·v, power iteration"
  timeout 120 python3 .device/torch-gpu/torch_gpu_ahtsgd.py > "$OUT/torch-gpu-ahtsgd.txt" 2>&1
  tail -8 "$OUT/torch-gpu-ahtsgd.txt"
fi

echo "== a real training run on the GPU (quickstart, 1 epoch, 2 trials)"
timeout 120 "$BIN" run recipes/quickstart.aht --device cuda --trial 4-5 --set zero_init.epochs=1 --out /tmp/ahtsgd-runs --quiet 2>&1 | tail -8 | tee "$OUT/run.txt"
