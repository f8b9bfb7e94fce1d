#!/usr/bin/env bash
# An output folder holds one run (DESIGN.md, invariant 7), temporary files
# never follow symlinks, and SIGINT/SIGTERM stop training cleanly:
#   - symlinks planted at every final name and at the temporary names a run
#     will try: the files they point to (outside --out) are never written;
#   - a failing run (bad input; a NaN mid-training) into a good run's folder
#     leaves its files byte-identical, with or without --overwrite (the
#     earlier files go only once every input is checked);
#   - a second run on a folder in use is refused (naming the holder's pid);
#     a SIGKILLed run leaves no stuck lock, and its temporaries are removed;
#   - SIGINT/SIGTERM before training, mid-epoch and while checkpoints are
#     written (one every iteration, several tries): exit 1, one line naming
#     the last checkpoint, no temporary files, complete metrics.csv rows, and
#     --resume from that checkpoint goes on as one run.
# Every fault is injected at an event (a line printed, a file appearing),
# never after a sleep; runs that must still be going are given 100000 epochs.
set -u
cli=${DPT_CLI:?DPT_CLI must point at the dptrain executable}
src=${DPT_SOURCE_DIR:?}
d=$src/tests/fixtures/digits400
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done; rm -rf "$tmp"; }
trap cleanup EXIT
fail=0
pass=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*" >&2; fail=$((fail + 1)); }

args=(train --data "$d" --batch 32 --workers 2 --seed 3)
# No loss.png but where a test wants it (the renderer's own case is below).
mkdir -p "$tmp/bin"
printf '#!/bin/sh\nexit 1\n' >"$tmp/bin/rsvg-convert"
chmod +x "$tmp/bin/rsvg-convert"
real_path=$PATH
export PATH="$tmp/bin:$PATH"
train() { "$cli" "${args[@]}" "$@"; }
# bg ARGS...: train in the background, $! its pid. A non-interactive shell
# starts background jobs with SIGINT ignored (and dptrain keeps an ignored
# signal ignored): env gives it back its default.
bg() { env --default-signal=INT "$cli" "${args[@]}" "$@" & pids+=("$!"); }
# wait_for PID CMD...: poll until CMD succeeds (an event); 1 if PID ended
# first. The bound only stops a hung test.
wait_for() {
  local pid=$1; shift
  for _ in $(seq 1 6000); do
    "$@" && return 0
    kill -0 "$pid" 2>/dev/null || { "$@"; return; }
    sleep 0.02
  done
  return 1
}
# last_it FILE: the iteration of the last complete metrics.csv row.
last_it() { tail -n 1 "$1" 2>/dev/null | awk -F, 'NF == 7 { print $2 }'; }
# at FILE K: the run's stdout (--print-every 1) shows iteration K done.
at() { grep -q "  iteration $2  " "$1"; }
sums() { (cd "$1" && sha256sum model.safetensors checkpoint.safetensors metrics.csv loss.svg loss.png 2>/dev/null); }
no_tmp() { ! ls -a "$1" | grep -q '\.tmp'; }
# csv_ok FILE: every row complete, iterations 1, 2, 3, ... (one run's history)
csv_ok() {
  awk -F, 'NR == 1 { next } NF != 7 || $2 != NR - 1 { bad = 1 } END { exit bad || NR < 2 }' "$1" \
    && [ "$(tail -c 1 "$1" | od -An -c | tr -d ' ')" = '\n' ]
}

# ---- a good run, then failing runs into its folder ---------------------------------
good=$tmp/good
train --epochs 1 --checkpoint-every 5 --quiet --out "$good" >/dev/null 2>"$tmp/err" || bad "good run: $(cat "$tmp/err")"
sums "$good" >"$tmp/good.sums"
[ "$(wc -l <"$tmp/good.sums")" -ge 4 ] && ok || bad "good run: files missing: $(ls "$good")"
same() { sums "$good" | cmp -s - "$tmp/good.sums" && ok || bad "$1: the earlier run's files changed"; }
# expect_fail NEEDLE ARGS...: exit 1 with one "dptrain: " line containing NEEDLE.
expect_fail() {
  local needle=$1; shift
  train "$@" >/dev/null 2>"$tmp/err"
  local rc=$?
  [ $rc -eq 1 ] && [ "$(wc -l <"$tmp/err")" = 1 ] && grep -q "^dptrain: " "$tmp/err" && grep -qF -- "$needle" "$tmp/err" \
    && ok || bad "exit $rc, want 1 and '$needle': $* ($(head -c 400 "$tmp/err"))"
}
expect_fail "--out $good: holds an earlier run's files (model.safetensors, checkpoint.safetensors, metrics.csv, loss.svg" \
  --epochs 1 --quiet --out "$good"
same "a fresh run without --overwrite"
expect_fail "holds an earlier run's files" --epochs 1 --lr 1e20 --quiet --out "$good"
same "a NaN run without --overwrite"
expect_fail "$tmp/missing.net" --epochs 1 --quiet --overwrite --net "$tmp/missing.net" --out "$good"
same "a missing --net with --overwrite"
head -c 4000 "$good/checkpoint.safetensors" >"$tmp/cut.safetensors"
expect_fail "cut.safetensors" --epochs 2 --quiet --overwrite --resume "$tmp/cut.safetensors" --out "$good"
same "a truncated --resume checkpoint with --overwrite (checked inside dpt_fit)"
# With --overwrite, a run that fails mid-training has replaced the earlier
# run, never mixed with it: none of the earlier run's files is left.
train --epochs 2 --lr 1e20 --checkpoint-every 1 --quiet --overwrite --out "$tmp/nanrun" >/dev/null 2>&1
cp -r "$good" "$tmp/good2"
train --epochs 2 --lr 1e20 --checkpoint-every 1 --quiet --overwrite --out "$tmp/good2" >/dev/null 2>"$tmp/err"
rc=$?
(cd "$tmp/good2" && sha256sum -c --quiet "$tmp/good.sums" >/dev/null 2>&1)
grep -q "non-finite" "$tmp/err" && [ $rc -eq 1 ] && [ ! -e "$tmp/good2/model.safetensors" ] \
  && ! (cd "$tmp/good2" && sha256sum -c "$tmp/good.sums" 2>/dev/null | grep -q ': OK$') \
  && ok || bad "NaN run with --overwrite: exit $rc, $(cat "$tmp/err"); left: $(cd "$tmp/good2" && sha256sum -c "$tmp/good.sums" 2>&1)"

# ---- symlinks planted at the final names and at the temporary names -------------------
# A continued run (--resume of the folder's own checkpoint) keeps the folder:
# links at the final names are replaced by renames, never written through.
victim=$tmp/victim
echo "precious" >"$victim"
sl=$tmp/sl
train --epochs 1 --checkpoint-every 4 --quiet --out "$sl" >/dev/null 2>"$tmp/err" || bad "symlink run: $(cat "$tmp/err")"
for f in model.safetensors metrics.csv loss.svg loss.png; do rm -f "$sl/$f"; ln -s "$victim" "$sl/$f"; done
train --epochs 2 --quiet --resume "$sl/checkpoint.safetensors" --out "$sl" >/dev/null 2>"$tmp/err" \
  && ok || bad "resume with links at the final names: $(cat "$tmp/err")"
[ "$(cat "$victim")" = precious ] && ok || bad "a file was written through a symlink at a final name"
for f in model.safetensors metrics.csv loss.svg; do
  [ -f "$sl/$f" ] && [ ! -L "$sl/$f" ] && ok || bad "$f is not a regular file after the run"
done
# Links at the temporary names a run tries first ("<file>.tmp.<pid>.<n>",
# n = 0, 1, ...) and at the fixed names of earlier versions: the run is
# started stopped (its pid is then known before it does anything), the links
# are planted, and it runs to the end, writing every kind of file.
tl=$tmp/tl
mkdir -p "$tl"
PATH=$real_path bash -c 'kill -STOP $$; exec "$0" "$@"' "$cli" "${args[@]}" --quiet \
  --epochs 3 --checkpoint-every 2 --eval-every-epoch --out "$tl" >/dev/null 2>"$tmp/tl.err" &
pid=$!; pids+=("$pid")
if wait_for "$pid" sh -c "ps -o stat= -p $pid | grep -q T"; then
  for f in model.safetensors checkpoint.safetensors metrics.csv loss.svg loss.png; do
    for n in 0 1 2 3 4; do ln -s "$victim" "$tl/$f.tmp.$pid.$n"; done
    ln -s "$victim" "$tl/$f.tmp"
  done
  ln -s "$victim" "$tl/loss.png.tmp.png"
  kill -CONT "$pid"; wait "$pid"; rc=$?
  [ $rc -eq 0 ] && ok || bad "run with planted temporaries: exit $rc, $(cat "$tmp/tl.err")"
  [ "$(cat "$victim")" = precious ] && ok || bad "a file was written through a symlink at a temporary name"
  n_links=$(find "$tl" -type l | wc -l)
  [ "$n_links" = 31 ] && ok || bad "planted links: $n_links of 31 left (one was replaced or removed)"
  want="model.safetensors checkpoint.safetensors metrics.csv loss.svg"
  command -v rsvg-convert >/dev/null && want="$want loss.png"
  for f in $want; do
    [ -f "$tl/$f" ] && [ ! -L "$tl/$f" ] && ok || bad "planted temporaries: no $f"
  done
  [ "$(find "$tl" -name '*.tmp*' -type f | wc -l)" = 0 ] && ok || bad "temporary files left: $(ls "$tl")"
  csv_ok "$tl/metrics.csv" && ok || bad "metrics.csv after planted temporaries"
else
  bad "symlinked temporaries: the run did not stop: $(cat "$tmp/tl.err")"
fi

# ---- two runs on one folder; a killed run leaves no stuck lock ----------------------------
two=$tmp/two
bg --epochs 100000 --checkpoint-every 5 --print-every 1 --out "$two" >"$tmp/two.out" 2>"$tmp/two.err"
pid=$!
if wait_for "$pid" at "$tmp/two.out" 6; then
  expect_fail "--out $two: in use by another run (pid $pid)" --epochs 1 --quiet --overwrite --out "$two"
  expect_fail "--out $two: in use by another run (pid $pid)" --epochs 2 --quiet --resume "$two/checkpoint.safetensors" --out "$two"
  kill -0 "$pid" 2>/dev/null && ok || bad "the first run died: $(cat "$tmp/two.err")"
  kill -KILL "$pid"; wait "$pid" 2>/dev/null
  # A killed run's temporaries (one planted here, as a crash mid-write leaves
  # them) go when the next run takes the folder; the lock is free.
  : >"$two/checkpoint.safetensors.tmp.$pid.7"
  # and the row it was writing when killed, cut short (no newline)
  printf '99,99999,0.5' >>"$two/metrics.csv"
  ep=$(( $(tail -n 1 "$two/metrics.csv" | cut -d, -f1) + 1 ))
  train --epochs "$ep" --quiet --resume "$two/checkpoint.safetensors" --out "$two" >/dev/null 2>"$tmp/err" \
    && ok || bad "resume after SIGKILL (lock stuck?): $(cat "$tmp/err")"
  # Complete rows in order, none twice (a crash can lose the rows the report
  # thread had not written yet: a gap, never a mix).
  awk -F, 'NR > 1 && (NF != 7 || $2 <= last) { bad = 1 } NR > 1 { last = $2 } END { exit bad }' "$two/metrics.csv" \
    && ok || bad "metrics.csv after SIGKILL and resume: $(cut -d, -f1,2 "$two/metrics.csv" | tr '\n' ' ')"
  no_tmp "$two" && ok || bad "a killed run's temporary file was not removed: $(ls -a "$two")"
else
  bad "two runs: the first did not get going: $(cat "$tmp/two.err")"
fi

# ---- SIGINT / SIGTERM ------------------------------------------------------------
# interrupt NAME SIGNAL ITERATION ARGS...: start a long run, send SIGNAL once
# it has printed ITERATION (0: once it prints its first line), and
# check the ending. Sets $stop_it (where it stopped) and $ck_it (checkpoint).
interrupt() {
  local name=$1 sig=$2 at=$3; shift 3
  local o=$tmp/$name
  bg --epochs 100000 --print-every 1 --out "$o" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err"
  local pid=$!
  if [ "$at" = 0 ]; then
    wait_for "$pid" grep -q "^training on" "$tmp/$name.out"
  else
    wait_for "$pid" at "$tmp/$name.out" "$at"
  fi || { bad "$name: the run did not get there: $(cat "$tmp/$name.err")"; return 1; }
  kill "-$sig" "$pid"; wait "$pid"; local rc=$?
  local msg; msg=$(cat "$tmp/$name.err")
  stop_it= ck_it=
  if [ $rc -ne 1 ] || [ "$(wc -l <"$tmp/$name.err")" != 1 ]; then
    bad "$name: exit $rc, want 1 and one line: $msg"; return 1
  fi
  case $msg in
    "dptrain: interrupted by SIG$sig before the first iteration; no checkpoint was written") stop_it=0 ;;
    "dptrain: interrupted by SIG$sig at epoch "*", iteration "*"; "*)
      stop_it=$(echo "$msg" | sed 's/.*, iteration \([0-9]*\);.*/\1/') ;;
    *) bad "$name: message: $msg"; return 1 ;;
  esac
  case $msg in
    *"; last checkpoint: $o/checkpoint.safetensors (iteration "*")") ck_it=$(echo "$msg" | sed 's/.*(iteration \([0-9]*\))$/\1/') ;;
    *"; no checkpoint was written") ck_it=none ;;
  esac
  [ -n "$ck_it" ] || { bad "$name: no checkpoint in the message: $msg"; return 1; }
  no_tmp "$o" && ok || bad "$name: temporary files left: $(ls -a "$o")"
  [ "$(cat "$victim")" = precious ] || bad "$name: victim written"
  if [ "$stop_it" -gt 0 ]; then
    csv_ok "$o/metrics.csv" && [ "$(last_it "$o/metrics.csv")" = "$stop_it" ] && ok \
      || bad "$name: metrics.csv (stopped at $stop_it): $(tail -n 2 "$o/metrics.csv")"
  fi
  [ ! -e "$o/model.safetensors" ] && ok || bad "$name: a model was saved by an interrupted run"
  echo "$name: $msg"
  return 0
}

# Right after the first line: before the first iteration or just after it.
if interrupt early INT 0 --checkpoint-every 5; then
  if [ "$stop_it" = 0 ]; then
    [ ! -e "$tmp/early/metrics.csv" ] && ok || bad "early: metrics.csv written before the first iteration"
  fi
fi
# Mid-epoch (12 iterations an epoch), then resumed: metrics.csv keeps the
# rows up to the checkpoint and goes on as one run's history.
if interrupt mid TERM 17 --checkpoint-every 4; then
  [ "$ck_it" != none ] && [ "$ck_it" -le "$stop_it" ] && [ $((ck_it % 4)) = 0 ] && ok || bad "mid: checkpoint $ck_it, stopped $stop_it"
  ep=$(( (stop_it + 11) / 12 + 1 ))
  train --epochs "$ep" --quiet --checkpoint-every 4 --resume "$tmp/mid/checkpoint.safetensors" --out "$tmp/mid" >/dev/null 2>"$tmp/err" \
    && ok || bad "mid: resume: $(cat "$tmp/err")"
  csv_ok "$tmp/mid/metrics.csv" && [ "$(last_it "$tmp/mid/metrics.csv")" = $((ep * 12)) ] && ok \
    || bad "mid: metrics.csv after resume is not one run's history: $(cut -d, -f1,2 "$tmp/mid/metrics.csv" | tr '\n' ' ')"
  [ -f "$tmp/mid/model.safetensors" ] && ok || bad "mid: no model after resume"
fi
# A checkpoint every iteration: the signal lands while one is being written
# or between two; several tries, each left with a loadable checkpoint.
for t in 1 2 3; do
  sig=TERM; [ $((t % 2)) = 0 ] && sig=INT
  if interrupt "ck$t" $sig $((3 + 5 * t)) --checkpoint-every 1; then
    [ "$ck_it" = "$stop_it" ] && ok || bad "ck$t: checkpoint $ck_it, stopped $stop_it"
    if [ $t = 1 ]; then
      train --epochs $(( (stop_it + 11) / 12 )) --quiet --resume "$tmp/ck$t/checkpoint.safetensors" --out "$tmp/ck$t" >/dev/null 2>"$tmp/err" \
        && csv_ok "$tmp/ck$t/metrics.csv" && ok || bad "ck$t: resume: $(cat "$tmp/err")"
    else
      "$cli" info --model "$tmp/ck$t/checkpoint.safetensors" >/dev/null 2>"$tmp/err" && ok || bad "ck$t: checkpoint unreadable: $(cat "$tmp/err")"
    fi
  fi
done

# ---- under mpirun: rank 0 holds the folder; a refusal and a stop reach every rank ------------
# ---- loss.png: a renderer that does not finish holds nothing up ----------------
# The stand-in renders only once $tmp/release exists, as an idle-priority
# renderer gets no CPU on a machine kept busy by others. The run must go on
# recording every epoch meanwhile (it used to wait for each epoch's render),
# and the loss.png it leaves is the final plot, with no temporaries left.
mkdir -p "$tmp/bin2"
printf '#!/bin/sh\nwhile [ ! -e "%s" ]; do sleep 0.02; done\nexec cat "$1"\n' "$tmp/release" >"$tmp/bin2/rsvg-convert"
chmod +x "$tmp/bin2/rsvg-convert"
PATH="$tmp/bin2:$real_path" bg --epochs 4 --out "$tmp/png" --quiet
p=${pids[-1]}
if wait_for "$p" grep -q '^4,' "$tmp/png/metrics.csv" && kill -0 "$p" 2>/dev/null; then
  ok
else
  bad "renderer held: epochs recorded while it renders: $(cut -d, -f1 "$tmp/png/metrics.csv" 2>/dev/null | uniq | tr '\n' ' ')"
fi
touch "$tmp/release"
wait "$p"; rc=$?
[ $rc -eq 0 ] && cmp -s "$tmp/png/loss.png" "$tmp/png/loss.svg" && no_tmp "$tmp/png" && ok \
  || bad "renderer released: exit $rc, loss.png $( cmp -s "$tmp/png/loss.png" "$tmp/png/loss.svg" && echo final || echo 'not the final plot'), $(ls -a "$tmp/png" | tr '\n' ' ')"

if [ "${DPT_HAVE_MPI:-0}" = 1 ] && command -v mpirun >/dev/null; then
  export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
  margs=(train --data "$d" --batch 32 --seed 3 --device cpu)
  # Refused by rank 0 before MPI starts: mpirun ends rank 1 (the bound only
  # stops a hang).
  timeout 120 mpirun -np 2 "$cli" "${margs[@]}" --epochs 1 --out "$good" >/dev/null 2>"$tmp/err"
  rc=$?
  [ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "^dptrain: --out $good: holds an earlier run's files" "$tmp/err" \
    && ok || bad "mpirun into a used folder: exit $rc, $(head -c 400 "$tmp/err")"
  same "mpirun -np 2 without --overwrite"
  env --default-signal=INT mpirun -np 2 "$cli" "${margs[@]}" --epochs 100000 --print-every 1 --checkpoint-every 2 \
    --out "$tmp/mpi" >"$tmp/mpi.out" 2>"$tmp/mpi.err" &
  pid=$!; pids+=("$pid")
  if wait_for "$pid" at "$tmp/mpi.out" 5; then
    timeout 120 mpirun -np 2 "$cli" "${margs[@]}" --epochs 1 --overwrite --out "$tmp/mpi" >/dev/null 2>"$tmp/err"
    grep -q "^dptrain: --out $tmp/mpi: in use by another run (pid [0-9]*)" "$tmp/err" && ok \
      || bad "a second mpirun on a folder in use: $(head -c 400 "$tmp/err")"
    # mpirun forwards SIGTERM to the ranks and sends SIGKILL 1 s later: the
    # ranks print the line when they stop in time, else they are killed;
    # either way the checkpoint is whole and the folder is free again.
    kill -TERM "$pid"; wait "$pid"; rc=$?
    if grep -q "^dptrain: interrupted by SIGTERM" "$tmp/mpi.err"; then
      [ $rc -eq 1 ] && grep -q "^dptrain: interrupted by SIGTERM at epoch [0-9]*, iteration [0-9]*; last checkpoint: $tmp/mpi/checkpoint.safetensors (iteration [0-9]*)$" "$tmp/mpi.err" \
        && no_tmp "$tmp/mpi" && csv_ok "$tmp/mpi/metrics.csv" && ok || bad "SIGTERM to mpirun: exit $rc, $(cat "$tmp/mpi.err"), $(ls -a "$tmp/mpi")"
    else
      echo "note: mpirun killed the ranks before they stopped (exit $rc)"
      [ $rc -ne 0 ] && ok || bad "SIGTERM to mpirun: exit 0"
    fi
    "$cli" info --model "$tmp/mpi/checkpoint.safetensors" >/dev/null 2>"$tmp/err" && ok || bad "mpirun checkpoint: $(cat "$tmp/err")"
    cat "$tmp/mpi.err"
    ep=$(( $(tail -n 1 "$tmp/mpi/metrics.csv" | cut -d, -f1) + 1 ))
    timeout 300 mpirun -np 2 "$cli" "${margs[@]}" --epochs "$ep" --quiet --resume "$tmp/mpi/checkpoint.safetensors" \
      --out "$tmp/mpi" >/dev/null 2>"$tmp/err" && no_tmp "$tmp/mpi" && ok || bad "mpirun resume after SIGTERM: $(cat "$tmp/err"); $(ls -a "$tmp/mpi")"
  else
    bad "mpirun run did not start: $(cat "$tmp/mpi.err")"
  fi
else
  echo "note: no MPI here; the mpirun cases are skipped"
fi

echo "outdir: $pass passed, $fail failed"
[ $fail -eq 0 ]
