#!/usr/bin/env python3
"""The residual blocks' small layers (batch norms, adds, concat, global
average pooling) in step_bench --layers, several step_bench binaries or
settings alternated round by round; medians of thread CPU ms per layer.

  bench/blk_ab.py NET ROUNDS LABEL=STEP_BENCH[:ENV=VALUE...] ...

e.g. the same binary with and without the block fusions (graph.c add_bn,
concat_bn, add_pool; the same bits either way):

  bench/blk_ab.py examples/nets/resnet-mini-32x32x3.net 6 \\
      new=build/step_bench off=build/step_bench:DPT_FUSION_BLK=0

or an older commit's step_bench (built as bench/run builds it) against this
one. The plan cache is DPT_PLAN_CACHE (default /tmp/blk_ab.plan), shared by
all runs so that every run uses the same convolution algorithms.
"""
import os
import re
import statistics
import subprocess
import sys

LAYERS = ["b1_bn2", "b1_add", "b2_bn2", "b2_proj_bn", "b2_add", "b3_cat", "b3_bn", "b3_add",
          "gap"]


def run(spec, net):
    parts = spec.split(":")
    env = dict(os.environ)
    env.setdefault("DPT_PLAN_CACHE", "/tmp/blk_ab.plan")
    env["OMP_NUM_THREADS"] = "1"
    for p in parts[1:]:
        k, v = p.split("=", 1)
        env[k] = v
    out = subprocess.run([parts[0], "--net", net, "--batch", "128", "--layers", "--steps", "10"],
                         env=env, capture_output=True, text=True, check=True).stdout
    rows, step = {}, None
    for line in out.splitlines():
        t = line.split()
        if t and t[0] in LAYERS:
            rows[t[0]] = (float(t[2]), float(t[3]))
        m = re.search(r"step ([\d.]+) CPU ms", line)
        if m:
            step = float(m.group(1))
    return rows, step


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    net, rounds, confs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    res = {c: [] for c in confs}
    for _ in range(rounds):
        for c in confs:
            res[c].append(run(c.split("=", 1)[1], net))
    med = statistics.median
    for c in confs:
        runs = res[c]
        f = [sum(r[l][0] for l in LAYERS if l in r) for r, _ in runs]
        b = [sum(r[l][1] for l in LAYERS if l in r) for r, _ in runs]
        print("%s: these layers forward %.3f backward %.3f total %.3f ms (medians of %d); "
              "step %.2f ms" % (c.split("=")[0], med(f), med(b),
                                 med([x + y for x, y in zip(f, b)]), rounds,
                                 med([s for _, s in runs])))
        for l in LAYERS:
            have = [r[l] for r, _ in runs if l in r]
            if have:
                print("  %-11s %.3f %.3f" % (l, med([h[0] for h in have]),
                                             med([h[1] for h in have])))


if __name__ == "__main__":
    main()
