#!/usr/bin/env bash
# ABI hygiene of the shared library ($DPT_SHARED_LIB): it exports only
# dpt_* symbols, exactly the DPT_API functions of the public headers, and
# carries a versioned soname (libdptrain.so.<major>).
set -u
lib=${DPT_SHARED_LIB:-${DPT_BINARY_DIR:?}/libdptrain.so}
src=${DPT_SOURCE_DIR:?}
command -v nm >/dev/null && command -v readelf >/dev/null || { echo "skip: nm/readelf not found"; exit 77; }
[ -f "$lib" ] || { echo "FAIL: no shared library at $lib" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
bad() { echo "FAIL: $*" >&2; fail=$((fail + 1)); }

# Defined dynamic symbols (functions and data), without version suffixes.
nm -D --defined-only "$lib" | awk '{print $3}' | sed 's/@.*//' | sort -u >"$tmp/exported"
echo "exported symbols: $(wc -l <"$tmp/exported")"
grep -v '^dpt_' "$tmp/exported" >"$tmp/foreign"
[ -s "$tmp/foreign" ] && bad "symbols outside dpt_: $(tr '\n' ' ' <"$tmp/foreign")"

# The DPT_API functions declared in the public headers.
cat "$src"/include/dptrain/*.h | tr '\n' ' ' | grep -o 'DPT_API[^;{(]*(' \
  | grep -o 'dpt_[A-Za-z0-9_]*[[:space:]]*($' | sed 's/[[:space:]]*($//' | sort -u >"$tmp/declared"
echo "declared DPT_API functions: $(wc -l <"$tmp/declared")"
missing=$(comm -23 "$tmp/declared" "$tmp/exported")
[ -n "$missing" ] && bad "declared but not exported: $(echo $missing)"
extra=$(comm -13 "$tmp/declared" "$tmp/exported")
[ -n "$extra" ] && bad "exported but not declared in include/dptrain/ (DPT_API on an internal function?): $(echo $extra)"

# A versioned soname that matches the file name's major version.
soname=$(readelf -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
echo "soname: ${soname:-none}"
case "$soname" in
  libdptrain.so.[0-9]*) ;;
  *) bad "soname '${soname:-none}' is not libdptrain.so.<major>" ;;
esac
if [ -n "${DPT_VERSION:-}" ] && [ "$soname" != "libdptrain.so.${DPT_VERSION%%.*}" ]; then
  bad "soname $soname does not match version $DPT_VERSION"
fi
real=$(readlink -f "$lib")
[ "${real##*/}" = "libdptrain.so.${DPT_VERSION:-${real##*.so.}}" ] || bad "library file ${real##*/} is not libdptrain.so.<version>"

# The umbrella header's version macros match the build's version.
if [ -n "${DPT_VERSION:-}" ]; then
  v=$(sed -n 's/^#define DPTRAIN_VERSION_\(MAJOR\|MINOR\|PATCH\) \([0-9]*\)$/\2/p' "$src/include/dptrain/dptrain.h" | paste -sd.)
  [ "$v" = "$DPT_VERSION" ] || bad "dptrain.h says version ${v:-none}, the build $DPT_VERSION"
fi

if [ $fail -ne 0 ]; then
  echo "$fail failure(s)" >&2
  exit 1
fi
echo "abi: all checks passed"
