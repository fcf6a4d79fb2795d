"""The pytest-benchmark suites' shared parametrisation: a ``bench_<family>.py`` that sets
``FAMILY`` gets its test functions taking ``pair``, ``dtype`` and ``api`` run over every
registered pair of that family (fastnn.registry), as fastnn and as its twin, in float32 and
float64."""
import numpy as np
import pytest


def pytest_generate_tests(metafunc):
    family = getattr(metafunc.module, "FAMILY", None)
    if family is None or "pair" not in metafunc.fixturenames:
        return
    from fastnn.registry import FAST, REFERENCE, pairs

    chosen = pairs(family)
    metafunc.parametrize("api", [FAST, REFERENCE], ids=lambda api: api.name)
    metafunc.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
    metafunc.parametrize("pair", chosen, ids=[p.name for p in chosen])


@pytest.fixture
def pair_benchmark(benchmark, pair, dtype, api):
    """``pair_benchmark(n=100, k=10)`` times the pair on a batch of ``n`` rows of ``k``
    features, grouped beside its twin."""
    def run(n=100, k=10):
        inputs = pair.make_inputs(np.random.default_rng(0), n, k, dtype)
        benchmark.group = f"{pair.name} {np.dtype(dtype).name} ({n}, {k})"
        benchmark(pair.run, api, *inputs)
    return run
