#!/usr/bin/python3
"""dptrain against PyTorch on this machine; called by bench/run (which
installs, builds and fetches the data first).

For every configuration (threads/workers layout x minibatch) it runs dptrain
and PyTorch alternately, REPEAT times, on the same network, optimizer,
minibatch, seed and thread counts, and reports the median images/s of each,
their ratio, and peak RSS:

  step   training steps on random inputs: bench/step_bench (dptrain_train_step)
         against bench/torch_step.py step (the same network in PyTorch)
  epoch  whole epochs of `dptrain train` on data/digits (images decoded once,
         as the CLI does; minibatch queue with prefetch) against an epoch of
         PyTorch over the same images held in memory; rate of epochs 2..E

Layouts: 1 thread; 2 threads (one worker, 2 BLAS / intra-op threads);
2 workers x 1 thread (dptrain local worker threads; PyTorch DDP, 2 processes,
gloo); 2 ranks under mpirun (dptrain's MPI backend; PyTorch DDP again).
Also: per-layer times and GFLOP/s against the measured FMA peak, the
reference ("generic") kernel set, OpenBLAS with OPENBLAS_CORETYPE /
OPENBLAS_L2_SIZE unset and set, and a workers x threads sweep.
Writes bench/RESULTS.md (and appends the raw records to
<build>/bench-results.jsonl).
"""
import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

PY = "/usr/bin/python3"
TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"


def sh(cmd, env=None, timeout=1800):
    """Run cmd, return stdout; raise with stderr on failure."""
    e = dict(os.environ)
    if env:
        for k, v in env.items():
            if v is None:
                e.pop(k, None)
            else:
                e[k] = v
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e,
                       timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError("%s failed (%d):\n%s\n%s" % (" ".join(cmd), p.returncode,
                                                        p.stdout[-2000:], p.stderr[-2000:]))
    return p.stdout


def last_json(out):
    for line in reversed(out.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError("no JSON line in output:\n" + out[-2000:])


def mpirun_prefix(n):
    cmd = ["mpirun", "-np", str(n), "--bind-to", "none"]
    if os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    return cmd


class Bench:
    def __init__(self, args):
        self.a = args
        self.records = []
        self.dptrain = os.path.join(args.build, "dptrain")
        self.data = os.path.join(args.root, "data", "digits")
        self.tmp = tempfile.mkdtemp(prefix="dptrain-bench.")

    def log(self, msg):
        print(msg, flush=True)

    # ---- one run of each side --------------------------------------------------

    def steps_for(self, batch):
        return max(3, self.a.images_per_round // batch)

    def dpt_step(self, layout, batch, env=None, extra=()):
        workers, threads, mpi = layout
        cmd = [self.a.step_bench, "--batch", str(batch), "--threads", str(threads),
               "--steps", str(self.steps_for(batch)), "--rounds", str(self.a.rounds), "--json"]
        cmd += list(extra)
        if mpi:
            cmd = mpirun_prefix(workers) + cmd + ["--workers", "1"]
        else:
            cmd += ["--workers", str(workers)]
        out = sh(cmd, env=env)
        r = last_json(out)
        r["text"] = out
        return r

    def torch_step(self, layout, batch):
        """PyTorch's step with glibc's malloc and, at minibatch 128 where tcmalloc is
        installed, with it preloaded: the better of the two (the issue compares against
        PyTorch with the allocator it runs fastest with)."""
        workers, threads, _ = layout
        cmd = [PY, os.path.join(self.a.root, "bench", "torch_step.py"), "step", "--batch",
               str(batch), "--threads", str(threads), "--ranks", str(workers), "--steps",
               str(self.steps_for(batch)), "--rounds", str(self.a.rounds)]
        best = dict(last_json(sh(cmd)), allocator="glibc")
        if os.path.exists(TCMALLOC) and batch == 128:  # the goals' minibatch (time)
            r = dict(last_json(sh(cmd, env={"LD_PRELOAD": TCMALLOC})), allocator="tcmalloc")
            if r["images_per_s"] > best["images_per_s"]:
                best = r
        return best

    def dpt_epoch_timed(self, layout, batch):
        """dpt_epoch, with peak RSS from GNU time (which prints to stderr)."""
        workers, threads, mpi = layout
        out_dir = os.path.join(self.tmp, "out")
        shutil.rmtree(out_dir, ignore_errors=True)
        cmd = [self.dptrain, "train", "--data", self.data, "--epochs", str(self.a.epochs),
               "--batch", str(batch), "--threads", str(threads), "--out", out_dir, "--quiet"]
        if mpi:
            cmd = mpirun_prefix(workers) + cmd
        else:
            cmd += ["--workers", str(workers)]
        p = subprocess.run(["/usr/bin/time", "-f", "TIME %e %M"] + cmd, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=3600)
        if p.returncode != 0:
            raise RuntimeError("%s failed:\n%s\n%s" % (" ".join(cmd), p.stdout, p.stderr))
        wall, rss = None, None
        for line in p.stderr.splitlines():
            if line.startswith("TIME "):
                _, w, m = line.split()
                wall, rss = float(w), int(m) / 1024.0
        ends = {}
        with open(os.path.join(out_dir, "metrics.csv")) as f:
            head = f.readline().strip().split(",")
            ie, ix = head.index("epoch"), head.index("elapsed_s")
            for line in f:
                v = line.strip().split(",")
                if len(v) > ix and v[ix]:
                    ends[int(v[ie])] = float(v[ix])
        n_train = 9001
        for line in p.stdout.splitlines():
            if line.startswith("training on "):
                n_train = int(line.split()[2])
        rates = [n_train / (ends[e] - ends[e - 1]) for e in sorted(ends) if e - 1 in ends]
        if not rates:
            rates = [n_train / ends[max(ends)]]
        return {"images_per_s": statistics.median(rates), "rounds": rates, "wall_s": wall,
                "rss_mb": rss}

    def main_job(self):
        """The README's main job (scripts/run): 20 epochs of the example network on
        data/digits, minibatch 128, default layout; wall time, peak RSS, accuracy."""
        out_dir = os.path.join(self.tmp, "main")
        shutil.rmtree(out_dir, ignore_errors=True)
        job = ["train", "--data", self.data, "--epochs", "20", "--batch", "128", "--quiet"]
        cmd = [self.dptrain] + job + ["--out", out_dir]
        p = subprocess.run(["/usr/bin/time", "-f", "TIME %e %M"] + cmd, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=3600)
        if p.returncode != 0:
            raise RuntimeError("%s failed:\n%s\n%s" % (" ".join(cmd), p.stdout, p.stderr))
        r = {"cmd": " ".join(["dptrain"] + job)}
        for line in p.stderr.splitlines():
            if line.startswith("TIME "):
                _, w, m = line.split()
                r["wall_s"], r["rss_mb"] = float(w), int(m) / 1024.0
        for line in p.stdout.splitlines():
            if line.startswith("test accuracy: "):
                r["accuracy"] = float(line.split()[2])
        return r

    def torch_epoch(self, layout, batch):
        workers, threads, _ = layout
        cmd = [PY, os.path.join(self.a.root, "bench", "torch_step.py"), "epoch", "--data",
               self.data, "--batch", str(batch), "--threads", str(threads), "--ranks",
               str(workers), "--epochs", str(self.a.epochs)]
        return last_json(sh(cmd))

    # ---- alternation -------------------------------------------------------------

    def compare(self, kind, name, layout, batch):
        d_runs, t_runs = [], []
        for rep in range(self.a.repeat):
            # Alternate which side goes first, so a drifting load favours neither.
            order = ["d", "t"] if rep % 2 == 0 else ["t", "d"]
            for side in order:
                try:
                    if side == "d":
                        r = (self.dpt_step(layout, batch) if kind == "step"
                             else self.dpt_epoch_timed(layout, batch))
                        d_runs.append(r)
                    else:
                        r = (self.torch_step(layout, batch) if kind == "step"
                             else self.torch_epoch(layout, batch))
                        t_runs.append(r)
                except Exception as e:  # a failed row is reported, not fatal
                    self.log("  %s %s batch %d %s: FAILED: %s" % (kind, name, batch,
                             "dptrain" if side == "d" else "pytorch", str(e).splitlines()[0]))
        rec = {"kind": kind, "layout": name, "batch": batch,
               "dptrain": [r["images_per_s"] for r in d_runs],
               "pytorch": [r["images_per_s"] for r in t_runs],
               "dptrain_rss_mb": max([r["rss_mb"] for r in d_runs if r.get("rss_mb")] or [0]),
               "pytorch_rss_mb": max([r.get("rss_mb_sum", r["rss_mb"]) for r in t_runs
                                      if r.get("rss_mb")] or [0])}
        allocs = sorted({r["allocator"] for r in t_runs if r.get("allocator")})
        if allocs:
            rec["pytorch_allocator"] = "/".join(allocs)
        if d_runs and "kernels" in d_runs[0]:
            rec["kernels"] = d_runs[0]["kernels"]
            rec["openblas_core"] = d_runs[0]["openblas_core"]
        rec["dptrain_median"] = statistics.median(rec["dptrain"]) if rec["dptrain"] else None
        rec["pytorch_median"] = statistics.median(rec["pytorch"]) if rec["pytorch"] else None
        self.records.append(rec)
        ratio = (rec["dptrain_median"] / rec["pytorch_median"]
                 if rec["dptrain_median"] and rec["pytorch_median"] else None)
        rec["ratio"] = ratio
        self.log("  %-5s %-22s batch %4d: dptrain %7s  pytorch %7s  ratio %s" % (
            kind, name, batch, fmt(rec["dptrain_median"]), fmt(rec["pytorch_median"]),
            "%.2f" % ratio if ratio else "-"))
        return rec

    # ---- the whole set -------------------------------------------------------------

    def run(self):
        a = self.a
        layouts = [("1 thread", (1, 1, False)), ("2 threads", (1, 2, False)),
                   ("2 workers x 1 thread", (2, 1, False))]
        if shutil.which("mpirun") and not a.no_mpi:
            layouts.append(("2 ranks (mpirun)", (2, 1, True)))
        batches = [128] if a.quick else [32, 128, 512]
        info = machine_info(a)
        self.log("machine: %s, %s cores; %s" % (info["cpu"], info["cores"], info["date"]))
        self.log("training steps (images/s, median of %d alternations):" % a.repeat)
        for b in batches:
            for name, lay in layouts:
                self.compare("step", name, lay, b)
        self.log("whole epochs on data/digits (images/s of epochs 2..%d):" % a.epochs)
        for name, lay in layouts:
            self.compare("epoch", name, lay, 128)
        extra = {}
        self.log("the main job (20 epochs, minibatch 128, default layout):")
        jobs = []
        for _ in range(1 if a.quick else a.repeat):
            try:
                jobs.append(self.main_job())
                self.log("  %.1f s, peak RSS %.0f MB, test accuracy %.4f" % (
                    jobs[-1]["wall_s"], jobs[-1]["rss_mb"], jobs[-1].get("accuracy", 0)))
            except Exception as e:
                self.log("  main job FAILED: %s" % str(e).splitlines()[0])
        extra["main_job"] = jobs
        self.log("per-layer profile, FMA peak, kernel sets, OpenBLAS core types:")
        extra["layers"] = self.dpt_step((1, 1, False), 128, extra=["--layers", "--peak"])
        extra["generic"] = self.dpt_step((1, 1, False), 128, env={"DPT_KERNELS": "generic"})
        if not a.quick:
            extra["avx2"] = self.dpt_step((1, 1, False), 128, env={"DPT_KERNELS": "avx2"})
        ct = os.environ.get("OPENBLAS_CORETYPE") or "Haswell"
        l2 = os.environ.get("OPENBLAS_L2_SIZE") or "1048576"
        extra["blas_unset"] = self.dpt_step((1, 1, False), 128, env={
            "OPENBLAS_CORETYPE": None, "OPENBLAS_L2_SIZE": None, "DPT_KERNELS": "generic"})
        extra["blas_set"] = self.dpt_step((1, 1, False), 128, env={
            "OPENBLAS_CORETYPE": ct, "OPENBLAS_L2_SIZE": l2, "DPT_KERNELS": "generic"})
        extra["blas_set"]["env"] = "OPENBLAS_CORETYPE=%s OPENBLAS_L2_SIZE=%s" % (ct, l2)
        if not a.quick:
            sweep = []
            for w, t in [(1, 1), (1, 2), (2, 1), (2, 2), (4, 1)]:
                r = [self.dpt_step((w, t, False), 128)["images_per_s"] for _ in range(a.repeat)]
                sweep.append({"workers": w, "threads": t, "images_per_s": r,
                              "median": statistics.median(r)})
                self.log("  sweep %d workers x %d threads: %s" % (w, t, fmt(sweep[-1]["median"])))
            extra["sweep"] = sweep
        info["load_after"] = os.getloadavg()
        write_results(a, info, self.records, extra)
        with open(os.path.join(a.build, "bench-results.jsonl"), "a") as f:
            for r in self.records:
                f.write(json.dumps(dict(r, date=info["date"])) + "\n")
        shutil.rmtree(self.tmp, ignore_errors=True)


def fmt(v):
    return "%.0f" % v if v else "-"


def machine_info(a):
    cpu = platform.processor()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        torch_v = subprocess.run([PY, "-c", "import torch; print(torch.__version__)"],
                                 stdout=subprocess.PIPE, text=True).stdout.strip()
    except Exception:
        torch_v = "?"
    try:
        commit = subprocess.run(["git", "-C", a.root, "rev-parse", "--short", "HEAD"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True).stdout.strip()
    except Exception:
        commit = "?"
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch_v, "commit": commit,
            "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
            "load_before": os.getloadavg()}


def summary_lines(records):
    """The issue's goals, checked against one run's rows."""
    L = ["## Summary", ""]
    steps = [r for r in records if r["kind"] == "step"]
    for b in sorted({r["batch"] for r in steps}):
        rows = [r for r in steps if r["batch"] == b]
        d = [r for r in rows if r["dptrain_median"]]
        t = [r for r in rows if r["pytorch_median"]]
        if not d or not t:
            continue
        bd = max(d, key=lambda r: r["dptrain_median"])
        bt = max(t, key=lambda r: r["pytorch_median"])
        one = [r for r in rows if r["layout"] == "1 thread" and r["ratio"]]
        line = ("* minibatch %d: dptrain's best %s images/s (%s) against PyTorch's best %s (%s): "
                "**%.2fx**" % (b, fmt(bd["dptrain_median"]), bd["layout"],
                               fmt(bt["pytorch_median"]), bt["layout"],
                               bd["dptrain_median"] / bt["pytorch_median"]))
        if one:
            line += "; one core against PyTorch with one thread: **%.2fx**" % one[0]["ratio"]
        L.append(line + ".")
    L.append("")
    return L


def write_results(a, info, records, extra):
    L = []
    L.append("# dptrain against PyTorch: results")
    L.append("")
    L.append("Written by `bench/run%s` on %s (commit %s). CPU: %s, %d cores. PyTorch %s "
             "(Debian python3-torch). Load average %.1f before, %.1f after: other work on the "
             "machine makes absolute numbers noisy; each ratio compares runs made alternately "
             "in the same minutes." % (" --quick" if a.quick else "", info["date"],
                                        info["commit"], info["cpu"], info["cores"],
                                        info["torch"], info["load_before"][0],
                                        info["load_after"][0]))
    L.append("")
    L.append("Medians of %d alternating runs; each run's figure is itself the median of %d "
             "rounds (steps) or of epochs 2..%d (epochs). Peak RSS: dptrain's process (rank 0 "
             "under mpirun); PyTorch's summed over its processes. Layouts with 2 workers need "
             "both cores at once: on a loaded machine they lose most (every all-reduce waits for "
             "the worker that lost its core); docs/scaling.md has the same binaries on a quiet "
             "16-core machine (2 workers: 1.7x one)." % (a.repeat, a.rounds, a.epochs))
    L.append("")
    L.append("At minibatch 128, PyTorch's training steps run with glibc's malloc and with "
             "tcmalloc preloaded; each run keeps the faster (the allocator column says which "
             "won).")
    L.append("")
    L.append("| kind | layout | minibatch | dptrain images/s | PyTorch images/s | ratio | "
             "dptrain peak RSS MB | PyTorch peak RSS MB | PyTorch allocator |")
    L.append("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for r in records:
        L.append("| %s | %s | %d | %s | %s | %s | %s | %s | %s |" % (
            r["kind"], r["layout"], r["batch"], fmt(r["dptrain_median"]),
            fmt(r["pytorch_median"]), "%.2f" % r["ratio"] if r["ratio"] else "-",
            "%.0f" % r["dptrain_rss_mb"] if r["dptrain_rss_mb"] else "-",
            "%.0f" % r["pytorch_rss_mb"] if r["pytorch_rss_mb"] else "-",
            r.get("pytorch_allocator", "-")))
    L.append("")
    jobs = extra.get("main_job")
    if jobs:
        walls = [j["wall_s"] for j in jobs if j.get("wall_s")]
        L.append("## The main job")
        L.append("")
        L.append("`%s` (what scripts/run runs; default layout), %d run(s): wall %s s "
                 "(median %.1f s), peak RSS %s MB, test accuracy %s." % (
                     jobs[0]["cmd"],
                     len(jobs), ", ".join("%.1f" % w for w in walls),
                     statistics.median(walls) if walls else 0,
                     ", ".join("%.0f" % j["rss_mb"] for j in jobs if j.get("rss_mb")),
                     ", ".join("%.4f" % j["accuracy"] for j in jobs if "accuracy" in j)))
        L.append("")
    L.extend(summary_lines(records))
    lay = extra.get("layers")
    if lay:
        L.append("## Per-layer profile (1 worker, 1 thread, minibatch 128)")
        L.append("")
        L.append("From `step_bench --layers --peak` (thread CPU time per step):")
        L.append("")
        L.append("```")
        L.extend(l for l in lay["text"].splitlines() if not l.startswith("{"))
        L.append("```")
        L.append("")
    L.append("## Kernel sets and OpenBLAS")
    L.append("")
    L.append("| run (1 worker, 1 thread, minibatch 128) | kernels | OpenBLAS core | images/s |")
    L.append("|---|---|---|---:|")
    rows = [("default", lay), ("DPT_KERNELS=generic (reference path: im2col + sgemm, no fusion)",
                               extra.get("generic")),
            ("DPT_KERNELS=avx2", extra.get("avx2")),
            ("generic, OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset", extra.get("blas_unset")),
            ("generic, " + (extra.get("blas_set") or {}).get("env", ""), extra.get("blas_set"))]
    for label, r in rows:
        if r:
            L.append("| %s | %s | %s | %s |" % (label, r["kernels"], r["openblas_core"],
                                               fmt(r["images_per_s"])))
    L.append("")
    if extra.get("sweep"):
        L.append("## Workers x threads (dptrain step, minibatch 128)")
        L.append("")
        L.append("| workers | BLAS threads each | images/s (median) |")
        L.append("|---:|---:|---:|")
        for s in extra["sweep"]:
            L.append("| %d | %d | %s |" % (s["workers"], s["threads"], fmt(s["median"])))
        L.append("")
    # The other scripts' sections (bench/nets.sh, seqclass.py, charlm.py, suite.py:
    # each between its "<!-- NAME begin/end -->" markers) are kept.
    path = os.path.join(a.root, "bench", "RESULTS.md")
    old = open(path).read() if os.path.exists(path) else ""
    for m in re.finditer(r"<!-- (\S+) begin -->.*?<!-- \1 end -->", old, re.S):
        L += ["", m.group(0), ""]
    with open(path, "w") as f:
        f.write("\n".join(L))
    print("wrote bench/RESULTS.md")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--build", default=None)
    ap.add_argument("--step-bench", default=None)
    ap.add_argument("--quick", action="store_true", help="one alternation, minibatch 128 only")
    ap.add_argument("--repeat", type=int, default=3, help="alternations per row (default 3)")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds per step run")
    ap.add_argument("--images-per-round", type=int, default=2560)
    ap.add_argument("--epochs", type=int, default=3, help="epochs per epoch run (default 3)")
    ap.add_argument("--no-mpi", action="store_true", help="skip the mpirun rows")
    a = ap.parse_args()
    a.build = a.build or os.path.join(a.root, "build-bench")
    a.step_bench = a.step_bench or os.path.join(a.build, "step_bench")
    if a.quick:
        a.repeat = 1
        a.epochs = 2
    Bench(a).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
