# Sourced by the shell tests that inject faults into running jobs. Invariant
# 9 of docs/DESIGN.md: a fault is injected at an event the test controls
# (a checkpoint file written, the job's ranks frozen with SIGSTOP), never
# after a sleep that a faster or slower machine outruns. So the jobs hit
# here are given far more epochs than they can train before the test
# acts (LONG_EPOCHS), and what a test compares against is computed
# afterwards, up to the epoch the interrupted job had reached.
#
# DPT_TEST_TINY=1 trains a tiny network instead of the default one (each
# iteration many times cheaper): the same checks on what is, for them, a
# much faster machine. The tests must pass both ways.

# More epochs than any job here can finish before the test freezes or kills
# it (the CLI's maximum is 1000000).
LONG_EPOCHS=100000
# Prefix of those jobs (before dptrain, under mpirun too): a CPU-time limit,
# so that one the test failed to stop (the script itself killed, say) does
# not train on for hours. prlimit execs the command: $! stays its PID.
CAPPED=()
command -v prlimit >/dev/null && CAPPED=(prlimit --cpu=900)

# tiny_net DIR: prints "--net DIR/tiny.net" when DPT_TEST_TINY=1 (a network
# of one fully connected layer), nothing otherwise.
tiny_net() {
  [ "${DPT_TEST_TINY:-0}" = 1 ] || return 0
  printf 'input in size=28x28x1\nfc fc outputs=classes\nsoftmax sm\n' >"$1/tiny.net"
  printf '%s\n' --net "$1/tiny.net"
}

# meta FILE KEY: a field of a safetensors file's __metadata__.
meta() {
  python3 -c 'import json,struct,sys
b=open(sys.argv[1],"rb").read(); (n,)=struct.unpack("<Q",b[:8])
print(json.loads(b[8:8+n])["__metadata__"][sys.argv[2]])' "$1" "$2"
}

# await_file FILE PID [SECONDS]: wait for FILE to exist while PID runs.
# 0: it exists; 1: PID ended without it (the event can no longer come: a
# failure, not a race, since the job cannot end by itself in time); 2:
# still absent after SECONDS (default 300), only against a hung job.
await_file() {
  local f=$1 pid=$2 n=$((${3:-300} * 50))
  while [ $n -gt 0 ]; do
    [ -e "$f" ] && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      [ -e "$f" ] && return 0
      return 1
    fi
    sleep 0.02
    n=$((n - 1))
  done
  return 2
}

# await_iteration CHECKPOINT PID MIN [SECONDS]: as await_file, until the
# checkpoint's iteration is at least MIN.
await_iteration() {
  local f=$1 pid=$2 min=$3 n=$((${4:-300} * 10)) it
  while [ $n -gt 0 ]; do
    it=$(meta "$f" iteration 2>/dev/null) && [ "$it" -ge "$min" ] && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
    n=$((n - 1))
  done
  return 2
}

# wait_exit PID SECONDS: wait up to SECONDS for PID to exit; 0 if it did.
wait_exit() {
  local i
  for i in $(seq 1 $(($2 * 50))); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.02; done
  return 1
}

# Every process below PID (children, grandchildren, ...).
descendants() {
  local c
  for c in $(pgrep -P "$1"); do echo "$c"; descendants "$c"; done
}

# rank_pid MPIRUN R: the PID of MPI rank R among the descendants of mpirun
# (Open MPI puts OMPI_COMM_WORLD_RANK in each rank's environment).
rank_pid() {
  local p
  for p in $(descendants "$1"); do
    if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2"; then
      echo "$p"; return 0
    fi
  done
  return 1
}
