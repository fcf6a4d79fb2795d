"""The one place where fastnn sets thread counts.

fastnn's compiled GEMMs call the BLAS that SciPy ships (through ``scipy.linalg.cython_blas``);
its own C kernels are single-threaded.  "fastnn's threads" are that BLAS library's threads,
set here through threadpoolctl, per call, by the size of the work:

* a call whose largest GEMM has fewer than ``MIN_WORK_PER_THREAD`` multiply-adds per thread
  runs on one thread (the cost of waking a second thread exceeds its share of the work);
* larger calls run on up to ``set_num_threads(n)`` threads, 1 by default.

The default is one thread because measurement on a shared 2-core machine found OpenBLAS's
second thread erratic: the book's 10,000-step MNIST training ran 18x slower on two threads than
on one while other processes were busy (two spinning BLAS pools, NumPy's and SciPy's, on two
cores starve each other).  Where cores are free, ``set_num_threads(2)`` speeds up large batches.

Setting the count changes SciPy's BLAS for the whole process; NumPy's BLAS (a separate
library) keeps its own.  To compare fastnn with NumPy code, give both libraries the same count
with ``threadpoolctl.threadpool_limits`` and ``set_num_threads`` (as ``python -m fastnn bench
--threads N`` does).
"""
import contextlib
import os

__all__ = ["get_num_threads", "set_num_threads", "num_threads", "MIN_WORK_PER_THREAD"]

# Multiply-adds below which a second BLAS thread costs more than it saves (batch 100 of
# 784x50 is 3.9 million; batch 1000, 39 million).
MIN_WORK_PER_THREAD = 16_000_000

_max_threads = 1
_controller = None


def _blas():
    """threadpoolctl's controller of the BLAS library that SciPy's cython_blas calls."""
    global _controller
    if _controller is None:
        import scipy
        import scipy.linalg.cython_blas  # noqa: F401  (loads the library)
        from threadpoolctl import ThreadpoolController

        # SciPy's wheels bundle their OpenBLAS in scipy.libs/ beside the package; a system
        # SciPy links a system BLAS, then the only BLAS loaded with it
        package = os.path.dirname(os.path.abspath(scipy.__file__))
        own = (package + os.sep, package + ".libs" + os.sep)
        libs = [lib for lib in ThreadpoolController().lib_controllers
                if lib.user_api == "blas" and os.path.abspath(lib.filepath).startswith(own)]
        if not libs:
            libs = [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]
        _controller = libs[0] if libs else False
    return _controller or None


def get_num_threads():
    """The most BLAS threads fastnn's compiled calls use."""
    return _max_threads


def set_num_threads(n):
    """Let fastnn's large GEMMs use up to ``n`` BLAS threads; returns the previous limit."""
    global _max_threads
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    previous, _max_threads = _max_threads, n
    return previous


@contextlib.contextmanager
def num_threads(n):
    """``with num_threads(2): ...``: ``set_num_threads(n)`` inside the block only."""
    previous = set_num_threads(n)
    try:
        yield
    finally:
        set_num_threads(previous)


def for_work(multiply_adds):
    """Set SciPy's BLAS to the thread count for a call of this much work (see module doc)."""
    lib = _blas()
    if lib is None:
        return
    wanted = max(1, min(_max_threads, multiply_adds // MIN_WORK_PER_THREAD))
    if lib.num_threads != wanted:
        lib.set_num_threads(wanted)
