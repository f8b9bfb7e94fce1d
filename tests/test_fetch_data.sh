#!/usr/bin/env bash
# scripts/fetch-text and scripts/fetch-sequences in --check mode, which must
# never download: a missing or altered file or folder is refused with a
# message naming it, and (where the data were fetched into data/ of the
# source tree) an exact copy passes while a copy with one number or one
# character changed fails. A fake npm first on PATH records any call.
set -u
src=${DPT_SOURCE_DIR:?}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
bad() { echo "FAIL: $*" >&2; fail=$((fail + 1)); }

mkdir -p "$tmp/bin"
printf '#!/bin/sh\necho called >>"%s"\nexit 1\n' "$tmp/npm-called" >"$tmp/bin/npm"
chmod +x "$tmp/bin/npm"
export PATH="$tmp/bin:$PATH"

# expect_fail <what> <pattern> <command...>
expect_fail() {
  local what=$1 pat=$2; shift 2
  if "$@" >"$tmp/out" 2>&1; then bad "$what: exit status 0"; return; fi
  grep -q -- "$pat" "$tmp/out" || bad "$what: no \"$pat\" in: $(cat "$tmp/out")"
}

expect_fail "text, missing file" "$tmp/none.txt does not exist" \
  "$src/scripts/fetch-text" --check "$tmp/none.txt"
echo "not the book" >"$tmp/wrong.txt"
expect_fail "text, wrong file" "$tmp/wrong.txt has sha256" \
  "$src/scripts/fetch-text" --check "$tmp/wrong.txt"
expect_fail "sequences, missing folder" "$tmp/none does not exist" \
  "$src/scripts/fetch-sequences" --check "$tmp/none"
mkdir -p "$tmp/wrong/female" "$tmp/wrong/male"
echo "1,0" >"$tmp/wrong/female/0.csv"
expect_fail "sequences, wrong folder" "$tmp/wrong does not hold the expected files" \
  "$src/scripts/fetch-sequences" --check "$tmp/wrong"

text=$src/data/text/moby-dick.txt
if [ -f "$text" ]; then
  cp "$text" "$tmp/copy.txt"
  "$src/scripts/fetch-text" --check "$tmp/copy.txt" >"$tmp/out" 2>&1 ||
    bad "text, exact copy refused: $(cat "$tmp/out")"
  grep -q "1213116 characters" "$tmp/out" || bad "text summary: $(cat "$tmp/out")"
  sed -i '1s/E/e/' "$tmp/copy.txt"
  expect_fail "text, one character changed" "has sha256" \
    "$src/scripts/fetch-text" --check "$tmp/copy.txt"
else
  echo "skip: $text absent (scripts/fetch-text writes it)"
fi

set_dir=$src/data/sequences/names
if [ -d "$set_dir" ]; then
  cp -r "$set_dir" "$tmp/names"
  "$src/scripts/fetch-sequences" --check "$tmp/names" >"$tmp/out" 2>&1 ||
    bad "sequences, exact copy refused: $(cat "$tmp/out")"
  if ! grep -q "female: 4525 sequences, 27 features per step, lengths 2 to 15" "$tmp/out" ||
     ! grep -q "male: 3478 sequences, 27 features per step, lengths 2 to 13" "$tmp/out"; then
    bad "sequences summary: $(cat "$tmp/out")"
  fi
  sed -i '1s/^1/0/' "$tmp/names/male/7.csv"
  expect_fail "sequences, one number changed" "does not hold the expected files" \
    "$src/scripts/fetch-sequences" --check "$tmp/names"
else
  echo "skip: $set_dir absent (scripts/fetch-sequences writes it)"
fi

[ ! -e "$tmp/npm-called" ] || bad "--check called npm"
[ "$fail" = 0 ] && echo "all passed"
exit "$fail"
