"""Bad and extreme input, case by case: the NaN/inf policy, stability at any magnitude, inputs
never modified, backward before forward, bad labels, shape mismatches named in the message,
and regression tests for the memory-safety bugs found by tests/test_fuzz.py.

docs/robustness.md tabulates these cases and points here.
"""
import concurrent.futures

import numpy as np
import pytest

import fastnn.functions as F
import fastnn.gradient as G
import fastnn.layers as L
import fastnn.nets as N
import fastnn.optim as O
import fastnn.reference.functions as RF
from fastnn.registry import FAST, PAIRS

NAN, INF = np.nan, np.inf
DTYPES = [np.float32, np.float64]
DTYPE_IDS = ["f32", "f64"]


def finishes(fn, *args, seconds=20):
    """``fn(*args)``, failing the test if it does not return within ``seconds`` (a loop that
    never ends on NaN would hang the suite instead)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result(timeout=seconds)


# --- NaN and inf propagate as NumPy propagates them --------------------------------------------

SPECIAL = np.array([NAN, INF, -INF, 0.0, -0.0, 1.0, -1.0])


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_elementwise_functions_follow_ieee(dtype):
    x = SPECIAL.astype(dtype)
    with np.errstate(over="ignore"):
        expected_sigmoid = RF.sigmoid(x)
    np.testing.assert_allclose(finishes(F.sigmoid, x), expected_sigmoid, rtol=1e-6)
    assert F.sigmoid(x)[1] == 1 and F.sigmoid(x)[2] == 0
    np.testing.assert_array_equal(F.relu(x), [NAN, INF, 0, 0, 0, 1, 0])
    np.testing.assert_array_equal(F.relu_grad(x), [0, 1, 0, 1, 1, 1, 0])  # NaN >= 0 is false
    relu = L.Relu()
    np.testing.assert_array_equal(relu.forward(x), [NAN, INF, 0, 0, 0, 1, 0])
    # the book's mask is x <= 0, false for NaN: the gradient passes through NaN inputs
    np.testing.assert_array_equal(relu.backward(np.ones_like(x)), [1, 1, 0, 0, 0, 1, 0])


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_softmax_rows_with_nan_and_inf(dtype):
    x = np.array([
        [1.0, NAN, 2.0],      # a NaN makes its row NaN, as x - max(x) does in NumPy
        [1.0, INF, 2.0],      # inf - inf: NaN, as in NumPy
        [-INF, 0.0, 1.0],     # exp(-inf) = 0: a finite row
        [-INF, -INF, -INF],   # -inf - -inf: NaN
        [1.0, 2.0, 3.0],      # untouched by its neighbours
    ], dtype=dtype)
    y = finishes(F.softmax, x)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(np.isnan(y), np.isnan(RF.softmax(x)))
    assert np.all(np.isnan(y[[0, 1, 3]]))
    assert y[2, 0] == 0 and np.all(np.isfinite(y[2])) and y[2].sum() == pytest.approx(1)
    np.testing.assert_allclose(y[4], RF.softmax(x[4]), rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_nan_stays_in_its_row_through_a_network(dtype):
    net = N.TwoLayerNet(4, 5, 3, 0.5, dtype=dtype, rng=0)
    x = np.random.default_rng(0).standard_normal((6, 4)).astype(dtype)
    x[2, 1] = NAN
    x[4, 0] = INF
    scores = finishes(net.predict, x)
    assert np.all(np.isfinite(np.delete(scores, [2, 4], axis=0)))
    assert np.isnan(scores[2]).all()
    # the batch's loss and gradients see the NaN row: NaN, never a crash or a hang
    t = np.array([0, 1, 2, 0, 1, 2])
    assert np.isnan(finishes(net.loss, x, t))
    grads = finishes(net.gradient, x, t)
    assert all(np.isnan(g).any() for g in grads.values())
    assert 0 <= net.accuracy(x, t) <= 1


def test_nan_through_layers_and_optimizers():
    x = np.array([[1.0, NAN], [2.0, 3.0]])
    affine = L.Affine(np.ones((2, 2)), np.zeros(2))
    out = affine.forward(x)
    assert np.isnan(out[0]).all() and np.isfinite(out[1]).all()
    dx = affine.backward(np.ones((2, 2)))
    assert np.isnan(affine.dW[1]).all() and np.isfinite(affine.dW[0]).all()
    assert np.isfinite(dx).all()  # dout @ W.T does not see x
    params, grads = {"W": np.ones(3)}, {"W": np.array([NAN, INF, 1.0])}
    finishes(O.Adam().update, params, grads)
    assert np.isnan(params["W"][:2]).all() and np.isfinite(params["W"][2])


@pytest.mark.parametrize("call", [
    lambda x, t: F.softmax_loss(x, t, exact=True),
    lambda x, t: F.cross_entropy_error(x, t, exact=True),
    lambda x, t: L.SoftmaxWithLoss(exact=True).forward(x, t),
], ids=["softmax_loss", "cross_entropy_error", "SoftmaxWithLoss"])
def test_exact_loss_of_infinite_targets(call):
    """-sum t log_softmax(x) with t = inf where log_softmax(x) < 0 is +inf, as in NumPy."""
    x, t = np.zeros((1, 2)), np.array([[INF, 0.0]])
    with np.errstate(invalid="ignore"):
        assert RF.softmax_loss(x, t, exact=True) == INF
    assert call(x, t) == INF


# --- stable at any finite magnitude ------------------------------------------------------------

# (dtype, magnitude): up to where a batch's sum of exact losses (logit gaps) still fits
MAGNITUDES = [(np.float64, m) for m in (1e4, 1e30, 1e100, 1e300)] + \
             [(np.float32, m) for m in (1e4, 1e20, 1e37)]


@pytest.mark.parametrize("dtype, magnitude", MAGNITUDES,
                         ids=[f"{np.dtype(d).name}-{m:g}" for d, m in MAGNITUDES])
def test_softmax_and_losses_finite_for_finite_logits(dtype, magnitude):
    rng = np.random.default_rng(1)
    x = (magnitude * rng.uniform(-1, 1, (5, 4))).astype(dtype)
    x[0] = np.array([1, -1, 0, 1], dtype=dtype) * dtype(magnitude)  # a tie at the maximum
    x[1] = dtype(magnitude)                                        # all equal
    t = np.array([1, 0, 3, 2, 1])
    y = F.softmax(x)
    assert np.all(np.isfinite(y)) and np.all(y >= 0)
    np.testing.assert_allclose(y.sum(axis=1), 1, rtol=1e-6)
    np.testing.assert_allclose(y[0], [0.5, 0, 0, 0.5], atol=1e-6)
    for loss in (F.softmax_loss(x, t), F.cross_entropy_error(y, t),
                 F.cross_entropy_error(y, F.one_hot(t, 4, dtype))):
        assert np.isfinite(loss) and loss <= -np.log(1e-7) + 1e-3  # the book's cap
    # the exact loss is the logit gap, as large as the logits but finite
    exact = F.softmax_loss(x, t, exact=True)
    assert np.isfinite(exact) and exact > 0
    layer = L.SoftmaxWithLoss()
    assert np.isfinite(layer.forward(x, t)) and np.all(np.isfinite(layer.backward()))
    sig = L.SigmoidWithLoss()
    assert np.isfinite(sig.forward(x, (x > 0).astype(dtype)))
    assert np.all(np.isfinite(sig.backward()))
    s = F.sigmoid(x)
    assert np.all(np.isfinite(s)) and np.all((s >= 0) & (s <= 1))
    assert np.isfinite(F.binary_cross_entropy(x, (x < 0).astype(dtype), from_logits=True))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_losses_finite_for_probabilities_of_exactly_0_and_1(dtype):
    y = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=dtype)
    right, wrong = np.array([0, 1, 2]), np.array([1, 2, 0])
    assert F.cross_entropy_error(y, right) == pytest.approx(-np.log(1 + 1e-7), abs=1e-6)
    assert F.cross_entropy_error(y, wrong) == pytest.approx(-np.log(1e-7), rel=1e-6)
    assert np.isfinite(F.cross_entropy_error(y, F.one_hot(wrong, 3)))
    p = np.array([0.0, 1.0, 0.0, 1.0], dtype=dtype)
    assert np.isfinite(F.binary_cross_entropy(p, np.array([1, 0, 0, 1], dtype=dtype)))
    # a one-hot row is softmax of logits far apart: finite in the fused layer too
    layer = L.SoftmaxWithLoss()
    assert np.isfinite(layer.forward(1e4 * y, wrong))
    np.testing.assert_allclose(layer.backward(), (y - np.eye(3)[wrong]) / 3, atol=1e-7)


# --- inputs are never modified ------------------------------------------------------------------

def _read_only(a, layout):
    if not isinstance(a, np.ndarray) or a.ndim == 0:
        return a
    a = np.asfortranarray(a) if layout == "F" else np.array(a, copy=True)
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("layout", ["C", "F"])
@pytest.mark.parametrize("pair", PAIRS, ids=[p.name for p in PAIRS])
def test_read_only_inputs_are_accepted_and_unchanged(pair, layout):
    """Every registered compiled path takes read-only arrays (a kernel that wanted to write
    into an input would raise here) and leaves them as they were."""
    inputs = [_read_only(a, layout) for a in pair.make_inputs(np.random.default_rng(3), 6, 4,
                                                              np.float64)]
    before = [np.array(a, copy=True) if isinstance(a, np.ndarray) else a for a in inputs]
    pair.run(FAST, *inputs)
    for a, b in zip(inputs, before):
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b)


def test_backward_never_modifies_dout():
    rng = np.random.default_rng(4)
    x, dout = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    for layer in (L.Relu(), L.Sigmoid(), L.Affine(rng.standard_normal((3, 3)), np.zeros(3))):
        layer.forward(x)
        kept = dout.copy()
        layer.backward(dout)
        np.testing.assert_array_equal(dout, kept)  # the book's Relu zeroes dout in place


def test_training_step_modifies_only_the_parameters():
    net = N.MultiLayerNet(4, [5], 3, dtype=np.float32, rng=5)
    rng = np.random.default_rng(5)
    x, t = rng.standard_normal((7, 4)).astype(np.float32), rng.integers(0, 3, 7)
    kept_x, kept_t = x.copy(), t.copy()
    grads = net.gradient(x, t)
    kept_grads = {k: g.copy() for k, g in grads.items()}
    O.Momentum(lr=0.1).update(net.params, grads)
    np.testing.assert_array_equal(x, kept_x)
    np.testing.assert_array_equal(t, kept_t)
    for key, g in grads.items():
        np.testing.assert_array_equal(g, kept_grads[key])


# --- backward before forward, and after a refused forward ----------------------------------------

LAYERS = {
    "Relu": L.Relu, "Sigmoid": L.Sigmoid, "Identity": L.Identity, "MulLayer": L.MulLayer,
    "AddLayer": L.AddLayer, "SquareLayer": L.SquareLayer,
    "Affine": lambda: L.Affine(np.ones((3, 2)), np.zeros(2)),
    "Linear": lambda: L.Linear(np.ones((2, 3)), np.zeros(2)),
    "SoftmaxWithLoss": L.SoftmaxWithLoss, "SigmoidWithLoss": L.SigmoidWithLoss,
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_backward_before_forward_names_the_layer(name):
    with pytest.raises(ValueError, match=rf"{name}\.backward\(\) called before forward\(\)"):
        LAYERS[name]().backward(np.ones((2, 2)))


@pytest.mark.parametrize("name, good, bad", [
    ("Relu", (np.ones((2, 3)),), ("x",)),
    ("Sigmoid", (np.ones((2, 3)),), (np.ones(3, complex),)),
    ("Affine", (np.ones((2, 3)),), (np.ones((2, 4)),)),
    ("SoftmaxWithLoss", (np.ones((2, 3)), [0, 2]), (np.ones((2, 3)), [0, 3])),
    ("SigmoidWithLoss", (np.ones((2, 3)), np.ones((2, 3))), (np.ones((2, 3)), np.ones(3))),
])
def test_refused_forward_keeps_the_last_good_one(name, good, bad):
    """A forward that raises leaves the cache of the previous forward: backward still gives
    that forward's gradient."""
    layer = LAYERS[name]()
    layer.forward(*good)
    dout = np.ones((2, 2 if name == "Affine" else 3)) if "Loss" not in name else 1
    expected = layer.backward(dout)
    with pytest.raises((ValueError, TypeError)):
        layer.forward(*bad)
    np.testing.assert_array_equal(layer.backward(dout), expected)


# --- labels --------------------------------------------------------------------------------------

BAD_LABELS = [
    ([0, 3], ValueError, r"label 3, outside the 3 classes \[0, 2\]"),
    ([-1, 0], ValueError, r"label -1, outside the 3 classes"),
    (np.array([0, 2**63 + 5], dtype=np.uint64), ValueError, "outside the 3 classes"),
    (np.array([0.0, 1.0]), TypeError, "must be an integer array, got dtype float64"),
    (np.array([0.0, NAN]), TypeError, "integer array"),
    (np.array([True, False]), TypeError, "integer array, got dtype bool"),
    (["0", "1"], TypeError, "integer array"),
    ([0, 1, 2], ValueError, r"one label per row: expected shape \(2,\)"),
    ([[0, 1]], ValueError, r"expected shape \(2,\) \(or \(2, 1\)\).*got \(1, 2\)"),
]
LABEL_USERS = {
    "cross_entropy_error": lambda y, t: F.cross_entropy_error(F.softmax(y), t),
    "cross_entropy_error[exact]": lambda y, t: F.cross_entropy_error(y, t, exact=True),
    "softmax_loss": F.softmax_loss,
    "SoftmaxWithLoss": lambda y, t: L.SoftmaxWithLoss().forward(y, t),
    "TwoLayerNet.loss": lambda y, t: N.TwoLayerNet(3, 2, 3, rng=0).loss(y, t),
    "TwoLayerNet.gradient": lambda y, t: N.TwoLayerNet(3, 2, 3, rng=0).gradient(y, t),
    "MultiLayerNet.accuracy": lambda y, t: N.MultiLayerNet(3, [2], 3, rng=0).accuracy(y, t),
    "network_numerical_gradient": lambda y, t: G.network_numerical_gradient(
        [np.ones((3, 3))], [np.zeros(3)], y, t),
}


@pytest.mark.parametrize("user", list(LABEL_USERS))
@pytest.mark.parametrize("labels, error, match", BAD_LABELS,
                         ids=["too-large", "negative", "uint64-huge", "float", "nan", "bool",
                              "str", "too-many", "wrong-shape"])
def test_bad_labels_are_refused(user, labels, error, match):
    with pytest.raises(error, match=match):
        LABEL_USERS[user](np.ones((2, 3)), labels)


def test_one_hot_refuses_bad_labels():
    with pytest.raises(ValueError, match="label -1"):
        F.one_hot([0, -1], 3)
    with pytest.raises(ValueError, match="label 3, outside the 3 classes"):
        F.one_hot([[0, 3]], 3)
    with pytest.raises(TypeError, match="labels must be integers"):
        F.one_hot([0.5])
    with pytest.raises(TypeError, match="num_classes must be an integer"):
        F.one_hot([0], 2.0)
    with pytest.raises(ValueError, match="num_classes must be >= 0"):
        F.one_hot([0], -1)


# --- shape mismatches name the argument and the shapes ---------------------------------------

def _forwarded(layer, *args):
    layer.forward(*args)
    return layer


SHAPE_ERRORS = [
    ("Affine x", lambda: L.Affine(np.ones((4, 3)), np.ones(3)).forward(np.ones((2, 5))),
     r"x has 5 features per sample \(shape \(2, 5\)\) but W \(4, 3\) expects 4"),
    ("Linear x", lambda: L.Linear(np.ones((3, 4)), np.ones(3)).forward(np.ones((2, 5))),
     r"x has 5 features .* W \(3, 4\) expects 4"),
    ("Affine b", lambda: L.Affine(np.ones((4, 3)), np.ones(4)).forward(np.ones((2, 4))),
     r"b must have shape \(3,\) to match W \(4, 3\), got \(4,\)"),
    ("Affine W 1-D", lambda: L.Affine(np.ones(4), np.ones(4)).forward(np.ones((2, 4))),
     r"W must be a 2-D array, got shape \(4,\)"),
    ("Affine empty W", lambda: L.Affine(np.ones((0, 3)), np.ones(3)).forward(np.ones((2, 0))),
     r"W must have at least one input and one output, got shape \(0, 3\)"),
    ("Affine dout", lambda: _forwarded(L.Affine(np.ones((4, 3)), np.ones(3)),
                                       np.ones((2, 4))).backward(np.ones((3, 3))),
     r"dout must have shape \(2, 3\) \(the forward output's\), got \(3, 3\)"),
    ("Relu dout", lambda: _forwarded(L.Relu(), np.ones((2, 3))).backward(np.ones((3, 2))),
     r"dout must have shape \(2, 3\), got \(3, 2\)"),
    ("Sigmoid dout", lambda: _forwarded(L.Sigmoid(), np.ones((2, 3))).backward(np.ones(3)),
     r"dout must have shape \(2, 3\), got \(3,\)"),
    ("sum_squared_error", lambda: F.sum_squared_error(np.ones(3), np.ones((3, 1))),
     r"t must have shape \(3,\), got \(3, 1\)"),
    ("binary_cross_entropy", lambda: F.binary_cross_entropy(np.ones((2, 3)), np.ones(3)),
     r"t must have shape \(2, 3\), got \(3,\)"),
    ("softmax_loss 3-D", lambda: F.softmax_loss(np.ones((2, 3, 4)), [0, 1]),
     r"X must be 1-D \(one sample\) or 2-D \(batch, classes\), got \(2, 3, 4\)"),
    ("softmax_loss no classes", lambda: F.softmax_loss(np.ones((2, 0)), np.ones((2, 0))),
     r"X has no classes, shape \(2, 0\)"),
    ("cross_entropy_error empty", lambda: F.cross_entropy_error(np.ones((0, 3)), []),
     r"y is an empty batch, shape \(0, 3\)"),
    ("softmax scalar", lambda: F.softmax(1.0), "x must have at least one dimension"),
    ("network x", lambda: N.TwoLayerNet(4, 3, 2).predict(np.ones((5, 3))),
     r"x has 3 features per sample \(shape \(5, 3\)\) but the network takes 4"),
    ("network targets",
     lambda: N.TwoLayerNet(4, 3, 2).loss(np.ones((5, 4)), np.ones((5, 3), dtype=int)),
     r"expected shape \(5,\) \(or \(5, 1\)\) or one-hot targets of shape \(5, 2\), got \(5, 3\)"),
    ("optimizer grads", lambda: O.SGD().update({"W": np.ones((2, 3))}, {"W": np.ones((3, 2))}),
     r"grads\['W'\] must have shape \(2, 3\), got \(3, 2\)"),
    ("optimizer keys", lambda: O.SGD().update({"W": np.ones(2)}, {"b": np.ones(2)}),
     r"params and grads must have the same keys"),
]


@pytest.mark.parametrize("call, match", [c[1:] for c in SHAPE_ERRORS],
                         ids=[c[0] for c in SHAPE_ERRORS])
def test_shape_mismatch_names_argument_and_shapes(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("dtype", [np.complex128, object, "U3", np.longdouble])
def test_refused_dtypes_are_type_errors_naming_the_argument(dtype):
    bad = np.ones((2, 3)).astype(dtype)
    with pytest.raises(TypeError, match=r"x has dtype .*float32 or float64"):
        F.sigmoid(bad)
    with pytest.raises(TypeError, match=r"x has dtype"):
        L.Affine(np.ones((3, 2)), np.zeros(2)).forward(bad)
    with pytest.raises(TypeError, match=r"W has dtype"):
        L.Affine(np.ones((3, 2)).astype(dtype), np.zeros(2)).forward(np.ones((2, 3)))
    with pytest.raises(TypeError, match=r"t has dtype"):
        F.softmax_loss(np.ones((2, 3)), bad)
    with pytest.raises(TypeError, match=r"x has dtype"):
        N.TwoLayerNet(3, 2, 2).predict(bad)


# --- regressions: memory-safety bugs found by the fuzzing ----------------------------------------

def test_affine_backward_after_W_replaced_is_refused():
    """Was a heap overflow: backward sized dW and dx from the new W but ran the GEMMs with
    the forward input's width."""
    layer = L.Affine(np.ones((3, 4)), np.ones(4))
    layer.forward(np.ones((2, 3)))
    layer.W = np.ones((2, 4))
    with pytest.raises(ValueError, match=r"W \(2, 4\) expects 2 features per sample, but "
                                         r"forward\(\) saw 3"):
        layer.backward(np.ones((2, 4)))
    layer.forward(np.ones((2, 2)))  # a new forward makes it consistent again
    assert layer.backward(np.ones((2, 4))).shape == (2, 2)


@pytest.mark.parametrize("W_shape", [(0, 3), (3, 0)])
def test_dense_layer_without_inputs_or_outputs_is_refused(W_shape):
    """Was uninitialised memory: the kernel returned early and left db (or dx) unwritten."""
    layer = L.Affine(np.ones(W_shape), np.ones(W_shape[1]))
    with pytest.raises(ValueError, match="at least one input and one output"):
        layer.forward(np.ones((2, W_shape[0])))


def test_loss_over_zero_classes_is_refused():
    """Was an out-of-bounds read: the softmax kernel read the row maximum x[0] of an empty
    row."""
    for call in (lambda: F.softmax_loss(np.ones((2, 0)), np.ones((2, 0))),
                 lambda: F.cross_entropy_error(np.ones((2, 0)), np.ones((2, 0)), exact=True),
                 lambda: L.SoftmaxWithLoss().forward(np.ones((2, 0)), np.ones((2, 0)))):
        with pytest.raises(ValueError, match="has no classes"):
            call()


def test_empty_batch_through_dense_layers_and_networks():
    """Was a NumPy reshape error naming nothing: an empty batch now gives empty outputs and
    zero parameter gradients, as NumPy's empty sums are."""
    layer = L.Affine(np.ones((3, 2)), np.ones(2))
    assert layer.forward(np.ones((0, 3, 1))).shape == (0, 2)
    assert layer.backward(np.ones((0, 2))).shape == (0, 3, 1)
    np.testing.assert_array_equal(layer.dW, 0)
    np.testing.assert_array_equal(layer.db, 0)
    net = N.MultiLayerNet(3, [4], 2, rng=0)
    assert net.predict(np.ones((0, 3))).shape == (0, 2)


def test_from_params_with_a_scalar_weight_is_a_value_error():
    """Was an IndexError: from_params read np.shape(W1)[0] before checking that W1 is 2-D."""
    params = {"W1": np.array(1.0), "b1": np.ones(1), "W2": np.ones((1, 2)), "b2": np.ones(2)}
    with pytest.raises(ValueError, match="W1"):
        N.MultiLayerNet.from_params(params)


@pytest.mark.parametrize("which, k", [
    ("W1", 2), ("W2", 2), ("x", 2), ("t", 2),
    ("W2", 1),
])
def test_numerical_gradient_of_read_only_arrays(which, k):
    """Was a ValueError ("buffer source array is read-only") for valid input: the sweep took
    non-const memoryviews of x, t and the last weight."""
    arrays = {"W1": np.ones((2, 3)), "W2": np.ones((3, k)), "x": np.ones((1, 2)),
              "t": np.eye(k)[[0]]}
    arrays[which].flags.writeable = False
    dWs, dbs = G.network_numerical_gradient([arrays["W1"], arrays["W2"]],
                                            [np.zeros(3), np.zeros(k)], arrays["x"], arrays["t"])
    assert dWs[1].shape == (3, k)
