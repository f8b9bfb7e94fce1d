# shellcheck shell=bash
# What the bench scripts share (sourced; not run on its own): this tree's
# library; for the A/B scripts (hwc_ab.sh, pw_ab.sh, dw_ab.sh, stem_ab.sh,
# gemm_rows_ab.sh) another commit's sources in a temporary folder and its
# objects renamed so that they link beside this tree's library; the
# libraries a program linking libdptrain.a needs, and the compile line of a
# bench program (also for hwc_bench.sh, stem_bench.sh, dwpool_bench.sh,
# pw_bench.sh, fc_bench.sh, gemm_bench.sh, conv_dnnl_bench.sh,
# hwc_dnnl_avx2.sh).
#
# After sourcing: ab_root (this tree), ab_build (BENCH_BUILD_DIR, default
# build-bench/: a Release build without CUDA, kept apart from build/).

ab_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ab_build=${BENCH_BUILD_DIR:-$ab_root/build-bench}

# ab_lib SRC DIR: SRC's libdptrain.a, configured (Release, no CUDA) and
# built in DIR.
ab_lib() {
  cmake -S "$1" -B "$2" -DCMAKE_BUILD_TYPE=Release -DDPT_WITH_CUDA=OFF >/dev/null
  cmake --build "$2" --target dptrain_static -j2 >/dev/null
}

# ab_old REF [PATH...]: REF's PATHs (default: the whole tree) unpacked from
# git archive into a new temporary folder, ab_old, removed at exit.
ab_old() {
  local ref=$1
  shift
  ab_old=$(mktemp -d)
  trap 'rm -rf "$ab_old"' EXIT
  git -C "$ab_root" archive "$ref" "$@" | tar -x -C "$ab_old"
}

# ab_old_cc NAME...: $ab_old/src/ops/NAME.c compiled as the library
# compiles it (-O3, NDEBUG) into $ab_old/NAME.o.
ab_old_cc() {
  local f
  for f in "$@"; do
    cc -O3 -DNDEBUG -std=c11 -D_POSIX_C_SOURCE=200809L -DDPT_BUILDING_LIBRARY \
      -I"$ab_old/src" -I"$ab_old/include" -c "$ab_old/src/ops/$f.c" -o "$ab_old/$f.o"
  done
}

# ab_old_objs NAME...: ab_old_cc, then every global symbol the objects
# define renamed old_* (so that both versions link into one program):
# ab_objs, the renamed objects ($ab_old/old_NAME.o).
ab_old_objs() {
  local f objs=()
  ab_old_cc "$@"
  for f in "$@"; do
    objs+=("$ab_old/$f.o")
  done
  nm -g --defined-only "${objs[@]}" | awk 'NF == 3 { print $3 " old_" $3 }' | sort -u \
    >"$ab_old/syms"
  ab_objs=()
  for f in "$@"; do
    objcopy --redefine-syms="$ab_old/syms" "$ab_old/$f.o" "$ab_old/old_$f.o"
    ab_objs+=("$ab_old/old_$f.o")
  done
}

# ab_libs LIB: ab_link, the libraries after LIB (a libdptrain.a) on a link
# line: oneDNN and MPI where LIB was built with them.
ab_libs() {
  ab_link=(-lopenblas -lz -lstb -lcjson -lm -lpthread -ldl)
  # (grep's output to /dev/null, not -q: an early exit would fail nm's
  # side of the pipe under pipefail)
  if nm "$1" 2>/dev/null | grep ' U dnnl_engine_create' >/dev/null; then
    ab_link+=(-ldnnl -lgomp -lstdc++)
  fi
  if nm "$1" 2>/dev/null | grep ' U MPI_Init' >/dev/null; then
    local mpi_link
    read -r -a mpi_link <<<"$(mpicc -showme:link 2>/dev/null || echo -lmpi)"
    ab_link+=("${mpi_link[@]}")
  fi
}

# ab_prog SRC OUT [ARG...]: bench/SRC.c compiled (-O2, warnings on) into
# $ab_build/OUT, linked with $ab_build/libdptrain.a; ARGs (flags, objects)
# come before the library, so an object there replaces the library's.
ab_prog() {
  local src=$1 out=$2
  shift 2
  ab_libs "$ab_build/libdptrain.a"
  local blas=()
  read -r -a blas <<<"$(pkg-config --cflags openblas 2>/dev/null || true)"
  cc -O2 -std=c11 -Wall -Wextra -D_POSIX_C_SOURCE=200809L -I"$ab_root/include" -I"$ab_root/src" \
    "${blas[@]}" "$ab_root/bench/$src.c" "$@" "$ab_build/libdptrain.a" "${ab_link[@]}" \
    -o "$ab_build/$out"
}
