"""pytest-benchmark: the bf16 family's registered pairs (fastnn.registry) beside their twins,
and the rounding kernels on one MNIST batch (100 x 784), scalar against AVX2.

Run with ``python -m pytest benchmarks/ --benchmark-only``; nothing here asserts on time.
"""
import numpy as np
import pytest

from fastnn._kernels import _bf16

FAMILY = "bf16"


def test_pair(pair_benchmark):
    pair_benchmark(100, 784)


@pytest.mark.parametrize("kernel", [k for k in _bf16.KERNELS if k == "scalar" or _bf16.have_avx2()])
def test_round_kernel(benchmark, kernel):
    x = np.random.default_rng(0).random((100, 784), dtype=np.float32)
    out = np.empty_like(x)
    previous = _bf16.set_kernel(kernel)
    try:
        benchmark.group = "round_bf16 kernels (100, 784)"
        benchmark(_bf16.round_bf16, x, out)
    finally:
        _bf16.set_kernel(previous)
