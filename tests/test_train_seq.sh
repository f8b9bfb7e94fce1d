#!/usr/bin/env bash
# `dptrain train` on sequence data: a text file trains a character language
# model (held-out bits per character in the progress lines, the result and
# metrics.csv's test_bpc column; model metadata task/vocab/seq_len), a
# folder of class folders of .csv files a sequence classifier (accuracy;
# metadata task/features/classes); the new flags' help, defaults and bad
# values; bad input named by file (and line); mpirun against local threads
# for the language model (skipped without MPI).
set -u
. "$(dirname "$0")/cli_helpers.sh"
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" # Open MPI's own leaks

# A metadata value of a safetensors file (its JSON header), with the
# system's plain python3 (no torch needed).
meta() {
  python3 -c 'import json,struct,sys
f=open(sys.argv[1],"rb"); n=struct.unpack("<Q",f.read(8))[0]
print(json.loads(f.read(n))["__metadata__"].get(sys.argv[2],""))' "$1" "$2"
}

# ---- help, defaults, bad values --------------------------------------------
"$cli" train --help >"$tmp/h"
grep -q -- "--seq-len T" "$tmp/h" && grep -q "default 64" "$tmp/h" && ok || bad "--seq-len in --help"
grep -q -- "--sequence-padding left|right" "$tmp/h" && grep -q "default right" "$tmp/h" && ok || bad "--sequence-padding in --help"
grep -q -- "--max-length T" "$tmp/h" && grep -q "default 0: all" "$tmp/h" && ok || bad "--max-length in --help"

# data: a little language, and a separable sequence folder (rising against
# falling first feature, lengths 2..9)
python3 - "$tmp" <<'EOF'
import os, random, sys
d = sys.argv[1]
r = random.Random(3)
words = ["the ", "cat ", "sat ", "on ", "a ", "mat. ", "dog ", "ran\n"]
open(os.path.join(d, "text.txt"), "w").write("".join(r.choice(words) for _ in range(900)))
for name, n in (("seq", 40), ("seqtest", 16)):
    for c, sign in (("down", -1), ("up", 1)):
        os.makedirs(os.path.join(d, name, c))
        for i in range(n):
            v = r.random()
            rows = []
            for t in range(r.randint(2, 9)):
                v += sign * (0.1 + 0.2 * r.random())
                rows.append("%.4f,%.4f" % (v, r.random() - 0.5))
            open(os.path.join(d, name, c, "s%03d.csv" % i), "w").write("\n".join(rows) + "\n")
EOF
printf 'sequenceinput in size=vocab\nlstm lstm1 units=16\nfc fc outputs=vocab\nsoftmax sm\n' >"$tmp/lm.net"
printf 'sequenceinput in size=2\nlstm lstm1 units=8 output=last\nfc fc outputs=classes\nsoftmax sm\n' >"$tmp/cls.net"
txt=$tmp/text.txt
lm=(train --data "$txt" --net "$tmp/lm.net" --batch 6 --seq-len 8 --epochs 2 --optimizer adam --lr 0.01 --device cpu)

expect_error "--seq-len: '0'" "$cli" "${lm[@]}" --seq-len 0 --out "$tmp/x"
expect_error "--sequence-padding: 'up' is not left or right" "$cli" train --data "$tmp/seq" --sequence-padding up --out "$tmp/x"
expect_error "--max-length: '-1'" "$cli" train --data "$tmp/seq" --max-length -1 --out "$tmp/x"
expect_error "--seq-len: applies to a text --data" "$cli" train --data "$tmp/seq" --seq-len 8 --out "$tmp/x"
expect_error "--sequence-padding: applies to a sequence folder" "$cli" "${lm[@]}" --sequence-padding left --out "$tmp/x"
expect_error "too short for 6 streams" "$cli" "${lm[@]}" --seq-len 1000 --out "$tmp/x"

# ---- bad input ---------------------------------------------------------------
: >"$tmp/empty.txt"
expect_error "$tmp/empty.txt: empty file" "$cli" train --data "$tmp/empty.txt" --out "$tmp/x"
printf 'caf\xe9 au lait\n' >"$tmp/latin1.txt"
expect_error "$tmp/latin1.txt: not UTF-8 text (byte 0xE9" "$cli" train --data "$tmp/latin1.txt" --out "$tmp/x"
printf 'the cat sat on a zebra\n' >"$tmp/test.txt"
expect_error "$tmp/test.txt: character 'z'" "$cli" "${lm[@]}" --test "$tmp/test.txt" --out "$tmp/x"
mkseq() { rm -rf "$tmp/b"; mkdir -p "$tmp/b/a" "$tmp/b/b"; printf '1,2\n3,4\n' >"$tmp/b/a/ok.csv"; printf '1,2\n' >"$tmp/b/b/ok.csv"; }
mkseq; printf '1,2\n3,4,5\n' >"$tmp/b/a/wide.csv"
expect_error "$tmp/b/a/wide.csv: line 2: 3 values, but line 1 has 2" "$cli" train --data "$tmp/b" --out "$tmp/x"
mkseq; printf '1,2\n3,x\n' >"$tmp/b/b/nan.csv"
expect_error "$tmp/b/b/nan.csv: line 2: field 2 \"x\" is not a finite number" "$cli" train --data "$tmp/b" --out "$tmp/x"
mkseq; : >"$tmp/b/b/empty.csv"
expect_error "$tmp/b/b/empty.csv: empty file" "$cli" train --data "$tmp/b" --out "$tmp/x"
[ ! -e "$tmp/x/model.safetensors" ] && ok || bad "a refused run wrote a model"

# ---- a language model ------------------------------------------------------------
if "$cli" "${lm[@]}" --workers 2 --out "$tmp/lm" >"$tmp/out" 2>"$tmp/err"; then
  grep -q "^epoch 2/2 .*held-out bits/char [0-9.]*$" "$tmp/out" && ok || bad "progress line without bits/char: $(cat "$tmp/out")"
  grep -q "^held-out bits per character: [0-9.]* (perplexity" "$tmp/out" && ok || bad "result line: $(cat "$tmp/out")"
  head -1 "$tmp/lm/metrics.csv" | grep -qx "epoch,iteration,loss,elapsed_s,chars_per_s,lr,test_bpc" && ok || bad "metrics.csv header: $(head -1 "$tmp/lm/metrics.csv")"
  # the last row of each epoch carries the held-out bits per character
  [ "$(grep -c ',[0-9.]*[0-9]$' "$tmp/lm/metrics.csv")" -ge 2 ] && tail -1 "$tmp/lm/metrics.csv" | grep -q ',[0-9][0-9.]*$' && ok || bad "test_bpc in metrics.csv: $(tail -2 "$tmp/lm/metrics.csv")"
  [ "$(meta "$tmp/lm/model.safetensors" task)" = language_model ] && [ "$(meta "$tmp/lm/model.safetensors" seq_len)" = 8 ] &&
    meta "$tmp/lm/model.safetensors" vocab | grep -q '^\[10,32,46,97,' && ok || bad "language model metadata"
else
  bad "language model run: $(cat "$tmp/err")"
fi
# --test FILE in the vocabulary
printf 'the cat sat on a mat. the dog ran\n' >"$tmp/test2.txt"
"$cli" "${lm[@]}" --epochs 1 --test "$tmp/test2.txt" --workers 1 --out "$tmp/lm2" >"$tmp/out" 2>"$tmp/err" &&
  grep -q "held-out bits per character: .* 34 characters)" "$tmp/out" && ok || bad "--test text: $(cat "$tmp/out" "$tmp/err")"

# --resume at an epoch's end continues as if never stopped (the state is
# reset there); a text of another vocabulary is refused
if "$cli" "${lm[@]}" --quiet --epochs 1 --workers 2 --checkpoint-every 7 --out "$tmp/ra" >/dev/null 2>"$tmp/err" &&
   "$cli" "${lm[@]}" --quiet --workers 2 --checkpoint-every 7 --resume "$tmp/ra/checkpoint.safetensors" --out "$tmp/ra" >/dev/null 2>>"$tmp/err" &&
   "$cli" "${lm[@]}" --quiet --workers 2 --checkpoint-every 7 --out "$tmp/rb" >/dev/null 2>>"$tmp/err"; then
  cmp -s "$tmp/ra/model.safetensors" "$tmp/rb/model.safetensors" && ok || bad "language model resumed at an epoch's end differs"
  python3 -c 'import json,struct,sys
f=open(sys.argv[1],"rb"); n=struct.unpack("<Q",f.read(8))[0]; h=json.loads(f.read(n))
sys.exit(0 if h["carry"]["shape"] == [6, 32] else 1)' "$tmp/rb/checkpoint.safetensors" && ok || bad "checkpoint lacks carry [6, 32]"
else
  bad "resume: $(cat "$tmp/err")"
fi
printf 'zebras and yaks quietly jump over the lazy fox\n%.0s' $(seq 80) >"$tmp/other.txt"
expect_error "the checkpoint's vocabulary differs from --data's" "$cli" train --data "$tmp/other.txt" --net "$tmp/lm.net" --batch 6 --seq-len 8 --resume "$tmp/rb/checkpoint.safetensors" --out "$tmp/rc"

# ---- a sequence classifier --------------------------------------------------------
if "$cli" train --data "$tmp/seq" --test "$tmp/seqtest" --net "$tmp/cls.net" --batch 16 --epochs 12 \
     --optimizer adam --lr 0.03 --workers 2 --device cpu --eval-every-epoch --out "$tmp/cls" >"$tmp/out" 2>"$tmp/err"; then
  acc=$(sed -n 's/^test accuracy: \([0-9.]*\) (32 sequences)$/\1/p' "$tmp/out")
  [ -n "$acc" ] && python3 -c "import sys; sys.exit(0 if float('$acc') >= 0.8 else 1)" && ok || bad "classifier accuracy: $(cat "$tmp/out")"
  head -1 "$tmp/cls/metrics.csv" | grep -qx "epoch,iteration,loss,elapsed_s,sequences_per_s,lr,test_accuracy" && ok || bad "classifier metrics.csv header"
  [ "$(meta "$tmp/cls/model.safetensors" task)" = sequence_classification ] && [ "$(meta "$tmp/cls/model.safetensors" features)" = 2 ] &&
    [ "$(meta "$tmp/cls/model.safetensors" classes)" = '["down","up"]' ] && ok || bad "classifier metadata"
else
  bad "classifier run: $(cat "$tmp/err")"
fi
# a --test folder with one of the classes: scored under its own name
mkdir -p "$tmp/uponly" && cp -r "$tmp/seqtest/up" "$tmp/uponly/"
"$cli" train --data "$tmp/seq" --test "$tmp/uponly" --net "$tmp/cls.net" --batch 16 --epochs 1 --workers 1 --device cpu \
  --out "$tmp/cls3" >"$tmp/out" 2>"$tmp/err" && grep -q "^test accuracy: [0-9.]* (16 sequences)$" "$tmp/out" && ok ||
  bad "--test folder with a subset of the classes: $(cat "$tmp/out" "$tmp/err")"
mkdir -p "$tmp/alien/sideways" && cp "$tmp/seqtest/up/s000.csv" "$tmp/alien/sideways/"
expect_error "sideways" "$cli" train --data "$tmp/seq" --test "$tmp/alien" --net "$tmp/cls.net" --out "$tmp/x"
# without --test: split per label (80 files, --split 0.75: 60 / 20), the default network
"$cli" train --data "$tmp/seq" --split 0.75 --batch 16 --epochs 1 --workers 1 --device cpu --out "$tmp/cls2" >"$tmp/out" 2>"$tmp/err" &&
  grep -q "training on 60 sequences (2 classes, 2 features), testing on 20" "$tmp/out" &&
  grep -q "^test accuracy: [0-9.]* (20 sequences)$" "$tmp/out" && ok || bad "split sequence folder: $(cat "$tmp/out" "$tmp/err")"

# ---- mpirun against local threads ------------------------------------------------
if [ "${DPT_HAVE_MPI:-0}" = 1 ] && command -v mpirun >/dev/null; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
  # with checkpoints: the carried state is gathered across the ranks
  if "$cli" "${lm[@]}" --quiet --workers 2 --checkpoint-every 10 --out "$tmp/ml" >/dev/null 2>"$tmp/err" &&
     timeout 300 mpirun -np 2 "$cli" "${lm[@]}" --quiet --checkpoint-every 10 --out "$tmp/mm" >/dev/null 2>"$tmp/err"; then
    cmp -s "$tmp/ml/model.safetensors" "$tmp/mm/model.safetensors" && { ok; echo "language model, N=2: mpirun and local threads give the same model file"; } ||
      bad "language model: mpirun and local threads differ"
    # the checkpoints' tensors (carry included) are the same bytes; only
    # the metadata (elapsed time) differs
    python3 -c 'import json,struct,sys
def body(p):
    f=open(p,"rb"); n=struct.unpack("<Q",f.read(8))[0]; f.read(n); return f.read()
sys.exit(0 if body(sys.argv[1]) == body(sys.argv[2]) else 1)' "$tmp/ml/checkpoint.safetensors" "$tmp/mm/checkpoint.safetensors" &&
      ok || bad "language model: mpirun and local checkpoints hold other tensors"
  else
    bad "language model under mpirun: $(cat "$tmp/err")"
  fi
else
  echo "mpirun part skipped: dptrain was built without MPI or mpirun is missing"
fi

echo "test_train_seq: $pass passed, $fail failed"
[ $fail -eq 0 ]
