"""pytest-benchmark suite of the cases of ``python -m fastnn bench`` (fastnn.benchmark.cases).

Each case runs as fastnn, as its NumPy twin and, where installed, as PyTorch, in one group.
"""
import pytest

from fastnn.benchmark import cases

CASES = cases(quick=False)


@pytest.mark.parametrize("impl", ["fastnn", "reference", "torch"])
@pytest.mark.parametrize("case", CASES, ids=[f"{c.op} {c.shape} {c.dtype}" for c in CASES])
def test_case(benchmark, case, impl):
    run = getattr(case, impl)
    if run is None:
        pytest.skip("PyTorch is not installed")
    benchmark.group = f"{case.op} {case.shape} {case.dtype}"
    benchmark(run)
