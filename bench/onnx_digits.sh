#!/usr/bin/env bash
# The figures of docs/onnx.md: ONNX Runtime against dptrain on the digits
# test set. Splits the 10,000 digits (scripts/fetch-digits) per label, every
# tenth image of a label held out (1,000 test images), trains the example
# network briefly, exports it, and runs the held-out images through
# dptrain (as dptrain predict does: dpt_image_load, PREDICT forward, one
# image at a time) and through ONNX Runtime (onnxruntime-node,
# scripts/fetch-onnxruntime; the whole test set as one batch): the number
# of equal classes and the largest probability difference, and dptrain
# predict's own printed labels against ORT's.
#
#   bench/onnx_digits.sh [digits folder] [build folder] [epochs]
#     (defaults: data/digits, build, 3; ORT from $DPT_ORT_DIR or the cache)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
data=${1:-$root/data/digits}
build=${2:-$root/build}
epochs=${3:-3}
ort=$("$root/scripts/fetch-onnxruntime" | tail -n 1)
[ -d "$data/0" ] || { echo "onnx_digits: $data missing (scripts/fetch-digits)" >&2; exit 1; }
w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
for d in 0 1 2 3 4 5 6 7 8 9; do
  mkdir -p "$w/train/$d" "$w/test/$d"
  find "$data/$d" -maxdepth 1 -name '*.png' | LC_ALL=C sort -V >"$w/all"
  awk 'NR % 10 == 0' "$w/all" | xargs -r -d '\n' ln -s -t "$w/test/$d"
  awk 'NR % 10 != 0' "$w/all" | xargs -r -d '\n' ln -s -t "$w/train/$d"
done
"$build/dptrain" train --data "$w/train" --test "$w/test" --epochs "$epochs" --seed 1 --out "$w/run" | tail -n 2
"$build/dptrain" export --model "$w/run/model.safetensors" --onnx "$w/digits.onnx"
find "$w/test" -name '*.png' | LC_ALL=C sort >"$w/list"
"$build/onnx_ref" images "$w/run/model.safetensors" "$w/list" "$w/x.bin" "$w/y.bin" >"$w/shape"
res=$(node "$root/tests/onnx_run.js" "$ort" "$w/digits.onnx" "$w/x.bin" "$(sed -n 's/^x //p' "$w/shape")" \
      "$w/y.bin" "$(sed -n 's/^y //p' "$w/shape")" "$w/ort.bin")
echo "ONNX Runtime 1.30.0 against dptrain on $(wc -l <"$w/list") test images: $res"
xargs -d '\n' "$build/dptrain" predict --model "$w/run/model.safetensors" <"$w/list" >"$w/pred"
node -e '
  const fs = require("fs");
  const b = fs.readFileSync(process.argv[1]), y = new Float32Array(b.buffer, b.byteOffset, b.length / 4);
  const lines = fs.readFileSync(process.argv[2], "utf8").trim().split("\n");
  let same = 0, correct = 0, worst = 0;
  lines.forEach((l, r) => {
    const [file, label, score] = l.split("\t");
    let a = 0;
    for (let j = 1; j < 10; j++) if (y[r * 10 + j] > y[r * 10 + a]) a = j;
    if (String(a) === label) same++;
    if (file.split("/").slice(-2)[0] === String(a)) correct++;
    worst = Math.max(worst, Math.abs(y[r * 10 + a] - Number(score)));
  });
  console.log(`dptrain predict lines: ${same} of ${lines.length} labels equal to the ORT argmax; ` +
    `|ORT score - printed 4-decimal score| <= ${worst.toExponential(2)}; ORT accuracy ${(correct / lines.length).toFixed(4)}`);' \
  "$w/ort.bin" "$w/pred"
