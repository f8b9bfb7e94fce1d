#!/usr/bin/env bash
# The direct convolution kernels on the stem and strided 3x3 shapes of the
# suite's networks against oneDNN, alternated in one process
# (bench/stem_bench.c), per kernel set this CPU has. Builds a CPU-only
# release tree in build-bench/ (BENCH_BUILD_DIR overrides). BATCH=B
# (default 128: one worker's minibatch in step_bench --layers), ROUNDS=R.
#
#   bench/stem_bench.sh [avx512|avx2 ...]
set -euo pipefail
. "$(dirname "$0")/ab_common.sh"
build=$ab_build
ab_lib "$ab_root" "$build"
ab_prog stem_bench stem_bench
sets=("$@")
[ ${#sets[@]} -gt 0 ] || sets=(avx512 avx2)
for s in "${sets[@]}"; do
  "$build/stem_bench" --kernels "$s" --batch "${BATCH:-128}" --rounds "${ROUNDS:-7}" || true
done
