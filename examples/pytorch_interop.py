#!/usr/bin/python3
"""Load a dptrain model.safetensors into the same network in PyTorch and check
that its predictions match `dptrain predict` on a folder of images.

    /usr/bin/python3 examples/pytorch_interop.py out/model.safetensors data/digits [N]

Needs Debian's python3-torch and python3-pil. The model file is read with
json and struct alone (no safetensors package), the network is rebuilt from
the spec in its metadata, the PNGs are decoded with PIL, and the labels are
compared with what `dptrain predict` prints for the same files.
"""
import json
import os
import struct
import subprocess
import sys

import torch
import torch.nn as nn


def load_safetensors(path):
    data = open(path, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    tensors = {}
    for name, t in header.items():
        a, b = t["data_offsets"]
        assert t["dtype"] == "F32", name
        vals = struct.unpack("<%df" % ((b - a) // 4), data[base + a:base + b])
        tensors[name] = torch.tensor(vals, dtype=torch.float32).reshape(t["shape"])
    return tensors, meta


def build(spec, tensors):
    """The dptrain spec as a torch.nn.Sequential with the file's weights."""
    layers, c = [], None
    for line in spec.splitlines():
        tok = line.split("#")[0].split()
        if not tok:
            continue
        kind, name, kv = tok[0], tok[1], dict(t.split("=", 1) for t in tok[2:])
        if kind == "input":
            h, w, c = map(int, kv["size"].split("x"))
        elif kind == "conv":
            wt = tensors[name + "/Weights"]
            m = nn.Conv2d(wt.shape[1], wt.shape[0], tuple(wt.shape[2:]), stride=int(kv.get("stride", 1)),
                          padding=int(kv.get("padding", 0)), bias=name + "/Bias" in tensors)
            m.weight.data.copy_(wt)
            if m.bias is not None:
                m.bias.data.copy_(tensors[name + "/Bias"])
            layers.append(m)
        elif kind == "batchnorm":
            m = nn.BatchNorm2d(tensors[name + "/Scale"].numel(), eps=float(kv.get("epsilon", 1e-5)))
            m.weight.data.copy_(tensors[name + "/Scale"])
            m.bias.data.copy_(tensors[name + "/Offset"])
            m.running_mean.copy_(tensors[name + "/TrainedMean"])
            m.running_var.copy_(tensors[name + "/TrainedVariance"])
            layers.append(m)
        elif kind == "relu":
            layers.append(nn.ReLU())
        elif kind == "fc":
            wt = tensors[name + "/Weights"]
            m = nn.Linear(wt.shape[1], wt.shape[0])
            m.weight.data.copy_(wt)
            m.bias.data.copy_(tensors[name + "/Bias"])
            layers += [nn.Flatten(), m]
        elif kind == "softmax":
            layers.append(nn.Softmax(dim=1))
        else:
            raise SystemExit("unknown layer type " + kind)
    return nn.Sequential(*layers).eval()


def main():
    model, folder = sys.argv[1], sys.argv[2]
    limit = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    dptrain = os.environ.get("DPTRAIN", os.path.join(os.path.dirname(__file__), "..", "build", "dptrain"))
    tensors, meta = load_safetensors(model)
    net = build(meta["spec"], tensors)
    classes = json.loads(meta["classes"])
    files = []
    for cls in sorted(os.listdir(folder)):
        d = os.path.join(folder, cls)
        if os.path.isdir(d):
            files += [os.path.join(d, f) for f in sorted(os.listdir(d)) if f.endswith(".png")][: max(1, limit // 10)]
    out = subprocess.run([dptrain, "predict", "--model", model] + files, check=True, capture_output=True, text=True)
    theirs = {line.split("\t")[0]: line.split("\t")[1] for line in out.stdout.splitlines()}
    try:
        from PIL import Image
    except ImportError:
        raise SystemExit("python3-pil is needed to decode the PNGs for PyTorch (apt-get install python3-pil)")
    agree = 0
    for f in files:
        img = torch.tensor(list(Image.open(f).convert("L").getdata()), dtype=torch.float32).reshape(1, 1, 28, 28) / 255
        ours = classes[int(net(img).argmax())]
        agree += ours == theirs[f]
    print(f"{agree} of {len(files)} predictions agree between PyTorch and dptrain predict")
    sys.exit(0 if agree == len(files) else 1)


if __name__ == "__main__":
    main()
