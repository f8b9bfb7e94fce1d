#!/usr/bin/env bash
# The stems and the pooling after them (issue 21's "stem" part) of this tree
# against another commit's (default: main), on the residual networks:
# bench/step_bench --layers of both builds, alternated run by run (fresh
# plan caches), printing the stem and pool rows (thread CPU ms per step,
# forward and backward) and, at the end, the medians and old/new ratios of
# stem + pool. The other commit is built from `git archive` in a temporary
# folder; this tree in build-bench/ (BENCH_BUILD_DIR overrides).
# BATCH=B (default 128), ROUNDS=R (default 5) alternations per network.
#
#   bench/stem_ab.sh [REF] [NET.net ...]
set -euo pipefail
. "$(dirname "$0")/ab_common.sh"
root=$ab_root build=$ab_build
ref=${1:-main}
shift || true
nets=("$@")
[ ${#nets[@]} -gt 0 ] ||
  nets=("$root/examples/nets/resnet-mini-28x28x1.net" "$root/examples/nets/resnet-mini-32x32x3.net")
ab_old "$ref"
old=$ab_old
ab_lib "$root" "$build"
ab_lib "$old" "$old/build"
ab_libs "$build/libdptrain.a"
for t in "new:$root:$build" "old:$old:$old/build"; do
  IFS=: read -r v src dir <<<"$t"
  cc -O2 -std=c11 -D_POSIX_C_SOURCE=200809L -I"$src/include" -I"$src/src" \
    "$src/bench/step_bench.c" "$dir/libdptrain.a" "${ab_link[@]}" -o "$old/step_bench_$v"
done
for net in "${nets[@]}"; do
  echo "== $(basename "$net") batch ${BATCH:-128}, old = $ref"
  for r in $(seq "${ROUNDS:-5}"); do
    for v in old new; do
      rm -f "$old/$v.plan"
      DPT_PLAN_CACHE="$old/$v.plan" "$old/step_bench_$v" --net "$net" --batch "${BATCH:-128}" \
        --layers --rounds 3 --steps 10 2>&1 |
        awk -v v="$v" '/^  (stem|pool) / && $3 ~ /^[0-9.]+$/ { print v, $1, $3, $4 }'
    done
  done | tee "$old/rows"
  awk '{ k = $1 " " $2; f[k] = f[k] " " $3; b[k] = b[k] " " $4 }
       END { for (k in f) print k, f[k], "|", b[k] }' "$old/rows" |
    python3 -c '
import statistics, sys
med = {}
for line in sys.stdin:
    head, back = line.split("|")
    v, layer, *fw = head.split()
    med[(v, layer)] = (statistics.median(map(float, fw)),
                       statistics.median(map(float, back.split())))
for v in ("old", "new"):
    s, p = med[(v, "stem")], med[(v, "pool")]
    print(f"{v}: stem {s[0]:.3f} + {s[1]:.3f}, pool {p[0]:.3f} + {p[1]:.3f},",
          f"total {sum(s) + sum(p):.3f} ms (medians)")
o = sum(med[("old", "stem")]) + sum(med[("old", "pool")])
n = sum(med[("new", "stem")]) + sum(med[("new", "pool")])
print(f"stem + pool old/new: {o / n:.2f}x")'
done
