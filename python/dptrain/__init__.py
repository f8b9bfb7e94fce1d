"""dptrain from Python: data-parallel training of image classifiers with
libdptrain (cffi, ABI mode: no compiler needed).

High level: train(), evaluate(), predict(), load() and Model.
Custom loops: Datastore, Network, softmax_xent, Optimizer, train_step,
Parallel (the data-parallel step over local workers) and ProgressQueue.
Library failures raise DptrainError with the library's message.
"""
from ._lib import DptrainError, library_path
from .api import History, Model, evaluate, load, predict, train
from .data import Datastore
from .net import (PROGRESS_FIELDS, Network, Optimizer, Parallel, ProgressQueue, default_spec,
                  one_hot, softmax_xent, train_step)
from ._lib import lib as _lib


def cpu_count():
    """CPUs this process may run on (affinity mask, cgroup quota)."""
    return _lib.dpt_cpu_count()


def set_blas_threads(n):
    """BLAS threads per call, process-wide (dpt_blas_set_threads)."""
    _lib.dpt_blas_set_threads(int(n))


__all__ = ["DptrainError", "library_path", "History", "Model", "evaluate", "load", "predict",
           "train", "Datastore", "PROGRESS_FIELDS", "Network", "Optimizer", "Parallel",
           "ProgressQueue", "default_spec", "one_hot", "softmax_xent", "train_step", "cpu_count",
           "set_blas_threads"]
