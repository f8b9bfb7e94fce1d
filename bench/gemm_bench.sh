#!/usr/bin/env bash
# dptrain's GEMM against OpenBLAS and BLIS on the suite networks' GEMM
# shapes (bench/gemm_bench.c): once with OpenBLAS as the machine sets it
# (OPENBLAS_CORETYPE from the environment) and once with
# OPENBLAS_CORETYPE=SkylakeX, separate processes. BLIS is opened at run
# time (libblis.so.4) and skipped when absent. Builds a CPU-only release
# tree in build-bench/ (BENCH_BUILD_DIR overrides). ROUNDS=N for more
# rounds; extra arguments go to gemm_bench (e.g. --quick).
#
#   bench/gemm_bench.sh [--quick]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BENCH_BUILD_DIR:-$root/build-bench}
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DDPT_WITH_CUDA=OFF >/dev/null
cmake --build "$build" --target dptrain_static -j2 >/dev/null
libs=(-lopenblas -lz -lstb -lcjson -lm -lpthread -ldl)
if nm "$build/libdptrain.a" 2>/dev/null | grep -q ' U MPI_Init'; then
  read -r -a mpi_link <<<"$(mpicc -showme:link 2>/dev/null || echo -lmpi)"
  libs+=("${mpi_link[@]}")
fi
cc -O2 -std=c11 -Wall -Wextra -D_POSIX_C_SOURCE=200809L -I"$root/include" -I"$root/src" \
  $(pkg-config --cflags openblas 2>/dev/null || true) \
  "$root/bench/gemm_bench.c" "$build/libdptrain.a" "${libs[@]}" -o "$build/gemm_bench"
"$build/gemm_bench" --rounds "${ROUNDS:-7}" "$@"
OPENBLAS_CORETYPE=SkylakeX "$build/gemm_bench" --rounds "${ROUNDS:-7}" "$@"
