#!/usr/bin/python3
"""The character language model, dptrain against PyTorch side by side: the
same network (sequenceinput size=vocab, lstm units=256, fc outputs=vocab,
softmax), the same data and the same recipe (Adam, minibatch 64 streams,
sequence length 64, the state carried from chunk to chunk and reset at
each epoch's start, fc Glorot-uniform and the LSTM PyTorch's uniform
+-1/sqrt(H) at the start).

    /usr/bin/python3 bench/charlm.py                 # Moby Dick, 5 epochs, 1 and 2 cores (~20 min)
    /usr/bin/python3 bench/charlm.py --short         # a few minutes: 150,000 characters, 1 epoch
    /usr/bin/python3 bench/charlm.py --help

The text (scripts/fetch-text: data/text/moby-dick.txt, or --chars N of its
start) is split as dptrain splits it: the last 10% of the characters are
held out. Both sides train on the first 90% cut into 64 parallel streams.
Reported:

- held-out bits per character after the same number of epochs: the
  PyTorch-trained network is written as a dptrain model file (its tables
  are the same tensors) and both models are scored by the same `dptrain
  eval --json` on the held-out text; PyTorch's own figure over the same
  streams is printed beside it as a check.
- characters/s on 1 and 2 cores: `dptrain train --workers W --threads 1`
  against PyTorch in one process with torch.set_num_threads(W); the median
  of --rounds alternating rounds of --speed-iterations iterations each
  (dptrain's rate from its metrics.csv after iteration 5, PyTorch's timed
  from iteration 5), both sides pinned to the same W CPUs, and the median
  epoch time of the full runs.

PyTorch's side is its best on a CPU: one torch.nn.LSTM(batch_first=True)
call per chunk of 64 steps (its fused C++ loop over time, no Python loop
per step), one-hot inputs, Adam, the state detached between chunks
(truncated backpropagation through time as dptrain does). The table goes
into bench/RESULTS.md between the markers below.
"""
import argparse
import json
import math
import os
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

BEGIN, END = "<!-- bench/charlm.py begin -->", "<!-- bench/charlm.py end -->"
SPEC = "sequenceinput in size=vocab\nlstm lstm1 units={units}\nfc fc outputs=vocab\nsoftmax sm\n"


def split_text(a, tmp):
    text = open(a.text, encoding="utf-8").read()
    if a.chars:
        text = text[:a.chars]
    n_held = int(math.floor(0.1 * len(text) + 0.5))
    train, held = text[:-n_held], text[-n_held:]
    vocab = sorted(set(train))
    missing = sorted(set(held) - set(vocab))
    if missing:
        raise SystemExit("the held-out text has characters the training text lacks: %r" % missing)
    paths = {}
    for name, t in (("train", train), ("heldout", held)):
        paths[name] = os.path.join(tmp, name + ".txt")
        with open(paths[name], "w", encoding="utf-8") as f:
            f.write(t)
    return train, held, vocab, paths


def chars_per_epoch(n, a):
    """Training characters one epoch feeds: B streams of floor(n / B), each
    read in floor((L - 1) / T) chunks of T."""
    L = n // a.batch
    return (L - 1) // a.seq_len * a.seq_len * a.batch


def dptrain_train(a, data, test, workers, out, epochs):
    cmd = [a.dptrain, "train", "--net", a.spec, "--data", data, "--test", test,
           "--epochs", str(epochs), "--batch", str(a.batch), "--seq-len", str(a.seq_len),
           "--optimizer", "adam", "--lr", str(a.lr), "--seed", str(a.seed),
           "--workers", str(workers), "--threads", "1", "--device", "cpu",
           "--out", out, "--overwrite", "--quiet"]
    _, wall, cpu = sc.run(cmd, "dptrain")
    return sc.metrics(out), wall, cpu


def dptrain_eval(a, model, text):
    out, _, _ = sc.run([a.dptrain, "eval", "--model", model, "--data", text, "--json"],
                       "dptrain eval")
    return json.loads(out)


class TorchLM:
    """The same network and recipe in PyTorch."""

    def __init__(self, a, vocab, threads):
        import torch
        from pytorch_interop import DptSeqNet
        torch.set_num_threads(threads)
        torch.manual_seed(a.seed)
        self.a, self.V, self.torch = a, len(vocab), torch
        self.index = {c: j for j, c in enumerate(vocab)}
        self.net = DptSeqNet(open(a.spec).read(), n_vocab=self.V, dropout="torch")
        self.net.init_dptrain()
        self.opt = torch.optim.Adam(self.net.parameters(), lr=a.lr)

    def streams(self, text):
        t = self.torch
        idx = t.tensor([self.index[c] for c in text], dtype=t.int64)
        L = len(idx) // self.a.batch
        return idx[:L * self.a.batch].reshape(self.a.batch, L), (L - 1) // self.a.seq_len

    def epoch(self, data, n_chunks, iterations=None, start_timer=5):
        """One epoch (or `iterations` chunks of it) from zero state: seconds
        of the whole epoch and of the chunks from start_timer on."""
        t, F, T, V = self.torch, self.torch.nn.functional, self.a.seq_len, self.V
        self.net.train()
        state, t0, t1 = None, time.perf_counter(), None
        n = n_chunks if iterations is None else min(iterations, n_chunks)
        for k in range(n):
            if k == start_timer:
                t1 = time.perf_counter()
            x = F.one_hot(data[:, k * T:(k + 1) * T], V).float()
            y = data[:, k * T + 1:(k + 1) * T + 1]
            z, state = self.net(x, state=state, logits=True)
            state = {name: tuple(s.detach() for s in v) if isinstance(v, tuple) else v.detach()
                     for name, v in state.items()}
            loss = F.cross_entropy(z.reshape(-1, V), y.reshape(-1))
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        end = time.perf_counter()
        timed = n - start_timer if t1 is not None else n
        return end - t0, (end - (t1 or t0)), timed, float(loss)


def speed_rounds(a, train, vocab, tmp, workers):
    """Characters/s of both sides in alternating rounds of a.speed_iterations
    iterations on the same text."""
    n = a.batch * (a.seq_len * a.speed_iterations + 1)
    if n > len(train):
        raise SystemExit("--speed-iterations %d needs %d training characters; the text has %d"
                         % (a.speed_iterations, n, len(train)))
    # The vocabulary must be the whole text's so the network is the same size.
    sub = train[:n]
    extra = "".join(c for c in vocab if c not in set(sub))
    path, test = os.path.join(tmp, "speed.txt"), os.path.join(tmp, "speed-test.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write(extra + sub)
    with open(test, "w", encoding="utf-8") as f:
        f.write(sub[:2000])
    tlm = TorchLM(a, vocab, workers)
    data, n_chunks = tlm.streams(extra + sub)
    d, t = [], []
    per_it = a.batch * a.seq_len
    for r in range(a.rounds):
        for side in ("dt" if r % 2 == 0 else "td"):
            if side == "d":
                rows, _, _ = dptrain_train(a, path, test, workers, os.path.join(tmp, "speed"), 1)
                d.append(sc.rate_between(rows, 5, per_it))
            else:
                _, secs, timed, _ = tlm.epoch(data, n_chunks)
                t.append(timed * per_it / secs)
        print("  %d core(s), round %d: dptrain %.0f characters/s, PyTorch %.0f" % (
            workers, r + 1, d[-1], t[-1]), flush=True)
    return d, t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dptrain", default=os.path.join(sc.ROOT, "build", "dptrain"))
    ap.add_argument("--text", default=os.path.join(sc.ROOT, "data", "text", "moby-dick.txt"))
    ap.add_argument("--chars", type=int, default=0, help="use the first N characters (0: all)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--units", type=int, default=256)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.002)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cores", default="1,2", help="core counts for the speed rounds")
    ap.add_argument("--rounds", type=int, default=3, help="alternating speed rounds per count")
    ap.add_argument("--speed-iterations", type=int, default=40)
    ap.add_argument("--short", action="store_true",
                    help="a run of minutes: --chars 150000 --epochs 1 --speed-iterations 20")
    ap.add_argument("--no-results", action="store_true", help="do not write bench/RESULTS.md")
    ap.add_argument("--omp-wait", choices=["passive", "active"], default="passive",
                    help="PyTorch's OpenMP waiting (OMP_WAIT_POLICY; default passive)")
    a = ap.parse_args()
    if a.short:
        a.chars, a.epochs, a.speed_iterations = a.chars or 150000, 1, 20
    if not os.path.exists(a.text):
        raise SystemExit("%s is missing: scripts/fetch-text writes it" % a.text)
    cores = [int(c) for c in a.cores.split(",") if c]
    import torch
    tmp = tempfile.mkdtemp(prefix="dptrain-charlm.")
    try:
        a.spec = os.path.join(tmp, "lm.net")
        with open(a.spec, "w") as f:
            f.write(SPEC.format(units=a.units))
        train, held, vocab, paths = split_text(a, tmp)
        per_epoch = chars_per_epoch(len(train), a)
        W = max(cores)
        print("text: %d training characters (%d per epoch), %d held out, vocabulary %d" % (
            len(train), per_epoch, len(held), len(vocab)), flush=True)

        # Quality: the same epochs on both sides, scored by the same eval.
        out = os.path.join(tmp, "dptrain")
        rows, d_wall, d_cpu = dptrain_train(a, paths["train"], paths["heldout"], W, out,
                                            a.epochs)
        d_epochs = sc.epoch_seconds(rows, a.epochs)
        d_eval = dptrain_eval(a, os.path.join(out, "model.safetensors"), paths["heldout"])
        d_bpc_epochs = [r.get("test_bpc") for r in rows if r.get("test_bpc") is not None]
        print("  dptrain: epochs %s s, held-out bpc %.4f" % (
            ", ".join("%.1f" % s for s in d_epochs), d_eval["bits_per_character"]), flush=True)

        from pytorch_interop import save_seq_model, text_streams_bpc
        tlm = TorchLM(a, vocab, W)
        data, n_chunks = tlm.streams(train)
        t_epochs = []
        for e in range(a.epochs):
            secs, _, _, loss = tlm.epoch(data, n_chunks)
            t_epochs.append(secs)
            print("  pytorch epoch %d: %.1f s, last loss %.4f" % (e + 1, secs, loss), flush=True)
        tlm.net.eval()
        tmodel = os.path.join(tmp, "torch.safetensors")
        save_seq_model(tmodel, tlm.net, {"task": "language_model", "seq_len": str(a.seq_len),
                                         "vocab": json.dumps([ord(c) for c in vocab])})
        t_eval = dptrain_eval(a, tmodel, paths["heldout"])
        t_own = text_streams_bpc(tlm.net, [tlm.index[c] for c in held], len(vocab),
                                 int(t_eval["streams"]), int(t_eval["seq_len"]))
        print("  pytorch: held-out bpc %.4f by dptrain eval, %.4f by PyTorch itself" % (
            t_eval["bits_per_character"], t_own), flush=True)
        sample = sc.run([a.dptrain, "generate", "--model", os.path.join(out, "model.safetensors"),
                         "--prime", "The whale", "--length", "300", "--seed", "1",
                         "--temperature", "0.8"], "dptrain generate")[0]

        speed = {}
        for c in cores:
            with sc.pinned(c):
                speed[c] = speed_rounds(a, train, vocab, tmp, c)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    db, tb = d_eval["bits_per_character"], t_eval["bits_per_character"]
    dr, tr = per_epoch / sc.median(d_epochs), per_epoch / sc.median(t_epochs)
    L = ["## Character language model (bench/charlm.py)", "",
         "Written by `bench/charlm.py%s` %s" % (" --short" if a.short else "",
                                               sc.machine_line(torch.__version__)),
         "",
         "Network `sequenceinput size=vocab / lstm units=%d / fc outputs=vocab / softmax`; "
         "text `%s`%s: %d training characters (%d fed per epoch: %d streams x chunks of %d), "
         "%d held out (the last 10%%), vocabulary %d. Recipe for both: %d epoch(s), Adam, "
         "learning rate %g, state carried between chunks and reset each epoch. Held-out bits "
         "per character: both models scored by `dptrain eval` (%s streams, chunks of %s)." % (
             a.units, os.path.relpath(a.text, sc.ROOT),
             " (first %d characters)" % a.chars if a.chars else "", len(train), per_epoch,
             a.batch, a.seq_len, len(held), len(vocab), a.epochs, a.lr, d_eval["streams"],
             d_eval["seq_len"]),
         "",
         "| | held-out bits per character | perplexity | seconds per epoch (%d cores) | "
         "characters/s (%d cores) |" % (W, W),
         "|---|---:|---:|---|---:|",
         "| dptrain (`--workers %d --threads 1`) | %.4f | %.2f | %s | %.0f |" % (
             W, db, d_eval["perplexity"], ", ".join("%.1f" % s for s in d_epochs), dr),
         "| PyTorch (`torch.set_num_threads(%d)`) | %.4f | %.2f | %s | %.0f |" % (
             W, tb, t_eval["perplexity"], ", ".join("%.1f" % s for s in t_epochs), tr),
         "",
         "dptrain's held-out bits per character after each epoch (metrics.csv): %s; PyTorch's "
         "model scored by PyTorch itself over the same streams: %.4f." % (
             ", ".join("%.4f" % v for v in d_bpc_epochs) or "-", t_own),
         "",
         "Speed in alternating rounds of %d iterations (%d characters each), both sides pinned "
         "to the same CPUs, median of %d:" % (
             a.speed_iterations, a.batch * a.seq_len, a.rounds),
         "",
         "| cores | dptrain characters/s | PyTorch characters/s | dptrain / PyTorch |",
         "|---:|---:|---:|---:|"]
    for c in cores:
        dm, tm = sc.median(speed[c][0]), sc.median(speed[c][1])
        L.append("| %d | %.0f (%s) | %.0f (%s) | **%.2fx** |" % (
            c, dm, ", ".join("%.0f" % v for v in speed[c][0]), tm,
            ", ".join("%.0f" % v for v in speed[c][1]), dm / tm))
    L += ["", "Bits per character, dptrain minus PyTorch: %+.4f (lower is better)." % (db - tb),
          "", "A sample (`dptrain generate --prime \"The whale\" --length 300 --seed 1 "
          "--temperature 0.8` on dptrain's model):", "", "```", sample.rstrip("\n"), "```"]
    if a.no_results:
        print("\n".join(L))
    else:
        sc.write_section(BEGIN, END, L)
    return 0


if __name__ == "__main__":
    sys.exit(main())
