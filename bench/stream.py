#!/usr/bin/python3
"""Streaming against preloading on folders of colour JPEGs (bench/stream.sh
runs this): for each folder, alternating --cache memory and none,

  pipeline  stream_bench (the data pipeline alone: open, then a shuffled
            minibatch queue resizing to 32x32x3, --batches of them): time
            from the start to the first batch, steady images/s, peak RSS;
  train     dptrain train --net examples/nets/resnet-mini-32x32x3.net
            --workers W --batch 128, stopped with SIGINT after --iterations
            iterations: time from the start to the first iteration, steady
            training images/s (iterations 5 to the last, from the times the
            progress lines arrive), and peak RSS (/usr/bin/time -v).

"pipeline / training step" divides the pipeline's images/s by the memory
run's training images/s (decoding done before training, so that is the
step's own rate).

Prints a Markdown table; the same table goes to --md when given.
"""
import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time


def peak_rss_mb(stderr_text):
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr_text)
    return int(m.group(1)) / 1024 if m else float("nan")


def run_pipeline(bench, folder, cache, threads, epochs, batches):
    cmd = ["/usr/bin/time", "-v", bench, folder, "--cache", cache, "--epochs", str(epochs),
           "--batches", str(batches)]
    if threads:
        cmd += ["--threads", str(threads)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"stream.py: {' '.join(cmd)} failed: {p.stderr[-2000:]}")
    kv = dict(x.split("=", 1) for x in p.stdout.split())
    return {"cmd": " ".join(cmd[2:]), "first_s": float(kv["first_from_start_s"]),
            "ips": float(kv["steady_images_per_s"]), "rss": peak_rss_mb(p.stderr),
            "threads": kv["threads"]}


def run_train(dptrain, root, folder, cache, workers, iterations, batch):
    out = tempfile.mkdtemp(prefix="dpt_stream_bench_")
    cmd = ["/usr/bin/time", "-v", dptrain, "train", "--data", folder, "--cache", cache,
           "--net", os.path.join(root, "examples/nets/resnet-mini-32x32x3.net"),
           "--workers", str(workers), "--batch", str(batch), "--epochs", "1",
           "--print-every", "1", "--out", out, "--overwrite"]
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    times, mode = {}, ""
    for line in p.stdout:
        if line.startswith("data cache:"):
            mode = line.strip()
        m = re.search(r"iteration (\d+) ", line)
        if m:
            times[int(m.group(1))] = time.monotonic() - t0
            if int(m.group(1)) >= iterations:
                os.killpg(p.pid, signal.SIGINT)  # time -v ignores it; dptrain stops cleanly
                break
    for _ in p.stdout:
        pass
    err = p.stderr.read()
    p.wait()
    subprocess.run(["rm", "-rf", out])
    if not times:
        sys.exit(f"stream.py: {' '.join(cmd)}: no iteration: {err[-2000:]}")
    last = max(times)
    k0 = 5 if last > 5 else 1
    ips = (last - k0) * batch / (times[last] - times[k0]) if last > k0 else float("nan")
    return {"cmd": " ".join(cmd[2:-5]), "first_s": times[min(times)], "ips": ips,
            "rss": peak_rss_mb(err), "mode": mode, "iterations": last}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--dptrain", required=True)
    ap.add_argument("--bench", required=True, help="stream_bench executable")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--threads", type=int, default=0, help="decode threads (0: automatic)")
    ap.add_argument("--batches", type=int, default=100,
                    help="pipeline: batches to time (0: a whole epoch)")
    ap.add_argument("--md")
    ap.add_argument("folders", nargs="+")
    a = ap.parse_args()
    rows = []
    for folder in a.folders:
        n = sum(len(f) for _, _, f in os.walk(folder))
        for cache in ("memory", "none"):
            pl = run_pipeline(a.bench, folder, cache, a.threads, 1, a.batches)
            print(f"{n} {cache} pipeline: {pl}", file=sys.stderr, flush=True)
            tr = run_train(a.dptrain, a.root, folder, cache, a.workers, a.iterations, a.batch)
            print(f"{n} {cache} train: {tr}", file=sys.stderr, flush=True)
            rows.append((n, cache, pl, tr))
    lines = ["| images | --cache | pipeline: first batch (s) | pipeline images/s "
             "(decode threads) | pipeline peak RSS (MB) | train: first iteration (s) | "
             "train images/s | pipeline / training step | train peak RSS (MB) |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    # The training step's rate: the memory run's, where decoding is done
    # before training (the pipeline then only converts and resizes).
    step = {n: tr["ips"] for n, cache, pl, tr in rows if cache == "memory"}
    for n, cache, pl, tr in rows:
        lines.append(f"| {n} | {cache} | {pl['first_s']:.2f} | {pl['ips']:.0f} ({pl['threads']}) | "
                     f"{pl['rss']:.0f} | {tr['first_s']:.2f} | {tr['ips']:.0f} | "
                     f"{pl['ips'] / step[n]:.1f}x | {tr['rss']:.0f} |")
    text = "\n".join(lines)
    print(text)
    if a.md:
        with open(a.md, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
