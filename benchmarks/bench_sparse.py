"""pytest-benchmark: the sparse first layer (fastnn/_kernels/_sparse.pyx) on one MNIST batch
(100 x 784, 19% nonzero) against NumPy's dense GEMMs, and the compression's bodies side by
side.

Run with ``python -m pytest benchmarks/ --benchmark-only``; nothing here asserts on time.
"""
import numpy as np
import pytest

from fastnn._kernels import _sparse
from fastnn.benchmark import _mnist_like

BATCH, HIDDEN = 100, 50
DTYPES = {"float64": np.float64, "float32": np.float32}


def operands(dtype):
    """An MNIST batch (fastnn.benchmark's: the test images where found, else random images of
    MNIST's share of zeros), a first-layer W and a delta d, in ``dtype``."""
    rng = np.random.default_rng(1)
    x = np.ascontiguousarray(_mnist_like(rng, BATCH)[0], dtype)
    W = rng.standard_normal((x.shape[1], HIDDEN)).astype(dtype)
    d = rng.standard_normal((BATCH, HIDDEN)).astype(dtype)
    return x, W, d


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("impl", ["sparse", "numpy"])
@pytest.mark.parametrize("product", ["x @ W", "x.T @ d"])
def test_product(benchmark, product, impl, dtype):
    x, W, d = operands(DTYPES[dtype])
    forward = product == "x @ W"
    out = np.empty((BATCH, HIDDEN) if forward else (x.shape[1], HIDDEN), DTYPES[dtype])
    benchmark.group = f"{product}, MNIST batch ({BATCH}, 784), {HIDDEN} units, {dtype}"
    if impl == "sparse":
        buffers = _sparse.Buffers(*x.shape, x.dtype)
        run, args = (_sparse.matmul, (x, W, out, buffers)) if forward else \
            (_sparse.matmul_tn, (x, d, out, buffers))
        assert run(*args)
        benchmark(run, *args)
    elif forward:
        benchmark(np.dot, x, W, out=out)
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
