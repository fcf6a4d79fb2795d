"""No leaks: memory stays flat over many training steps and layer passes, on success and on
refused input.

Two measures: ``tracemalloc`` sees Python objects and NumPy array data (NumPy reports its
allocations to it), the process's resident set size (``/proc/self/statm``, else
``resource.getrusage``) sees everything else, the kernels' ``malloc`` included.  Reference
counts of the arguments show that no call keeps a hidden reference (a leaked memoryview).
"""
import gc
import os
import resource
import sys
import tracemalloc

import numpy as np
import pytest

import fastnn.functions as F
import fastnn.gradient as G
import fastnn.layers as L
import fastnn.nets as N
import fastnn.optim as O

WARMUP = 20
STEPS = 300
TRACED_SLACK = 64 * 1024        # bytes: hypothesis, pytest and the interpreter's own caches
RSS_SLACK = 4 * 1024 * 1024     # bytes: allocator arenas come and go


def rss_bytes():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: the peak RSS (kB on Linux, bytes on macOS) never shrinks
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def assert_flat(step, steps=STEPS, what=""):
    """Run ``step`` WARMUP times, then ``steps`` times under tracemalloc, and check that
    neither the traced memory nor the RSS grew."""
    tracemalloc.start()  # before the warm-up: what it allocates and later frees is traced
    try:
        for _ in range(WARMUP):
            step()
        gc.collect()
        rss_before = rss_bytes()
        traced_before = tracemalloc.get_traced_memory()[0]
        for _ in range(steps):
            step()
        gc.collect()
        traced_after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    rss_after = rss_bytes()
    grown = traced_after - traced_before
    assert grown < TRACED_SLACK, f"{what}: traced memory grew by {grown} bytes in {steps} steps"
    assert rss_after - rss_before < RSS_SLACK, (
        f"{what}: RSS grew by {(rss_after - rss_before) / 2**20:.1f} MiB in {steps} steps")


NETWORKS = {
    "TwoLayerNet-f64": lambda: N.TwoLayerNet(784, 50, 10, dtype=np.float64, rng=0),
    "TwoLayerNet-f32": lambda: N.TwoLayerNet(784, 50, 10, dtype=np.float32, rng=0),
    "MultiLayerNet[sigmoid]": lambda: N.MultiLayerNet(784, [100, 50], 10, "sigmoid",
                                                      "sigmoid", rng=0, weight_decay_lambda=0.1),
}


@pytest.mark.parametrize("name", list(NETWORKS))
def test_training_step_memory_is_flat(name):
    """The book's training loop: gradient, then params[k] -= lr * g in place."""
    net = NETWORKS[name]()
    rng = np.random.default_rng(0)
    x = rng.random((500, 784)).astype(net.dtype)
    t = rng.integers(0, 10, 500)
    state = {"i": 0}

    def step():
        i = state["i"] = (state["i"] + 100) % 500
        grads = net.gradient(x[i:i + 100], t[i:i + 100])
        for key in net.params:
            net.params[key] -= 0.1 * grads[key]
    assert_flat(step, what=name)


def test_training_with_batch_sizes_that_vary_is_flat():
    """A network keeps workspaces for its latest few batch sizes, no more."""
    net = N.TwoLayerNet(784, 50, 10, rng=0)
    x, t = np.random.default_rng(1).random((64, 784)), np.arange(64) % 10
    sizes = iter(np.tile(np.arange(1, 65), 100))

    def step():
        n = next(sizes)
        net.gradient(x[:n], t[:n])
        net.predict(x[:n])
    # a whole number of cycles: the same workspaces are held at both measurements
    assert_flat(step, steps=640, what="batch sizes 1..64")


@pytest.mark.parametrize("name", list(O.OPTIMIZERS))
def test_optimizer_steps_are_flat(name):
    net = N.TwoLayerNet(784, 50, 10, rng=0)
    x, t = np.random.default_rng(2).random((100, 784)), np.arange(100) % 10
    optimizer = O.OPTIMIZERS[name]()
    assert_flat(lambda: optimizer.update(net.params, net.gradient(x, t)), steps=200, what=name)


def _layer_step(kind):
    rng = np.random.default_rng(3)
    x, dout = rng.standard_normal((100, 50)), rng.standard_normal((100, 50))
    labels = rng.integers(0, 50, 100)
    layer = {"Affine": L.Affine(rng.standard_normal((50, 50)), np.zeros(50)),
             "Linear": L.Linear(rng.standard_normal((50, 50)), np.zeros(50)),
             "Relu": L.Relu(), "Sigmoid": L.Sigmoid(), "SoftmaxWithLoss": L.SoftmaxWithLoss(),
             "SigmoidWithLoss": L.SigmoidWithLoss()}[kind]
    if kind == "SoftmaxWithLoss":
        return lambda: (layer.forward(x, labels), layer.backward())
    if kind == "SigmoidWithLoss":
        return lambda: (layer.forward(x, (x > 0).astype(float)), layer.backward())
    return lambda: (layer.forward(x), layer.backward(dout))


@pytest.mark.parametrize("kind", ["Affine", "Linear", "Relu", "Sigmoid", "SoftmaxWithLoss",
                                  "SigmoidWithLoss"])
def test_layer_forward_backward_is_flat(kind):
    assert_flat(_layer_step(kind), what=kind)


def test_refused_calls_are_flat():
    """Error paths release what they took: buffers acquired before a check fails, memoryviews
    of arguments a kernel refused."""
    y, x = np.ones((50, 10)), np.ones((50, 784))
    net = N.TwoLayerNet(784, 20, 10, rng=0)
    relu = L.Relu()
    relu.forward(y)
    calls = [
        lambda: F.softmax_loss(y, np.full(50, 10)),           # label out of range
        lambda: F.cross_entropy_error(y, np.ones(50)),        # float labels
        lambda: F.sigmoid(np.ones(10, complex)),              # refused dtype
        lambda: net.gradient(x, np.full(50, -1)),             # negative label
        lambda: net.predict(np.ones((50, 783))),              # wrong width
        lambda: relu.backward(np.ones((49, 10))),             # wrong dout
        lambda: O.SGD().update(net.params, {"W1": 1}),        # wrong keys
        lambda: G.network_numerical_gradient([np.ones((3, 2))], [np.ones(2)], np.ones((1, 3)), [5]),
    ]

    def step():
        for call in calls:
            try:
                call()
            except (ValueError, TypeError):
                pass
            else:
                raise AssertionError("a bad call was accepted")
    assert_flat(step, steps=200, what="refused calls")


def test_calls_keep_no_reference_to_their_arguments():
    rng = np.random.default_rng(4)
    x, t = rng.standard_normal((20, 10)), rng.integers(0, 10, 20)
    y = F.softmax(x)
    net = N.TwoLayerNet(10, 5, 10, rng=0)
    calls = [lambda: F.sigmoid(x), lambda: F.softmax(x), lambda: F.softmax_loss(x, t),
             lambda: F.cross_entropy_error(y, t), lambda: F.cross_entropy_error(x, t, exact=True),
             lambda: net.predict(x), lambda: net.gradient(x, t), lambda: net.loss(x, t),
             lambda: net.accuracy(x, t)]
    before = (sys.getrefcount(x), sys.getrefcount(t), sys.getrefcount(y))
    for call in calls:
        for _ in range(10):
            call()
    gc.collect()
    assert (sys.getrefcount(x), sys.getrefcount(t), sys.getrefcount(y)) == before


# --- the convolutional networks' compiled training step (issue 11) ---------------------------

#: bytes: what one step may allocate at its peak, the Python objects of the calls and
#: DeepConvNet's dropout masks (drawn with np.random.rand as the book draws them, n x 100 and
#: n x 50 for a batch of n); any temporary of an activation's size would be far above it (the
#: smallest, SimpleConvNet's pooled output at batch 10, is 10 x 30 x 12 x 12 x 4 = 173 kB).
STEP_PEAK = 64 * 1024
CONVNETS = {
    "SimpleConvNet-f32": (lambda: N.SimpleConvNet(dtype=np.float32), 100),
    "SimpleConvNet-f64": (lambda: N.SimpleConvNet(dtype=np.float64), 20),
    "DeepConvNet-f32": (lambda: N.DeepConvNet(dtype=np.float32), 10),
    # precision="bf16": the rounded operands are the Plan's buffers too (im2col and direct)
    "SimpleConvNet-bf16": (lambda: N.SimpleConvNet(dtype=np.float32, precision="bf16"), 100),
    "DeepConvNet-bf16": (lambda: N.DeepConvNet(dtype=np.float32, precision="bf16"), 10),
}


@pytest.mark.parametrize("name", list(CONVNETS))
def test_convnet_training_step_allocates_nothing_after_warm_up(name):
    """gradient + Adam through fastnn's own networks: after a warm-up (the batch's plan and
    Adam's moments), the traced memory grows by less than one block per step over 60 steps
    (the smallest block is 16 bytes: a few dozen bytes move in the interpreter's own caches,
    a leak of anything per step would show), and no step holds more than STEP_PEAK bytes of
    new blocks at any moment; the RSS stays flat too."""
    make, n = CONVNETS[name]
    np.random.seed(0)
    net = make()
    rng = np.random.default_rng(5)
    x = rng.random((2 * n, 1, 28, 28)).astype(net.dtype)
    t = rng.integers(0, 10, 2 * n)
    optimizer = O.Adam(lr=0.001)
    state = {"i": 0}

    def step():
        i = state["i"] = (state["i"] + n) % (2 * n)
        optimizer.update(net.params, net.gradient(x[i:i + n], t[i:i + n]))

    tracemalloc.start()
    try:
        for _ in range(4):
            step()
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(60):
            step()
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
        worst = 0
        for _ in range(5):
            current = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            step()
            worst = max(worst, tracemalloc.get_traced_memory()[1] - current)
    finally:
        tracemalloc.stop()
    assert grown < 512, f"{name}: traced memory grew by {grown} bytes in 60 steps"
    assert worst < STEP_PEAK, f"{name}: a step's peak of new blocks was {worst} bytes"
    assert_flat(step, steps=40, what=name)
