#!/usr/bin/env bash
# Worker faults under MPI (mpirun -np 2 dptrain train):
#   - a rank killed with SIGKILL mid-epoch (both ranks frozen once a
#     checkpoint exists, rank 1 killed, rank 0 let go): the job ends within
#     30 s with a message naming the lost rank (three trials; the median
#     time is printed), and --resume from the last checkpoint, again with 2
#     ranks, gives a model byte-identical to a run that was never
#     interrupted;
#   - a rank that hangs (SIGSTOP once a checkpoint exists): the other
#     rank's watchdog (DPT_COMM_TIMEOUT_MS) ends the job with its message;
#   - a numeric fault (--lr 1e20; 1e6 does not overflow on these digits): every rank stops with the epoch, the
#     iteration and the layer, exit non-zero.
# Skips (77) without MPI.
set -u
# Open MPI leaks on purpose at exit (its plugins): no leak reports in
# sanitizer builds here; the single-process tests cover our own memory.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
cli=${DPT_CLI:?}
src=${DPT_SOURCE_DIR:?}
. "$src/tests/fault_helpers.sh"
if [ "${DPT_HAVE_MPI:-0}" != 1 ] || ! command -v mpirun >/dev/null; then
  echo "skipped: dptrain was built without MPI or mpirun is missing"
  exit 77
fi
# Open MPI refuses to run as root without these; they belong to the test
# harness, not to the library.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
unset DPT_COMM_TIMEOUT_MS
d=$src/tests/fixtures/digits400
tmp=$(mktemp -d)
bg=""   # the mpirun started in the background, if still running
cleanup() {
  if [ -n "$bg" ] && kill -0 "$bg" 2>/dev/null; then
    for p in $(descendants "$bg"); do kill -CONT "$p" 2>/dev/null; kill -9 "$p" 2>/dev/null; done
    kill -9 "$bg" 2>/dev/null
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap "exit 1" INT TERM HUP
fail=0 pass=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*" >&2; fail=$((fail + 1)); }
now_ms() { date +%s%3N; }

# 45 iterations of 8 images per epoch (360 training images). The jobs that
# are killed or hung run LONG_EPOCHS (fault_helpers.sh): they cannot end
# before the fault, however fast the machine.
args=(train --data "$d" --batch 8 --seed 5 --quiet --device cpu $(tiny_net "$tmp"))

# ---- SIGKILL of rank 1 mid-epoch ------------------------------------------------
# Once a checkpoint exists, both ranks are frozen (SIGSTOP), rank 1 is
# killed and rank 0 let go: the kill always lands in a running job, between
# two checkpoints, whatever the machine's speed.
times=() last=""
for trial in 1 2 3; do
  out=$tmp/k$trial
  mpirun -np 2 "${CAPPED[@]}" "$cli" "${args[@]}" --epochs $LONG_EPOCHS --out "$out" --checkpoint-every 7 >/dev/null 2>"$tmp/err$trial" &
  bg=$!
  await_file "$out/checkpoint.safetensors" "$bg"; got=$?
  r0=$(rank_pid "$bg" 0) r1=$(rank_pid "$bg" 1)
  if [ $got -ne 0 ] || [ -z "$r0" ] || [ -z "$r1" ]; then
    bad "trial $trial: no checkpoint or no ranks (await $got, rank pids '$r0' '$r1'): $(cat "$tmp/err$trial")"
    kill -9 $(descendants "$bg") "$bg" 2>/dev/null; wait "$bg" 2>/dev/null; bg=""
    continue
  fi
  kill -STOP "$r0" "$r1"
  it=$(meta "$out/checkpoint.safetensors" iteration)
  t0=$(now_ms)
  kill -9 "$r1"
  kill -CONT "$r0"
  if wait_exit "$bg" 60; then
    t1=$(now_ms)
    wait "$bg"; rc=$?; bg=""
  else
    bad "trial $trial: the job still runs 60 s after rank 1 was killed"
    kill -9 $(descendants "$bg") "$bg" 2>/dev/null; wait "$bg" 2>/dev/null; bg=""; continue
  fi
  ms=$((t1 - t0))
  echo "trial $trial: froze both ranks after checkpoint at iteration $it, killed rank 1 (pid $r1); job exited $rc after $ms ms"
  sed 's/^/    /' "$tmp/err$trial" | grep -v '^    -*$'
  [ "$rc" -ne 0 ] && ok || bad "trial $trial: exit status 0 after a rank was killed"
  # The end is noticed by mpirun's waitpid, not by a timer: 30 s only
  # catches a job that hangs instead of ending (measured: well under 1 s).
  [ "$ms" -lt 30000 ] && ok || bad "trial $trial: $ms ms from the kill to the end of the job (limit 30000)"
  grep -q "rank 1 .*exited on signal 9" "$tmp/err$trial" && ok \
    || bad "trial $trial: no message naming rank 1: $(cat "$tmp/err$trial")"
  [ ! -e "$out/model.safetensors" ] && ok || bad "trial $trial: a model was written by the killed job"
  times+=("$ms")
  last=$out
done
[ ${#times[@]} -eq 3 ] && ok || bad "only ${#times[@]} of 3 trials killed rank 1 of a running job"
if [ ${#times[@]} -gt 0 ]; then
  median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}')
  echo "time from SIGKILL of rank 1 to the end of the job: ${times[*]} ms (median $median ms)"
fi

# ---- resume with 2 ranks: byte-identical to the uninterrupted run -------------
# The reference is trained afterwards, uninterrupted, up to the end of the
# epoch the killed job had reached (--epochs takes a run further without
# changing its first epochs: test_client.sh), and the killed job is resumed
# up to the same epoch.
if [ -n "$last" ]; then
  cp "$last/checkpoint.safetensors" "$tmp/ckpt"
  e=$(meta "$tmp/ckpt" epoch)
  echo "resuming from epoch $e, position $(meta "$tmp/ckpt" epoch_iteration) (iteration $(meta "$tmp/ckpt" iteration)) up to the end of epoch $e"
  timeout 300 mpirun -np 2 "$cli" "${args[@]}" --epochs "$e" --out "$tmp/ref" >/dev/null 2>"$tmp/err" \
    || bad "uninterrupted mpirun -np 2: $(cat "$tmp/err")"
  timeout 300 mpirun -np 2 "$cli" "${args[@]}" --epochs "$e" --out "$last" --checkpoint-every 7 --resume "$last/checkpoint.safetensors" \
    >/dev/null 2>"$tmp/err" || bad "resume: $(cat "$tmp/err")"
  cmp -s "$tmp/ref/model.safetensors" "$last/model.safetensors" && ok \
    || bad "killed + resumed model differs from the uninterrupted one"
fi

# ---- a hung rank: the watchdog of the waiting rank ends the job --------------------
# (The watchdog's message is matched on its stable part, the rank that
# reports and the timeout: its wording may name the missing rank.)
out=$tmp/hung
DPT_COMM_TIMEOUT_MS=2000 mpirun -np 2 "${CAPPED[@]}" "$cli" "${args[@]}" --epochs $LONG_EPOCHS --out "$out" --checkpoint-every 7 \
  >/dev/null 2>"$tmp/err" &
bg=$!
await_file "$out/checkpoint.safetensors" "$bg"
r1=$(rank_pid "$bg" 1)
if [ -n "$r1" ]; then
  t0=$(now_ms)
  kill -STOP "$r1"
  # The watchdog is a 2 s timer; 30 s is the margin for a slow, loaded
  # machine to tear the job down.
  if wait_exit "$bg" 60; then
    t1=$(now_ms); wait "$bg"; rc=$?; bg=""
    echo "hung rank 1 (SIGSTOP): job exited $rc after $((t1 - t0)) ms"
    sed 's/^/    /' "$tmp/err" | grep -v '^    -*$'
    [ "$rc" -ne 0 ] && [ $((t1 - t0)) -lt 30000 ] && ok || bad "hung rank: exit $rc after $((t1 - t0)) ms"
    grep -qE "^dptrain: rank [01]: .*2000 ms" "$tmp/err" && ok \
      || bad "hung rank: no watchdog message: $(cat "$tmp/err")"
  else
    bad "hung rank: the job still runs 60 s after rank 1 stopped"
  fi
  kill -CONT "$r1" 2>/dev/null
else
  bad "hung rank: rank 1 not found: $(cat "$tmp/err")"
fi

# ---- numeric fault under MPI -------------------------------------------------------
timeout 120 mpirun -np 2 "$cli" train --data "$d" --batch 8 --epochs 1 --seed 5 --quiet --device cpu --lr 1e20 \
  --out "$tmp/nan" >/dev/null 2>"$tmp/err"
rc=$?
if [ $rc -ne 0 ] && grep -qE "^dptrain: rank [01]: epoch 1, iteration [0-9]+: non-finite values in the output of layer '[a-z0-9]+'" "$tmp/err"; then
  ok
else
  bad "--lr 1e6 under mpirun: exit $rc, $(cat "$tmp/err")"
fi
[ ! -e "$tmp/nan/model.safetensors" ] && ok || bad "model written after a numeric fault"

echo "test_faults_mpi: $pass passed, $fail failed"
[ $fail -eq 0 ]
