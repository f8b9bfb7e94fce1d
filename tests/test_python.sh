#!/usr/bin/env bash
# The Python package (python/dptrain, cffi in ABI mode over the shared
# library): its struct declarations against the C headers (when a C
# compiler is here), then python/tests/test_dptrain.py: the bindings, and
# training on tests/fixtures/digits400 from Python compared byte for byte
# with the CLI's model file. Skips (77) when no python3 with cffi and numpy
# is found ($DPT_PYTHON, python3, /usr/bin/python3), and under sanitizer
# builds (an ASan library cannot be loaded into an uninstrumented python).
set -u
src=${DPT_SOURCE_DIR:?}
lib=${DPT_SHARED_LIB:-${DPT_BINARY_DIR:?}/libdptrain.so}
py=
for cand in ${DPT_PYTHON:-} python3 /usr/bin/python3; do
  if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import cffi, numpy' 2>/dev/null; then
    py=$cand; break
  fi
done
[ -n "$py" ] || { echo "skip: no python3 with cffi and numpy (Debian: python3-cffi python3-numpy)"; exit 77; }
if [ "${DPT_SANITIZED:-0}" = 1 ]; then
  echo "skip: sanitizer build (libdptrain.so needs the ASan runtime loaded first)"; exit 77
fi
[ -f "$lib" ] || { echo "FAIL: no shared library at $lib" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export DPTRAIN_LIBRARY=$lib PYTHONPATH=$src/python${PYTHONPATH:+:$PYTHONPATH}
echo "python: $py ($("$py" -c 'import cffi, numpy; print("cffi", cffi.__version__, "numpy", numpy.__version__)'))"

# The ABI-mode declarations must lay structures out as the headers do:
# a program prints sizeof and every field's offsetof, Python compares.
cc=${CC:-cc}
if command -v "$cc" >/dev/null 2>&1; then
  "$py" - "$tmp/layout.c" <<'PYEOF' || exit 1
import sys
from dptrain._lib import ffi
structs = ["dpt_folder_options", "dpt_spmd_config", "dpt_optim_opts", "dpt_lr_schedule",
           "dpt_param_info", "dpt_kv", "dpt_progress", "dpt_fit_config", "dpt_fit_result"]
lines = ['#include "dptrain/dptrain.h"', "#include <stdio.h>", "#include <stddef.h>",
         "int main(void) {"]
for s in structs:
    lines.append('printf("%s %%zu\\n", sizeof(%s));' % (s, s))
    for f, _ in ffi.typeof(s).fields:
        lines.append('printf("%s.%s %%zu\\n", offsetof(%s, %s));' % (s, f, s, f))
lines.append("return 0; }")
open(sys.argv[1], "w").write("\n".join(lines) + "\n")
PYEOF
  "$cc" -I"$src/include" "$tmp/layout.c" -o "$tmp/layout" || { echo "FAIL: layout program did not build" >&2; exit 1; }
  "$tmp/layout" >"$tmp/c.txt"
  "$py" - "$tmp/c.txt" <<'PYEOF' || exit 1
import sys
from dptrain._lib import ffi
bad = 0
for line in open(sys.argv[1]):
    name, v = line.split()
    s, _, f = name.partition(".")
    got = ffi.offsetof(s, f) if f else ffi.sizeof(s)
    if got != int(v):
        print("FAIL: %s: C says %s, the cffi declaration %d" % (name, v, got), file=sys.stderr)
        bad += 1
print("struct layouts: %d sizes and offsets checked against the headers" % sum(1 for _ in open(sys.argv[1])))
sys.exit(1 if bad else 0)
PYEOF
else
  echo "note: no C compiler ($cc): struct layouts not checked"
fi

cd "$tmp" || exit 1
"$py" "$src/python/tests/test_dptrain.py" -v 2>&1 || exit 1

# The example script, both ways (custom loop, and --fit), on 400 digits: it
# must run to the end and beat chance (0.1) on the held-out images.
for how in "" --fit; do
  out=$("$py" "$src/examples/python/matlab_workflow.py" "$src/tests/fixtures/digits400" \
        --epochs 2 --batch 32 --workers 2 --model "$tmp/ex.safetensors" $how 2>&1) \
    || { echo "$out"; echo "FAIL: examples/python/matlab_workflow.py $how" >&2; exit 1; }
  acc=$(echo "$out" | sed -n 's/^test accuracy: \([0-9.]*\).*/\1/p')
  echo "matlab_workflow.py ${how:-(custom loop)}: test accuracy ${acc:-none}"
  awk -v a="${acc:-0}" 'BEGIN { exit !(a > 0.1) }' || { echo "$out"; echo "FAIL: accuracy ${acc:-missing}" >&2; exit 1; }
  [ -s "$tmp/ex.safetensors" ] || { echo "FAIL: --model not written" >&2; exit 1; }
  rm -f "$tmp/ex.safetensors"
done
echo "python: all passed"
