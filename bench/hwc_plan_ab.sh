#!/usr/bin/env bash
# A residual network's training step with and without the hwc algorithm in
# its plan, alternated: the same step_bench binary with two plan caches,
# "new" the measured plan, "old" that plan with every hwc choice replaced by
# the fastest other candidate the plan timed (what the plan chose before
# hwc existed). Prints each run's step CPU ms; per-layer tables are left in
# $OUT (default /tmp/hwc_plan_ab).
#
#   bench/hwc_plan_ab.sh STEP_BENCH [NET ...]    (ROUNDS=3 alternations)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
sb=${1:?usage: hwc_plan_ab.sh STEP_BENCH [NET ...]}
shift
nets=("$@")
[ ${#nets[@]} -gt 0 ] || nets=(resnet-mini-32x32x3 resnet-mini-28x28x1)
out=${OUT:-/tmp/hwc_plan_ab}
mkdir -p "$out"
for net in "${nets[@]}"; do
  spec=$root/examples/nets/$net.net
  rm -f "$out/new-$net.plan"
  DPT_PLAN_CACHE=$out/new-$net.plan "$sb" --net "$spec" --batch 128 --steps 2 --rounds 1 >/dev/null
  python3 - "$out/new-$net.plan" "$out/old-$net.plan" <<'PY'
import sys
out = []
for line in open(sys.argv[1]):
    f = line.split()
    if line.startswith(('v1', 'v2')) and f[2] == 'hwc':
        ms = dict(kv.split(':') for kv in f[4].split(','))
        ms.pop('hwc')
        f[2] = min(ms, key=lambda k: float(ms[k]))
        line = ' '.join(f) + '\n'
    out.append(line)
open(sys.argv[2], 'w').write(''.join(out))
PY
  for k in $(seq "${ROUNDS:-3}"); do
    for v in old new; do
      DPT_PLAN_CACHE=$out/$v-$net.plan "$sb" --net "$spec" --batch 128 --layers --rounds 3 \
        --steps 5 >"$out/$v-$net-$k.txt" 2>&1
      echo "$net $v $k: $(grep -o 'step [0-9.]* CPU ms' "$out/$v-$net-$k.txt")"
    done
  done
done
