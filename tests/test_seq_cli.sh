#!/usr/bin/env bash
# The CLI on sequence data: a tiny character language model and a tiny
# sequence classifier trained here with `dptrain train`, then
# generate (reproducible for a seed, --prime checked against the model's
# vocabulary, --output atomic), eval on a text file (bits per character,
# perplexity) and on a sequence folder, predict on .csv files, and model
# files whose metadata was edited to be hostile (refused with a message, exit
# 1, never a crash).
set -u
. "$(dirname "$0")/cli_helpers.sh"
command -v python3 >/dev/null || { echo "skip: python3 not found"; exit 77; }


# jcheck WHAT FILE EXPR: a Python expression over the file, checked at the
# end in one Python run (r: the file as JSON, or None; lines: its lines).
jcheck() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$tmp/checks"; }

# ---- a tiny language model ------------------------------------------------------
# ASCII text of 29 distinct characters (the 26 lower-case letters, space,
# newline and a full stop); 'Q', 'S' and 'é' are not in it.
# One Python run makes every input (Python starts slowly on a loaded
# machine): the text, a sequence folder (two classes of 12 sequences of 3
# features, 2 to 9 steps) and a vocabulary of a million entries.
python3 - "$tmp" <<'PY'
import os, random, sys
tmp = sys.argv[1]
words = "the quick brown fox jumps over the lazy dog and the whale swam out to sea".split()
lines = [" ".join(words[(i * 7 + k) % len(words)] for k in range(8)) + "." for i in range(60)]
text = "\n".join(lines) + "\n"
assert len(set(text)) == 29
open(os.path.join(tmp, "tiny.txt"), "w").write(text)
random.seed(3)
for c, sign in (("down", -1), ("up", 1)):
    os.makedirs(os.path.join(tmp, "seq", c))
    for i in range(12):
        T = random.randint(2, 9)
        with open(os.path.join(tmp, "seq", c, "%02d.csv" % i), "w") as f:
            for t in range(T):
                f.write("%.3f,%.3f,%.3f\n" % (sign * t / T, random.uniform(-1, 1), sign * 0.5))
open(os.path.join(tmp, "huge.json"), "w").write(str(list(range(1, 1000001))))
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
expect_error "--output $tmp/afolder: not a regular file" "$cli" generate --model "$lm" --output "$tmp/afolder"
if [ -w /dev/full ]; then
  "$cli" generate --model "$lm" --length 10 >/dev/full 2>"$tmp/err"
  [ $? -eq 1 ] && grep -q "^dptrain: stdout: cannot write" "$tmp/err" && ok || bad "generate to a full stdout: $(cat "$tmp/err")"
fi
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
expect_error "generate: unexpected argument 'extra'" "$cli" generate --model "$lm" extra
expect_error "unknown or incomplete option '--bogus'" "$cli" generate --model "$lm" --bogus
expect_error "$tmp/none.safetensors" "$cli" generate --model "$tmp/none.safetensors"

# ---- eval on text ----------------------------------------------------------------
"$cli" eval --model "$lm" --data "$tmp/tiny.txt" --json >"$tmp/e.json" && ok || bad "eval --json on text: $(cat "$tmp/e.json")"
# a trained model beats uniform guessing over its 29 characters (4.86 bits)
jcheck "eval --json on text" "$tmp/e.json" '0 < r["bits_per_character"] < math.log2(29) and abs(r["perplexity"] - 2 ** r["bits_per_character"]) < 1e-9 * r["perplexity"] and r["streams"] >= 1 and r["seq_len"] == 16 and r["vocabulary"] == 29 and 0 < r["scored"] <= r["characters"]'
"$cli" eval --model "$lm" --data "$tmp/tiny.txt" >"$tmp/e.txt" && grep -q "^bits per character: " "$tmp/e.txt" \
  && grep -q "^perplexity: " "$tmp/e.txt" && ok || bad "eval on text: $(cat "$tmp/e.txt")"
# fewer streams, other chunks: another figure, still a valid one
"$cli" eval --model "$lm" --data "$tmp/tiny.txt" --json --streams 1 --seq-len 7 >"$tmp/e1.json" && ok || bad "eval --streams 1"
jcheck "eval --streams 1 --seq-len 7" "$tmp/e1.json" 'r["streams"] == 1 and r["seq_len"] == 7 and r["bits_per_character"] > 0'
jcheck "eval: another reading, another figure" "$tmp/e1.json" 'r["bits_per_character"] != json.load(open(tmp + "/e.json"))["bits_per_character"]'
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
printf 'sequenceinput in size=3\nlstm lstm1 units=8 output=last\nfc fc outputs=classes\nsoftmax sm\n' >"$tmp/cls.net"
if "$cli" train --data "$tmp/seq" --net "$tmp/cls.net" --epochs 2 --batch 8 --optimizer adam --lr 0.02 \
  --workers 1 --out "$tmp/cls" --quiet >"$tmp/train2.log" 2>&1; then ok; else bad "training the sequence classifier: $(cat "$tmp/train2.log")"; fi
cm=$tmp/cls/model.safetensors
"$cli" predict --model "$cm" "$tmp/seq/up/00.csv" "$tmp/seq/down/03.csv" >"$tmp/pred" && ok || bad "predict on .csv: $(cat "$tmp/pred")"
jcheck "predict output" "$tmp/pred" 'len(lines) == 2 and [l.split("\t")[0] for l in lines] == [tmp + "/seq/up/00.csv", tmp + "/seq/down/03.csv"] and all(l.split("\t")[1] in ("down", "up") and 0 < float(l.split("\t")[2]) <= 1 for l in lines)'
"$cli" eval --model "$cm" --data "$tmp/seq" --json >"$tmp/ec.json" && ok || bad "eval on a sequence folder"
jcheck "eval on a sequence folder" "$tmp/ec.json" 'r["n"] == 24 and 0 <= r["accuracy"] <= 1 and sum(map(sum, r["confusion"])) == 24 and sorted(r["per_class"]) == ["down", "up"] and abs(r["accuracy"] - (r["confusion"][0][0] + r["confusion"][1][1]) / 24) < 1e-12'
"$cli" eval --model "$cm" --data "$tmp/seq" >"$tmp/ec.txt" && grep -q "^accuracy: .* (24 sequences)" "$tmp/ec.txt" && ok || bad "eval table: $(cat "$tmp/ec.txt")"
# classes matched by name: a folder holding only "up" counts under the model's "up"
mkdir -p "$tmp/seq_up" && cp -r "$tmp/seq/up" "$tmp/seq_up/"
"$cli" eval --model "$cm" --data "$tmp/seq_up" --json >"$tmp/eu.json" && ok || bad "eval by class name"
jcheck "eval by class name" "$tmp/eu.json" 'r["n"] == 12 and r["per_class"]["up"]["n"] == 12 and r["per_class"]["down"]["n"] == 0 and r["confusion"][0] == [0, 0]'
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
expect_error "not a folder (a sequence classifier is evaluated on a folder of class sub-folders" \
  "$cli" eval --model "$cm" --data "$tmp/tiny.txt"
expect_error "--sequence-padding: 'middle' is not left or right" "$cli" eval --model "$cm" --data "$tmp/seq" --sequence-padding middle
"$cli" eval --model "$cm" --data "$tmp/seq" --json --sequence-padding left >"$tmp/el.json" && cmp -s "$tmp/el.json" "$tmp/ec.json" \
  && ok || bad "eval --sequence-padding left differs from right: $(cat "$tmp/el.json") $(cat "$tmp/ec.json")"

# ---- hostile metadata ----------------------------------------------------------------
# Copies of the two models with metadata edited, tensors untouched, made in
# one Python run; cases.tsv: file, commands (g generate, e eval, i info),
# the message expected. A value starting with @ is read from that file;
# None removes the key.
python3 - "$lm" "$cm" "$tmp" <<'PY'
import json, struct, sys
lm, cm, tmp = sys.argv[1:4]
r = list(range(65, 93))  # 28 good entries: a vocabulary of 29 needs one more
J = json.dumps
cases = [
    ("vocab", '{"a": 1}', "ge", "malformed 'vocab' metadata (want a JSON array of code points)"),
    ("vocab", "not json [", "ge", "malformed 'vocab' metadata"),
    ("vocab", "[]", "ge", "'vocab' metadata has 0 characters, but the network takes 29"),
    ("vocab", "@huge.json", "ge", "'vocab' metadata has 1000000 characters, but the network takes 29"),
    ("vocab", J(r + [-46]), "ge", "'vocab' entry 28 is not a code point"),
    ("vocab", J([-10] + r), "ge", "'vocab' entry 0 is not a code point"),
    ("vocab", J([0] + r), "ge", "'vocab' entry 0 is not a code point"),
    ("vocab", "[1e400, " + J(r)[1:], "ge", "'vocab' entry 0 is not a code point"),
    ("vocab", J(["a"] + r), "ge", "'vocab' entry 0 is not a code point"),
    ("vocab", J([[1]] + r), "ge", "'vocab' entry 0 is not a code point"),
    ("vocab", J([10.5] + r), "ge", "'vocab' entry 0 is not a code point"),
    ("vocab", J(r + [1114112]), "ge", "'vocab' entry 28 is not a code point"),
    ("vocab", J(r + [55296]), "ge", "vocabulary entry 28 is 55296"),
    ("vocab", J(r + [40]), "ge", "vocabulary entry 28 (U+0028) does not follow entry 27 (U+005C)"),
    ("vocab", "{}", "i", "malformed 'vocab' metadata"),
    ("vocab", None, "ge", "language model without 'vocab' metadata"),
    ("task", "sequence_classification", "ge", "not a language model (task 'sequence_classification')"),
    ("task", "sequence_classification", "E", "the network gives an output per time step, not one per sequence"),
    ("task", None, "ge", "not a language model (no 'task' metadata)"),
    ("seq_len", "abc", "e", "'seq_len' metadata 'abc' is not an integer from 1 to 65536"),
    ("seq_len", "0", "e", "'seq_len' metadata '0' is not an integer"),
]
def write(src, dst, edits):
    data = open(src, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    head = json.loads(data[8:8 + n])
    for key, value in edits:
        if value is None:
            head["__metadata__"].pop(key, None)
        else:
            if value.startswith("@"):
                value = open(tmp + "/" + value[1:]).read()
            head["__metadata__"][key] = value
    h = json.dumps(head).encode()
    h += b" " * (-len(h) % 8)
    open(dst, "wb").write(struct.pack("<Q", len(h)) + h + data[8 + n:])
with open(tmp + "/cases.tsv", "w") as out:
    for i, (key, value, cmds, needle) in enumerate(cases):
        dst = "%s/h%02d.safetensors" % (tmp, i)
        write(lm, dst, [(key, value)])
        out.write("%s\t%s\t%s\n" % (dst, cmds, needle))
    # a classifier that claims to be a language model
    dst = tmp + "/hcls.safetensors"
    write(cm, dst, [("task", "language_model"), ("vocab", "[97, 98]")])
    out.write("%s\t%s\t%s\n" % (dst, "ge", "a language model needs a sequence input and an output per time step"))
PY
while IFS=$'\t' read -r file cmds needle; do
  case $cmds in *g*) expect_error "$needle" "$cli" generate --model "$file" ;; esac
  case $cmds in *e*) expect_error "$needle" "$cli" eval --model "$file" --data "$tmp/tiny.txt" ;; esac
  case $cmds in *E*) expect_error "$needle" "$cli" eval --model "$file" --data "$tmp/seq" ;; esac
  case $cmds in *i*) expect_error "$needle" "$cli" info --model "$file" ;; esac
done <"$tmp/cases.tsv"
[ "$(wc -l <"$tmp/cases.tsv")" -eq 22 ] && ok || bad "hostile cases not all written"
# info shows a sequence network's values per time step or per sequence
"$cli" info --net "$tmp/cls.net" --classes 2 >"$tmp/ic" && grep -q "in .*sequenceinput output 3 per time step$" "$tmp/ic" \
  && grep -q "lstm1 .*lstm .*output 8 per sequence  from in$" "$tmp/ic" && ok || bad "info --net on a classifier: $(cat "$tmp/ic")"
"$cli" info --net "$tmp/lm.net" --classes 29 >"$tmp/il" && grep -q "fc .*fc .*output 29 per time step  from lstm1$" "$tmp/il" \
  && ok || bad "info --net on a language model: $(cat "$tmp/il")"
# info --model shows a language model's vocabulary, refuses a hostile one
"$cli" info --model "$lm" >"$tmp/info" && grep -q "task .*language_model" "$tmp/info" \
  && grep -q "vocab .*29 characters" "$tmp/info" && ok || bad "info --model on a language model: $(cat "$tmp/info")"

# ---- the checks collected by jcheck -----------------------------------------------------
python3 - "$tmp" "$tmp/checks" >"$tmp/jres" <<'PY'
import json, math, sys
tmp = sys.argv[1]
for row in open(sys.argv[2]).read().splitlines():
    what, path, expr = row.split("\t", 2)
    text = open(path, encoding="utf-8", errors="replace").read()
    lines = text.splitlines()
    try:
        r = json.loads(text)
    except ValueError:
        r = None
    try:
        good = eval(expr)
    except Exception as e:
        good = False
    print("%s\t%s\t%s" % ("ok" if good else "bad", what, text[:300].replace("\n", " ")))
PY
while IFS=$'\t' read -r res what text; do
  [ "$res" = ok ] && ok || bad "$what: $text"
done <"$tmp/jres"
[ "$(wc -l <"$tmp/jres")" -eq "$(wc -l <"$tmp/checks")" ] && ok || bad "the Python checks did not all run"

echo "test_seq_cli: $pass passed, $fail failed"
[ $fail -eq 0 ]
