#!/usr/bin/env bash
# hwc against oneDNN as on a CPU without AVX-512, as far as an AVX-512
# machine can stand in for one: dptrain's AVX2 kernel set (--kernels avx2)
# against oneDNN limited to AVX2 (ONEDNN_MAX_CPU_ISA=AVX2; the first run
# checks with ONEDNN_VERBOSE that its convolutions are jit:avx2), on the
# resnet shapes of bench/hwc_bench.c (--only r). RUNS processes (default 7)
# of bench/hwc_bench (each: the candidates alternated within every round,
# best of ROUNDS rounds, default 5), then per shape the medians over the
# runs: ms of hwc and dnnl, and dnnl/hwc (> 1: hwc faster). BATCH=B
# (default 128). Builds in build-bench/ (BENCH_BUILD_DIR overrides).
# With the argument avx512, each run is followed by one of the AVX-512 set
# against oneDNN unrestricted (its AVX-512 code), for comparison.
#
#   bench/hwc_dnnl_avx2.sh [avx512]
set -euo pipefail
. "$(dirname "$0")/ab_common.sh"
ab_lib "$ab_root" "$ab_build"
ab_prog hwc_bench hwc_bench
bin=$ab_build/hwc_bench
impl=$(ONEDNN_MAX_CPU_ISA=AVX2 ONEDNN_VERBOSE=1 "$bin" --kernels avx2 --batch 2 --rounds 1 --only r32_b3c 2>&1 |
  awk -F, '$2 == "exec" && $4 == "convolution" { print $5 }' | sort -u | tr '\n' ' ')
echo "oneDNN convolutions with ONEDNN_MAX_CPU_ISA=AVX2: $impl"
case "$impl" in
*avx512*) echo "bench/hwc_dnnl_avx2.sh: ONEDNN_MAX_CPU_ISA=AVX2 did not take effect" >&2; exit 1 ;;
esac
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
sets=(avx2 "$@")
for _ in $(seq "${RUNS:-7}"); do
  for s in "${sets[@]}"; do
    lim=()
    [ "$s" = avx512 ] || lim=(ONEDNN_MAX_CPU_ISA=AVX2)
    env "${lim[@]}" "$bin" --kernels "$s" --batch "${BATCH:-128}" --rounds "${ROUNDS:-5}" --only r |
      tee -a "$out/$s"
  done
done
for s in "${sets[@]}"; do
  python3 - "$out/$s" "$s" <<'PY'
import re, statistics, sys
rows = {}
pat = re.compile(r'^(\S+).*fwd hwc +([0-9.]+) ms +([0-9.]+) GF/s.*dnnl +([0-9.]+) \('
                 r'.*bwd hwc +([0-9.]+) ms +([0-9.]+) GF/s.*dnnl +([0-9.]+) \(')
for line in open(sys.argv[1]):
    m = pat.match(line)
    if m:
        rows.setdefault(m[1], []).append([float(v) for v in m.groups()[1:]])
med = statistics.median
print(f"\nkernels {sys.argv[2]}, oneDNN "
      f"{'unrestricted' if sys.argv[2] == 'avx512' else 'ONEDNN_MAX_CPU_ISA=AVX2'}")
print(f"{'shape':9} {'runs':>4} | {'fwd hwc':>8} {'GF/s':>6} {'dnnl':>8} {'dnnl/hwc':>8} | "
      f"{'bwd hwc':>8} {'GF/s':>6} {'dnnl':>8} {'dnnl/hwc':>8}   (ms, medians over the runs)")
for name, r in rows.items():
    fh, fg, fd, bh, bg, bd = (med(x[i] for x in r) for i in range(6))
    fr, br = med(x[2] / x[0] for x in r), med(x[5] / x[3] for x in r)
    print(f"{name:9} {len(r):4d} | {fh:8.3f} {fg:6.1f} {fd:8.3f} {fr:8.2f} | "
          f"{bh:8.3f} {bg:6.1f} {bd:8.3f} {br:8.2f}")
PY
done
