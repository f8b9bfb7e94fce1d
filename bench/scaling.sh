#!/usr/bin/env bash
# Measurements behind docs/scaling.md: step time against the number of local
# workers, the compute time of one worker's share, and the all-reduce time
# against buffer size and workers.
#
#   bench/scaling.sh BIN_DIR OUT_DIR [MAX_WORKERS]
#
# BIN_DIR holds step_bench and comm_bench (bench/run builds step_bench;
# comm_bench: cc bench/comm_bench.c against the same library). Results go to
# OUT_DIR as text and JSON lines. MAX_WORKERS defaults to the core count; on
# a 2-core machine pass 4 to include an oversubscribed point.
set -u
bin=$1
out=$2
max=${3:-$(nproc)}
mkdir -p "$out"
lscpu >"$out/lscpu.txt" 2>&1
nproc >"$out/nproc.txt"
"$bin/step_bench" --peak --layers --steps 10 --rounds 5 >"$out/layers.txt" 2>&1

# Strong scaling: the minibatch of 128 split over N workers (the MATLAB
# example's setting), and the same per-worker share run alone (compute only).
for n in 1 2 4 8 16 32; do
  [ "$n" -le "$max" ] || break
  share=$((128 / n))
  [ "$share" -ge 1 ] || break
  "$bin/step_bench" --workers "$n" --batch 128 --phases --steps 20 --rounds 5 --json \
    >"$out/step_w$n.txt" 2>&1
  "$bin/step_bench" --workers 1 --batch "$share" --steps 20 --rounds 5 --json \
    >"$out/share_b$share.txt" 2>&1
done

# All-reduce of float32 buffers: the example network's gradients (123,090)
# and sizes around it up to a network 100x larger.
for n in 2 4 8 16 32; do
  [ "$n" -le "$max" ] || break
  "$bin/comm_bench" --workers "$n" --n 1000 --n 12309 --n 123090 --n 1230900 --n 12309000 \
    >"$out/comm_w$n.txt" 2>&1
done
echo done >"$out/done"
