#!/usr/bin/env python3
# %% [markdown]
# # Train Network in Parallel with Custom Training Loop, from Python
#
# MATLAB's example, step by step (DESIGN.md, "The MATLAB example's
# workflow"), with the dptrain Python package: a custom training loop whose
# every iteration is one data-parallel step over local workers (the
# library's threads), the progress queue delivered to a callback on this
# thread, and the held-out accuracy at the end. Each `# %%` is a notebook
# cell (Jupyter, VS Code).
#
#     PYTHONPATH=python python3 examples/python/matlab_workflow.py [DATA] \
#         [--epochs 20] [--workers N] [--model model.safetensors] [--fit]
#
# DATA defaults to data/digits (scripts/fetch-digits). --fit runs the same
# job as one call, dptrain.train(), as `dptrain train` does.

# %%
import argparse
import os
import sys
import time

import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "..", "python"))  # the package, uninstalled
import dptrain  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__)
ap.add_argument("data", nargs="?", default=os.path.join(here, "..", "..", "data", "digits"))
ap.add_argument("--epochs", type=int, default=20)
ap.add_argument("--batch", type=int, default=128)
ap.add_argument("--workers", type=int, default=0, help="default: one per CPU")
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--model", help="save the trained network here (safetensors)")
ap.add_argument("--fit", action="store_true", help="train with dptrain.train() instead")
args = ap.parse_args()
if not os.path.isdir(args.data):
    sys.exit("matlab_workflow.py: %s: no such folder (fetch it with scripts/fetch-digits)"
             % args.data)

# %% [markdown]
# ## 1. Load the data
# An image datastore over the digit folders (labels from the sub-folder
# names), split 90/10 per label at random.

# %%
digits = dptrain.Datastore.folder(args.data)
train_ds, test_ds = digits.split_each_label(0.9, seed=args.seed)
classes = digits.class_names
print("%d images, %d classes: %d to train, %d to test" % (len(digits), len(classes),
                                                         len(train_ds), len(test_ds)))

# %% [markdown]
# ## 2. Define the network
# Input 28x28x1 -> three conv/batch norm/ReLU blocks -> fully connected
# (one output per class) -> softmax, as MATLAB's layer array.

# %%
spec = """\
input      input size=28x28x1
conv       conv1 filter=5 filters=20
batchnorm  bn1
relu       relu1
conv       conv2 filter=3 filters=20 padding=1
batchnorm  bn2
relu       relu2
conv       conv3 filter=3 filters=20 padding=1
batchnorm  bn3
relu       relu3
fc         fc outputs=classes
softmax    softmax
"""

# %% [markdown]
# ## 3. The parallel pool
# No GPU here: a pool of CPU workers, one per core.

# %%
workers = args.workers or dptrain.cpu_count()
print("%d workers, minibatch %d" % (workers, args.batch))

if args.fit:
    # %% The whole job in one call (what `dptrain train` runs).
    def show(r):
        if r["end_of_epoch"]:
            print("epoch %2d/%d  iteration %5d  loss %.4f  elapsed %.1f s"
                  % (r["epoch"], r["epochs"], r["iteration"], r["loss"], r["elapsed_s"]))
    model, history = dptrain.train(train_ds, test=test_ds, net=spec, epochs=args.epochs,
                                   batch=args.batch, workers=workers, seed=args.seed,
                                   progress=show)
    acc, _ = dptrain.evaluate(model, test_ds)
    print("test accuracy: %.4f (%d images)" % (acc, len(test_ds)))
    if args.model:
        model.save(args.model)
    sys.exit(0)

# %% [markdown]
# ## 4. Training options and the replicas
# 20 epochs, minibatch 128, SGD with momentum 0.9 and learning rate 0.01.
# Every worker holds a replica of the network (same seed: same initial
# learnables); each iteration worker j takes floor(128/N) images (the
# first 128 mod N workers one more).

# %%
trainer = dptrain.Parallel(spec, n_classes=len(classes), batch=args.batch, seed=args.seed,
                           workers=workers, optimizer="sgdm", lr=0.01, momentum=0.9)
shape = trainer.net.input_shape
x_train = train_ds.read(np.arange(len(train_ds)), shape)  # [N, 1, 28, 28] in [0, 1]
y_train = train_ds.labels

# %% [markdown]
# ## 5-6. The custom training loop, with progress sent to this thread
# Per epoch: shuffle, then iterate over full minibatches. Each step
# combines the workers' loss, gradients and batch-norm state (weights
# m_j / M) and applies one SGDM update on every worker. Worker 1's record
# goes into the progress queue; the callback (MATLAB's afterEach) runs
# here and keeps the loss curve.

# %%
curve = []


def after_each(r):
    curve.append((r["iteration"], r["loss"]))
    print("epoch %2d/%d  iteration %5d  loss %.4f  elapsed %.1f s"
          % (r["epoch"], r["epochs"], r["iteration"], r["loss"], r["elapsed_s"]))


queue = dptrain.ProgressQueue(after_each)
rng = np.random.default_rng(args.seed)
iteration, start = 0, time.time()
per_epoch = len(x_train) // args.batch
for epoch in range(1, args.epochs + 1):
    order = rng.permutation(len(x_train))
    for b in range(per_epoch):
        idx = order[b * args.batch:(b + 1) * args.batch]
        iteration += 1
        loss = trainer.step(x_train[idx], y_train[idx], epoch, iteration)
    queue.send(epoch=epoch, epochs=args.epochs, iteration=iteration, loss=loss,
               elapsed_s=time.time() - start, end_of_epoch=1)
    queue.deliver()
queue.close()

try:  # the plot of the original, when matplotlib is here
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    it, ls = zip(*curve)
    plt.plot(it, ls)
    plt.xlabel("iteration"), plt.ylabel("loss")
    plt.title("epoch %d, elapsed %.1f s" % (args.epochs, time.time() - start))
    plt.savefig("loss.png")
    print("loss plot: loss.png")
except ImportError:
    pass

# %% [markdown]
# ## 7. Test the network
# Classify the held-out images with the trained network (any replica:
# they are identical) and report the accuracy (the original: 0.896).

# %%
model = dptrain.Model(trainer.net, classes)
probs, predicted = dptrain.predict(model, test_ds.read(np.arange(len(test_ds)), shape))
acc = float(np.mean(predicted == test_ds.labels))
print("test accuracy: %.4f (%d images)" % (acc, len(test_ds)))
if args.model:
    model.save(args.model)
    print("model saved to %s" % args.model)
trainer.close()
for d in (digits, train_ds, test_ds):
    d.close()
