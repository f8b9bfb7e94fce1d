#!/usr/bin/env bash
# Multi-host training over real TCP, on one machine: two network namespaces
# joined by a veth pair are two "hosts" (addresses 10.200.X.1 and .2, on
# the veths this test creates and nowhere else), mpirun's launch agent is
# scripts/netns-launcher (ip netns exec instead of ssh), two ranks per host,
# Open MPI's TCP transport and out-of-band channel restricted to the veth
# subnet. Shows:
#   1. 4 ranks on 2 hosts give the same model file, byte for byte, as 4
#      local worker threads (rank-ordered reductions);
#   2. cutting the second host's link mid-training ends the job with a clear
#      error within 30 s (DPT_COMM_TIMEOUT_MS=5000 for dptrain's watchdog,
#      and short TCP keepalives for mpirun's channel to its daemons); the
#      job is given more epochs than it can train (fault_helpers.sh) and the
#      link is cut once its first checkpoint exists, so the cut always
#      lands mid-training, whatever the machine's speed;
#   3. after the link is back, --resume from the last checkpoint up to the
#      end of the epoch it was in gives the model of a run that was never
#      interrupted (4 local workers: the same bits, by 1.).
# Skips (77) without MPI, without root, or where network namespaces cannot
# be made (no iproute2, no permission). Cleans up its namespaces on exit.
set -u
# Open MPI leaks on purpose at exit (its plugins): no leak reports in
# sanitizer builds here; the single-process tests cover our own memory.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
cli=${DPT_CLI:?}
src=${DPT_SOURCE_DIR:?}
. "$src/tests/fault_helpers.sh"
launcher=$src/scripts/netns-launcher
skip() { echo "skipped: $*"; exit 77; }
[ "${DPT_HAVE_MPI:-0}" = 1 ] && command -v mpirun >/dev/null || skip "dptrain was built without MPI or mpirun is missing"
mpirun --version 2>&1 | grep -q "Open MPI" || skip "the launch agent options here are Open MPI's"
[ "$(id -u)" = 0 ] || skip "network namespaces need root"
command -v ip >/dev/null || skip "ip (iproute2) is not installed"
command -v unshare >/dev/null || skip "unshare (util-linux) is not installed"

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
unset DPT_COMM_TIMEOUT_MS OMPI_MCA_rmaps_base_oversubscribe
# Namespaces of this run only: the launcher looks for hosts among them.
export DPT_NETNS_PREFIX=dptmh$$_
nsa=${DPT_NETNS_PREFIX}a nsb=${DPT_NETNS_PREFIX}b
net=10.200.$(($$ % 200 + 20))
d=$src/tests/fixtures/digits400
tmp=$(mktemp -d)
bg=""
cleanup() {
  [ -n "$bg" ] && kill -9 "$bg" 2>/dev/null
  for ns in "$nsa" "$nsb"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap "exit 1" INT TERM HUP

if ! ip netns add "$nsa" 2>"$tmp/err"; then skip "cannot make a network namespace: $(cat "$tmp/err")"; fi
ip netns add "$nsb" && ip link add "${DPT_NETNS_PREFIX}va" type veth peer name "${DPT_NETNS_PREFIX}vb" 2>"$tmp/err" \
  || skip "cannot make a veth pair: $(cat "$tmp/err")"
ip link set "${DPT_NETNS_PREFIX}va" netns "$nsa" && ip link set "${DPT_NETNS_PREFIX}vb" netns "$nsb" || skip "cannot move veths"
for x in a:1 b:2; do
  ns=${DPT_NETNS_PREFIX}${x%:*}
  ip -n "$ns" link set "${DPT_NETNS_PREFIX}v${x%:*}" name dpt0 &&
    ip -n "$ns" addr add "$net.${x#*:}/24" dev dpt0 &&
    ip -n "$ns" link set lo up && ip -n "$ns" link set dpt0 up || skip "cannot configure the veths"
  # Bound how long the kernel retransmits to a host that vanished (default
  # about 15 minutes), inside these namespaces only.
  ip netns exec "$ns" sysctl -qw net.ipv4.tcp_retries2=4 2>/dev/null
done
"$launcher" --exec "$net.2" true 2>"$tmp/err" || skip "netns-launcher cannot run a command on host $net.2: $(cat "$tmp/err")"

fail=0 pass=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*" >&2; fail=$((fail + 1)); }
now_ms() { date +%s%3N; }
tx() { ip netns exec "$1" cat /sys/class/net/dpt0/statistics/tx_bytes; }

printf '%s slots=2\n%s slots=2\n' "$net.1" "$net.2" >"$tmp/hosts"
# mpirun runs on the first host. It cannot know that both hosts share two
# cores, so it is told to yield when idle (else 4 ranks busy-poll).
mpi=("$launcher" --exec "$net.1" mpirun --hostfile "$tmp/hosts" -np 4
     --mca plm_rsh_agent "$launcher"
     --mca btl self,vader,tcp --mca btl_tcp_if_include "$net.0/24" --mca oob_tcp_if_include "$net.0/24"
     --mca mpi_yield_when_idle 1
     --mca oob_tcp_keepalive_time 1 --mca oob_tcp_keepalive_intvl 1 --mca oob_tcp_keepalive_probes 3
     -x DPT_COMM_TIMEOUT_MS=5000)
args=(train --data "$d" --batch 32 --epochs 3 --seed 6 --quiet --checkpoint-every 3)
# The cut run and its resume (DPT_TEST_TINY=1: a tiny network); --epochs
# comes after these.
cut_args=(train --data "$d" --batch 32 --seed 6 --quiet --checkpoint-every 3 $(tiny_net "$tmp"))

# ---- where the ranks run ----------------------------------------------------------
timeout 60 "${mpi[@]}" sh -c 'echo "rank $OMPI_COMM_WORLD_RANK on $(hostname) $(ip -o -4 addr show dev dpt0 | awk "{print \$4}")"' \
  >"$tmp/where" 2>"$tmp/err"
sort "$tmp/where"
[ "$(grep -c "on ${nsa//_/-} $net.1/24" "$tmp/where")" = 2 ] && [ "$(grep -c "on ${nsb//_/-} $net.2/24" "$tmp/where")" = 2 ] \
  && ok || bad "want 2 ranks per host: $(cat "$tmp/where" "$tmp/err")"

# ---- 1. two hosts = 4 local workers, byte for byte ----------------------------------
tx0=$(($(tx "$nsa") + $(tx "$nsb")))
t0=$(now_ms)
timeout 120 "${mpi[@]}" "$cli" "${args[@]}" --out "$tmp/mh" >"$tmp/out" 2>"$tmp/err" || bad "mpirun on 2 hosts: $(cat "$tmp/err")"
t1=$(now_ms)
bytes=$(($(tx "$nsa") + $(tx "$nsb") - tx0))
echo "2 hosts x 2 ranks: $((t1 - t0)) ms, $((bytes / 1000000)) MB over the veth pair; $(cat "$tmp/out")"
[ "$bytes" -gt 10000000 ] && ok || bad "only $bytes bytes crossed the veths"
"$cli" "${args[@]}" --workers 4 --out "$tmp/local" >/dev/null 2>"$tmp/err" || bad "--workers 4: $(cat "$tmp/err")"
cmp -s "$tmp/mh/model.safetensors" "$tmp/local/model.safetensors" && { ok; echo "same model file as --workers 4"; } \
  || bad "2 hosts x 2 ranks and 4 local workers give different models"

# ---- 2. the second host's link goes down mid-training ---------------------------------
"${mpi[@]}" "${CAPPED[@]}" "$cli" "${cut_args[@]}" --epochs $LONG_EPOCHS --out "$tmp/cut" >/dev/null 2>"$tmp/err" &
bg=$!
await_file "$tmp/cut/checkpoint.safetensors" "$bg" || bad "the cut run wrote no checkpoint: $(cat "$tmp/err")"
t0=$(now_ms)
ip -n "$nsb" link set dpt0 down
wait_exit "$bg" 60
t1=$(now_ms)
if kill -0 "$bg" 2>/dev/null; then
  bad "the job still runs 60 s after the link was cut"
  kill -9 "$bg"
fi
wait "$bg"; rc=$?; bg=""
echo "link of host $net.2 cut: job exited $rc after $((t1 - t0)) ms"
grep -v '^-*$' "$tmp/err" | sed 's/^/    /'
# Both detectors are timers (5 s watchdog, 3 keepalive probes 1 s apart),
# not races with training: 30 s leaves room for a slow, loaded machine.
[ $rc -ne 0 ] && [ $((t1 - t0)) -lt 30000 ] && ok || bad "cut link: exit $rc after $((t1 - t0)) ms"
if grep -q "lost communication with a remote daemon" "$tmp/err" && grep -q "Remote daemon: .* on node $net.2" "$tmp/err"; then
  ok; echo "(mpirun's keepalive noticed the lost host first)"
elif grep -qE "^dptrain: rank [0-3]: .*5000 ms" "$tmp/err"; then   # the watchdog's stable part
  ok; echo "(dptrain's watchdog noticed first)"
else
  bad "cut link: no message about the lost host or rank"
fi
[ ! -e "$tmp/cut/model.safetensors" ] && ok || bad "the cut run wrote a model"

# ---- 3. link back, resume: the uninterrupted model ------------------------------------
ip -n "$nsb" link set dpt0 up
if [ -e "$tmp/cut/checkpoint.safetensors" ]; then
  cp "$tmp/cut/checkpoint.safetensors" "$tmp/ckpt"
  e=$(meta "$tmp/ckpt" epoch)
  echo "resuming from epoch $e, position $(meta "$tmp/ckpt" epoch_iteration) up to the end of epoch $e"
  "$cli" "${cut_args[@]}" --epochs "$e" --workers 4 --out "$tmp/ref" >/dev/null 2>"$tmp/err" || bad "reference: $(cat "$tmp/err")"
  timeout 120 "${mpi[@]}" "$cli" "${cut_args[@]}" --epochs "$e" --out "$tmp/cut" --resume "$tmp/cut/checkpoint.safetensors" >/dev/null 2>"$tmp/err" \
    || bad "resume on 2 hosts: $(cat "$tmp/err")"
  cmp -s "$tmp/ref/model.safetensors" "$tmp/cut/model.safetensors" && { ok; echo "resumed after the cut: same model as the uninterrupted run"; } \
    || bad "cut + resumed model differs from the uninterrupted one"
else
  bad "no checkpoint before the cut"
fi

echo "test_multihost: $pass passed, $fail failed"
[ $fail -eq 0 ]
