#!/usr/bin/env bash
# The client side of training: metrics.csv, loss.svg/png, checkpoints, exact
# resume, damaged checkpoints, and a full disk while writing.
set -u
cli=${DPT_CLI:?}
src=${DPT_SOURCE_DIR:?}
. "$src/tests/fault_helpers.sh"
d=$src/tests/fixtures/digits400
tmp=$(mktemp -d)
pid=""   # the run killed mid-epoch, while it runs
trap '[ -n "$pid" ] && kill -9 $pid 2>/dev/null; rm -rf "$tmp"' EXIT
trap "exit 1" INT TERM HUP
fail=0 pass=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*" >&2; fail=$((fail + 1)); }
run() { "$cli" train --data "$d" --batch 32 --workers 2 --seed 4 --quiet "$@"; }

# ---- metrics and plot --------------------------------------------------------------
run --epochs 2 --out "$tmp/a" --eval-every-epoch --checkpoint-every 5 >/dev/null 2>"$tmp/err" || bad "train: $(cat "$tmp/err")"
python3 - "$tmp/a" <<'PY' && ok || bad "metrics.csv"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1] + "/metrics.csv")))
assert list(rows[0]) == ["epoch", "iteration", "loss", "elapsed_s", "images_per_s", "lr", "test_accuracy"]
its = [int(r["iteration"]) for r in rows]
assert its == list(range(1, len(rows) + 1)), its        # one row per iteration, in order
assert len(rows) == 24                                  # 360 images / 32 per batch, 2 epochs
el = [float(r["elapsed_s"]) for r in rows]
assert el == sorted(el)
acc = [r for r in rows if r["test_accuracy"]]
assert [int(r["iteration"]) for r in acc] == [12, 24]   # end of each epoch
assert all(0 <= float(r["test_accuracy"]) <= 1 for r in acc)
assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
PY
python3 - "$tmp/a/loss.svg" <<'PY' && ok || bad "loss.svg is not well-formed SVG with the epoch title"
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
assert root.tag == "{http://www.w3.org/2000/svg}svg"
texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
assert any(t and t.startswith("Epoch: 2 of 2, Elapsed: ") for t in texts), texts
assert len(list(root.iter("{http://www.w3.org/2000/svg}polyline"))) == 2  # loss and accuracy
PY
if command -v rsvg-convert >/dev/null; then
  [ "$(head -c 8 "$tmp/a/loss.png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] && ok || bad "loss.png missing or not a PNG"
else
  echo "note: rsvg-convert not installed, loss.png not checked"
fi
[ ! -e "$tmp/a/loss.svg.tmp" ] && ok || bad "temporary plot file left behind"

# ---- exact resume ----------------------------------------------------------------------
run --epochs 1 --out "$tmp/b" --checkpoint-every 5 >/dev/null 2>&1
cp "$tmp/b/checkpoint.safetensors" "$tmp/ckpt-epoch1"
run --epochs 2 --out "$tmp/b" --checkpoint-every 5 --resume "$tmp/b/checkpoint.safetensors" >/dev/null 2>"$tmp/err" || bad "resume: $(cat "$tmp/err")"
cmp -s "$tmp/a/model.safetensors" "$tmp/b/model.safetensors" && ok || bad "2 epochs straight != 1 epoch + resume"
# metrics.csv after the resume: the rows of both runs, no duplicates
python3 -c "
import csv,sys; its=[int(r['iteration']) for r in csv.DictReader(open('$tmp/b/metrics.csv'))]
sys.exit(0 if its == list(range(1, 25)) else 1)" && ok || bad "metrics.csv after resume"
# Killed mid-epoch (SIGKILL, as a crash would) once a checkpoint exists, in
# a run of more epochs than it can train (fault_helpers.sh): the kill always
# lands mid-run, however fast the machine. Resumed from its last checkpoint
# up to the end of the epoch it was in, it gives the model of a run trained
# that far without interruption (DPT_TEST_TINY=1: a tiny network).
kargs=(--batch 8 $(tiny_net "$tmp"))
# (not through run(): $! must be dptrain itself, not a subshell)
"${CAPPED[@]}" "$cli" train --data "$d" --workers 2 --seed 4 --quiet "${kargs[@]}" --epochs $LONG_EPOCHS --out "$tmp/k" --checkpoint-every 7 \
  >/dev/null 2>"$tmp/err" &
pid=$!
if await_file "$tmp/k/checkpoint.safetensors" $pid; then
  kill -9 $pid; wait $pid 2>/dev/null; pid=""
  e=$(meta "$tmp/k/checkpoint.safetensors" epoch)
  echo "killed run: last checkpoint at iteration $(meta "$tmp/k/checkpoint.safetensors" iteration), epoch $e, position $(meta "$tmp/k/checkpoint.safetensors" epoch_iteration)"
  run "${kargs[@]}" --epochs "$e" --out "$tmp/straight" >/dev/null 2>"$tmp/err" || bad "uninterrupted run: $(cat "$tmp/err")"
  run "${kargs[@]}" --epochs "$e" --out "$tmp/k" --resume "$tmp/k/checkpoint.safetensors" >/dev/null 2>"$tmp/err" || bad "resume after kill: $(cat "$tmp/err")"
  cmp -s "$tmp/straight/model.safetensors" "$tmp/k/model.safetensors" && ok || bad "killed + resumed != uninterrupted"
else
  bad "the run to be killed wrote no checkpoint: $(cat "$tmp/err")"
  kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null; pid=""
fi
python3 - "$tmp/a/checkpoint.safetensors" <<'PY' && ok || bad "checkpoint metadata"
import json, struct, sys
b = open(sys.argv[1], "rb").read()
(n,) = struct.unpack("<Q", b[:8])
h = json.loads(b[8:8 + n])
m = h["__metadata__"]
assert m["format"] == "dptrain.checkpoint.v2" and m["iteration"] == "24" and m["epoch"] == "3", m
assert m["epoch_iteration"] == "0" and len(m["crc32"]) == 8 and "conv1" in m["spec"]
assert h["optim/Velocity"]["shape"] == [123090]
PY
# A different worker count may resume (not bit-identical): it must finish.
run --epochs 2 --workers 1 --out "$tmp/d" --resume "$tmp/ckpt-epoch1" >/dev/null 2>"$tmp/err" && [ -s "$tmp/d/model.safetensors" ] \
  && ok || bad "resume with another worker count: $(cat "$tmp/err")"

# ---- damaged checkpoints are rejected --------------------------------------------------
expect_error() {
  local needle=$1; shift
  "$@" >/dev/null 2>"$tmp/err"; local rc=$?
  [ $rc -eq 1 ] && grep -q "^dptrain: " "$tmp/err" && grep -qF -- "$needle" "$tmp/err" && ok \
    || bad "want exit 1 and '$needle', got $rc: $(cat "$tmp/err")"
}
head -c 300000 "$tmp/ckpt-epoch1" >"$tmp/trunc.safetensors"
expect_error "trunc.safetensors" run --epochs 2 --out "$tmp/e" --resume "$tmp/trunc.safetensors"
python3 - "$tmp/ckpt-epoch1" "$tmp/flip.safetensors" <<'PY'
import sys
b = bytearray(open(sys.argv[1], "rb").read()); b[-1000] ^= 0x10
open(sys.argv[2], "wb").write(b)
PY
expect_error "flip.safetensors: checksum mismatch" run --epochs 2 --out "$tmp/e" --resume "$tmp/flip.safetensors"
[ ! -e "$tmp/e/model.safetensors" ] && ok || bad "model written after a bad checkpoint"
printf 'input in size=28x28x1\nconv conv1 filter=3 filters=20\nbatchnorm bn1\nrelu relu1\nfc fc outputs=classes\nsoftmax softmax\n' >"$tmp/other.net"
expect_error "tensor 'conv1/Weights' has another shape" run --epochs 2 --out "$tmp/e" --net "$tmp/other.net" --resume "$tmp/ckpt-epoch1"

# ---- a full disk while writing: clear error, previous files intact ---------------------
cp -r "$tmp/b" "$tmp/full"
cp "$tmp/full/checkpoint.safetensors" "$tmp/ckpt.before"
cp "$tmp/full/model.safetensors" "$tmp/model.before"
# 600 KiB per file: the model (480 KiB) fits, the checkpoint (960 KiB) does not.
( trap '' XFSZ; ulimit -f 600; "$cli" train --data "$d" --batch 32 --workers 2 --seed 9 --quiet --epochs 1 \
    --out "$tmp/full" --checkpoint-every 100 ) >/dev/null 2>"$tmp/err"
rc=$?
[ $rc -eq 1 ] && grep -q "checkpoint.safetensors" "$tmp/err" && ok || bad "disk full: exit $rc, $(cat "$tmp/err")"
cmp -s "$tmp/full/checkpoint.safetensors" "$tmp/ckpt.before" && ok || bad "previous checkpoint damaged"
cmp -s "$tmp/full/model.safetensors" "$tmp/model.before" && ok || bad "previous model damaged"
ls "$tmp/full" | grep -q tmp && bad "temporary file left: $(ls "$tmp/full")" || ok

echo "test_client: $pass passed, $fail failed"
[ $fail -eq 0 ]
