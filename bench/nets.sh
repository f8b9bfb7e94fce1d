#!/usr/bin/env bash
# A residual network on Fashion-MNIST, dptrain against PyTorch: one command.
#
#   bench/nets.sh                 3 epochs of examples/nets/resnet-mini-28x28x1.net
#                                 (about 10-15 minutes on 2 cores, both sides)
#   bench/nets.sh --epochs 1      a quick look
#   bench/nets.sh --help          the options of bench/fashion.py (network, recipe)
#
# Needs Debian's dataset-fashion-mnist (docs/data.md) and python3-torch,
# python3-numpy. Builds a CPU-only release tree in build-bench/
# (BENCH_BUILD_DIR overrides; DPTRAIN=path skips the build and uses that
# binary), then runs bench/fashion.py, which trains the network with
# `dptrain train --workers 2` and in PyTorch with 2 threads, with the same
# recipe, and writes their test accuracy and images/s into bench/RESULTS.md.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BENCH_BUILD_DIR:-$root/build-bench}
py=/usr/bin/python3 # Debian's python3, where python3-torch lives

case "${1:-}" in
-h | --help) exec "$py" "$root/bench/fashion.py" --help ;;
esac

if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  echo "bench/nets.sh: Fashion-MNIST is missing: apt-get install dataset-fashion-mnist" >&2
  exit 1
fi
if ! "$py" -c 'import torch, numpy' 2>/dev/null; then
  echo "bench/nets.sh: PyTorch is missing: apt-get install python3-torch python3-numpy" >&2
  exit 1
fi

dptrain=${DPTRAIN:-}
if [ -z "$dptrain" ]; then
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DDPT_WITH_CUDA=OFF >/dev/null
  cmake --build "$build" -j"$(nproc)" --target dptrain >/dev/null
  dptrain=$build/dptrain
fi
exec "$py" "$root/bench/fashion.py" --root "$root" --dptrain "$dptrain" "$@"
