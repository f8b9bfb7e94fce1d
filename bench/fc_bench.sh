#!/usr/bin/env bash
# The fully connected layer's GEMM (src/ops/gemm.c, with avx512) against the
# BLAS on the character language model's fc and wider shapes, per kernel
# set this CPU has (bench/fc_bench.c). Builds a CPU-only release tree in
# build-bench/ (BENCH_BUILD_DIR overrides). ROUNDS=N for more rounds.
#
#   bench/fc_bench.sh [avx512|avx2 ...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BENCH_BUILD_DIR:-$root/build-bench}
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DDPT_WITH_CUDA=OFF >/dev/null
cmake --build "$build" --target dptrain_static -j2 >/dev/null
libs=(-lopenblas -lz -lstb -lcjson -lm -lpthread)
# built with oneDNN (DPT_WITH_DNNL): its library and the OpenMP runtime it uses
if nm "$build/libdptrain.a" 2>/dev/null | grep ' U dnnl_engine_create' >/dev/null; then
  libs+=(-ldnnl -lgomp)
fi
if nm "$build/libdptrain.a" 2>/dev/null | grep -q ' U MPI_Init'; then
  read -r -a mpi_link <<<"$(mpicc -showme:link 2>/dev/null || echo -lmpi)"
  libs+=("${mpi_link[@]}")
fi
cc -O2 -std=c11 -Wall -Wextra -D_POSIX_C_SOURCE=200809L -I"$root/include" -I"$root/src" \
  $(pkg-config --cflags openblas 2>/dev/null || true) \
  "$root/bench/fc_bench.c" "$build/libdptrain.a" "${libs[@]}" -o "$build/fc_bench"
sets=("$@")
[ ${#sets[@]} -gt 0 ] || sets=(avx512 avx2)
for s in "${sets[@]}"; do
  "$build/fc_bench" --kernels "$s" --rounds "${ROUNDS:-21}" || true
done
