#!/usr/bin/env bash
# The Winograd convolution algorithms (wino F(2x2,3x3), wino4 F(4x4,3x3),
# wino_s2 for stride 2) on the 3x3 layers of the suite's networks against hwc and
# oneDNN, alternated in one process (bench/wino_bench.c), per kernel set
# this CPU has. Builds a CPU-only
# release tree in build-bench/ (BENCH_BUILD_DIR overrides). BATCH=B
# (default 128: one worker's minibatch in step_bench --layers), ROUNDS=R.
#
#   bench/wino_bench.sh [avx512|avx2 ...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BENCH_BUILD_DIR:-$root/build-bench}
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DDPT_WITH_CUDA=OFF >/dev/null
cmake --build "$build" --target dptrain_static -j2 >/dev/null
libs=(-lopenblas -lz -lstb -lcjson -lm -lpthread)
# not grep -q: with pipefail, nm killed by SIGPIPE would make the test fail
if nm "$build/libdptrain.a" 2>/dev/null | grep ' U dnnl_' >/dev/null; then
  libs+=(-ldnnl -lgomp) # oneDNN and the OpenMP runtime it uses
fi
if nm "$build/libdptrain.a" 2>/dev/null | grep ' U MPI_Init' >/dev/null; then
  read -r -a mpi_link <<<"$(mpicc -showme:link 2>/dev/null || echo -lmpi)"
  libs+=("${mpi_link[@]}")
fi
cc -O2 -std=c11 -Wall -Wextra -D_POSIX_C_SOURCE=200809L -I"$root/include" -I"$root/src" \
  $(pkg-config --cflags openblas 2>/dev/null || true) \
  "$root/bench/wino_bench.c" "$build/libdptrain.a" "${libs[@]}" -o "$build/wino_bench"
sets=("$@")
[ ${#sets[@]} -gt 0 ] || sets=(avx512 avx2)
for s in "${sets[@]}"; do
  "$build/wino_bench" --kernels "$s" --batch "${BATCH:-128}" --rounds "${ROUNDS:-7}" || true
done
