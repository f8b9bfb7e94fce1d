#!/usr/bin/env bash
# The hwc convolution algorithm on the wide 3x3 shapes of the suite's
# networks against the direct kernels and oneDNN, alternated in one process
# (bench/hwc_bench.c), per kernel set this CPU has. Builds a CPU-only
# release tree in build-bench/ (BENCH_BUILD_DIR overrides). BATCH=B
# (default 128: one worker's minibatch in step_bench --layers), ROUNDS=R.
#
#   bench/hwc_bench.sh [avx512|avx2 ...]
set -euo pipefail
. "$(dirname "$0")/ab_common.sh"
build=$ab_build
ab_lib "$ab_root" "$build"
ab_prog hwc_bench hwc_bench
sets=("$@")
[ ${#sets[@]} -gt 0 ] || sets=(avx512 avx2)
for s in "${sets[@]}"; do
  "$build/hwc_bench" --kernels "$s" --batch "${BATCH:-128}" --rounds "${ROUNDS:-7}" || true
done
