"""Shared parts of bench/seqclass.py and bench/charlm.py: running dptrain,
reading its metrics.csv, the machine line, and writing a section of
bench/RESULTS.md between markers (the other sections are kept)."""
import datetime
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))


def run(cmd, what):
    """Run cmd; (stdout, wall seconds, CPU seconds of the child). A failure
    ends the benchmark with dptrain's message."""
    print("%s: %s" % (what, " ".join(cmd)), flush=True)
    t0, r0 = time.time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    # PyTorch's OpenMP setting is for PyTorch (dptrain does not use OpenMP).
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    wall, r1 = time.time() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise SystemExit("%s failed (exit %d):\n%s%s" % (what, p.returncode, p.stdout[-2000:],
                                                        p.stderr[-2000:]))
    cpu = r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime
    return p.stdout, wall, cpu


class pinned:
    """Run a block on the first n CPUs this process may use (both sides of a
    comparison, dptrain as a child inherits it): "1 core" then means one,
    not one thread plus whatever helper threads find a second core."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        self.old = os.sched_getaffinity(0)
        os.sched_setaffinity(0, sorted(self.old)[:self.n])
        return self

    def __exit__(self, *exc):
        os.sched_setaffinity(0, self.old)


def metrics(out):
    """metrics.csv of a training run as a list of dicts (numbers as floats,
    empty cells None)."""
    rows = []
    with open(os.path.join(out, "metrics.csv")) as f:
        head = f.readline().strip().split(",")
        for line in f:
            v = line.strip().split(",")
            rows.append({h: (float(x) if x not in ("", "nan") else None)
                         for h, x in zip(head, v)})
    return rows


def epoch_seconds(rows, epochs):
    """Seconds of each epoch from the elapsed time of its last row."""
    ends = {0: 0.0}
    for r in rows:
        ends[int(r["epoch"])] = r["elapsed_s"]
    return [ends[e] - ends[e - 1] for e in range(1, epochs + 1) if e in ends and e - 1 in ends]


def rate_between(rows, first_it, per_iteration):
    """Observations per second from iteration first_it to the last row."""
    el = {int(r["iteration"]): r["elapsed_s"] for r in rows}
    last = max(el)
    if last <= first_it:
        first_it = min(el)
    return (last - first_it) * per_iteration / (el[last] - el[first_it])


def median(v):
    return statistics.median(v) if v else float("nan")


def machine_line(torch_version):
    cpu = platform.processor() or "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True).stdout.strip() or "?"
    return ("on %s (commit %s). CPU: %s, %d cores; load average %.1f at the end (other work on "
            "the machine makes the absolute rates noisy; the ratios compare runs made in the "
            "same minutes). PyTorch %s (OMP_WAIT_POLICY=%s)." % (
                datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), commit, cpu, os.cpu_count(),
                os.getloadavg()[0], torch_version, os.environ.get("OMP_WAIT_POLICY", "-")))


def write_section(begin, end, lines, results=None):
    """Replace the section between the markers begin/end in
    bench/RESULTS.md (or append it) with lines."""
    path = results or os.path.join(ROOT, "bench", "RESULTS.md")
    old = open(path).read() if os.path.exists(path) else "# dptrain against PyTorch: results\n"
    block = "\n".join([begin] + lines + [end])
    if begin in old and end in old:
        new = old[:old.index(begin)] + block + old[old.index(end) + len(end):]
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(new)
    print("\n".join(lines))
    print("wrote %s" % os.path.relpath(path))
