#!/usr/bin/env bash
# The CLI on sequence data: a tiny character language model and a tiny
# sequence classifier trained here with `dptrain train`, then
# generate (reproducible for a seed, --prime checked against the model's
# vocabulary, --output atomic), eval on a text file (bits per character,
# perplexity) and on a sequence folder, predict on .csv files, and model
# files whose metadata was edited to be hostile (refused with a message, exit
# 1, never a crash).
set -u
cli=${DPT_CLI:?DPT_CLI must point at the dptrain executable}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
pass=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*" >&2; fail=$((fail + 1)); }
command -v python3 >/dev/null || { echo "skip: python3 not found"; exit 77; }

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

# ---- a tiny language model ------------------------------------------------------
# ASCII text of 29 distinct characters (the 26 lower-case letters, space,
# newline and a full stop); 'Q', 'S' and 'é' are not in it.
python3 - "$tmp/tiny.txt" <<'PY'
import sys
words = "the quick brown fox jumps over the lazy dog and the whale swam out to sea".split()
lines = []
for i in range(60):
    lines.append(" ".join(words[(i * 7 + k) % len(words)] for k in range(8)) + ".")
open(sys.argv[1], "w").write("\n".join(lines) + "\n")
PY
printf 'sequenceinput in size=vocab\nlstm lstm1 units=12\nfc fc outputs=vocab\nsoftmax sm\n' >"$tmp/lm.net"
if ! "$cli" train --data "$tmp/tiny.txt" --net "$tmp/lm.net" --epochs 1 --batch 4 --seq-len 16 \
  --optimizer adam --lr 0.01 --workers 1 --out "$tmp/lm" --quiet >"$tmp/train.log" 2>&1; then
  echo "FAIL: training the tiny language model: $(cat "$tmp/train.log")" >&2
  exit 1
fi
lm=$tmp/lm/model.safetensors

# ---- generate --------------------------------------------------------------------
for c in generate; do
  "$cli" $c --help >"$tmp/h" 2>&1 && grep -q "usage: dptrain $c" "$tmp/h" && grep -q "default 200" "$tmp/h" \
    && grep -q "default 1.0" "$tmp/h" && ok || bad "$c --help with defaults"
done
"$cli" --help | grep -q "generate" && ok || bad "dptrain --help lists generate"
"$cli" generate --model "$lm" --seed 5 --length 80 >"$tmp/g1" && ok || bad "generate"
"$cli" generate --model "$lm" --seed 5 --length 80 >"$tmp/g2"
"$cli" generate --model "$lm" --seed 6 --length 80 >"$tmp/g3"
cmp -s "$tmp/g1" "$tmp/g2" && ok || bad "generate: the same seed gave different text"
cmp -s "$tmp/g1" "$tmp/g3" && bad "generate: seeds 5 and 6 gave the same text" || ok
[ "$(python3 -c 'import sys; print(len(set(open(sys.argv[1]).read())))' "$tmp/tiny.txt")" = 29 ] || bad "tiny.txt: not 29 characters"
# 80 characters of the model's vocabulary (ASCII here, so 80 bytes)
[ "$(wc -c <"$tmp/g1")" -eq 80 ] && ok || bad "generate --length 80 wrote $(wc -c <"$tmp/g1") bytes"
LC_ALL=C grep -q '[^a-z .]' <(tr -d '\n' <"$tmp/g1") && bad "generate: characters outside the vocabulary: $(cat "$tmp/g1")" || ok
# the prime comes first and changes what follows; --length 0 writes the prime alone
"$cli" generate --model "$lm" --seed 5 --length 40 --prime "the sailors " >"$tmp/p1"
[ "$(head -c 12 "$tmp/p1")" = "the sailors " ] && [ "$(wc -c <"$tmp/p1")" -eq 52 ] && ok || bad "generate --prime: $(cat "$tmp/p1")"
[ "$("$cli" generate --model "$lm" --length 0 --prime "sea")" = "sea" ] && ok || bad "generate --length 0"
# low temperature: the same seed differs from temperature 1, and is reproducible
"$cli" generate --model "$lm" --seed 5 --length 80 --temperature 0.2 >"$tmp/t1"
"$cli" generate --model "$lm" --seed 5 --length 80 --temperature 0.2 >"$tmp/t2"
cmp -s "$tmp/t1" "$tmp/t2" && ok || bad "generate --temperature 0.2 is not reproducible"
cmp -s "$tmp/t1" "$tmp/g1" && bad "generate: --temperature 0.2 changed nothing" || ok
# --output: the same text, written atomically; nothing written on failure
"$cli" generate --model "$lm" --seed 5 --length 80 --output "$tmp/out.txt" >"$tmp/stdout" \
  && cmp -s "$tmp/out.txt" "$tmp/g1" && [ ! -s "$tmp/stdout" ] && ok || bad "generate --output"
ls "$tmp" | grep -q '\.tmp\.' && bad "generate --output left a temporary file" || ok
expect_error "--output $tmp/nodir/x.txt" "$cli" generate --model "$lm" --output "$tmp/nodir/x.txt"
mkdir "$tmp/afolder"
expect_error "not a regular file" "$cli" generate --model "$lm" --output "$tmp/afolder"
echo old >"$tmp/keep.txt"
expect_error "'Q' (U+0051)" "$cli" generate --model "$lm" --prime "the Q" --output "$tmp/keep.txt"
[ "$(cat "$tmp/keep.txt")" = old ] && ok || bad "a failed generate changed --output"
# --prime outside the vocabulary names the character; bad options
expect_error "--prime: character 'Q' (U+0051) at byte offset 4 is not in the vocabulary" \
  "$cli" generate --model "$lm" --prime "the Q"
expect_error "(U+00E9)" "$cli" generate --model "$lm" --prime "café"
expect_error "--prime: not UTF-8" "$cli" generate --model "$lm" --prime $'a\xff'
expect_error "--temperature: 0 is not above 0" "$cli" generate --model "$lm" --temperature 0
expect_error "--temperature: -1 is not above 0" "$cli" generate --model "$lm" --temperature -1
expect_error "--temperature: 'x' is not a number" "$cli" generate --model "$lm" --temperature x
expect_error "--length: '-1' is not an integer" "$cli" generate --model "$lm" --length -1
expect_error "--seed: '-3' is not an integer" "$cli" generate --model "$lm" --seed -3
expect_error "--model FILE is required" "$cli" generate
expect_error "unknown or incomplete option '--bogus'" "$cli" generate --model "$lm" --bogus
expect_error "$tmp/none.safetensors" "$cli" generate --model "$tmp/none.safetensors"

# ---- eval on text ----------------------------------------------------------------
"$cli" eval --model "$lm" --data "$tmp/tiny.txt" --json >"$tmp/e.json" && ok || bad "eval --json on text: $(cat "$tmp/e.json")"
python3 - "$tmp/e.json" <<'PY' && ok || bad "eval --json on text: $(cat "$tmp/e.json")"
import json, math, sys
r = json.load(open(sys.argv[1]))
bpc, ppl = r["bits_per_character"], r["perplexity"]
# a trained model beats uniform guessing over its 29 characters (4.86 bits)
assert 0 < bpc < math.log2(29), r
assert abs(ppl - 2 ** bpc) < 1e-9 * ppl, r
assert r["streams"] >= 1 and r["seq_len"] == 16 and r["vocabulary"] == 29, r
assert r["scored"] <= r["characters"], r
PY
"$cli" eval --model "$lm" --data "$tmp/tiny.txt" >"$tmp/e.txt" && grep -q "^bits per character: " "$tmp/e.txt" \
  && grep -q "^perplexity: " "$tmp/e.txt" && ok || bad "eval on text: $(cat "$tmp/e.txt")"
# fewer streams, other chunks: another figure, still a valid one
"$cli" eval --model "$lm" --data "$tmp/tiny.txt" --json --streams 1 --seq-len 7 >"$tmp/e1.json" \
  && python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["streams"]==1 and r["seq_len"]==7' "$tmp/e1.json" \
  && ok || bad "eval --streams 1 --seq-len 7: $(cat "$tmp/e1.json")"
printf 'the whale. the Sea.\n' >"$tmp/other.txt"
expect_error "character 'S' (U+0053) at byte offset 15 (line 1) is not in the vocabulary" \
  "$cli" eval --model "$lm" --data "$tmp/other.txt"
printf 'Z' >"$tmp/one.txt"
expect_error "'Z' (U+005A) at byte offset 0 (line 1) is not in the vocabulary" "$cli" eval --model "$lm" --data "$tmp/one.txt"
printf 'a' >"$tmp/one.txt"
expect_error "nothing to score" "$cli" eval --model "$lm" --data "$tmp/one.txt"
expect_error "a folder; a language model is evaluated on a text file" "$cli" eval --model "$lm" --data "$tmp/afolder"
: >"$tmp/empty.txt"
expect_error "empty file" "$cli" eval --model "$lm" --data "$tmp/empty.txt"
expect_error "a language model predicts characters" "$cli" predict --model "$lm" "$tmp/tiny.txt"

# ---- a tiny sequence classifier: predict and eval on .csv ---------------------------
python3 - "$tmp/seq" <<'PY'
import os, random, sys
random.seed(3)
root = sys.argv[1]
for c, sign in (("down", -1), ("up", 1)):
    os.makedirs(os.path.join(root, c))
    for i in range(12):
        T = random.randint(2, 9)
        with open(os.path.join(root, c, "%02d.csv" % i), "w") as f:
            for t in range(T):
                f.write("%.3f,%.3f,%.3f\n" % (sign * t / T, random.uniform(-1, 1), sign * 0.5))
PY
printf 'sequenceinput in size=3\nlstm lstm1 units=8 output=last\nfc fc outputs=classes\nsoftmax sm\n' >"$tmp/cls.net"
if "$cli" train --data "$tmp/seq" --net "$tmp/cls.net" --epochs 2 --batch 8 --optimizer adam --lr 0.02 \
  --workers 1 --out "$tmp/cls" --quiet >"$tmp/train2.log" 2>&1; then ok; else bad "training the sequence classifier: $(cat "$tmp/train2.log")"; fi
cm=$tmp/cls/model.safetensors
"$cli" predict --model "$cm" "$tmp/seq/up/00.csv" "$tmp/seq/down/03.csv" >"$tmp/pred" && ok || bad "predict on .csv: $(cat "$tmp/pred")"
python3 - "$tmp/pred" "$tmp/seq" <<'PY' && ok || bad "predict output: $(cat "$tmp/pred")"
import sys
lines = open(sys.argv[1]).read().splitlines()
assert len(lines) == 2, lines
for line, f in zip(lines, ("up/00.csv", "down/03.csv")):
    path, label, score = line.split("\t")
    assert path == sys.argv[2] + "/" + f and label in ("down", "up") and 0 < float(score) <= 1, line
PY
"$cli" eval --model "$cm" --data "$tmp/seq" --json >"$tmp/ec.json" \
  && python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["n"]==24 and 0<=r["accuracy"]<=1 and sum(map(sum,r["confusion"]))==24 and set(r["per_class"])=={"down","up"}' "$tmp/ec.json" \
  && ok || bad "eval on a sequence folder: $(cat "$tmp/ec.json")"
"$cli" eval --model "$cm" --data "$tmp/seq" >"$tmp/ec.txt" && grep -q "^accuracy: .* (24 sequences)" "$tmp/ec.txt" && ok || bad "eval table: $(cat "$tmp/ec.txt")"
# classes matched by name: a folder holding only "up" counts under the model's "up"
mkdir -p "$tmp/seq_up" && cp -r "$tmp/seq/up" "$tmp/seq_up/"
"$cli" eval --model "$cm" --data "$tmp/seq_up" --json >"$tmp/eu.json" \
  && python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["n"]==12 and r["per_class"]["up"]["n"]==12 and r["per_class"]["down"]["n"]==0' "$tmp/eu.json" \
  && ok || bad "eval by class name: $(cat "$tmp/eu.json")"
mkdir -p "$tmp/seq_up/sideways" && cp "$tmp/seq/up/00.csv" "$tmp/seq_up/sideways/"
expect_error "class 'sideways' is not one of the 2 classes the model knows" "$cli" eval --model "$cm" --data "$tmp/seq_up"
printf '1,2,3\n4,5\n' >"$tmp/ragged.csv"
expect_error "ragged.csv: line 2: 2 values, but line 1 has 3" "$cli" predict --model "$cm" "$tmp/ragged.csv"
printf '1,2\n' >"$tmp/narrow.csv"
expect_error "narrow.csv: 2 features per time step, but the model" "$cli" predict --model "$cm" "$tmp/narrow.csv"
printf '1,2,zz\n' >"$tmp/nan.csv"
expect_error "nan.csv: line 1: field 3 \"zz\" is not a finite number" "$cli" predict --model "$cm" "$tmp/seq/up/00.csv" "$tmp/nan.csv"
[ ! -s "$tmp/out" ] && ok || bad "predict printed before failing on a later file"
expect_error "$tmp/seq" "$cli" predict --model "$cm" "$tmp/seq"
expect_error "not a language model (task 'sequence_classification')" "$cli" generate --model "$cm"
expect_error "not a folder" "$cli" eval --model "$cm" --data "$tmp/tiny.txt"

# ---- hostile metadata ----------------------------------------------------------------
# edit KEY VALUE|-|@FILE: a copy of the language model with one metadata
# value replaced (- removes the key, @FILE reads the value from FILE),
# tensors untouched.
edit() {
  python3 - "$lm" "$tmp/h.safetensors" "$1" "$2" <<'PY'
import json, struct, sys
src, dst, key, value = sys.argv[1:5]
data = open(src, "rb").read()
(n,) = struct.unpack("<Q", data[:8])
head = json.loads(data[8:8 + n])
if value == "-":
    head["__metadata__"].pop(key, None)
elif value.startswith("@"):
    head["__metadata__"][key] = open(value[1:]).read().strip()
else:
    head["__metadata__"][key] = value
h = json.dumps(head).encode()
h += b" " * (-len(h) % 8)
open(dst, "wb").write(struct.pack("<Q", len(h)) + h + data[8 + n:])
PY
}
hostile() { # KEY VALUE NEEDLE: generate and eval both refuse it
  edit "$1" "$2"
  expect_error "$3" "$cli" generate --model "$tmp/h.safetensors"
  expect_error "$3" "$cli" eval --model "$tmp/h.safetensors" --data "$tmp/tiny.txt"
}
hostile vocab '{"a": 1}' "malformed 'vocab' metadata (want a JSON array of code points)"
hostile vocab 'not json [' "malformed 'vocab' metadata"
hostile vocab '[]' "'vocab' metadata has 0 characters, but the network takes 29"
python3 -c 'print(list(range(1, 1000001)))' >"$tmp/huge.json"
hostile vocab "@$tmp/huge.json" "'vocab' metadata has 1000000 characters, but the network takes 29"
# 29 entries, one of them bad: v LIST-EXPRESSION (Python, with r = range(65, 93): 28 good ones)
v() { python3 -c "import json; r = list(range(65, 93)); print(json.dumps($1))"; }
hostile vocab "$(v 'r + [-46]')" "'vocab' entry 28 is not a code point"
hostile vocab "$(v '[-10] + r')" "'vocab' entry 0 is not a code point"
hostile vocab "$(v '[0] + r')" "'vocab' entry 0 is not a code point"
hostile vocab "$(v '[0.5] + r' | sed 's/0\.5/1e400/')" "'vocab' entry 0 is not a code point"
hostile vocab "$(v '["a"] + r')" "'vocab' entry 0 is not a code point"
hostile vocab "$(v '[[1]] + r')" "'vocab' entry 0 is not a code point"
hostile vocab "$(v '[10.5] + r')" "'vocab' entry 0 is not a code point"
hostile vocab "$(v 'r + [1114112]')" "'vocab' entry 28 is not a code point"
hostile vocab "$(v 'r + [55296]')" "vocabulary entry 28 is 55296"
hostile vocab "$(v 'r + [40]')" "vocabulary entry 28 (U+0028) does not follow entry 27 (U+005C)"
hostile vocab - "language model without 'vocab' metadata"
hostile task sequence_classification "not a language model (task 'sequence_classification')"
hostile task - "not a language model (no 'task' metadata)"
edit seq_len 'abc'
expect_error "'seq_len' metadata 'abc' is not an integer from 1 to 65536" "$cli" eval --model "$tmp/h.safetensors" --data "$tmp/tiny.txt"
edit seq_len '0'
expect_error "'seq_len' metadata '0' is not an integer" "$cli" eval --model "$tmp/h.safetensors" --data "$tmp/tiny.txt"
# a classifier that claims to be a language model
python3 - "$cm" "$tmp/h2.safetensors" <<'PY'
import json, struct, sys
data = open(sys.argv[1], "rb").read()
(n,) = struct.unpack("<Q", data[:8])
head = json.loads(data[8:8 + n])
head["__metadata__"]["task"] = "language_model"
head["__metadata__"]["vocab"] = "[97, 98]"
h = json.dumps(head).encode()
h += b" " * (-len(h) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(h)) + h + data[8 + n:])
PY
expect_error "a language model needs a sequence input and an output per time step" "$cli" generate --model "$tmp/h2.safetensors"
# info --model shows a language model's vocabulary, refuses a hostile one
"$cli" info --model "$lm" >"$tmp/info" && grep -q "task .*language_model" "$tmp/info" \
  && grep -q "vocab .*29 characters" "$tmp/info" && ok || bad "info --model on a language model: $(cat "$tmp/info")"
edit vocab '{}'
expect_error "malformed 'vocab' metadata" "$cli" info --model "$tmp/h.safetensors"

echo "test_seq_cli: $pass passed, $fail failed"
[ $fail -eq 0 ]
