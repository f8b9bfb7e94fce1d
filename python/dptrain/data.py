"""Datastores: image folders, IDX files and numpy arrays (dptrain/data.h)."""
import os

import numpy as np

from ._lib import FOLDER_OPTIONS_VERSION, PRELOAD_AUTO, Owned, check, ffi, lib, text

_CACHE = {"auto": PRELOAD_AUTO, "memory": 1, "none": 0}


class Datastore(Owned):
    """A list of labelled images over a shared source (dpt_datastore).

    Owns its C datastore: close() (or a `with` block, or garbage
    collection) frees it. Derived datastores (split, shuffle, ...) are
    independent objects sharing the source, as in C."""

    _what = "datastore"

    _ptr = None  # until made: __del__ of a failed __init__ has nothing to free

    def __init__(self, ptr):
        self._ptr = ptr

    # ---- making ---------------------------------------------------------
    @classmethod
    def folder(cls, root, cache="auto", skip_corrupt=False, cache_budget_bytes=None):
        """An image folder root/<class>/<image> (dpt_datastore_open_folder).
        cache: "auto" (keep decoded images in memory when they fit
        cache_budget_bytes, default half the RAM), "memory" or "none"."""
        if cache not in _CACHE:
            raise ValueError("cache must be auto, memory or none, not %r" % (cache,))
        o = ffi.new("dpt_folder_options *")
        o.version = FOLDER_OPTIONS_VERSION
        o.skip_corrupt = int(bool(skip_corrupt))
        o.preload = _CACHE[cache]
        if cache_budget_bytes is None:
            cache_budget_bytes = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
        o.cache_budget_bytes = int(cache_budget_bytes)
        out = ffi.new("dpt_datastore **")
        check(lib.dpt_datastore_open_folder(os.fsencode(root), o, out))
        return cls(out[0])

    @classmethod
    def idx(cls, images, labels=None, n_classes=0):
        """MNIST-format IDX files (labels file guessed when None)."""
        out = ffi.new("dpt_datastore **")
        lab = os.fsencode(labels) if labels is not None else ffi.NULL
        check(lib.dpt_datastore_open_idx_classes(os.fsencode(images), lab, int(n_classes), out))
        return cls(out[0])

    @classmethod
    def open(cls, path, **kw):
        """A folder is an image folder, a file IDX images."""
        return cls.folder(path, **kw) if os.path.isdir(path) else cls.idx(path)

    @classmethod
    def from_arrays(cls, images, labels, class_names=None, name="<numpy>"):
        """Images [N, H, W] or [N, C, H, W] (C 1 to 4) of uint8 pixels, or of
        floats in [0, 1] (stored as 8-bit pixels: round(x * 255), as an
        image file would hold them), with labels [N]: class indices
        (integers in [0, K), K = len(class_names) or max + 1) or any values
        whose sorted distinct str() become the classes, as folder names do.
        The pixels are copied (dpt_datastore_from_memory)."""
        pix = _to_nhwc_uint8(images)
        lab, names = _labels(labels, class_names, pix.shape[0])
        n, h, w, c = pix.shape
        cnames = [ffi.new("char[]", s.encode()) for s in names]
        arr = ffi.new("const char *[]", cnames)
        out = ffi.new("dpt_datastore **")
        check(lib.dpt_datastore_from_memory(
            ffi.from_buffer("uint8_t[]", pix), n, h, w, c, ffi.from_buffer("int32_t[]", lab),
            len(names), arr, name.encode(), out))
        return cls(out[0])

    # ---- lifetime ---------------------------------------------------------
    def close(self, _free=lib.dpt_datastore_free):  # bound now: lib may be gone at exit
        if self._ptr is not None:
            _free(self._ptr)
            self._ptr = None


    # ---- queries -----------------------------------------------------------
    def __len__(self):
        return lib.dpt_datastore_n_obs(self.ptr)

    @property
    def n_classes(self):
        return lib.dpt_datastore_n_classes(self.ptr)

    @property
    def class_names(self):
        return [text(lib.dpt_datastore_class_name(self.ptr, k)) for k in range(self.n_classes)]

    @property
    def labels(self):
        """Class index of every observation, int32 [N]."""
        return np.array([lib.dpt_datastore_label(self.ptr, i) for i in range(len(self))],
                        dtype=np.int32)

    def file(self, i):
        return text(lib.dpt_datastore_file(self.ptr, i))

    def image_size(self, i=0):
        """Native (height, width, channels) of observation i."""
        h, w, c = ffi.new("int *"), ffi.new("int *"), ffi.new("int *")
        check(lib.dpt_datastore_image_size(self.ptr, i, h, w, c))
        return h[0], w[0], c[0]

    # ---- new datastores ----------------------------------------------------------
    def split_each_label(self, fraction, seed=0):
        """(first, second): per label, a random `fraction` of the
        observations in the first (MATLAB splitEachLabel)."""
        a, b = ffi.new("dpt_datastore **"), ffi.new("dpt_datastore **")
        check(lib.dpt_datastore_split_each_label(self.ptr, float(fraction), int(seed), a, b))
        return Datastore(a[0]), Datastore(b[0])

    def shuffle(self, seed):
        out = ffi.new("dpt_datastore **")
        check(lib.dpt_datastore_shuffle(self.ptr, int(seed), out))
        return Datastore(out[0])

    def partition(self, n, i):
        out = ffi.new("dpt_datastore **")
        check(lib.dpt_datastore_partition(self.ptr, int(n), int(i), out))
        return Datastore(out[0])

    def subset(self, indices):
        idx = np.ascontiguousarray(indices, dtype=np.uintp)
        if idx.size and (idx.max() >= len(self)):
            raise IndexError("subset: index %d of %d observations" % (idx.max(), len(self)))
        out = ffi.new("dpt_datastore **")
        check(lib.dpt_datastore_subset(self.ptr, ffi.from_buffer("size_t[]", idx), idx.size, out))
        return Datastore(out[0])

    def match_classes(self, names, what=None):
        """Labels re-numbered by class name against names (a model's)."""
        cn = [ffi.new("char[]", s.encode()) for s in names]
        arr = ffi.new("const char *[]", cn)
        out = ffi.new("dpt_datastore **")
        check(lib.dpt_datastore_match_classes(self.ptr, what.encode() if what else ffi.NULL,
                                              len(names), arr, out))
        return Datastore(out[0])

    # ---- reading -------------------------------------------------------------------
    def read(self, indices, shape):
        """Observations `indices` decoded to float32 [n, C, H, W] in [0, 1],
        converted and resized to shape (C, H, W) as training reads them."""
        c, h, w = (int(v) for v in shape)
        idx = np.atleast_1d(np.asarray(indices, dtype=np.int64))
        out = np.empty((idx.size, c, h, w), dtype=np.float32)
        n = len(self)
        for j, i in enumerate(idx):
            if not 0 <= i < n:
                raise IndexError("read: observation %d of %d" % (i, n))
            check(lib.dpt_datastore_read(self.ptr, int(i), c, h, w,
                                         ffi.from_buffer("float[]", out[j])))
        return out


def _to_nhwc_uint8(images):
    a = np.asarray(images)
    if a.ndim == 3:
        a = a[:, :, :, None]
    elif a.ndim == 4:
        if not 1 <= a.shape[1] <= 4:
            raise ValueError("images [N, C, H, W] need 1 to 4 channels, not %d" % a.shape[1])
        a = a.transpose(0, 2, 3, 1)
    else:
        raise ValueError("images must be [N, H, W] or [N, C, H, W], not of shape %s" % (a.shape,))
    if a.shape[0] < 1:
        raise ValueError("no images")
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or a.min() < 0 or a.max() > 1:
            raise ValueError("float images must hold pixel values in [0, 1]")
        return np.ascontiguousarray(np.rint(a * 255.0).astype(np.uint8))
    if a.dtype.kind in "iu":
        if a.min() < 0 or a.max() > 255:
            raise ValueError("integer images must hold pixel values in [0, 255]")
        return np.ascontiguousarray(a.astype(np.uint8))
    raise ValueError("images of dtype %s (uint8 or float)" % a.dtype)


def _labels(labels, class_names, n):
    lab = np.asarray(labels)
    if lab.ndim != 1 or lab.shape[0] != n:
        raise ValueError("labels must be [N] with N = %d images, not of shape %s" % (n, lab.shape))
    if lab.dtype.kind in "iu":
        k = len(class_names) if class_names is not None else int(lab.max()) + 1
        if lab.min() < 0 or lab.max() >= k:
            raise ValueError("labels must lie in [0, %d)" % k)
        names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
        return np.ascontiguousarray(lab, dtype=np.int32), [str(s) for s in names]
    strs = np.array([str(v) for v in lab.tolist()])
    # Byte-wise order, as a folder's class names are sorted (strcmp).
    names = sorted(set(strs.tolist()), key=lambda s: s.encode())
    if class_names is not None:
        names = [str(s) for s in class_names]
    pos = {s: i for i, s in enumerate(names)}
    missing = [s for s in set(strs.tolist()) if s not in pos]
    if missing:
        raise ValueError("label %r is not among class_names" % missing[0])
    return np.array([pos[s] for s in strs.tolist()], dtype=np.int32), names


def as_datastore(data, labels=None, class_names=None):
    """(datastore, owned): a Datastore as is, a path opened, arrays copied."""
    if isinstance(data, Datastore):
        return data, False
    if isinstance(data, (str, bytes, os.PathLike)):
        return Datastore.open(data), True
    if labels is None:
        raise ValueError("images given as an array need labels")
    return Datastore.from_arrays(data, labels, class_names), True
