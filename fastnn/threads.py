"""The one place where fastnn sets thread counts.

fastnn's compiled GEMMs call Intel MKL where the ``mkl`` extra is installed, else NumPy's own
OpenBLAS, else SciPy's (``FASTNN_BLAS`` chooses; see ``fastnn/_kernels/_blas.pyx``); its own C
kernels are single-threaded, but for the convnets' direct path, which splits a batch's
images over threads of its own (:func:`for_split`, by the same rules).  So "fastnn's threads"
are that BLAS library's threads, and the policy below is applied to whichever it is.  MKL keeps a count per calling thread
(``mkl_set_num_threads_local``, what threadpoolctl sets) over its process-wide one: each call
sets its own thread's count, and :func:`blas_limit` the process-wide one.  MKL runs on its GNU
OpenMP layer, whose idle threads sleep, so its pool and NumPy's OpenBLAS pool do not spin
against each other.

By default fastnn chooses them per compiled call, by the size of the work, and restores the
setting afterwards: a call whose largest GEMM has fewer than ``MIN_WORK_PER_THREAD``
multiply-adds per thread runs on fewer threads, down to one, and no call runs on more threads
than the ceiling.  The ceiling is, by default, the BLAS library's own setting (threadpoolctl,
``OPENBLAS_NUM_THREADS`` or ``MKL_NUM_THREADS``, else the core count) and never more than the
CPUs this process may run on (``os.sched_getaffinity``); ``set_num_threads(n)`` sets it to
``n`` instead (clamped to those CPUs, with a warning).  So the book's networks (GEMMs of
100x784x50, 3.9 million multiply-adds) run on one thread without anyone asking, and the test
set's 10000x784x50 forward pass on two.

Why not leave the BLAS to decide: OpenBLAS goes parallel above about 262,000 multiply-adds
(its ``GEMM_MULTITHREAD_THRESHOLD``), where waking a second thread costs more than its share,
and on a busy machine a spinning second BLAS thread is far worse: the README's Quickstart
(10,000 steps at batch 100) took 20-76 s on this 2-core machine while other processes ran,
against 5.5-6 s on one thread.

The setting is the whole process's, so calls from several threads take turns to change it
(see :class:`for_work`): each call runs on the count its work gives, whichever thread makes
it, so results do not depend on which threads run at once.  They may differ in the last bits
between thread counts (OpenBLAS splits the work differently), which is why a given work always
gets the same count.  NumPy's own products in other threads see fastnn's count while a fastnn
call is in flight.

The ``Trainer`` sets the library to one thread while it trains: its two threads, training and
evaluation, each take one core.
"""
import contextlib
import ctypes
import itertools
import os
import threading
import warnings

from fastnn._validation import check_count

__all__ = ["get_num_threads", "set_num_threads", "num_threads", "blas_limit", "for_work",
           "for_split", "available_cpus", "blas_threads", "MIN_WORK_PER_THREAD"]

# Multiply-adds per thread below which a second BLAS thread costs more than it saves.  Measured
# on the TwoLayerNet step (2-core KVM guest, one BLAS thread against two, machine otherwise
# idle): at batch 100 (3.9 million multiply-adds in its largest GEMM) a second thread gained
# nothing (149 us on one, 161 us on two); at batch 1000 (39 million) it ran 1.5x faster.
MIN_WORK_PER_THREAD = 16_000_000

# OpenBLAS runs a GEMM of at most 65536 * GEMM_MULTITHREAD_THRESHOLD (4) multiply-adds on the
# calling thread alone, whatever its setting (interface/gemm.c): such calls need no turn, and
# skipping it keeps a batch-1 training step (about 27 us) free of the bookkeeping.
_OPENBLAS_ALONE_BELOW = 65536 * 4
_alone_below = 0

_max_threads = None  # the ceiling set by set_num_threads; None: the library's own setting
_controller = None
_get = _set = None  # the BLAS library's get/set of its thread count, bound once
_per_thread = False  # True where _set sets the calling thread's count only (MKL)


def available_cpus():
    """The number of CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):
        return os.cpu_count() or 1


_cpus = available_cpus()


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


def _bind():
    """Bind the library's get/set functions once.  For OpenBLAS's own thread pool, its C
    functions directly: through threadpoolctl a get/set/restore costs 4.5 us, which is a
    sixth of a batch-1 training step; a direct ctypes call costs a tenth of that."""
    global _get, _set, _alone_below, _per_thread
    lib = _blas()
    if lib is None:
        _get = _set = False
        return
    if lib.internal_api == "openblas" and getattr(lib, "threading_layer", None) != "openmp":
        for prefix, suffix in itertools.product(("", "scipy_"), ("", "64_", "_64")):
            get = getattr(lib.dynlib, f"{prefix}openblas_get_num_threads{suffix}", None)
            put = getattr(lib.dynlib, f"{prefix}openblas_set_num_threads{suffix}", None)
            if get is not None and put is not None:
                get.restype, get.argtypes = ctypes.c_int, ()
                put.restype, put.argtypes = None, (ctypes.c_int,)
                _get, _set = get, put
                _alone_below = _OPENBLAS_ALONE_BELOW
                return
    if lib.internal_api == "mkl":
        # MKL keeps a count per calling thread (mkl_set_num_threads_local, what threadpoolctl
        # sets) over the process-wide one: each call sets its own thread's count and restores
        # it, without turns (see for_work); called directly for the same reason as OpenBLAS's
        get, put = lib.dynlib.MKL_Get_Max_Threads, lib.dynlib.MKL_Set_Num_Threads_Local
        get.restype, get.argtypes = ctypes.c_int, ()
        put.restype, put.argtypes = ctypes.c_int, (ctypes.c_int,)
        _get, _set, _per_thread = get, put, True
        return
    _get = lambda: lib.num_threads  # noqa: E731
    _set = lib.set_num_threads


def blas_threads():
    """The BLAS library's current thread count (None where threadpoolctl finds no library)."""
    if _get is None:
        _bind()
    return _get() if _get else None


def get_num_threads():
    """The ceiling set by :func:`set_num_threads` (None: the BLAS library's own setting,
    clamped to :func:`available_cpus`)."""
    return _max_threads


def set_num_threads(n):
    """Let fastnn's compiled calls use up to ``n`` BLAS threads, each as many as its work
    warrants (None: up to the library's own setting); returns the previous ceiling.

    A ceiling above :func:`available_cpus` is clamped to it, with a ``RuntimeWarning`` that
    says so: more BLAS threads than CPUs only take turns (64 threads on this 2-CPU machine made
    a gradient 16x slower), and OpenBLAS keeps every thread it started alive.
    """
    global _max_threads
    if n is not None:
        n = check_count(n, "n")
        if n > _cpus:
            warnings.warn(f"{n} threads requested, but this process may run on {_cpus} CPU(s): "
                          f"using {_cpus}", RuntimeWarning, stacklevel=2)
            n = _cpus
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
    if lib is not None and lib.internal_api == "mkl":
        # threadpoolctl sets MKL's count of the calling thread only; the block's promise is
        # the process-wide count, which this thread's own count (cleared here) would hide
        put = lib.dynlib.MKL_Set_Num_Threads
        put.restype, put.argtypes = None, (ctypes.c_int,)
        own = lib.dynlib.MKL_Set_Num_Threads_Local(0)
        previous = lib.num_threads
        put(n)
        try:
            yield
        finally:
            put(previous)
            lib.dynlib.MKL_Set_Num_Threads_Local(own)
        return
    previous = lib.num_threads if lib is not None else None
    if lib is not None:
        lib.set_num_threads(n)
    try:
        yield
    finally:
        if lib is not None:
            lib.set_num_threads(previous)


def for_split(multiply_adds):
    """The thread count for a compiled call that splits its own work over threads (the
    convnets' direct path splits a batch's images), by the rules of :class:`for_work`: at most
    the ceiling (:func:`set_num_threads`, else the BLAS library's current setting, so that
    ``blas_limit(1)`` and the Trainer's one thread hold here too; never more than the CPUs),
    and at least ``MIN_WORK_PER_THREAD`` multiply-adds per thread.

    Measured on DeepConvNet's float32 training step, 2-core KVM guest, while other work kept the
    load average at 3-4.5 (so a second core was free only part of the time): at batch 1000,
    1419 ms on one thread against 818 ms on two in one run, 963 against 974 ms in another; at
    batch 100, 313 against 253 ms and 140 against 95 ms, and once 128 against 154 ms.  The
    threads do not spin between calls, so a busy machine costs little; a quiet one should gain
    close to 2x.  To be re-measured on a quiet machine.
    """
    if _get is None:
        _bind()
    with _mutex:
        # while for_work calls are in flight the library runs at their count: the setting to
        # go by is the one they restore, so the count does not depend on other threads' calls
        setting = (_resting if _active else _get()) if _get else _cpus
    return _wanted(setting or 1, multiply_adds)


def _wanted(setting, multiply_adds):
    cap = min(setting, _cpus) if _max_threads is None else _max_threads
    return max(1, min(cap, multiply_adds // MIN_WORK_PER_THREAD))


class for_work:
    """``with for_work(multiply_adds): <compiled call>``: the BLAS thread count for a call of
    this much work (see the module doc), restored afterwards.

    The count is the library's, shared by the whole process, so calls from several threads
    take turns to change it: a call runs at once when no other is in flight or the others run
    at its count, and otherwise waits for them.  So every call runs on the count its work
    gives, whichever thread makes it, and separate networks in separate threads compute
    exactly what they compute one after the other.  On MKL, which keeps a count per calling
    thread, a call sets its own thread's count and needs no turn.  A call inside another (in
    one thread) runs on the outer call's count.
    """

    __slots__ = ("work", "mode", "previous")

    def __init__(self, multiply_adds):
        self.work = multiply_adds
        # 0: nothing to undo, 1: holds a turn, 2: nested in this thread's turn, 3: set this
        # thread's own count (MKL), to restore to self.previous
        self.mode = 0

    def __enter__(self):
        # written out rather than factored: it runs around every compiled call, and a batch-1
        # training step takes about 27 us
        global _active, _resting, _running, _waiting
        if _get is None:
            _bind()
        if not _get or self.work <= _alone_below:
            return self
        local = _local.__dict__
        if local.get("depth"):
            local["depth"] += 1
            self.mode = 2
            return self
        if _per_thread:  # MKL: this thread's own count, which no other call sees
            current = _get()
            cap = min(current, _cpus) if _max_threads is None else _max_threads
            wanted = max(1, min(cap, self.work // MIN_WORK_PER_THREAD))
            self.previous = _set(wanted)  # the thread's own count before (0: none)
            local["depth"] = 1
            self.mode = 3
            return self
        _mutex.acquire()
        try:
            while True:
                if _active == 0:
                    current = _get()
                    cap = min(current, _cpus) if _max_threads is None else _max_threads
                    wanted = max(1, min(cap, self.work // MIN_WORK_PER_THREAD))
                    if wanted != current:
                        _set(wanted)
                    _resting, _running = current, wanted
                    break
                if _wanted(_resting, self.work) == _running:
                    break
                _waiting += 1
                _turns.wait()
                _waiting -= 1
            _active += 1
        finally:
            _mutex.release()
        local["depth"] = 1
        self.mode = 1
        return self

    def __exit__(self, *exc_info):
        global _active
        if self.mode == 1:
            _local.__dict__["depth"] = 0
            _mutex.acquire()
            try:
                _active -= 1
                if _active == 0:
                    if _running != _resting:
                        _set(_resting)
                    if _waiting:
                        _turns.notify_all()
            finally:
                _mutex.release()
        elif self.mode == 2:
            _local.__dict__["depth"] -= 1
        elif self.mode == 3:
            _local.__dict__["depth"] = 0
            _set(self.previous)
        self.mode = 0


_mutex = threading.Lock()
_turns = threading.Condition(_mutex)  # calls that wait for another count
_waiting = 0
_active = 0  # calls in flight, all on _running threads
_resting = _running = None  # the library's own setting, and the count of the calls in flight
_local = threading.local()  # .depth: for_work blocks this thread is inside
