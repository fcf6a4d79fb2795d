"""The normalization family (Dropout, BatchNormalization, MultiLayerNetExtend), fastnn against
its NumPy twins and, for the training step, PyTorch.

As a pytest-benchmark suite (regression tracking, nothing asserts on time)::

    python -m pytest benchmarks/bench_normalization.py --benchmark-only

As a script, interleaved medians of the five-hidden-layer step with batch normalization and
dropout 0.2 (batch 100, one thread) against the book's NumPy code and PyTorch::

    python -m benchmarks.bench_normalization
"""
import numpy as np
import pytest

from fastnn.benchmark import (_extend_step_case, environment, format_environment, median_time,
                              same_threads)

FAMILY = "normalization"


def test_pair(pair_benchmark):
    pair_benchmark(100, 100)  # the step's hidden width


@pytest.mark.parametrize("impl", ["fastnn", "reference", "torch"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_extend_step(benchmark, dtype, impl):
    case = _extend_step_case(100, dtype, np.random.default_rng(0))
    run = getattr(case, impl)
    if run is None:
        pytest.skip("PyTorch is not installed")
    benchmark.group = f"{case.op} {case.shape} {case.dtype}"
    with same_threads(1):
        benchmark(run)


def main(rounds=7):
    with same_threads(1):
        print(format_environment(environment()))
        for dtype in (np.float32, np.float64):
            case = _extend_step_case(100, dtype, np.random.default_rng(0))
            names = ["fastnn", "reference"] + (["torch"] if case.torch else [])
            times = median_time([getattr(case, name) for name in names], rounds, 0.05)
            t = dict(zip(names, times))
            line = (f"{case.op}, {case.shape}, {case.dtype}: fastnn {t['fastnn'] * 1e6:.0f} us, "
                    f"book {t['reference'] * 1e6:.0f} us ({t['reference'] / t['fastnn']:.2f}x)")
            if "torch" in t:
                line += f", torch {t['torch'] * 1e6:.0f} us ({t['torch'] / t['fastnn']:.2f}x)"
            print(line)


if __name__ == "__main__":
    main()
