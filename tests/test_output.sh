#!/usr/bin/env bash
# Output that must not mislead (issue 18, section 2, part B):
#   - labels matched by class name in train --test and eval (folders with
#     some of the classes, another order, IDX labels as "0".."9"); a class
#     the model does not know is an error naming it and the folder;
#   - --skip-corrupt names each skipped file and its problem (bounded);
#   - a metrics.csv or loss.svg that cannot be written ends train with exit 1;
#   - names from outside (class folders, files, spec lines) reach the
#     terminal escaped: control characters, newlines, invalid UTF-8 as \xNN,
#     the eval table never cuts a UTF-8 character; a spec may start with a
#     byte-order mark;
#   - every DPT_* environment variable with a value the library cannot use
#     stops the CLI at start, naming the variable.
# Each training run is a tiny network for one or two epochs on at most 400
# digits: nothing here waits for time or depends on the machine's speed.
set -u
. "$(dirname "$0")/cli_helpers.sh"
src=${DPT_SOURCE_DIR:?}
command -v python3 >/dev/null || { echo "skip: python3 not found"; exit 77; }
d=$src/tests/fixtures/digits400
unset DPT_SPIN_US DPT_KERNELS DPT_CGROUP_ROOT DPT_COMM_TIMEOUT_MS DPT_FUSION DPT_FUSION_BLK DPT_DNNL_LAYOUT DPT_CUDA_GRAPH

# no_raw FILE WHAT: no control byte other than newline and tab, valid UTF-8.
no_raw() {
  if LC_ALL=C grep -q $'[\x01-\x08\x0b-\x1f\x7f]' "$1"; then bad "$2: raw control bytes: $(od -c "$1" | head -5)"; return; fi
  if ! python3 -c 'import sys; open(sys.argv[1], "rb").read().decode("utf-8")' "$1" 2>/dev/null; then bad "$2: not valid UTF-8: $(od -c "$1" | head -5)"; return; fi
  ok
}
cat >"$tmp/tiny.net" <<'EOF'
input in size=28x28x1
conv c1 filter=3 filters=4
relu r1
fc f outputs=classes
softmax s
EOF
train() { "$cli" train --quiet --net "$tmp/tiny.net" --epochs 1 --batch 16 --workers 1 "$@"; }
# per_class N JSON CLASS: images eval counted under CLASS
per_class() {
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["per_class"].get(sys.argv[2], {}).get("n", -1))' "$1" "$2"
}

# ---- labels by class name ------------------------------------------------------------
# errors.md: is not one of the
mkdir -p "$tmp/t37" "$tmp/t9"
cp -r "$d/3" "$d/7" "$tmp/t37/"
cp -r "$d/9" "$tmp/t9/"
if train --data "$d" --test "$tmp/t37" --epochs 2 --checkpoint-every 1000 --out "$tmp/m" >"$tmp/log" 2>&1; then
  ok
  # By position the 3s would have been counted as class 0 and the 7s as 1.
  "$cli" eval --model "$tmp/m/model.safetensors" --data "$tmp/t37" --json >"$tmp/e.json" 2>"$tmp/err" && ok || bad "eval t37: $(cat "$tmp/err")"
  [ "$(per_class "$tmp/e.json" 3)" = 40 ] && [ "$(per_class "$tmp/e.json" 7)" = 40 ] \
    && [ "$(per_class "$tmp/e.json" 0)" = 0 ] && [ "$(per_class "$tmp/e.json" 1)" = 0 ] && ok \
    || bad "eval of a folder with classes 3 and 7 did not count them as 3 and 7: $(cat "$tmp/e.json")"
  "$cli" eval --model "$tmp/m/model.safetensors" --data "$tmp/t9" --json >"$tmp/e9.json" 2>&1 \
    && [ "$(per_class "$tmp/e9.json" 9)" = 40 ] && [ "$(per_class "$tmp/e9.json" 0)" = 0 ] && ok \
    || bad "eval of a folder with only class 9: $(cat "$tmp/e9.json")"
  # train's test accuracy is the one eval gives by name (well above what
  # position would give: 3s and 7s labelled 0 and 1 are almost never right).
  tacc=$(sed -n 's/^test accuracy: \([0-9.]*\).*/\1/p' "$tmp/log")
  eacc=$(python3 -c 'import json,sys; print("%.4f" % json.load(open(sys.argv[1]))["accuracy"])' "$tmp/e.json")
  [ -n "$tacc" ] && [ "$tacc" = "$eacc" ] && ok || bad "train --test accuracy $tacc, eval by name $eacc"
  python3 -c "import sys; sys.exit(0 if float('$tacc') > 0.5 else 1)" && ok || bad "test accuracy $tacc: labels by position?"
  # IDX: classes are the label numbers, matched to the model's names too.
  python3 - "$tmp" <<'PY'
import struct, sys, random
d = sys.argv[1]
random.seed(2)
n = 12
open(f"{d}/few-images-idx3-ubyte", "wb").write(struct.pack(">IIII", 0x803, n, 28, 28) + bytes(random.randrange(256) for _ in range(n * 784)))
open(f"{d}/few-labels-idx1-ubyte", "wb").write(struct.pack(">II", 0x801, n) + bytes([2] * 5 + [5] * 7))
PY
  "$cli" eval --model "$tmp/m/model.safetensors" --data "$tmp/few-images-idx3-ubyte" --json >"$tmp/ei.json" 2>&1 \
    && [ "$(per_class "$tmp/ei.json" 2)" = 5 ] && [ "$(per_class "$tmp/ei.json" 5)" = 7 ] && ok \
    || bad "eval of IDX labels 2 and 5: $(cat "$tmp/ei.json")"
  # A class the model does not know: error naming the class and the folder.
  mkdir -p "$tmp/tcat/3" "$tmp/tcat/cat"
  cp "$d/3/"* "$tmp/tcat/3/"; cp "$d/4/"* "$tmp/tcat/cat/"
  expect_error "$tmp/tcat: class 'cat' is not one of the 10 classes the model knows ('0', '1'" \
    "$cli" eval --model "$tmp/m/model.safetensors" --data "$tmp/tcat"
  expect_error "$tmp/tcat: class 'cat' is not one of the 10 classes" train --data "$d" --test "$tmp/tcat" --out "$tmp/mc"
  [ ! -e "$tmp/mc/model.safetensors" ] && ok || bad "model written despite an unknown test class"
  # --resume with data of other classes: same count, one renamed; fewer.
  # errors.md: the checkpoint's classes are
  cp -r "$d" "$tmp/ren"; mv "$tmp/ren/9" "$tmp/ren/nine"
  expect_error "--resume $tmp/m/checkpoint.safetensors: the checkpoint's classes are [\"0\",\"1\"" \
    train --data "$tmp/ren" --epochs 3 --resume "$tmp/m/checkpoint.safetensors" --out "$tmp/mr"
  grep -qF "but --data $tmp/ren has [\"0\",\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"nine\"]" "$tmp/err" && ok \
    || bad "--resume: the data's classes not shown: $(cat "$tmp/err")"
  expect_error "but --data $tmp/t37 has [\"3\",\"7\"]" \
    train --data "$tmp/t37" --epochs 3 --resume "$tmp/m/checkpoint.safetensors" --out "$tmp/mr"
  [ ! -e "$tmp/mr/model.safetensors" ] && ok || bad "model written despite a class mismatch on resume"
  train --data "$d" --test "$tmp/t37" --epochs 3 --resume "$tmp/m/checkpoint.safetensors" --out "$tmp/mr" >"$tmp/out" 2>&1 \
    && ok || bad "--resume with the same data refused: $(cat "$tmp/out")"
else
  bad "train --test with classes 3 and 7 failed: $(cat "$tmp/log")"
fi

# ---- names from outside: class names with control characters, newlines, -------------
# invalid UTF-8, long UTF-8; predict, eval, info
mkdir -p "$tmp/w"
c1=$'new\nline\e[31m'; c2=$'\xff\xfebad'; c3='éééééééééé'
mkdir "$tmp/w/$c1" "$tmp/w/$c2" "$tmp/w/$c3"
for f in $(ls "$d/0" | head -20); do cp "$d/0/$f" "$tmp/w/$c1/"; done
for f in $(ls "$d/1" | head -20); do cp "$d/1/$f" "$tmp/w/$c2/"; done
for f in $(ls "$d/2" | head -20); do cp "$d/2/$f" "$tmp/w/$c3/"; done
if train --data "$tmp/w" --test "$tmp/w" --out "$tmp/mw" >"$tmp/log" 2>&1; then
  ok
  imgs=("$tmp/w/$c1/$(ls "$tmp/w/$c1" | head -1)" "$tmp/w/$c2/$(ls "$tmp/w/$c2" | head -1)" "$tmp/w/$c3/$(ls "$tmp/w/$c3" | head -1)")
  "$cli" predict --model "$tmp/mw/model.safetensors" "${imgs[@]}" >"$tmp/p" 2>"$tmp/err" && ok || bad "predict: $(cat "$tmp/err")"
  [ "$(wc -l <"$tmp/p")" = 3 ] && ok || bad "predict: 3 images, $(wc -l <"$tmp/p") lines: $(cat -A "$tmp/p")"
  no_raw "$tmp/p" "predict"
  grep -qF 'new\x0aline\x1b[31m' "$tmp/p" && grep -qF '\xff\xfebad' "$tmp/p" && ok || bad "predict: names not escaped: $(cat -A "$tmp/p")"
  "$cli" eval --model "$tmp/mw/model.safetensors" --data "$tmp/w" >"$tmp/ev" 2>"$tmp/err" && ok || bad "eval: $(cat "$tmp/err")"
  no_raw "$tmp/ev" "eval table"
  # the 10-character name cut to 7 whole characters in the header, 12 fit in a row
  grep -qF ' ééééééé ' "$tmp/ev" && grep -qF 'éééééééééé ' "$tmp/ev" && ok || bad "eval table: $(cat "$tmp/ev")"
  "$cli" eval --model "$tmp/mw/model.safetensors" --data "$tmp/w" --json >"$tmp/ej" 2>"$tmp/err" \
    && python3 -c 'import json,sys; k=json.load(open(sys.argv[1], encoding="utf-8"))["per_class"]; sys.exit(0 if "new\\x0aline\\x1b[31m" in k and "\\xff\\xfebad" in k else 1)' "$tmp/ej" \
    && ok || bad "eval --json: keys not escaped or not valid JSON: $(cat "$tmp/ej" "$tmp/err")"
  "$cli" info --model "$tmp/mw/model.safetensors" >"$tmp/inf" 2>&1 && ok || bad "info --model: $(cat "$tmp/inf")"
  no_raw "$tmp/inf" "info --model"
else
  bad "training on classes with odd names failed: $(cat "$tmp/log")"
fi
# a decoder error for a file whose name holds an escape sequence
mkdir -p "$tmp/wb/a" "$tmp/wb/b"
cp "$d/0/$(ls "$d/0" | head -1)" "$tmp/wb/a/"; cp "$d/1/$(ls "$d/1" | head -1)" "$tmp/wb/b/"
printf '\x89PNG\r\n\x1a\n\x1b[2Jjunk' >"$tmp/wb/b/x"$'\e'"[2J.png"
expect_error 'x\x1b[2J.png: cannot decode image' train --data "$tmp/wb" --out "$tmp/mb"
no_raw "$tmp/err" "decoder error"
# a spec line with an escape sequence in a layer name, and a stray BOM
printf 'input in size=28x28x1\n\xef\xbb\xbfconv c1 filter=3 filters=4\n' >"$tmp/bom-mid.net"
expect_error "bom-mid.net:2: unknown layer type '\\xef\\xbb\\xbfconv'" "$cli" info --net "$tmp/bom-mid.net"
no_raw "$tmp/err" "spec error"
# a spec starting with a byte-order mark is read as without
{ printf '\xef\xbb\xbf'; cat "$tmp/tiny.net"; } >"$tmp/bom.net"
"$cli" info --net "$tmp/bom.net" >"$tmp/out" 2>&1 && grep -q "layers (5)" "$tmp/out" && ok || bad "spec with a BOM: $(cat "$tmp/out")"

# ---- --skip-corrupt: a line per skipped file, then a count ----------------------------
# errors.md: skipped (--skip-corrupt)
# errors.md: more unreadable images skipped
mkdir -p "$tmp/sk"
cp -r "$d/0" "$d/1" "$tmp/sk/"
head -c 100 "$d/1/$(ls "$d/1" | head -1)" >"$tmp/sk/1/a-broken.png"
: >"$tmp/sk/0/a-empty.png"
for i in 01 02 03 04 05 06 07 08 09 10; do echo junk >"$tmp/sk/1/j$i.jpg"; done
if train --data "$tmp/sk" --skip-corrupt --out "$tmp/ms" >"$tmp/out" 2>"$tmp/err"; then
  ok
  [ "$(grep -c '; skipped (--skip-corrupt)$' "$tmp/err")" = 10 ] && ok || bad "--skip-corrupt: want 10 lines: $(cat "$tmp/err")"
  grep -qxF "dptrain: $tmp/sk/0/a-empty.png: empty file (0 bytes) is not an image; skipped (--skip-corrupt)" "$tmp/err" && ok \
    || bad "--skip-corrupt: empty file not named: $(cat "$tmp/err")"
  grep -qE "^dptrain: $tmp/sk/1/a-broken.png: cannot decode image: .*; skipped \(--skip-corrupt\)$" "$tmp/err" && ok \
    || bad "--skip-corrupt: broken png not named: $(cat "$tmp/err")"
  grep -qxF "dptrain: $tmp/sk: 2 more unreadable images skipped (--skip-corrupt), 12 in all" "$tmp/err" && ok \
    || bad "--skip-corrupt: no count of the rest: $(cat "$tmp/err")"
else
  bad "--skip-corrupt run failed: $(cat "$tmp/err")"
fi

# ---- an output file that cannot be written: exit 1 naming it ----------------------------
# (a folder in the way of the file: rename cannot replace it, for root too)
# errors.md: training itself finished
rm -f "$tmp/wb/b/x"*; cp "$d/1/$(ls "$d/1" | sed -n 2p)" "$tmp/wb/b/"
for f in metrics.csv loss.svg; do
  rm -rf "$tmp/mo"; mkdir -p "$tmp/mo/$f/x"
  expect_error "$tmp/mo/$f: cannot write: Is a directory (training itself finished: model in $tmp/mo/model.safetensors)" \
    train --data "$tmp/wb" --test "$tmp/wb" --out "$tmp/mo"
done
rm -rf "$tmp/mo"
train --data "$tmp/wb" --test "$tmp/wb" --out "$tmp/mo" >"$tmp/out" 2>&1 && [ -s "$tmp/mo/metrics.csv" ] && ok \
  || bad "the same run into a clean folder: $(cat "$tmp/out")"

# ---- DPT_* environment variables ---------------------------------------------------------
# errors.md: DPT_
env_bad() { local var=$1 val=$2 want=$3; expect_error "$var: $want" env "$var=$val" "$cli" info; }
env_bad DPT_SPIN_US abc "'abc' is not a number of microseconds from 0 to 1000000"
env_bad DPT_SPIN_US -5 "'-5' is not a number of microseconds"
env_bad DPT_SPIN_US 2000000 "'2000000' is not a number of microseconds"
env_bad DPT_SPIN_US 10us "'10us' is not a number"
env_bad DPT_COMM_TIMEOUT_MS 1.5 "'1.5' is not a number of milliseconds (0 waits forever)"
env_bad DPT_COMM_TIMEOUT_MS -1 "'-1' is not a number of milliseconds"
env_bad DPT_FUSION yes "'yes' is not 0 (off) or 1 (on, the default)"
env_bad DPT_FUSION 2 "'2' is not 0 (off) or 1 (on"
env_bad DPT_FUSION_BLK yes "'yes' is not 0 (the residual blocks' fusions off) or 1 (on, the default)"
env_bad DPT_FUSION_BLK 2 "'2' is not 0 (the residual blocks' fusions off) or 1"
env_bad DPT_CUDA_GRAPH yes "'yes' is not 0 or off (eager launches), 1 or on (CUDA graphs"
env_bad DPT_DNNL_LAYOUT nchw "'nchw' is not a layout (auto, plain, any)"
env_bad DPT_KERNELS sse9 "'sse9' is not a kernel set (auto, generic, avx2, avx512)"
env_bad DPT_KERNELS $'x\ny' "'x\\x0ay' is not a kernel set"
env_bad DPT_CGROUP_ROOT relative/path "'relative/path' is not an absolute path to a folder"
env_bad DPT_CGROUP_ROOT "$tmp/none" "$tmp/none: No such file or directory"
env_bad DPT_CGROUP_ROOT "$tmp/tiny.net" "$tmp/tiny.net is not a folder"
for cmd in "train --data $d" "eval --model x --data y" "predict --model x y"; do
  expect_error "DPT_FUSION: 'on'" env DPT_FUSION=on "$cli" $cmd
  expect_error "DPT_FUSION_BLK: 'off'" env DPT_FUSION_BLK=off "$cli" $cmd
done
if grep -q '^flags' /proc/cpuinfo 2>/dev/null && ! grep -qw avx512f /proc/cpuinfo; then
  env_bad DPT_KERNELS avx512 "'avx512' kernels do not run on this CPU"
fi
# accepted values (and empty = unset) run
for good in "DPT_SPIN_US=0" "DPT_SPIN_US=1000000" "DPT_SPIN_US=" "DPT_COMM_TIMEOUT_MS=0" "DPT_FUSION=0" \
            "DPT_FUSION=1" "DPT_FUSION_BLK=0" "DPT_FUSION_BLK=1" "DPT_FUSION_BLK=" "DPT_KERNELS=generic" "DPT_KERNELS=auto" "DPT_CGROUP_ROOT=/" "DPT_CGROUP_ROOT=$tmp" \
            "DPT_DNNL_LAYOUT=plain" "DPT_DNNL_LAYOUT=any" "DPT_DNNL_LAYOUT=auto" "DPT_CUDA_GRAPH=0" \
            "DPT_CUDA_GRAPH=on"; do
  env "$good" "$cli" info >/dev/null 2>"$tmp/err" && ok || bad "$good refused: $(cat "$tmp/err")"
done

echo "test_output: $pass passed, $fail failed"
[ $fail -eq 0 ]
