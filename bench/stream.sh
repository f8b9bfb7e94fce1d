#!/usr/bin/env bash
# Streaming (--cache none) against preloading (--cache memory) on folders of
# 64x64 colour JPEGs made from Fashion-MNIST (issue 21, part 3):
#
#   bench/stream.sh                 folders of 20000 and 200000 images
#   bench/stream.sh 20000           one size
#
# Makes data/jpeg64-N with scripts/make-jpeg-folder when missing (about
# 4 KB of disk per image; data/ is ignored by git), builds a CPU-only
# release tree in build-bench/ (BENCH_BUILD_DIR overrides; DPTRAIN and
# DPTRAIN_LIB=folder of libdptrain.so skip the build) and bench/stream_bench.c
# against it, then runs bench/stream.py: per folder and mode, the data
# pipeline alone (first batch, steady images/s, peak RSS) and dptrain train
# with examples/nets/resnet-mini-32x32x3.net on 2 workers, stopped after
# STREAM_ITERATIONS (default 40) iterations (first iteration, images/s,
# peak RSS). Needs dataset-fashion-mnist, python3-numpy, python3-pil, time.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BENCH_BUILD_DIR:-$root/build-bench}
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(20000 200000)

dptrain=${DPTRAIN:-}
lib=${DPTRAIN_LIB:-}
if [ -z "$dptrain" ] || [ -z "$lib" ]; then
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DDPT_WITH_CUDA=OFF >/dev/null
  cmake --build "$build" -j"$(nproc)" --target dptrain dptrain_shared >/dev/null
  dptrain=$build/dptrain
  lib=$build
fi
bench=$(mktemp -d)/stream_bench
trap 'rm -rf "$(dirname "$bench")"' EXIT
cc -O2 -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -I"$root/include" "$root/bench/stream_bench.c" \
  -L"$lib" -ldptrain -Wl,-rpath,"$lib" -o "$bench"

folders=()
for n in "${sizes[@]}"; do
  f=$root/data/jpeg64-$n
  [ -d "$f" ] || "$root/scripts/make-jpeg-folder" "$f" "$n" >&2
  folders+=("$f")
done
exec /usr/bin/python3 "$root/bench/stream.py" --root "$root" --dptrain "$dptrain" --bench "$bench" \
  --iterations "${STREAM_ITERATIONS:-40}" "${folders[@]}"
