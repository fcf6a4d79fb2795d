"""fastnn.threads: thread counts chosen per call and restored; the BLAS route fastnn found."""
import os

import numpy as np
import pytest

from fastnn import threads
from fastnn._kernels import _blas
from fastnn.nets import TwoLayerNet

blas = threads._blas()
needs_blas_control = pytest.mark.skipif(blas is None, reason="threadpoolctl finds no BLAS to set")
SMALL = 3_920_000  # the book's 100x784x50 GEMM: one thread



def test_the_blas_route_is_known():
    assert _blas.BLAS_ROUTE in ("mkl-cblas", "numpy-cblas", "scipy-cython_blas")
    assert _blas.BLAS_BACKEND in _blas.available_backends()
    assert _blas.BLAS_PATH is None or os.path.exists(_blas.BLAS_PATH)


@needs_blas_control
def test_calls_are_capped_by_work_and_restored():
    start = blas.num_threads
    with threads.blas_limit(2), threads.num_threads(2):
        with threads.for_work(threads.MIN_WORK_PER_THREAD - 1):
            assert blas.num_threads == 1  # too little work for a second thread
        assert blas.num_threads == 2
        with threads.for_work(10 * threads.MIN_WORK_PER_THREAD):
            assert blas.num_threads == 2  # never above the cap
        with threads.num_threads(1), threads.for_work(10 * threads.MIN_WORK_PER_THREAD):
            assert blas.num_threads == 1
    assert blas.num_threads == start


@needs_blas_control
def test_by_default_the_work_chooses_up_to_the_library_setting():
    assert threads.get_num_threads() is None
    with threads.blas_limit(2):
        with threads.for_work(SMALL):
            assert blas.num_threads == 1  # the book's small GEMMs: one thread, unasked
        assert blas.num_threads == 2
        with threads.for_work(10 * threads.MIN_WORK_PER_THREAD):
            assert blas.num_threads == min(2, threads.available_cpus())
        with threads.for_work(100 * 50 * 10):
            # OpenBLAS runs so little on one thread anyway: left as it is
            assert blas.num_threads == (2 if threads._alone_below else 1)
    with threads.blas_limit(1):
        with threads.for_work(10 * threads.MIN_WORK_PER_THREAD):
            assert blas.num_threads == 1  # never above the library's own setting


@needs_blas_control
def test_calls_from_any_thread_run_on_their_works_count():
    import threading

    seen = []
    with threads.blas_limit(2):
        def worker():
            with threads.for_work(SMALL):
                seen.append(blas.num_threads)
                with threads.for_work(10 * threads.MIN_WORK_PER_THREAD):
                    seen.append(blas.num_threads)  # nested: the outer call's count
            seen.append(blas.num_threads)
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        assert blas.num_threads == 2
    assert seen == [1, 1, 2]


@needs_blas_control
@pytest.mark.skipif(threads.available_cpus() < 2, reason="needs two CPUs for two counts")
@pytest.mark.skipif(blas is not None and blas.internal_api == "mkl",
                    reason="MKL keeps a count per thread: no turns (the next test)")
def test_calls_wanting_another_count_wait_their_turn():
    import threading

    order = []
    with threads.blas_limit(2):
        big = threads.for_work(10 * threads.MIN_WORK_PER_THREAD)
        big.__enter__()
        order.append(("big", blas.num_threads))

        def small():
            with threads.for_work(SMALL):
                order.append(("small", blas.num_threads))
        thread = threading.Thread(target=small)
        thread.start()
        thread.join(0.2)
        assert thread.is_alive()  # waiting: the big call runs on two threads
        order.append(("big done", blas.num_threads))
        big.__exit__(None, None, None)
        thread.join(10)
        assert order == [("big", min(2, threads.available_cpus())),
                         ("big done", min(2, threads.available_cpus())), ("small", 1)]
        assert blas.num_threads == 2


def test_caps_above_the_available_cpus_are_clamped_and_said():
    cpus = threads.available_cpus()
    with pytest.warns(RuntimeWarning, match=f"{cpus + 63} threads requested.*using {cpus}"):
        previous = threads.set_num_threads(cpus + 63)
    try:
        assert threads.get_num_threads() == cpus
    finally:
        threads.set_num_threads(previous)
    assert cpus == len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus >= 1


def test_results_do_not_depend_on_the_cap():
    rng = np.random.default_rng(0)
    x, t = rng.random((300, 40)), rng.integers(0, 10, 300)
    grads = []
    for cap in (None, 1, 2):
        net = TwoLayerNet(40, 30, 10, rng=0)
        with threads.num_threads(cap):
            grads.append({k: g.copy() for k, g in net.gradient(x, t).items()})
    for other in grads[1:]:
        for key in grads[0]:
            np.testing.assert_allclose(other[key], grads[0][key], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("bad, error", [(0, ValueError), (-1, ValueError), (1.5, TypeError),
                                        (True, TypeError), ("2", TypeError)])
def test_bad_thread_counts(bad, error):
    with pytest.raises(error, match="n must be"):
        threads.set_num_threads(bad)


@pytest.mark.skipif(blas is None or blas.internal_api != "mkl", reason="fastnn's BLAS is not MKL")
@pytest.mark.skipif(threads.available_cpus() < 2, reason="needs two CPUs for two counts")
def test_on_mkl_each_call_sets_its_own_threads_count_at_once():
    import threading

    seen = []
    with threads.blas_limit(2):
        big = threads.for_work(10 * threads.MIN_WORK_PER_THREAD)
        big.__enter__()

        def small():
            with threads.for_work(SMALL):
                seen.append(blas.num_threads)
            seen.append(blas.num_threads)
        thread = threading.Thread(target=small)
        thread.start()
        thread.join(10)
        assert not thread.is_alive()  # no turn to wait for
        assert blas.num_threads == 2  # the big call's count, untouched by the small one's
        big.__exit__(None, None, None)
        assert seen == [1, 2]
        assert blas.num_threads == 2


@pytest.mark.skipif(blas is None or blas.internal_api != "mkl", reason="fastnn's BLAS is not MKL")
def test_on_mkl_the_limit_is_the_whole_process_s():
    """blas_limit promises every caller its count; threadpoolctl alone sets the calling
    thread's (the Trainer's evaluation thread would keep MKL's default)."""
    import threading

    seen = []
    with threads.blas_limit(1):
        thread = threading.Thread(target=lambda: seen.append(blas.num_threads))
        thread.start()
        thread.join()
        assert blas.num_threads == 1
    assert seen == [1]


@needs_blas_control
def test_split_calls_follow_the_same_rules():
    """threads.for_split (the convnets' direct path splits a batch over threads): capped by
    set_num_threads, else by the library's setting (so blas_limit(1), the Trainer's, holds),
    and by the CPUs, with MIN_WORK_PER_THREAD multiply-adds per thread."""
    big = 10 * threads.MIN_WORK_PER_THREAD
    cpus = threads.available_cpus()
    with threads.blas_limit(2):
        assert threads.for_split(threads.MIN_WORK_PER_THREAD - 1) == 1
        assert threads.for_split(big) == min(2, cpus)
        with threads.num_threads(1):
            assert threads.for_split(big) == 1
    with threads.blas_limit(1):
        assert threads.for_split(big) == 1
        with threads.num_threads(cpus):
            assert threads.for_split(big) == min(cpus, 10)


def test_a_split_deep_convnet_step_computes_what_one_thread_does():
    from fastnn.nets import DeepConvNet

    rng = np.random.default_rng(0)
    x, t = rng.random((6, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 6)
    np.random.seed(0)
    net = DeepConvNet(dtype=np.float32)
    results = []
    for n in (1, 2):
        with threads.num_threads(min(n, threads.available_cpus())):
            np.random.seed(1)  # the same dropout masks
            results.append({k: g.copy() for k, g in net.gradient(x, t).items()})
    for key, g in results[0].items():
        scale = np.max(np.abs(g))
        assert np.max(np.abs(results[1][key] - g)) <= 1e-5 * scale, key
