#!/usr/bin/env bash
# The depthwise convolution algorithm against the GEMM path and the vector
# pooling against the scalar code, alternated in one process on the suite's
# shapes (bench/dwpool_bench.c), per kernel set this CPU has. Builds a
# CPU-only release tree in build-bench/ (BENCH_BUILD_DIR overrides).
# BATCH=B (default 64: a worker's share of 128 on 2 workers), ROUNDS=R.
#
#   bench/dwpool_bench.sh [avx512|avx2|generic ...]
set -euo pipefail
. "$(dirname "$0")/ab_common.sh"
build=$ab_build
ab_lib "$ab_root" "$build"
ab_prog dwpool_bench dwpool_bench
sets=("$@")
[ ${#sets[@]} -gt 0 ] || sets=(avx512 avx2)
for s in "${sets[@]}"; do
  "$build/dwpool_bench" --kernels "$s" --batch "${BATCH:-64}" --rounds "${ROUNDS:-7}" || true
done
