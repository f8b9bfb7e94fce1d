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
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BENCH_BUILD_DIR:-$root/build-bench}
ref=${1:-HEAD~1}
shift || true
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DDPT_WITH_CUDA=OFF >/dev/null
cmake --build "$build" --target dptrain_static -j2 >/dev/null
old=$(mktemp -d)
trap 'rm -rf "$old"' EXIT
git -C "$root" archive "$ref" src include | tar -x -C "$old"
files=(conv_hwc conv_hwc_avx512 conv_hwc_avx2)
for f in "${files[@]}"; do
  cc -O3 -DNDEBUG -std=c11 -D_POSIX_C_SOURCE=200809L -I"$old/src" -I"$old/include" \
    -c "$old/src/ops/$f.c" -o "$old/$f.o"
done
nm -g --defined-only "$old"/*.o | awk 'NF == 3 { print $3 " old_" $3 }' | sort -u >"$old/syms"
objs=()
for f in "${files[@]}"; do
  objcopy --redefine-syms="$old/syms" "$old/$f.o" "$old/old_$f.o"
  objs+=("$old/old_$f.o")
done
libs=(-lopenblas -lz -lstb -lcjson -lm -lpthread)
if nm "$build/libdptrain.a" 2>/dev/null | grep ' U dnnl_' >/dev/null; then
  libs+=(-ldnnl -lgomp)
fi
if nm "$build/libdptrain.a" 2>/dev/null | grep ' U MPI_Init' >/dev/null; then
  read -r -a mpi_link <<<"$(mpicc -showme:link 2>/dev/null || echo -lmpi)"
  libs+=("${mpi_link[@]}")
fi
cc -O2 -std=c11 -Wall -Wextra -D_POSIX_C_SOURCE=200809L -DHWC_AB -I"$root/include" \
  -I"$root/src" "$root/bench/hwc_bench.c" "${objs[@]}" "$build/libdptrain.a" "${libs[@]}" \
  -o "$build/hwc_ab"
sets=("$@")
[ ${#sets[@]} -gt 0 ] || sets=(avx512)
only=()
[ -z "${ONLY:-}" ] || only=(--only "$ONLY")
for s in "${sets[@]}"; do
  "$build/hwc_ab" --kernels "$s" --batch "${BATCH:-128}" --rounds "${ROUNDS:-5}" "${only[@]}" || true
done
