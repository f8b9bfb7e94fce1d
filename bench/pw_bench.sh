#!/usr/bin/env bash
# The suite networks' 1x1 convolutions by algorithm (bench/pw_bench.c):
# pointwise against direct, batched, dnnl (where built) and gemm, alternated in
# one process. Builds a CPU-only release tree in build-bench/
# (BENCH_BUILD_DIR overrides); arguments go to pw_bench.
#
#   bench/pw_bench.sh [--rounds R] [--batch N] [--only TEXT]
set -euo pipefail
. "$(dirname "$0")/ab_common.sh"
build=$ab_build
ab_lib "$ab_root" "$build"
ab_prog pw_bench pw_bench
"$build/pw_bench" "$@"
