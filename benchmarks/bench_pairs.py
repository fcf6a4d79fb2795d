"""pytest-benchmark suite: every registered (fastnn, reference) pair at the book's batch of 100.

Run with ``python -m pytest benchmarks/ --benchmark-only``; the groups put each fastnn
function beside its twin.  Regression tracking, not a test: nothing here asserts on time.
"""
import numpy as np
import pytest

from fastnn.registry import FAST, PAIRS, REFERENCE


@pytest.mark.parametrize("api", [FAST, REFERENCE], ids=lambda api: api.name)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("pair", PAIRS, ids=[p.name for p in PAIRS])
def test_pair(benchmark, pair, dtype, api):
    inputs = pair.make_inputs(np.random.default_rng(0), 100, 10, dtype)
    benchmark.group = f"{pair.name} {np.dtype(dtype).name} (100, 10)"
    benchmark(pair.run, api, *inputs)
