#!/usr/bin/env bash
# The depthwise convolution algorithm against the GEMM path and the vector
# pooling against the scalar code, alternated in one process on the suite's
# shapes (bench/dwpool_bench.c), per kernel set this CPU has. Builds a
# CPU-only release tree in build-bench/ (BENCH_BUILD_DIR overrides).
# BATCH=B (default 64: a worker's share of 128 on 2 workers), ROUNDS=R.
#
#   bench/dwpool_bench.sh [avx512|avx2|generic ...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BENCH_BUILD_DIR:-$root/build-bench}
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DDPT_WITH_CUDA=OFF >/dev/null
cmake --build "$build" --target dptrain_static -j2 >/dev/null
libs=(-lopenblas -lz -lstb -lcjson -lm -lpthread)
if nm "$build/libdptrain.a" 2>/dev/null | grep -q ' U MPI_Init'; then
  read -r -a mpi_link <<<"$(mpicc -showme:link 2>/dev/null || echo -lmpi)"
  libs+=("${mpi_link[@]}")
fi
cc -O2 -std=c11 -Wall -Wextra -D_POSIX_C_SOURCE=200809L -I"$root/include" -I"$root/src" \
  $(pkg-config --cflags openblas 2>/dev/null || true) \
  "$root/bench/dwpool_bench.c" "$build/libdptrain.a" "${libs[@]}" -o "$build/dwpool_bench"
sets=("$@")
[ ${#sets[@]} -gt 0 ] || sets=(avx512 avx2)
for s in "${sets[@]}"; do
  "$build/dwpool_bench" --kernels "$s" --batch "${BATCH:-64}" --rounds "${ROUNDS:-7}" || true
done
