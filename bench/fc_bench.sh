#!/usr/bin/env bash
# The fully connected layer's GEMM (src/ops/gemm.c, with avx512) against the
# BLAS on the character language model's fc and wider shapes, per kernel
# set this CPU has (bench/fc_bench.c). Builds a CPU-only release tree in
# build-bench/ (BENCH_BUILD_DIR overrides). ROUNDS=N for more rounds.
#
#   bench/fc_bench.sh [avx512|avx2 ...]
set -euo pipefail
. "$(dirname "$0")/ab_common.sh"
build=$ab_build
ab_lib "$ab_root" "$build"
ab_prog fc_bench fc_bench
sets=("$@")
[ ${#sets[@]} -gt 0 ] || sets=(avx512 avx2)
for s in "${sets[@]}"; do
  "$build/fc_bench" --kernels "$s" --rounds "${ROUNDS:-21}" || true
done
