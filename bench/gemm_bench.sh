#!/usr/bin/env bash
# dptrain's GEMM against OpenBLAS and BLIS on the suite networks' GEMM
# shapes (bench/gemm_bench.c): once with OpenBLAS as the machine sets it
# (OPENBLAS_CORETYPE from the environment) and once with
# OPENBLAS_CORETYPE=SkylakeX, separate processes. BLIS is opened at run
# time (libblis.so.4) and skipped when absent. Builds a CPU-only release
# tree in build-bench/ (BENCH_BUILD_DIR overrides). ROUNDS=N for more
# rounds; extra arguments go to gemm_bench (e.g. --quick).
#
#   bench/gemm_bench.sh [--quick]
set -euo pipefail
. "$(dirname "$0")/ab_common.sh"
build=$ab_build
ab_lib "$ab_root" "$build"
ab_prog gemm_bench gemm_bench
"$build/gemm_bench" --rounds "${ROUNDS:-7}" "$@"
OPENBLAS_CORETYPE=SkylakeX "$build/gemm_bench" --rounds "${ROUNDS:-7}" "$@"
