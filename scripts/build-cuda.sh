#!/usr/bin/env bash
# Builds the `cuda` binary (and its test binaries) on a machine without a GPU:
#   1. the CUDA 13.0 toolkit pieces and cuDNN 9 from PyPI wheels, unpacked into a cache folder;
#   2. a stub libcuda.so.1 exporting the driver symbols, only for the link (the real driver
#      is loaded on the GPU machine);
#   3. cargo build with CUDA_COMPUTE_CAP=90 (H100/H200), then the binary gzipped.
# Output: dist/ahtsgd-cuda.gz and dist/ahtsgd-device-tests.gz. About 7 minutes and 1 GB
# the first time (most of it candle's kernels), a minute or two after that.
# Not part of CI. See docs/gpu.md.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${AHTSGD_CUDA_CACHE:-$HOME/.cache/ahtsgd-cuda}
CAP=${CUDA_COMPUTE_CAP:-90}
TK="$CACHE/toolkit"
mkdir -p "$CACHE/wheels" "$TK"

if [ ! -x "$TK/bin/nvcc" ]; then
  python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$CACHE/wheels" \
    nvidia-cuda-nvcc==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 \
    nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-nvrtc==13.0.88 \
    nvidia-curand==10.4.0.35 "nvidia-cublas>=13.0,<13.1"
  tmp=$(mktemp -d)
  for w in "$CACHE"/wheels/*.whl; do python3 -m zipfile -e "$w" "$tmp"; done
  # the wheels put each component under nvidia/cu13/ (or nvidia/<name>/): merge them
  for d in "$tmp"/nvidia/*/; do cp -a "$d"/. "$TK"/; done
  rm -rf "$tmp"
  chmod +x "$TK"/bin/* "$TK"/nvvm/bin/* 2>/dev/null || true
  # unversioned names for the linker
  for lib in "$TK"/lib/*.so.*; do
    base=$(basename "$lib"); stem=${base%%.so.*}
    [ -e "$TK/lib/$stem.so" ] || ln -s "$base" "$TK/lib/$stem.so"
  done
  [ -d "$TK/lib64" ] || ln -s lib "$TK/lib64"
fi

# cuDNN 9 for the convolutions: its headers and the loader library libcudnn.so.9 are all the
# link needs (the engine libraries are loaded at run time from the GPU machine's PyTorch
# environment, nvidia/cudnn/lib)
if [ ! -e "$TK/lib/libcudnn.so" ]; then
  mkdir -p "$CACHE/cudnn"
  python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$CACHE/cudnn" \
    nvidia-cudnn-cu13==9.19.0.56
  python3 - "$CACHE"/cudnn/nvidia_cudnn_cu13-*.whl "$TK" <<'PY'
import sys, zipfile, os, shutil
wheel, tk = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith("nvidia/cudnn/include/") or name == "nvidia/cudnn/lib/libcudnn.so.9":
            dest = os.path.join(tk, name[len("nvidia/cudnn/"):])
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with z.open(name) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out)
PY
  ln -sf libcudnn.so.9 "$TK/lib/libcudnn.so"
fi

# stub libcuda: every cu* symbol the build references, as an empty function
STUB="$CACHE/stub"
if [ ! -e "$STUB/libcuda.so" ]; then
  mkdir -p "$STUB"
  grep -rhoE '\bcu[A-Z][A-Za-z0-9_]+(_v[0-9]+)?\b' "$TK/include/cuda.h" | sort -u \
    | awk '{print "void " $1 "(void) {}"}' > "$STUB/stub.c"
  gcc -shared -fPIC -o "$STUB/libcuda.so.1" "$STUB/stub.c" -Wl,-soname,libcuda.so.1
  ln -sf libcuda.so.1 "$STUB/libcuda.so"
fi

export CUDA_ROOT="$TK" CUDA_PATH="$TK" CUDA_TOOLKIT_ROOT_DIR="$TK"
export PATH="$TK/bin:$PATH"
export LIBRARY_PATH="$STUB:$TK/lib:${LIBRARY_PATH:-}"
export LD_LIBRARY_PATH="$STUB:$TK/lib:${LD_LIBRARY_PATH:-}"
export CUDA_COMPUTE_CAP="$CAP"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target-cuda}

cargo build --release --features cuda
# the device tests (tests/device.rs): the same checks on CPU and CUDA, CUDA against CPU
tests=$(cargo test --release --features cuda --no-run --test device --message-format=json \
  | python3 -c 'import sys, json
for l in sys.stdin:
    m = json.loads(l)
    if m.get("profile", {}).get("test") and m.get("executable"): print(m["executable"])')
mkdir -p dist
# symbols stripped: both must fit, with the checkout, in what a GPU machine is sent (64 MB)
strip -o dist/ahtsgd-cuda "$CARGO_TARGET_DIR/release/ahtsgd"
strip -o dist/ahtsgd-device-tests "$tests"
gzip -9 -f dist/ahtsgd-cuda dist/ahtsgd-device-tests
ls -la dist/
