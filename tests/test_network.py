"""The book's networks: construction, drop-in behaviour against the twins, dtypes."""
import numpy as np
import pytest

from fastnn import nets as N
from fastnn.reference import nets as R


def test_global_seed_reproduces_the_books_initial_weights():
    np.random.seed(0)
    fast = N.TwoLayerNet(784, 50, 10)
    np.random.seed(0)
    book = R.TwoLayerNet(784, 50, 10)
    for key in ("W1", "b1", "W2", "b2"):
        np.testing.assert_array_equal(fast.params[key], book.params[key])
    assert list(fast.layers) == ["Affine1", "Relu1", "Affine2"]
    assert fast.lastLayer is fast.last_layer


def test_multilayer_structure_and_init_scales():
    net = N.MultiLayerNet(100, [80, 60], 10, activation="sigmoid", weight_init_std="xavier", rng=0)
    assert list(net.layers) == ["Affine1", "Activation_function1", "Affine2",
                                "Activation_function2", "Affine3"]
    assert net.params["W1"].std() == pytest.approx(np.sqrt(1 / 100), rel=0.05)
    he = N.MultiLayerNet(100, [80], 10, rng=0)
    assert he.params["W1"].std() == pytest.approx(np.sqrt(2 / 100), rel=0.05)


def test_identity_activations_collapse_to_one_affine_map(rng):
    net = N.MultiLayerNet(6, [5, 4, 3], 2, activation="identity", weight_init_std=0.5, rng=1)
    for idx in range(1, 5):
        net.params[f"b{idx}"][:] = rng.standard_normal(net.params[f"b{idx}"].shape)
    W, b = np.eye(6), np.zeros(6)
    for idx in range(1, 5):  # A(A(A(z))) is again an affine map z @ W + b
        W, b = W @ net.params[f"W{idx}"], b @ net.params[f"W{idx}"] + net.params[f"b{idx}"]
    x = rng.standard_normal((7, 6))
    np.testing.assert_allclose(net.predict(x), x @ W + b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_network_dtype_end_to_end(dtype, rng):
    net = N.TwoLayerNet(20, 8, 10, dtype=dtype, rng=0)
    x = rng.random((5, 20)).astype(dtype)
    t = rng.integers(0, 10, 5)
    assert net.predict(x).dtype == dtype
    assert all(g.dtype == dtype for g in net.gradient(x, t).values())


def test_accuracy_labels_and_one_hot(rng):
    net = N.TwoLayerNet(8, 6, 3, rng=0)
    x = rng.standard_normal((12, 8))
    t = np.argmax(net.predict(x), axis=1)
    assert net.accuracy(x, t) == 1.0
    assert net.accuracy(x, np.eye(3)[t]) == 1.0
    assert net.accuracy(x, (t + 1) % 3) == 0.0


def test_from_params_uses_the_arrays(rng):
    net = N.MultiLayerNet(8, [6, 5], 3, rng=0, dtype=np.float32)
    clone = N.MultiLayerNet.from_params(net.params, activation="relu")
    assert clone.params["W2"] is net.params["W2"] and clone.dtype == np.float32
    x = rng.random((4, 8)).astype(np.float32)
    np.testing.assert_array_equal(clone.predict(x), net.predict(x))
    with pytest.raises(ValueError, match="W1, b1"):
        N.MultiLayerNet.from_params({"W1": net.params["W1"]})
    bad = dict(net.params, W2=np.zeros((7, 5), np.float32))
    with pytest.raises(ValueError, match=r"W2 \(7, 5\)"):
        N.MultiLayerNet.from_params(bad)


def test_bad_construction():
    with pytest.raises(ValueError, match="activation"):
        N.MultiLayerNet(4, [3], 2, activation="tanh")
    with pytest.raises(ValueError, match="layer sizes must be >= 1"):
        N.MultiLayerNet(4, [0], 2)
    with pytest.raises(TypeError, match="layer sizes must be an integer"):
        N.MultiLayerNet(4, [2.5], 2)
    with pytest.raises(TypeError, match="float32 or float64"):
        N.TwoLayerNet(4, 3, 2, dtype=np.int32)


def _pair(make, x_dtype, net_dtype, seed=0):
    fast, ref = make(N, net_dtype), make(R, net_dtype)
    rng = np.random.default_rng(seed)
    x = rng.random((30, 12)).astype(x_dtype)
    t = rng.integers(0, 4, 30)
    return fast, ref, x, t


@pytest.mark.parametrize("x_dtype, net_dtype", [
    (np.float32, np.float64),  # the book's case: float32 images, float64 weights
    (np.float64, np.float32),  # promotes to float64: computed layer by layer
    (np.uint8, np.float64),
])
def test_mixed_dtypes_match_twin(x_dtype, net_dtype):
    from conftest import assert_twin

    make = lambda api, dt: api.MultiLayerNet(12, [9, 7], 4, dtype=dt, rng=5, weight_decay_lambda=0.1)
    fast, ref, x, t = _pair(make, x_dtype, net_dtype)
    expected = np.result_type(x_dtype, net_dtype) if x_dtype != np.uint8 else np.float64
    assert fast.predict(x).dtype == expected
    tol_dtype = np.float32 if np.float32 in (x_dtype, net_dtype) else np.float64
    assert_twin(fast.loss(x, t), ref.loss(x, t), tol_dtype)
    assert_twin(tuple(fast.gradient(x, t).values()), tuple(ref.gradient(x, t).values()), tol_dtype)


def test_gradient_buffers_and_last_loss(rng):
    net = N.TwoLayerNet(12, 6, 4, rng=0)
    x, t = rng.random((8, 12)), rng.integers(0, 4, 8)
    g1 = net.gradient(x, t)
    assert net.last_loss == pytest.approx(net.loss(x, t), rel=1e-15)
    w1 = g1["W1"].copy()
    g2 = net.gradient(x[:4], t[:4])
    assert g2["W1"] is g1["W1"]  # the buffers are reused, as documented
    assert not np.array_equal(w1, g2["W1"])
    assert net.layers["Affine1"].dW is g2["W1"]


def test_predict_and_accuracy_in_blocks(rng):
    # more rows than one block of the compiled inference
    fast, ref = N.TwoLayerNet(12, 6, 4, rng=0), R.TwoLayerNet(12, 6, 4, rng=0)
    x = rng.random((5000, 12))
    t = rng.integers(0, 4, 5000)
    np.testing.assert_allclose(fast.predict(x), ref.predict(x), rtol=1e-12, atol=1e-15)
    assert fast.accuracy(x, t) == ref.accuracy(x, t)
    assert fast.accuracy(x, np.eye(4)[t]) == ref.accuracy(x, t)
    single = fast.predict(x[0])
    assert single.shape == (4,)
    np.testing.assert_allclose(single, ref.predict(x[:1])[0], rtol=1e-13)


def test_params_replaced_in_place_are_used(rng):
    net = N.TwoLayerNet(12, 6, 4, rng=0)
    x, t = rng.random((8, 12)), rng.integers(0, 4, 8)
    before = net.predict(x)
    net.params["b2"] += 1.0  # in place: the layers and the compiled path see it
    np.testing.assert_allclose(net.predict(x), before + 1.0, rtol=1e-14)


def test_network_input_errors(rng):
    net = N.TwoLayerNet(12, 6, 4, rng=0)
    with pytest.raises(ValueError, match=r"x has 11 features .* takes 12"):
        net.gradient(np.ones((3, 11)), [0, 1, 2])
    with pytest.raises(ValueError, match="label 4"):
        net.gradient(np.ones((3, 12)), [0, 1, 4])
    with pytest.raises(ValueError, match=r"\(3,\)"):
        net.loss(np.ones((3, 12)), [0, 1])


def test_inference_casts_block_by_block(rng):
    # float32 data into a float64 network: never a float64 copy of the whole data set
    import tracemalloc

    net = N.TwoLayerNet(64, 8, 4, rng=0)
    x = rng.random((20000, 64)).astype(np.float32)
    t = rng.integers(0, 4, 20000)
    net.accuracy(x[:10], t[:10])  # workspaces
    tracemalloc.start()
    try:
        acc = net.accuracy(x, t)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < x.size * 8 // 4, peak
    assert acc == R.TwoLayerNet(64, 8, 4, rng=0).accuracy(x, t)
