#!/usr/bin/python3
"""An LSTM sequence classifier on real data, dptrain against PyTorch side by
side: first names (scripts/fetch-sequences: data/sequences/names, female or
male, one one-hot letter of 27 per time step, 2 to 15 steps), the same
network (sequenceinput size=27, lstm units=100 output=last, fc
outputs=classes, softmax), the same split and the same recipe (Adam,
minibatch 64, epochs, fc Glorot-uniform and the LSTM PyTorch's uniform
+-1/sqrt(H) at the start).

    /usr/bin/python3 bench/seqclass.py              # 10 epochs, 1 and 2 cores
    /usr/bin/python3 bench/seqclass.py --short      # 3 epochs, 2 cores: a minute or two
    /usr/bin/python3 bench/seqclass.py --help

The names are split 90/10 per class (Python's random with --seed) into a
training and a test folder that both sides read. dptrain: `dptrain train
--workers W --threads 1` (minibatches padded to their longest name, padded
steps masked); PyTorch: one process, torch.set_num_threads(W), one
torch.nn.LSTM(batch_first=True) call per minibatch on a packed padded
batch (pack_padded_sequence: no work on padding), the state after each
name's last letter into the fc layer. Reported: test accuracy after the last
epoch (the PyTorch model also scored by `dptrain eval` from an exported model
file, as a check) and training sequences/s (the median of epochs 2..E, or
epoch 1 alone), with the ratio; for each core count both sides are
pinned to the same CPUs. The table goes into bench/RESULTS.md between the
markers below.
"""
import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time

import seqcommon as sc

# PyTorch's CPU threads wait for each other in OpenMP; libgomp's default
# spins, which made 2 threads several times slower than passive waiting
# here (the language model under other work's load: 800 against 5,800
# characters/s; the name classifier on a quiet machine: 2,455 against 8,972
# sequences/s). Passive is PyTorch's best on these machines; --omp-wait
# active (read before torch is imported) measures the default.
if "--omp-wait" in sys.argv[:-1]:
    os.environ["OMP_WAIT_POLICY"] = sys.argv[sys.argv.index("--omp-wait") + 1].upper()
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

BEGIN, END = "<!-- bench/seqclass.py begin -->", "<!-- bench/seqclass.py end -->"
SPEC = ("sequenceinput in size={f}\nlstm lstm1 units={units} output=last\nfc fc outputs=classes\n"
        "softmax sm\n")


def split(a, tmp):
    """Per class, a seeded 90/10 split into tmp/train and tmp/test (copies);
    returns the classes and, for PyTorch, (path, class index) lists."""
    rnd = random.Random(a.seed)
    classes = sorted(d for d in os.listdir(a.data) if os.path.isdir(os.path.join(a.data, d))
                     and not d.startswith("."))
    parts = {"train": [], "test": []}
    for k, c in enumerate(classes):
        files = sorted(f for f in os.listdir(os.path.join(a.data, c)) if f.endswith(".csv"))
        rnd.shuffle(files)
        n_train = int(round(0.9 * len(files)))
        for part, chosen in (("train", files[:n_train]), ("test", files[n_train:])):
            d = os.path.join(tmp, part, c)
            os.makedirs(d)
            for f in chosen:
                shutil.copyfile(os.path.join(a.data, c, f), os.path.join(d, f))
                parts[part].append((os.path.join(d, f), k))
    return classes, parts


def load(files):
    import torch
    from pytorch_interop import read_csv_sequence
    xs = [read_csv_sequence(f)[0] for f, _ in files]
    return xs, torch.tensor([k for _, k in files])


class TorchSeq:
    def __init__(self, a, spec, n_classes, threads):
        import torch
        from pytorch_interop import DptSeqNet
        torch.set_num_threads(threads)
        torch.manual_seed(a.seed)
        self.a, self.torch = a, torch
        self.net = DptSeqNet(spec, n_classes=n_classes, dropout="torch")
        self.net.init_dptrain()
        self.opt = torch.optim.Adam(self.net.parameters(), lr=a.lr)

    def batch(self, xs, idx):
        t = self.torch
        seqs = [xs[i] for i in idx]
        lengths = t.tensor([len(s) for s in seqs])
        return t.nn.utils.rnn.pad_sequence(seqs, batch_first=True), lengths

    def epoch(self, xs, ys, rng):
        F = self.torch.nn.functional
        self.net.train()
        perm = rng.permutation(len(xs))
        t0 = time.perf_counter()
        for b0 in range(0, len(xs), self.a.batch):
            idx = perm[b0:b0 + self.a.batch]
            x, lengths = self.batch(xs, idx)
            z, _ = self.net(x, lengths, logits=True)
            loss = F.cross_entropy(z, ys[idx])
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        return time.perf_counter() - t0, float(loss)

    def accuracy(self, xs, ys):
        self.net.eval()
        correct = 0
        with self.torch.no_grad():
            for b0 in range(0, len(xs), 512):
                idx = list(range(b0, min(b0 + 512, len(xs))))
                x, lengths = self.batch(xs, idx)
                z, _ = self.net(x, lengths)
                correct += int((z.argmax(1) == ys[idx]).sum())
        return correct / len(xs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dptrain", default=os.path.join(sc.ROOT, "build", "dptrain"))
    ap.add_argument("--data", default=os.path.join(sc.ROOT, "data", "sequences", "names"))
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--units", type=int, default=100)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.005)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cores", default="1,2")
    ap.add_argument("--short", action="store_true", help="--epochs 3 --cores 2")
    ap.add_argument("--no-results", action="store_true", help="do not write bench/RESULTS.md")
    ap.add_argument("--omp-wait", choices=["passive", "active"], default="passive",
                    help="PyTorch's OpenMP waiting (OMP_WAIT_POLICY; default passive)")
    a = ap.parse_args()
    if a.short:
        a.epochs, a.cores = 3, "2"
    if not os.path.isdir(a.data):
        raise SystemExit("%s is missing: scripts/fetch-sequences writes it" % a.data)
    import numpy as np
    import torch
    from pytorch_interop import save_seq_model
    cores = [int(c) for c in a.cores.split(",") if c]
    tmp = tempfile.mkdtemp(prefix="dptrain-seqclass.")
    rows = []
    try:
        classes, parts = split(a, tmp)
        f = len(open(parts["train"][0][0]).readline().split(","))
        spec_text = SPEC.format(f=f, units=a.units)
        spec = os.path.join(tmp, "cls.net")
        with open(spec, "w") as fh:
            fh.write(spec_text)
        xtr, ytr = load(parts["train"])
        xte, yte = load(parts["test"])
        n_train = len(xtr)
        print("names: %d training, %d test sequences, classes %s, %d features" % (
            n_train, len(xte), ", ".join(classes), f), flush=True)
        for w in cores:
            with sc.pinned(w):
                out = os.path.join(tmp, "out%d" % w)
                stdout, wall, cpu = sc.run(
                    [a.dptrain, "train", "--net", spec, "--data", os.path.join(tmp, "train"),
                     "--test", os.path.join(tmp, "test"), "--epochs", str(a.epochs), "--batch",
                     str(a.batch), "--optimizer", "adam", "--lr", str(a.lr), "--seed", str(a.seed),
                     "--workers", str(w), "--threads", "1", "--device", "cpu", "--out", out,
                     "--overwrite", "--quiet"], "dptrain")
                acc = next(float(l.split()[2]) for l in stdout.splitlines()
                           if l.startswith("test accuracy: "))
                d_ep = sc.epoch_seconds(sc.metrics(out), a.epochs)
                print("  dptrain, %d core(s): accuracy %.4f, epochs %s s" % (
                    w, acc, ", ".join("%.2f" % s for s in d_ep)), flush=True)

                ts = TorchSeq(a, spec_text, len(classes), w)
                rng = np.random.default_rng(a.seed)
                t_ep = []
                for e in range(a.epochs):
                    secs, loss = ts.epoch(xtr, ytr, rng)
                    t_ep.append(secs)
                t_acc = ts.accuracy(xte, yte)
                tmodel = os.path.join(tmp, "torch%d.safetensors" % w)
                save_seq_model(tmodel, ts.net, {"task": "sequence_classification",
                                                "features": str(f), "classes": json.dumps(classes)})
                t_eval = json.loads(sc.run([a.dptrain, "eval", "--model", tmodel, "--data",
                                            os.path.join(tmp, "test"), "--json"],
                                           "dptrain eval")[0])
                print("  pytorch, %d thread(s): accuracy %.4f (dptrain eval of its model %.4f), "
                      "epochs %s s" % (w, t_acc, t_eval["accuracy"],
                                       ", ".join("%.2f" % s for s in t_ep)), flush=True)
                med = lambda v: sc.median(v[1:] or v)
                rows.append((w, acc, n_train / med(d_ep), d_ep, t_acc, t_eval["accuracy"],
                             n_train / med(t_ep), t_ep))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    L = ["## LSTM sequence classifier on first names (bench/seqclass.py)", "",
         "Written by `bench/seqclass.py%s` %s" % (" --short" if a.short else "",
                                                 sc.machine_line(torch.__version__)),
         "",
         "Network `sequenceinput size=%d / lstm units=%d output=last / fc outputs=classes / "
         "softmax`; data `%s` (%s), split 90/10 per class: %d training and %d test "
         "sequences. Recipe for both: %d epochs, minibatch %d, Adam, learning rate %g. "
         "sequences/s: training sequences over the median epoch time (epochs 2..%d)." % (
             f, a.units, os.path.relpath(a.data, sc.ROOT), ", ".join(classes), n_train,
             len(xte), a.epochs, a.batch, a.lr, a.epochs),
         "",
         "| cores | dptrain test accuracy | PyTorch test accuracy (by dptrain eval) | dptrain "
         "sequences/s | PyTorch sequences/s | dptrain / PyTorch |",
         "|---:|---:|---:|---:|---:|---:|"]
    for w, acc, dr, d_ep, t_acc, t_eacc, tr, t_ep in rows:
        L.append("| %d | %.4f | %.4f (%.4f) | %.0f | %.0f | **%.2fx** |" % (
            w, acc, t_acc, t_eacc, dr, tr, dr / tr))
    L += ["", "Seconds per epoch: " + "; ".join(
        "%d core(s): dptrain %s, PyTorch %s" % (w, ", ".join("%.2f" % s for s in d_ep),
                                                ", ".join("%.2f" % s for s in t_ep))
        for w, _, _, d_ep, _, _, _, t_ep in rows) + "."]
    if a.no_results:
        print("\n".join(L))
    else:
        sc.write_section(BEGIN, END, L)
    return 0


if __name__ == "__main__":
    sys.exit(main())
