#!/usr/bin/env bash
# dptrain's LSTM/GRU kernels against torch.nn.LSTM/GRU, side by side, on the
# character language model's shapes (H 256, F 89 one-hot, T 64, batch 64):
# forward + backward (BPTT) per iteration, on 1 and 2 cores.
#
#   bench/rnn.sh                 LSTM and GRU, 1 and 2 cores, 3 alternations
#   bench/rnn.sh --quick         LSTM only, 1 alternation
#   REPS=5 bench/rnn.sh          more alternations
#
# dptrain on c cores runs c workers (threads) at once, each on batch 64/c
# with one BLAS thread (data parallelism, as dptrain trains); PyTorch runs
# batch 64 with torch.set_num_threads(c). Both run pinned to the first c
# CPUs (taskset, where present): torch.set_num_threads(1) alone still keeps
# a second core busy (its CPU time is about twice its wall time). The two programs alternate, REPS
# times, each printing its median over 7 rounds; this script prints the
# median of those medians and the ratio of characters/s (dptrain /
# PyTorch), then the same from CPU time per iteration (process CPU time,
# all threads: what a shared machine's waits for a core do not inflate),
# and each side's best over 1 and 2 cores. Builds a CPU-only release tree in build-bench/ (BENCH_BUILD_DIR
# overrides) and bench/rnn_bench.c against it; needs /usr/bin/python3 with
# torch (python3-torch).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BENCH_BUILD_DIR:-$root/build-bench}
py=/usr/bin/python3
reps=${REPS:-3}
kinds="lstm gru"
if [ "${1:-}" = --quick ]; then reps=1 kinds=lstm; fi

if ! "$py" -c 'import torch' 2>/dev/null; then
  echo "bench/rnn.sh: $py has no torch (apt-get install python3-torch)" >&2
  exit 1
fi
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DDPT_WITH_CUDA=OFF >/dev/null
cmake --build "$build" --target dptrain_static -j2 >/dev/null
libs=(-lopenblas -lz -lstb -lcjson -lm -lpthread)
# built with oneDNN (DPT_WITH_DNNL): its library and the OpenMP runtime it uses
if nm "$build/libdptrain.a" 2>/dev/null | grep ' U dnnl_engine_create' >/dev/null; then
  libs+=(-ldnnl -lgomp)
fi
if grep -q '^MPI_C_FOUND:INTERNAL=TRUE\|^MPI_C_WORKS:INTERNAL=TRUE' "$build/CMakeCache.txt" 2>/dev/null ||
  nm "$build/libdptrain.a" 2>/dev/null | grep -q ' U MPI_Init'; then
  read -r -a mpi_link <<<"$(mpicc -showme:link 2>/dev/null || echo -lmpi)"
  libs+=("${mpi_link[@]}")
fi
cc -O2 -std=c11 -Wall -Wextra -D_POSIX_C_SOURCE=200809L -I"$root/include" -I"$root/src" \
  $(pkg-config --cflags openblas 2>/dev/null || true) \
  "$root/bench/rnn_bench.c" "$build/libdptrain.a" "${libs[@]}" -o "$build/rnn_bench"

pin() { # pin C CMD...: run CMD on the first C CPUs
  local c=$1
  shift
  if command -v taskset >/dev/null && [ "$(nproc)" -ge "$c" ]; then
    taskset -c "0-$((c - 1))" "$@"
  else
    "$@"
  fi
}

out=$(mktemp)
trap 'rm -f "$out"' EXIT
for kind in $kinds; do
  for c in 1 2; do
    for _ in $(seq "$reps"); do
      pin "$c" "$build/rnn_bench" --kind "$kind" --workers "$c" --json >>"$out"
      pin "$c" "$py" "$root/bench/rnn_torch.py" --kind "$kind" --threads "$c" --json >>"$out"
    done
  done
done
"$py" - "$out" "$reps" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def med(rs, key):
    return statistics.median(r[key] for r in rs)
print(f"{'kind':5} {'cores':>5} {'dptrain ms':>11} {'chars/s':>9} {'CPU ms':>8} "
      f"{'torch ms':>9} {'chars/s':>9} {'CPU ms':>8} {'ratio':>6} {'CPU ratio':>9}")
best = {}
for kind in ("lstm", "gru"):
    for c in (1, 2):
        d = [r for r in rows if r["kind"] == kind and r["impl"] == "dptrain" and r["workers"] == c]
        t = [r for r in rows if r["kind"] == kind and r["impl"] == "torch" and r["threads"] == c]
        if not d or not t:
            continue
        dc, tc = med(d, "chars_per_s"), med(t, "chars_per_s")
        b = best.setdefault(kind, [0, 0])
        b[0], b[1] = max(b[0], dc), max(b[1], tc)
        print(f"{kind:5} {c:5d} {med(d, 'ms'):11.2f} {dc:9.0f} {med(d, 'cpu_ms'):8.2f} "
              f"{med(t, 'ms'):9.2f} {tc:9.0f} {med(t, 'cpu_ms'):8.2f} {dc / tc:6.2f} "
              f"{med(t, 'cpu_ms') / med(d, 'cpu_ms'):9.2f}")
for kind, (dc, tc) in best.items():
    print(f"{kind}: best chars/s over 1 and 2 cores: dptrain {dc:.0f}, torch {tc:.0f}, "
          f"ratio {dc / tc:.2f}")
d = next(r for r in rows if r["impl"] == "dptrain")
t = next(r for r in rows if r["impl"] == "torch")
print(f"(dptrain kernels {d['kernels']}, BLAS {d['blas']}; torch {t['torch']}; ratio = chars/s "
      f"dptrain / torch; each figure the median of {sys.argv[2]} runs)")
EOF
