#!/usr/bin/env python3
"""PyTorch's half of scripts/gpu-check's table: training-step throughput of
the networks dptrain measures (bench/gpu_bench.c, `dptrain train`), on the
same GPU, PyTorch at its best: cudnn.benchmark on and off, the whole step
(forward, loss, backward, optimizer) captured as one CUDA graph and
replayed, torch.compile where it runs (--compile), BF16 autocast for the
residual colour network.

    python3 bench/gpu_torch.py [--cases example,resnet,charlstm] [--compile]
                               [--seconds S] [--vocab V] [--device cuda|cpu]

Every step copies its minibatch from pinned host memory and brings the
loss to the host (.item()), as dptrain's step does. TF32 is off (full
float32, dptrain's default) except in the bf16 rows. One line per row:

    BENCH torch net=NAME batch=B variant=V rate=R unit=images/s|chars/s
          ms_per_step=M loss=L

and "SKIP torch net=NAME variant=V reason=..." where a variant cannot run
(torch.compile without a compiler, say). --device cpu runs the eager rows
on the CPU: a check of this script where there is no GPU.

The residual network is examples/nets/resnet-mini-32x32x3.net built by
examples/pytorch_interop.py's DptNet (the same layers and parameter count
as dptrain's); the character LSTM is dptrain's default language model
(one-hot input of V characters, lstm units=256, fc, softmax; Adam; 64
streams of 64 characters, the state carried between chunks).
"""
import argparse
import os
import sys
import time

import torch
import torch.nn as nn

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)


def timed(step, seconds, sync):
    """Warm up, then run step() for at least `seconds` and 20 steps."""
    for _ in range(10):
        step()
    sync()
    n, t0 = 0, time.perf_counter()
    while True:
        loss = step()
        n += 1
        el = time.perf_counter() - t0
        if el >= seconds and n >= 20:
            return n, el, loss


def graphed(model_step, static_inputs, warmup=3):
    """Capture model_step() (forward, loss, backward, optimizer) as one CUDA
    graph after warm-up on a side stream (PyTorch's whole-network recipe);
    returns replay() -> the static loss tensor."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(warmup):
            model_step()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        static_loss = model_step()

    def replay():
        g.replay()
        return static_loss

    return replay


def report(net, batch, variant, unit, per_step, n, el, loss):
    print(f"BENCH torch net={net} batch={batch} variant={variant} rate={per_step * n / el:.1f} "
          f"unit={unit} ms_per_step={1e3 * el / n:.4f} loss={float(loss):.4f}", flush=True)


def skip(net, variant, why):
    why = " ".join(str(why).split())[:200]
    print(f"SKIP torch net={net} variant={variant} reason={why}", flush=True)


def image_rows(name, make_net, shape, batches, args, dev, bf16=False, plain=True):
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    lossf = nn.CrossEntropyLoss()
    for B in batches:
        x = torch.rand(B, *shape)
        y = torch.randint(0, 10, (B,))
        if dev.type == "cuda":
            x, y = x.pin_memory(), y.pin_memory()
        # plain: also cuDNN's heuristics (cudnn.benchmark off); torch.compile
        # only where asked (--compile) and for the residual network (bf16).
        variants = (["eager"] if plain else []) + ["eager-benchmark"]
        if dev.type == "cuda":
            variants += ["cudagraph-benchmark"]
            if args.compile and bf16:
                variants += ["compile"]
            if bf16:
                variants += ["bf16-eager-benchmark", "bf16-cudagraph-benchmark"]
        for variant in variants:
            torch.backends.cudnn.benchmark = "benchmark" in variant or variant == "compile"
            half = variant.startswith("bf16")
            torch.manual_seed(0)
            net = make_net().to(dev)
            opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
            fwd = net
            if variant == "compile":
                try:
                    fwd = torch.compile(net)
                except Exception as e:  # no compiler, unsupported version
                    skip(name, variant, e)
                    continue
            # Static device copies, filled before any warm-up or capture
            # (garbage class indices would trip a device assertion).
            xd, yd = x.to(dev).clone(), y.to(dev).clone()

            def model_step():
                opt.zero_grad(set_to_none=True)
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=half):
                    loss = lossf(fwd(xd), yd)
                loss.backward()
                opt.step()
                return loss

            try:
                if "cudagraph" in variant:
                    replay = graphed(model_step, (xd, yd))
                else:
                    replay = model_step

                def step():
                    xd.copy_(x, non_blocking=True)
                    yd.copy_(y, non_blocking=True)
                    return replay().item()  # the loss reaches the host every step

                n, el, loss = timed(step, args.seconds, sync)
            except Exception as e:
                skip(name, variant, e)
                continue
            report(name, B, variant, "images/s", B, n, el, loss)


class CharLSTM(nn.Module):
    def __init__(self, vocab, hidden=256):
        super().__init__()
        self.lstm = nn.LSTM(vocab, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, vocab)

    def forward(self, x, state):
        h, state = self.lstm(x, state)
        return self.fc(h), state


def lstm_rows(args, dev):
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    B, T, V, H = 64, 64, args.vocab, 256
    idx = torch.randint(0, V, (B, T + 1))
    x = nn.functional.one_hot(idx[:, :T], V).float()
    y = idx[:, 1:].reshape(-1)
    if dev.type == "cuda":
        x, y = x.pin_memory(), y.pin_memory()
    variants = ["eager"] + (["cudagraph"] if dev.type == "cuda" else [])
    for variant in variants:
        torch.manual_seed(0)
        net = CharLSTM(V, H).to(dev)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3, capturable=variant == "cudagraph")
        lossf = nn.CrossEntropyLoss()
        xd, yd = x.to(dev).clone(), y.to(dev).clone()
        h = torch.zeros(1, B, H, device=dev)
        c = torch.zeros(1, B, H, device=dev)

        def model_step():
            opt.zero_grad(set_to_none=True)
            out, (h1, c1) = net(xd, (h, c))
            loss = lossf(out.reshape(-1, V), yd)
            loss.backward()
            opt.step()
            h.copy_(h1.detach())  # the state carried to the next chunk
            c.copy_(c1.detach())
            return loss

        try:
            replay = graphed(model_step, (xd, yd)) if variant == "cudagraph" else model_step

            def step():
                xd.copy_(x, non_blocking=True)
                yd.copy_(y, non_blocking=True)
                return replay().item()

            n, el, loss = timed(step, args.seconds, sync)
        except Exception as e:
            skip("charlstm", variant, e)
            continue
        report("charlstm", B, variant, "chars/s", B * T, n, el, loss)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default="example,resnet,charlstm")
    ap.add_argument("--compile", action="store_true", help="also torch.compile rows")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--vocab", type=int, default=96, help="characters of the LSTM's alphabet")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--batches", default="128,1024", help="the example network's minibatches")
    args = ap.parse_args()
    if not 2 <= args.vocab <= 4096 or not 0 <= args.seconds <= 600:
        sys.exit("gpu_torch.py: --vocab 2..4096, --seconds 0..600")
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("gpu_torch.py: no CUDA device: skipped")
        return 77
    torch.backends.cuda.matmul.allow_tf32 = False  # full float32, as dptrain's default
    torch.backends.cudnn.allow_tf32 = False
    name = torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu"
    print(f"torch {torch.__version__} on {name}", flush=True)
    cases = args.cases.split(",")
    if "example" in cases:
        def example():
            return nn.Sequential(
                nn.Conv2d(1, 20, 5), nn.BatchNorm2d(20), nn.ReLU(),
                nn.Conv2d(20, 20, 3, padding=1), nn.BatchNorm2d(20), nn.ReLU(),
                nn.Conv2d(20, 20, 3, padding=1), nn.BatchNorm2d(20), nn.ReLU(),
                nn.Flatten(), nn.Linear(20 * 24 * 24, 10))
        batches = [int(b) for b in args.batches.split(",") if b]
        image_rows("example", example, (1, 28, 28), batches, args, dev, plain=dev.type == "cpu")
    if "resnet" in cases:
        sys.path.insert(0, os.path.join(root, "examples"))
        from pytorch_interop import DptNet
        spec = open(os.path.join(root, "examples/nets/resnet-mini-32x32x3.net")).read()

        class Logits(nn.Module):  # the softmax is in the loss, as in dptrain's step
            def __init__(self):
                super().__init__()
                self.net = DptNet(spec, 10, dropout="torch")

            def forward(self, x):
                return self.net(x, logits=True)

        image_rows("resnet32", Logits, (3, 32, 32), [128], args, dev, bf16=True)
    if "charlstm" in cases:
        lstm_rows(args, dev)
    return 0


if __name__ == "__main__":
    sys.exit(main())
