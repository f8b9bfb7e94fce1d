#!/usr/bin/python3
"""The data-parallel step-time model of docs/scaling.md, fitted to
bench/comm_bench and bench/step_bench output.

  scaling_model.py fit COMM_OUTPUT...      fit alpha and beta of the ring
                                           all-reduce to comm_bench lines
  scaling_model.py predict [options]       step time, throughput and
                                           efficiency for N = 1 ... 1024

Model (one worker per core or machine, minibatch B split evenly):

  T(N) = t_c(B/N) + C * a(N) + 2 (N-1)/N * S / beta
  t_c(b) = c0 + c1 * b          compute of one worker's share
  a(N)   = 2 (N-1) alpha        latency of one ring all-reduce
  S      = 4 * parameters       bytes of the gradient buffer

C is the number of all-reduces per step (the gradient buffer, the loss,
the batch-norm statistics and the observation count: 4 in dpt_train_step);
only the gradient one carries volume. With --tree the latency term of the
small ones is 2 log2(N) alpha (recursive doubling) instead of ring's.
"""
import argparse
import math
import re
import sys


def parse_comm(paths):
    pts = []  # (N, bytes, seconds)
    for p in paths:
        for line in open(p):
            m = re.search(r"N=(\d+)\s+n=(\d+)\s+([\d.]+) us/op", line)
            if m:
                pts.append((int(m.group(1)), 4 * int(m.group(2)), float(m.group(3)) * 1e-6))
    return pts


def fit(pts):
    """Least squares, relative error, of t = 2(N-1) a + 2(N-1)/N S / b over
    (a, 1/b) >= 0."""
    # Normal equations in x = (a, inv_b), rows weighted by 1/t.
    s11 = s12 = s22 = r1 = r2 = 0.0
    for n, s, t in pts:
        u, v = 2.0 * (n - 1), 2.0 * (n - 1) / n * s
        w = 1.0 / (t * t)
        s11 += w * u * u
        s12 += w * u * v
        s22 += w * v * v
        r1 += w * u * t
        r2 += w * v * t
    det = s11 * s22 - s12 * s12
    a = (r1 * s22 - r2 * s12) / det
    ib = (s11 * r2 - s12 * r1) / det
    return max(a, 0.0), 1.0 / ib if ib > 0 else float("inf")


def step_time(n, batch, c0, c1, params, alpha, beta, colls, tree):
    share = batch / n
    comp = c0 + c1 * share
    lat_ring = 2 * (n - 1) * alpha
    lat_small = 2 * math.log2(n) * alpha if tree and n > 1 else lat_ring
    comm = 0.0
    if n > 1:
        comm = lat_ring + 2 * (n - 1) / n * 4 * params / beta + (colls - 1) * lat_small
    return comp, comm


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fit")
    f.add_argument("files", nargs="+")
    p = sub.add_parser("predict")
    p.add_argument("--c0", type=float, default=0.4e-3, help="fixed seconds per step per worker")
    p.add_argument("--c1", type=float, default=0.5e-3, help="seconds per image per worker")
    p.add_argument("--params", type=float, default=123090)
    p.add_argument("--alpha", type=float, default=10e-6)
    p.add_argument("--gbps", type=float, default=25, help="link speed, Gb/s")
    p.add_argument("--batch", type=int, default=128, help="minibatch over all workers")
    p.add_argument("--per-worker", type=int, default=0,
                   help="weak scaling: this many images per worker (batch grows with N)")
    p.add_argument("--colls", type=int, default=4)
    p.add_argument("--tree", action="store_true")
    a = ap.parse_args()
    if a.cmd == "fit":
        pts = parse_comm(a.files)
        al, be = fit(pts)
        print("alpha %.2f us, beta %.2f GB/s (%d points)" % (al * 1e6, be / 1e9, len(pts)))
        for n, s, t in pts:
            m = 2 * (n - 1) * al + 2 * (n - 1) / n * s / be
            print("  N=%-3d %10d bytes: measured %9.1f us, model %9.1f us" % (n, s, t * 1e6,
                                                                            m * 1e6))
        return 0
    beta = a.gbps * 1e9 / 8
    print("| N | images/worker | compute ms | all-reduce ms | step ms | images/s | efficiency |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    t1 = None
    for n in [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]:
        batch = a.per_worker * n if a.per_worker else a.batch
        if batch < n:
            break
        comp, comm = step_time(n, batch, a.c0, a.c1, a.params, a.alpha, beta, a.colls, a.tree)
        t = comp + comm
        rate = batch / t
        if t1 is None:
            t1 = rate
        print("| %d | %g | %.2f | %.2f | %.2f | %.0f | %.0f%% |" % (
            n, batch / n, comp * 1e3, comm * 1e3, t * 1e3, rate, 100 * rate / (n * t1)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
