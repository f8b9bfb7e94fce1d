# Sourced by the shell tests of the CLI contract: the executable under test
# ($cli, from DPT_CLI), a scratch folder removed on exit ($tmp), pass/fail
# counting (ok, bad; a test ends with `[ $fail -eq 0 ]`), and expect_error.
cli=${DPT_CLI:?DPT_CLI must point at the dptrain executable}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
pass=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*" >&2; fail=$((fail + 1)); }

# expect_error NEEDLE CMD...: exit 1, "dptrain: " on stderr containing NEEDLE.
expect_error() {
  local needle=$1; shift
  "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  if [ $rc -ne 1 ]; then bad "exit $rc, want 1: $* ($(head -c 300 "$tmp/err"))"; return; fi
  if ! grep -q "^dptrain: " "$tmp/err"; then bad "no 'dptrain: ' message: $*"; return; fi
  if ! grep -qF -- "$needle" "$tmp/err"; then bad "message lacks '$needle': $(cat "$tmp/err")"; return; fi
  ok
}
