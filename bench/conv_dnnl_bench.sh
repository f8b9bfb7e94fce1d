#!/usr/bin/env bash
# oneDNN's convolutions against dptrain's GEMM and DIRECT algorithms on the
# suite's conv shapes (bench/conv_dnnl_bench.c). Builds a CPU-only release
# tree in build-bench/ (BENCH_BUILD_DIR overrides); needs a build with
# oneDNN (libdnnl-dev). Arguments go to conv_dnnl_bench (--batch, --rounds,
# --filter).
#
#   bench/conv_dnnl_bench.sh [--batch 128] [--rounds 7]
set -euo pipefail
. "$(dirname "$0")/ab_common.sh"
build=$ab_build
ab_lib "$ab_root" "$build"
if ! nm "$build/libdptrain.a" 2>/dev/null | grep ' U dnnl_engine_create' >/dev/null; then
  echo "bench/conv_dnnl_bench.sh: $build is built without oneDNN (DPT_WITH_DNNL)" >&2
  exit 1
fi
ab_prog conv_dnnl_bench conv_dnnl_bench
exec "$build/conv_dnnl_bench" "$@"
