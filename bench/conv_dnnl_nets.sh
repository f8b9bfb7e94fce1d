#!/usr/bin/env bash
# The suite's networks with every convolution forced onto one algorithm
# (DPT_CONV_ALGO: heuristic = direct where it applies else gemm, as before
# plans; dnnl; measure = the planner's measured choice, DPT_PLAN_CACHE=/dev/null: no cache file), one
# worker, bench/step_bench --layers, alternated: each round runs every
# algorithm once per network. Prints per network and algorithm the convs'
# forward and backward thread-CPU ms summed over the conv layers (median of
# the rounds) and the whole step's CPU ms. BIN: a folder with step_bench
# (bench/run builds it); ROUNDS (3), BATCH (128), ALGOS, NETS override.
#
#   BIN=build bench/conv_dnnl_nets.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${BIN:-$root/build-bench}
rounds=${ROUNDS:-3}
batch=${BATCH:-128}
algos=(${ALGOS:-heuristic dnnl measure})
nets=(${NETS:-example vgg-wide-32x32x3 resnet-mini-28x28x1 resnet-mini-32x32x3 mobilenet-32x32x3})
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for r in $(seq "$rounds"); do
  for net in "${nets[@]}"; do
    spec=()
    [ "$net" = example ] || spec=(--net "$root/examples/nets/$net.net")
    for a in "${algos[@]}"; do
      DPT_PLAN_CACHE=/dev/null DPT_CONV_ALGO=$a "$bin/step_bench" "${spec[@]}" --batch "$batch" \
        --steps 2 --rounds 1 --layers >"$out/$net.$a.$r" 2>&1 || {
        echo "step_bench failed: $net $a" >&2
        cat "$out/$net.$a.$r" >&2
        exit 1
      }
    done
  done
done
median() { sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
printf '%-22s %-10s %12s %12s %12s\n' network algorithm "conv fwd ms" "conv bwd ms" "step CPU ms"
for net in "${nets[@]}"; do
  for a in "${algos[@]}"; do
    f=$(for r in $(seq "$rounds"); do
      awk '$2 == "conv" && NF >= 4 { s += $3 } END { print s }' "$out/$net.$a.$r"; done | median)
    b=$(for r in $(seq "$rounds"); do
      awk '$2 == "conv" && NF >= 4 { s += $4 } END { print s }' "$out/$net.$a.$r"; done | median)
    st=$(for r in $(seq "$rounds"); do
      sed -n 's/^ *step \([0-9.]*\) CPU ms.*/\1/p' "$out/$net.$a.$r"; done | median)
    printf '%-22s %-10s %12.1f %12.1f %12.1f\n' "$net" "$a" "$f" "$b" "$st"
  done
  if [ "${SHOW_PLAN:-1}" = 1 ] && [[ " ${algos[*]} " == *" measure "* ]]; then
    sed -n '/^  plan/,$p' "$out/$net.measure.1" | sed 's/^/    /'
  fi
done
