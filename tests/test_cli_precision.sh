#!/usr/bin/env bash
# `dptrain train --precision fp32|tf32|bf16` and `--cuda-graph on|off`: an unknown name and tf32 or
# bf16 on CPU workers end with a clear message and exit 1 before anything
# is written; fp32 (the default) trains on the CPU as before. The GPU side
# (bf16 and tf32 products against float32) is tests/test_gpu_precision.c.
set -u
. "$(dirname "$0")/cli_helpers.sh"
d=${DPT_SOURCE_DIR:?}/tests/fixtures/digits400
train() { "$cli" train --quiet --epochs 1 --batch 50 --out "$tmp/o" --data "$d" "$@"; }
no_out() { [ ! -e "$tmp/o" ] && ok || bad "output folder made despite the error: $*"; }

"$cli" train --help | grep -q -- "--precision NAME" && ok || bad "train --help lists --precision"
expect_error "--precision: unknown precision 'fp16' (fp32, tf32, bf16)" train --precision fp16; no_out fp16
expect_error "--precision: unknown precision 'BF16'" train --precision BF16; no_out BF16
expect_error "--precision: unknown precision ''" train --precision ""; no_out empty
# A long hostile value is cut in the message.
long=$(head -c 5000 /dev/zero | tr '\0' x)
"$cli" train --data "$d" --precision "$long" >/dev/null 2>"$tmp/err"
[ $? -eq 1 ] && [ "$(wc -c <"$tmp/err")" -lt 300 ] && ok || bad "long --precision value: exit or message size"
for p in bf16 tf32; do
  expect_error "--precision $p: CPU workers compute in fp32 only (--device cpu)" \
    train --device cpu --workers 1 --precision $p; no_out "$p --device cpu"
done
# auto with no GPU (or more workers than GPUs): CPU workers, so refused too.
if "$cli" info | grep -q "GPUs: none\|GPUs: 0"; then
  expect_error "--precision bf16: CPU workers compute in fp32 only (" train --precision bf16 --workers 1
else
  expect_error "--precision bf16: CPU workers compute in fp32 only (more --workers than GPUs)" \
    train --precision bf16 --workers 64
fi
no_out "bf16 auto"
# fp32 is the CPU's arithmetic: it trains.
train --device cpu --workers 1 --precision fp32 >"$tmp/log" 2>&1 && [ -s "$tmp/o/model.safetensors" ] \
  && ok || bad "--precision fp32 on the CPU: $(cat "$tmp/log")"

# --cuda-graph on|off: anything else is refused; off is accepted on CPU
# workers (no effect there) and the run trains.
"$cli" train --help | grep -q -- "--cuda-graph on|off" && ok || bad "train --help lists --cuda-graph"
rm -rf "$tmp/o"
expect_error "--cuda-graph: 'yes' is not on or off" train --cuda-graph yes; no_out "cuda-graph yes"
train --device cpu --workers 1 --cuda-graph off >"$tmp/log" 2>&1 && [ -s "$tmp/o/model.safetensors" ] \
  && ok || bad "--cuda-graph off on the CPU: $(cat "$tmp/log")"

echo "test_cli_precision: $pass passed, $fail failed"
[ $fail -eq 0 ]
