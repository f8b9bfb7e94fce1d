#!/usr/bin/env bash
# Replays the CLI fuzzer's seed and regression inputs (fuzz/corpus/cli,
# fuzz/regress/cli: first byte picks train or eval, then one argument per
# line) against the real executable: each must end with exit 0 or 1, never
# a signal, as fuzz/fuzz_cli.c runs them.
set -u
cli=${DPT_CLI:?}
src=${DPT_SOURCE_DIR:?}
n=0 fail=0
for f in "$src"/fuzz/corpus/cli/* "$src"/fuzz/regress/cli/*; do
  [ -f "$f" ] || continue
  cmd=train
  [ $(( $(head -c1 "$f" | od -An -tu1) & 1 )) -eq 1 ] && cmd=eval
  mapfile -t args < <(tail -c +2 "$f" | tr -d '\0')
  extra=(--data /nonexistent/dpt-fuzz)
  [ $cmd = eval ] && extra+=(--model /nonexistent/dpt-fuzz.safetensors)
  timeout 20 "$cli" $cmd "${args[@]}" "${extra[@]}" >/dev/null 2>&1
  rc=$?
  n=$((n + 1))
  if [ $rc -ne 0 ] && [ $rc -ne 1 ]; then echo "FAIL: $f: exit $rc"; fail=$((fail + 1)); fi
done
echo "test_fuzz_cli: $((n - fail)) passed, $fail failed"
[ $n -gt 0 ] && [ $fail -eq 0 ]
