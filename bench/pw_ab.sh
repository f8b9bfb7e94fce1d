#!/usr/bin/env bash
# The pointwise convolution of this tree against the one of another commit
# (default HEAD~1; pass any git ref), alternated in one process on the
# suite networks' 1x1 layers (bench/pw_ab.c). The other commit's
# conv_pointwise.c is built from `git archive` with its symbols renamed
# old_*; this tree's library is built in build-bench/ (BENCH_BUILD_DIR
# overrides). Arguments after REF go to pw_ab (--rounds, --batch, --only,
# --kernels, --cold).
#
#   bench/pw_ab.sh [REF] [pw_ab options]
set -euo pipefail
. "$(dirname "$0")/ab_common.sh"
build=$ab_build
ref=${1:-HEAD~1}
shift || true
ab_lib "$ab_root" "$build"
ab_old "$ref" src include
ab_old_objs conv_pointwise
ab_prog pw_ab pw_ab "${ab_objs[@]}"
"$build/pw_ab" "$@"
