"""The batteries-included calls: train, evaluate, predict, load (what the
dptrain CLI's train, eval and predict do, on numpy arrays or folders)."""
import json
import os
import shutil
import tempfile
import threading

import numpy as np

from ._lib import COMM_LOCAL, FIT_CONFIG_VERSION, SPMD_CONFIG_VERSION, check, ffi, lib
from .data import Datastore, as_datastore
from .net import Network, ProgressQueue, optim_kind


class Model:
    """A trained network with its class names (a model file's content)."""

    def __init__(self, net, classes):
        self.net = net
        self.classes = list(classes)

    def close(self):
        self.net.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def save(self, path):
        """Save as the CLI saves a model (safetensors: spec, classes and the
        run's facts the file was loaded with)."""
        meta = {}
        for k in ("workers", "iteration", "epoch"):
            v = self.net.meta(k)
            if v is not None:
                meta[k] = v
        self.net.save(path, classes=self.classes, meta=meta)

    def predict(self, images):
        return predict(self, images)

    def evaluate(self, data, labels=None):
        return evaluate(self, data, labels)


def load(path, max_batch=128):
    """A model file written by dptrain train (or Model.save)."""
    net = Network.load(path, max_batch)
    cls = net.meta("classes")
    classes = json.loads(cls) if cls else [str(k) for k in range(net.n_outputs)]
    return Model(net, classes)


class History(list):
    """The progress records of a run (dicts, in order) and its result."""

    result = None

    @property
    def epochs(self):
        return [r for r in self if r["end_of_epoch"]]


def train(data, labels=None, *, net=None, test=None, test_labels=None, split=0.9, epochs=20,
          batch=128, optimizer="sgdm", lr=None, momentum=0.9, beta1=0.9, beta2=0.999,
          epsilon=1e-8, weight_decay=0.0, lr_schedule=None, clip_norm=0.0, workers=None,
          threads=None, seed=0, sync_bn=False, prefetch=True, eval_every_epoch=False,
          out=None, progress=None, class_names=None):
    """Train as `dptrain train` does (dpt_fit), returning (Model, History).

    data: an image folder or IDX file path, a Datastore, or images ([N, H, W]
    or [N, C, H, W], uint8 or floats in [0, 1]) with labels [N]. test: the
    same kinds (classes matched by name), else `split` of each label trains
    and the rest tests, drawn with `seed`, as the CLI splits. net: spec text,
    a spec file, or None for the MATLAB example's network. workers: CPU
    workers (default: the CPUs this process may use); threads: BLAS threads
    per worker (default CPUs / workers), as the CLI chooses them. out: the
    folder where model.safetensors is written (None: a temporary one).
    progress: callback(record) run on this thread for every record (dicts
    of PROGRESS_FIELDS); the training itself runs on a library thread, so a
    slow callback never holds it up. Ctrl-C stops training at the next
    iteration boundary and raises KeyboardInterrupt."""
    if not 0 < split < 1:
        raise ValueError("split %g is not between 0 and 1" % split)
    kind, decoupled = optim_kind(optimizer)
    spec, source = None, None
    if net is not None:
        if "\n" not in net and os.path.isfile(net):
            source = net
            with open(net, encoding="utf-8") as f:
                spec = f.read()
        else:
            spec, source = net, "<spec>"
    sched = ffi.new("dpt_lr_schedule *")
    check(lib.dpt_lr_schedule_parse(lr_schedule.encode() if lr_schedule else ffi.NULL, sched))
    cpus = lib.dpt_cpu_count()
    n_workers = workers or cpus
    if batch < n_workers:
        raise ValueError("batch %d is smaller than the %d workers" % (batch, n_workers))
    lib.dpt_blas_set_threads(threads or max(1, cpus // n_workers))

    owned = []  # datastores made here, closed at the end
    tmp = None
    try:
        all_ds, own = as_datastore(data, labels, class_names)
        if own:
            owned.append(all_ds)
        if test is None:
            train_ds, test_ds = all_ds.split_each_label(split, seed)
            owned += [train_ds, test_ds]
        else:
            train_ds = all_ds
            t_ds, own = as_datastore(test, test_labels, train_ds.class_names
                                     if test_labels is not None and
                                     np.asarray(test_labels).dtype.kind in "iu" else None)
            if own:
                owned.append(t_ds)
            test_ds = t_ds.match_classes(train_ds.class_names,
                                         test if isinstance(test, str) else None)
            owned.append(test_ds)
        names = train_ds.class_names
        if out is None:
            tmp = out = tempfile.mkdtemp(prefix="dptrain-")
        os.makedirs(out, exist_ok=True)
        model_path = os.path.join(out, "model.safetensors")

        keep = []  # C strings the config points at
        def cstr(s):
            b = ffi.new("char[]", s.encode())
            keep.append(b)
            return b
        cnames = ffi.new("const char *[]", [cstr(n) for n in names])
        queue = ProgressQueue(progress)
        stop = ffi.new("volatile int *")
        cfg = ffi.new("dpt_fit_config *")
        cfg.version = FIT_CONFIG_VERSION
        cfg.spec = cstr(spec) if spec is not None else ffi.NULL
        cfg.spec_source = cstr(source) if source else ffi.NULL
        cfg.train, cfg.test = train_ds.ptr, test_ds.ptr
        cfg.epochs, cfg.batch = int(epochs), int(batch)
        cfg.lr, cfg.momentum, cfg.weight_decay = lr or 0.0, momentum, weight_decay
        cfg.seed = int(seed)
        cfg.spmd.version, cfg.spmd.backend, cfg.spmd.n_workers = SPMD_CONFIG_VERSION, COMM_LOCAL, n_workers
        cfg.sync_bn, cfg.prefetch, cfg.eval_every_epoch = int(sync_bn), int(prefetch), int(eval_every_epoch)
        cfg.progress = lib.dpt_progress_forward
        cfg.progress_arg = queue.ptr
        cfg.model_out = cstr(model_path)
        cfg.class_names = cnames
        cfg.stop = stop
        cfg.optimizer, cfg.decoupled = kind, decoupled
        cfg.beta1, cfg.beta2, cfg.epsilon = beta1, beta2, epsilon
        cfg.lr_schedule = sched[0]
        cfg.clip_norm = clip_norm
        cfg.seq_len = 64
        cfg.precision, cfg.cuda_graph = 0, 1  # fp32; graphs where a GPU runs (the C defaults)
        res = ffi.new("dpt_fit_result *")
        status = []

        def run():  # on a library-only thread: no Python objects touched but `status`
            status.append(lib.dpt_fit(cfg, res))
            # the message is per thread: fetch it here
            status.append(ffi.string(lib.dpt_last_error()).decode("utf-8", "replace"))

        history = History()
        th = threading.Thread(target=run, name="dptrain-fit", daemon=True)
        th.start()
        pending = None
        try:
            while th.is_alive():
                history += queue.deliver(timeout=0.1)
        except BaseException as e:  # Ctrl-C or the callback failed: stop at a boundary
            stop[0] = 2
            pending = e
        while th.is_alive():
            # The workers use the datastores and the queue until dpt_fit
            # returns: wait for it, whatever else arrives meanwhile.
            try:
                th.join()
            except BaseException as e:
                stop[0] = 2
                pending = pending or e
        try:
            history += queue.deliver()
        except BaseException as e:
            pending = pending or e
        queue.close()
        if pending is not None:
            raise pending
        if status[0] != 0:
            from ._lib import DptrainError
            raise DptrainError(status[0], status[1])
        history.result = {
            "final_loss": res.final_loss, "test_accuracy": res.test_accuracy,
            "iterations": res.iterations, "train_seconds": res.train_seconds,
            "workers": res.n_workers, "model": None if tmp else model_path,
            "n_train": len(train_ds), "n_test": len(test_ds),
        }
        model = load(model_path, max_batch=128)
        return model, history
    finally:
        for d in owned:
            d.close()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def _model_net(model):
    return model.net if isinstance(model, Model) else model


def evaluate(model, data, labels=None):
    """Accuracy of model on data (a folder or IDX path, a Datastore, or
    images with labels: class indices into model.classes, or class names).
    Returns (accuracy, confusion [K, K]: row true class, column predicted)."""
    net = _model_net(model)
    classes = model.classes if isinstance(model, Model) else [str(k) for k in range(net.n_outputs)]
    if labels is not None and np.asarray(labels).dtype.kind in "iu":
        ds, own = Datastore.from_arrays(data, labels, classes), True
    else:
        ds, own = as_datastore(data, labels)
    try:
        with ds.match_classes(classes, data if isinstance(data, str) else None) as m:
            k = m.n_classes
            acc = ffi.new("double *")
            conf = np.zeros((k, k), dtype=np.uintp)
            check(lib.dpt_evaluate(net.ptr, m.ptr, acc, ffi.from_buffer("size_t[]", conf)))
            return acc[0], conf.astype(np.int64)
    finally:
        if own:
            ds.close()


def predict(model, images):
    """(probabilities [N, K], classes [N]) for images: [N, H, W] or
    [N, C, H, W], uint8 pixels or floats in [0, 1]. Images of another size
    or channel count are converted and resized as training data is (8-bit
    pixels through a memory datastore); float arrays already of the
    network's input shape are used as they are."""
    net = _model_net(model)
    c, h, w = net.input_shape
    a = np.asarray(images)
    if a.ndim == 3:
        a = a[:, None]
    if a.ndim != 4:
        raise ValueError("images must be [N, H, W] or [N, C, H, W], not of shape %s" % (a.shape,))
    n = a.shape[0]
    if a.dtype.kind == "f" and a.shape[1:] == (c, h, w):
        x = np.ascontiguousarray(a, dtype=np.float32)
    else:
        with Datastore.from_arrays(a, np.zeros(n, dtype=np.int32), ["0"]) as ds:
            x = ds.read(np.arange(n), (c, h, w))
    step = net.max_batch
    probs = np.concatenate([net.forward(x[i:i + step]) for i in range(0, n, step)]) if n else \
        np.zeros((0, net.n_outputs), dtype=np.float32)
    return probs, probs.argmax(axis=1)
