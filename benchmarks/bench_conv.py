"""The Convolution and Pooling layers at the book's shapes (batch 100 of MNIST), forward +
backward: fastnn against its twin (the book's NumPy code, kept in the row's dtype: the book's
own im2col computes in float64 whatever the input) and PyTorch on the CPU.

As a script, a table of interleaved medians and "speed = reference time / fastnn time"::

    python -m benchmarks.bench_conv [--rounds 7] [--threads 1] [--dtype float32]

As a pytest-benchmark suite (regression tracking): the conv family's registered pairs beside
their twins (benchmarks/conftest.py), and the layers at the book's shapes::

    python -m pytest benchmarks/bench_conv.py --benchmark-only
"""
import argparse

import numpy as np
import pytest

from fastnn import layers as L
from fastnn.benchmark import median_time
from fastnn.reference import conv as R
from fastnn.threads import blas_limit

FAMILY = "conv"

# (name, x shape, filters, filter size, stride, pad); SimpleConvNet's layer, then DeepConvNet's
CONVS = [
    ("simple conv1", (100, 1, 28, 28), 30, 5, 1, 0),
    ("deep conv1", (100, 1, 28, 28), 16, 3, 1, 1),
    ("deep conv2", (100, 16, 28, 28), 16, 3, 1, 1),
    ("deep conv3", (100, 16, 14, 14), 32, 3, 1, 1),
    ("deep conv4", (100, 32, 14, 14), 32, 3, 1, 2),
    ("deep conv5", (100, 32, 8, 8), 64, 3, 1, 1),
    ("deep conv6", (100, 64, 8, 8), 64, 3, 1, 1),
]
# (name, x shape): 2x2 windows, stride 2
POOLS = [
    ("simple pool1", (100, 30, 24, 24)),
    ("deep pool1", (100, 16, 28, 28)),
    ("deep pool2", (100, 32, 16, 16)),
    ("deep pool3", (100, 64, 8, 8)),
]


def conv_steps(shape, fn, fs, stride, pad, dtype, first_layer=False):
    """{implementation: forward + backward callable} for one convolution."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    W = (0.1 * rng.standard_normal((fn, shape[1], fs, fs))).astype(dtype)
    b = rng.standard_normal(fn).astype(dtype)
    fast, ref = L.Convolution(W, b, stride, pad), R.Convolution(W, b, stride, pad)
    dout = rng.standard_normal(fast.forward(x).shape).astype(dtype)

    def fast_step():
        fast.forward(x)
        fast.backward(dout, compute_dx=not first_layer)

    def ref_step():
        ref.forward(x)
        ref.backward(dout)
    steps = {"fastnn": fast_step, "reference": ref_step}
    torch = _torch()
    if torch is not None:
        xt = torch.tensor(x, requires_grad=not first_layer)
        Wt, bt = torch.tensor(W, requires_grad=True), torch.tensor(b, requires_grad=True)
        dt = torch.tensor(dout)

        def torch_step():
            out = torch.nn.functional.conv2d(xt, Wt, bt, stride, pad)
            out.backward(dt)
            xt.grad = Wt.grad = bt.grad = None
        steps["torch"] = torch_step
    return steps


def pool_steps(shape, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    fast, ref = L.Pooling(2, 2, 2), R.Pooling(2, 2, 2)
    dout = rng.standard_normal(fast.forward(x).shape).astype(dtype)

    def fast_step():
        fast.forward(x)
        fast.backward(dout)

    def ref_step():
        ref.forward(x)
        ref.backward(dout)
    steps = {"fastnn": fast_step, "reference": ref_step}
    torch = _torch()
    if torch is not None:
        xt = torch.tensor(x, requires_grad=True)
        dt = torch.tensor(dout)

        def torch_step():
            torch.nn.functional.max_pool2d(xt, 2, 2).backward(dt)
            xt.grad = None
        steps["torch"] = torch_step
    return steps


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def all_cases(dtype):
    for name, shape, fn, fs, stride, pad in CONVS:
        yield f"{name} {shape[1]}->{fn} {fs}x{fs} p{pad}", conv_steps(
            shape, fn, fs, stride, pad, dtype, first_layer=name.endswith("conv1"))
    for name, shape in POOLS:
        yield f"{name} {shape[1]}x{shape[2]}x{shape[3]}", pool_steps(shape, dtype)


def test_pair(pair_benchmark):
    pair_benchmark(n=100, k=10)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("impl", ["fastnn", "reference"])
@pytest.mark.parametrize("case", [c[0] for c in CONVS] + [p[0] for p in POOLS])
def test_layer(benchmark, case, impl, dtype):
    benchmark.group = f"{case} {dtype}"
    steps = dict(all_cases(np.dtype(dtype)))
    key = next(k for k in steps if k.startswith(case + " "))
    benchmark(steps[key][impl])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", choices=["float32", "float64"], action="append")
    parser.add_argument("--only", help="cases whose name contains this")
    args = parser.parse_args(argv)
    torch = _torch()
    if torch is not None:
        torch.set_num_threads(args.threads)
    print("forward + backward, batch 100 (first layers skip dx); times in ms, interleaved "
          f"medians of {args.rounds} rounds, {args.threads} thread(s)")
    print(f"{'case':<34} {'dtype':<8} {'fastnn':>8} {'twin':>8} {'torch':>8} "
          f"{'x twin':>7} {'x torch':>7}")
    with blas_limit(args.threads):
        for dtype in args.dtype or ["float32", "float64"]:
            for name, steps in all_cases(np.dtype(dtype)):
                if args.only and args.only not in name:
                    continue
                times = dict(zip(steps, median_time(list(steps.values()), args.rounds)))
                t = times.get("torch")
                print(f"{name:<34} {dtype:<8} {times['fastnn'] * 1e3:8.3f} "
                      f"{times['reference'] * 1e3:8.3f} "
                      f"{t * 1e3 if t else float('nan'):8.3f} "
                      f"{times['reference'] / times['fastnn']:7.2f} "
                      f"{t / times['fastnn'] if t else float('nan'):7.2f}")


if __name__ == "__main__":
    main()
