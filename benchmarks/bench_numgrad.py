"""The full numerical gradient of the book's TwoLayerNet(784, 50, 10) on a batch of 100:
fastnn's compiled sweep against the book's brute force (fastnn.reference.nets).

Inputs: the first 100 MNIST training images (``../shared/datasets/mnist`` beside the
checkout; skipped when absent), ~19% of whose pixels are nonzero, and random dense inputs in
[0, 1), none of which are zero.  The brute force takes seconds per run, so it is timed once.

As a pytest-benchmark suite (regression tracking)::

    python -m pytest benchmarks/bench_numgrad.py --benchmark-group-by=param:inputs

As a script, a table of medians and "speed = reference time / fastnn time" to paste::

    python -m benchmarks.bench_numgrad
"""
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import pytest

import fastnn
from fastnn import nets
from fastnn.benchmark import cython_version
from fastnn.reference import nets as ref_nets

MNIST_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "mnist"
BATCH = 100
INPUTS = ["mnist", "dense"]
DTYPES = {"float64": np.float64, "float32": np.float32}


def load_inputs(kind, dtype=np.float64):
    """(x, t) of the benchmark: MNIST's first BATCH training images, or dense random ones."""
    if kind == "mnist":
        if not MNIST_DIR.is_dir():
            pytest.skip(f"no MNIST at {MNIST_DIR}")
        from fastnn.datasets import load_mnist

        (x_train, t_train), _ = load_mnist(data_dir=MNIST_DIR, download=False)
        return x_train[:BATCH].astype(dtype), t_train[:BATCH]
    rng = np.random.default_rng(0)
    return rng.random((BATCH, 784)).astype(dtype), rng.integers(0, 10, size=BATCH)


def make_net(impl, dtype=np.float64):
    """TwoLayerNet(784, 50, 10) with the book's initial weights for np.random.seed(0)."""
    np.random.seed(0)
    module = nets if impl == "fastnn" else ref_nets
    return module.TwoLayerNet(784, 50, 10, dtype=dtype)


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("inputs", INPUTS)
def test_fastnn(benchmark, inputs, dtype):
    x, t = load_inputs(inputs, DTYPES[dtype])
    net = make_net("fastnn", DTYPES[dtype])
    net.numerical_gradient(x, t)  # warm-up
    benchmark(net.numerical_gradient, x, t)


@pytest.mark.parametrize("inputs", INPUTS)
def test_reference_brute_force(benchmark, inputs):
    x, t = load_inputs(inputs)
    net = make_net("reference")
    benchmark.pedantic(net.numerical_gradient, args=(x, t), rounds=1, iterations=1)


def median_seconds(fn, repeat):
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def header():
    try:
        from threadpoolctl import threadpool_info

        blas = "; ".join(f"{i['internal_api']} {i['version']} {i['num_threads']} threads"
                         for i in threadpool_info() if i["user_api"] == "blas")
    except ImportError:
        blas = "threadpoolctl not installed"
    return [
        f"fastnn {fastnn.__version__}, NumPy {np.__version__}, Cython {cython_version()}, "
        f"Python {platform.python_version()}",
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, BLAS: {blas}, "
        f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')}",
        f"numerical gradient of TwoLayerNet(784, 50, 10) (39,760 parameters), batch {BATCH}, "
        "the book's loss; fastnn: median of 15 runs after warm-up, reference: one run",
    ]


def main():
    lines = header()
    lines += ["", "| inputs | fastnn dtype | reference, float64 (s) | fastnn (ms) | speed |",
              "|---|---|---:|---:|---:|"]
    for inputs in INPUTS:
        try:
            x, t = load_inputs(inputs)
        except pytest.skip.Exception as skipped:
            lines.append(f"| {inputs} | skipped: {skipped} | | | |")
            continue
        ref = make_net("reference")
        t_ref = median_seconds(lambda: ref.numerical_gradient(x, t), 1)
        for dtype_name, dtype in DTYPES.items():
            xd, _ = load_inputs(inputs, dtype)
            net = make_net("fastnn", dtype)
            net.numerical_gradient(xd, t)
            t_fast = median_seconds(lambda: net.numerical_gradient(xd, t), 15)
            lines.append(f"| {inputs} | {dtype_name} | {t_ref:.2f} | {t_fast * 1e3:.2f} | "
                         f"{t_ref / t_fast:.0f} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
