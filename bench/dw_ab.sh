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
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BENCH_BUILD_DIR:-$root/build-bench}
ref=${1:-HEAD~1}
shift || true
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DDPT_WITH_CUDA=OFF >/dev/null
cmake --build "$build" --target dptrain_static -j2 >/dev/null
old=$(mktemp -d)
trap 'rm -rf "$old"' EXIT
git -C "$root" archive "$ref" src include | tar -x -C "$old"
objs=()
for f in conv_depthwise conv_dw_avx512 conv_dw_avx2; do
  cc -O3 -DNDEBUG -std=c11 -D_POSIX_C_SOURCE=200809L -I"$old/src" -I"$old/include" \
    -c "$old/src/ops/$f.c" -o "$old/$f.o"
done
nm -g --defined-only "$old"/*.o | awk 'NF == 3 { print $3 " old_" $3 }' | sort -u >"$old/syms"
for f in conv_depthwise conv_dw_avx512 conv_dw_avx2; do
  objcopy --redefine-syms="$old/syms" "$old/$f.o" "$old/old_$f.o"
  objs+=("$old/old_$f.o")
done
libs=(-lopenblas -lz -lstb -lcjson -lm -lpthread)
if nm "$build/libdptrain.a" 2>/dev/null | grep ' U dnnl_engine_create' >/dev/null; then
  libs+=(-ldnnl -lgomp)
fi
if nm "$build/libdptrain.a" 2>/dev/null | grep ' U MPI_Init' >/dev/null; then
  read -r -a mpi_link <<<"$(mpicc -showme:link 2>/dev/null || echo -lmpi)"
  libs+=("${mpi_link[@]}")
fi
cc -O2 -std=c11 -Wall -Wextra -D_POSIX_C_SOURCE=200809L -I"$root/include" -I"$root/src" \
  "$root/bench/dw_ab.c" "${objs[@]}" "$build/libdptrain.a" "${libs[@]}" -o "$build/dw_ab"
sets=("$@")
[ ${#sets[@]} -gt 0 ] || sets=(avx512)
for s in "${sets[@]}"; do
  "$build/dw_ab" --kernels "$s" --batch "${BATCH:-128}" --rounds "${ROUNDS:-9}" || true
done
