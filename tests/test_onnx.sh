#!/usr/bin/env bash
# dptrain export --onnx against real tools: every layer type (the example
# network, a residual graph, grouped/dilated/depthwise convs with both
# pools, concat and dropout, batch norm after fc, LSTM and GRU networks
# with per-step fc/softmax and output=last, a network ending in a conv)
# exported from models with random learnables and batch-norm statistics;
# each file passes python3-onnx's checker (full_check), and ONNX Runtime
# (npm onnxruntime-node, scripts/fetch-onnxruntime) gives dptrain's
# outputs on random inputs: same classes, outputs within 1e-5, two batch
# sizes and sequence lengths (the dynamic dimensions). Then a model
# trained on tests/fixtures/digits400 against dptrain predict on its 400
# images. The checker and ORT parts skip with a message when the tool is
# absent; the CLI's errors are checked in every build with ONNX support.
set -u
. "$(dirname "$0")/cli_helpers.sh"
src=${DPT_SOURCE_DIR:?}
bin=${DPT_BINARY_DIR:?}
ref=$bin/onnx_ref

if [ "${DPT_HAVE_ONNX:-0}" != 1 ]; then
  expect_error "built without ONNX support" "$cli" export --model "$src/tests/fixtures/old_model.safetensors" --onnx "$tmp/x.onnx"
  [ ! -e "$tmp/x.onnx" ] && ok || bad "file written without ONNX support"
  [ $fail -eq 0 ] || exit 1
  echo "skip: built without ONNX support (protobuf-c-compiler, libprotobuf-c-dev, python3-onnx)"
  exit 77
fi
[ -x "$ref" ] || { echo "FAIL: $ref missing"; exit 1; }

# ---- the CLI's contract -----------------------------------------------------------
"$cli" export --help | grep -q "usage: dptrain export" && ok || bad "export --help"
expect_error "--model FILE is required" "$cli" export --onnx "$tmp/x.onnx"
expect_error "--onnx FILE is required" "$cli" export --model m
expect_error "--opset: '12' is not an integer from 13 to 17" "$cli" export --model m --onnx "$tmp/x.onnx" --opset 12
expect_error "nope.safetensors" "$cli" export --model "$tmp/nope.safetensors" --onnx "$tmp/x.onnx"
[ ! -e "$tmp/x.onnx" ] && ok || bad "file written by a failed export"

# ---- the tools ----------------------------------------------------------------------
py=
for p in /usr/bin/python3 python3; do
  if command -v "$p" >/dev/null 2>&1 && "$p" -c "import onnx.checker" >/dev/null 2>&1; then py=$p; break; fi
done
[ -n "$py" ] || echo "note: python3-onnx absent: skipping onnx.checker (apt-get install python3-onnx)"
ort=
for d in "${DPT_ORT_DIR:-}" "$bin/onnxruntime-node" "${XDG_CACHE_HOME:-$HOME/.cache}/dptrain/onnxruntime-node"; do
  if [ -n "$d" ] && [ -d "$d/node_modules/onnxruntime-node" ]; then ort=$d; break; fi
done
if ! command -v node >/dev/null 2>&1; then
  ort=
  echo "note: node absent: skipping the ONNX Runtime comparison"
elif [ -z "$ort" ]; then
  echo "note: onnxruntime-node absent: skipping the ONNX Runtime comparison (run scripts/fetch-onnxruntime)"
fi

# Files for onnx.checker and comparisons for ONNX Runtime are queued and
# run at the end, each tool started once.
: >"$tmp/checks"
: >"$tmp/jobs"
check() { echo "$1" >>"$tmp/checks"; }

# compare NAME N T TOL: dptrain's outputs on N random inputs (T steps) against ORT's.
compare() {
  local name=$1 n=$2 t=$3 tol=$4 j
  [ -n "$ort" ] || return 0
  j=$(wc -l <"$tmp/jobs")
  "$ref" run "$tmp/$name.safetensors" "$n" "$t" 11 "$tmp/x$j.bin" "$tmp/y$j.bin" >"$tmp/shape" || { bad "$name: onnx_ref run"; return; }
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name(N=$n,T=$t)" "$tmp/$name.onnx" "$tmp/x$j.bin" \
    "$(sed -n 's/^x //p' "$tmp/shape")" "$tmp/y$j.bin" "$(sed -n 's/^y //p' "$tmp/shape")" "$tol" >>"$tmp/jobs"
}

# ---- every layer type --------------------------------------------------------------------
"$cli" info --spec >"$tmp/example.net"
cat >"$tmp/residual.net" <<'EOF'
input in size=12x12x3
conv c1 filter=3 filters=8 padding=1
batchnorm b1
relu r1
conv c2 filter=3 filters=8 padding=1
batchnorm b2
add a1 from=b2,r1
relu r2
maxpool p1 size=2
conv c3 filter=3 filters=8 padding=1 bias=0
batchnorm b3 epsilon=0.001
add a2 from=b3,p1
globalavgpool g
fc f outputs=classes
softmax s
EOF
cat >"$tmp/grouped.net" <<'EOF'
input in size=15x13x4
conv c1 filter=3 filters=8 stride=2 padding=2 dilation=2 groups=2
leakyrelu l1 alpha=0.1
conv dw filter=3 filters=16 padding=1 groups=8
sigmoid sg
conv c2 filter=3x5 filters=6 padding=2 dilation=2
tanh t1
avgpool ap size=3 stride=1 padding=1
maxpool mp size=3 stride=1 padding=1 from=t1
concat cat from=ap,mp,t1
dropout d p=0.3
maxpool mp2 size=2x3 stride=2x1
fc f outputs=7
batchnorm bf
relu rf
fc f2 outputs=classes
softmax s
EOF
cat >"$tmp/lstm.net" <<'EOF'
sequenceinput in size=5
lstm l1 units=6
dropout d p=0.2
lstm l2 units=7 output=sequence
fc f outputs=classes
softmax s
EOF
cat >"$tmp/gru.net" <<'EOF'
sequenceinput in size=4
gru g1 units=9
tanh t
leakyrelu lr alpha=0.2
gru g2 units=5 output=last
fc f outputs=classes
softmax s
EOF
cat >"$tmp/lstmlast.net" <<'EOF'
sequenceinput in size=3
fc f0 outputs=4
sigmoid s0
lstm l1 units=8
relu r
lstm l2 units=6
add a from=l2,l2b
concat c from=a,r
lstm l3 units=5 output=last
fc f outputs=classes
softmax s
EOF
# l2b: a second branch for add (same shape as l2).
sed -i 's/^add a from=l2,l2b$/gru l2b units=6 from=r\nadd a from=l2,l2b/' "$tmp/lstmlast.net"
cat >"$tmp/head4d.net" <<'EOF'
input in size=6x6x2
fc f outputs=8
conv c filter=1 filters=3
relu r
EOF

for name in example residual grouped lstm gru lstmlast head4d; do
  "$ref" make "$tmp/$name.net" 5 3 "$tmp/$name.safetensors" >/dev/null || { bad "$name: onnx_ref make"; continue; }
  if "$cli" export --model "$tmp/$name.safetensors" --onnx "$tmp/$name.onnx" >"$tmp/out" 2>&1; then ok; else
    bad "$name: export: $(cat "$tmp/out")"; continue; fi
  check "$tmp/$name.onnx"
  case $name in
    lstm|gru|lstmlast) compare $name 3 6 1e-5; compare $name 1 2 1e-5 ;;
    head4d) compare $name 4 1 1e-4 ;; # unbounded outputs, not probabilities
    *) compare $name 3 1 1e-5; compare $name 1 1 1e-5 ;;
  esac
done
# Opset 13, the lowest: the same graph, checked and run again.
"$ref" make "$tmp/lstm.net" 5 3 "$tmp/lstm13.safetensors" >/dev/null || bad "lstm13: onnx_ref make"
"$cli" export --model "$tmp/lstm13.safetensors" --onnx "$tmp/lstm13.onnx" --opset 13 >/dev/null && ok || bad "export --opset 13"
check "$tmp/lstm13.onnx"
compare lstm13 2 3 1e-5
# Metadata: the class names and the input's preprocessing.
if [ -n "$py" ]; then
  "$py" - "$tmp/example.onnx" >"$tmp/meta" <<'EOF' && ok || bad "metadata: $(cat "$tmp/meta")"
import json, onnx, sys
m = onnx.load(sys.argv[1])
p = {e.key: e.value for e in m.metadata_props}
assert json.loads(p["classes"]) == ["c0", "c1", "c2", "c3", "c4"], p.get("classes")
assert "NCHW" in p["dptrain.input"] and "[0, 1]" in p["dptrain.input"], p["dptrain.input"]
assert p["dptrain.input_layout"] == "NCHW"
assert m.opset_import[0].version == 17
i = m.graph.input[0].type.tensor_type.shape.dim
assert i[0].dim_param == "N" and [d.dim_value for d in i[1:]] == [1, 28, 28], i
EOF
fi

# ---- a trained model on real digits against dptrain predict ------------------------------
"$cli" train --data "$src/tests/fixtures/digits400" --epochs 2 --workers 1 --seed 5 --out "$tmp/run" \
  >"$tmp/train.out" 2>&1 || bad "train: $(tail -n 3 "$tmp/train.out")"
"$cli" export --model "$tmp/run/model.safetensors" --onnx "$tmp/digits.onnx" >/dev/null && ok || bad "export digits"
check "$tmp/digits.onnx"
if [ -n "$ort" ]; then
  find "$src/tests/fixtures/digits400" -name '*.png' | LC_ALL=C sort >"$tmp/list"
  "$ref" images "$tmp/run/model.safetensors" "$tmp/list" "$tmp/dx.bin" "$tmp/dy.bin" >"$tmp/shape" || bad "onnx_ref images"
  [ "$(sed -n 's/^y //p' "$tmp/shape")" = "400 10" ] && ok || bad "digits400: $(cat "$tmp/shape")"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' digits400 "$tmp/digits.onnx" "$tmp/dx.bin" \
    "$(sed -n 's/^x //p' "$tmp/shape")" "$tmp/dy.bin" "$(sed -n 's/^y //p' "$tmp/shape")" 1e-5 "$tmp/ort.bin" >>"$tmp/jobs"
  # dptrain predict's own lines (label, 4-decimal score) for the same images.
  xargs -d '\n' "$cli" predict --model "$tmp/run/model.safetensors" <"$tmp/list" >"$tmp/pred" || bad "predict"
fi

# ---- the queued checks -------------------------------------------------------------------
if [ -n "$py" ]; then
  xargs -d '\n' "$py" -c '
import onnx, sys
for f in sys.argv[1:]:
    onnx.checker.check_model(onnx.load(f), full_check=True)
print("onnx.checker: %d files pass" % (len(sys.argv) - 1))' <"$tmp/checks" >"$tmp/chk" 2>&1 && ok || bad "onnx.checker: $(tail -n 3 "$tmp/chk")"
  cat "$tmp/chk"
fi
if [ -n "$ort" ]; then
  node "$src/tests/onnx_run.js" "$ort" --jobs "$tmp/jobs" >"$tmp/ort.out" 2>&1 && ok || bad "ONNX Runtime differs from dptrain"
  cat "$tmp/ort.out"
  [ "$(grep -c ' ok ' "$tmp/ort.out")" = "$(wc -l <"$tmp/jobs")" ] && ok || bad "ORT: not every comparison ran"
  node -e '
    const fs = require("fs");
    const b = fs.readFileSync(process.argv[1]), y = new Float32Array(b.buffer, b.byteOffset, b.length / 4);
    const classes = JSON.parse(process.argv[3]);
    const lines = fs.readFileSync(process.argv[2], "utf8").trim().split("\n");
    let bad = 0;
    lines.forEach((l, r) => {
      const [, label, score] = l.split("\t");
      let a = 0;
      for (let j = 1; j < 10; j++) if (y[r * 10 + j] > y[r * 10 + a]) a = j;
      if (classes[a] !== label || Math.abs(y[r * 10 + a] - Number(score)) > 5.1e-5) bad++;
    });
    console.log("ORT against dptrain predict: " + (lines.length - bad) + " of " + lines.length + " images agree");
    if (lines.length !== 400 || bad) process.exit(1);' \
    "$tmp/ort.bin" "$tmp/pred" '["0","1","2","3","4","5","6","7","8","9"]' && ok || bad "ORT against dptrain predict's lines"
fi

echo "test_onnx: $pass passed, $fail failed"
[ $fail -eq 0 ]
