#!/usr/bin/python3
"""PyTorch's half of bench/rnn.sh: torch.nn.LSTM / torch.nn.GRU forward +
backward (BPTT) on the character language model's shapes, the same work
bench/rnn_bench.c times for dptrain (dpt_rnn_forward + dpt_rnn_backward).

    /usr/bin/python3 bench/rnn_torch.py [--kind lstm|gru] [--batch 64] [--seq 64]
        [--features 89] [--units 256] [--threads 1] [--iters 5] [--rounds 7] [--json]

x is one-hot [batch, seq, features] (batch_first, as dptrain lays it out),
the gradient of every output step is random; one iteration is
out = rnn(x, state); out.backward(dy) with the weight gradients cleared
(set to None) before each, as an optimizer step would. Prints the median
over the rounds of ms per iteration and characters/s (batch * seq / time),
and the process's CPU time per iteration over the rounds.
"""

import argparse
import json
import statistics
import time

import torch


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kind", choices=["lstm", "gru"], default="lstm")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--features", type=int, default=89)
    ap.add_argument("--units", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    mk = torch.nn.LSTM if a.kind == "lstm" else torch.nn.GRU
    rnn = mk(a.features, a.units, batch_first=True)
    idx = torch.randint(a.features, (a.batch, a.seq))
    x = torch.nn.functional.one_hot(idx, a.features).float()
    dy = torch.randn(a.batch, a.seq, a.units)
    h0 = torch.zeros(1, a.batch, a.units)
    state = (h0, h0.clone()) if a.kind == "lstm" else h0

    def step():
        for p in rnn.parameters():
            p.grad = None
        out, _ = rnn(x, state)
        out.backward(dy)

    for _ in range(3):
        step()
    times = []
    c0 = time.process_time()
    for _ in range(a.rounds):
        t0 = time.perf_counter()
        for _ in range(a.iters):
            step()
        times.append((time.perf_counter() - t0) / a.iters)
    cpu_ms = (time.process_time() - c0) * 1e3 / (a.rounds * a.iters)
    ms = statistics.median(times) * 1e3
    cps = a.batch * a.seq / (ms / 1e3)
    if a.json:
        print(json.dumps({"impl": "torch", "kind": a.kind, "threads": a.threads, "batch": a.batch,
                          "ms": ms, "chars_per_s": cps, "cpu_ms": cpu_ms,
                          "torch": torch.__version__}))
    else:
        print(f"torch {torch.__version__} {a.kind} batch {a.batch} seq {a.seq} F {a.features} "
              f"H {a.units} threads {a.threads}: {ms:.2f} ms/iter, {cps:.0f} chars/s (median of "
              f"{a.rounds}); CPU {cpu_ms:.2f} ms/iter")


if __name__ == "__main__":
    main()
