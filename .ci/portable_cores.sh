#!/usr/bin/env bash
# Proves the portable (non-x86 SIMD) path of the TF-free cores: builds the lattice, dense CRF
# and FFT core C++ tests for aarch64 with Debian's cross compiler and runs them under
# qemu-user. Needs g++-aarch64-linux-gnu and qemu-user (.ci/run installs them).
# PORTABLE_CXX / PORTABLE_RUN override the compiler and the runner; with neither cross tool
# present, set PORTABLE_CXX=g++ PORTABLE_RUN= to build the scalar path on the host instead
# (the x86 SIMD branches are then still compiled in: say so when reporting).
set -euo pipefail
cd "$(dirname "$0")/.."

CXX="${PORTABLE_CXX:-aarch64-linux-gnu-g++}"
RUN="${PORTABLE_RUN-qemu-aarch64 -L /usr/aarch64-linux-gnu}"
if ! command -v "${CXX%% *}" >/dev/null; then
  echo "portable_cores: $CXX not found (apt-get install g++-aarch64-linux-gnu qemu-user)" >&2
  exit 1
fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

TESTS=(
  "kseg_ops/cc/lattice/permutohedral_test.cc:0 failed"
  "kseg_ops/cc/lattice/dense_crf_test.cc:0 failed"
  "tests/kseg_ops/test_fft_conv_core.cc:ALL OK"
)
# -Wall -Werror as the host tests build; -O2 so qemu runs them in seconds.
for entry in "${TESTS[@]}"; do
  src="${entry%%:*}"
  want="${entry#*:}"
  bin="$WORK/$(basename "$src" .cc)"
  echo "== $CXX $src"
  $CXX -std=c++17 -O2 -Wall -Werror -I. "$src" -o "$bin" -lpthread
  echo "== ${RUN:-(host)} $(basename "$bin")"
  out="$($RUN "$bin" 2>&1)" || {
    echo "$out" | tail -40
    echo "portable_cores: $(basename "$bin") failed" >&2
    exit 1
  }
  echo "$out" | tail -2
  grep -q "$want" <<<"$out" || {
    echo "portable_cores: $(basename "$bin") did not print '$want'" >&2
    exit 1
  }
done
echo "== portable cores (${CXX}): lattice, dense CRF and FFT tests passed"
