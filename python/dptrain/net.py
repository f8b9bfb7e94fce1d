"""Custom-loop building blocks: networks, losses, optimizers, the
data-parallel step and the progress queue (dptrain/net.h, loss.h, optim.h,
train.h)."""
import os

import numpy as np

from ._lib import (Owned, MODE_PREDICT, MODE_TRAIN, OPTIM_OPTS_VERSION, DptrainError,
                   check, ffi, lib, text)


def _f32(a, name):
    a = np.ascontiguousarray(a, dtype=np.float32)
    return a, ffi.from_buffer("float[]", a)


def default_spec():
    """The MATLAB example's network (outputs=classes on its fc layer)."""
    return text(lib.dpt_net_default_spec())


class Network(Owned):
    """A dptrain network (dpt_net). Owns it unless borrowed from a Parallel
    (then it lives as long as that). close() frees it."""

    _what = "network"

    _ptr = None  # until made: __del__ of a failed __init__ has nothing to free

    def __init__(self, ptr, owner=None):
        self._ptr = ptr
        self._owner = owner  # a Parallel keeping a borrowed replica alive

    @classmethod
    def from_spec(cls, spec=None, n_classes=10, max_batch=128, seed=0, source=None):
        """Build from spec text (None: default_spec()) or a spec file path."""
        if spec is not None and "\n" not in spec and os.path.isfile(spec):
            source = source or spec
            with open(spec, encoding="utf-8") as f:
                spec = f.read()
        if spec is None:
            spec, source = default_spec(), source or "<default>"
        out = ffi.new("dpt_net **")
        check(lib.dpt_net_from_spec(spec.encode(), (source or "<spec>").encode(), int(n_classes),
                                    int(max_batch), int(seed), out))
        return cls(out[0])

    @classmethod
    def load(cls, path, max_batch=128):
        """A model file (safetensors) saved by dptrain or save()."""
        out = ffi.new("dpt_net **")
        check(lib.dpt_net_load(os.fsencode(path), int(max_batch), out))
        return cls(out[0])

    def close(self, _free=lib.dpt_net_free):  # bound now: lib may be gone at exit
        if self._ptr is not None and self._owner is None:
            _free(self._ptr)
        self._ptr = None
        self._owner = None


    # ---- description -------------------------------------------------------
    @property
    def spec(self):
        return text(lib.dpt_net_spec(self.ptr))

    @property
    def input_shape(self):
        """(C, H, W) of one observation."""
        chw = ffi.new("int[3]")
        lib.dpt_net_input_shape(self.ptr, chw)
        return tuple(chw)

    @property
    def n_outputs(self):
        return lib.dpt_net_n_outputs(self.ptr)

    @property
    def max_batch(self):
        return lib.dpt_net_max_batch(self.ptr)

    @property
    def layers(self):
        """[(name, type)] in order, the input layer first."""
        return [(text(lib.dpt_net_layer_name(self.ptr, i)), text(lib.dpt_net_layer_type(self.ptr, i)))
                for i in range(lib.dpt_net_n_layers(self.ptr))]

    def meta(self, key):
        """A metadata value of the file it was loaded from, or None."""
        return text(lib.dpt_net_meta(self.ptr, key.encode()))

    def hash(self):
        """FNV-1a of learnables and state: equal on identical networks."""
        return lib.dpt_net_hash(self.ptr)

    # ---- tables ---------------------------------------------------------------------
    def _table(self, count, entry, flat, n_flat):
        buf = np.frombuffer(ffi.buffer(flat(self.ptr), 4 * n_flat(self.ptr)), dtype=np.float32)
        out = {}
        for i in range(count(self.ptr)):
            e = entry(self.ptr, i)
            shape = tuple(e.shape[d] for d in range(e.ndim))
            out[text(e.name)] = buf[e.offset:e.offset + e.n].reshape(shape).copy()
        return out

    def learnables(self):
        """{"conv1/Weights": array, ...}: copies, PyTorch layouts."""
        return self._table(lib.dpt_net_n_learnables, lib.dpt_net_learnable, lib.dpt_net_params,
                           lib.dpt_net_n_params)

    def state(self):
        """{"bn1/TrainedMean": array, ...}: copies."""
        return self._table(lib.dpt_net_n_state, lib.dpt_net_state_info, lib.dpt_net_state,
                           lib.dpt_net_n_state_floats)

    @property
    def params(self):
        """The flat learnables buffer as a writable float32 view (valid
        while the network is open)."""
        return np.frombuffer(ffi.buffer(lib.dpt_net_params(self.ptr),
                                        4 * lib.dpt_net_n_params(self.ptr)), dtype=np.float32)

    @property
    def grads(self):
        """The flat gradient buffer (same layout as params), a view."""
        return np.frombuffer(ffi.buffer(lib.dpt_net_grads(self.ptr),
                                        4 * lib.dpt_net_n_params(self.ptr)), dtype=np.float32)

    # ---- compute -----------------------------------------------------------------------
    def forward(self, x, train=False):
        """Output [n, outputs] (a copy) for x [n, C, H, W] float32."""
        x, px = _f32(x, "x")
        if x.ndim != 4 or x.shape[1:] != self.input_shape:
            raise ValueError("x must be [n, %d, %d, %d], not %s" % (self.input_shape + (x.shape,)))
        y = ffi.new("const float **")
        check(lib.dpt_net_forward(self.ptr, px, x.shape[0], MODE_TRAIN if train else MODE_PREDICT, y))
        k = self.n_outputs
        return np.frombuffer(ffi.buffer(y[0], 4 * x.shape[0] * k), dtype=np.float32).reshape(
            x.shape[0], k).copy()

    def backward(self, dy, logits=True):
        """Backward after a train forward: dy [n, outputs] is the loss
        gradient at the softmax input (logits=True, as softmax_xent gives)
        or at the output. Gradients land in .grads."""
        dy, pdy = _f32(dy, "dy")
        check(lib.dpt_net_backward(self.ptr, pdy, int(bool(logits))))

    def update_state(self):
        """Running batch-norm state from the last train forward."""
        check(lib.dpt_net_update_state(self.ptr, ffi.NULL))

    def set_iteration(self, epoch, iteration):
        lib.dpt_net_set_iteration(self.ptr, int(epoch), int(iteration))

    def save(self, path, classes=None, meta=None):
        """Save as a model file (safetensors, dpt_net_save): "classes" (a
        JSON array) and any other metadata given."""
        import json
        kv = {}  # classes first, then the rest: the order dptrain train writes
        if classes is not None:
            kv["classes"] = json.dumps([str(c) for c in classes], separators=(",", ":"),
                                       ensure_ascii=False)
        kv.update(meta or {})
        keep = [(ffi.new("char[]", k.encode()), ffi.new("char[]", str(v).encode()))
                for k, v in kv.items()]
        arr = ffi.new("dpt_kv[]", max(1, len(keep)))
        for i, (k, v) in enumerate(keep):
            arr[i].key, arr[i].value = k, v
        check(lib.dpt_net_save(self.ptr, os.fsencode(path), arr, len(keep)))


def softmax_xent(probs, targets, weight=1.0):
    """(loss, dlogits): cross-entropy of softmax outputs [n, k] against
    targets [n, k], and its gradient at the softmax input."""
    p, pp = _f32(probs, "probs")
    t, pt = _f32(targets, "targets")
    if p.shape != t.shape or p.ndim != 2:
        raise ValueError("probs and targets must both be [n, k]")
    loss = ffi.new("double *")
    d = np.empty_like(p)
    check(lib.dpt_loss_softmax_xent(pp, pt, p.shape[0], p.shape[1], float(weight), loss,
                                    ffi.from_buffer("float[]", d)))
    return loss[0], d


def one_hot(labels, k):
    labels = np.asarray(labels, dtype=np.int64)
    t = np.zeros((labels.size, k), dtype=np.float32)
    t[np.arange(labels.size), labels] = 1
    return t


def _optim_opts(lr, momentum, beta1, beta2, eps, weight_decay, decoupled, clip_norm):
    o = ffi.new("dpt_optim_opts *")
    o.version = OPTIM_OPTS_VERSION
    o.lr = lr or 0.0
    o.momentum, o.beta1, o.beta2, o.eps = momentum, beta1, beta2, eps
    o.weight_decay, o.decoupled, o.clip_norm = weight_decay, decoupled, clip_norm
    return o


def optim_kind(name):
    """(kind, decoupled) of "sgdm", "adam" or "adamw"."""
    if name == "adamw":
        return 1, 1
    k = ffi.new("int *")
    check(lib.dpt_optim_kind_parse(name.encode(), k))
    return k[0], 0


class Optimizer(Owned):
    """SGDM, Adam or AdamW over a network's flat buffers (dpt_optim)."""

    _what = "optimizer"

    _ptr = None  # until made: __del__ of a failed __init__ has nothing to free

    def __init__(self, net, kind="sgdm", lr=None, momentum=0.9, beta1=0.9, beta2=0.999,
                 eps=1e-8, weight_decay=0.0, clip_norm=0.0):
        k, dec = optim_kind(kind)
        out = ffi.new("dpt_optim **")
        check(lib.dpt_optim_new(k, lib.dpt_net_n_params(net.ptr),
                                _optim_opts(lr, momentum, beta1, beta2, eps, weight_decay, dec,
                                            clip_norm), out))
        self._ptr = out[0]

    def close(self, _free=lib.dpt_optim_free):  # bound now: lib may be gone at exit
        if self._ptr is not None:
            _free(self._ptr)
            self._ptr = None


    @property
    def lr(self):
        return lib.dpt_optim_get_lr(self.ptr)

    @lr.setter
    def lr(self, v):
        lib.dpt_optim_set_lr(self.ptr, float(v))

    def step(self, net):
        """One update of net's learnables from its gradients."""
        if lib.dpt_optim_n(self.ptr) != lib.dpt_net_n_params(net.ptr):
            raise DptrainError(1, "optimizer has %d parameters, network %d" % (
                lib.dpt_optim_n(self.ptr), lib.dpt_net_n_params(net.ptr)))
        lib.dpt_optim_step(self.ptr, lib.dpt_net_params(net.ptr), lib.dpt_net_grads(net.ptr))


def train_step(net, opt, x, targets):
    """One single-worker step (dpt_train_step_optim): forward, cross-entropy
    against targets [n, K], backward, state update, optimizer update.
    Returns the loss."""
    x, px = _f32(x, "x")
    t, pt = _f32(targets, "targets")
    if x.shape[0] != t.shape[0]:
        raise ValueError("x and targets differ in rows")
    loss = ffi.new("double *")
    check(lib.dpt_train_step_optim(net.ptr, opt.ptr, ffi.NULL, px, pt, x.shape[0], loss, ffi.NULL))
    return loss[0]


class _Handle:
    """Owns one C object; frees it when closed or collected."""

    def __init__(self, ptr, free):
        self.ptr, self._free = ptr, free

    def close(self):
        if self.ptr is not None:
            self._free(self.ptr)
            self.ptr = None

    def __del__(self):
        self.close()


class Parallel(Owned):
    """N local workers, each with a replica of one network and an optimizer
    (dpt_parallel): step() trains on a global minibatch, worker j on its
    share, with loss, gradients and batch-norm state combined as in dpt_fit.
    The worker threads are the library's; Python runs only on the caller's
    thread (which is worker 0 during the step)."""

    _what = "parallel trainer"

    _ptr = None  # until made: __del__ of a failed __init__ has nothing to free

    def __init__(self, spec=None, n_classes=10, batch=128, seed=0, workers=None,
                 optimizer="sgdm", lr=None, momentum=0.9, beta1=0.9, beta2=0.999, eps=1e-8,
                 weight_decay=0.0, clip_norm=0.0, sync_bn=False, threads=None):
        source = None
        if spec is not None and "\n" not in spec and os.path.isfile(spec):
            source = spec
            with open(spec, encoding="utf-8") as f:
                spec = f.read()
        cpus = lib.dpt_cpu_count()
        workers = workers or cpus
        lib.dpt_blas_set_threads(threads or max(1, cpus // workers))
        k, dec = optim_kind(optimizer)
        out = ffi.new("dpt_parallel **")
        check(lib.dpt_parallel_new(spec.encode() if spec else ffi.NULL,
                                   source.encode() if source else ffi.NULL, int(n_classes),
                                   int(batch), int(seed), int(workers), k,
                                   _optim_opts(lr, momentum, beta1, beta2, eps, weight_decay, dec,
                                               clip_norm), int(bool(sync_bn)), out))
        # The replicas' Networks keep the C object alive through this handle,
        # not through the Parallel: no reference cycle, so dropping the last
        # reference frees everything at once.
        self._handle = _Handle(out[0], lib.dpt_parallel_free)
        self._ptr = out[0]
        self._borrowed = []
        self.net = self.replica(0)

    def close(self):
        if self._ptr is not None:
            for n in self._borrowed:  # their networks go with the replicas
                n._ptr = n._owner = None
            self._borrowed = []
            self._handle.close()
            self._ptr = None


    @property
    def n_workers(self):
        return lib.dpt_parallel_n_workers(self.ptr)

    def replica(self, j):
        """Worker j's network (borrowed; read it, change all or none)."""
        p = lib.dpt_parallel_net(self.ptr, int(j))
        if p == ffi.NULL:
            raise IndexError("worker %d of %d" % (j, self.n_workers))
        n = Network(p, owner=self._handle)
        self._borrowed.append(n)
        return n

    def set_lr(self, lr):
        lib.dpt_parallel_set_lr(self.ptr, float(lr))

    def step(self, x, targets, epoch=1, iteration=1):
        """One data-parallel step on x [n, C, H, W], targets [n, K] (one-hot
        rows; labels [n] are turned into them). Returns the minibatch loss."""
        x, px = _f32(x, "x")
        t = np.asarray(targets)
        if t.ndim == 1:
            t = one_hot(t, self.net.n_outputs)
        t, pt = _f32(t, "targets")
        if x.ndim != 4 or x.shape[1:] != self.net.input_shape:
            raise ValueError("x must be [n, %d, %d, %d], not %s" % (self.net.input_shape + (x.shape,)))
        if t.shape != (x.shape[0], self.net.n_outputs):
            raise ValueError("targets must be [%d, %d], not %s" % (x.shape[0], self.net.n_outputs,
                                                                   t.shape))
        loss = ffi.new("double *")
        check(lib.dpt_parallel_step(self.ptr, px, pt, x.shape[0], int(epoch), int(iteration), loss))
        return loss[0]


PROGRESS_FIELDS = ("epoch", "epochs", "iteration", "iterations_per_epoch", "loss", "elapsed_s",
                   "images_per_s", "lr", "test_accuracy", "end_of_epoch", "worker", "n_coalesced")


def record_dict(p):
    d = {f: getattr(p, f) for f in PROGRESS_FIELDS}
    d["end_of_epoch"] = bool(d["end_of_epoch"])
    # seconds each worker has spent in collectives (NaN: another process's)
    d["comm_wait_s"] = [p.comm_wait_s[w] for w in range(max(0, min(p.n_comm_wait, 64)))]
    return d


class ProgressQueue(Owned):
    """MATLAB's DataQueue with afterEach, for Python: the library's workers
    send records into a polled dpt_progress_queue; poll() or deliver(),
    called on the owner's thread, run callback(record_dict) there. No
    Python runs on the library's threads."""

    _what = "progress queue"

    _ptr = None  # until made: __del__ of a failed __init__ has nothing to free

    def __init__(self, callback=None, capacity=0):
        out = ffi.new("dpt_progress_queue **")
        check(lib.dpt_progress_queue_new_polled(int(capacity), out))
        self._ptr = out[0]
        self.callback = callback
        self._rec = ffi.new("dpt_progress *")

    def close(self, _free=lib.dpt_progress_queue_free):  # bound now: lib may be gone at exit
        if self._ptr is not None:
            _free(self._ptr)
            self._ptr = None


    def send(self, **fields):
        """Queue a record (any thread; fields as PROGRESS_FIELDS)."""
        p = ffi.new("dpt_progress *")
        p.test_accuracy = p.test_bpc = float("nan")
        for k, v in fields.items():
            setattr(p, k, v)
        lib.dpt_progress_send(self.ptr, p)

    def poll(self, timeout=0.0):
        """The oldest record as a dict (waiting up to timeout seconds), or
        None; the callback is not run."""
        if lib.dpt_progress_queue_poll(self.ptr, self._rec, int(timeout * 1000)):
            return record_dict(self._rec)
        return None

    def deliver(self, timeout=0.0):
        """Run the callback on every queued record (waiting up to timeout
        seconds for the first); returns the records."""
        out = []
        r = self.poll(timeout)
        while r is not None:
            out.append(r)
            if self.callback:
                self.callback(r)
            r = self.poll(0)
        return out

    @property
    def coalesced(self):
        return lib.dpt_progress_coalesced(self.ptr)
