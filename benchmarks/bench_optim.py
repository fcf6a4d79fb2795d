"""One optimizer step on the parameters of the book's TwoLayerNet(784, 50, 10), fastnn against
its NumPy twin.

As a pytest-benchmark suite (regression tracking)::

    python -m pytest benchmarks/bench_optim.py --benchmark-group-by=param:dtype,param:name

As a script, a table of medians and "speed = reference time / fastnn time" to paste::

    python -m benchmarks.bench_optim
"""
import os
import platform
import statistics
import timeit

import numpy as np
import pytest

import fastnn
from fastnn import optim
from fastnn.benchmark import cython_version
from fastnn.reference import optim as ref

# W1 784x50, b1 50, W2 50x10, b2 10: the parameters of TwoLayerNet(784, 50, 10)
SHAPES = {"W1": (784, 50), "b1": (50,), "W2": (50, 10), "b2": (10,)}
NAMES = list(optim.OPTIMIZERS)
DTYPES = {"float32": np.float32, "float64": np.float64}
IMPLS = {"fastnn": optim.OPTIMIZERS, "reference": ref.OPTIMIZERS}


def make_step(impl, name, dtype):
    """A warmed-up ``update`` of optimizer ``name`` and its arguments: state created, caches hot.

    The gradients are small and fixed, so that many repeated steps stay well-scaled.
    """
    rng = np.random.default_rng(0)
    params = {k: (0.01 * rng.standard_normal(s)).astype(dtype) for k, s in SHAPES.items()}
    grads = {k: (1e-3 * rng.standard_normal(s)).astype(dtype) for k, s in SHAPES.items()}
    opt = IMPLS[impl][name]()
    for _ in range(3):
        opt.update(params, grads)
    return opt.update, params, grads


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("name", NAMES)
def test_update(benchmark, impl, dtype, name):
    update, params, grads = make_step(impl, name, DTYPES[dtype])
    benchmark(update, params, grads)


def median_seconds(impl, name, dtype, repeat=25, number=200):
    """Median over ``repeat`` runs of the mean time of ``number`` steps."""
    update, params, grads = make_step(impl, name, dtype)
    runs = timeit.repeat(lambda: update(params, grads), repeat=repeat, number=number)
    return statistics.median(runs) / number


def header():
    return [
        f"fastnn {fastnn.__version__}, NumPy {np.__version__}, Cython {cython_version()}, "
        f"Python {platform.python_version()}",
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')} "
        "(no BLAS in these kernels: one thread)",
        "one update of TwoLayerNet(784, 50, 10) params (W1 784x50, b1 50, W2 50x10, b2 10); "
        "median of 25 x 200 steps after warm-up",
    ]


def main():
    lines = header()
    lines += ["", "| optimizer | dtype | reference (us) | fastnn (us) | speed |",
              "|---|---|---:|---:|---:|"]
    for name in NAMES:
        for dtype_name, dtype in DTYPES.items():
            t_ref = median_seconds("reference", name, dtype)
            t_fast = median_seconds("fastnn", name, dtype)
            lines.append(f"| {optim.OPTIMIZERS[name].__name__} | {dtype_name} | "
                         f"{t_ref * 1e6:.1f} | {t_fast * 1e6:.1f} | {t_ref / t_fast:.2f} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
