#!/usr/bin/python3
"""A residual network on Fashion-MNIST: dptrain against PyTorch, side by side
(bench/nets.sh builds and calls this; the tests never do).

Both train the same network (the spec file, built for PyTorch by
examples/pytorch_interop.py's DptNet) with the same recipe: SGD with
momentum, learning rate, weight decay (on every learnable, as both apply
it), minibatch, epochs, Glorot-uniform initial weights and zero biases,
batch-norm decay 0.1, dropout as the spec says (PyTorch's own masks; data
order and random draws differ). dptrain runs `dptrain train --workers W
--threads 1`, PyTorch one process with torch.set_num_threads(W): both use W
cores. Reported: test accuracy on the test images (%d) after the last
epoch, and images/s (60,000 per epoch; the median of epochs 2..E, or epoch
1 when E = 1), with their ratio. The table goes into bench/RESULTS.md
between the markers below (bench/run keeps it when it rewrites the file).
"""
import argparse
import datetime
import gzip
import json
import os
import platform
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time

BEGIN, END = "<!-- bench/nets.sh begin -->", "<!-- bench/nets.sh end -->"


def idx_open(path):
    return (gzip.open if open(path, "rb").read(2) == b"\x1f\x8b" else open)(path, "rb")


def idx_count(path):
    with idx_open(path) as f:
        return struct.unpack(">II", f.read(8))[1]


def read_idx(images):
    import numpy as np

    def load(path, magic):
        with idx_open(path) as f:
            data = f.read()
        if struct.unpack(">I", data[:4])[0] != magic:
            raise SystemExit("%s: not an IDX file of magic %#x" % (path, magic))
        return data

    labels = images.replace("images-idx3", "labels-idx1")
    a = load(images, 0x803)
    n, rows, cols = struct.unpack(">III", a[4:16])
    x = np.frombuffer(a, np.uint8, n * rows * cols, 16).reshape(n, 1, rows, cols)
    y = np.frombuffer(load(labels, 0x801), np.uint8, n, 8)
    return x.astype(np.float32) / 255.0, y.astype(np.int64)


def run_dptrain(a, out):
    cmd = [a.dptrain, "train", "--net", a.net, "--data", a.train, "--test", a.test,
           "--epochs", str(a.epochs), "--batch", str(a.batch), "--lr", str(a.lr),
           "--momentum", str(a.momentum), "--weight-decay", str(a.weight_decay),
           "--seed", str(a.seed), "--workers", str(a.workers), "--threads", "1",
           "--device", "cpu", "--out", out, "--overwrite", "--quiet"]
    print("dptrain: " + " ".join(cmd), flush=True)
    load = os.getloadavg()[0]
    t0, r0 = time.time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wall, r1 = time.time() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise SystemExit("dptrain failed:\n" + p.stdout[-2000:] + p.stderr[-2000:])
    acc = None
    for line in p.stdout.splitlines():
        if line.startswith("test accuracy: "):
            acc = float(line.split()[2])
    ends = {}
    with open(os.path.join(out, "metrics.csv")) as f:
        head = f.readline().strip().split(",")
        ie, ix = head.index("epoch"), head.index("elapsed_s")
        for line in f:
            v = line.strip().split(",")
            if len(v) > ix and v[ix]:
                ends[int(v[ie])] = float(v[ix])  # the epoch's last row
    ends[0] = 0.0
    # CPU seconds of the whole run (start-up, data, test included): on a
    # machine shared with other work, images per CPU-second moves less
    # than images per wall-clock second.
    cpu = r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime
    n_test = idx_count(a.test)
    return {"accuracy": acc, "n_test": n_test,
            "epoch_s": [ends[e] - ends[e - 1] for e in range(1, a.epochs + 1)], "wall_s": wall,
            "cpu_s": cpu, "load": [load, os.getloadavg()[0]]}


def run_torch(a):
    import numpy as np
    import torch
    sys.path.insert(0, os.path.join(a.root, "examples"))
    from pytorch_interop import DptNet

    torch.set_num_threads(a.workers)
    torch.manual_seed(a.seed)
    load = os.getloadavg()[0]
    t0, r0 = time.time(), resource.getrusage(resource.RUSAGE_SELF)
    xtr, ytr = read_idx(a.train)
    xte, yte = read_idx(a.test)
    X, Y = torch.from_numpy(xtr), torch.from_numpy(ytr)
    net = DptNet(open(a.net).read(), int(ytr.max()) + 1, dropout="torch")
    net.init_glorot()
    opt = torch.optim.SGD(net.parameters(), lr=a.lr, momentum=a.momentum,
                          weight_decay=a.weight_decay)
    n = len(ytr)
    rng = np.random.default_rng(a.seed)
    epoch_s = []
    for e in range(a.epochs):
        net.train()
        perm = torch.from_numpy(rng.permutation(n))
        t1 = time.perf_counter()
        for b0 in range(0, n, a.batch):
            idx = perm[b0:b0 + a.batch]
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(net(X[idx], logits=True), Y[idx])
            loss.backward()
            opt.step()
        epoch_s.append(time.perf_counter() - t1)
        print("  pytorch epoch %d: %.1f s, last loss %.4f" % (e + 1, epoch_s[-1], float(loss)),
              flush=True)
    net.eval()
    correct = 0
    with torch.no_grad():
        for b0 in range(0, len(yte), 1000):
            p = net(torch.from_numpy(xte[b0:b0 + 1000]))
            correct += int((p.argmax(1).numpy() == yte[b0:b0 + 1000]).sum())
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime
    return {"accuracy": correct / len(yte), "epoch_s": epoch_s, "wall_s": time.time() - t0,
            "cpu_s": cpu, "load": [load, os.getloadavg()[0]], "torch": torch.__version__}


def speed_rounds(a, tmp):
    """images/s of both sides in alternating short rounds, so that a load
    which drifts over the minutes favours neither: dptrain one epoch over the
    first --speed-images training images (its rate from metrics.csv, between
    iteration 10 and the last), PyTorch as many steps on the same images
    (timed from step 10). Returns the two lists of rates."""
    import numpy as np
    import torch
    sys.path.insert(0, os.path.join(a.root, "examples"))
    from pytorch_interop import DptNet

    n = a.speed_images - a.speed_images % a.batch
    labels = a.train.replace("images-idx3", "labels-idx1")
    with idx_open(a.train) as f:
        head = f.read(16)
        _, _, rows, cols = struct.unpack(">IIII", head)
        pix = f.read(n * rows * cols)
    with idx_open(labels) as f:
        lab = f.read(8 + n)[8:]
    sub = os.path.join(tmp, "speed-images-idx3-ubyte")
    with open(sub, "wb") as f:
        f.write(struct.pack(">IIII", 0x803, n, rows, cols) + pix)
    with open(os.path.join(tmp, "speed-labels-idx1-ubyte"), "wb") as f:
        f.write(struct.pack(">II", 0x801, n) + lab)
    X = torch.from_numpy(np.frombuffer(pix, np.uint8).reshape(n, 1, rows, cols).astype(
        np.float32) / 255.0)
    Y = torch.from_numpy(np.frombuffer(lab, np.uint8).astype(np.int64))
    torch.set_num_threads(a.workers)
    net = DptNet(open(a.net).read(), 10, dropout="torch")
    net.init_glorot()
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=a.lr, momentum=a.momentum,
                          weight_decay=a.weight_decay)
    steps = n // a.batch
    d_rates, t_rates = [], []
    for r in range(a.rounds):
        for side in (("d", "t") if r % 2 == 0 else ("t", "d")):
            if side == "d":
                out = os.path.join(tmp, "speed")
                cmd = [a.dptrain, "train", "--net", a.net, "--data", sub, "--test", a.test,
                       "--epochs", "1", "--batch", str(a.batch), "--lr", str(a.lr),
                       "--momentum", str(a.momentum), "--weight-decay", str(a.weight_decay),
                       "--workers", str(a.workers), "--threads", "1", "--device", "cpu",
                       "--out", out, "--overwrite", "--quiet"]
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
                el = {}
                with open(os.path.join(out, "metrics.csv")) as f:
                    h = f.readline().strip().split(",")
                    ii, ix = h.index("iteration"), h.index("elapsed_s")
                    for line in f:
                        v = line.strip().split(",")
                        el[int(v[ii])] = float(v[ix])
                d_rates.append((steps - 10) * a.batch / (el[steps] - el[10]))
            else:
                for k in range(steps):
                    if k == 10:
                        t1 = time.perf_counter()
                    idx = slice(k * a.batch, (k + 1) * a.batch)
                    opt.zero_grad(set_to_none=True)
                    torch.nn.functional.cross_entropy(net(X[idx], logits=True), Y[idx]).backward()
                    opt.step()
                t_rates.append((steps - 10) * a.batch / (time.perf_counter() - t1))
        print("  speed round %d: dptrain %.0f images/s, pytorch %.0f" % (
            r + 1, d_rates[-1], t_rates[-1]), flush=True)
    return d_rates, t_rates


def rate(r, n):
    eps = r["epoch_s"][1:] or r["epoch_s"]
    return n / statistics.median(eps)


def row(label, r, rate_, n_images):
    return "| %s | %.4f | %.0f | %s | %.0f | %.0f | %.0f | %.1f, %.1f |" % (
        label, r["accuracy"], rate_, ", ".join("%.1f" % s for s in r["epoch_s"]), r["wall_s"],
        r["cpu_s"], n_images / r["cpu_s"], r["load"][0], r["load"][1])


def write_results(a, d, t, n_train, speed):
    rd, rt = rate(d, n_train), rate(t, n_train)
    commit = subprocess.run(["git", "-C", a.root, "rev-parse", "--short", "HEAD"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True).stdout.strip() or "?"
    cpu = platform.processor() or "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    L = [BEGIN, "## A residual network on Fashion-MNIST (bench/nets.sh)", "",
         "Written by `bench/nets.sh` on %s (commit %s). CPU: %s, %d cores; load average %.1f at "
         "the end (other work on the machine makes the absolute rates noisy). PyTorch %s." % (
             datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), commit, cpu, os.cpu_count(),
             os.getloadavg()[0], t["torch"]),
         "",
         "Network `%s`; recipe for both: %d epochs of the %d training images, minibatch %d, "
         "SGD with momentum %g, learning rate %g, weight decay %g, Glorot-uniform initial "
         "weights; test accuracy on the test images (%d). dptrain: `dptrain train --workers "
         "%d --threads 1`; PyTorch: one process, `torch.set_num_threads(%d)`, the network "
         "rebuilt from the spec by examples/pytorch_interop.py. images/s: the median of epochs "
         "2..%d (epoch 1 alone when 1 epoch); images per CPU-second: the training images of all "
         "epochs over the CPU time of the whole run (start-up, reading the data and the test "
         "included), steadier than wall-clock rates when other work shares the machine." % (
             os.path.relpath(a.net, a.root), a.epochs, n_train, a.batch, a.momentum, a.lr,
             a.weight_decay, d["n_test"], a.workers, a.workers, a.epochs),
         "",
         "| | test accuracy | images/s | seconds per epoch | whole run: wall s | CPU s | "
         "images per CPU-s | load average before, after |",
         "|---|---:|---:|---|---:|---:|---:|---|",
         row("dptrain (%d workers)" % a.workers, d, rd, n_train * a.epochs),
         row("PyTorch (%d threads)" % a.workers, t, rt, n_train * a.epochs),
         "",
         "dptrain / PyTorch: images/s **%.2fx**, images per CPU-second **%.2fx**, test accuracy "
         "%+.4f." % (rd / rt, (t["cpu_s"] / d["cpu_s"]), d["accuracy"] - t["accuracy"]),
         ""]
    if speed:
        md, mt = statistics.median(speed[0]), statistics.median(speed[1])
        L += ["Speed in %d alternating rounds of %d training images each (the same minutes for "
              "both sides; dptrain's rate from its metrics between iteration 10 and the last, "
              "PyTorch's from step 10): dptrain %s images/s (median %.0f), PyTorch %s (median "
              "%.0f): **%.2fx**." % (
                  a.rounds, a.speed_images, ", ".join("%.0f" % v for v in speed[0]), md,
                  ", ".join("%.0f" % v for v in speed[1]), mt, md / mt)]
    L += [
         END]
    path = os.path.join(a.root, "bench", "RESULTS.md")
    old = open(path).read() if os.path.exists(path) else "# dptrain against PyTorch: results\n"
    if BEGIN in old and END in old:
        new = old[:old.index(BEGIN)] + "\n".join(L) + old[old.index(END) + len(END):]
    else:
        new = old.rstrip("\n") + "\n\n" + "\n".join(L) + "\n"
    with open(path, "w") as f:
        f.write(new)
    print("\n".join(L[1:-1]))
    print("wrote bench/RESULTS.md")


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    fm = "/usr/share/datasets/fashion-mnist"
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=root)
    ap.add_argument("--dptrain", default=os.path.join(root, "build", "dptrain"))
    ap.add_argument("--net", default=os.path.join(root, "examples", "nets",
                                                  "resnet-mini-28x28x1.net"))
    ap.add_argument("--train", default=os.path.join(fm, "train-images-idx3-ubyte.gz"))
    ap.add_argument("--test", default=os.path.join(fm, "t10k-images-idx3-ubyte.gz"))
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--weight-decay", type=float, default=0.0005)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=3,
                    help="alternating speed rounds (0: none)")
    ap.add_argument("--speed-images", type=int, default=12800,
                    help="training images per speed round")
    ap.add_argument("--only", choices=["dptrain", "pytorch"], help="run one side, print JSON")
    a = ap.parse_args()
    a.net = os.path.abspath(a.net)
    tmp = tempfile.mkdtemp(prefix="dptrain-fashion.")
    try:
        if a.only == "dptrain":
            print(json.dumps(run_dptrain(a, os.path.join(tmp, "out"))))
            return 0
        if a.only == "pytorch":
            print(json.dumps(run_torch(a)))
            return 0
        speed = speed_rounds(a, tmp) if a.rounds > 0 else None
        d = run_dptrain(a, os.path.join(tmp, "out"))
        print("  dptrain: accuracy %.4f, epochs %s s" % (d["accuracy"], d["epoch_s"]), flush=True)
        print("pytorch: the same network and recipe, %d threads" % a.workers, flush=True)
        t = run_torch(a)
        write_results(a, d, t, idx_count(a.train), speed)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
