#!/usr/bin/env bash
# The suite networks' 1x1 convolutions by algorithm (bench/pw_bench.c):
# pointwise against direct, batched, dnnl (where built) and gemm, alternated in
# one process. Builds a CPU-only release tree in build-bench/
# (BENCH_BUILD_DIR overrides); arguments go to pw_bench.
#
#   bench/pw_bench.sh [--rounds R] [--batch N] [--only TEXT]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BENCH_BUILD_DIR:-$root/build-bench}
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DDPT_WITH_CUDA=OFF >/dev/null
cmake --build "$build" --target dptrain_static -j2 >/dev/null
# grep reads all of nm's output (grep -q would stop early, and pipefail
# would then count nm's broken pipe as no match).
libs=(-lopenblas -lz -lstb -lcjson -lm -lpthread -ldl)
if nm "$build/libdptrain.a" 2>/dev/null | grep ' U dnnl_' >/dev/null; then
  libs+=(-ldnnl -lgomp -lstdc++)
fi
if nm "$build/libdptrain.a" 2>/dev/null | grep ' U MPI_Init' >/dev/null; then
  read -r -a mpi_link <<<"$(mpicc -showme:link 2>/dev/null || echo -lmpi)"
  libs+=("${mpi_link[@]}")
fi
cc -O2 -std=c11 -Wall -Wextra -D_POSIX_C_SOURCE=200809L -I"$root/include" -I"$root/src" \
  "$root/bench/pw_bench.c" "$build/libdptrain.a" "${libs[@]}" -o "$build/pw_bench"
"$build/pw_bench" "$@"
