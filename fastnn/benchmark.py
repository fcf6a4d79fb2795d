"""Side-by-side benchmark: fastnn against its NumPy twins (and PyTorch on the CPU if installed).

``python -m fastnn bench`` or ``fastnn.bench()`` prints one table of median times and
"speed = reference time / fastnn time" per case, with a header that says what ran: versions,
the BLAS libraries with their kernels and thread counts (threadpoolctl), and whether the
OpenBLAS tuning variables were set.  All implementations of a case are timed in the same
process, interleaved round by round, so that the machine's drift hits them alike.

For a fair comparison against NumPy on a machine that sets OPENBLAS_CORETYPE or
OPENBLAS_L2_SIZE, run with both unset: ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE``.
"""
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

import fastnn
from fastnn import functions as F
from fastnn import layers as L
from fastnn import nets as N
from fastnn.reference import functions as RF
from fastnn.reference import layers as RL
from fastnn.reference import nets as RN
from fastnn._kernels import _bf16, _blas
from fastnn._kernels._blas import BLAS_BACKEND, BLAS_PATH, BLAS_ROUTE
from fastnn.threads import MIN_WORK_PER_THREAD, available_cpus, blas_threads, get_num_threads

BLAS_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "MALLOC_MMAP_THRESHOLD_")


@dataclass
class Case:
    """One benchmarked operation: callables that run it once each, set up in advance."""

    op: str
    shape: str
    dtype: str
    fastnn: Callable
    reference: Callable
    torch: Optional[Callable] = None
    rounds: Optional[int] = None  # fewer rounds for a slow case (default: the run's)
    times: dict = field(default_factory=dict)


def environment():
    """What ran: versions, BLAS libraries and threads, and the BLAS/malloc variables."""
    import scipy
    from threadpoolctl import threadpool_info

    env = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs".strip(),
        "cpus_available": available_cpus(),
        "python": platform.python_version(),
        "fastnn": fastnn.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "blas": [
            {k: info.get(k) for k in ("internal_api", "version", "architecture", "num_threads", "filepath")}
            for info in threadpool_info()
        ],
        "variables": {name: os.environ.get(name) for name in BLAS_VARIABLES},
        "fastnn_threads": get_num_threads(),
        "fastnn_blas_threads": blas_threads(),
        "fastnn_blas": f"{BLAS_ROUTE} ({os.path.basename(BLAS_PATH or '?')})",
        "fastnn_backend": BLAS_BACKEND,
        "mkl": mkl_code_path(),
        "bf16": _bf16.describe(),
        "cpu_bf16_flags": _bf16.cpu_bf16_flags(),
    }
    env["cython"] = cython_version()
    torch = _torch()
    if torch is not None:
        env["torch"] = f"{torch.__version__} ({torch.get_num_threads()} threads)"
    return env


def mkl_code_path():
    """Where fastnn's GEMMs run on MKL: its threading layer and the CPU-specific libraries it
    loaded for a GEMM (libmkl_def: its generic path, with Zen kernels; libmkl_avx2,
    libmkl_avx512...: Intel's), read from /proc/self/maps after one small GEMM; None
    elsewhere."""
    if BLAS_BACKEND != "mkl":
        return None
    import re

    for dtype in (np.float32, np.float64):
        a = np.ones((8, 8), dtype)
        _blas._gemm(a, a, np.zeros((8, 8), dtype))
    try:
        with open("/proc/self/maps") as f:
            names = sorted(set(re.findall(r"libmkl_(avx\w*|def|mc3?)\.so", f.read())))
    except OSError:
        names = []
    return {"threading_layer": _blas.MKL_THREADING_LAYER,
            "kernels": [f"libmkl_{n}" for n in names] or "?",
            "MKL_ENABLE_INSTRUCTIONS": os.environ.get("MKL_ENABLE_INSTRUCTIONS")}


def cython_version():
    """Cython's version, or '-' where it is not installed (it builds fastnn; running and
    benchmarking it need no Cython, and the test extras do not install it)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("Cython")
    except PackageNotFoundError:
        return "-"


def format_environment(env):
    lines = [
        f"fastnn {env['fastnn']}  numpy {env['numpy']}  scipy {env['scipy']}  "
        f"Cython {env.get('cython', '-')}  Python {env['python']}  torch {env.get('torch', 'not installed')}",
        f"{env['date']}  {env['machine']} ({env.get('cpus_available', '?')} available to "
        "this process)",
    ]
    for lib in env["blas"]:
        lines.append(
            f"BLAS: {lib['internal_api']} {lib['version']} kernel {lib['architecture']} "
            f"threads {lib['num_threads']}  ({os.path.basename(lib['filepath'] or '')})"
        )
    cap = env["fastnn_threads"]
    ceiling = (f"up to the BLAS setting ({env.get('fastnn_blas_threads')})" if cap is None
               else f"up to {cap}")
    lines.append(f"fastnn: GEMMs through {env.get('fastnn_backend', '?')} = {env['fastnn_blas']}; "
                 f"threads chosen per call, one per {MIN_WORK_PER_THREAD:,} multiply-adds, "
                 f"{ceiling} (fastnn.threads)")
    if env.get("mkl"):
        mkl = env["mkl"]
        kernels = mkl["kernels"] if isinstance(mkl["kernels"], str) else ", ".join(mkl["kernels"])
        lines.append(f"MKL: threading layer {mkl['threading_layer']}, CPU code path {kernels}"
                     f" (MKL_ENABLE_INSTRUCTIONS={mkl['MKL_ENABLE_INSTRUCTIONS'] or 'unset'})")
    flags = env.get("cpu_bf16_flags")
    said = ("unknown" if flags is None
            else ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in flags.items()))
    lines.append(f"bf16: {env.get('bf16', '-')}; CPU: {said}")
    lines.append("variables: " + ", ".join(
        f"{k}={'unset' if v is None else v}" for k, v in env["variables"].items()))
    return "\n".join(lines)


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def _calls_per_sample(fn, min_time):
    """How many calls of ``fn`` make one timed sample of at least ``min_time`` seconds (a
    power of two), after one warm-up call; a call slower than min_time is its own sample."""
    start = time.perf_counter()
    fn()
    n = 1
    if time.perf_counter() - start < min_time:
        while True:
            start = time.perf_counter()
            for _ in range(n):
                fn()
            if time.perf_counter() - start >= min_time:
                break
            n *= 2
    return n


def median_time(fns, rounds=7, min_time=0.02):
    """Median seconds per call of each callable in ``fns``, measured round-robin.

    Each callable is first run until it has taken ``min_time`` (warm-up, and the number of
    calls per sample); then ``rounds`` samples of each are taken, interleaved.
    """
    loops = [_calls_per_sample(fn, min_time) for fn in fns]
    samples = [[] for _ in fns]
    for _ in range(rounds):
        for fn, n, out in zip(fns, loops, samples):
            start = time.perf_counter()
            for _ in range(n):
                fn()
            out.append((time.perf_counter() - start) / n)
    return [statistics.median(s) for s in samples]


# --- cases ------------------------------------------------------------------------------------

def _softmax_loss_case(n, k, dtype, rng):
    x = rng.standard_normal((n, k)).astype(dtype)
    t = rng.integers(0, k, n)
    layer = RL.SoftmaxWithLoss()

    def book():
        layer.forward(x, t)
        layer.backward(1)
    return Case("softmax+CE fwd+bwd", f"{n}x{k}", np.dtype(dtype).name,
                lambda: F.softmax_loss_grad(x, t), book, _torch_softmax_loss(x, t))


def _affine_case(n, d, h, dtype, rng):
    x = rng.standard_normal((n, d)).astype(dtype)
    W = (0.01 * rng.standard_normal((d, h))).astype(dtype)
    b = np.zeros(h, dtype)
    dout = rng.standard_normal((n, h)).astype(dtype)

    def run(api_layers):
        layer = api_layers.Affine(W, b)

        def step():
            layer.forward(x)
            layer.backward(dout)
        return step
    return Case("Affine fwd+bwd", f"{n}x{d}->{h}", np.dtype(dtype).name, run(L), run(RL),
                _torch_affine(x, W, b, dout))


def _mnist_like(rng, n, d=784):
    """n MNIST test images when the files are found (FASTNN_DATA or ../shared/datasets),
    else float32 images in [0, 1] with MNIST's share of zero pixels (about 80%)."""
    images = _mnist_test_images()
    if images is not None and n <= len(images[0]):
        rows = rng.choice(len(images[0]), n, replace=False)
        return images[0][rows], images[1][rows].astype(np.int64)
    x = rng.random((n, d), dtype=np.float32)
    x[rng.random((n, d)) < 0.8] = 0
    return x, rng.integers(0, 10, n)


_MNIST = []


def _mnist_test_images():
    if not _MNIST:
        from fastnn.datasets import DatasetError, load_mnist

        shared = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "datasets", "mnist")
        data_dir = os.environ.get("FASTNN_DATA") or (shared if os.path.isdir(shared) else None)
        try:
            _MNIST.append(load_mnist(data_dir=data_dir, download=False)[1])
        except (DatasetError, OSError):
            _MNIST.append(None)
    return _MNIST[0]


def _net_step_case(op, make, n, dtype, rng, torch_sizes, lr=0.1):
    x32, t = _mnist_like(rng, n)
    # the reference is the book's code as written, float32 images into float64 weights,
    # whatever fastnn's dtype: the baseline a user of the book's code starts from
    fast_net, ref_net = make(N, dtype), make(RN, np.float64)
    x_fast = x32.astype(dtype)  # fastnn: data cast once, up front, to the network's dtype

    def fast_step():
        grads = fast_net.gradient(x_fast, t)
        for key, g in grads.items():
            fast_net.params[key] -= lr * g

    def ref_step():
        # the book's way: float32 images straight into float64 weights
        grads = ref_net.gradient(x32, t)
        for key, g in grads.items():
            ref_net.params[key] -= lr * g

    return Case(op, f"batch {n}", np.dtype(dtype).name, fast_step, ref_step,
                _torch_mlp_step(x_fast, t, torch_sizes, dtype, lr))


def _bf16_step_case(op, make, n, rng, torch_sizes, lr=0.1, seed_dropout=False):
    """A bf16 network's step beside the same network's float32 step (the 'reference' column
    of the row), on the same batch: the speed-up column is float32 time / bf16 time."""
    x32, t = _mnist_like(rng, n)
    nets = {}
    for precision in (None, "bf16"):
        if seed_dropout:
            np.random.seed(0)
        nets[precision] = make(precision)

    def step(net):
        def run():
            grads = net.gradient(x32, t)
            for key, g in grads.items():
                net.params[key] -= lr * g
        return run
    return Case(op, f"batch {n}", "bf16", step(nets["bf16"]), step(nets[None]),
                _torch_mlp_step(x32, t, torch_sizes, np.float32, lr, autocast=True))


def _two_layer_bf16(n, rng):
    return _bf16_step_case(
        "TwoLayerNet step",
        lambda p: N.TwoLayerNet(784, 50, 10, dtype=np.float32, rng=0, precision=p),
        n, rng, [784, 50, 10])


def _extend_bf16(n, rng, ratio=0.2):
    return _bf16_step_case(
        "MultiLayerNetExtend(5x100, BN, dropout 0.2) step",
        lambda p: N.MultiLayerNetExtend(784, [100] * 5, 10, use_batchnorm=True,
                                        use_dropout=True, dropout_ration=ratio,
                                        dtype=np.float32, precision=p),
        n, rng, [784] + [100] * 5 + [10], seed_dropout=True)


def _two_layer(n, dtype, rng):
    return _net_step_case(
        "TwoLayerNet step", lambda api, dt: api.TwoLayerNet(784, 50, 10, dtype=dt, rng=0),
        n, dtype, rng, [784, 50, 10])


def _five_layer(n, dtype, rng):
    return _net_step_case(
        "MultiLayerNet(5x100) step",
        lambda api, dt: api.MultiLayerNet(784, [100] * 5, 10, dtype=dt, rng=0),
        n, dtype, rng, [784] + [100] * 5 + [10])


def _extend_step_case(n, dtype, rng, ratio=0.2, lr=0.1):
    """MultiLayerNetExtend(784, [100] * 5, 10) with batch normalization and dropout: the
    book's common/multi_layer_net_extend.py (through its twin, float32 images into float64
    weights), fastnn in the row's dtype, PyTorch's BatchNorm1d + Dropout."""
    x32, t = _mnist_like(rng, n)
    options = dict(use_batchnorm=True, use_dropout=True, dropout_ration=ratio)
    np.random.seed(0)
    fast_net = N.MultiLayerNetExtend(784, [100] * 5, 10, dtype=dtype, **options)
    ref_net = RN.MultiLayerNetExtend(784, [100] * 5, 10, **options)
    x_fast = x32.astype(dtype)

    def step(net, x):
        def run():
            grads = net.gradient(x, t)
            for key, g in grads.items():
                net.params[key] -= lr * g
        return run
    return Case("MultiLayerNetExtend(5x100, BN, dropout 0.2) step", f"batch {n}",
                np.dtype(dtype).name, step(fast_net, x_fast), step(ref_net, x32),
                _torch_mlp_step(x_fast, t, [784] + [100] * 5 + [10], dtype, lr,
                                batchnorm=True, dropout=ratio))


def _predict_case(dtype, rng):
    x32, t = _mnist_like(rng, 10000)
    fast_net = N.TwoLayerNet(784, 50, 10, weight_init_std=0.1, dtype=dtype, rng=0)
    ref_net = RN.TwoLayerNet(784, 50, 10, weight_init_std=0.1, dtype=dtype, rng=0)
    x_fast = x32.astype(dtype)
    return Case("predict+accuracy, test set", "10000x784", np.dtype(dtype).name,
                lambda: fast_net.accuracy(x_fast, t), lambda: ref_net.accuracy(x32, t))


def _numerical_gradient_case(rng):
    x32, t = _mnist_like(rng, 100)
    fast_net = N.TwoLayerNet(784, 50, 10, rng=0)
    ref_net = RN.TwoLayerNet(784, 50, 10, rng=0)
    x = x32.astype(np.float64)
    # the book's brute force runs 79,520 forward passes: one round of it is enough
    return Case("numerical gradient, TwoLayerNet", "batch 100", "float64",
                lambda: fast_net.numerical_gradient(x, t), lambda: ref_net.numerical_gradient(x, t),
                rounds=1)


_CONVNETS = {"SimpleConvNet": (N.SimpleConvNet, RN.SimpleConvNet),
             "DeepConvNet": (N.DeepConvNet, RN.DeepConvNet)}


def _convnet_step_case(name, n, dtype, rng):
    """A training step of the book's ch07/ch08 settings: gradient + Adam (lr 0.001)."""
    from fastnn.optim import Adam
    from fastnn.reference.optim import Adam as RefAdam

    x32, t = _mnist_like(rng, n)
    x32 = x32.reshape(n, 1, 28, 28)
    fast_cls, ref_cls = _CONVNETS[name]
    np.random.seed(0)
    fast_net = fast_cls(dtype=dtype)
    np.random.seed(0)
    ref_net = ref_cls()  # the book's code as written: float32 images into float64 weights
    fast_opt, ref_opt = Adam(lr=0.001), RefAdam(lr=0.001)
    x_fast = x32.astype(dtype)

    def fast_step():
        fast_opt.update(fast_net.params, fast_net.gradient(x_fast, t))

    def ref_step():
        ref_opt.update(ref_net.params, ref_net.gradient(x32, t))

    return Case(f"{name} step (Adam)", f"batch {n}", np.dtype(dtype).name, fast_step, ref_step,
                _torch_convnet_step(name, x_fast, t, dtype), rounds=3)


def _convnet_bf16(name, n, rng):
    """The convnet step of the float32 row (gradient + Adam) with precision='bf16', beside the
    same network's float32 step (the 'reference' column): speed-up = float32 / bf16 time."""
    from fastnn.optim import Adam

    x32, t = _mnist_like(rng, n)
    x32 = x32.reshape(n, 1, 28, 28)
    steps = {}
    for precision in (None, "bf16"):
        np.random.seed(0)
        net = _CONVNETS[name][0](dtype=np.float32, precision=precision)
        opt = Adam(lr=0.001)
        steps[precision] = lambda net=net, opt=opt: opt.update(net.params, net.gradient(x32, t))
    return Case(f"{name} step (Adam)", f"batch {n}", "bf16", steps["bf16"], steps[None],
                _torch_convnet_step(name, x32, t, np.float32, autocast=True), rounds=3)


def _convnet_predict_case(name, dtype, rng):
    x32, t = _mnist_like(rng, 10000)
    x32 = x32.reshape(-1, 1, 28, 28)
    fast_cls, ref_cls = _CONVNETS[name]
    np.random.seed(0)
    fast_net = fast_cls(dtype=dtype)
    np.random.seed(0)
    ref_net = ref_cls(dtype=dtype)
    x_fast = x32.astype(dtype)
    return Case(f"{name} predict+accuracy, test set", "10000x1x28x28", np.dtype(dtype).name,
                lambda: fast_net.accuracy(x_fast, t), lambda: ref_net.accuracy(x32, t),
                _torch_convnet_predict(name, x_fast, dtype), rounds=1)


def _conv_case(shape, fn, fs, pad, dtype, rng):
    """The Convolution layer at a shape of the book's networks, forward + backward (dx too)."""
    from fastnn.reference import conv as RC

    x = rng.standard_normal(shape).astype(dtype)
    W = (0.1 * rng.standard_normal((fn, shape[1], fs, fs))).astype(dtype)
    b = np.zeros(fn, dtype)
    dout = rng.standard_normal((shape[0], fn, shape[2] + 2 * pad - fs + 1,
                                shape[3] + 2 * pad - fs + 1)).astype(dtype)

    def run(module):
        layer = module.Convolution(W, b, 1, pad)

        def step():
            layer.forward(x)
            layer.backward(dout)
        return step
    return Case("Convolution fwd+bwd", f"{'x'.join(map(str, shape))} {fn}@{fs}x{fs} p{pad}",
                np.dtype(dtype).name, run(L), run(RC), _torch_conv(x, W, b, pad, dout))


def _pool_case(shape, dtype, rng):
    """The book's 2x2 stride-2 max pooling, forward + backward."""
    from fastnn.reference import conv as RC

    x = rng.standard_normal(shape).astype(dtype)
    dout = rng.standard_normal(shape[:2] + (shape[2] // 2, shape[3] // 2)).astype(dtype)

    def run(module):
        layer = module.Pooling(2, 2, 2)

        def step():
            layer.forward(x)
            layer.backward(dout)
        return step
    return Case("Pooling 2x2/2 fwd+bwd", "x".join(map(str, shape)), np.dtype(dtype).name,
                run(L), run(RC), _torch_pool(x, dout))


def cases(quick=False):
    rng = np.random.default_rng(0)
    out = []
    for dtype in (np.float32, np.float64):
        batches = (100,) if quick else (1, 100, 1000)
        out += [_two_layer(n, dtype, rng) for n in batches]
        if dtype == np.float32:  # beside the float32 rows
            out.append(_two_layer_bf16(100, rng))
        if not quick:
            out.append(_five_layer(100, dtype, rng))
        out.append(_extend_step_case(100, dtype, rng))
        if dtype == np.float32:
            out.append(_extend_bf16(100, rng))
        shapes = [(100, 10)] if quick else [(100, 10), (1000, 10), (10000, 1000)]
        out += [_softmax_loss_case(n, k, dtype, rng) for n, k in shapes]
        out += [_affine_case(100, 784, 50, dtype, rng), _affine_case(100, 50, 10, dtype, rng)]
        if not quick:
            out.append(_predict_case(dtype, rng))
        # SimpleConvNet's convolution and pooling, and a convolution of DeepConvNet's
        out += [_conv_case((100, 1, 28, 28), 30, 5, 0, dtype, rng),
                _pool_case((100, 30, 24, 24), dtype, rng)]
        if not quick:
            out.append(_conv_case((100, 16, 14, 14), 32, 3, 1, dtype, rng))
    for dtype in (np.float32, np.float64):
        out.append(_convnet_step_case("SimpleConvNet", 100, dtype, rng))
        if dtype == np.float32:
            out.append(_convnet_bf16("SimpleConvNet", 100, rng))
        if not quick:
            out.append(_convnet_step_case("DeepConvNet", 100, dtype, rng))
            if dtype == np.float32:
                out.append(_convnet_bf16("DeepConvNet", 100, rng))
    if not quick:
        out.append(_convnet_predict_case("SimpleConvNet", np.float32, rng))
        out.append(_numerical_gradient_case(rng))
    return out


# --- PyTorch counterparts (only where torch is installed) ----------------------------------

def _torch_softmax_loss(x, t):
    torch = _torch()
    if torch is None:
        return None
    xt = torch.tensor(x, requires_grad=True)
    tt = torch.tensor(t)

    def step():
        loss = torch.nn.functional.cross_entropy(xt, tt)
        loss.backward()
        xt.grad = None
    return step


def _torch_conv(x, W, b, pad, dout):
    torch = _torch()
    if torch is None:
        return None
    xt = torch.tensor(x, requires_grad=True)
    Wt = torch.tensor(W, requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    dt = torch.tensor(dout)

    def step():
        torch.nn.functional.conv2d(xt, Wt, bt, 1, pad).backward(dt)
        xt.grad = Wt.grad = bt.grad = None
    return step


def _torch_pool(x, dout):
    torch = _torch()
    if torch is None:
        return None
    xt = torch.tensor(x, requires_grad=True)
    dt = torch.tensor(dout)

    def step():
        torch.nn.functional.max_pool2d(xt, 2, 2).backward(dt)
        xt.grad = None
    return step


def _torch_affine(x, W, b, dout):
    torch = _torch()
    if torch is None:
        return None
    xt = torch.tensor(x, requires_grad=True)
    Wt = torch.tensor(W, requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    dt = torch.tensor(dout)

    def step():
        out = xt @ Wt + bt
        out.backward(dt)
        xt.grad = Wt.grad = bt.grad = None
    return step


def _torch_mlp_step(x, t, sizes, dtype, lr, batchnorm=False, dropout=0.0, autocast=False):
    """PyTorch's step of the same network (``autocast``: under bfloat16 autocast, PyTorch's
    mixed precision on the CPU)."""
    torch = _torch()
    if torch is None:
        return None
    torch_dtype = torch.float32 if np.dtype(dtype) == np.float32 else torch.float64
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[i], sizes[i + 1], dtype=torch_dtype))
        if i < len(sizes) - 2:
            if batchnorm:  # the book's eps, 10e-7, and its momentum 0.9 (PyTorch's 0.1)
                layers.append(torch.nn.BatchNorm1d(sizes[i + 1], eps=10e-7, momentum=0.1,
                                                   dtype=torch_dtype))
            layers.append(torch.nn.ReLU())
            if dropout:
                layers.append(torch.nn.Dropout(dropout))
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    xt, tt = torch.tensor(x), torch.tensor(t)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = torch.nn.functional.cross_entropy(model(xt), tt)
        loss.backward()
        opt.step()
    return step


def _torch_convnet(name, dtype):
    torch = _torch()
    nn = torch.nn
    torch_dtype = torch.float32 if np.dtype(dtype) == np.float32 else torch.float64
    if name == "SimpleConvNet":
        layers = [nn.Conv2d(1, 30, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                  nn.Linear(4320, 100), nn.ReLU(), nn.Linear(100, 10)]
    else:
        layers, channels = [], 1
        for i, (filters, pad) in enumerate([(16, 1), (16, 1), (32, 1), (32, 2), (64, 1), (64, 1)]):
            layers += [nn.Conv2d(channels, filters, 3, padding=pad), nn.ReLU()]
            channels = filters
            if i % 2:
                layers.append(nn.MaxPool2d(2))
        layers += [nn.Flatten(), nn.Linear(1024, 50), nn.ReLU(), nn.Dropout(0.5),
                   nn.Linear(50, 10), nn.Dropout(0.5)]
    return nn.Sequential(*layers).to(torch_dtype)


def _torch_convnet_step(name, x, t, dtype, autocast=False):
    torch = _torch()
    if torch is None:
        return None
    model = _torch_convnet(name, dtype)
    opt = torch.optim.Adam(model.parameters(), lr=0.001)
    xt, tt = torch.from_numpy(x), torch.from_numpy(t)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = torch.nn.functional.cross_entropy(model(xt), tt)
        loss.backward()
        opt.step()
    return step


def _torch_convnet_predict(name, x, dtype):
    torch = _torch()
    if torch is None:
        return None
    model = _torch_convnet(name, dtype).eval()
    xt = torch.from_numpy(x)

    def predict():
        with torch.no_grad():
            for start in range(0, len(x), 100):
                model(xt[start:start + 100]).argmax(1)
    return predict


# --- running and reporting ----------------------------------------------------------------------

def run(selected, rounds=7, min_time=0.02, progress=None):
    """Time every case; ``progress(index, total, case)`` is called before each."""
    for index, case in enumerate(selected):
        if progress:
            progress(index, len(selected), case)
        names = ["fastnn", "reference"] + (["torch"] if case.torch else [])
        fns = [getattr(case, name) for name in names]
        for name, t in zip(names, median_time(fns, min(rounds, case.rounds or rounds), min_time)):
            case.times[name] = t
    return selected


class _Progress:
    """``[ 3/21] TwoLayerNet step, batch 100, float32 (19 left)`` on one line of a terminal's
    stderr, rewritten per case and cleared at the end; nothing where stderr is no terminal."""

    def __init__(self, stream=None):
        self.stream = sys.stderr if stream is None else stream
        self.enabled = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.width = 0

    def __call__(self, index, total, case):
        if self.enabled:
            text = (f"[{index + 1:{len(str(total))}d}/{total}] {case.op}, {case.shape}, "
                    f"{case.dtype} ({total - index - 1} left)")
            self.stream.write("\r" + text.ljust(self.width))
            self.stream.flush()
            self.width = len(text)

    def close(self):
        if self.enabled and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()


def _fmt_time(seconds):
    if seconds is None:
        return "-"
    for unit, scale in (("s", 1), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


NOTES = [
    "reference of the network steps: the book's code as written (float32 images into float64 "
    "weights); elsewhere the NumPy twin in the row's dtype (for softmax+CE, the book's "
    "SoftmaxWithLoss forward and backward; fastnn's is softmax_loss_grad, one fused pass)",
    "speed-up = reference time / fastnn time; vs torch = PyTorch time / fastnn time "
    "(same dtype and threads)",
    "bf16 rows: fastnn with precision='bf16' (the bf16 line of the header says which kernel "
    "ran); their reference is fastnn's float32 step of the same network, so their speed-up "
    "is float32 time / bf16 time; their torch is PyTorch float32 under bfloat16 autocast",
]


def table(selected):
    head = ("operation", "shape", "dtype", "fastnn", "reference", "speed-up", "torch", "vs torch")
    rows = []
    for c in selected:
        f, r, tt = c.times["fastnn"], c.times["reference"], c.times.get("torch")
        rows.append((c.op, c.shape, c.dtype, _fmt_time(f), _fmt_time(r), f"{r / f:.2f}x",
                     _fmt_time(tt), f"{tt / f:.2f}x" if tt else "-"))
    widths = [max(len(str(row[i])) for row in rows + [head]) for i in range(len(head))]
    line = lambda row: "| " + " | ".join(str(v).ljust(w) for v, w in zip(row, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(head), sep] + [line(r) for r in rows])


def scaling_plot(path, threads=1, rounds=5, batches=(1, 10, 100, 1000, 10000)):
    """Write a PNG of the TwoLayerNet step's speed-up over its twin (and PyTorch) against the
    batch size; returns the measured cases.  Needs matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("the plot needs matplotlib: pip install 'fastnn[plot]'") from exc
    from fastnn.io import atomic_open

    rng = np.random.default_rng(0)
    with same_threads(threads):
        measured = run([_two_layer(n, dt, rng) for dt in (np.float32, np.float64) for n in batches],
                       rounds=rounds, min_time=0.02)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for dtype, marker in (("float32", "o"), ("float64", "s")):
        rows = [c for c in measured if c.dtype == dtype]
        ax.plot(batches, [c.times["reference"] / c.times["fastnn"] for c in rows],
                marker + "-", label=f"vs the book's NumPy code, {dtype}")
        if all("torch" in c.times for c in rows):
            ax.plot(batches, [c.times["torch"] / c.times["fastnn"] for c in rows],
                    marker + "--", label=f"vs PyTorch, {dtype}")
    ax.axhline(1, color="gray", lw=0.8)
    ax.set(xscale="log", xlabel="batch size", ylabel="speed-up (other time / fastnn time)",
           title=f"TwoLayerNet(784, 50, 10) training step, {threads} thread(s)")
    ax.legend()
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return measured


@contextlib.contextmanager
def same_threads(threads):
    """Every implementation on ``threads`` threads: every BLAS library loaded (NumPy's, which
    fastnn's GEMMs use too, and SciPy's) and PyTorch's pool; never more than the CPUs this
    process may use (OpenBLAS keeps every thread it starts)."""
    from threadpoolctl import threadpool_limits

    threads = min(threads, available_cpus())
    torch = _torch()
    if torch is not None:
        torch.set_num_threads(threads)
    with threadpool_limits(limits=threads):
        yield


def bench(quick=False, threads=1, rounds=7, json_path=None, out=None):
    """Run the side-by-side benchmark and print its table (to ``out``, default sys.stdout as
    it is at the call); returns the cases with times.

    ``threads`` is the thread count of every implementation alike.
    """
    out = sys.stdout if out is None else out
    with same_threads(threads):
        env = environment()
        print(format_environment(env), file=out, flush=True)
        progress = _Progress()
        try:
            selected = run(cases(quick), rounds=rounds, min_time=0.005 if quick else 0.05,
                           progress=progress)
        finally:
            progress.close()
    print(table(selected), file=out, flush=True)
    for note in NOTES:
        print(note, file=out)
    if json_path:
        from fastnn.io import atomic_open

        record = {"environment": env, "results": [
            {"op": c.op, "shape": c.shape, "dtype": c.dtype, "seconds": c.times} for c in selected]}
        with atomic_open(json_path, "w") as f:
            json.dump(record, f, indent=1)
    return selected


# --- the same steps under each BLAS backend (fastnn bench --backends) --------------------------

def _gemm_case(m, k, n, trans_a, trans_b, label, dtype, rng):
    """One GEMM of the TwoLayerNet step, through fastnn's BLAS door (_blas._gemm); dtype
    "bf16": bfloat16 operands (the upper halves of float32s), float32 out (MKL only)."""
    bf16 = dtype == "bf16"
    real = np.float32 if bf16 else dtype
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(real)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(real)
    if bf16:
        a, b = [(x.view(np.uint32) >> 16).astype(np.uint16) for x in (a, b)]
    c = np.zeros((m, n), real)
    return (f"GEMM {label}", f"{m}x{k}x{n}", "bf16->f32" if bf16 else np.dtype(dtype).name,
            lambda: _blas._gemm(a, b, c, trans_a, trans_b, 1.0, 0.0))


def backend_cases(quick=False):
    """(operation, shape, dtype, callable) of what --backends compares: the TwoLayerNet and
    SimpleConvNet steps in float32 and float64, the step's three GEMM shapes and 2048^3."""
    rng = np.random.default_rng(0)
    out = []
    for dtype in (np.float32, np.float64):
        case = _two_layer(100, dtype, rng)
        out.append((case.op, case.shape, case.dtype, case.fastnn))
    for dtype in (np.float32, np.float64):
        case = _convnet_step_case("SimpleConvNet", 100, dtype, rng)
        out.append((case.op, case.shape, case.dtype, case.fastnn))
    if not quick:
        for dtype in (np.float32, np.float64):
            out += [_gemm_case(100, 784, 50, False, False, "x.W1", dtype, rng),
                    _gemm_case(784, 100, 50, True, False, "xT.d", dtype, rng),
                    _gemm_case(100, 50, 784, False, True, "d.W1T", dtype, rng),
                    _gemm_case(2048, 2048, 2048, False, False, "large", dtype, rng)]
        if _blas.HAVE_GEMM_BF16:  # MKL's bfloat16 GEMM (float32 out), for the bf16 path
            out += [_gemm_case(100, 784, 50, False, False, "x.W1", "bf16", rng),
                    _gemm_case(784, 100, 50, True, False, "xT.d", "bf16", rng),
                    _gemm_case(100, 50, 784, False, True, "d.W1T", "bf16", rng),
                    _gemm_case(2048, 2048, 2048, False, False, "large", "bf16", rng)]
    return out


def _backend_worker(threads, quick, min_time):
    """One backend's side of --backends (run with FASTNN_BLAS set): sets up and calibrates
    its cases, prints its environment as a JSON line, then for every "round" line on stdin
    prints one JSON line of seconds per call, case by case, until "quit"."""
    with same_threads(threads):
        env = environment()
        cases_ = backend_cases(quick)
        loops = [_calls_per_sample(fn, min_time) for _, _, _, fn in cases_]
        print(json.dumps({"environment": env,
                          "cases": [list(c[:3]) for c in cases_]}), flush=True)
        for line in sys.stdin:
            if line.strip() != "round":
                break
            times = []
            for (_, _, _, fn), n in zip(cases_, loops):
                start = time.perf_counter()
                for _ in range(n):
                    fn()
                times.append((time.perf_counter() - start) / n)
            print(json.dumps(times), flush=True)


def bench_backends(quick=False, threads=1, rounds=7, json_path=None, out=None):
    """The steps under each BLAS backend this environment has, side by side; returns
    {backend: {"environment": ..., "cases": [...], "seconds": [median per case]}}.

    The backend is chosen at import, so each runs in a process of its own (FASTNN_BLAS set).
    The processes are started one after the other (each sets up and calibrates alone), then
    the rounds interleave: round r times every case in backend 1, then backend 2, ... (the
    order rotating each round), the other processes waiting on a pipe meanwhile, so only one
    runs at a time and the machine's drift hits all backends alike.  Medians of the rounds.
    """
    out = sys.stdout if out is None else out
    backends = _blas.available_backends()
    min_time = 0.005 if quick else 0.05
    code = (f"from fastnn.benchmark import _backend_worker; "
            f"_backend_worker({int(threads)}, {bool(quick)}, {min_time})")
    procs, results = {}, {}
    try:
        for name in backends:
            env = {**os.environ, "FASTNN_BLAS": name}
            proc = subprocess.Popen([sys.executable, "-c", code], env=env, text=True,
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            procs[name] = proc
            header = proc.stdout.readline()
            if not header:
                raise RuntimeError(f"the {name} backend's benchmark process failed "
                                   f"(exit code {proc.wait()})")
            results[name] = {**json.loads(header), "samples": []}
        for r in range(rounds):
            for i in range(len(backends)):
                name = backends[(i + r) % len(backends)]
                procs[name].stdin.write("round\n")
                procs[name].stdin.flush()
                results[name]["samples"].append(json.loads(procs[name].stdout.readline()))
    finally:
        for proc in procs.values():
            if proc.stdin and not proc.stdin.closed:
                try:
                    proc.stdin.write("quit\n")
                    proc.stdin.close()
                except OSError:
                    pass
            proc.wait()
            proc.stdout.close()
    for res in results.values():
        res["seconds"] = [statistics.median(s[i] for s in res["samples"])
                          for i in range(len(res["cases"]))]
    print(format_backends(results, rounds), file=out, flush=True)
    if json_path:
        from fastnn.io import atomic_open

        with atomic_open(json_path, "w") as f:
            json.dump(results, f, indent=1)
    return results


def format_backends(results, rounds):
    """The --backends header (each backend's environment line) and table."""
    names = list(results)
    first = results[names[0]]["environment"]
    lines = [format_environment(first).splitlines()[0],
             format_environment(first).splitlines()[1]]
    for name in names:
        env = results[name]["environment"]
        lines += [line for line in format_environment(env).splitlines()
                  if line.startswith(("fastnn:", "MKL:"))]
    lines.append(f"medians of {rounds} interleaved rounds, one process per backend, "
                 f"FASTNN_BLAS set in each")
    base = "openblas" if "openblas" in names else names[0]
    head = ("operation", "shape", "dtype", *names,
            *(f"{name} speed-up" for name in names if name != base))
    seconds = {name: {tuple(c): t for c, t in zip(results[name]["cases"],
                                                  results[name]["seconds"])} for name in names}
    keys = list(dict.fromkeys(tuple(c) for name in names for c in results[name]["cases"]))
    rows = []
    for key in keys:  # a case only some backends have (MKL's bf16 GEMM): "-" elsewhere
        t = {name: seconds[name].get(key) for name in names}
        rows.append((*key, *(_fmt_time(t[name]) for name in names),
                     *(f"{t[base] / t[name]:.2f}x" if t[base] and t[name] else "-"
                       for name in names if name != base)))
    widths = [max(len(str(row[i])) for row in rows + [head]) for i in range(len(head))]
    line = lambda row: "| " + " | ".join(str(v).ljust(w) for v, w in zip(row, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    lines += [line(head), sep] + [line(r) for r in rows]
    lines.append(f"speed-up = {base} time / that backend's time (same process setup, same "
                 "threads)")
    return "\n".join(lines)
