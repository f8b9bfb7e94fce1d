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
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BENCH_BUILD_DIR:-$root/build-bench}
ref=${1:-HEAD~1}
shift || true
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DDPT_WITH_CUDA=OFF >/dev/null
cmake --build "$build" --target dptrain_static -j2 >/dev/null
old=$(mktemp -d)
trap 'rm -rf "$old"' EXIT
git -C "$root" archive "$ref" src include | tar -x -C "$old"
cc -O3 -DNDEBUG -std=c11 -D_POSIX_C_SOURCE=200809L -I"$old/src" -I"$old/include" \
  -c "$old/src/ops/conv_pointwise.c" -o "$old/pw.o"
nm -g --defined-only "$old/pw.o" | awk 'NF == 3 { print $3 " old_" $3 }' | sort -u >"$old/syms"
objcopy --redefine-syms="$old/syms" "$old/pw.o" "$old/old_pw.o"
libs=(-lopenblas -lz -lstb -lcjson -lm -lpthread -ldl)
if nm "$build/libdptrain.a" 2>/dev/null | grep ' U dnnl_' >/dev/null; then
  libs+=(-ldnnl -lgomp -lstdc++)
fi
if nm "$build/libdptrain.a" 2>/dev/null | grep ' U MPI_Init' >/dev/null; then
  read -r -a mpi_link <<<"$(mpicc -showme:link 2>/dev/null || echo -lmpi)"
  libs+=("${mpi_link[@]}")
fi
cc -O2 -std=c11 -Wall -Wextra -D_POSIX_C_SOURCE=200809L -I"$root/include" -I"$root/src" \
  "$root/bench/pw_ab.c" "$old/old_pw.o" "$build/libdptrain.a" "${libs[@]}" -o "$build/pw_ab"
"$build/pw_ab" "$@"
