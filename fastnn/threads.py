"""The one place where fastnn sets thread counts.

fastnn's compiled GEMMs call NumPy's own OpenBLAS (or, failing that, SciPy's; see
``fastnn/_kernels/_blas.pyx``); its own C kernels are single-threaded.  So "fastnn's threads"
are that BLAS library's threads, which by default fastnn leaves as they are set (threadpoolctl,
``OPENBLAS_NUM_THREADS``, the core count), like NumPy's own matrix products.

``set_num_threads(n)`` makes fastnn choose per compiled call, by the size of the work, and
restore the setting afterwards: a call whose largest GEMM has fewer than
``MIN_WORK_PER_THREAD`` multiply-adds per thread runs on fewer threads, down to one, and no
call on more than ``n``.  Waking a second thread costs more than its share of a small GEMM,
and on a busy machine a spinning second BLAS thread is far worse: measured here, the book's
MNIST training, whose GEMMs are 100x784x50, ran 18x slower on two threads than on one while
other processes were busy.  The thread count is a setting of the whole library: change it
from one thread while others may be running GEMMs and their results may differ in the last
bits from run to run (OpenBLAS's kernels differ by thread count).

The ``Trainer`` sets the library to one thread while it trains: its two threads, training and
evaluation, each take one core.
"""
import contextlib
import os

from fastnn._validation import check_count

__all__ = ["get_num_threads", "set_num_threads", "num_threads", "blas_limit", "for_work",
           "MIN_WORK_PER_THREAD"]

# Multiply-adds per thread below which a second BLAS thread costs more than it saves.  Measured
# on the TwoLayerNet step: at batch 100 (3.9 million in its largest GEMM) a second thread
# gained nothing (149 us on one, 161 us on two), at batch 1000 (39 million) it ran 1.5x faster.
MIN_WORK_PER_THREAD = 16_000_000

_max_threads = None
_controller = None


def _blas():
    """threadpoolctl's controller of the BLAS library that fastnn's GEMMs call."""
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController

        from fastnn._kernels._blas import BLAS_PATH

        libs = [lib for lib in ThreadpoolController().lib_controllers
                if BLAS_PATH and os.path.abspath(lib.filepath) == os.path.abspath(BLAS_PATH)]
        _controller = libs[0] if libs else False
    return _controller or None


def get_num_threads():
    """The cap on BLAS threads of fastnn's compiled calls (None: the library's setting)."""
    return _max_threads


def set_num_threads(n):
    """Cap fastnn's compiled calls at ``n`` BLAS threads (None lifts the cap); returns the
    previous cap."""
    global _max_threads
    if n is not None:
        n = check_count(n, "n")
    previous, _max_threads = _max_threads, n
    return previous


@contextlib.contextmanager
def num_threads(n):
    """``with num_threads(1): ...``: ``set_num_threads(n)`` inside the block only."""
    previous = set_num_threads(n)
    try:
        yield
    finally:
        set_num_threads(previous)


@contextlib.contextmanager
def blas_limit(n):
    """``with blas_limit(1): ...``: fastnn's BLAS library itself set to ``n`` threads inside the
    block (for every caller of it: the Trainer runs two threads, each on one core)."""
    lib = _blas()
    previous = lib.num_threads if lib is not None else None
    if lib is not None:
        lib.set_num_threads(n)
    try:
        yield
    finally:
        if lib is not None:
            lib.set_num_threads(previous)


class for_work:
    """``with for_work(multiply_adds): <compiled call>``: the BLAS thread count for a call of
    this much work (see the module doc), restored afterwards."""

    __slots__ = ("previous",)

    def __init__(self, multiply_adds):
        self.previous = None
        lib = _blas() if _max_threads is not None else None
        if lib is None:
            return
        current = lib.num_threads
        wanted = max(1, min(_max_threads, multiply_adds // MIN_WORK_PER_THREAD))
        if wanted != current:
            lib.set_num_threads(wanted)
            self.previous = current

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        if self.previous is not None:
            _blas().set_num_threads(self.previous)
