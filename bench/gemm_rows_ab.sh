#!/usr/bin/env bash
# dptrain's GEMM (src/ops/gemm_avx512.c, gemm_avx2.c and gemm_kern.h) of
# this tree against the one of another commit (default HEAD~1) in the
# training step: two step_bench binaries, the old one linking the old
# commit's GEMM objects ahead of this tree's library, run alternately with
# the same plan cache (planned once first); prints the 1x1 layers' and the
# step's thread CPU ms per run.
#
#   bench/gemm_rows_ab.sh [REF] [ROUNDS] [NET...]
#   bench/gemm_rows_ab.sh --gemm [REF] [ROUNDS]   (the products alone,
#     bench/gemm_rows_ab.c, old and new kernels alternated in one process)
set -euo pipefail
. "$(dirname "$0")/ab_common.sh"
root=$ab_root
build=${BENCH_BUILD_DIR:-$root/build} # (this one's default: build/, built as it is)
gemm_only=0
if [ "${1:-}" = --gemm ]; then
  gemm_only=1
  shift
fi
ref=${1:-HEAD~1}
rounds=${2:-4}
shift 2 || shift $# || true
nets=("$@")
[ ${#nets[@]} -gt 0 ] || nets=(resnet-mini-32x32x3 resnet-mini-28x28x1)
cmake --build "$build" --target dptrain_static -j2 >/dev/null
ab_old "$ref" src include
old=$ab_old
if [ "$gemm_only" = 1 ]; then
  ab_old_objs gemm_avx512 gemm_avx2
  cc -O2 -std=c11 -Wall -Wextra -D_POSIX_C_SOURCE=200809L -I"$root/include" -I"$root/src" \
    "$root/bench/gemm_rows_ab.c" "${ab_objs[@]}" "$build/libdptrain.a" -lopenblas -lm \
    -o "$old/gemm_ab"
  "$old/gemm_ab" "$rounds"
  exit 0
fi
# the old GEMM objects as they are, ahead of the library: they replace its own
ab_old_cc gemm_avx512 gemm_avx2
ab_libs "$build/libdptrain.a"
cflags=(-O2 -std=c11 -D_POSIX_C_SOURCE=200809L -I"$root/include" -I"$root/src")
cc "${cflags[@]}" "$root/bench/step_bench.c" "$build/libdptrain.a" "${ab_link[@]}" -o "$old/new_sb"
cc "${cflags[@]}" "$root/bench/step_bench.c" "$old/gemm_avx512.o" "$old/gemm_avx2.o" \
  "$build/libdptrain.a" "${ab_link[@]}" -o "$old/old_sb"
for net in "${nets[@]}"; do
  spec=$root/examples/nets/$net.net
  export DPT_PLAN_CACHE=$old/$net.plan
  "$old/new_sb" --net "$spec" --batch 128 --steps 1 >/dev/null
  for r in $(seq "$rounds"); do
    for v in old new; do
      echo "== $net round $r $v"
      "$old/${v}_sb" --net "$spec" --batch 128 --steps 3 --layers | grep -E 'b2_proj|b3_a|step' || true
    done
  done
done
