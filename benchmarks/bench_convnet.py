"""The convnet family (SimpleConvNet, DeepConvNet: fastnn/_kernels/_convnet.pyx) for
pytest-benchmark: the registered pairs, fastnn against its twins; the training step (gradient
+ Adam, batch 100) of both networks in float32 and float64 and SimpleConvNet's predict over the
10,000 test images, fastnn, its NumPy twin and, where installed, PyTorch, on one thread
(``python -m pytest benchmarks/bench_convnet.py --benchmark-only``)."""
import pytest

from fastnn.benchmark import cases

FAMILY = "convnet"
CASES = [c for c in cases(quick=False) if "ConvNet" in c.op]


def test_pair(pair_benchmark):
    pair_benchmark(100, 1)  # 100 one-channel images


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    from fastnn.threads import num_threads

    try:
        import torch
    except ImportError:
        torch = None
    previous = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(1)
    with num_threads(1):
        yield
    if torch is not None:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("impl", ["fastnn", "reference", "torch"])
@pytest.mark.parametrize("case", CASES, ids=[f"{c.op} {c.shape} {c.dtype}" for c in CASES])
def test_case(benchmark, case, impl):
    run = getattr(case, impl)
    if run is None:
        pytest.skip("PyTorch is not installed")
    benchmark.group = f"{case.op} {case.shape} {case.dtype}"
    benchmark.pedantic(run, rounds=3 if impl == "reference" else 10, warmup_rounds=1)
