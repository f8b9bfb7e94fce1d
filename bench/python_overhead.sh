#!/usr/bin/env bash
# The Python path's overhead against the CLI: the same training (data,
# network, seed, epochs, minibatch, workers, BLAS threads) run as
# `dptrain train` and as dptrain.train() from Python, alternated, ROUNDS
# rounds; medians of wall time per process (interpreter start, imports and
# data loading included) and of the training time each reports. The two
# model files are checked equal, so both did the same work.
#
#   bench/python_overhead.sh [DATA] [EPOCHS] [WORKERS]
#
# DATA defaults to data/digits if fetched (scripts/fetch-digits), else
# tests/fixtures/digits400; EPOCHS to 3; WORKERS to the CPU count. Uses the
# build in $BUILD (default build/) and python3 with cffi and numpy
# ($PYTHON, default: the first of python3, /usr/bin/python3 that has them).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-$root/build}
data=${1:-}
if [ -z "$data" ]; then
  data=$root/data/digits
  [ -d "$data" ] || data=$root/tests/fixtures/digits400
fi
epochs=${2:-3}
workers=${3:-$(nproc)}
rounds=${ROUNDS:-7}
py=${PYTHON:-}
if [ -z "$py" ]; then
  for c in python3 /usr/bin/python3; do
    if "$c" -c 'import cffi, numpy' 2>/dev/null; then py=$c; break; fi
  done
fi
[ -n "$py" ] || { echo "python_overhead: no python3 with cffi and numpy" >&2; exit 1; }
[ -x "$build/dptrain" ] && [ -f "$build/libdptrain.so" ] || {
  echo "python_overhead: build dptrain and dptrain_shared in $build first" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export DPTRAIN_LIBRARY=$build/libdptrain.so PYTHONPATH=$root/python
threads=$(( $(nproc) / workers )); [ "$threads" -ge 1 ] || threads=1
common="epochs=$epochs batch=128 workers=$workers threads=$threads seed=0"
echo "data: $data; $common; $rounds rounds, alternated; $(nproc) CPUs"

now() { date +%s.%N; }
for r in $(seq 1 "$rounds"); do
  # Alternate which goes first, so drift in machine load hits both alike.
  order="cli py"; [ $((r % 2)) -eq 0 ] && order="py cli"
  for who in $order; do
    rm -rf "$tmp/$who"
    t0=$(now)
    if [ "$who" = cli ]; then
      "$build/dptrain" train --data "$data" --out "$tmp/$who" --epochs "$epochs" --batch 128 \
        --workers "$workers" --threads "$threads" --seed 0 >"$tmp/log" 2>&1
      train_s=$(sed -n 's/^trained [0-9]* iterations in \([0-9.]*\) s.*/\1/p' "$tmp/log")
    else
      train_s=$("$py" -c '
import sys, dptrain
m, h = dptrain.train(sys.argv[1], out=sys.argv[2], epochs=int(sys.argv[3]), batch=128,
                     workers=int(sys.argv[4]), threads=int(sys.argv[5]), seed=0)
print("%.3f" % h.result["train_seconds"])' "$data" "$tmp/$who" "$epochs" "$workers" "$threads")
    fi
    t1=$(now)
    echo "$who $(echo "$t1 - $t0" | bc -l) $train_s" >>"$tmp/times"
  done
  # What starting Python and importing the package (numpy, cffi, dlopen) costs.
  t0=$(now); "$py" -c 'import dptrain'; t1=$(now)
  echo "import $(echo "$t1 - $t0" | bc -l) 0" >>"$tmp/times"
  cmp -s "$tmp/cli/model.safetensors" "$tmp/py/model.safetensors" || {
    echo "python_overhead: round $r: the model files differ" >&2; exit 1; }
done
"$py" - "$tmp/times" <<'PYEOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
def med(who, col):
    return statistics.median(float(r[col]) for r in rows if r[0] == who)
cw, pw = med("cli", 1), med("py", 1)
ct, pt = med("cli", 2), med("py", 2)
print("median wall time per run:      CLI %.3f s   Python %.3f s   Python/CLI %.3f (+%.3f s)"
      % (cw, pw, pw / cw, pw - cw))
print("median training time (dpt_fit): CLI %.3f s   Python %.3f s   Python/CLI %.3f"
      % (ct, pt, pt / ct))
print("median python3 -c 'import dptrain': %.3f s" % med("import", 1))
print("model files: identical in every round")
PYEOF
