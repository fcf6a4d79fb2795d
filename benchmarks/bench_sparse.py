"""pytest-benchmark: the sparse first layer (fastnn/_kernels/_sparse.pyx) on one MNIST batch
(100 x 784, 19% nonzero; ``../shared/datasets/mnist`` beside the checkout, else a random batch
of the same density) against NumPy's dense GEMMs, and the compression's bodies side by side.

Run with ``python -m pytest benchmarks/ --benchmark-only``; nothing here asserts on time.
"""
from pathlib import Path

import numpy as np
import pytest

from fastnn._kernels import _sparse

MNIST_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "mnist"
BATCH, HIDDEN = 100, 50
DTYPES = {"float64": np.float64, "float32": np.float32}


def batch(dtype):
    if MNIST_DIR.is_dir():
        from fastnn.datasets import load_mnist

        (x_train, _), _ = load_mnist(data_dir=MNIST_DIR, download=False)
        x = x_train[:BATCH]
    else:
        rng = np.random.default_rng(0)
        x = rng.random((BATCH, 784)) * (rng.random((BATCH, 784)) < 0.19)
    return np.ascontiguousarray(x, dtype)


def operands(dtype):
    rng = np.random.default_rng(1)
    x = batch(dtype)
    W = rng.standard_normal((x.shape[1], HIDDEN)).astype(dtype)
    d = rng.standard_normal((BATCH, HIDDEN)).astype(dtype)
    return x, W, d


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("impl", ["sparse", "numpy"])
def test_forward(benchmark, impl, dtype):
    x, W, _ = operands(DTYPES[dtype])
    out = np.empty((BATCH, HIDDEN), DTYPES[dtype])
    benchmark.group = f"x @ W, MNIST batch ({BATCH}, 784) x (784, {HIDDEN}) {dtype}"
    if impl == "sparse":
        buffers = _sparse.Buffers(*x.shape, x.dtype)
        assert _sparse.matmul(x, W, out, buffers)
        benchmark(_sparse.matmul, x, W, out, buffers)
    else:
        benchmark(np.dot, x, W, out=out)


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("impl", ["sparse", "numpy"])
def test_weight_gradient(benchmark, impl, dtype):
    x, _, d = operands(DTYPES[dtype])
    out = np.empty((x.shape[1], HIDDEN), DTYPES[dtype])
    benchmark.group = f"x.T @ d, MNIST batch ({BATCH}, 784) x ({BATCH}, {HIDDEN}) {dtype}"
    if impl == "sparse":
        buffers = _sparse.Buffers(*x.shape, x.dtype)
        assert _sparse.matmul_tn(x, d, out, buffers)
        benchmark(_sparse.matmul_tn, x, d, out, buffers)
    else:
        benchmark(lambda: np.dot(x.T, d, out=out))


@pytest.mark.parametrize("kernel", _sparse.kernels())
def test_compression(benchmark, kernel):
    """The forward product under each compression body (the product is the same code)."""
    x, W, _ = operands(np.float64)
    out = np.empty((BATCH, HIDDEN))
    buffers = _sparse.Buffers(*x.shape, x.dtype)
    _sparse.set_kernel(kernel)
    try:
        benchmark.group = f"x @ W by compression body, MNIST batch ({BATCH}, 784) float64"
        benchmark(_sparse.matmul, x, W, out, buffers)
    finally:
        _sparse.set_kernel(None)
