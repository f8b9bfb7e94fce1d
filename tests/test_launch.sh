#!/usr/bin/env bash
# dptrain launch: mpirun -np 2 dptrain train, restarted from the last
# checkpoint when the job fails.
#   - rank 1 killed (SIGKILL) once, and in another run twice: the launcher
#     restarts from OUT/checkpoint.safetensors, says what failed and where it
#     resumes, and the final model is byte-identical (cmp) to an
#     uninterrupted mpirun run with the same arguments;
#   - a deterministic failure (--lr 1e20: NaN at iteration 2, after the
#     checkpoint of iteration 1) is restarted once, then not again;
#   - --max-restarts 0: one run, its exit status, no restart;
#   - SIGTERM to the launcher, and Ctrl-C on its terminal, end the job
#     without a restart;
#   - --help and bad options;
#   - with a stand-in mpirun (a script that records its arguments and fails
#     as told): the mpirun command line, --resume replaced in every spelling,
#     a checkpoint from an earlier run never resumed from, failures told
#     apart, --max-restarts, a signal, control characters in the job's
#     message.
# The stand-in part runs everywhere; the runs under mpirun skip (77) without MPI.
# Every kill happens at an event the test sees (a checkpoint written by the
# attempt being killed), never after a sleep: the ranks' PIDs are found
# while they start, and the wait for the checkpoint and the kill use only
# shell builtins, so the kill follows the checkpoint within milliseconds.
# The job runs 4 epochs x 45 iterations with a checkpoint every 10; the
# kills landed at iterations 10-50 of 180, also with a network of one fc
# layer (a much cheaper iteration) on this 2-core machine at load 20.
set -u
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" # Open MPI's plugins leak
cli=${DPT_CLI:?}
src=${DPT_SOURCE_DIR:?}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
unset DPT_COMM_TIMEOUT_MS DPT_MPIRUN
d=$src/tests/fixtures/digits400
tmp=$(mktemp -d)
bg=""
cleanup() {
  if [ -n "$bg" ] && kill -0 "$bg" 2>/dev/null; then
    kill -9 "$bg" 2>/dev/null
    for p in $(pgrep -f -- "--out $tmp/"); do kill -9 "$p" 2>/dev/null; done
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap "exit 1" INT TERM HUP
fail=0 pass=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*" >&2; fail=$((fail + 1)); }
# Time in ms, and a pause, without starting a process (a loaded machine may
# take long to start one): read -t on a pipe that nobody writes to.
now_ms() { local t=${EPOCHREALTIME//[.,]/}; echo $((t / 1000)); }
exec {napfd}<> <(:)
nap() { read -rt "$1" -u "$napfd" _ || :; }
# PID of MPI rank R of the job writing to OUT: the processes with OUT in their
# command line, less mpirun and the launcher (only ranks carry
# OMPI_COMM_WORLD_RANK).
rank_pid() {
  local p
  for p in $(pgrep -f -- "--out $1( |$)"); do
    if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2"; then
      echo "$p"; return 0
    fi
  done
  return 1
}
# Wait (while the launcher runs; at most 2 min as a hang guard) until OUT
# has a checkpoint newer than the file MARK (empty: any checkpoint), that is,
# one written by the attempt now running; 0 once it has. Only shell builtins
# in the loop, so the file is seen within milliseconds even on a loaded
# machine.
wait_ckpt() {
  local i c=$1/checkpoint.safetensors
  for ((i = 0; i < 24000; i++)); do
    if [ -e "$c" ] && { [ -z "$2" ] || [ "$c" -nt "$2" ]; }; then return 0; fi
    kill -0 "$bg" 2>/dev/null || return 1
    nap 0.005
  done
  return 1
}
# R0 and R1: the PIDs of ranks 0 and 1 of the attempt now running on OUT,
# once both exist (long before its first checkpoint: MPI and the data start
# first), so that the kill itself needs no search.
ranks_of() {
  local i
  for ((i = 0; i < 24000; i++)); do
    R0=$(rank_pid "$1" 0) && R1=$(rank_pid "$1" 1) && return 0
    kill -0 "$bg" 2>/dev/null || return 1
    nap 0.005
  done
  return 1
}
# Wait for a line matching RE in FILE while the launcher runs.
wait_line() {
  local i
  for i in $(seq 1 12000); do
    grep -qE "$2" "$1" && return 0
    kill -0 "$bg" 2>/dev/null || { grep -qE "$2" "$1"; return; }
    nap 0.01
  done
  return 1
}

args=(train --data "$d" --batch 8 --epochs 4 --seed 5 --quiet --device cpu --checkpoint-every 10)

# ---- --help and bad options ---------------------------------------------------
"$cli" launch --help >"$tmp/help" && grep -q -- "--max-restarts K .*default 3" "$tmp/help" \
  && grep -q -- "-np N" "$tmp/help" && ok || bad "launch --help"
"$cli" --help | grep -q "^  launch " && ok || bad "dptrain --help does not list launch"
envp=() # environment changes for check_bad
check_bad() { # EXPECTED-MESSAGE-RE ARGS...
  local re=$1; shift
  env "${envp[@]}" "$cli" launch "$@" >"$tmp/o" 2>"$tmp/e"
  local rc=$?
  if [ $rc -eq 1 ] && grep -qE "^dptrain: $re" "$tmp/e" && [ ! -s "$tmp/o" ]; then ok
  else bad "launch $*: exit $rc, $(cat "$tmp/e")"; fi
}
check_bad "launch: -np N is required" -- "${args[@]}" --out "$tmp/x"
check_bad "-np: '0' is not an integer from 1 to 4096" -np 0 -- "${args[@]}"
check_bad "-np: 'two' is not an integer" -np two -- "${args[@]}"
check_bad "--max-restarts: '-1' is not an integer from 0 to 1000" -np 2 --max-restarts -1 -- "${args[@]}"
check_bad "launch: unknown or incomplete option '--bogus'" -np 2 --bogus -- "${args[@]}"
check_bad "launch: unknown or incomplete option '--max-restarts'" -np 2 --max-restarts
check_bad "launch: the job must be 'train ARGS...' after the options \(got 'eval'\)" -np 2 -- eval --model m
check_bad "launch: the job must be 'train ARGS...' after the options \(got nothing\)" -np 2 --
check_bad "--hostfile $tmp/none: No such file or directory" -np 2 --hostfile "$tmp/none" -- "${args[@]}"
mkfifo "$tmp/fifo"
check_bad "--hostfile $tmp/fifo: not a regular file" -np 2 --hostfile "$tmp/fifo" -- "${args[@]}"
check_bad "--mpirun $tmp/none: not an executable file" -np 2 --mpirun "$tmp/none" -- "${args[@]}"
envp=(DPT_MPIRUN=); check_bad "DPT_MPIRUN: empty" -np 2 -- "${args[@]}"
envp=(PATH=/nonexistent); check_bad "launch: mpirun not found on PATH" -np 2 -- "${args[@]}"
envp=()
[ ! -e out ] && ok || bad "a refused launch created ./out"

# ---- a stand-in mpirun: command lines and restart decisions ------------------------
# Call N of the stand-in records its arguments and plays line N of the plan:
# ok (exit 0), ckpt (writes a checkpoint into OUT, then fails), same (the
# same failure each time; only the rank differs), diff (another failure each
# time), sig (a line without its newline, then killed by SIGKILL), ctl (a
# message with an escape sequence), lost (mpirun's word on a lost rank, then
# another rank's line).
fake=$tmp/fake
mkdir -p "$fake"
cat >"$fake/mpirun" <<'EOF'
#!/usr/bin/env bash
n=$(( $(cat "$FAKE/calls" 2>/dev/null || echo 0) + 1 )); echo "$n" >"$FAKE/calls"
printf '%s\n' "$@" >"$FAKE/args$n"
env | grep '^OMPI_ALLOW_RUN_AS_ROOT' | sort >"$FAKE/env$n"
out=$(cat "$FAKE/out")
case "$(sed -n "${n}p" "$FAKE/plan")" in
  ok) exit 0 ;;
  ckpt) cp "$FAKE/ckpt" "$out/.c" && mv "$out/.c" "$out/checkpoint.safetensors"
        echo "dptrain: fake failure $n" >&2; exit 1 ;;
  same) echo "dptrain: rank $n: the same failure" >&2; exit 1 ;;
  diff) echo "dptrain: failure number $n" >&2; exit 1 ;;
  sig) printf 'last words' >&2; kill -9 $$ ;;
  ctl) printf 'dptrain: bad \033[31mname\n' >&2; exit 3 ;;
  lost) printf '%s\n' "mpirun noticed that process rank 1 with PID 0 on node h exited on signal 9 (Killed)." \
          "dptrain: rank 0: stopped by signal 15" >&2; exit 137 ;;
esac
exit 99
EOF
chmod +x "$fake/mpirun"
export FAKE=$fake
# A real checkpoint for the stand-in to leave behind (one worker, 1 epoch).
"$cli" train --data "$d" --batch 8 --epochs 1 --seed 5 --quiet --workers 1 --checkpoint-every 10 \
  --out "$tmp/one" >/dev/null 2>"$tmp/e" && cp "$tmp/one/checkpoint.safetensors" "$fake/ckpt" \
  || bad "one-worker run for a checkpoint: $(cat "$tmp/e")"
exe=$(readlink -f "$cli")
fake_launch() { # OUT PLAN... -- LAUNCH-ARGS...
  local o=$1; shift
  : >"$fake/plan"
  while [ "$1" != -- ]; do echo "$1" >>"$fake/plan"; shift; done
  shift
  rm -f "$fake"/calls "$fake"/args* "$fake"/env*
  echo "$o" >"$fake/out"
  mkdir -p "$o"
  "$cli" launch --mpirun "$fake/mpirun" "$@" >"$tmp/o" 2>"$tmp/e"
}
calls() { cat "$fake/calls" 2>/dev/null || echo 0; }
# Call N's arguments on one line, without the -x DPT_...=... pairs.
call_args() { awk 'x { x = 0; next } $0 == "-x" { x = 1; next } { printf "%s ", $0 }' "$fake/args$1"; }

o=$tmp/f1
echo "host1 slots=2" >"$tmp/hosts"
echo ok >"$fake/plan"; echo "$o" >"$fake/out"; rm -f "$fake"/calls
DPT_FOO=bar env -u OMPI_ALLOW_RUN_AS_ROOT -u OMPI_ALLOW_RUN_AS_ROOT_CONFIRM \
  "$cli" launch --mpirun "$fake/mpirun" -np 3 --hostfile "$tmp/hosts" --mpi-arg --oversubscribe \
  --mpi-arg=--bind-to --mpi-arg none -- train --data "$d" --checkpoint-every 5 --out "$o" >"$tmp/o" 2>"$tmp/e"
rc=$?
want="-np 3 --hostfile $tmp/hosts --oversubscribe --bind-to none $exe train --data $d --checkpoint-every 5 --out $o "
if [ $rc -eq 0 ] && [ "$(calls)" = 1 ] && [ "$(call_args 1)" = "$want" ] && [ ! -s "$tmp/e" ]; then ok
else bad "mpirun command line: exit $rc, $(calls) calls: '$(call_args 1)', want '$want'; $(cat "$tmp/e")"; fi
grep -qx -- "DPT_FOO=bar" "$fake/args1" && [ "$(grep -B1 -x -- "DPT_FOO=bar" "$fake/args1" | head -1)" = -x ] \
  && ok || bad "DPT_FOO not passed with -x: $(cat "$fake/args1")"
if [ "$(id -u)" = 0 ]; then
  [ "$(cat "$fake/env1")" = "$(printf 'OMPI_ALLOW_RUN_AS_ROOT=1\nOMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1')" ] \
    && ok || bad "as root, mpirun's environment lacks OMPI_ALLOW_RUN_AS_ROOT*: $(cat "$fake/env1")"
fi
# Without "--" and with Open MPI's spelling --np as well.
echo ok >"$fake/plan"; rm -f "$fake"/calls
"$cli" launch --mpirun "$fake/mpirun" --np 2 train --data "$d" --out "$o" >"$tmp/o" 2>"$tmp/e"
rc=$?
[ $rc -eq 0 ] && [ "$(call_args 1)" = "-np 2 $exe train --data $d --out $o " ] && ok \
  || bad "launch --np 2 train ...: exit $rc, '$(call_args 1)'; $(cat "$tmp/e")"

# Every spelling of the user's --resume is replaced by the job's checkpoint.
o=$tmp/f2
fake_launch "$o" ckpt ok -- -np 2 -- train --data "$d" --resume="$tmp/u.ckpt" --res "$tmp/u.ckpt" --out="$o" --resume "$tmp/u.ckpt"
rc=$?
want="-np 2 $exe train --data $d --out=$o --resume $o/checkpoint.safetensors "
if [ $rc -eq 0 ] && [ "$(calls)" = 2 ] && [ "$(call_args 2)" = "$want" ] \
  && grep -q "^dptrain launch: the job failed (mpirun exit status 1): dptrain: fake failure 1$" "$tmp/e" \
  && grep -qE "^dptrain launch: restart 1 of 3: resuming from $o/checkpoint.safetensors at epoch [0-9]+, iteration 45 \([0-9]+ into the epoch\)$" "$tmp/e" \
  && grep -q "^dptrain launch: the job succeeded after 1 restart$" "$tmp/e"; then ok
else bad "--resume replaced: exit $rc, $(calls) calls: '$(call_args 2)', want '$want'; $(cat "$tmp/e")"; fi

# A checkpoint from an earlier run in OUT is not this job's: a restart starts
# afresh (--overwrite), and the same failure twice ends it.
o=$tmp/f3
mkdir -p "$o"; cp "$fake/ckpt" "$o/checkpoint.safetensors"
fake_launch "$o" same same same -- -np 2 -- train --data "$d" --out "$o"
rc=$?
want="-np 2 $exe train --data $d --out $o --overwrite "
if [ $rc -eq 1 ] && [ "$(calls)" = 2 ] && [ "$(call_args 2)" = "$want" ] \
  && grep -q "^dptrain launch: note: no --checkpoint-every K in the train options, so a restart starts from the beginning$" "$tmp/e" \
  && grep -q "^dptrain launch: restart 1 of 3: no checkpoint of this job in $o; starting afresh$" "$tmp/e" \
  && grep -q "^dptrain: launch: the job failed twice the same way before its first checkpoint; not restarting$" "$tmp/e"; then ok
else bad "earlier run's checkpoint: exit $rc, $(calls) calls: '$(call_args 2)', want '$want'; $(cat "$tmp/e")"; fi
# ... unless the job started from it.
fake_launch "$o" same same same -- -np 2 -- train --data "$d" --resume "$o/checkpoint.safetensors" --out "$o"
rc=$?
if [ $rc -eq 1 ] && [ "$(calls)" = 2 ] \
  && [ "$(call_args 2)" = "-np 2 $exe train --data $d --out $o --resume $o/checkpoint.safetensors " ] \
  && grep -q "^dptrain: launch: the job failed twice the same way from the checkpoint at iteration 45; not restarting$" "$tmp/e"; then ok
else bad "resumed from OUT's checkpoint: exit $rc, $(calls) calls: '$(call_args 2)'; $(cat "$tmp/e")"; fi

# Different failures: restarted up to --max-restarts.
fake_launch "$tmp/f4" diff diff diff diff -- -np 2 --max-restarts 2 -- train --data "$d" --out "$tmp/f4"
rc=$?
if [ $rc -eq 1 ] && [ "$(calls)" = 3 ] && grep -q "^dptrain launch: restart 2 of 2: " "$tmp/e" \
  && grep -q "^dptrain: launch: the job failed; no restarts left (--max-restarts 2)$" "$tmp/e"; then ok
else bad "--max-restarts 2: exit $rc, $(calls) calls; $(cat "$tmp/e")"; fi

# mpirun killed by a signal; a message with an escape sequence is shown
# without it (the job's own stderr passes through unchanged).
fake_launch "$tmp/f5" sig ctl lost ok -- -np 2 -- train --data "$d" --out "$tmp/f5"
rc=$?
if [ $rc -eq 0 ] && [ "$(calls)" = 4 ] && grep -q "^dptrain launch: the job failed (mpirun killed by signal 9): last words$" "$tmp/e" \
  && grep -qx "last words" "$tmp/e" \
  && grep -q "^dptrain launch: the job failed (mpirun exit status 3): dptrain: bad ?\[31mname$" "$tmp/e" \
  && grep -q "^dptrain launch: the job failed (mpirun exit status 137): mpirun noticed that process rank 1 with PID 0 on node h exited on signal 9 (Killed).$" "$tmp/e" \
  && grep -q "^dptrain launch: the job succeeded after 3 restarts$" "$tmp/e"; then ok
else bad "signal and control characters: exit $rc, $(calls) calls; $(cat -v "$tmp/e")"; fi
unset FAKE

if [ "${DPT_HAVE_MPI:-0}" != 1 ] || ! command -v mpirun >/dev/null; then
  echo "test_launch: $pass passed, $fail failed; the runs under mpirun skipped: dptrain was built without MPI or mpirun is missing"
  [ $fail -eq 0 ] && exit 77 || exit 1
fi

# ---- the uninterrupted reference --------------------------------------------------
timeout 300 mpirun -np 2 "$cli" "${args[@]}" --out "$tmp/ref" >/dev/null 2>"$tmp/err" \
  || { bad "uninterrupted mpirun -np 2: $(cat "$tmp/err")"; echo "test_launch: $pass passed, $fail failed"; exit 1; }
bytes=$(stat -c %s "$tmp/ref/model.safetensors")

# ---- rank 1 killed once, then twice ------------------------------------------------
for kills in 1 2; do
  out=$tmp/kill$kills
  "$cli" launch -np 2 -- "${args[@]}" --out "$out" >"$tmp/o$kills" 2>"$tmp/e$kills" &
  bg=$!
  mark="" # a file as old as the checkpoint the running attempt resumed from
  ranks_of "$out" || bad "$kills kill(s): the ranks did not start: $(cat "$tmp/e$kills")"
  for k in $(seq 1 "$kills"); do
    if ! wait_ckpt "$out" "$mark"; then
      bad "$kills kill(s): no new checkpoint while the job ran: $(cat "$tmp/e$kills")"; break
    fi
    t0=$(now_ms)
    kill -9 "$R1"
    if ! wait_line "$tmp/e$kills" "restart $k of 3: resuming from $out/checkpoint.safetensors at epoch [0-9]+, iteration [0-9]+"; then
      bad "$kills kill(s): no restart $k after the kill (did the job end first? it must be longer): $(cat "$tmp/e$kills")"; break
    fi
    t1=$(now_ms)
    touch -r "$out/checkpoint.safetensors" "$tmp/mark"; mark=$tmp/mark
    if ! ranks_of "$out"; then bad "$kills kill(s): restart $k: no ranks"; break; fi
    # The restarted ranks were given the checkpoint (not started afresh,
    # which would also end in the same bytes).
    if tr '\0' ' ' <"/proc/$R0/cmdline" 2>/dev/null | grep -q -- "--out $out --resume $out/checkpoint.safetensors $"; then ok
    else bad "$kills kill(s): restart $k: rank 0 not started with --resume $out/checkpoint.safetensors"; fi
    at=$(grep -oE "restart $k of 3: .* iteration [0-9]+" "$tmp/e$kills" | grep -oE "[0-9]+$")
    # Training again: the restarted job's first checkpoint (10 iterations on).
    if wait_ckpt "$out" "$mark"; then
      t2=$(now_ms)
      echo "kill $k of $kills: resumed at iteration $at of 180; kill -> restart $((t1 - t0)) ms," \
           "kill -> restarted job's first checkpoint $((t2 - t0)) ms"
    fi
  done
  wait "$bg"; rc=$?; bg=""
  sed 's/^/    /' "$tmp/e$kills" | grep '^    dptrain launch'
  [ $rc -eq 0 ] && ok || bad "$kills kill(s): launch exited $rc: $(cat "$tmp/e$kills")"
  n=$(grep -c "^dptrain launch: the job failed (mpirun exit status [0-9]*): " "$tmp/e$kills")
  [ "$n" -eq "$kills" ] && ok || bad "$kills kill(s): $n failures reported"
  n=$(grep -c "^dptrain launch: the job failed (mpirun exit status 137): mpirun noticed that process rank 1 .* exited on signal 9" "$tmp/e$kills")
  [ "$n" -eq "$kills" ] && ok || bad "$kills kill(s): $n failures named the killed rank"
  grep -q "^mpirun noticed that process rank 1 .* exited on signal 9" "$tmp/e$kills" && ok \
    || bad "$kills kill(s): mpirun's message did not pass through"
  grep -q "^dptrain launch: the job succeeded after $kills restart" "$tmp/e$kills" && ok \
    || bad "$kills kill(s): no success line"
  if cmp "$tmp/ref/model.safetensors" "$out/model.safetensors"; then
    ok; echo "$kills kill(s): model.safetensors byte-identical to the uninterrupted run ($bytes bytes compared)"
  else
    bad "$kills kill(s): the model differs from the uninterrupted run's"
  fi
  grep -q "test accuracy" "$tmp/o$kills" && ok || bad "$kills kill(s): no result on stdout"
done

# ---- a deterministic failure is restarted once, not twice ------------------------------
nan=(train --data "$d" --batch 8 --epochs 1 --seed 5 --quiet --device cpu --lr 1e20 --checkpoint-every 1)
timeout 120 "$cli" launch -np 2 -- "${nan[@]}" --out "$tmp/nan" >/dev/null 2>"$tmp/e"
rc=$?
n=$(grep -c "^dptrain launch: the job failed (mpirun exit status 1): dptrain: rank [01]: epoch 1, iteration 2: non-finite" "$tmp/e")
if [ $rc -eq 1 ] && [ "$n" -eq 2 ] \
  && grep -q "^dptrain launch: restart 1 of 3: resuming from $tmp/nan/checkpoint.safetensors at epoch 1, iteration 1 (1 into the epoch)" "$tmp/e" \
  && ! grep -q "restart 2 of" "$tmp/e" \
  && grep -q "^dptrain: launch: the job failed twice the same way from the checkpoint at iteration 1; not restarting" "$tmp/e"; then
  ok
else
  bad "NaN under launch: exit $rc, $n failures: $(grep dptrain "$tmp/e")"
fi
[ ! -e "$tmp/nan/model.safetensors" ] && ok || bad "NaN under launch: a model was written"

# ---- --max-restarts 0: like a plain run ----------------------------------------------
timeout 120 "$cli" launch -np 2 --max-restarts 0 -- "${nan[@]}" --out "$tmp/nan0" >/dev/null 2>"$tmp/e"
rc=$?
n=$(grep -c "^dptrain launch: the job failed" "$tmp/e")
if [ $rc -eq 1 ] && [ "$n" -eq 1 ] && ! grep -qE "restart [0-9]+ of" "$tmp/e" \
  && grep -q "^dptrain: rank [01]: epoch 1, iteration 2: non-finite" "$tmp/e" \
  && grep -q "^dptrain: launch: the job failed; no restarts left (--max-restarts 0)" "$tmp/e"; then
  ok
else
  bad "--max-restarts 0: exit $rc, $n failures: $(grep dptrain "$tmp/e")"
fi

# ---- SIGTERM to the launcher: passed to the job, no restart --------------------------
out=$tmp/term
"$cli" launch -np 2 -- "${args[@]}" --out "$out" >/dev/null 2>"$tmp/e" &
bg=$!
if wait_ckpt "$out" ""; then
  kill -TERM "$bg"
  # A hang guard (2 min) that says what was still running, not the
  # suite's timeout.
  for ((i = 0; i < 12000; i++)); do kill -0 "$bg" 2>/dev/null || break; nap 0.01; done
  if kill -0 "$bg" 2>/dev/null; then
    bad "SIGTERM: the launcher still runs 2 min later: $(ps -o pid,stat,args --ppid "$bg" 2>&1 | tr '\n' ';')"
    kill -9 "$bg"
  fi
  wait "$bg"; rc=$?
  gone=0 # the ranks end with mpirun (at most 30 s, as a hang guard)
  for _ in $(seq 1 3000); do rank_pid "$out" 0 >/dev/null || rank_pid "$out" 1 >/dev/null || { gone=1; break; }; nap 0.01; done
  bg=""
  if [ $rc -eq 1 ] && [ $gone -eq 1 ] && ! grep -qE "restart [0-9]+ of" "$tmp/e" \
    && ! grep -q "the job failed" "$tmp/e" \
    && grep -q "^dptrain: launch: stopped by signal 15; not restarting (last checkpoint: $out/checkpoint.safetensors)" "$tmp/e"; then
    ok
  else
    bad "SIGTERM: exit $rc, ranks gone $gone: $(cat "$tmp/e")"
  fi
else
  bad "SIGTERM: no checkpoint while the job ran: $(cat "$tmp/e")"
fi

# ---- Ctrl-C on a terminal: mpirun gets it from the terminal, once --------------------
# (run in a pseudo-terminal; the launcher does not send mpirun a second SIGINT)
out=$tmp/ctrlc
cat >"$tmp/ctrlc.py" <<'EOF'
import os, pty, sys, time
out = sys.argv[1]
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
t = time.time()
while not os.path.exists(out + "/checkpoint.safetensors") and time.time() - t < 120:
    time.sleep(0.005)
os.write(fd, b"\x03")
text = b""
while True:
    try:
        b = os.read(fd, 4096)
    except OSError:
        break
    if not b:
        break
    text += b
_, st = os.waitpid(pid, 0)
sys.stdout.write(text.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(st))
EOF
if command -v python3 >/dev/null; then
  timeout 300 python3 "$tmp/ctrlc.py" "$out" "$cli" launch -np 2 -- "${args[@]}" --out "$out" >"$tmp/e" 2>&1
  rc=$?
  gone=0
  for _ in $(seq 1 3000); do rank_pid "$out" 0 >/dev/null || rank_pid "$out" 1 >/dev/null || { gone=1; break; }; nap 0.01; done
  if [ $rc -eq 1 ] && [ $gone -eq 1 ] && ! grep -qE "restart [0-9]+ of|the job failed" "$tmp/e" \
    && grep -q "dptrain: launch: stopped by signal 2; not restarting (last checkpoint: $out/checkpoint.safetensors)" "$tmp/e"; then
    ok
  else
    bad "Ctrl-C: exit $rc, ranks gone $gone: $(cat "$tmp/e")"
  fi
fi

# ---- restarts without a checkpoint (train --overwrite) ----------------------------
# A bad input fails the same way before any checkpoint: two runs, no third.
timeout 120 "$cli" launch -np 2 -- train --data "$tmp/none" --out "$tmp/bad" >/dev/null 2>"$tmp/e"
rc=$?
n=$(grep -c "^dptrain launch: the job failed" "$tmp/e")
if [ $rc -eq 1 ] && [ "$n" -eq 2 ] \
  && grep -q "^dptrain launch: restart 1 of 3: no checkpoint of this job in $tmp/bad; starting afresh" "$tmp/e" \
  && grep -q "^dptrain: launch: the job failed twice the same way before its first checkpoint; not restarting" "$tmp/e"; then
  ok
else
  bad "bad input under launch: exit $rc, $n failures: $(grep dptrain "$tmp/e")"
fi
# A failure before the first checkpoint of a run (rank 1 killed as soon
# as it exists; the first checkpoint would be at iteration 100): a fresh
# restart in the failed attempt's folder, same model in the end.
out=$tmp/early
"$cli" launch -np 2 -- "${args[@]}" --checkpoint-every 100 --out "$out" >/dev/null 2>"$tmp/e" &
bg=$!
if ranks_of "$out"; then kill -9 "$R1"; else bad "early kill: rank 1 not found"; fi
wait "$bg"; rc=$?; bg=""
if [ $rc -eq 0 ] && grep -qE "^dptrain launch: restart 1 of 3: (no checkpoint of this job in $out; starting afresh|resuming from)" "$tmp/e" \
  && cmp -s "$tmp/ref/model.safetensors" "$out/model.safetensors"; then
  ok
else
  bad "early kill: exit $rc: $(grep dptrain "$tmp/e")"
fi

echo "test_launch: $pass passed, $fail failed"
[ $fail -eq 0 ]
