#!/usr/bin/python3
"""Rebuild a dptrain model in PyTorch from its model file alone, and check that
its predictions match `dptrain predict` (or, for a language model, `dptrain
eval` and `dptrain generate`).

    /usr/bin/python3 examples/pytorch_interop.py MODEL DATA [N]

MODEL is a model.safetensors written by `dptrain train`. DATA is
- for an image network: an image folder (one sub-folder per class; up to
  N/classes images of each are used) or an IDX images file such as
  Fashion-MNIST's t10k-images-idx3-ubyte.gz (its first N images, written out
  as PGM files for `dptrain predict`); N defaults to 200;
- for a sequence classifier: a sequence folder (class sub-folders of .csv
  files; up to N/classes files of each, compared with `dptrain predict`);
- for a language model: a text file: the bits per character of its first N
  characters (default 20000) against `dptrain eval --json` over the same
  streams and chunks, and 100 characters of `dptrain generate --seed 7`
  sampled again from PyTorch's probabilities with dptrain's counter-based
  draws (the same text when the two agree).
DPTRAIN names the dptrain binary (default: build/dptrain).

Needs Debian's python3-torch and python3-numpy (and python3-pil for PNG or
JPEG folders). The model file is read with json and struct alone (no
safetensors package); the network is rebuilt from the spec in its metadata:
every layer type (input, conv with stride/padding/dilation/groups/bias,
batchnorm, relu, leakyrelu, sigmoid, tanh, maxpool, avgpool, globalavgpool,
add, concat, dropout, fc, softmax) and the `from=` wiring of a layer graph;
for sequence networks sequenceinput, lstm and gru (torch.nn.LSTM/GRU,
batch_first, weight_ih_l0 = <layer>/InputWeights, weight_hh_l0 =
<layer>/RecurrentWeights, bias_ih_l0 = <layer>/InputBias, bias_hh_l0 =
<layer>/RecurrentBias) with fc, softmax, dropout, activations, add and
concat per time step.

The same builders serve the tests and the benchmarks: `DptNet(spec,
classes)` is an image network as a torch.nn.Module (NCHW), `DptSeqNet(spec,
n_classes, n_vocab)` a sequence network ([N, T, F], with lengths and carried
state), `net.tables()` maps dptrain's table names ("conv1/Weights",
"lstm1/InputWeights", ...) to their parameters and buffers,
`save_seq_model` writes a PyTorch-trained sequence network as a dptrain
model file, and `dropout_keep_mask` reproduces dptrain's dropout masks.
"""
import gzip
import json
import math
import os
import struct
import subprocess
import sys
import tempfile

import torch
import torch.nn as nn
import torch.nn.functional as F

# ---- randomness independent of the worker count (dptrain's rng key) ----------

M64 = (1 << 64) - 1


def mix64(z):
    """splitmix64's finaliser on a Python int (mod 2^64)."""
    z = (z + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def rng_key(seed, epoch, iteration, stream, obs):
    k = mix64(seed & M64)
    for v in (epoch, iteration, stream, obs):
        k = mix64(k ^ (v & M64))
    return k


def uniforms(key, n):
    """u(j) = (mix64(key ^ j) >> 40) * 2^-24 for j = 0..n-1, as float64."""
    import numpy as np
    with np.errstate(over="ignore"):
        z = np.arange(n, dtype=np.uint64) ^ np.uint64(key)
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float64) * 2.0 ** -24


def dropout_keep_mask(p, seed, epoch, iteration, stream, first_obs, n, numel):
    """dptrain's dropout mask, [n, numel] booleans (True = kept): observation i
    of the minibatch is obs = first_obs + i, element j is dropped when
    u(j) < p with the key of (seed, epoch, iteration, stream = the layer's
    node index, obs)."""
    import numpy as np
    return np.stack([uniforms(rng_key(seed, epoch, iteration, stream, first_obs + i), numel) >= p
                     for i in range(n)])


# ---- the spec ----------------------------------------------------------------


class SpecLayer:
    def __init__(self, kind, name, kv, line, index, inputs):
        self.kind, self.name, self.kv, self.line, self.index, self.inputs = (
            kind, name, kv, line, index, inputs)


def parse_spec(text):
    """The layers of a dptrain spec in order: type, name, keys, line, node
    index (0 = input) and input names (from=, default the line above)."""
    layers = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        tok = raw.split("#")[0].split()
        if not tok:
            continue
        if len(tok) < 2:
            raise ValueError("spec line %d: a %s layer needs a name" % (lineno, tok[0]))
        kv = dict(t.split("=", 1) for t in tok[2:])
        frm = kv.pop("from", None)
        inputs = frm.split(",") if frm else ([layers[-1].name] if layers else [])
        layers.append(SpecLayer(tok[0], tok[1], kv, lineno, len(layers), inputs))
    return layers


def _pair(v):
    a = [int(x) for x in v.split("x")]
    return (a[0], a[0]) if len(a) == 1 else (a[0], a[1])


class CounterDropout(nn.Module):
    """Dropout with dptrain's masks (set_key before a training forward)."""

    def __init__(self, p, stream):
        super().__init__()
        self.p, self.stream = p, stream
        self.key = (0, 0, 0, 0)  # seed, epoch, iteration, first observation

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        seed, epoch, iteration, first = self.key
        keep = dropout_keep_mask(self.p, seed, epoch, iteration, self.stream, first, x.shape[0],
                                 x[0].numel())
        keep = torch.from_numpy(keep).reshape(x.shape).to(x.dtype)
        return x * keep * (1.0 / (1.0 - self.p))


class DptNet(nn.Module):
    """A dptrain spec as a torch module. Every value is NCHW ([N,C,H,W]; fc
    gives [N,outputs,1,1]); forward returns [N,classes]: probabilities when
    the spec ends in softmax, logits with logits=True. dropout="counter" uses
    dptrain's masks (CounterDropout), "torch" nn.Dropout."""

    def __init__(self, spec, n_classes=None, dropout="counter"):
        super().__init__()
        self.layers = parse_spec(spec)
        self.mods = nn.ModuleDict()
        self.shapes = {}
        for l in self.layers:
            self._add(l, n_classes, dropout)

    def _add(self, l, n_classes, dropout):
        kv, shp = l.kv, self.shapes
        if l.kind == "input":
            h, w, c = map(int, kv["size"].split("x"))
            shp[l.name] = (c, h, w)
            return
        for i in l.inputs:
            if i not in shp:
                raise ValueError("spec line %d: %s takes input from unknown or later layer '%s'"
                                 % (l.line, l.name, i))
        c, h, w = shp[l.inputs[0]]
        m = None
        if l.kind == "conv":
            kh, kw = _pair(kv["filter"])
            s, p = int(kv.get("stride", 1)), int(kv.get("padding", 0))
            d, g = int(kv.get("dilation", 1)), int(kv.get("groups", 1))
            m = nn.Conv2d(c, int(kv["filters"]), (kh, kw), stride=s, padding=p, dilation=d,
                          groups=g, bias=kv.get("bias", "1") != "0")
            out = (m.out_channels, (h + 2 * p - d * (kh - 1) - 1) // s + 1,
                   (w + 2 * p - d * (kw - 1) - 1) // s + 1)
        elif l.kind == "batchnorm":
            m = nn.BatchNorm2d(c, eps=float(kv.get("epsilon", 1e-5)),
                               momentum=float(kv.get("decay", 0.1)))
            out = (c, h, w)
        elif l.kind in ("maxpool", "avgpool"):
            k = _pair(kv["size"])
            s = _pair(kv["stride"]) if "stride" in kv else k
            p = int(kv.get("padding", 0))
            m = (nn.MaxPool2d(k, s, p) if l.kind == "maxpool"
                 else nn.AvgPool2d(k, s, p, count_include_pad=True))
            out = (c, (h + 2 * p - k[0]) // s[0] + 1, (w + 2 * p - k[1]) // s[1] + 1)
        elif l.kind == "fc":
            n = kv["outputs"]
            n = n_classes if n == "classes" else int(n)
            if n is None:
                raise ValueError("spec line %d: outputs=classes, but the classes are not known"
                                 % l.line)
            m = nn.Linear(c * h * w, n)
            out = (n, 1, 1)
        elif l.kind == "dropout":
            p = float(kv.get("p", 0.5))
            m = CounterDropout(p, l.index) if dropout == "counter" else nn.Dropout(p)
            out = (c, h, w)
        elif l.kind == "leakyrelu":
            m = nn.LeakyReLU(float(kv.get("alpha", 0.01)))
            out = (c, h, w)
        elif l.kind in ("relu", "sigmoid", "tanh", "softmax", "add"):
            out = (c, h, w)
        elif l.kind == "globalavgpool":
            out = (c, 1, 1)
        elif l.kind == "concat":
            out = (sum(shp[i][0] for i in l.inputs), h, w)
        else:
            raise ValueError("spec line %d: unknown layer type %s" % (l.line, l.kind))
        if m is not None:
            self.mods[l.name] = m
        shp[l.name] = out

    def forward(self, x, logits=False):
        v = {}
        for l in self.layers:
            if l.kind == "input":
                v[l.name] = x
                continue
            xs = [v[i] for i in l.inputs]
            a, k = xs[0], l.kind
            if k in ("conv", "batchnorm", "maxpool", "avgpool", "dropout", "leakyrelu"):
                y = self.mods[l.name](a)
            elif k == "fc":
                y = self.mods[l.name](a.flatten(1))[:, :, None, None]
            elif k == "relu":
                y = torch.relu(a)
            elif k == "sigmoid":
                y = torch.sigmoid(a)
            elif k == "tanh":
                y = torch.tanh(a)
            elif k == "globalavgpool":
                y = a.mean((2, 3), keepdim=True)
            elif k == "add":
                y = xs[0]
                for b in xs[1:]:
                    y = y + b
            elif k == "concat":
                y = torch.cat(xs, 1)
            elif k == "softmax":
                y = a if logits else torch.softmax(a, 1)
            v[l.name] = y
        return v[self.layers[-1].name].flatten(1)

    def set_dropout_key(self, seed, epoch, iteration, first_obs=0):
        for m in self.modules():
            if isinstance(m, CounterDropout):
                m.key = (seed, epoch, iteration, first_obs)

    def tables(self):
        """dptrain's table names -> this module's parameters and buffers."""
        out = {}
        for l in self.layers:
            m = self.mods[l.name] if l.name in self.mods else None
            if l.kind in ("conv", "fc"):
                out[l.name + "/Weights"] = m.weight
                if m.bias is not None:
                    out[l.name + "/Bias"] = m.bias
            elif l.kind == "batchnorm":
                out[l.name + "/Offset"] = m.bias
                out[l.name + "/Scale"] = m.weight
                out[l.name + "/TrainedMean"] = m.running_mean
                out[l.name + "/TrainedVariance"] = m.running_var
        return out

    def load_tables(self, tensors):
        with torch.no_grad():
            for name, t in self.tables().items():
                if name not in tensors:
                    raise KeyError("the model file has no tensor %s" % name)
                t.copy_(tensors[name].reshape(t.shape))

    def init_glorot(self):
        """dptrain's initialisation (MATLAB's defaults): Glorot-uniform weights,
        zero biases and offsets, unit scales."""
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.init.xavier_uniform_(m.weight)
                    if m.bias is not None:
                        m.bias.zero_()

    def input_shape(self):
        return self.shapes[self.layers[0].name]


# ---- sequence networks (sequenceinput, lstm, gru) ---------------------------------


class DptSeqNet(nn.Module):
    """A dptrain sequence spec as a torch module: `sequenceinput size=F|vocab`,
    `lstm`/`gru units=H [output=sequence|last]` (torch.nn.LSTM/GRU,
    batch_first, one layer: weight_ih_l0 = <layer>/InputWeights,
    weight_hh_l0 = RecurrentWeights, bias_ih_l0 = InputBias, bias_hh_l0 =
    RecurrentBias), and per time step fc, softmax, dropout, relu, leakyrelu,
    sigmoid, tanh, add and concat (along features).

    forward(x, lengths=None, state=None, logits=False) takes x [N, T, F]
    (right padding: sequence i's valid steps are [0, lengths[i])) and returns
    (y, state): y [N, T, outputs] for an output per time step (padded steps
    zero), [N, outputs] after `output=last` (the state after each sequence's
    last valid step); state maps each recurrent layer's name to its final
    (h, c) (LSTM) or h (GRU), [1, N, H] each, to feed the next chunk of a
    stateful stream (None: zero state; a layer's state is None when lengths
    left some steps padded)."""

    def __init__(self, spec, n_classes=None, n_vocab=None, dropout="counter"):
        super().__init__()
        self.layers = parse_spec(spec)
        self.mods = nn.ModuleDict()
        self.dims = {}   # name -> features per step
        self.seq = {}    # name -> True when the value is a sequence
        for l in self.layers:
            self._add(l, n_classes, n_vocab, dropout)

    def _count(self, l, key, n_classes, n_vocab):
        v = l.kv[key]
        if v in ("classes", "vocab"):
            n = n_classes if v == "classes" else n_vocab
            if n is None:
                raise ValueError("spec line %d: %s=%s, but it is not known" % (l.line, key, v))
            return n
        return int(v)

    def _add(self, l, n_classes, n_vocab, dropout):
        kv = l.kv
        if l.kind == "sequenceinput":
            self.dims[l.name] = self._count(l, "size", n_classes, n_vocab)
            self.seq[l.name] = True
            return
        for i in l.inputs:
            if i not in self.dims:
                raise ValueError("spec line %d: %s takes input from unknown or later layer '%s'"
                                 % (l.line, l.name, i))
        f, sq = self.dims[l.inputs[0]], self.seq[l.inputs[0]]
        if l.kind in ("lstm", "gru"):
            h = int(kv["units"])
            cls = nn.LSTM if l.kind == "lstm" else nn.GRU
            self.mods[l.name] = cls(f, h, batch_first=True)
            out, sq = h, kv.get("output", "sequence") == "sequence"
        elif l.kind == "fc":
            out = self._count(l, "outputs", n_classes, n_vocab)
            self.mods[l.name] = nn.Linear(f, out)
        elif l.kind == "dropout":
            p = float(kv.get("p", 0.5))
            self.mods[l.name] = CounterDropout(p, l.index) if dropout == "counter" else nn.Dropout(p)
            out = f
        elif l.kind == "leakyrelu":
            self.mods[l.name] = nn.LeakyReLU(float(kv.get("alpha", 0.01)))
            out = f
        elif l.kind in ("relu", "sigmoid", "tanh", "softmax", "add"):
            out = f
        elif l.kind == "concat":
            out = sum(self.dims[i] for i in l.inputs)
        else:
            raise ValueError("spec line %d: layer type %s is not for sequences" % (l.line, l.kind))
        self.dims[l.name], self.seq[l.name] = out, sq

    def forward(self, x, lengths=None, state=None, logits=False):
        v, new_state = {}, {}
        n, t = x.shape[0], x.shape[1]
        mask = None
        if lengths is not None:
            lengths = torch.as_tensor(lengths, dtype=torch.int64)
            mask = (torch.arange(t)[None, :] < lengths[:, None]).to(x.dtype)[:, :, None]
        for l in self.layers:
            if l.kind == "sequenceinput":
                v[l.name] = x
                continue
            xs = [v[i] for i in l.inputs]
            a, k = xs[0], l.kind
            if k in ("lstm", "gru"):
                m = self.mods[l.name]
                h0 = state.get(l.name) if state else None
                # Right padding comes after every valid step, so the outputs
                # of the valid steps are those of the padded batch: one
                # unpacked call (packing runs step by step on the CPU, several
                # times slower), the state after a sequence's last valid step
                # picked from its outputs.
                out, hn = m(a, h0)
                short = lengths is not None and int(lengths.min()) < t
                new_state[l.name] = None if short else hn
                if l.kv.get("output", "sequence") == "sequence":
                    y = out
                elif short:
                    y = out[torch.arange(n), lengths - 1]
                else:
                    y = (hn[0] if k == "lstm" else hn)[-1]
            elif k in ("fc", "dropout", "leakyrelu"):
                y = self.mods[l.name](a)
            elif k == "relu":
                y = torch.relu(a)
            elif k == "sigmoid":
                y = torch.sigmoid(a)
            elif k == "tanh":
                y = torch.tanh(a)
            elif k == "add":
                y = xs[0]
                for b in xs[1:]:
                    y = y + b
            elif k == "concat":
                y = torch.cat(xs, -1)
            elif k == "softmax":
                y = a if logits else torch.softmax(a, -1)
            if mask is not None and self.seq[l.name]:
                y = y * mask
            v[l.name] = y
        return v[self.layers[-1].name], new_state

    def set_dropout_key(self, seed, epoch, iteration, first_obs=0):
        for m in self.modules():
            if isinstance(m, CounterDropout):
                m.key = (seed, epoch, iteration, first_obs)

    def tables(self):
        """dptrain's table names -> this module's parameters."""
        out = {}
        for l in self.layers:
            if l.kind in ("lstm", "gru"):
                m = self.mods[l.name]
                out[l.name + "/InputWeights"] = m.weight_ih_l0
                out[l.name + "/RecurrentWeights"] = m.weight_hh_l0
                out[l.name + "/InputBias"] = m.bias_ih_l0
                out[l.name + "/RecurrentBias"] = m.bias_hh_l0
            elif l.kind == "fc":
                out[l.name + "/Weights"] = self.mods[l.name].weight
                out[l.name + "/Bias"] = self.mods[l.name].bias
        return out

    load_tables = DptNet.load_tables

    def init_dptrain(self):
        """dptrain's initialisation: fc Glorot-uniform with zero bias;
        recurrent layers as PyTorch's (uniform +-1/sqrt(H)), which
        nn.LSTM/GRU already have."""
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.xavier_uniform_(m.weight)
                    m.bias.zero_()

    def input_features(self):
        return self.dims[self.layers[0].name]

    def spec_text(self):
        """The spec with classes/vocab resolved to numbers (as dptrain
        stores it in a model file)."""
        lines = []
        for l in self.layers:
            kv = dict(l.kv)
            if l.kind == "sequenceinput":
                kv["size"] = str(self.dims[l.name])
            elif l.kind == "fc":
                kv["outputs"] = str(self.dims[l.name])
            words = [l.kind, l.name] + ["%s=%s" % (a, b) for a, b in kv.items()]
            if l.index > 0 and l.inputs != [self.layers[l.index - 1].name]:
                words.append("from=" + ",".join(l.inputs))
            lines.append(" ".join(words))
        return "\n".join(lines) + "\n"


def is_sequence_spec(spec):
    layers = parse_spec(spec)
    return bool(layers) and layers[0].kind == "sequenceinput"


def text_streams_bpc(net, idx, n_vocab, n_streams, seq_len):
    """Bits per character of a language model on the index sequence idx, as
    dpt_evaluate_text computes it: idx cut into n_streams streams of
    L = len // n_streams characters, each read in floor((L - 1) / seq_len)
    chunks with the state carried from zero; chunk k's inputs are the
    stream's characters [k T, (k + 1) T), its targets the next ones."""
    L = len(idx) // n_streams
    data = torch.as_tensor(idx[:L * n_streams], dtype=torch.int64).reshape(n_streams, L)
    state, total, count = None, 0.0, 0
    with torch.no_grad():
        for k in range((L - 1) // seq_len):
            a = k * seq_len
            x = F.one_hot(data[:, a:a + seq_len], n_vocab).float()
            y = data[:, a + 1:a + 1 + seq_len]
            z, state = net(x, state=state, logits=True)
            total += float(F.cross_entropy(z.reshape(-1, n_vocab), y.reshape(-1),
                                           reduction="sum"))
            count += y.numel()
    return total / count / math.log(2)


# ---- files -------------------------------------------------------------------


def load_safetensors(path):
    data = open(path, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    tensors = {}
    for name, t in header.items():
        a, b = t["data_offsets"]
        if t["dtype"] != "F32":
            continue  # optimizer counters and the like
        vals = struct.unpack("<%df" % ((b - a) // 4), data[base + a:base + b])
        tensors[name] = torch.tensor(vals, dtype=torch.float32).reshape(t["shape"])
    return tensors, meta


def save_safetensors(path, tensors, meta):
    """Write named float32 tensors and string metadata as safetensors (what
    dpt_net_load reads: a dptrain model when meta has "format" and "spec")."""
    import numpy as np
    header, blobs, off = {"__metadata__": meta}, [], 0
    for name, t in tensors.items():
        b = np.ascontiguousarray(t.detach().cpu().numpy(), dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    os.replace(tmp, path)


def save_seq_model(path, net, meta):
    """A DptSeqNet as a dptrain model file (its tables, its spec with the
    numbers filled in, and meta: "task", "vocab" or "classes", ...), which
    `dptrain eval`, `predict` and `generate` then use as their own."""
    m = {"format": "dptrain.model.v1", "spec": net.spec_text()}
    m.update(meta)
    save_safetensors(path, {k: v for k, v in net.tables().items()}, m)


def build_from_model(path):
    """(net in eval mode, class names) from a dptrain model file alone. A
    sequence network is a DptSeqNet; for a language model the "classes" are
    the vocabulary's characters."""
    tensors, meta = load_safetensors(path)
    if is_sequence_spec(meta["spec"]):
        if meta.get("task") == "language_model":
            classes = [chr(c) for c in json.loads(meta["vocab"])]
        else:
            classes = json.loads(meta["classes"])
        net = DptSeqNet(meta["spec"], len(classes), len(classes))
    else:
        classes = json.loads(meta["classes"])
        net = DptNet(meta["spec"], len(classes))
    net.load_tables(tensors)
    return net.eval(), classes


def read_csv_sequence(path):
    """A .csv sequence as dptrain reads it: [1, T, F] float32."""
    rows = [[float(v) for v in line.split(",")] for line in open(path) if line.strip()]
    return torch.tensor(rows, dtype=torch.float32)[None]


def dptrain_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def check_sequence_classifier(dptrain, model, net, classes, data, limit):
    """Predictions of up to `limit` .csv files of a sequence folder (the
    first of each class), PyTorch against `dptrain predict`."""
    files = []
    for cls in sorted(os.listdir(data)):
        d = os.path.join(data, cls)
        if os.path.isdir(d):
            files += [os.path.join(d, f) for f in sorted(os.listdir(d))
                      if f.lower().endswith(".csv")][: max(1, limit // len(classes))]
    return compare_predictions(dptrain, model, net, classes, files,
                               [read_csv_sequence(f) for f in files])


def compare_predictions(dptrain, model, net, classes, files, xs):
    out = subprocess.run([dptrain, "predict", "--model", model] + files, check=True,
                         capture_output=True, text=True)
    theirs = {}
    for line in out.stdout.splitlines():
        f, label, score = line.split("\t")
        theirs[f] = (label, float(score))
    agree, worst = 0, 0.0
    with torch.no_grad():
        for f, x in zip(files, xs):
            p = net(x)
            p = (p[0] if isinstance(p, tuple) else p)[0]
            if p.dim() == 2:  # an output per time step: the last one
                p = p[-1]
            k = int(p.argmax())
            label, score = theirs[f]
            agree += classes[k] == label
            worst = max(worst, abs(float(p[k]) - score))
    print("%d of %d predictions agree between PyTorch and dptrain predict; largest score "
          "difference %.4f" % (agree, len(files), worst))
    return agree == len(files) and worst < 2e-3


def sample_text(net, vocab, prime, length, temperature, seed):
    """What `dptrain generate` samples, computed with PyTorch: the prime fed
    (a newline when empty), then character i drawn with
    u = (mix64(key ^ i) >> 11) * 2^-53, key = rng_key(seed, 0, 0, 0x67656e00, 0),
    from the probabilities sharpened by the temperature (p^(1/T), summed in
    index order)."""
    index = {c: j for j, c in enumerate(vocab)}
    idx = [index[c] for c in prime] or [index.get("\n", 0)]
    key = rng_key(seed, 0, 0, 0x67656E00, 0)
    state, out = None, []
    with torch.no_grad():
        x = F.one_hot(torch.tensor([idx]), len(vocab)).float()
        y, state = net(x, state=state)
        for i in range(length):
            p = y[0, -1].double()
            if temperature == 1.0:
                w = p.clamp(min=0)
            else:
                w = torch.where(p > 0, torch.exp((torch.log(p.clamp(min=1e-300)) - math.log(
                    float(p.max()))) / temperature), torch.zeros_like(p))
            u = (mix64(key ^ i) >> 11) * 2.0 ** -53
            target, cum, k = u * float(w.sum()), 0.0, None
            for j, wj in enumerate(w.tolist()):
                if wj > 0:
                    cum += wj
                    k = j
                    if cum > target:
                        break
            out.append(vocab[k])
            x = F.one_hot(torch.tensor([[k]]), len(vocab)).float()
            y, state = net(x, state=state)
    return prime + "".join(out)


def check_language_model(dptrain, model, net, vocab, data, limit):
    """Bits per character on the first `limit` characters of a text file,
    PyTorch against `dptrain eval --json`, and a sample of `dptrain
    generate` reproduced with PyTorch's probabilities."""
    text = open(data, encoding="utf-8").read()[:limit]
    index = {c: j for j, c in enumerate(vocab)}
    missing = sorted({c for c in text if c not in index})
    if missing:
        raise SystemExit("%s: characters outside the model's vocabulary: %r" % (data, missing))
    tmp = tempfile.TemporaryDirectory(prefix="interop.")
    part = os.path.join(tmp.name, "part.txt")
    with open(part, "w", encoding="utf-8") as f:
        f.write(text)
    theirs = dptrain_json([dptrain, "eval", "--model", model, "--data", part, "--json"])
    streams, seq_len = int(theirs["streams"]), int(theirs["seq_len"])
    ours = text_streams_bpc(net, [index[c] for c in text], len(vocab), streams, seq_len)
    ok = abs(ours - theirs["bits_per_character"]) < 1e-3
    print("bits per character on %d characters (%d streams, chunks of %d): PyTorch %.5f, "
          "dptrain eval %.5f" % (len(text), streams, seq_len, ours, theirs["bits_per_character"]))
    prime = text[:20]
    gen = subprocess.run([dptrain, "generate", "--model", model, "--prime", prime, "--length",
                          "100", "--seed", "7"], check=True, capture_output=True).stdout
    gen = gen.decode("utf-8")
    mine = sample_text(net, vocab, prime, 100, 1.0, 7)
    same = next((i for i, (a, b) in enumerate(zip(gen, mine)) if a != b), min(len(gen), len(mine)))
    print("dptrain generate --seed 7: %d of %d characters as PyTorch samples them: %r" % (
        same, len(mine), gen[:60]))
    return ok and gen == mine


def read_idx_images(path, limit):
    op = gzip.open if open(path, "rb").read(2) == b"\x1f\x8b" else open
    with op(path, "rb") as f:
        magic, n, rows, cols = struct.unpack(">IIII", f.read(16))
        if magic != 0x803:
            raise SystemExit("%s: not an IDX images file" % path)
        n = min(n, limit)
        return n, rows, cols, f.read(n * rows * cols)


def image_tensor(path, c, h, w):
    """One image as dptrain reads it: [1,C,H,W] in [0,1]; grey read as three
    channels repeats the grey value, colour read as one channel is
    (77 R + 150 G + 29 B) >> 8; other sizes resized bilinearly (dptrain's
    resize may differ in the last bits)."""
    try:
        from PIL import Image
    except ImportError:
        raise SystemExit("python3-pil is needed to decode %s for PyTorch" % path)
    im = Image.open(path)
    rgb = torch.tensor(list(im.convert("RGB").getdata()), dtype=torch.int64).reshape(
        im.size[1], im.size[0], 3)
    if c == 1:  # exact for grey images too (r = g = b = v gives v)
        x = ((77 * rgb[..., 0] + 150 * rgb[..., 1] + 29 * rgb[..., 2]) >> 8)[None].float()
    else:
        x = rgb.permute(2, 0, 1).float()
    x = x[None] / 255.0
    if x.shape[2:] != (h, w):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    return x


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    model, data = sys.argv[1], sys.argv[2]
    limit = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    dptrain = os.environ.get("DPTRAIN", os.path.join(os.path.dirname(__file__), "..", "build",
                                                     "dptrain"))
    net, classes = build_from_model(model)
    print("rebuilt %d layers (%s) from %s" % (len(net.layers), ", ".join(
        sorted({l.kind for l in net.layers})), model))
    if isinstance(net, DptSeqNet):
        _, meta = load_safetensors(model)
        if meta.get("task") == "language_model":
            ok = check_language_model(dptrain, model, net, classes, data,
                                      int(sys.argv[3]) if len(sys.argv) > 3 else 20000)
        else:
            ok = check_sequence_classifier(dptrain, model, net, classes, data, limit)
        sys.exit(0 if ok else 1)
    c, h, w = net.input_shape()
    tmp = tempfile.TemporaryDirectory(prefix="interop.")
    files, xs = [], []
    if os.path.isdir(data):
        for cls in sorted(os.listdir(data)):
            d = os.path.join(data, cls)
            if os.path.isdir(d):
                files += [os.path.join(d, f) for f in sorted(os.listdir(d))
                          if not f.startswith(".")][: max(1, limit // len(classes))]
        xs = [image_tensor(f, c, h, w) for f in files]
    else:
        # IDX: the same pixels for both sides, as PGM files for dptrain predict.
        n, rows, cols, pix = read_idx_images(data, limit)
        for i in range(n):
            f = os.path.join(tmp.name, "%05d.pgm" % i)
            img = pix[i * rows * cols:(i + 1) * rows * cols]
            with open(f, "wb") as out:
                out.write(b"P5\n%d %d\n255\n" % (cols, rows) + img)
            files.append(f)
            x = torch.tensor(list(img), dtype=torch.float32).reshape(1, 1, rows, cols) / 255.0
            xs.append(x.expand(1, c, rows, cols) if (rows, cols) == (h, w)
                      else image_tensor(f, c, h, w))
    sys.exit(0 if compare_predictions(dptrain, model, net, classes, files, xs) else 1)


if __name__ == "__main__":
    main()
