"""Tests of the dptrain Python package (run by tests/test_python.sh).

Environment: DPTRAIN_LIBRARY (the libdptrain.so under test), DPT_SOURCE_DIR
(the repository: tests/fixtures/digits400), DPT_CLI (the dptrain program:
the model-bytes comparison with the CLI; skipped without it)."""
import json
import os
import struct
import subprocess
import sys
import tempfile
import threading
import unittest

import numpy as np

import dptrain
from dptrain import DptrainError

SRC = os.environ.get("DPT_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
DIGITS = os.path.join(SRC, "tests", "fixtures", "digits400")
CLI = os.environ.get("DPT_CLI")
SCALE = np.float32(1.0) / np.float32(255.0)  # the library's 1.0f / 255.0f


def read_st(path):
    """(metadata, {name: (dtype, shape, bytes)}) of a safetensors file."""
    with open(path, "rb") as f:
        b = f.read()
    n = struct.unpack("<Q", b[:8])[0]
    hdr = json.loads(b[8:8 + n])
    meta = hdr.pop("__metadata__", {})
    data = b[8 + n:]
    return meta, {k: (v["dtype"], v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]])
                  for k, v in hdr.items()}


def load_digits():
    """digits400 decoded by Pillow (independently of the library): uint8
    [N, 28, 28] and labels in the folder's order (classes, then files,
    byte-wise sorted). Without Pillow, the library decodes them."""
    try:
        from PIL import Image
    except ImportError:
        with dptrain.Datastore.folder(DIGITS) as ds:
            x = ds.read(np.arange(len(ds)), (1, 28, 28))[:, 0]
            return np.rint(x * 255).astype(np.uint8), ds.labels, ds.class_names
    imgs, labels = [], []
    # class folders as the library lists them: not hidden, not files
    classes = sorted((c for c in os.listdir(DIGITS) if not c.startswith(".") and
                      os.path.isdir(os.path.join(DIGITS, c))), key=os.fsencode)
    for k, c in enumerate(classes):
        for f in sorted((f for f in os.listdir(os.path.join(DIGITS, c)) if not f.startswith(".")),
                        key=os.fsencode):
            with Image.open(os.path.join(DIGITS, c, f)) as im:
                imgs.append(np.asarray(im.convert("L"), dtype=np.uint8))
            labels.append(k)
    return np.stack(imgs), np.array(labels), classes


class Datastores(unittest.TestCase):
    def test_folder_and_errors(self):
        with dptrain.Datastore.folder(DIGITS) as ds:
            self.assertEqual(len(ds), 400)
            self.assertEqual(ds.class_names, [str(i) for i in range(10)])
            self.assertEqual(ds.image_size(0), (28, 28, 1))
            a, b = ds.split_each_label(0.9, seed=0)
            self.assertEqual((len(a), len(b)), (360, 40))
            self.assertEqual(np.bincount(b.labels).tolist(), [4] * 10)
            a.close(), b.close()
        self.assertRaises(ValueError, len, ds)  # closed: refused, not a crash
        ds.close()  # twice is fine
        with self.assertRaises(DptrainError) as e:
            dptrain.Datastore.folder("/nonexistent/dptrain-data")
        self.assertIn("/nonexistent/dptrain-data", str(e.exception))
        self.assertEqual(e.exception.status, 3)  # DPT_ERR_IO

    def test_arrays(self):
        rng = np.random.default_rng(1)
        pix = rng.integers(0, 256, size=(6, 5, 7), dtype=np.uint8)
        with dptrain.Datastore.from_arrays(pix, [1, 0, 2, 2, 1, 0]) as ds:
            self.assertEqual(ds.n_classes, 3)
            self.assertEqual(ds.labels.tolist(), [1, 0, 2, 2, 1, 0])
            x = ds.read([0, 3], (1, 5, 7))
            self.assertTrue(np.array_equal(x[:, 0], pix[[0, 3]].astype(np.float32) * SCALE))
        # [N, C, H, W] colour, string labels: classes sorted byte-wise
        rgb = rng.integers(0, 256, size=(4, 3, 2, 3), dtype=np.uint8)
        with dptrain.Datastore.from_arrays(rgb, ["dog", "cat", "emu", "cat"]) as ds:
            self.assertEqual(ds.class_names, ["cat", "dog", "emu"])
            self.assertEqual(ds.labels.tolist(), [1, 0, 2, 0])
            self.assertTrue(np.array_equal(ds.read([2], (3, 2, 3))[0],
                                           rgb[2].astype(np.float32) * SCALE))
        # floats in [0, 1] are stored as 8-bit pixels
        with dptrain.Datastore.from_arrays(pix.astype(np.float64) / 255, np.zeros(6, int)) as ds:
            self.assertTrue(np.array_equal(ds.read([5], (1, 5, 7))[0, 0],
                                           pix[5].astype(np.float32) * SCALE))
        for bad, lab in [(pix * 2.0, [0] * 6), (pix, [0] * 5), (pix, [0, 1, 2, 3, 4, -1]),
                         (pix[:, None].repeat(5, 1), [0] * 6)]:
            self.assertRaises(ValueError, dptrain.Datastore.from_arrays, bad, lab)


class Networks(unittest.TestCase):
    def test_forward_tables_and_errors(self):
        with dptrain.Network.from_spec(None, n_classes=10, max_batch=8, seed=3) as net:
            self.assertEqual(net.input_shape, (1, 28, 28))
            self.assertEqual(len(net.learnables()), 14)
            self.assertEqual(len(net.state()), 6)
            self.assertEqual(net.learnables()["conv1/Weights"].shape, (20, 1, 5, 5))
            x = np.random.default_rng(0).random((5, 1, 28, 28), dtype=np.float32)
            y = net.forward(x)
            self.assertEqual(y.shape, (5, 10))
            self.assertTrue(np.allclose(y.sum(1), 1, atol=1e-5))
            # params is a live view: zeroing the fc layer makes every class equally likely
            # (the table is in layer order: fc/Weights, then the 10 fc/Bias last)
            fc = net.learnables()["fc/Weights"]
            p = net.params
            off = p.size - 10 - fc.size
            self.assertTrue(np.array_equal(p[off:off + fc.size], fc.ravel()))
            p[off:off + fc.size] = 0
            self.assertTrue(np.allclose(net.forward(x), 0.1, atol=1e-6))
            self.assertRaises(ValueError, net.forward, x[:, :, :27])
            with self.assertRaises(DptrainError) as e:
                net.forward(np.zeros((9, 1, 28, 28), np.float32))  # over max_batch
            self.assertTrue(e.exception.message)
        with self.assertRaises(DptrainError) as e:
            dptrain.Network.from_spec("input in size=28x28x1\nconv c filters=3\n", n_classes=2)
        self.assertIn("<spec>:2:", str(e.exception))

    def test_custom_loop_pieces(self):
        rng = np.random.default_rng(2)
        x = rng.random((8, 1, 28, 28), dtype=np.float32)
        labels = np.arange(8) % 4
        t = dptrain.one_hot(labels, 4)
        with dptrain.Network.from_spec(None, n_classes=4, max_batch=8, seed=1) as net, \
                dptrain.Optimizer(net, "sgdm", lr=0.05) as opt:
            probs = net.forward(x, train=True)
            loss, dl = dptrain.softmax_xent(probs, t)
            ref = -np.mean(np.log(probs[np.arange(8), labels].astype(np.float64)))
            self.assertAlmostEqual(loss, ref, places=5)
            self.assertTrue(np.allclose(dl, (probs - t) / 8, atol=1e-7))
            net.backward(dl)
            g = net.grads.copy()
            w0 = net.params.copy()
            self.assertGreater(np.abs(g).max(), 0)
            opt.step(net)  # SGDM's first step: w - lr * g
            self.assertTrue(np.allclose(net.params, w0 - np.float32(0.05) * g, atol=1e-7))
            # train_step: a repeated batch is learnt
            first = dptrain.train_step(net, opt, x, t)
            for _ in range(15):
                last = dptrain.train_step(net, opt, x, t)
            self.assertLess(last, first * 0.5)

    def test_parallel_step(self):
        rng = np.random.default_rng(3)
        x = rng.random((12, 1, 28, 28), dtype=np.float32)
        labels = np.arange(12) % 10
        # synchronised batch norm: 3 workers train what one does
        with dptrain.Parallel(None, n_classes=10, batch=12, seed=5, workers=3, sync_bn=True,
                              lr=0.05) as p3, \
                dptrain.Parallel(None, n_classes=10, batch=12, seed=5, workers=1, lr=0.05) as p1:
            for it in range(1, 4):
                l3 = p3.step(x, labels, 1, it)
                l1 = p1.step(x, labels, 1, it)
                self.assertAlmostEqual(l3, l1, delta=1e-5 * abs(l1))
                hashes = {p3.replica(j).hash() for j in range(3)}
                self.assertEqual(len(hashes), 1)  # replicas bit-identical
            self.assertTrue(np.allclose(p3.net.params, p1.net.params, atol=1e-5))
            with self.assertRaises(DptrainError) as e:
                p3.step(x[:2], labels[:2])
            self.assertIn("2 observations", str(e.exception))
            net = p3.net
        self.assertRaises(ValueError, net.forward, x)  # gone with its Parallel

    def test_progress_queue_on_caller_thread(self):
        seen = []
        me = threading.get_ident()
        with dptrain.ProgressQueue(lambda r: seen.append((r["iteration"], threading.get_ident())),
                                   capacity=4) as q:
            th = threading.Thread(target=lambda: [q.send(iteration=i) for i in range(1, 4)])
            th.start(), th.join()
            self.assertIsNone(dptrain.ProgressQueue().poll())
            got = q.deliver(timeout=1)
        self.assertEqual([r["iteration"] for r in got], [1, 2, 3])
        self.assertEqual(seen, [(1, me), (2, me), (3, me)])


class Ownership(unittest.TestCase):
    def test_objects_freed_by_their_owners(self):
        """Make and drop every kind of object many times: the C heap (glibc's
        mallinfo2: small blocks in use plus mmap'ed ones) must not grow with
        the count. A network of the default spec holds megabytes, so one
        left behind per round would show at once."""
        import ctypes
        try:
            libc = ctypes.CDLL(None)
            mi = libc.mallinfo2
        except (OSError, AttributeError):
            self.skipTest("no mallinfo2 (glibc 2.33+) to measure the heap with")

        class Mallinfo2(ctypes.Structure):
            _fields_ = [(f, ctypes.c_size_t) for f in (
                "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                "uordblks", "fordblks", "keepcost")]
        mi.restype = Mallinfo2

        def heap():
            m = mi()
            return m.uordblks + m.hblkhd
        pix = np.zeros((64, 28, 28), np.uint8)
        x = np.zeros((8, 1, 28, 28), np.float32)

        def round_():
            ds = dptrain.Datastore.from_arrays(pix, np.arange(64) % 10)
            a, b = ds.split_each_label(0.5)
            with dptrain.Datastore.folder(DIGITS, cache="none") as f:
                f.shuffle(1).partition(2, 0)  # dropped unclosed: freed by __del__
            net = dptrain.Network.from_spec(None, n_classes=10, max_batch=64)
            opt = dptrain.Optimizer(net, "adam")
            net.forward(x)
            p = dptrain.Parallel(None, n_classes=10, batch=8, workers=2)
            p.step(x, np.arange(8))
            q = dptrain.ProgressQueue()
            q.send(iteration=1)
            del ds, a, b, net, opt, p, q
        for _ in range(3):
            round_()
        before = heap()
        for _ in range(30):
            round_()
        grown = heap() - before
        self.assertLess(grown, 4 << 20, "the heap grew by %d bytes over 30 rounds" % grown)


class Training(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="dptrain-pytest-")
        cls.images, cls.labels, cls.classes = load_digits()
        # the settings every comparison below shares
        cls.kw = dict(epochs=3, batch=32, workers=2, threads=1, seed=4)

    @classmethod
    def tearDownClass(cls):
        import shutil
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def folder_run(self):
        if not hasattr(Training, "_run"):
            records, threads = [], set()

            def cb(r):
                records.append(r)
                threads.add(threading.get_ident())
            out = os.path.join(self.tmp, "py")
            model, hist = dptrain.train(DIGITS, out=out, progress=cb, **self.kw)
            Training._run = (model, hist, records, threads, os.path.join(out, "model.safetensors"))
        return Training._run

    def test_train_history_and_callback(self):
        model, hist, records, threads, _ = self.folder_run()
        self.assertEqual(threads, {threading.get_ident()})  # only on this thread
        self.assertEqual(records, list(hist))
        ends = hist.epochs
        self.assertEqual([r["epoch"] for r in ends], [1, 2, 3])
        self.assertEqual(hist.result["iterations"], ends[-1]["iteration"])
        # 360 images, 2 workers of 16 each: 180 per worker, 12 batches an epoch
        self.assertEqual(hist.result["iterations"], 3 * 12)
        self.assertLess(ends[-1]["loss"], records[0]["loss"])
        self.assertEqual(model.classes, self.classes)

    def test_model_bytes_equal_cli(self):
        """Same data, seed and settings: dptrain train and dptrain.train()
        write the same model file. Its metadata holds no time stamp, host or
        path (format, spec, classes, workers, iteration, epoch): nothing in
        it may legitimately differ, so the whole file is compared, byte for
        byte, and tensor by tensor to say where a difference lies."""
        if not CLI:
            self.skipTest("DPT_CLI not set: no dptrain program to compare with")
        _, _, _, _, py_model = self.folder_run()
        out = os.path.join(self.tmp, "cli")
        kw = self.kw
        subprocess.run([CLI, "train", "--data", DIGITS, "--out", out, "--quiet",
                        "--epochs", str(kw["epochs"]), "--batch", str(kw["batch"]),
                        "--workers", str(kw["workers"]), "--threads", str(kw["threads"]),
                        "--seed", str(kw["seed"])], check=True, stdout=subprocess.DEVNULL)
        cli_model = os.path.join(out, "model.safetensors")
        m_cli, t_cli = read_st(cli_model)
        m_py, t_py = read_st(py_model)
        self.assertEqual(sorted(m_cli), ["classes", "epoch", "format", "iteration", "spec",
                                         "workers"])
        self.assertEqual(m_py, m_cli)
        self.assertEqual(sorted(t_py), sorted(t_cli))
        for k in t_cli:
            self.assertEqual(t_py[k], t_cli[k], "tensor %s differs" % k)
        with open(cli_model, "rb") as a, open(py_model, "rb") as b:
            self.assertEqual(a.read(), b.read())

    def test_arrays_train_as_the_folder(self):
        """Pixels decoded by Pillow, as numpy arrays: the same model bytes
        as training on the folder (same images, order and classes)."""
        _, _, _, _, folder_model = self.folder_run()
        out = os.path.join(self.tmp, "arrays")
        model, _ = dptrain.train(self.images, self.labels, out=out, **self.kw)
        with open(folder_model, "rb") as a, open(os.path.join(out, "model.safetensors"), "rb") as b:
            self.assertEqual(a.read(), b.read())
        model.close()

    def test_evaluate_predict_save(self):
        model, hist, _, _, path = self.folder_run()
        acc, conf = dptrain.evaluate(model, DIGITS)
        acc2, conf2 = dptrain.evaluate(model, self.images, self.labels)
        self.assertEqual(acc, acc2)
        self.assertTrue(np.array_equal(conf, conf2))
        self.assertEqual(conf.sum(), 400)
        self.assertAlmostEqual(acc, np.trace(conf) / 400)
        self.assertGreater(acc, 0.3)  # far above chance (0.1) after 3 epochs
        probs, cls = dptrain.predict(model, self.images)
        self.assertEqual(probs.shape, (400, 10))
        self.assertTrue(np.array_equal(cls, probs.argmax(1)))
        self.assertAlmostEqual(np.mean(cls == self.labels), acc)
        # floats of the input shape are used as they are: the same numbers
        p2, _ = dptrain.predict(model, self.images[:, None].astype(np.float32) * SCALE)
        self.assertTrue(np.array_equal(p2, probs))
        # a larger image is resized as training data would be
        big = np.kron(self.images[:3], np.ones((2, 2), np.uint8))
        self.assertEqual(dptrain.predict(model, big)[0].shape, (3, 10))
        # load and save: the same file
        again = os.path.join(self.tmp, "again.safetensors")
        with dptrain.load(path) as m:
            self.assertEqual(m.classes, self.classes)
            m.save(again)
        with open(path, "rb") as a, open(again, "rb") as b:
            self.assertEqual(a.read(), b.read())
        with self.assertRaises(DptrainError) as e:
            dptrain.load(os.path.join(self.tmp, "missing.safetensors"))
        self.assertIn("missing.safetensors", str(e.exception))

    def test_callback_error_stops_training(self):
        seen = []

        def cb(r):
            seen.append(r)
            if r["iteration"] == 2:
                raise RuntimeError("stop here")
        with self.assertRaises(RuntimeError):
            dptrain.train(DIGITS, epochs=50, batch=32, workers=2, seed=1, progress=cb)
        self.assertLess(seen[-1]["iteration"], 50 * 11)  # stopped early, not after 50 epochs

    def test_bad_options(self):
        with self.assertRaises(DptrainError) as e:
            dptrain.train(DIGITS, net="input in size=28x28x1\nfc f outputs=3\nsoftmax s\n",
                          epochs=1, batch=32, workers=2)
        self.assertIn("10 classes", str(e.exception))
        self.assertRaises(ValueError, dptrain.train, DIGITS, split=1.5)
        with self.assertRaises(DptrainError):
            dptrain.train(DIGITS, optimizer="rmsprop")


if __name__ == "__main__":
    unittest.main(verbosity=2)
