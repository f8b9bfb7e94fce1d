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
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BENCH_BUILD_DIR:-$root/build}
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
old=$(mktemp -d)
trap 'rm -rf "$old"' EXIT
git -C "$root" archive "$ref" src include | tar -x -C "$old"
flags=(-O3 -DNDEBUG -std=c11 -D_POSIX_C_SOURCE=200809L -DDPT_BUILDING_LIBRARY -I"$old/src" -I"$old/include")
for f in gemm_avx512 gemm_avx2; do
  cc "${flags[@]}" -c "$old/src/ops/$f.c" -o "$old/$f.o"
done
if [ "$gemm_only" = 1 ]; then
  for f in gemm_avx512 gemm_avx2; do
    nm -g --defined-only "$old/$f.o" | awk 'NF == 3 { print $3 " old_" $3 }' >"$old/syms"
    objcopy --redefine-syms="$old/syms" "$old/$f.o" "$old/old_$f.o"
  done
  cc -O2 -std=c11 -Wall -Wextra -D_POSIX_C_SOURCE=200809L -I"$root/include" -I"$root/src" \
    "$root/bench/gemm_rows_ab.c" "$old/old_gemm_avx512.o" "$old/old_gemm_avx2.o" \
    "$build/libdptrain.a" -lopenblas -lm -o "$old/gemm_ab"
  "$old/gemm_ab" "$rounds"
  exit 0
fi
libs=(-lopenblas -lz -lstb -lcjson -lm -lpthread -ldl)
if nm "$build/libdptrain.a" 2>/dev/null | grep ' U dnnl_' >/dev/null; then
  libs+=(-ldnnl -lgomp -lstdc++)
fi
if nm "$build/libdptrain.a" 2>/dev/null | grep ' U MPI_Init' >/dev/null; then
  read -r -a mpi_link <<<"$(mpicc -showme:link 2>/dev/null || echo -lmpi)"
  libs+=("${mpi_link[@]}")
fi
cflags=(-O2 -std=c11 -D_POSIX_C_SOURCE=200809L -I"$root/include" -I"$root/src")
cc "${cflags[@]}" "$root/bench/step_bench.c" "$build/libdptrain.a" "${libs[@]}" -o "$old/new_sb"
cc "${cflags[@]}" "$root/bench/step_bench.c" "$old/gemm_avx512.o" "$old/gemm_avx2.o" \
  "$build/libdptrain.a" "${libs[@]}" -o "$old/old_sb"
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
