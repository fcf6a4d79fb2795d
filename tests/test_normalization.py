"""The normalization family (chapter 6): Dropout, BatchNormalization, MultiLayerNetExtend.

Against the book's own code (``conftest.book_module``), against the twins where the registry
does not reach (two-row batches, the biases before batch normalization), against PyTorch
where it is installed, the book's ``ch06/batch_norm_gradient_check.py`` as a test, the
MT19937 mask generator against NumPy's, and the errors of bad input.
"""
import numpy as np
import pytest
from conftest import SHARED_DATASETS, TOLERANCE, assert_twin, book_module

from fastnn import layers as L
from fastnn import nets as N
from fastnn._kernels import _normalization
from fastnn.reference import nets as RN
from fastnn.reference import normalization as R

DTYPES = [np.float32, np.float64]


def rel_err(fast, ref, scale=None):
    fast, ref = np.asarray(fast, np.float64), np.asarray(ref, np.float64)
    bound = max(float(np.max(np.abs(ref), initial=0.0)) if scale is None else scale,
                np.finfo(np.float64).tiny)
    return float(np.max(np.abs(fast - ref), initial=0.0)) / bound


# --- Dropout ----------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(100, 100), (7, 3), (1,), (), (0, 5), (3, 4, 5, 6), (313, 2)])
@pytest.mark.parametrize("ratio", [0.5, 0.2, 0.0, 0.9])
def test_dropout_masks_are_the_books_under_the_same_seed(shape, ratio):
    book = book_module("common.layers")
    x = np.random.default_rng(1).standard_normal(shape)
    np.random.seed(42)
    fast_layer = L.Dropout(ratio)
    fast = [fast_layer.forward(x), fast_layer.forward(x)]  # two draws in a row
    fast_masks = fast_layer.mask
    fast_after = np.random.rand(3)  # the global generator left where the book leaves it
    np.random.seed(42)
    book_layer = book.Dropout(ratio)
    ref = [book_layer.forward(x), book_layer.forward(x)]
    ref_after = np.random.rand(3)
    for f, r in zip(fast, ref):
        np.testing.assert_array_equal(f, r)
    np.testing.assert_array_equal(fast_masks, book_layer.mask)
    np.testing.assert_array_equal(fast_after, ref_after)
    dout = np.random.default_rng(2).standard_normal(shape)
    np.testing.assert_array_equal(fast_layer.backward(dout), book_layer.backward(dout))
    np.testing.assert_array_equal(fast_layer.forward(x, train_flg=False),
                                  book_layer.forward(x, train_flg=False))


@pytest.mark.parametrize("offset", [0, 1, 2, 623, 624, 625, 1247])
@pytest.mark.parametrize("size", [0, 1, 2, 311, 312, 313, 624, 5001])
def test_vectorised_mt19937_draws_numpys_doubles(offset, size):
    """Every position of the 624-word block, odd ones too (a double whose two words straddle
    a regeneration): the masks of np.random.rand, and the generator left where it leaves it."""
    assert _normalization._MT19937_OK
    for ratio in (0.5, 0.999, 1e-9):
        np.random.seed(size + offset)
        np.random.get_bit_generator().random_raw(offset)  # one word each
        mask = np.empty(size, dtype=bool)
        _normalization.dropout_mask(np.random.get_bit_generator(), mask, ratio)
        after = np.random.get_bit_generator().random_raw(5)
        np.random.seed(size + offset)
        np.random.get_bit_generator().random_raw(offset)
        np.testing.assert_array_equal(mask, np.random.rand(size) > ratio)
        np.testing.assert_array_equal(after, np.random.get_bit_generator().random_raw(5))


def test_dropout_with_its_own_generator_leaves_the_global_one_alone():
    x = np.ones((50, 40))
    np.random.seed(3)
    expected = np.random.rand(4)
    np.random.seed(3)
    out = L.Dropout(0.25, rng=9).forward(x)
    np.testing.assert_array_equal(np.random.rand(4), expected)
    np.testing.assert_array_equal(out, R.Dropout(0.25, rng=9).forward(x))
    np.testing.assert_array_equal(out != 0, np.random.default_rng(9).random(x.shape) > 0.25)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_keeps_the_dtype_and_nan(dtype):
    x = np.array([[np.nan, np.inf, 1.0, -2.0]] * 50, dtype=dtype)
    np.random.seed(0)
    out = L.Dropout(0.5).forward(x)
    np.random.seed(0)
    ref = R.Dropout(0.5).forward(x)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, ref)  # inf * 0 is NaN in both, as in the book
    assert L.Dropout(0.5).forward(x, train_flg=False).dtype == dtype


# --- BatchNormalization against the book ------------------------------------------------------

def _bn_data(rng, shape, dtype):
    d = int(np.prod(shape[1:]))
    x = (3 * rng.standard_normal(shape) + 2 * rng.standard_normal(shape[1:])).astype(dtype)
    gamma = (1 + 0.3 * rng.standard_normal(d)).astype(dtype)
    beta = rng.standard_normal(d).astype(dtype)
    return x, gamma, beta, rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("shape", [(100, 50), (7, 3), (3, 1), (10, 2, 3, 4), (5, 1, 1, 1)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_batchnorm_matches_the_books_layer(shape, dtype, rng):
    book = book_module("common.layers")
    x, gamma, beta, dout = _bn_data(rng, shape, dtype)
    fast, ref = L.BatchNormalization(gamma, beta), book.BatchNormalization(gamma, beta)
    for step in range(3):  # the running statistics over several steps
        xs = x * (step + 1) - step
        assert_twin(fast.forward(xs), ref.forward(xs), dtype, f"forward {step}")
        assert_twin(fast.backward(dout), ref.backward(dout), dtype, f"backward {step}")
        assert_twin(fast.dgamma, ref.dgamma, dtype, "dgamma")
        assert_twin(fast.dbeta, ref.dbeta, dtype, "dbeta")
        assert_twin(fast.running_mean, ref.running_mean, dtype, "running_mean")
        assert_twin(fast.running_var, ref.running_var, dtype, "running_var")
        assert_twin(fast.std, ref.std, dtype, "std")
        assert_twin(fast.xn, ref.xn, dtype, "xn")
        assert_twin(fast.xc, ref.xc, dtype, "xc")
        assert fast.batch_size == ref.batch_size and fast.input_shape == ref.input_shape
    assert_twin(fast.forward(x, train_flg=False), ref.forward(x, train_flg=False), dtype, "test")
    assert fast.running_mean.dtype == np.float64  # as the book's np.zeros(D)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batchnorm_backward_of_two_rows_within_rounding_of_its_terms(dtype, rng):
    """At two rows dx is the part of dout orthogonal to 1 and xn, about eps / var of the
    terms gamma dout / std; both orders of the operations are within rounding of those."""
    x, gamma, beta, dout = _bn_data(rng, (2, 30), dtype)
    fast, ref = L.BatchNormalization(gamma, beta), R.BatchNormalization(gamma, beta)
    fast.forward(x)
    ref.forward(x)
    terms = float(np.max(np.abs(gamma * dout / ref.std)))
    assert rel_err(fast.backward(dout), ref.backward(dout), terms) <= 4 * TOLERANCE[np.dtype(dtype)]


def test_batchnorm_given_running_statistics_are_not_modified(rng):
    x, gamma, beta, _ = _bn_data(rng, (8, 4), np.float64)
    mean, var = np.full(4, 0.5), np.full(4, 2.0)
    layer = L.BatchNormalization(gamma, beta, momentum=0.5, running_mean=mean, running_var=var)
    layer.forward(x)
    np.testing.assert_array_equal(mean, 0.5)
    np.testing.assert_allclose(layer.running_mean, 0.5 * 0.5 + 0.5 * x.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(layer.running_var, 0.5 * 2.0 + 0.5 * x.var(axis=0), rtol=1e-14)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batchnorm_statistics_of_large_offsets(dtype):
    """A mean far from 0 against a small spread: the sums shifted by the first row keep the
    variance's digits (a plain sum of squares in float32 would lose all of them)."""
    rng = np.random.default_rng(4)
    x = (1000 + 0.01 * rng.standard_normal((64, 8))).astype(dtype)
    layer = L.BatchNormalization(np.ones(8, dtype), np.zeros(8, dtype))
    out = layer.forward(x)
    x64 = x.astype(np.float64)
    expected = (x64 - x64.mean(0)) / np.sqrt(x64.var(0) + 10e-7)
    # float32: the statistics in double keep float32's accuracy; float64: what the
    # conditioning allows, an ulp of the mean (1000) against the spread (0.01)
    bound = 10 * TOLERANCE[np.dtype(np.float32)] if dtype == np.float32 else 1e-10
    assert rel_err(out, expected) <= bound


# --- BatchNormalization against PyTorch ---------------------------------------------------

@pytest.mark.parametrize("shape", [(100, 50), (9, 4), (6, 2, 3, 3)])
def test_batchnorm_training_matches_pytorch(shape, rng):
    torch = pytest.importorskip("torch")
    x, gamma, beta, dout = _bn_data(rng, shape, np.float64)
    n, d = shape[0], int(np.prod(shape[1:]))
    fast = L.BatchNormalization(gamma, beta)
    out = fast.forward(x)
    dx = fast.backward(dout)
    # the book flattens a 4-D batch per sample: features are C*H*W, as in BatchNorm1d
    xt = torch.tensor(x.reshape(n, d), requires_grad=True)
    gt, bt = torch.tensor(gamma, requires_grad=True), torch.tensor(beta, requires_grad=True)
    ot = torch.nn.functional.batch_norm(xt, None, None, gt, bt, training=True, eps=10e-7)
    ot.backward(torch.tensor(dout.reshape(n, d)))
    assert rel_err(out.reshape(n, d), ot.detach().numpy()) <= 1e-12
    assert rel_err(dx.reshape(n, d), xt.grad.numpy()) <= 1e-12
    assert rel_err(fast.dgamma, gt.grad.numpy()) <= 1e-12
    assert rel_err(fast.dbeta, bt.grad.numpy()) <= 1e-12


# --- MultiLayerNetExtend against the book ------------------------------------------------------

BOOK_OPTIONS = [
    dict(),
    dict(use_batchnorm=True),
    dict(use_dropout=True),
    dict(use_dropout=True, dropout_ration=0.15, use_batchnorm=True),
    dict(weight_decay_lambda=0.1),
    dict(weight_decay_lambda=0.1, use_batchnorm=True, use_dropout=True),
    dict(activation="sigmoid", weight_init_std="sigmoid", use_batchnorm=True, use_dropout=True),
    dict(activation="sigmoid", weight_init_std=0.05, weight_decay_lambda=0.01),
]


def _book_pair(options, sizes=(30, [12, 9, 7], 10), seed=1):
    book = book_module("common.multi_layer_net_extend")
    np.random.seed(seed)
    fast = N.MultiLayerNetExtend(*sizes, **options)
    np.random.seed(seed)
    ref = book.MultiLayerNetExtend(*sizes, **options)
    return fast, ref


def _batch(n=20, d=30, k=10, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, d)), rng.integers(0, k, n)


@pytest.mark.parametrize("options", BOOK_OPTIONS, ids=lambda o: ",".join(o) or "plain")
def test_extend_matches_the_books_network(options):
    fast, ref = _book_pair(options)
    assert list(fast.params) == list(ref.params)
    for key in ref.params:  # the book's initial weights under np.random.seed
        np.testing.assert_array_equal(fast.params[key], ref.params[key], err_msg=key)
    assert list(fast.layers) == list(ref.layers)
    x, t = _batch()
    for step in range(3):
        np.random.seed(100 + step)  # the same dropout masks
        grads = {k: g.copy() for k, g in fast.gradient(x, t).items()}
        np.random.seed(100 + step)
        book_grads = ref.gradient(x, t)
        assert list(grads) == list(book_grads)
        scale = max(float(np.max(np.abs(g))) for g in book_grads.values())
        for key, g in book_grads.items():
            # the bias before batch normalization has no effect: its gradient is rounding
            # noise around 0, bounded by the gradients' scale
            noise = options.get("use_batchnorm") and key.startswith("b") and key != "b4"
            assert rel_err(grads[key], g, scale if noise else None) <= 1e-12, (step, key)
        for key in ref.params:  # one SGD step on both
            fast.params[key] -= 0.1 * grads[key]
            ref.params[key] -= 0.1 * book_grads[key]
        np.random.seed(7)
        train_loss = fast.loss(x, t, train_flg=True)
        np.random.seed(7)
        assert rel_err(train_loss, ref.loss(x, t, train_flg=True)) <= 1e-12
        assert rel_err(fast.loss(x, t), ref.loss(x, t)) <= 1e-12
        assert rel_err(fast.predict(x), ref.predict(x)) <= 1e-12
        assert fast.accuracy(x, t) == ref.accuracy(x, t)
    for name, layer in ref.layers.items():
        if name.startswith("BatchNorm"):
            assert rel_err(fast.layers[name].running_mean, layer.running_mean) <= 1e-12
            assert rel_err(fast.layers[name].running_var, layer.running_var) <= 1e-12


@pytest.mark.parametrize("dtype", DTYPES)
def test_extend_float32_and_float64_against_the_twin_with_one_hot_targets(dtype):
    x, t = _batch(16, 30)
    x = x.astype(dtype)
    options = dict(use_batchnorm=True, use_dropout=True, dropout_ration=0.3,
                   weight_decay_lambda=0.01, dtype=dtype, rng=4)
    fast = N.MultiLayerNetExtend(30, [12, 9], 10, **options)
    ref = RN.MultiLayerNetExtend(30, [12, 9], 10, **options)
    t1 = np.eye(10, dtype=dtype)[t]
    grads, ref_grads = fast.gradient(x, t1), ref.gradient(x, t1)
    assert all(g.dtype == dtype for g in grads.values())
    for key in ("W1", "gamma1", "beta1", "W2", "gamma2", "beta2", "W3", "b3"):
        assert_twin(grads[key], ref_grads[key], dtype, key)
    assert_twin(fast.loss(x, t1), ref.loss(x, t1), dtype, "loss")  # test mode: no draw


def test_extend_runs_layer_by_layer_when_the_dtypes_differ():
    """float32 weights given float64 data compute in float64 (NumPy's promotion), through the
    layer objects: the same numbers as the book's code."""
    x, t = _batch(12, 30)
    options = dict(use_batchnorm=True, use_dropout=True, dtype=np.float32)
    np.random.seed(5)
    fast = N.MultiLayerNetExtend(30, [8, 6], 10, **options)
    np.random.seed(5)
    ref = RN.MultiLayerNetExtend(30, [8, 6], 10, **options)
    np.random.seed(6)
    grads = fast.gradient(x, t)
    np.random.seed(6)
    ref_grads = ref.gradient(x, t)
    for key in ("W1", "gamma1", "W2", "beta2", "W3"):
        assert grads[key].dtype == np.float64
        assert_twin(grads[key], ref_grads[key], np.float64, key)


def test_extend_caches_reach_the_layers():
    x, t = _batch(10, 30)
    net = N.MultiLayerNetExtend(30, [8, 6], 10, use_batchnorm=True, use_dropout=True, rng=0)
    grads = net.gradient(x, t)
    assert net.layers["Dropout1"].mask.shape == (10, 8)
    assert net.layers["BatchNorm2"].dgamma is grads["gamma2"]
    assert net.layers["Affine3"].dW is grads["W3"]
    # the layer objects can take over from the compiled pass's caches
    dx = net.layers["BatchNorm1"].backward(np.ones((10, 8)))
    assert dx.shape == (10, 8)


@pytest.mark.parametrize("batchnorm", [False, True])
def test_extend_numerical_gradient_matches_the_books(batchnorm):
    """The brute force as the book runs it: every loss a training pass (so, with batch
    normalization, one that moves the running statistics), also here."""
    fast, ref = _book_pair(dict(use_batchnorm=batchnorm, weight_decay_lambda=0.05),
                           sizes=(6, [5, 4], 3), seed=2)
    x, t = _batch(4, 6, 3, seed=3)
    grads, book = fast.numerical_gradient(x, t), ref.numerical_gradient(x, t)
    assert list(grads) == list(book)
    for key in book:
        assert rel_err(grads[key], book[key], max(1.0, float(np.max(np.abs(book[key]))))) < 1e-9, key
    for name, layer in ref.layers.items():
        if name.startswith("BatchNorm"):
            assert rel_err(fast.layers[name].running_mean, layer.running_mean) <= 1e-12


def _mnist_rows(n):
    path = SHARED_DATASETS / "mnist"
    if path.is_dir():
        from fastnn.datasets import load_mnist

        (x, t), _ = load_mnist(normalize=True, one_hot_label=True, data_dir=path, download=False)
        return x[:n].astype(np.float64), t[:n]
    rng = np.random.default_rng(0)
    return rng.random((n, 784)), np.eye(10)[rng.integers(0, 10, n)]


def test_batch_norm_gradient_check_as_the_book_runs_it():
    """ch06/batch_norm_gradient_check.py: one MNIST row, backprop and the numerical gradient
    of a batch-normalized network, against the book's network under the same seed (the
    book's 784 pixels taken one in four and its hidden [100, 100] made [10, 8], so that the
    book's brute force stays quick).  At
    batch 1 every batch-normalized layer outputs its beta whatever its input, so the
    gradients of W1 and W2 vanish, and the relu sits exactly at its kink (beta = 0): the
    book's printed differences for the betas are large, and fastnn's are the same."""
    book = book_module("common.multi_layer_net_extend")
    x, t = _mnist_rows(1)
    x = np.ascontiguousarray(x[:, ::4])
    np.random.seed(0)
    network = N.MultiLayerNetExtend(input_size=196, hidden_size_list=[10, 8], output_size=10,
                                    use_batchnorm=True)
    np.random.seed(0)
    book_network = book.MultiLayerNetExtend(input_size=196, hidden_size_list=[10, 8],
                                            output_size=10, use_batchnorm=True)
    grad_backprop = {k: g.copy() for k, g in network.gradient(x, t).items()}
    grad_numerical = network.numerical_gradient(x, t)
    book_backprop = book_network.gradient(x, t)
    book_numerical = book_network.numerical_gradient(x, t)
    for key in book_numerical:
        assert rel_err(grad_backprop[key], book_backprop[key], 1.0) <= 1e-12, key
        assert rel_err(grad_numerical[key], book_numerical[key], 1.0) <= 1e-9, key
        diff = np.average(np.abs(grad_backprop[key] - grad_numerical[key]))
        book_diff = np.average(np.abs(book_backprop[key] - book_numerical[key]))
        assert abs(diff - book_diff) <= 1e-9, key


def test_batch_norm_gradient_check_on_a_batch():
    """The same check on three rows, where no unit sits at a kink: backprop and the
    numerical gradient agree to the central difference's error."""
    x, t = _mnist_rows(3)
    np.random.seed(0)
    network = N.MultiLayerNetExtend(input_size=784, hidden_size_list=[10, 8], output_size=10,
                                    use_batchnorm=True)
    grad_backprop = {k: g.copy() for k, g in network.gradient(x, t).items()}
    grad_numerical = network.numerical_gradient(x, t)
    assert set(grad_numerical) == set(grad_backprop)
    for key in grad_numerical:
        diff = np.average(np.abs(grad_backprop[key] - grad_numerical[key]))
        assert diff < 1e-6, (key, diff)
    assert np.max(np.abs(grad_backprop["W1"])) > 1e-3


# --- bad input --------------------------------------------------------------------------------

@pytest.mark.parametrize("ratio", [1.0, -0.1, 1.5, np.nan])
def test_dropout_ratio_outside_0_1_is_refused(ratio):
    with pytest.raises(ValueError, match="dropout_ratio"):
        L.Dropout(ratio)
    with pytest.raises(ValueError, match="dropout_ration"):
        N.MultiLayerNetExtend(4, [3], 2, use_dropout=True, dropout_ration=ratio)
    with pytest.raises(TypeError, match="dropout_ratio"):
        L.Dropout("0.5")


def test_backward_before_forward():
    with pytest.raises(ValueError, match=r"Dropout.backward\(\) called before forward"):
        L.Dropout().backward(np.ones(3))
    layer = L.BatchNormalization(np.ones(3), np.zeros(3))
    with pytest.raises(ValueError, match="before a training-mode forward"):
        layer.backward(np.ones((2, 3)))
    layer.forward(np.ones((2, 3)), train_flg=False)  # test mode keeps nothing for backward
    with pytest.raises(ValueError, match="before a training-mode forward"):
        layer.backward(np.ones((2, 3)))


def test_batchnorm_shapes_are_checked():
    layer = L.BatchNormalization(np.ones(4), np.zeros(4))
    with pytest.raises(ValueError, match=r"2-D \(N, D\) or 4-D .* shape \(2, 2, 2\)"):
        layer.forward(np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match=r"2-D \(N, D\) or 4-D"):
        layer.forward(np.ones(4))
    with pytest.raises(ValueError, match=r"gamma must have shape \(6,\).*\(3, 6\).*\(4,\)"):
        layer.forward(np.ones((3, 6)))
    with pytest.raises(ValueError, match=r"beta must have shape \(4,\)"):
        L.BatchNormalization(np.ones(4), np.zeros(5)).forward(np.ones((3, 4)))
    with pytest.raises(ValueError, match="empty batch"):
        layer.forward(np.ones((0, 4)))
    assert layer.forward(np.ones((0, 4)), train_flg=False).shape == (0, 4)
    layer.forward(np.ones((3, 4)))
    with pytest.raises(ValueError, match=r"dout must have shape \(3, 4\)"):
        layer.backward(np.ones((3, 5)))
    with pytest.raises(TypeError, match="dtype complex128"):
        layer.forward(np.ones((3, 4), dtype=complex))
    with pytest.raises(ValueError, match=r"running_mean must have shape \(4,\)"):
        L.BatchNormalization(np.ones(4), np.zeros(4), running_mean=np.zeros(3),
                             running_var=np.zeros(3)).forward(np.ones((3, 4)))


def test_dropout_dout_shape_is_checked():
    layer = L.Dropout(0.5)
    layer.forward(np.ones((3, 4)))
    with pytest.raises(ValueError, match=r"dout must have shape \(3, 4\), got \(4, 3\)"):
        layer.backward(np.ones((4, 3)))


def test_extend_constructor_and_inputs_are_checked():
    with pytest.raises(ValueError, match="activation"):
        N.MultiLayerNetExtend(4, [3], 2, activation="tanh")
    with pytest.raises(TypeError, match="dtype"):
        N.MultiLayerNetExtend(4, [3], 2, dtype=np.int32)
    net = N.MultiLayerNetExtend(4, [3], 2, use_batchnorm=True, rng=0)
    with pytest.raises(ValueError, match=r"x has 5 features per sample .* takes 4"):
        net.gradient(np.ones((2, 5)), np.zeros(2, int))
    with pytest.raises(ValueError, match="empty batch"):
        net.gradient(np.ones((0, 4)), np.zeros(0, int))
    with pytest.raises(ValueError, match="label"):
        net.gradient(np.ones((2, 4)), np.array([0, 2]))


def test_extend_predict_and_accuracy_over_several_blocks():
    """Test mode runs in blocks of rows (the last one partial): the same as the twin."""
    rng = np.random.default_rng(8)
    x, t = rng.random((2500, 12)), rng.integers(0, 3, 2500)
    options = dict(use_batchnorm=True, use_dropout=True, rng=2)
    fast = N.MultiLayerNetExtend(12, [7, 5], 3, **options)
    ref = RN.MultiLayerNetExtend(12, [7, 5], 3, **options)
    fast.gradient(x[:50], t[:50])
    ref.gradient(x[:50], t[:50])
    assert_twin(fast.predict(x), ref.predict(x), np.float64, "predict")
    assert fast.accuracy(x, t) == ref.accuracy(x, t)
    assert_twin(fast.predict(x.astype(np.float32)), ref.predict(x.astype(np.float32)), np.float64)
