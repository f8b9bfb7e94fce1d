#!/usr/bin/env bash
# The examples (examples/*.c, built into $DPT_EXAMPLES_DIR against the shared
# library and the public headers only) train on tests/fixtures/digits400
# (400 digits, 10 classes; 360 train, 40 test) and must beat chance (0.1)
# by far; bad arguments end with a message and exit status 1.
set -u
src=${DPT_SOURCE_DIR:?}
ex=${DPT_EXAMPLES_DIR:-${DPT_BINARY_DIR:?}/examples}
data=$src/tests/fixtures/digits400
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
bad() { echo "FAIL: $*" >&2; fail=$((fail + 1)); }

# Sanitizer and Debug builds train 10 to 50 times slower: there the examples
# run one epoch on 10 images per class, checking that they work, not what
# they learn.
quick=0
if [ "${DPT_SANITIZED:-0}" = 1 ] || [ "${DPT_BUILD_TYPE:-}" = Debug ]; then
  quick=1
  for d in "$data"/*/; do
    c=$(basename "$d")
    mkdir -p "$tmp/tiny/$c"
    ls "$d" | sort | head -10 | while read -r f; do cp "$d/$f" "$tmp/tiny/$c/"; done
  done
  data=$tmp/tiny
  echo "quick mode (${DPT_BUILD_TYPE:-} build, sanitized=${DPT_SANITIZED:-0}): 1 epoch on $data"
  for ex_name in parallel_custom_loop custom_loss; do
    if "$ex/$ex_name" "$data" 1 2 >"$tmp/$ex_name.log" 2>&1 && grep -q '^test accuracy' "$tmp/$ex_name.log"; then
      echo "$ex_name: $(grep '^test accuracy' "$tmp/$ex_name.log")"
    else
      bad "$ex_name failed: $(cat "$tmp/$ex_name.log")"
    fi
  done
fi

# accuracy LOG: the number after "test accuracy" (empty when missing).
accuracy() { sed -n 's/^test accuracy \([0-9.]*\).*/\1/p' "$1"; }
# at_least A B: A >= B as decimals.
at_least() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 >= b + 0) }'; }

# ---- parallel_custom_loop: the MATLAB example's workflow -------------------
# 8 epochs of 3 iterations on 2 workers; the trained model is saved.
if [ $quick = 1 ]; then
  :
elif "$ex/parallel_custom_loop" "$data" 8 2 "$tmp/model.safetensors" >"$tmp/pcl.log" 2>&1; then
  acc=$(accuracy "$tmp/pcl.log")
  echo "parallel_custom_loop: test accuracy ${acc:-none}"
  [ -n "$acc" ] && at_least "$acc" 0.5 || bad "parallel_custom_loop accuracy ${acc:-none} < 0.5: $(cat "$tmp/pcl.log")"
  [ "$(grep -c '^epoch ' "$tmp/pcl.log")" = 8 ] || bad "parallel_custom_loop: 8 progress lines expected: $(cat "$tmp/pcl.log")"
  grep -q '^epoch  8/8  iteration    24 ' "$tmp/pcl.log" || bad "parallel_custom_loop: 24 iterations expected"
  [ -s "$tmp/model.safetensors" ] || bad "parallel_custom_loop: no model file"
else
  bad "parallel_custom_loop failed: $(cat "$tmp/pcl.log")"
fi

# ---- step 3, canUseGPU: a worker for each GPU when there are GPUs, else the
# CPU pool; asking for more workers than GPUs also gives the CPU pool.
gpus=$("${DPT_CLI:?}" info 2>/dev/null | sed -n 's/.*; GPUs: \([0-9][0-9]*\).*/\1/p' | head -1)
gpus=${gpus:-0}
grep -q '^device: CPU pool of 2 worker(s), minibatch 128 shared$' "$tmp/pcl.log" ||
  [ $quick = 1 ] || bad "parallel_custom_loop with 2 workers: no CPU pool line: $(head -3 "$tmp/pcl.log")"
if "$ex/parallel_custom_loop" "$data" 1 >"$tmp/pcl1.log" 2>&1; then
  if [ "$gpus" -gt 0 ]; then
    want="^device: $gpus GPU worker(s) (.*), minibatch 128 per GPU$"
  else
    want="^device: CPU pool of [0-9][0-9]* worker(s), minibatch 128 shared$"
  fi
  grep -q "$want" "$tmp/pcl1.log" || bad "parallel_custom_loop ($gpus GPUs): expected '$want': $(head -3 "$tmp/pcl1.log")"
  grep -q '^test accuracy' "$tmp/pcl1.log" || bad "parallel_custom_loop ($gpus GPUs): no accuracy: $(cat "$tmp/pcl1.log")"
  echo "parallel_custom_loop, default workers: $(grep '^device:' "$tmp/pcl1.log")"
else
  bad "parallel_custom_loop with default workers failed: $(cat "$tmp/pcl1.log")"
fi

# ---- custom_loss: label smoothing through dpt_net_backward(net, dy, 1) -------
# 3 epochs: enough to see the loss fall and chance beaten.
if [ $quick = 1 ]; then
  :
elif "$ex/custom_loss" "$data" 3 2 >"$tmp/cl.log" 2>&1; then
  acc=$(accuracy "$tmp/cl.log")
  echo "custom_loss: test accuracy ${acc:-none}"
  [ -n "$acc" ] && at_least "$acc" 0.2 || bad "custom_loss accuracy ${acc:-none} < 0.2: $(cat "$tmp/cl.log")"
  first=$(sed -n 's/^epoch 1  loss //p' "$tmp/cl.log")
  last=$(sed -n 's/^epoch 3  loss //p' "$tmp/cl.log")
  [ -n "$first" ] && [ -n "$last" ] && at_least "$first" "$last" \
    || bad "custom_loss: loss did not fall (epoch 1: ${first:-?}, epoch 3: ${last:-?})"
else
  bad "custom_loss failed: $(cat "$tmp/cl.log")"
fi

# ---- bad arguments: a message naming the problem, exit 1 ---------------------
expect_error() {
  local needle=$1; shift
  "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  [ $rc = 1 ] || { bad "exit $rc, want 1: $*"; return; }
  grep -qF -- "$needle" "$tmp/err" || bad "message lacks '$needle': $(cat "$tmp/err")"
}
expect_error "usage: parallel_custom_loop" "$ex/parallel_custom_loop"
expect_error "$tmp/nowhere" "$ex/parallel_custom_loop" "$tmp/nowhere" 1 1
expect_error "EPOCHS: 'x' is not a positive integer" "$ex/parallel_custom_loop" "$data" x
expect_error "minibatch 128 is smaller than the 200 workers" "$ex/parallel_custom_loop" "$data" 1 200
expect_error "$tmp/nowhere" "$ex/custom_loss" "$tmp/nowhere"

if [ $fail -ne 0 ]; then
  echo "$fail failure(s)" >&2
  exit 1
fi
echo "examples: all checks passed"
