"""SimpleConvNet and DeepConvNet: the book's initial weights, its results (its own code and
the NumPy twins), backprop against the numerical gradient, the book's weight files and the
accuracies they give, bad input."""
import pickle

import numpy as np
import pytest
from conftest import SHARED_DATASETS, BOOK_CODE, TOLERANCE, assert_twin, book_module
from hypothesis import given, settings
from hypothesis import strategies as st

from fastnn.nets import DeepConvNet, SimpleConvNet
from fastnn.reference import convnets as R

DTYPES = [np.float32, np.float64]
SMALL = dict(input_dim=(2, 10, 10), conv_param={'filter_num': 4, 'filter_size': 3, 'pad': 1,
                                                'stride': 1}, hidden_size=7, output_size=5,
             weight_init_std=0.3)


def _images(rng, n, dim=(1, 28, 28), dtype=np.float32):
    return rng.random((n, *dim)).astype(dtype)


def _copy_grads(grads):
    return {key: np.array(g) for key, g in grads.items()}


def _perturb(nets, seed=3, scale=0.05):
    """The same small random offsets on every network's weights (biases no longer zero)."""
    rng = np.random.default_rng(seed)
    for key in nets[0].params:
        delta = scale * rng.standard_normal(nets[0].params[key].shape)
        for net in nets:
            net.params[key][...] += delta.astype(net.params[key].dtype)


# --- the book's initial weights and its own code -----------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_initial_weights_are_the_books(dtype):
    book_simple = book_module("ch07.simple_convnet").SimpleConvNet
    book_deep = book_module("ch08.deep_convnet").DeepConvNet
    for ours, theirs in ((SimpleConvNet, book_simple), (DeepConvNet, book_deep)):
        np.random.seed(11)
        book = theirs()
        np.random.seed(11)
        net = ours(dtype=dtype)
        assert list(net.params) == list(book.params)
        for key in book.params:
            assert net.params[key].dtype == dtype
            np.testing.assert_array_equal(net.params[key], book.params[key].astype(dtype))
        assert np.random.rand() == (np.random.seed(11), theirs(), np.random.rand())[2]


def test_simple_convnet_matches_the_books_code(rng):
    book = book_module("ch07.simple_convnet")
    np.random.seed(2)
    theirs = book.SimpleConvNet(weight_init_std=0.1)
    np.random.seed(2)
    ours = SimpleConvNet(weight_init_std=0.1)
    _perturb([theirs, ours])
    x, t = _images(rng, 30), rng.integers(0, 10, 30)
    assert_twin(ours.predict(x), theirs.predict(x), np.float64, "predict")
    assert_twin(ours.loss(x, t), theirs.loss(x, t), np.float64, "loss")
    assert_twin(ours.accuracy(x, t, 7), theirs.accuracy(x, t, 7), np.float64, "accuracy")
    g_ours, g_theirs = ours.gradient(x, t), theirs.gradient(x, t)
    for key in g_theirs:
        assert_twin(g_ours[key], g_theirs[key], np.float64, key)
    assert ours.layers['Conv1'].dW is g_ours['W1']


def test_deep_convnet_matches_the_books_code(rng):
    """Under one seed the book's Dropout and fastnn drop the same units."""
    book = book_module("ch08.deep_convnet")
    np.random.seed(4)
    theirs = book.DeepConvNet()
    np.random.seed(4)
    ours = DeepConvNet()
    _perturb([theirs, ours], scale=0.02)
    x, t = _images(rng, 12), rng.integers(0, 10, 12)
    assert_twin(ours.predict(x), theirs.predict(x), np.float64, "predict")
    np.random.seed(5)
    y_train = theirs.predict(x, train_flg=True)
    np.random.seed(5)
    assert_twin(ours.predict(x, train_flg=True), y_train, np.float64, "predict(train_flg)")
    np.random.seed(6)
    loss = theirs.loss(x, t)
    np.random.seed(6)
    assert_twin(ours.loss(x, t), loss, np.float64, "loss")
    np.random.seed(7)
    g_theirs = theirs.gradient(x, t)
    np.random.seed(7)
    g_ours = ours.gradient(x, t)
    for key in g_theirs:
        assert_twin(g_ours[key], g_theirs[key], np.float64, key)
    assert_twin(ours.last_loss, theirs.last_layer.loss, np.float64, "last_loss")
    assert_twin(ours.accuracy(x, t, 5), theirs.accuracy(x, t, 5), np.float64, "accuracy")


# --- the twins, in both dtypes -------------------------------------------------------------------

def _pair(cls, twin, dtype, seed=1, **kwargs):
    np.random.seed(seed)
    fast = cls(dtype=dtype, **kwargs)
    np.random.seed(seed)
    ref = twin(dtype=np.float64, **kwargs)  # the oracle computes in float64 on the same values
    for key in ref.params:
        ref.params[key][...] = fast.params[key]
    return fast, ref


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kwargs", [{}, SMALL, dict(SMALL, conv_param={
    'filter_num': 3, 'filter_size': 2, 'pad': 1, 'stride': 2})], ids=["book", "small", "stride2"])
def test_simple_convnet_matches_twin(dtype, kwargs, rng):
    fast, ref = _pair(SimpleConvNet, R.SimpleConvNet, dtype, **kwargs)
    _perturb([fast, ref], scale=0.1)
    for key in ref.params:
        ref.params[key][...] = fast.params[key]
    dim = kwargs.get("input_dim", (1, 28, 28))
    k = kwargs.get("output_size", 10)
    x, t = _images(rng, 9, dim, dtype), rng.integers(0, k, 9)
    assert_twin(fast.predict(x), ref.predict(x.astype(np.float64)), dtype, "predict")
    assert_twin(fast.loss(x, t), ref.loss(x.astype(np.float64), t), dtype, "loss")
    g_fast = _copy_grads(fast.gradient(x, t))
    g_ref = ref.gradient(x.astype(np.float64), t)
    for key in g_ref:
        assert g_fast[key].dtype == dtype
        assert_twin(g_fast[key], g_ref[key], dtype, key)
    # one-hot targets give the same
    g_hot = fast.gradient(x, np.eye(k, dtype=dtype)[t])
    for key in g_ref:
        assert_twin(g_hot[key], g_ref[key], dtype, key + " (one-hot)")


@pytest.mark.parametrize("dtype", DTYPES)
def test_deep_convnet_matches_twin(dtype, rng):
    fast, ref = _pair(DeepConvNet, R.DeepConvNet, dtype)
    _perturb([fast, ref], scale=0.01)
    for key in ref.params:
        ref.params[key][...] = fast.params[key]
    x, t = _images(rng, 6, dtype=dtype), rng.integers(0, 10, 6)
    assert_twin(fast.predict(x), ref.predict(x.astype(np.float64)), dtype, "predict")
    np.random.seed(9)
    g_fast = _copy_grads(fast.gradient(x, t))
    np.random.seed(9)
    g_ref = ref.gradient(x.astype(np.float64), t)
    for key in g_ref:
        assert_twin(g_fast[key], g_ref[key], dtype, key)


@pytest.mark.parametrize("layout", ["F", "strided", "float64 images"])
def test_any_input_layout(layout, rng):
    net = SimpleConvNet(dtype=np.float32, **SMALL)
    x, t = _images(rng, 5, SMALL["input_dim"]), rng.integers(0, 5, 5)
    expected = net.predict(x)
    if layout == "F":
        x2 = np.asfortranarray(x)
    elif layout == "strided":
        x2 = np.zeros((10, *x.shape[1:]), np.float32)
        x2[::2] = x
        x2 = x2[::2]
    else:
        x2 = x.astype(np.float64)  # promoted, as NumPy would: float64 results, layer by layer
    y = net.predict(x2)
    assert y.dtype == (np.float64 if layout == "float64 images" else np.float32)
    assert_twin(y, expected, np.float32, layout)


@settings(max_examples=15)
@given(n=st.integers(1, 5), c=st.integers(1, 3), size=st.integers(4, 9),
       filt=st.integers(1, 4), pad=st.integers(0, 2), stride=st.integers(1, 2),
       f64=st.booleans(), seed=st.integers(0, 2**31))
def test_simple_convnet_geometries(n, c, size, filt, pad, stride, f64, seed):
    out = (size + 2 * pad - filt) // stride + 1
    if filt > size + 2 * pad or out < 2 or (size + 2 * pad - filt) % stride or out % 2:
        return  # the book's size formula holds only for an even, whole convolution output
    dtype = np.float64 if f64 else np.float32
    kwargs = dict(input_dim=(c, size, size), conv_param={'filter_num': 3, 'filter_size': filt,
                  'pad': pad, 'stride': stride}, hidden_size=4, output_size=3,
                  weight_init_std=0.5)
    fast, ref = _pair(SimpleConvNet, R.SimpleConvNet, dtype, seed=seed % 1000, **kwargs)
    rng = np.random.default_rng(seed)
    x, t = _images(rng, n, (c, size, size), dtype), rng.integers(0, 3, n)
    g_fast = _copy_grads(fast.gradient(x, t))
    g_ref = _copy_grads(ref.gradient(x.astype(np.float64), t))
    if f64:
        for key in g_ref:
            assert_twin(g_fast[key], g_ref[key], dtype, key)
        return
    # float32: within 1e-5 of the exact (float64) gradient, or, where a gradient is a sum that
    # cancels (b1 with three filters and weight_init_std 0.5: terms far larger than the sum),
    # no further from it than twice the float32 twin is: that is float32's own accuracy there.
    # (An unoptimised build, as the sanitizer's, rounds without FMA: seen 1.25e-5 in b1.)
    np.random.seed(seed % 1000)
    twin32 = R.SimpleConvNet(dtype=np.float32, **kwargs)
    for key in twin32.params:
        twin32.params[key][...] = fast.params[key]
    g_twin32 = twin32.gradient(x, t)
    for key, exact in g_ref.items():
        scale = max(float(np.abs(exact).max()), np.finfo(np.float64).tiny)
        err = float(np.abs(g_fast[key] - exact).max()) / scale
        err_twin = float(np.abs(g_twin32[key].astype(np.float64) - exact).max()) / scale
        assert err <= max(1e-5, 2 * err_twin), (key, err, err_twin)


# --- backprop against the numerical gradient -------------------------------------------------

def test_backprop_matches_numerical_gradient(rng):
    net = SimpleConvNet(dtype=np.float64, input_dim=(1, 6, 6), conv_param={
        'filter_num': 3, 'filter_size': 3, 'pad': 1, 'stride': 1}, hidden_size=4,
        output_size=3, weight_init_std=0.5)
    _perturb([net], scale=0.2)
    x, t = _images(rng, 4, (1, 6, 6), np.float64), rng.integers(0, 3, 4)
    numeric = net.numerical_gradient(x, t)
    backprop = net.gradient(x, t)
    for key in numeric:
        diff = np.max(np.abs(numeric[key] - backprop[key]))
        # h = 1e-4 and the kinks of ReLU and max: agreement to ~1e-6, where a wrong
        # gradient is off by its own size
        assert diff <= 1e-5 * max(1.0, np.max(np.abs(numeric[key]))), (key, diff)


# --- the book's weight files -----------------------------------------------------------------

def _mnist_test():
    from fastnn.datasets import load_mnist

    data_dir = SHARED_DATASETS / "mnist"
    if not data_dir.is_dir():
        pytest.skip(f"MNIST is not at {data_dir}")
    return load_mnist(data_dir=data_dir, flatten=False)[1]


@pytest.mark.parametrize("cls, name, expected", [
    (SimpleConvNet, "ch07/params.pkl", 0.9600),
    (DeepConvNet, "ch08/deep_convnet_params.pkl", 0.9797),
], ids=["SimpleConvNet", "DeepConvNet"])
def test_the_books_weights_give_the_books_accuracy(cls, name, expected):
    path = BOOK_CODE / name
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    x, t = _mnist_test()
    net = cls(dtype=np.float32)
    net.load_params(path)
    assert net.params["W1"].dtype == np.float32
    assert net.accuracy(x, t) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("cls", [SimpleConvNet, DeepConvNet])
@pytest.mark.parametrize("suffix", [".pkl", ".npz"])
def test_save_and_load_params(cls, suffix, tmp_path, rng):
    net = cls()
    _perturb([net], scale=0.01)
    path = tmp_path / f"params{suffix}"
    net.save_params(path)
    if suffix == ".pkl":  # the book's format: a pickled dict of arrays
        with open(path, "rb") as f:
            assert set(pickle.load(f)) == set(net.params)
    other = cls(dtype=np.float32)
    other.load_params(path)
    x = _images(rng, 3)
    assert_twin(other.predict(x), net.predict(x), np.float32)


def test_load_params_refuses_code_and_wrong_shapes(tmp_path):
    from fastnn.io import UnsafePickleError

    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"W1": np.zeros(3)}).replace(b"numpy", b"posix", 1))
    net = SimpleConvNet()
    with pytest.raises(UnsafePickleError):
        net.load_params(evil)
    wrong = tmp_path / "wrong.pkl"
    wrong.write_bytes(pickle.dumps({"W1": np.zeros((3, 1, 5, 5))}))
    with pytest.raises(ValueError, match=r"W1.*\(3, 1, 5, 5\)"):
        net.load_params(wrong)


# --- behaviour -----------------------------------------------------------------------------

def test_accuracy_counts_full_batches_as_the_book(rng):
    net = SimpleConvNet(**SMALL)
    x, t = _images(rng, 25, SMALL["input_dim"]), rng.integers(0, 5, 25)
    hits = np.argmax(net.predict(x[:20]), axis=1) == t[:20]
    assert net.accuracy(x, t, batch_size=10) == np.sum(hits) / 25
    assert net.accuracy(x, np.eye(5)[t], batch_size=10) == np.sum(hits) / 25


def test_gradient_buffers_are_reused(rng):
    net = SimpleConvNet(dtype=np.float32, **SMALL)
    x, t = _images(rng, 4, SMALL["input_dim"]), rng.integers(0, 5, 4)
    first = net.gradient(x, t)
    ids = {key: id(g) for key, g in first.items()}
    second = net.gradient(x[::-1], t[::-1])
    assert {key: id(g) for key, g in second.items()} == ids
    assert net.last_loss == pytest.approx(net.loss(x, t))


def test_reassigned_layer_weights_are_used(rng):
    """As in the book, the layers hold the weights: what they hold is what computes."""
    net = SimpleConvNet(**SMALL)
    x = _images(rng, 3, SMALL["input_dim"])
    net.layers['Conv1'].W = net.layers['Conv1'].W * 2
    ref = R.SimpleConvNet(**SMALL)
    for key in ref.params:
        ref.params[key][...] = net.params[key]
    ref.layers['Conv1'].W = ref.params['W1'] * 2
    assert_twin(net.predict(x), ref.predict(x.astype(np.float64)), np.float64)


def test_snapshot_is_independent(rng):
    net = DeepConvNet(dtype=np.float32)
    x = _images(rng, 2)
    copy = net.snapshot()
    before = copy.predict(x)
    net.params["W1"] += 1
    np.testing.assert_array_equal(copy.predict(x), before)


@pytest.mark.parametrize("make, error, match", [
    (lambda: SimpleConvNet(dtype=np.int32), TypeError, "dtype"),
    (lambda: SimpleConvNet(conv_param={'filter_num': 30}), ValueError, "conv_param lacks"),
    (lambda: SimpleConvNet(conv_param={'filter_num': 3, 'filter_size': 40, 'pad': 0,
                                       'stride': 1}), ValueError, "larger than its input"),
    (lambda: SimpleConvNet(conv_param={'filter_num': 3, 'filter_size': 5, 'pad': 0,
                                       'stride': 0}), ValueError, "stride"),
    (lambda: SimpleConvNet(input_dim=(28, 28)), ValueError, "input_dim"),
    (lambda: SimpleConvNet(hidden_size=0), ValueError, "hidden_size"),
    (lambda: DeepConvNet(input_dim=(1, 20, 20)), ValueError, "64\\*4\\*4"),
])
def test_bad_constructor_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_bad_inputs(rng):
    net = SimpleConvNet(**SMALL)
    x, t = _images(rng, 4, SMALL["input_dim"]), rng.integers(0, 5, 4)
    with pytest.raises(ValueError, match=r"\(N, 2, 10, 10\).*\(4, 2, 10, 9\)"):
        net.predict(x[..., :9])
    with pytest.raises(ValueError, match="shape"):
        net.gradient(x[:, 0], t)
    with pytest.raises(ValueError, match="label 5"):
        net.gradient(x, np.array([0, 1, 5, 2]))
    with pytest.raises(ValueError, match="one label per row"):
        net.loss(x, t[:3])
    with pytest.raises(ValueError, match="empty"):
        net.gradient(x[:0], t[:0])
    with pytest.raises(TypeError):
        net.predict(x.astype(complex))


def test_a_training_step_allocates_nothing_after_warm_up(rng):
    import tracemalloc

    from fastnn.optim import Adam

    net = SimpleConvNet(dtype=np.float32)
    opt = Adam(lr=0.001)
    x, t = _images(rng, 100), rng.integers(0, 10, 100)
    for _ in range(2):  # warm-up: the plan's workspace and Adam's moments
        opt.update(net.params, net.gradient(x, t))
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        for _ in range(5):
            opt.update(net.params, net.gradient(x, t))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - base < 20_000, (base, peak)  # a few Python objects, no arrays


def test_command_trains_a_convnet_saves_and_predicts(tmp_path, capsys):
    from fastnn.__main__ import main

    mnist = SHARED_DATASETS / "mnist"
    if not mnist.is_dir():
        pytest.skip(f"MNIST is not at {mnist}")
    weights = tmp_path / "convnet.npz"
    main(["train", "--net", "simpleconv", "--data-dir", str(mnist), "--iters", "40",
          "--dtype", "float32", "--save", str(weights), "--quiet"])
    out = capsys.readouterr().out
    assert "Adam lr 0.001" in out and "SimpleConvNet (hidden 100)" in out
    accuracy = float(out.split("fastnn: test accuracy")[1].split(",")[0])
    assert accuracy > 0.6
    main(["predict", str(weights), "--data-dir", str(mnist)])
    assert f"test accuracy {accuracy:.4f}" in capsys.readouterr().out


# --- the compiled step's two paths (fastnn/_kernels/_convnet.pyx) ------------------------------

def _oracle(convs, Wc, bc, Wd, bd, x, t):
    """Loss and gradients of a Plan's network by the twins' layers, in float64."""
    from fastnn.reference.conv import Convolution, Pooling
    from fastnn.reference.layers import Affine, Relu, SoftmaxWithLoss

    layers = []
    for (C, H, W, F, FH, FW, stride, pad, pool), w, b in zip(convs, Wc, bc):
        layers += [Convolution(w.astype(np.float64), b.astype(np.float64), stride, pad), Relu()]
        if pool:
            layers.append(Pooling(2, 2, 2))
    for j, (w, b) in enumerate(zip(Wd, bd)):
        layers.append(Affine(w.astype(np.float64), b.astype(np.float64)))
        if j < len(Wd) - 1:
            layers.append(Relu())
    y = x.astype(np.float64)
    for layer in layers:
        y = layer.forward(y)
    last = SoftmaxWithLoss()
    loss = last.forward(y, t)
    d = last.backward(1)
    for layer in reversed(layers):
        d = layer.backward(d)
    convs_and_dense = [layer for layer in layers if hasattr(layer, "dW")]
    return loss, y, [layer.dW for layer in convs_and_dense], [layer.db for layer in convs_and_dense]


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 4), c0=st.integers(1, 3), size=st.integers(3, 9),
       layers=st.lists(st.tuples(st.integers(1, 2), st.integers(1, 4), st.integers(0, 3),
                                 st.booleans()), min_size=1, max_size=3),
       tail=st.integers(0, 15), f64=st.booleans(), seed=st.integers(0, 2**31))
def test_direct_and_gemm_paths_match_the_twins(n, c0, size, layers, tail, f64, seed):
    """The direct path (NHWC, stride 1; on one thread and split over two) and im2col + GEMM
    give the twins' loss and gradients on every geometry either takes: several convolutions,
    pooled or not, padded or not, one or several input channels, and a last layer whose
    filter count is not a multiple of the direct kernel's tile (``tail`` fewer)."""
    from fastnn._kernels._convnet import Plan

    dtype = np.float64 if f64 else np.float32
    block = 64 // np.dtype(dtype).itemsize
    rng = np.random.default_rng(seed)
    convs, C, H = [], c0, size
    for blocks, fs, pad, pool in layers:
        pad = min(pad, fs - 1)
        out = H + 2 * pad - fs + 1
        if out < 1 or (pool and out < 2):
            break
        convs.append((C, H, H, blocks * block, fs, fs, 1, pad, int(pool)))
        C, H = blocks * block, out // 2 if pool else out
    if not convs:
        return
    # the last layer's filters: rounded up to the tile inside the direct path
    C -= tail % block
    convs[-1] = convs[-1][:3] + (C,) + convs[-1][4:]
    features = C * H * H
    Wc = [(rng.standard_normal((F, C, FH, FW)) / np.sqrt(C * FH * FW)).astype(dtype)
          for C, _, _, F, FH, FW, _, _, _ in convs]
    bc = [(0.1 * rng.standard_normal(cv[3])).astype(dtype) for cv in convs]
    sizes = [features, 5, 3]
    Wd = [(rng.standard_normal((a, b)) / np.sqrt(a)).astype(dtype)
          for a, b in zip(sizes, sizes[1:])]
    bd = [(0.1 * rng.standard_normal(b)).astype(dtype) for b in sizes[1:]]
    x = rng.standard_normal((n, c0, size, size)).astype(dtype)
    t = rng.integers(0, 3, n)
    loss_ref, y_ref, dW_ref, db_ref = _oracle(convs, Wc, bc, Wd, bd, x, t)
    for direct, shares in ((True, 1), (True, 2), (False, 1)):
        plan = Plan(convs, sizes, [0.0, 0.0], n, dtype, direct=direct, max_shares=2)
        assert plan.direct == direct
        assert plan.max_shares == (min(2, n) if direct else 1)
        out = np.empty((n, 3), dtype)
        plan.forward(Wc, bc, Wd, bd, x, out, None, shares)
        assert_twin(out, y_ref, dtype, f"scores (direct={direct}, shares={shares})")
        dWc = [np.empty_like(w) for w in Wc]
        dbc = [np.empty_like(b) for b in bc]
        dWd = [np.empty_like(w) for w in Wd]
        dbd = [np.empty_like(b) for b in bd]
        loss = plan.gradient(Wc, bc, Wd, bd, x, t, True, dWc, dbc, dWd, dbd, shares=shares)
        assert_twin(loss, loss_ref, dtype, f"loss (direct={direct})")
        for i, (g, r) in enumerate(zip(dWc + dWd, dW_ref)):
            assert_twin(g, r, dtype, f"dW{i + 1} (direct={direct})")
        for i, (g, r) in enumerate(zip(dbc + dbd, db_ref)):
            assert_twin(g, r, dtype, f"db{i + 1} (direct={direct})")


def test_the_direct_path_is_taken_where_it_applies():
    from fastnn._kernels._convnet import Plan

    deep = DeepConvNet(dtype=np.float32)
    assert deep._plan(3).direct  # 16, 32, 64 filters, stride 1, pads 1 and 2
    for dtype in (np.float32, np.float64):
        assert SimpleConvNet(dtype=dtype)._plan(3).direct  # 30 filters, rounded up inside
    one = [(1, 8, 8, 16, 3, 3, 1, 1, 1)]
    assert Plan(one, [256, 10], [0.0], 2, np.float32).direct
    assert not Plan([(1, 8, 8, 16, 3, 3, 2, 1, 0)], [256, 10], [0.0], 2, np.float32).direct
    assert not Plan([(1, 8, 8, 16, 3, 3, 1, 3, 0)], [16 * 12 * 12, 10], [0.0], 2,
                    np.float32).direct  # pad >= filter size
    assert Plan([(1, 8, 8, 12, 3, 3, 1, 1, 1)], [192, 10], [0.0], 2, np.float32).direct
    assert Plan([(1, 8, 8, 8, 3, 3, 1, 1, 1)], [128, 10], [0.0], 2, np.float64).direct
    # a second layer's input channels (the first's filters) must fill the tiles
    twelve = [(1, 8, 8, 12, 3, 3, 1, 1, 0), (12, 8, 8, 16, 3, 3, 1, 1, 1)]
    assert not Plan(twelve, [256, 10], [0.0], 2, np.float32).direct
    with pytest.raises(ValueError, match="direct"):
        Plan(twelve, [256, 10], [0.0], 2, np.float32, direct=True)
