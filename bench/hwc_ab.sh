#!/usr/bin/env bash
# The hwc convolution of this tree against the one of another commit
# (default HEAD~1; pass any git ref) and oneDNN, alternated in one process
# (bench/hwc_bench.c built with -DHWC_AB). The other commit's conv_hwc*.c
# are built from `git archive` with their symbols renamed old_*; this
# tree's library is built in build-bench/ (BENCH_BUILD_DIR overrides).
# BATCH=B (default 128), ROUNDS=R, ONLY=NAME (a substring of the shapes).
#
#   bench/hwc_ab.sh [REF] [avx512|avx2 ...]
set -euo pipefail
. "$(dirname "$0")/ab_common.sh"
build=$ab_build
ref=${1:-HEAD~1}
shift || true
ab_lib "$ab_root" "$build"
ab_old "$ref" src include
ab_old_objs conv_hwc conv_hwc_avx512 conv_hwc_avx2
ab_prog hwc_bench hwc_ab -DHWC_AB "${ab_objs[@]}"
sets=("$@")
[ ${#sets[@]} -gt 0 ] || sets=(avx512)
only=()
[ -z "${ONLY:-}" ] || only=(--only "$ONLY")
for s in "${sets[@]}"; do
  "$build/hwc_ab" --kernels "$s" --batch "${BATCH:-128}" --rounds "${ROUNDS:-5}" "${only[@]}" || true
done
