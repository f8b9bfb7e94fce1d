#!/usr/bin/python3
"""The example network and SGDM in PyTorch: the reference dptrain is measured
against (bench/run calls this; tests never do).

  torch_step.py step  --batch B --threads T [--ranks R] [--steps S] [--rounds K]
                      [--net SPEC]
  torch_step.py epoch --data DIR --batch B --threads T [--ranks R] [--epochs E]

step:  training steps on random inputs (seed 0), the same network, loss and
       optimizer as dptrain's (conv 5x5x20, BN, ReLU, 2 x [conv 3x3x20 pad 1,
       BN, ReLU], fc 10, softmax cross-entropy, SGD lr 0.01 momentum 0.9);
       K rounds of S steps after 3 warm-up steps; prints one JSON line with
       the median images/s over the rounds.
epoch: a whole epoch over an image folder (decoded once into memory, as
       `dptrain train` does), shuffled, minibatch B, split 90/10 per label
       like dptrain; prints the median images/s over E epochs.
--net SPEC: step on the network of a dptrain spec file instead, rebuilt in
       PyTorch by examples/pytorch_interop.py (10 classes; random inputs of
       the spec's input shape): the suite of bench/suite.py.
--ranks R > 1: R processes under torch.distributed (gloo, DDP), each taking
       B/R of every minibatch, each with T threads.
Peak RSS (ru_maxrss) is reported per process: "rss_mb" is rank 0's,
"rss_mb_sum" the sum over ranks.
"""
import argparse
import json
import os
import resource
import sys
import tempfile
import time


def build(torch):
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 20, 5), nn.BatchNorm2d(20), nn.ReLU(),
        nn.Conv2d(20, 20, 3, padding=1), nn.BatchNorm2d(20), nn.ReLU(),
        nn.Conv2d(20, 20, 3, padding=1), nn.BatchNorm2d(20), nn.ReLU(),
        nn.Flatten(), nn.Linear(20 * 24 * 24, 10))


class SpecNet:
    """A dptrain spec file as a torch module returning logits (the loss is
    softmax cross-entropy on both sides), via examples/pytorch_interop.py."""

    @staticmethod
    def build(torch, path):
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                        "examples"))
        import pytorch_interop

        class Logits(pytorch_interop.DptNet):
            def forward(self, x):
                return super().forward(x, logits=True)

        with open(path) as f:
            net = Logits(f.read(), n_classes=10, dropout="torch")
        return net, net.input_shape()


def load_folder(path, np):
    """Images of <path>/<label>/*.png as float32 [n,1,28,28] in [0,1]."""
    from PIL import Image
    xs, ys = [], []
    labels = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))
    for k, lab in enumerate(labels):
        d = os.path.join(path, lab)
        for f in sorted(os.listdir(d)):
            with Image.open(os.path.join(d, f)) as im:
                xs.append(np.asarray(im.convert("L").resize((28, 28)), dtype=np.float32) / 255.0)
            ys.append(k)
    return np.stack(xs)[:, None], np.array(ys, dtype=np.int64)


def worker(rank, args, out_path):
    import numpy as np
    import torch
    torch.set_num_threads(args.threads)
    if args.ranks > 1:
        import torch.distributed as dist
        dist.init_process_group("gloo", init_method="file://" + args.rendezvous,
                                rank=rank, world_size=args.ranks)
    torch.manual_seed(0)
    if args.net:
        net, in_shape = SpecNet.build(torch, args.net)
    else:
        net, in_shape = build(torch), (1, 28, 28)
    model = net
    if args.ranks > 1:
        model = torch.nn.parallel.DistributedDataParallel(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    share = args.batch // args.ranks + (1 if rank < args.batch % args.ranks else 0)

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss

    rates = []
    if args.mode == "step":
        g = torch.Generator().manual_seed(rank)
        x = torch.randn(share, *in_shape, generator=g)
        y = torch.randint(0, 10, (share,), generator=g)
        for _ in range(3):
            step(x, y)
        for _ in range(args.rounds):
            if args.ranks > 1:
                torch.distributed.barrier()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(x, y)
            if args.ranks > 1:
                torch.distributed.barrier()
            rates.append(args.batch * args.steps / (time.perf_counter() - t0))
    else:
        xs, ys = load_folder(args.data, np)
        rng = np.random.default_rng(0)
        train = []
        for k in np.unique(ys):  # 90/10 per label, as dptrain's default split
            idx = np.flatnonzero(ys == k)
            rng.shuffle(idx)
            train.append(idx[: int(round(0.9 * len(idx)))])
        train = np.concatenate(train)
        X, Y = torch.from_numpy(xs[train]), torch.from_numpy(ys[train])
        n = len(train)
        for e in range(args.epochs):
            perm = torch.from_numpy(np.random.default_rng(e + 1).permutation(n))
            # Each rank takes its block of every minibatch; iterations = full batches.
            if args.ranks > 1:
                torch.distributed.barrier()
            t0 = time.perf_counter()
            seen = 0
            for b0 in range(0, n - args.batch + 1, args.batch):
                lo = b0 + sum(args.batch // args.ranks + (1 if r < args.batch % args.ranks else 0)
                              for r in range(rank))
                idx = perm[lo:lo + share]
                step(X[idx], Y[idx])
                seen += args.batch
            if args.ranks > 1:
                torch.distributed.barrier()
            rates.append(seen / (time.perf_counter() - t0))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    with open(out_path + ".%d" % rank, "w") as f:
        json.dump({"rates": rates, "rss_mb": rss}, f)
    if args.ranks > 1:
        torch.distributed.destroy_process_group()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["step", "epoch"])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ranks", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--data", default="data/digits")
    ap.add_argument("--net", default=None, help="a dptrain spec file (step mode)")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="torch_step.")
    out = os.path.join(tmp, "result")
    args.rendezvous = os.path.join(tmp, "rendezvous")
    if args.ranks == 1:
        worker(0, args, out)
    else:
        import torch.multiprocessing as mp
        mp.spawn(worker, args=(args, out), nprocs=args.ranks, join=True)
    res = [json.load(open(out + ".%d" % r)) for r in range(args.ranks)]
    rates = sorted(res[0]["rates"])
    import torch
    print(json.dumps({
        "impl": "pytorch", "torch": torch.__version__, "mode": args.mode, "batch": args.batch,
        "threads": args.threads, "ranks": args.ranks, "net": args.net,
        "images_per_s": rates[len(rates) // 2], "rounds": res[0]["rates"],
        "rss_mb": round(res[0]["rss_mb"], 1),
        "rss_mb_sum": round(sum(r["rss_mb"] for r in res), 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
