#!/usr/bin/env bash
# oneDNN's convolutions against dptrain's GEMM and DIRECT algorithms on the
# suite's conv shapes (bench/conv_dnnl_bench.c). Builds a CPU-only release
# tree in build-bench/ (BENCH_BUILD_DIR overrides); needs a build with
# oneDNN (libdnnl-dev). Arguments go to conv_dnnl_bench (--batch, --rounds,
# --filter).
#
#   bench/conv_dnnl_bench.sh [--batch 128] [--rounds 7]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BENCH_BUILD_DIR:-$root/build-bench}
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DDPT_WITH_CUDA=OFF >/dev/null
cmake --build "$build" --target dptrain_static -j2 >/dev/null
if ! nm "$build/libdptrain.a" 2>/dev/null | grep ' U dnnl_engine_create' >/dev/null; then
  echo "bench/conv_dnnl_bench.sh: $build is built without oneDNN (DPT_WITH_DNNL)" >&2
  exit 1
fi
libs=(-ldnnl -lgomp -lopenblas -lz -lstb -lcjson -lm -lpthread)
if nm "$build/libdptrain.a" 2>/dev/null | grep -q ' U MPI_Init'; then
  read -r -a mpi_link <<<"$(mpicc -showme:link 2>/dev/null || echo -lmpi)"
  libs+=("${mpi_link[@]}")
fi
cc -O2 -std=c11 -Wall -Wextra -D_POSIX_C_SOURCE=200809L -I"$root/include" -I"$root/src" \
  $(pkg-config --cflags openblas 2>/dev/null || true) \
  "$root/bench/conv_dnnl_bench.c" "$build/libdptrain.a" "${libs[@]}" -o "$build/conv_dnnl_bench"
exec "$build/conv_dnnl_bench" "$@"
