#!/usr/bin/env bash
# Faults of a local (threads) run of the CLI, besides those test_client.sh
# and test_cli.sh already cover:
#   - a numeric fault (--lr 1e20): exit 1, "epoch E, iteration I:
#     non-finite values in the output of layer 'X'"; the last checkpoint
#     before the fault is intact and loads (resuming from it reaches the
#     same fault at the same iteration, so it holds the exact state);
#   - the disk fills up (a small tmpfs: real ENOSPC) while a checkpoint or
#     the model is written: exit 1 naming the file, the previous checkpoint
#     intact, no temporary file left, nothing on stderr but dptrain's line;
#   - an unwritable output folder: a read-only mount (root ignores
#     permissions), read-only from the start or made read-only mid-run, a
#     path under /proc, a file where a folder is expected;
#   - the training data deleted mid-epoch (image folder and IDX): the CLI
#     decoded everything at open, so the run trains on, and its checkpoint
#     a full epoch later holds the state of an undisturbed run.
# Faults are injected at events (a checkpoint written; the run frozen with
# SIGSTOP), into runs of more epochs than they can train: see
# fault_helpers.sh.
# The mount cases run in a private mount namespace (unshare -m) and are
# skipped, with a note, where mounting is not allowed.
set -u
cli=${DPT_CLI:?}
src=${DPT_SOURCE_DIR:?}
. "$src/tests/fault_helpers.sh"
d=$src/tests/fixtures/digits400
tmp=$(mktemp -d)
pid=""   # a run of LONG_EPOCHS, while it runs
trap '[ -n "$pid" ] && kill -9 $pid 2>/dev/null; rm -rf "$tmp"' EXIT
trap "exit 1" INT TERM HUP
fail=0 pass=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*" >&2; fail=$((fail + 1)); }
# expect_error NEEDLE CMD...: exit 1, stderr is one "dptrain: " line with NEEDLE.
expect_error() {
  local needle=$1; shift
  "$@" >/dev/null 2>"$tmp/err"; local rc=$?
  if [ $rc -eq 1 ] && [ "$(wc -l <"$tmp/err")" = 1 ] && grep -q "^dptrain: " "$tmp/err" && grep -qF -- "$needle" "$tmp/err"; then
    ok
  else
    bad "want exit 1 and one line with '$needle', got $rc: $(cat "$tmp/err")"
  fi
}
train() { "$cli" train --data "$d" --batch 32 --workers 2 --seed 4 --quiet "$@"; }

# ---- numeric fault -------------------------------------------------------------------
# (--lr 1e6 does not overflow on these digits: the loss saturates near 87
# and training ends normally at chance accuracy; 1e20 overflows in iteration 2.)
train --epochs 2 --lr 1e20 --checkpoint-every 1 --out "$tmp/nan" >/dev/null 2>"$tmp/err"
rc=$?
re="^dptrain: worker [0-9]+: epoch ([0-9]+), iteration ([0-9]+): non-finite values in the output of layer '([a-z0-9]+)' \([a-z]+\)$"
if [ $rc -eq 1 ] && [[ "$(cat "$tmp/err")" =~ $re ]]; then
  ok
  e=${BASH_REMATCH[1]} i=${BASH_REMATCH[2]} layer=${BASH_REMATCH[3]}
  echo "--lr 1e20: $(cat "$tmp/err")"
  [ ! -e "$tmp/nan/model.safetensors" ] && ok || bad "model written after a numeric fault"
  if [ "$i" -gt 1 ]; then
    ck=$tmp/nan/checkpoint.safetensors
    [ "$(meta "$ck" iteration)" = $((i - 1)) ] && ok || bad "last checkpoint is not from iteration $((i - 1))"
    cp "$ck" "$tmp/before-fault"
    train --epochs 2 --lr 1e20 --out "$tmp/nan2" --resume "$tmp/before-fault" >/dev/null 2>"$tmp/err2"
    grep -q "epoch $e, iteration $i: non-finite values in the output of layer '$layer'" "$tmp/err2" && ok \
      || bad "resuming the checkpoint before the fault: $(cat "$tmp/err2")"
    cmp -s "$ck" "$tmp/before-fault" && ok || bad "checkpoint changed"
  else
    echo "note: the fault came in iteration 1; no checkpoint before it to check"
  fi
else
  bad "--lr 1e20: exit $rc, $(cat "$tmp/err")"
fi

# ---- full disk, unwritable folders: in a private mount namespace -----------------------
if unshare -m --propagation private true 2>/dev/null && unshare -m --propagation private sh -c "mount -t tmpfs -o size=64k tmpfs '$tmp'" 2>/dev/null; then
  mkdir -p "$tmp/mnt" "$tmp/ro"
  # Disk full mid-run: 1400 KiB holds one checkpoint (960 KiB) and the plots,
  # not a second one being written beside it.
  unshare -m --propagation private bash -c "
    mount -t tmpfs -o size=1400k tmpfs '$tmp/mnt' || exit 99
    '$cli' train --data '$d' --batch 32 --workers 2 --seed 4 --quiet --epochs 1 --checkpoint-every 4 --out '$tmp/mnt/o' >/dev/null 2>'$tmp/err'
    echo \$? >'$tmp/rc'
    cp '$tmp/mnt/o/checkpoint.safetensors' '$tmp/full-ckpt' 2>/dev/null
    ls -a '$tmp/mnt/o' >'$tmp/full-ls'"
  rc=$(cat "$tmp/rc" 2>/dev/null || echo none)
  echo "disk full at the second checkpoint: exit $rc, $(cat "$tmp/err")"
  [ "$rc" = 1 ] && [ "$(wc -l <"$tmp/err")" = 1 ] && grep -q "^dptrain: .*checkpoint.safetensors.*No space left on device" "$tmp/err" \
    && ok || bad "disk full (checkpoint): exit $rc, $(cat "$tmp/err")"
  [ -s "$tmp/full-ckpt" ] && [ "$(meta "$tmp/full-ckpt" iteration)" = 4 ] && ok || bad "the first checkpoint did not survive"
  grep -q "tmp" "$tmp/full-ls" && bad "temporary file left: $(cat "$tmp/full-ls")" || ok
  # Disk full for the model (no checkpoints): 300 KiB.
  unshare -m --propagation private bash -c "
    mount -t tmpfs -o size=300k tmpfs '$tmp/mnt' || exit 99
    '$cli' train --data '$d' --batch 32 --workers 2 --seed 4 --quiet --epochs 1 --out '$tmp/mnt/o' >/dev/null 2>'$tmp/err'
    echo \$? >'$tmp/rc'; ls -a '$tmp/mnt/o' >'$tmp/full-ls'"
  rc=$(cat "$tmp/rc")
  [ "$rc" = 1 ] && [ "$(wc -l <"$tmp/err")" = 1 ] && grep -q "^dptrain: .*model.safetensors: write failed: No space left on device" "$tmp/err" \
    && ok || bad "disk full (model): exit $rc, $(cat "$tmp/err")"
  grep -q "tmp\|model" "$tmp/full-ls" && bad "model or temporary file left: $(cat "$tmp/full-ls")" || ok
  # Read-only from the start, and made read-only mid-run (after the first
  # checkpoint): the next write fails with a clear message.
  unshare -m --propagation private bash -c "
    mount --bind '$tmp/ro' '$tmp/ro' && mount -o remount,ro,bind '$tmp/ro' || exit 99
    '$cli' train --data '$d' --epochs 1 --out '$tmp/ro/o' 2>'$tmp/err1' >/dev/null
    '$cli' train --data '$d' --epochs 1 --out '$tmp/ro' 2>'$tmp/err2' >/dev/null"
  grep -qx "dptrain: --out $tmp/ro/o: cannot create folder: Read-only file system" "$tmp/err1" && ok || bad "read-only: $(cat "$tmp/err1")"
  grep -qx "dptrain: --out $tmp/ro: folder not writable" "$tmp/err2" && ok || bad "read-only: $(cat "$tmp/err2")"
  mkdir -p "$tmp/rw"
  # (A read-only bind mount laid over the output folder: files already open
  # there, like metrics.csv, stay writable; new ones cannot be created.)
  # The run trains more epochs than it can (it stops at the first checkpoint
  # after the remount) and is frozen from its first checkpoint until the
  # remount took: no file is opened on the new mount in between, so the
  # remount never finds it busy (still retried, in case), and a run that
  # failed to stop is killed rather than waited for.
  unshare -m --propagation private bash -c "
    . '$src/tests/fault_helpers.sh'
    \"\${CAPPED[@]}\" '$cli' train --data '$d' --batch 8 --workers 2 --seed 4 --quiet --epochs $LONG_EPOCHS --checkpoint-every 5 --out '$tmp/rw/o' >/dev/null 2>'$tmp/err' &
    pid=\$!
    trap 'kill -9 \$pid 2>/dev/null' EXIT
    await_file '$tmp/rw/o/checkpoint.safetensors' \$pid || echo 'no checkpoint' >'$tmp/mount-err'
    kill -STOP \$pid
    mount --bind '$tmp/rw/o' '$tmp/rw/o' || echo 'cannot bind' >>'$tmp/mount-err'
    for _ in \$(seq 1 100); do mount -o remount,ro,bind '$tmp/rw/o' 2>/dev/null && break; sleep 0.01; done
    touch '$tmp/rw/o/probe' 2>/dev/null && echo 'still writable' >>'$tmp/mount-err'
    [ -s '$tmp/mount-err' ] && kill -9 \$pid
    kill -CONT \$pid
    wait \$pid; echo \$? >'$tmp/rc'; pid="
  [ -s "$tmp/mount-err" ] && bad "read-only mid-run: the remount did not take: $(cat "$tmp/mount-err")"
  rc=$(cat "$tmp/rc")
  echo "folder made read-only mid-run: exit $rc, $(cat "$tmp/err")"
  [ "$rc" = 1 ] && [ "$(wc -l <"$tmp/err")" = 1 ] && grep -q "^dptrain: .*$tmp/rw/o/.*Read-only file system" "$tmp/err" \
    && ok || bad "read-only mid-run: exit $rc, $(cat "$tmp/err")"
  [ "$(meta "$tmp/rw/o/checkpoint.safetensors" format)" = dptrain.checkpoint.v2 ] && ok || bad "checkpoint damaged"
else
  echo "note: mounting is not allowed here; full-disk and read-only cases skipped (test_client.sh covers a full disk with ulimit -f)"
fi
expect_error "--out /proc/dptrain-out: cannot create folder" "$cli" train --data "$d" --epochs 1 --out /proc/dptrain-out
touch "$tmp/file"
expect_error "--out $tmp/file/o: cannot create folder: Not a directory" "$cli" train --data "$d" --epochs 1 --out "$tmp/file/o"
expect_error "--out $tmp/file: not a folder" "$cli" train --data "$d" --epochs 1 --out "$tmp/file"

# ---- training data deleted mid-epoch -----------------------------------------------------
# run_and_delete NAME DATA RESTORE DELETE...: train on DATA for more epochs
# than the run can; once its first checkpoint exists, freeze it, delete
# DELETE, let it go on; once it has trained a full epoch more (every image
# needed again since), freeze it and take its checkpoint. Resumed up to the
# end of its epoch (with the data put back by the command RESTORE), that
# checkpoint gives the model of an undisturbed run.
run_and_delete() {
  local name=$1 data=$2 restore=$3; shift 3
  local args=(train --data "$data" --batch 8 --workers 2 --seed 4 --quiet --checkpoint-every 5 $(tiny_net "$tmp"))
  local ck="$tmp/$name/checkpoint.safetensors"
  "${CAPPED[@]}" "$cli" "${args[@]}" --epochs $LONG_EPOCHS --out "$tmp/$name" >/dev/null 2>"$tmp/err" &
  pid=$!
  local i e rc
  if ! await_file "$ck" $pid; then
    bad "$name: no checkpoint: $(cat "$tmp/err")"; kill -9 $pid 2>/dev/null; wait $pid; pid=""; return
  fi
  kill -STOP $pid
  i=$(meta "$ck" iteration)
  rm -rf "$@"
  kill -CONT $pid
  await_iteration "$ck" $pid $((i + 45)); rc=$?   # 45 iterations of 8 per epoch
  kill -STOP $pid 2>/dev/null
  cp "$ck" "$tmp/$name-ckpt" 2>/dev/null
  kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null; pid=""
  if [ $rc != 0 ]; then bad "$name deleted at iteration $i: the run did not train on: $(cat "$tmp/err")"; return; fi
  e=$(meta "$tmp/$name-ckpt" epoch)
  $restore
  "$cli" "${args[@]}" --epochs "$e" --out "$tmp/$name-ref" >/dev/null 2>"$tmp/err" || { bad "$name: $(cat "$tmp/err")"; return; }
  "$cli" "${args[@]}" --epochs "$e" --out "$tmp/$name-res" --resume "$tmp/$name-ckpt" >/dev/null 2>"$tmp/err" \
    || { bad "$name: resume: $(cat "$tmp/err")"; return; }
  cmp -s "$tmp/$name-res/model.safetensors" "$tmp/$name-ref/model.safetensors" \
    && { ok; echo "$name deleted at iteration $i: the run trained on to iteration $(meta "$tmp/$name-ckpt" iteration), same state as undisturbed"; } \
    || bad "$name deleted mid-run: the checkpoint after it does not give the undisturbed model"
}
copy_digits() { rm -rf "$tmp/digits"; cp -r "$d" "$tmp/digits"; }
make_idx() {
  python3 - "$tmp" <<'PY'
import random, struct, sys
random.seed(1)
n = 400
with open(sys.argv[1] + "/rand-images-idx3-ubyte", "wb") as f:
    f.write(struct.pack(">IIII", 0x803, n, 28, 28))
    f.write(bytes(random.randrange(256) for _ in range(n * 28 * 28)))
with open(sys.argv[1] + "/rand-labels-idx1-ubyte", "wb") as f:
    f.write(struct.pack(">II", 0x801, n))
    f.write(bytes(i % 10 for i in range(n)))
PY
}
copy_digits
run_and_delete "image folder" "$tmp/digits" copy_digits "$tmp/digits"
make_idx
run_and_delete "IDX files" "$tmp/rand-images-idx3-ubyte" make_idx "$tmp/rand-images-idx3-ubyte" "$tmp/rand-labels-idx1-ubyte"

echo "test_faults_local: $pass passed, $fail failed"
[ $fail -eq 0 ]
