#!/usr/bin/env bash
# How steady the convolution plan's choices are on a busy machine: plans the
# example network and both residual networks 5 times quiet and 5 times
# under two busy loops (one per core of a 2-core machine), each with a
# fresh cache file, and counts per layer how often the choice matches the
# most frequent quiet choice.
#   bench/plan_noise.sh [DPTRAIN] [BATCH]     (default build/dptrain, 64)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$root/build/dptrain}
batch=${2:-64}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
plan() { # $1: run label
  for net in default resnet-mini-28x28x1 resnet-mini-32x32x3; do
    rm -f "$tmp"/c.txt*
    if [ $net = default ]; then a=(); else a=(--net "$root/examples/nets/$net.net"); fi
    DPT_PLAN_CACHE="$tmp/c.txt" "$bin" info "${a[@]}" --plan --batch "$batch" |
      awk -v net=$net -v run="$1" '/^  [a-z0-9_]+ +[0-9]+x/{l=$1} /^     -> /{print run, net, l, $2}'
  done
}
{
  for i in 1 2 3 4 5; do plan quiet$i; done
  for i in 1 2 3 4 5; do
    ( while :; do :; done ) & p1=$!
    ( while :; do :; done ) & p2=$!
    sleep 0.5
    plan load$i
    kill $p1 $p2
    wait $p1 $p2 2>/dev/null || true
  done
} >"$tmp/runs"
awk '{ m = ($1 ~ /^quiet/) ? "q" : "l"; k = $2 " " $3; n[k " " m " " $4]++; layers[k] = 1; algos[$4] = 1 }
END { tq = 0; tl = 0; nl = 0
  for (k in layers) { best = ""; bc = -1
    for (a in algos) if (n[k " q " a] > bc) { bc = n[k " q " a]; best = a }
    q = n[k " q " best] + 0; l = n[k " l " best] + 0; tq += q; tl += l; nl++
    s = ""; for (a in algos) if (n[k " q " a] + n[k " l " a]) s = s a ":" n[k " q " a] + 0 "/" n[k " l " a] + 0 " "
    printf "%-30s quiet choice %-9s quiet %d/5 loaded %d/5  [quiet/loaded: %s]\n", k, best, q, l, s }
  printf "matching the quiet choice: quiet %d/%d, loaded %d/%d\n", tq, 5 * nl, tl, 5 * nl }' \
  "$tmp/runs" >"$tmp/sum"
grep -v '^matching' "$tmp/sum" | sort
grep '^matching' "$tmp/sum"
