#!/usr/bin/env bash
# The depthwise convolution of this tree against the one of another commit
# (default: the first parent of HEAD... pass any git ref), alternated in one
# process on MobileNet's depthwise layers (bench/dw_ab.c). The other
# commit's conv_depthwise.c and conv_dw_avx*.c are built from `git archive`
# with their symbols renamed old_*; this tree's library is built in
# build-bench/ (BENCH_BUILD_DIR overrides). BATCH=B (default 128), ROUNDS=R.
#
#   bench/dw_ab.sh [REF] [avx512|avx2|generic ...]
set -euo pipefail
. "$(dirname "$0")/ab_common.sh"
build=$ab_build
ref=${1:-HEAD~1}
shift || true
ab_lib "$ab_root" "$build"
ab_old "$ref" src include
ab_old_objs conv_depthwise conv_dw_avx512 conv_dw_avx2
ab_prog dw_ab dw_ab "${ab_objs[@]}"
sets=("$@")
[ ${#sets[@]} -gt 0 ] || sets=(avx512)
for s in "${sets[@]}"; do
  "$build/dw_ab" --kernels "$s" --batch "${BATCH:-128}" --rounds "${ROUNDS:-9}" || true
done
