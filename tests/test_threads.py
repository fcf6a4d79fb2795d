"""Threads: separate layer, network and optimizer instances may run at once, and every compiled
call releases the GIL.

A layer or network instance holds the cache of its last forward pass (and a network its
workspaces and gradient buffers), so one instance must not be used from two threads at once;
separate instances may, and give exactly what they give one after the other.  Misusing one
instance from several threads gives unspecified numbers or a ValueError, but never a crash
(test_shared_instance_misuse_is_memory_safe).
"""
import concurrent.futures
import threading
import time

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import fastnn.functions as F
import fastnn.gradient as G
import fastnn.layers as L
import fastnn.nets as N
import fastnn.optim as O

WORKERS = 4
TASKS = 8
REPEAT = 5  # each task runs its work this many times, so that the threads overlap


def run_concurrently(tasks):
    """The results of ``tasks`` (callables) run by WORKERS threads, all started together."""
    barrier = threading.Barrier(min(WORKERS, len(tasks)))

    def run(task):
        try:
            barrier.wait(timeout=10)
        except threading.BrokenBarrierError:
            pass  # fewer tasks than workers left: start anyway
        result = None
        for _ in range(REPEAT):
            result = task()
        return result

    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        return list(pool.map(run, tasks))


def assert_same(a, b):
    if isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        np.testing.assert_array_equal(a, b)


# --- separate instances, at once ----------------------------------------------------------------

def _layer_task(kind, seed, dtype):
    """A fresh layer and its inputs; the task runs forward and backward and returns all."""
    rng = np.random.default_rng(seed)
    n, d, h = 64 + seed, 50, 30

    def arr(*shape):
        return rng.standard_normal(shape).astype(dtype)

    if kind == "Affine":
        layer, fwd, dout = L.Affine(arr(d, h), arr(h)), (arr(n, d),), arr(n, h)
    elif kind == "Linear":
        layer, fwd, dout = L.Linear(arr(h, d), arr(h)), (arr(n, d),), arr(n, h)
    elif kind in ("Relu", "Sigmoid"):
        layer, fwd, dout = getattr(L, kind)(), (arr(n, d),), arr(n, d)
    elif kind == "SoftmaxWithLoss":
        layer, fwd, dout = L.SoftmaxWithLoss(), (arr(n, 10), rng.integers(0, 10, n)), 1
    else:
        layer, fwd, dout = L.SigmoidWithLoss(), (arr(n, d), rng.integers(0, 2, (n, d))), 1

    def task():
        out = layer.forward(*fwd)
        dx = layer.backward(dout)
        extra = (layer.dW, layer.db) if kind in ("Affine", "Linear") else ()
        return (out, dx) + extra
    return task


LAYER_KINDS = ["Affine", "Linear", "Relu", "Sigmoid", "SoftmaxWithLoss", "SigmoidWithLoss"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_separate_layers_in_threads(kind, dtype):
    expected = [_layer_task(kind, seed, dtype)() for seed in range(TASKS)]
    got = run_concurrently([_layer_task(kind, seed, dtype) for seed in range(TASKS)])
    assert_same(got, expected)


NETWORKS = {
    "TwoLayerNet": lambda dt, seed: N.TwoLayerNet(784, 50, 10, 0.1, dtype=dt, rng=seed),
    "MultiLayerNet[relu]": lambda dt, seed: N.MultiLayerNet(
        784, [64, 32], 10, dtype=dt, rng=seed, weight_decay_lambda=0.01),
    "MultiLayerNet[sigmoid]": lambda dt, seed: N.MultiLayerNet(
        784, [40], 10, "sigmoid", "sigmoid", dtype=dt, rng=seed, exact_loss=True),
}


def _network_task(name, seed, dtype):
    net = NETWORKS[name](dtype, seed)
    rng = np.random.default_rng(100 + seed)
    x = rng.random((100 + 10 * seed, 784)).astype(dtype)
    t = rng.integers(0, 10, x.shape[0])
    one_hot = np.eye(10, dtype=dtype)[t]

    def task():
        # gradient() returns the network's own buffers: copy before the next call
        grads = {k: g.copy() for k, g in net.gradient(x, t).items()}
        grads_one_hot = {k: g.copy() for k, g in net.gradient(x, one_hot).items()}
        return (net.predict(x), net.loss(x, t), net.accuracy(x, t), net.last_loss,
                list(grads.values()), list(grads_one_hot.values()))
    return task


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", list(NETWORKS))
def test_separate_networks_in_threads(name, dtype):
    expected = [_network_task(name, seed, dtype)() for seed in range(TASKS)]
    got = run_concurrently([_network_task(name, seed, dtype) for seed in range(TASKS)])
    assert_same(got, expected)


def test_stateless_functions_share_read_only_inputs():
    """Functions keep no state: many threads may read the same arrays."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((300, 10))
    x.flags.writeable = False
    t = rng.integers(0, 10, 300)
    y = F.softmax(x)

    def task():
        return (F.sigmoid(x), F.relu(x), F.softmax(x), F.softmax_loss(x, t),
                F.softmax_loss(x, t, exact=True), F.cross_entropy_error(y, t),
                F.sum_squared_error(y, F.one_hot(t, 10)))
    expected = task()
    for got in run_concurrently([task] * TASKS):
        assert_same(got, expected)


@pytest.mark.parametrize("name", list(O.OPTIMIZERS))
def test_separate_optimizers_in_threads(name):
    def make(seed):
        rng = np.random.default_rng(seed)
        params = {"W": rng.standard_normal((200, 100)), "b": rng.standard_normal(100)}
        grads = {k: rng.standard_normal(p.shape) for k, p in params.items()}
        optimizer = O.OPTIMIZERS[name](lr=0.01)

        def task():
            optimizer.update(params, grads)
            return [p.copy() for p in params.values()]
        return task

    # REPEAT updates one after the other, per task
    expected = []
    for seed in range(TASKS):
        task = make(seed)
        for _ in range(REPEAT):
            result = task()
        expected.append(result)
    assert_same(run_concurrently([make(seed) for seed in range(TASKS)]), expected)


def test_numerical_gradients_in_threads():
    def make(seed):
        rng = np.random.default_rng(seed)
        Ws = [rng.standard_normal((6, 5)), rng.standard_normal((5, 3))]
        bs = [rng.standard_normal(5), rng.standard_normal(3)]
        x, t = rng.standard_normal((4, 6)), rng.integers(0, 3, 4)
        return lambda: G.network_numerical_gradient(Ws, bs, x, t, activation="sigmoid")
    expected = [make(seed)() for seed in range(TASKS)]
    assert_same(run_concurrently([make(seed) for seed in range(TASKS)]), expected)


# --- one instance misused by several threads: wrong numbers at worst, never a crash -------------

@pytest.mark.parametrize("kind", ["Affine", "Relu", "Sigmoid", "SoftmaxWithLoss", "network"])
def test_shared_instance_misuse_is_memory_safe(kind):
    """Not supported (docs/robustness.md), but memory-safe: backward reads the cache of one
    forward, whose shapes it checked, so racing forwards of other batch sizes can only make
    it raise ValueError or return another batch's gradient.  Under tests/sanitize.sh a race
    that reached a kernel with mismatched arrays would abort the run."""
    rng = np.random.default_rng(8)
    net = N.MultiLayerNet(20, [16], 5, rng=0)
    shared = {"Affine": L.Affine(rng.standard_normal((20, 8)), np.zeros(8)), "Relu": L.Relu(),
              "Sigmoid": L.Sigmoid(), "SoftmaxWithLoss": L.SoftmaxWithLoss(), "network": net}[kind]

    def task(n):
        x = rng.standard_normal((n, 20))
        for _ in range(30):
            try:
                if kind == "network":
                    shared.gradient(x, np.arange(n) % 5)
                    shared.predict(x)
                elif kind == "SoftmaxWithLoss":
                    shared.forward(x, np.arange(n) % 20)
                    shared.backward(0.5)
                else:
                    out = shared.forward(x)
                    shared.backward(np.ones_like(out))
            except ValueError:
                pass  # a shape check caught another thread's forward
        return True

    assert all(run_concurrently([lambda n=n: task(n) for n in (1, 7, 50, 200)] * 2))


# --- every compiled call releases the GIL ----------------------------------------------------------

def _spinner_share(call, tries=3, enough=np.inf):
    """How much a pure-Python counter thread advances while ``call()`` runs, relative to
    while the main thread sleeps for as long: about 1 (0.5 on a busy machine) when ``call``
    releases the GIL, about 0 when it holds it.  Best of ``tries``, stopping at ``enough``."""
    best = 0.0
    for _ in range(tries):
        state = {"stop": False, "ticks": 0}

        def spin():
            while not state["stop"]:
                state["ticks"] += 1

        thread = threading.Thread(target=spin)
        thread.start()
        try:
            time.sleep(0.01)
            start_ticks, start = state["ticks"], time.perf_counter()
            call()
            elapsed = time.perf_counter() - start
            during = state["ticks"] - start_ticks
            start_ticks = state["ticks"]
            time.sleep(elapsed)
            asleep = state["ticks"] - start_ticks
        finally:
            state["stop"] = True
            thread.join()
        best = max(best, during / max(asleep, 1))
        if best >= enough:
            break
    return best


def _gil_cases():
    """One long call (~50-300 ms) into each compiled module."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal(6_000_000)
    logits, labels = rng.standard_normal((8000, 1000)), rng.integers(0, 1000, 8000)
    affine = L.Affine(rng.standard_normal((1000, 500)), np.zeros(500))
    net = N.TwoLayerNet(784, 200, 10, rng=0)
    images, digits = rng.random((8000, 784)), rng.integers(0, 10, 8000)
    params, grads = {"W": np.zeros(8_000_000)}, {"W": np.ones(8_000_000)}
    adam = O.Adam()
    Ws, bs = [rng.standard_normal((100, 40)), rng.standard_normal((40, 10))], [np.zeros(40), np.zeros(10)]
    batch, targets = rng.random((500, 100)), rng.integers(0, 10, 500)
    return {
        "_activations (sigmoid)": lambda: F.sigmoid(x),
        "_loss (softmax_loss)": lambda: F.softmax_loss(logits, labels),
        "_dense (Affine.forward)": lambda: affine.forward(logits),
        "_network (gradient)": lambda: net.gradient(images, digits),
        "_optim (Adam.update)": lambda: adam.update(params, grads),
        "_numgrad (network_numerical_gradient)":
            lambda: G.network_numerical_gradient(Ws, bs, batch, targets),
    }


def test_compiled_calls_release_the_gil():
    big = np.random.default_rng(10).integers(0, 10**9, 500_000).tolist()
    with threadpool_limits(1):  # the counter thread competes with one computing thread only
        # the control: list.sort holds the GIL throughout, and the measure sees it
        assert _spinner_share(lambda: sorted(big), tries=2) < 0.2
        for name, call in _gil_cases().items():
            call()  # warm up: workspaces, optimizer state
            share = _spinner_share(call, enough=0.2)
            assert share > 0.2, f"{name}: the counter thread stalled ({share:.2f}): GIL held?"
