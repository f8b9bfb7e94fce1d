#!/usr/bin/env bash
# The library as a product: `cmake --install` into a temporary prefix, then
# the example built against what was installed, as a user would build it:
# with pkg-config (shared, and static through Libs.private) and with CMake
# (find_package(dptrain): dptrain::dptrain and dptrain::dptrain_static),
# each run for one short epoch. Also: every installed header compiles on
# its own, and the installed CLI runs.
set -u
bin=${DPT_BINARY_DIR:?}
src=${DPT_SOURCE_DIR:?}
data=$src/tests/fixtures/digits400
# A sanitizer build's libraries need the sanitizer runtime in every program
# that links them: not a configuration to install.
if [ "${DPT_SANITIZED:-0}" = 1 ]; then
  echo "skip: sanitizer build (installed libraries would need -fsanitize in every consumer)"
  exit 77
fi
for tool in cmake pkg-config cc; do
  command -v $tool >/dev/null || { echo "skip: $tool not found"; exit 77; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
fail=0
bad() { echo "FAIL: $*" >&2; fail=$((fail + 1)); }
step() { echo "-- $*"; }

step "cmake --install $bin --prefix $prefix"
if ! cmake --install "$bin" --prefix "$prefix" >"$tmp/install.log" 2>&1; then
  echo "FAIL: install: $(cat "$tmp/install.log")" >&2
  exit 1
fi
pc=$(find "$prefix" -name dptrain.pc | head -1)
[ -n "$pc" ] || { echo "FAIL: no dptrain.pc installed" >&2; exit 1; }
pcdir=$(dirname "$pc")
libdir=$(dirname "$pcdir")
inc=$prefix/include

for f in "$libdir/libdptrain.a" "$libdir/libdptrain.so" "$prefix/bin/dptrain" \
         "$libdir/cmake/dptrain/dptrainConfig.cmake" "$libdir/cmake/dptrain/dptrainConfigVersion.cmake" \
         "$inc/dptrain/dptrain.h" "$prefix/share/doc/dptrain/examples/parallel_custom_loop.c"; do
  [ -e "$f" ] || bad "not installed: ${f#$prefix/}"
done
for h in "$src"/include/dptrain/*.h; do
  [ -f "$inc/dptrain/${h##*/}" ] || bad "header not installed: ${h##*/}"
done
[ -z "$(find "$prefix/include" -name '*.h' ! -path "*/dptrain/*")" ] || bad "stray headers installed"
"$prefix/bin/dptrain" info >/dev/null 2>&1 || bad "installed CLI: dptrain info failed"

step "each installed header compiles alone (C11, -pedantic)"
for h in "$inc"/dptrain/*.h; do
  printf '#include "dptrain/%s"\nint main(void) { return 0; }\n' "${h##*/}" >"$tmp/h.c"
  cc -std=c11 -Wall -Wextra -pedantic -Werror -I"$inc" -c "$tmp/h.c" -o "$tmp/h.o" 2>"$tmp/h.err" \
    || bad "${h##*/} does not compile alone: $(head -5 "$tmp/h.err")"
done

# run NAME EXE: one epoch on 2 workers; it must finish and report accuracy.
run() {
  local name=$1 exe=$2
  if LD_LIBRARY_PATH=$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} "$exe" "$data" 1 2 >"$tmp/$name.log" 2>&1 \
     && grep -q '^test accuracy ' "$tmp/$name.log"; then
    echo "   $name: $(grep '^test accuracy' "$tmp/$name.log")"
  else
    bad "$name did not run: $(tail -5 "$tmp/$name.log")"
  fi
}
example=$prefix/share/doc/dptrain/examples/parallel_custom_loop.c

step "pkg-config"
export PKG_CONFIG_PATH=$pcdir
v=$(pkg-config --modversion dptrain 2>&1)
[ "$v" = "${DPT_VERSION:-$v}" ] || bad "pkg-config --modversion: '$v', want ${DPT_VERSION:-}"
flags=$(pkg-config --cflags --libs dptrain)
case "$flags" in *"-ldptrain"*) ;; *) bad "pkg-config --libs lacks -ldptrain: $flags" ;; esac
if cc -std=c11 -Wall -Wextra -pedantic -Werror "$example" $flags -o "$tmp/pc_shared" 2>"$tmp/cc.err"; then
  # It must load the installed library, not the one in the build tree.
  LD_LIBRARY_PATH=$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} ldd "$tmp/pc_shared" | grep -q "$libdir/libdptrain.so.[0-9]" \
    || bad "pkg-config build does not use $libdir/libdptrain.so: $(ldd "$tmp/pc_shared" | grep dptrain)"
  run pkg-config-shared "$tmp/pc_shared"
else
  bad "cc parallel_custom_loop.c \$(pkg-config --cflags --libs dptrain): $(head -20 "$tmp/cc.err")"
fi
# Static: libdptrain.a plus Libs.private.
static_libs=$(pkg-config --static --libs dptrain | sed 's/-ldptrain\b/-Wl,-Bstatic -ldptrain -Wl,-Bdynamic/')
if cc "$example" $(pkg-config --cflags dptrain) $static_libs -o "$tmp/pc_static" 2>"$tmp/cc.err"; then
  readelf -d "$tmp/pc_static" | grep -q 'NEEDED.*libdptrain' && bad "static pkg-config build still needs libdptrain.so"
  run pkg-config-static "$tmp/pc_static"
else
  bad "static link with pkg-config --static --libs dptrain: $(head -20 "$tmp/cc.err")"
fi

step "CMake find_package(dptrain)"
if cmake -S "$prefix/share/doc/dptrain/examples" -B "$tmp/cmake" -DCMAKE_PREFIX_PATH="$prefix" \
     -DCMAKE_BUILD_TYPE=Release >"$tmp/cmake.log" 2>&1 \
   && cmake --build "$tmp/cmake" -j2 >>"$tmp/cmake.log" 2>&1; then
  run cmake-shared "$tmp/cmake/parallel_custom_loop"
  if [ -x "$tmp/cmake/parallel_custom_loop_static" ]; then
    readelf -d "$tmp/cmake/parallel_custom_loop_static" | grep -q 'NEEDED.*libdptrain' \
      && bad "dptrain::dptrain_static build still needs libdptrain.so"
    if [ "${DPT_HAVE_MPI:-0}" = 1 ]; then
      readelf -d "$tmp/cmake/parallel_custom_loop_static" | grep -q 'NEEDED.*libmpi' \
        || bad "dptrain::dptrain_static does not bring MPI (MPI::MPI_C) along"
    fi
    run cmake-static "$tmp/cmake/parallel_custom_loop_static"
  else
    bad "dptrain::dptrain_static not usable (dptrain_static_FOUND false): $(grep -i -A3 'static\|not found' "$tmp/cmake.log" | head)"
  fi
  [ -x "$tmp/cmake/custom_loss" ] || bad "custom_loss not built with CMake"
else
  bad "CMake build of the installed examples: $(tail -30 "$tmp/cmake.log")"
fi

# The Python package, installed beside the library, finds the installed
# libdptrain.so.0 by itself (no DPTRAIN_LIBRARY, no build tree).
for py in python3 /usr/bin/python3 ""; do
  [ -n "$py" ] && "$py" -c 'import cffi, numpy' 2>/dev/null && break
done
if [ -n "$py" ]; then
  step "python package"
  got=$(cd "$tmp" && env -u DPTRAIN_LIBRARY PYTHONPATH="$prefix/share/dptrain/python" "$py" -c \
        'import dptrain; n = dptrain.Network.from_spec(None, n_classes=3, max_batch=2); print(dptrain.library_path, n.n_outputs)' 2>&1)
  case "$got" in
    "$prefix"/lib*/libdptrain.so.0\ 3) ;;
    *) bad "installed python package: $got" ;;
  esac
else
  echo "-- python package: not checked (no python3 with cffi and numpy)"
fi

if [ $fail -ne 0 ]; then
  echo "$fail failure(s)" >&2
  exit 1
fi
echo "install: all checks passed"
