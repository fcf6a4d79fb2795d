"""The one place where fastnn sets thread counts.

fastnn's compiled GEMMs call the BLAS that SciPy ships (through ``scipy.linalg.cython_blas``);
its own kernels are single-threaded.  So "fastnn's threads" are that BLAS library's threads,
controlled here through threadpoolctl.  Setting them affects SciPy's BLAS for the whole
process, and nothing else: NumPy's BLAS (a separate library) keeps its own setting.

Two BLAS pools of 2 threads each on a 2-core machine oversubscribe it: while one library's
threads spin waiting for work, the other's starve.  When comparing fastnn with NumPy code,
give both libraries the same count with ``threadpoolctl.threadpool_limits`` (as
``python -m fastnn bench --threads N`` does).
"""
import contextlib
import os

__all__ = ["get_num_threads", "set_num_threads", "num_threads"]

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
    """Threads of the BLAS behind fastnn's GEMMs (None if threadpoolctl cannot tell)."""
    lib = _blas()
    return lib.num_threads if lib is not None else None


def set_num_threads(n):
    """Run fastnn's GEMMs (SciPy's BLAS) on ``n`` threads; returns the previous count."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    lib = _blas()
    if lib is None:
        return None
    previous = lib.num_threads
    lib.set_num_threads(n)
    return previous


@contextlib.contextmanager
def num_threads(n):
    """``with num_threads(1): ...`` runs fastnn's GEMMs on ``n`` threads inside the block."""
    previous = set_num_threads(n)
    try:
        yield
    finally:
        if previous is not None:
            set_num_threads(previous)
