#!/usr/bin/env bash
# Builds the kseg_ops op library with Bazel, runs the C++ unit tests, and compiles every CUDA
# source with nvcc (object files only: no GPU is needed). Needs TensorFlow installed in
# $PYTHON (default: python3). Fails on the first error.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"
NVCC="${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}"
# Bazel 4.2.3 crashes on an empty PYTHON_BIN_PATH: always pass a value.
BAZEL_FLAGS=(--spawn_strategy=local --jobs="${BAZEL_JOBS:-2}" "--repo_env=PYTHON_BIN_PATH=${PYTHON}")

echo "== bazel build //kseg_ops/..."
bazel build "${BAZEL_FLAGS[@]}" //kseg_ops/...
echo "== bazel test //kseg_ops/..."
bazel test "${BAZEL_FLAGS[@]}" --test_output=errors //kseg_ops/...
echo "== the Bazel-built library loads"
KSEG_OPS_LIBRARY="$PWD/bazel-bin/kseg_ops/_kseg_ops.so" "$PYTHON" -c \
  "import kseg_ops; kseg_ops.load_ops_library(); print('loaded', kseg_ops.library_path())"

echo "== nvcc -c of OPS_GPU_SRCS"
if [ ! -x "$NVCC" ]; then
  echo "nvcc not found (set NVCC=/path/to/nvcc)" >&2
  exit 1
fi
CUDA_HOME="${CUDA_HOME:-$(dirname "$(dirname "$(readlink -f "$NVCC")")")}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
# The CPU wheel ships no CUDA headers: TF's GPU headers find them through this overlay.
mkdir -p "$WORK/overlay/third_party/gpus/cuda"
ln -s "$CUDA_HOME/include" "$WORK/overlay/third_party/gpus/cuda/include"
mapfile -t TF_CFLAGS < <("$PYTHON" -c \
  "import tensorflow as tf; print('\n'.join(tf.sysconfig.get_compile_flags()))" 2>/dev/null)
mapfile -t GPU_SRCS < <("$PYTHON" -c \
  "ns = {}; exec(open('kseg_ops/sources.bzl').read(), ns); print('\n'.join(ns['OPS_GPU_SRCS']))")
for src in "${GPU_SRCS[@]}"; do
  echo "nvcc -c $src"
  "$NVCC" -c "$src" -o "$WORK/$(basename "$src").o" -x cu -DGOOGLE_CUDA=1 -O3 -DNDEBUG \
    --expt-relaxed-constexpr -Xcompiler -fPIC -Wno-deprecated-gpu-targets \
    -I. -I"$WORK/overlay" -I"$CUDA_HOME/include" "${TF_CFLAGS[@]}"
done
echo "== kseg_ops: bazel build, C++ tests and CUDA compile passed"
