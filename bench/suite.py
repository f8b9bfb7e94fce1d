#!/usr/bin/python3
"""The benchmark suite of issue 21: the same networks in dptrain and PyTorch,
training steps on random inputs, alternated in one script (bench/run --suite
calls this after building; tests never do).

  bench/suite.py --step-bench PATH [--quick] [--nets a,b] [--batches 32,128,512]
                 [--repeat K] [--rounds R] [--no-results]

For every network, minibatch and core count (1 and 2): K alternations of
dptrain (bench/step_bench.c --net SPEC) and PyTorch (bench/torch_step.py
--net SPEC, the spec rebuilt by examples/pytorch_interop.py), the side that
goes first swapped each time. Layouts, as bench/run's: on 1 core dptrain 1
worker and PyTorch 1 thread; on 2 cores dptrain 2 workers x 1 thread and
PyTorch's best of 2 threads and 2 ranks (DDP, 1 thread each), at minibatch
128 each also with tcmalloc preloaded where installed (its better figure
kept). Each run's figure is the median of R timed rounds after 3 warm-up
steps; the table shows the median of the K runs, the ratio, and peak RSS
(getrusage of dptrain's process, of PyTorch's processes summed).

--layers (on in the full run, off with --quick): also dptrain's per-layer
thread CPU times and GFLOP/s at minibatch 128 on 1 core, with the measured
one-core FMA peak (step_bench --net SPEC --layers --peak), per network.
--quick: minibatch 128 only, one alternation, 2 rounds (a few minutes).
Writes a table per network into bench/RESULTS.md between the markers below.
"""
import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as benchrun  # noqa: E402  (sh, last_json, PY, TCMALLOC)
import seqcommon as sc  # noqa: E402  (machine_line, write_section)

BEGIN, END = "<!-- bench/suite.py begin -->", "<!-- bench/suite.py end -->"

# name, spec file (None: the example network, dpt_net_default_spec), images
# per timed round (so that a round takes about a second or two on one core).
NETS = [
    ("example", None, 2560),
    ("resnet-mini-28x28x1", "examples/nets/resnet-mini-28x28x1.net", 1024),
    ("resnet-mini-32x32x3", "examples/nets/resnet-mini-32x32x3.net", 1024),
    ("vgg-wide-32x32x3", "examples/nets/vgg-wide-32x32x3.net", 256),
    ("mobilenet-32x32x3", "examples/nets/mobilenet-32x32x3.net", 512),
]


class Suite:
    def __init__(self, a):
        self.a = a

    def steps(self, per_round, batch):
        return max(2, per_round // batch)

    def dpt(self, spec, per_round, batch, cores):
        cmd = [self.a.step_bench, "--batch", str(batch), "--threads", "1",
               "--workers", str(cores), "--steps", str(self.steps(per_round, batch)),
               "--rounds", str(self.a.rounds), "--json"]
        if spec:
            cmd += ["--net", os.path.join(self.a.root, spec)]
        r = benchrun.last_json(benchrun.sh(cmd))
        r["layout"] = "%d worker(s) x 1 thread" % cores
        return r

    def torch(self, spec, per_round, batch, cores):
        layouts = [(1, 1)] if cores == 1 else [(2, 1), (1, 2)]  # (threads, ranks)
        best = None
        for threads, ranks in layouts:
            cmd = [benchrun.PY, os.path.join(self.a.root, "bench", "torch_step.py"), "step",
                   "--batch", str(batch), "--threads", str(threads), "--ranks", str(ranks),
                   "--steps", str(self.steps(per_round, batch)), "--rounds", str(self.a.rounds)]
            if spec:
                cmd += ["--net", os.path.join(self.a.root, spec)]
            envs = [("glibc", None)]
            if os.path.exists(benchrun.TCMALLOC):  # every batch size: PyTorch at its best
                envs.append(("tcmalloc", {"LD_PRELOAD": benchrun.TCMALLOC}))
            for alloc, env in envs:
                r = benchrun.last_json(benchrun.sh(cmd, env=env))
                r["layout"] = ("%d ranks x %d thread" % (ranks, threads) if ranks > 1
                               else "1 thread" if threads == 1 else "%d threads" % threads)
                r["layout"] += ", " + alloc
                if best is None or r["images_per_s"] > best["images_per_s"]:
                    best = r
        return best

    def compare(self, name, spec, per_round, batch, cores):
        d, t = [], []
        for rep in range(self.a.repeat):
            for side in (["d", "t"] if rep % 2 == 0 else ["t", "d"]):
                try:
                    if side == "d":
                        d.append(self.dpt(spec, per_round, batch, cores))
                    else:
                        t.append(self.torch(spec, per_round, batch, cores))
                except Exception as e:  # a failed row is reported, not fatal
                    print("  %s batch %d %d core(s) %s: FAILED: %s" % (
                        name, batch, cores, "dptrain" if side == "d" else "pytorch",
                        str(e).splitlines()[0]), flush=True)
        dm = statistics.median(r["images_per_s"] for r in d) if d else None
        tm = statistics.median(r["images_per_s"] for r in t) if t else None
        row = {"batch": batch, "cores": cores, "dptrain": dm, "pytorch": tm,
               "ratio": dm / tm if dm and tm else None,
               "dptrain_rss_mb": max((r["rss_mb"] for r in d), default=None),
               "pytorch_rss_mb": max((r.get("rss_mb_sum", r["rss_mb"]) for r in t),
                                     default=None),
               "gflops": statistics.median(r["gflops"] for r in d) if d else None,
               "mflop": d[0].get("mflop_per_image") if d else None,
               "pytorch_layout": "; ".join(sorted({r["layout"] for r in t}))}
        print("  %-20s batch %4d, %d core(s): dptrain %7s  pytorch %7s  ratio %s" % (
            name, batch, cores, benchrun.fmt(dm), benchrun.fmt(tm),
            "%.2f" % row["ratio"] if row["ratio"] else "-"), flush=True)
        return row

    def layers(self, spec, per_round):
        """step_bench's per-layer table and FMA peak, as printed (text lines)."""
        cmd = [self.a.step_bench, "--batch", "128", "--workers", "1", "--threads", "1",
               "--steps", str(self.steps(per_round, 128)), "--rounds", "2", "--layers", "--peak"]
        if spec:
            cmd += ["--net", os.path.join(self.a.root, spec)]
        try:
            out = benchrun.sh(cmd).splitlines()
        except Exception as e:
            return ["(step_bench --layers failed: %s)" % str(e).splitlines()[0]]
        keep = [i for i, line in enumerate(out) if "per layer" in line]
        return [line.rstrip() for line in out[keep[0]:]] if keep else out

    def run(self):
        a = self.a
        nets = [n for n in NETS if not a.nets or n[0] in a.nets.split(",")]
        batches = [128] if a.quick else [int(b) for b in a.batches.split(",")]
        tables = []
        for name, spec, per_round in nets:
            rows = [self.compare(name, spec, per_round, b, c) for b in batches for c in (1, 2)]
            prof = self.layers(spec, per_round) if a.layers else None
            tables.append((name, spec, rows, prof))
        return tables


def table_lines(a, tables, torch_version):
    mode = "--quick: minibatch 128, one alternation, 2 rounds per run" if a.quick else \
        "%d alternations, %d rounds per run" % (a.repeat, a.rounds)
    L = ["## Benchmark suite (bench/suite.py)", "",
         "`bench/suite.py%s` (what `bench/run --suite%s` runs after building; %s; load "
         "average %.1f at the start), " % (" --quick" if a.quick else "",
                                            " --quick" if a.quick else "", mode, a.load0) +
         sc.machine_line(torch_version), "",
         "Training steps (forward, softmax cross-entropy, backward, SGDM) on random "
         "inputs, 10 classes; images/s: median over the alternations of each run's "
         "median round. 1 core: dptrain 1 worker, PyTorch 1 thread. 2 cores: dptrain 2 "
         "workers x 1 thread, PyTorch's best of 2 threads and 2 DDP ranks" + (
             " (and of glibc malloc and tcmalloc at minibatch 128)"
             if os.path.exists(benchrun.TCMALLOC) else
             " (glibc malloc only: tcmalloc is not installed here)") +
         ". Peak RSS: dptrain's process, PyTorch's "
         "processes summed. GFLOP/s: dptrain's whole step from the spec's multiply-adds "
         "(forward and backward of conv and fc layers).", ""]
    if a.quick:
        L += ["**A quick run on a shared, noisy machine**: one alternation per row, so "
              "single runs; the ratios are indicative, not measurements to quote.", ""]
    for name, spec, rows, prof in tables:
        mflop = next((r["mflop"] for r in rows if r["mflop"]), None)
        L += ["### %s (%s%s)" % (name, "`%s`" % spec if spec else "the example network",
                                   ", %.1f MFLOP per image per step" % mflop if mflop else ""),
              "",
              "| minibatch | cores | dptrain images/s | PyTorch images/s | ratio | "
              "dptrain GFLOP/s | dptrain peak RSS MB | PyTorch peak RSS MB | PyTorch layout |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for r in rows:
            L.append("| %d | %d | %s | %s | %s | %s | %s | %s | %s |" % (
                r["batch"], r["cores"], benchrun.fmt(r["dptrain"]), benchrun.fmt(r["pytorch"]),
                "%.2f" % r["ratio"] if r["ratio"] else "-",
                "%.1f" % r["gflops"] if r["gflops"] else "-",
                "%.0f" % r["dptrain_rss_mb"] if r["dptrain_rss_mb"] else "-",
                "%.0f" % r["pytorch_rss_mb"] if r["pytorch_rss_mb"] else "-",
                r["pytorch_layout"] or "-"))
        L.append("")
        if prof:
            L += ["dptrain per layer, minibatch 128, 1 core (`step_bench --net SPEC --layers "
                  "--peak`):", "", "```"] + prof + ["```", ""]
    L += ["Not yet in the suite: the character LSTM (bench/charlm.py has its own speed "
          "rounds and section)." + ("" if a.layers else " Per-layer GFLOP/s against the FMA "
                                    "peak: the full run (`--layers`).")]
    return L


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=sc.ROOT)
    ap.add_argument("--step-bench", required=True)
    ap.add_argument("--quick", action="store_true",
                    help="minibatch 128 only, one alternation, 2 rounds")
    ap.add_argument("--nets", default="", help="comma-separated names (default: all): " +
                    ", ".join(n[0] for n in NETS))
    ap.add_argument("--batches", default="32,128,512")
    ap.add_argument("--repeat", type=int, default=3, help="alternations per row")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds per run")
    ap.add_argument("--layers", action="store_true",
                    help="per-layer profile and FMA peak per network (default in the full run)")
    ap.add_argument("--no-results", action="store_true", help="do not write bench/RESULTS.md")
    a = ap.parse_args()
    if a.quick:
        a.repeat, a.rounds = 1, 2
    else:
        a.layers = True
    a.load0 = os.getloadavg()[0]
    tables = Suite(a).run()
    torch_version = benchrun.sh([benchrun.PY, "-c", "import torch; print(torch.__version__)"])
    lines = table_lines(a, tables, torch_version.strip())
    if a.no_results:
        print("\n".join(lines))
    else:
        sc.write_section(BEGIN, END, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
