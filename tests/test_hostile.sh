#!/usr/bin/env bash
# Hostile paths and files (issue 18, section 2): every case ends with
# "dptrain: <file or option>: <problem>", exit 1, within a time and a peak
# memory far below what the unguarded code took, and nothing written into
# --out. Classes: paths that are not regular files (FIFOs for every path
# option, folders, devices), numbers in checkpoint and model metadata,
# metadata edited under the checksum, resume mismatches, size bombs (spec
# keys, network memory, a model file's spec, gzip, an image at the pixel
# cap). Every command runs under `timeout`, so a regression that hangs
# fails the case instead of the suite; nothing waits on the clock.
set -u
cli=${DPT_CLI:?DPT_CLI must point at the dptrain executable}
src=${DPT_SOURCE_DIR:?}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
pass=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*" >&2; fail=$((fail + 1)); }
d=$src/tests/fixtures/digits400
# Sanitizer builds use several times the memory: no RSS bounds there.
sanitized=${DPT_SANITIZED:-0}
[ "$sanitized" = 1 ] && echo "note: sanitized build, memory bounds not checked"

# measure CMD...: runs CMD, killed after 60 s of wall time (only a hang
# gets near that); prints "rc cpu_seconds peak_MB" (rc 124 when killed),
# stdout and stderr in $tmp/m.out and $tmp/m.err. CPU time, not wall time,
# is what the cases bound: it does not grow with the machine's load.
py=/usr/bin/python3
[ -x "$py" ] || py=python3
cat >"$tmp/run.py" <<'PY'
import resource, subprocess, sys
out, err, cmd = sys.argv[1], sys.argv[2], sys.argv[3:]
with open(out, "wb") as o, open(err, "wb") as e:
    p = subprocess.Popen(cmd, stdout=o, stderr=e, stdin=subprocess.DEVNULL)
    try:
        rc = p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill(); p.wait(); rc = 124
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(rc, "%.2f" % (ru.ru_utime + ru.ru_stime), ru.ru_maxrss // 1024)
PY
measure() {
  if [ -x /usr/bin/time ] && command -v timeout >/dev/null; then
    /usr/bin/time -f "%U %S %M" -o "$tmp/m.time" timeout -s KILL 60 "$@" >"$tmp/m.out" 2>"$tmp/m.err"
    local rc=$?
    [ $rc = 137 ] && rc=124
    awk -v rc=$rc '{ printf "%s %.2f %d\n", rc, $1 + $2, $3 / 1024 }' "$(tail -1 "$tmp/m.time" >"$tmp/m.t1"; echo "$tmp/m.t1")"
  else
    "$py" "$tmp/run.py" "$tmp/m.out" "$tmp/m.err" "$@"
  fi
}

# expect NEEDLE MAX_S MAX_MB CMD...: exit 1 within MAX_S seconds of CPU time
# and MAX_MB of peak RSS, one "dptrain: " line on stderr containing NEEDLE,
# nothing in $tmp/o. A hang is killed after 60 s of wall time.
expect() {
  local needle=$1 max_s=$2 max_mb=$3; shift 3
  rm -rf "$tmp/o"
  read -r rc secs mb < <(measure "$@")
  local err; err=$(cat "$tmp/m.err")
  if [ "$rc" = 124 ]; then bad "hung (killed after 60 s): $*"; return; fi
  if [ "$rc" != 1 ]; then bad "exit $rc, want 1: $* ($(head -c 300 <<<"$err"))"; return; fi
  if ! grep -q "^dptrain: " <<<"$err"; then bad "no 'dptrain: ' message: $*: $err"; return; fi
  if ! grep -qF -- "$needle" <<<"$err"; then bad "message lacks '$needle': $err"; return; fi
  if [ -e "$tmp/o/model.safetensors" ] || [ -e "$tmp/o/checkpoint.safetensors" ] ||
     [ -e "$tmp/o/metrics.csv" ]; then bad "files written into --out despite the error: $*"; return; fi
  if awk "BEGIN{exit !($secs > $max_s)}"; then bad "took $secs s of CPU (bound $max_s): $*"; return; fi
  if [ "$sanitized" != 1 ] && [ "$mb" -gt "$max_mb" ]; then bad "peak RSS $mb MB (bound $max_mb): $*"; return; fi
  echo "ok ($secs s CPU, $mb MB): $needle"
  ok
}

# Commands as arrays (expect runs them in a child process, not as functions).
train=("$cli" train --quiet --epochs 1 --batch 8 --workers 1 --out "$tmp/o")

# ---- fixtures: tiny network, IDX pair, a model and checkpoints -------------------------------
printf 'input in size=28x28x1\nconv c1 filter=3 filters=2\nrelu r\nfc f outputs=classes\nsoftmax s\n' >"$tmp/tiny.net"
"$py" - "$d" "$tmp" <<'PY'
import os, struct, sys, zlib
d, out = sys.argv[1:]
# 40 blank 28x28 images, labels 0..3: enough to train on.
n = 40
open(f"{out}/good-images-idx3-ubyte", "wb").write(struct.pack(">IIII", 0x803, n, 28, 28) + bytes(n * 784))
open(f"{out}/good-labels-idx1-ubyte", "wb").write(struct.pack(">II", 0x801, n) + bytes(i % 4 for i in range(n)))
PY
# The checkpoint and model come from the IDX pair: instant to load again.
I=$tmp/good-images-idx3-ubyte L=$tmp/good-labels-idx1-ubyte
"$cli" train --quiet --data "$I" --net "$tmp/tiny.net" --epochs 1 --batch 8 --workers 1 \
  --checkpoint-every 1000 --out "$tmp/run" >/dev/null 2>"$tmp/err" || { bad "fixture run: $(cat "$tmp/err")"; }
ckpt=$tmp/run/checkpoint.safetensors model=$tmp/run/model.safetensors
img=$d/0/$(ls "$d/0" | head -1)

# ck.py IN OUT [key=value|key=<del>]... [--keep-crc] [--v1]: rewrite a
# checkpoint's metadata; the CRC is recomputed as dptrain writes it (v2:
# tensors in file order, then every pair but crc32 in key order as key NUL
# value NUL; --v1: tensors only, format v1) unless --keep-crc.
cat >"$tmp/ck.py" <<'PY'
import json, struct, sys, zlib
src, dst, *args = sys.argv[1:]
b = open(src, "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n]); data = b[8 + n:]
meta = h["__metadata__"]
v1 = "--v1" in args
if v1:
    meta["format"] = "dptrain.checkpoint.v1"
    for k in ("batch", "train_images"): meta.pop(k, None)
for a in args:
    if a.startswith("--"): continue
    k, v = a.split("=", 1)
    if v == "<del>": meta.pop(k, None)
    else: meta[k] = v
if "--keep-crc" not in args:
    crc = 0
    for k, e in sorted(((k, e) for k, e in h.items() if k != "__metadata__"), key=lambda x: x[1]["data_offsets"][0]):
        o = e["data_offsets"]; crc = zlib.crc32(data[o[0]:o[1]], crc)
    if not v1:
        for k in sorted(meta, key=lambda s: s.encode()):
            if k != "crc32": crc = zlib.crc32(k.encode() + b"\0" + meta[k].encode() + b"\0", crc)
    meta["crc32"] = "%08x" % crc
hb = json.dumps(h).encode()
open(dst, "wb").write(struct.pack("<Q", len(hb)) + hb + data)
PY
ck() { "$py" "$tmp/ck.py" "$ckpt" "$tmp/c.st" "$@"; }
resume=("${train[@]}" --data "$I" --net "$tmp/tiny.net" --resume "$tmp/c.st")

# ---- 1. paths that are not regular files -------------------------------------------------------
mkfifo "$tmp/fifo"
F=$tmp/fifo
fifo="not a regular file (a FIFO)"
expect "$F: $fifo" 10 100 "$cli" info --net "$F"
expect "$F: $fifo" 10 100 "$cli" info --model "$F"
expect "$F: $fifo" 10 100 "$cli" train --data "$I" --net "$F" --out "$tmp/o"
expect "$F: $fifo" 10 100 "$cli" train --data "$I" --net "$tmp/tiny.net" --resume "$F" --out "$tmp/o"
expect "$F: $fifo" 10 100 "$cli" train --data "$F" --labels "$tmp/good-labels-idx1-ubyte" --out "$tmp/o"
expect "$F: $fifo" 10 100 "$cli" train --data "$tmp/good-images-idx3-ubyte" --labels "$F" --out "$tmp/o"
expect "$F: $fifo" 10 100 "$cli" train --data "$I" --test "$F" --test-labels "$tmp/good-labels-idx1-ubyte" --out "$tmp/o"
expect "$F: $fifo" 10 100 "$cli" train --data "$I" --test "$tmp/good-images-idx3-ubyte" --test-labels "$F" --out "$tmp/o"
expect "$F: $fifo" 10 100 "$cli" predict --model "$F" "$img"
expect "$F: $fifo" 10 100 "$cli" predict --model "$model" "$img" "$F"
expect "$F: $fifo" 10 100 "$cli" eval --model "$F" --data "$I"
expect "$F: $fifo" 10 100 "$cli" eval --model "$model" --data "$F" --labels "$tmp/good-labels-idx1-ubyte"
expect "$F: $fifo" 10 100 "$cli" eval --model "$model" --data "$tmp/good-images-idx3-ubyte" --labels "$F"
# A FIFO named like an image inside a data folder (train preloads, eval reads).
rm -rf "$tmp/ds"; mkdir -p "$tmp/ds"; cp -r "$d/0" "$d/1" "$tmp/ds/"; mkfifo "$tmp/ds/1/zz.png"
expect "$tmp/ds/1/zz.png: $fifo" 10 100 "$cli" train --data "$tmp/ds" --out "$tmp/o"
expect "$tmp/ds/1/zz.png: $fifo" 10 100 "$cli" eval --model "$model" --data "$tmp/ds"
# A folder where a file is expected, a device that never ends.
expect "$tmp/ds: not a regular file (a folder)" 10 100 "$cli" info --net "$tmp/ds"
expect "$tmp/ds: not a regular file (a folder)" 10 100 "$cli" predict --model "$tmp/ds" "$img"
expect "/dev/zero: not a regular file (a character device)" 10 100 "$cli" predict --model "$model" /dev/zero
expect "/dev/zero: not a regular file (a character device)" 10 100 "$cli" train --data /dev/zero --labels "$tmp/good-labels-idx1-ubyte" --out "$tmp/o"
expect "/dev/zero: not a regular file (a character device)" 10 100 "$cli" train --data "$I" --resume /dev/zero --out "$tmp/o"

# ---- 2. numbers in checkpoint metadata (CRC recomputed: the range checks refuse them) --------------
for kv in "epoch=2147483648" "epoch=0" "epoch=-1" "epoch= 3" "epoch=3x" "iteration=9223372036854775807" \
          "iteration=99999999999999999999" "epoch_iteration=-1" "epoch_iteration=999999" "workers=0" \
          "workers=2147483648" "seed=-1" "seed=18446744073709551616" "elapsed_s=nan" "elapsed_s=-1" \
          "batch=0" "batch=4294967312" "train_images=-5"; do
  ck "$kv"
  expect "$tmp/c.st: metadata \"${kv%%=*}\"" 10 100 "${resume[@]}"
done
ck "epoch=<del>"
expect "$tmp/c.st: metadata \"epoch\" is missing" 10 100 "${resume[@]}"
# Model metadata.
"$py" "$tmp/ck.py" "$model" "$tmp/m.st" "iteration=9223372036854775808" --keep-crc
expect "$tmp/m.st: metadata \"iteration\"" 10 100 "$cli" predict --model "$tmp/m.st" "$img"
"$py" "$tmp/ck.py" "$model" "$tmp/m.st" "workers=-2" --keep-crc
expect "$tmp/m.st: metadata \"workers\"" 10 100 "$cli" eval --model "$tmp/m.st" --data "$I"

# ---- 3. metadata edited under the checksum -------------------------------------------------
ck "epoch=1" --keep-crc
expect "$tmp/c.st: checksum mismatch" 10 100 "${resume[@]}"
ck "seed=7" --keep-crc
expect "$tmp/c.st: checksum mismatch" 10 100 "${resume[@]}" --seed 7
ck "classes=[\"a\"]" --keep-crc
expect "$tmp/c.st: checksum mismatch" 10 100 "${resume[@]}"
ck "extra=1" --keep-crc
expect "$tmp/c.st: checksum mismatch" 10 100 "${resume[@]}"
# A checkpoint of format v1 (CRC of the tensors only) still resumes.
ck --v1
"${resume[@]}" --epochs 2 >/dev/null 2>"$tmp/err" && [ -s "$tmp/o/model.safetensors" ] && ok || bad "v1 checkpoint: $(cat "$tmp/err")"
rm -rf "$tmp/o"

# ---- 4. resume mismatches -----------------------------------------------------------------
ck
expect "--seed: the checkpoint $tmp/c.st was written with --seed 0" 10 100 "${resume[@]}" --epochs 2 --seed 1
expect "--data: the checkpoint $tmp/c.st was trained on 36 images, this run has 32" 10 100 "${resume[@]}" --epochs 2 --split 0.8
expect "--resume $tmp/c.st: the checkpoint's classes are" 10 100 "${train[@]}" --data "$d" --net "$tmp/tiny.net" --resume "$tmp/c.st" --epochs 2
# Mid-epoch (a crafted but consistent position: 2 iterations into epoch 1).
ck "epoch=1" "epoch_iteration=2" "iteration=2"
expect "--batch: the checkpoint $tmp/c.st was written with --batch 8; resuming mid-epoch" 10 100 "${resume[@]}" --batch 4
# What may change: --batch at an epoch boundary, --workers, --epochs, --lr.
ck
"${resume[@]}" --epochs 2 --batch 4 --workers 2 --lr 0.02 >/dev/null 2>"$tmp/err" && ok || bad "--batch at an epoch boundary: $(cat "$tmp/err")"
rm -rf "$tmp/o"
ck "epoch=1" "epoch_iteration=2" "iteration=2"
"${resume[@]}" --workers 2 >/dev/null 2>"$tmp/err" && ok || bad "mid-epoch resume with another --workers: $(cat "$tmp/err")"
rm -rf "$tmp/o"

# ---- 5. size bombs ------------------------------------------------------------------------
# Before the limits: padding=5000 grew past 20 GB; a model whose spec says
# padding=1000 took 20 s and 11 GB before its shape error.
printf 'input in size=28x28x1\nconv c1 filter=3 filters=4 padding=%s\nfc f outputs=10\nsoftmax s\n' 5000 >"$tmp/p5000.net"
printf 'input in size=28x28x1\nconv c1 filter=3 filters=4 padding=%s\nfc f outputs=10\nsoftmax s\n' 4000 >"$tmp/p4000.net"
printf 'input in size=28x28x1\nconv c1 filter=3 filters=4 padding=%s\nfc f outputs=10\nsoftmax s\n' 1000 >"$tmp/p1000.net"
expect "p5000.net:2: conv 'c1': bad value '5000' for padding (an integer in [0, 4096] expected)" 5 100 "$cli" info --net "$tmp/p5000.net"
expect "p4000.net:2: conv 'c1': an output of 8026x8026x4" 5 100 "$cli" info --net "$tmp/p4000.net"
expect "p4000.net:2: conv 'c1'" 5 100 "$cli" train --data "$I" --net "$tmp/p4000.net" --out "$tmp/o"
printf 'input in size=99999999999x28x1\nfc f outputs=10\nsoftmax s\n' >"$tmp/in.net"
expect "in.net:1: input 'in': bad value '99999999999x28x1' for size" 5 100 "$cli" info --net "$tmp/in.net"
printf 'input in size=65536x65536x3\nfc f outputs=10\nsoftmax s\n' >"$tmp/in2.net"
expect "in2.net:1: input 'in': an output of 65536x65536x3" 5 100 "$cli" info --net "$tmp/in2.net"
# The network's memory against DPT_MAX_NET_MEMORY: 1.3 GiB of fc weights (and one
# gradient buffer for the conv output: the plan keeps no second one).
export DPT_MAX_NET_MEMORY=256M
expect "p1000.net:3: the network needs 1.6 GiB for a minibatch of 1, more than the 256.0 MiB allowed (DPT_MAX_NET_MEMORY); the largest part is fc 'f'" 5 100 "$cli" info --net "$tmp/p1000.net"
expect "more than the 256.0 MiB allowed" 5 100 "$cli" train --data "$I" --net "$tmp/p1000.net" --out "$tmp/o"
# eval builds the network for its batch: the budget counts it.
printf 'input in size=28x28x1\nconv c1 filter=3 filters=64 padding=1\nfc f outputs=classes\nsoftmax s\n' >"$tmp/wide.net"
"$cli" train --quiet --data "$I" --net "$tmp/wide.net" --epochs 1 --batch 16 --workers 1 --out "$tmp/wide" >/dev/null 2>&1 || bad "wide fixture"
expect "the network needs" 5 100 "$cli" eval --model "$tmp/wide/model.safetensors" --data "$I" --batch 4096
"$cli" eval --model "$tmp/wide/model.safetensors" --data "$I" --batch 16 >/dev/null 2>&1 && ok || bad "eval within the budget"
DPT_MAX_NET_MEMORY=lots expect "DPT_MAX_NET_MEMORY: 'lots' is not a size" 5 100 "$cli" info
DPT_MAX_NET_MEMORY=12 expect "DPT_MAX_NET_MEMORY: '12' is not a size" 5 100 "$cli" info
unset DPT_MAX_NET_MEMORY
# A small model file whose spec was edited to padding=1000: refused on its
# first tensor, before the network's buffers exist.
"$py" - "$model" "$tmp/pm.st" <<'PY'
import json, struct, sys
b = open(sys.argv[1], "rb").read(); n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n]); h["__metadata__"]["spec"] = h["__metadata__"]["spec"].replace("filters=2", "filters=2 padding=1000")
hb = json.dumps(h).encode(); open(sys.argv[2], "wb").write(struct.pack("<Q", len(hb)) + hb + b[8 + n:])
PY
expect "pm.st: tensor 'f/Weights' is F32 4x1352, the network needs F32 4x8209352" 5 60 "$cli" predict --model "$tmp/pm.st" "$img"
expect "pm.st: tensor 'f/Weights'" 5 60 "$cli" eval --model "$tmp/pm.st" --data "$I"
expect "pm.st: tensor 'f/Weights'" 5 60 "$cli" info --model "$tmp/pm.st"
# gzip bombs: 120 MB of zeros (about 120 KB compressed) behind a header
# that says 10 images; and a header that promises 4 GB from 120 KB.
"$py" - "$tmp" <<'PY'
import struct, sys, zlib
out = sys.argv[1]
def bomb(path, header, total):
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    with open(path, "wb") as f:
        f.write(c.compress(header))
        chunk = bytes(1 << 20)
        for _ in range(total >> 20): f.write(c.compress(chunk))
        f.write(c.flush())
bomb(f"{out}/bomb-images-idx3-ubyte.gz", struct.pack(">IIII", 0x803, 10, 28, 28), 120 << 20)
bomb(f"{out}/promise-images-idx3-ubyte.gz", struct.pack(">IIII", 0x803, 5000000, 28, 28), 120 << 20)
bomb(f"{out}/huge-images-idx3-ubyte.gz", struct.pack(">IIII", 0x803, 0xffffffff, 0xffff, 0xffff), 1 << 20)
PY
expect "bomb-images-idx3-ubyte.gz: the decompressed data goes on past the 7856 bytes the header's dimensions imply" 10 60 "$cli" train --data "$tmp/bomb-images-idx3-ubyte.gz" --labels "$L" --out "$tmp/o"
expect "promise-images-idx3-ubyte.gz: truncated: the header says 3920000016 bytes but" 10 60 "$cli" train --data "$tmp/promise-images-idx3-ubyte.gz" --labels "$L" --out "$tmp/o"
expect "huge-images-idx3-ubyte.gz: dimensions too large" 10 60 "$cli" eval --model "$model" --data "$tmp/huge-images-idx3-ubyte.gz" --labels "$L"
# A plain IDX file whose header disagrees with its size is refused before
# its data is read (here a sparse 2 GB file).
"$py" -c "
import struct; f = open('$tmp/sparse-images-idx3-ubyte', 'wb'); f.write(struct.pack('>IIII', 0x803, 10, 28, 28)); f.truncate(2 << 30)"
expect "sparse-images-idx3-ubyte: " 10 60 "$cli" train --data "$tmp/sparse-images-idx3-ubyte" --labels "$L" --out "$tmp/o"
# An RGB image at the pixel cap (4096x4096): predicted (resized to 28x28)
# without converting it to float whole (that alone was 200 MB). Not an
# error: bounded time and memory.
"$py" -c "
import sys; f = open('$tmp/big.ppm', 'wb'); f.write(b'P6 4096 4096 255\n'); f.write(bytes(range(256)) * (4096 * 4096 * 3 // 256))"
read -r rc secs mb < <(measure "$cli" predict --model "$model" "$tmp/big.ppm")
if [ "$rc" = 0 ] && { [ "$sanitized" = 1 ] || [ "$mb" -lt 150 ]; }; then ok; else bad "predict an image at the pixel cap: rc $rc, $secs s, $mb MB (bound 150): $(cat "$tmp/m.err")"; fi
"$py" -c "
f = open('$tmp/bigger.ppm', 'wb'); f.write(b'P6 4097 4096 255\n'); f.write(bytes(4097 * 4096 * 3))"
expect "bigger.ppm: image of 4097x4096 pixels is larger than the 16777216 allowed" 10 60 "$cli" predict --model "$model" "$tmp/bigger.ppm"

# ---- 6. training options and graph specs (issue 19) ------------------------------------------
# Every bad value: exit 1 naming the option, before any data is read.
opt=("$cli" train --data "$I" --net "$tmp/tiny.net" --out "$tmp/o")
commas=$(printf ',%.0s' $(seq 200))
# 201 items overflowed the schedule parser's item array (a stack overflow).
expect "--lr-schedule: lr schedule '" 5 60 "${opt[@]}" --lr-schedule "cosine$commas"
expect "--lr-schedule: lr schedule '" 5 60 "${opt[@]}" --lr-schedule "$commas"
expect "--lr-schedule: lr schedule '" 5 60 "${opt[@]}" --lr-schedule "$(printf 'x%.0s' $(seq 5000))"
expect "--lr-schedule: lr schedule 'piecewise:every=nan'" 5 60 "${opt[@]}" --lr-schedule piecewise:every=nan
expect "--lr-schedule: lr schedule 'piecewise:drop=inf'" 5 60 "${opt[@]}" --lr-schedule piecewise:drop=inf
expect "--lr-schedule: lr schedule 'cosine:min=-1'" 5 60 "${opt[@]}" --lr-schedule cosine:min=-1
expect "--lr-schedule: lr schedule 'cosine,warmup=1e300'" 5 60 "${opt[@]}" --lr-schedule cosine,warmup=1e300
expect "--lr-schedule: lr schedule 'cosine,warmup=2x'" 5 60 "${opt[@]}" --lr-schedule cosine,warmup=2x
# Values that are finite doubles but 0 or infinity as the step's floats.
expect "--lr: 1e+300 is outside a float's range" 5 60 "${opt[@]}" --lr 1e300
expect "--lr: 1e-50 is outside a float's range" 5 60 "${opt[@]}" --lr 1e-50
expect "--epsilon: 1e-50 is outside a float's range" 5 60 "${opt[@]}" --optimizer adam --epsilon 1e-50
expect "--epsilon: 1e+300 is outside a float's range" 5 60 "${opt[@]}" --optimizer adam --epsilon 1e300
expect "--weight-decay: 1e+300 is outside a float's range" 5 60 "${opt[@]}" --weight-decay 1e300
for v in nan inf -inf '' 1x 1e999 0x; do
  expect "--clip-norm: '$v' is not a number" 5 60 "${opt[@]}" --clip-norm "$v"
  expect "--beta1: '$v' is not a number" 5 60 "${opt[@]}" --optimizer adam --beta1 "$v"
  expect "--epsilon: '$v' is not a number" 5 60 "${opt[@]}" --optimizer adam --epsilon "$v"
done
expect "--clip-norm: -1 must not be negative" 5 60 "${opt[@]}" --clip-norm -1
expect "--beta2: 1 must be in [0, 1)" 5 60 "${opt[@]}" --optimizer adam --beta2 1
expect "--epsilon: 0 must be positive" 5 60 "${opt[@]}" --optimizer adam --epsilon 0
expect "--optimizer: unknown optimizer ''" 5 60 "${opt[@]}" --optimizer ''
expect "--optimizer: unknown optimizer 'adam " 5 60 "${opt[@]}" --optimizer 'adam '
expect "--augment: augmentation item 'rotate=nan'" 5 60 "${opt[@]}" --augment rotate=nan
expect "--augment: augmentation item 'translate=1e300'" 5 60 "${opt[@]}" --augment translate=1e300
expect "--augment: augmentation item 'scale=0:1e999'" 5 60 "${opt[@]}" --augment scale=0:1e999
expect "--augment: augmentation '" 5 60 "${opt[@]}" --augment "$commas"
expect "--augment: augmentation item '" 5 60 "${opt[@]}" --augment "reflect,$(printf 'r%.0s' $(seq 100000))"
# Specs: more layers than allowed, refused before a layer is allocated (a
# file of newlines only: no allocation per line either); a deep, wide
# graph within the cap parses in linear time (names by hash, not by scan).
"$py" - "$tmp" <<'PY'
import sys
out = sys.argv[1]
with open(f"{out}/many.net", "w") as f:
    f.write("input in size=1x1x1\n")
    for i in range(10001): f.write(f"relu r{i}\n")
open(f"{out}/newlines.net", "w").write("input in size=1x1x1\n" + "\n" * (15 << 20) + "relu r\n")
# 9999 layers, each an add of 32 earlier ones with long, shared-prefix
# names; the last line's from= is resolved after all the others.
p = "n" * 40
with open(f"{out}/wide.net", "w") as f:
    f.write(f"input in size=1x1x1\nrelu {p}0\n")
    for i in range(1, 9998):
        ins = ",".join(f"{p}{max(0, i - 1 - k)}" for k in range(32))
        f.write(f"add {p}{i} from={ins}\n")
    f.write("softmax s from=nosuch\n")
PY
expect "many.net: 10002 layers, more than the 10000 allowed" 5 60 "$cli" info --net "$tmp/many.net"
"$cli" info --net "$tmp/newlines.net" >/dev/null 2>"$tmp/err" && ok || bad "a spec of newlines: $(cat "$tmp/err")"
# (6 s of CPU here when each from= name was looked up by a scan.)
expect "wide.net:10000: softmax 's': from= names 'nosuch'" 3 200 "$cli" info --net "$tmp/wide.net"
# Names the model file's JSON or from= could not hold.
printf 'input in size=4x4x1\nrelu a,b\nfc f outputs=2\n' >"$tmp/comma.net"
expect "comma.net:2: bad layer name 'a,b'" 5 60 "$cli" info --net "$tmp/comma.net"
printf 'input in size=4x4x1\nrelu a\001b\nfc f outputs=2\n' >"$tmp/ctl.net"
expect "ctl.net:2: bad layer name" 5 60 "$cli" info --net "$tmp/ctl.net"
# Invalid UTF-8 made a model file whose JSON header Python cannot read.
printf 'input in size=4x4x1\nrelu a\377b\nfc f outputs=2\n' >"$tmp/utf.net"
expect "utf.net:2: bad layer name" 5 60 "$cli" info --net "$tmp/utf.net"
# A model file whose spec metadata is a hostile graph: refused naming the file.
for case in cycle:"relu rr from=f" many:many absurd:"conv k filter=3 filters=65536 padding=4096"; do
  "$py" - "$model" "$tmp/g.st" "${case%%:*}" "${case#*:}" "$tmp/many.net" <<'PY'
import json, struct, sys
src, dst, kind, arg, many = sys.argv[1:]
b = open(src, "rb").read(); n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n]); meta = h["__metadata__"]
lines = meta["spec"].splitlines()
if kind == "many":
    meta["spec"] = open(many).read()
else:
    lines.insert(2, arg); meta["spec"] = "\n".join(lines) + "\n"
hb = json.dumps(h).encode(); open(dst, "wb").write(struct.pack("<Q", len(hb)) + hb + b[8 + n:])
PY
  case ${case%%:*} in
    cycle) needle="g.st:3: relu 'rr': from= names 'f', a later layer" ;;
    many) needle="g.st: 10002 layers, more than the 10000 allowed" ;;
    absurd) needle="g.st:3: conv 'k': an output of" ;;
  esac
  expect "$needle" 5 100 "$cli" info --model "$tmp/g.st"
  expect "$needle" 5 100 "$cli" predict --model "$tmp/g.st" "$img"
done

echo "test_hostile: $pass passed, $fail failed"
[ $fail -eq 0 ]
