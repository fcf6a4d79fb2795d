"""The loss family (fastnn/_kernels/_loss.pyx): softmax, the book's losses, their layers."""
import numpy as np
import pytest

from fastnn import functions as F
from fastnn import layers as L
from fastnn.reference import functions as R

# the book's chapter 4 example: the "2" is the correct class
Y_BOOK = np.array([0.1, 0.05, 0.6, 0.0, 0.05, 0.1, 0.0, 0.1, 0.0, 0.0])
T_BOOK = np.array([0, 0, 1, 0, 0, 0, 0, 0, 0, 0])


def test_book_loss_examples():
    assert F.mean_squared_error(Y_BOOK, T_BOOK) == pytest.approx(0.0975, abs=1e-15)
    assert F.cross_entropy_error(Y_BOOK, T_BOOK) == pytest.approx(0.510825457099338, rel=1e-12)
    assert F.cross_entropy_error(Y_BOOK, 2) == F.cross_entropy_error(Y_BOOK, T_BOOK)
    assert F.mean_squared_error is F.sum_squared_error


def test_softmax_overflow_safe_and_shapes():
    x = np.array([1010.0, 1000.0, 990.0])
    y = F.softmax(x)
    np.testing.assert_allclose(y, R.softmax(x), rtol=1e-15)
    assert y.sum() == pytest.approx(1.0)
    batch = np.random.default_rng(0).standard_normal((2, 3, 4)) * 1e4
    y3 = F.softmax(batch)
    assert y3.shape == batch.shape and np.all(np.isfinite(y3))
    np.testing.assert_allclose(y3.sum(axis=-1), 1.0)
    with pytest.raises(ValueError, match="scalar"):
        F.softmax(3.0)


def test_labels_shaped_n_by_1_are_labels(rng):
    y = F.softmax(rng.standard_normal((6, 4)))
    t = rng.integers(0, 4, 6)
    expected = F.cross_entropy_error(y, t)
    # the book's code silently returns a wrong number for (N, 1) labels
    assert F.cross_entropy_error(y, t.reshape(6, 1)) == expected
    assert F.cross_entropy_error(y, t.astype(np.uint8)) == expected
    assert F.cross_entropy_error(y, F.one_hot(t, 4)) == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize("bad, error, match", [
    (np.array([0, 4, 1]), ValueError, "label 4"),
    (np.array([0, -1, 1]), ValueError, "label -1"),
    (np.array([0.0, 1.0, 2.0]), TypeError, "integer"),
    (np.array([0, 1]), ValueError, r"\(3,\)"),
    (np.zeros((3, 2), dtype=int), ValueError, r"\(3, 2\)"),
])
def test_bad_labels(rng, bad, error, match):
    y = F.softmax(rng.standard_normal((3, 4)))
    with pytest.raises(error, match=match):
        F.cross_entropy_error(y, bad)
    with pytest.raises(error, match=match):
        F.softmax_loss(y, bad)


def test_exact_loss_matches_log_softmax(rng):
    x = rng.standard_normal((5, 7)) * 50
    t = rng.integers(0, 7, 5)
    log_softmax = x - x.max(1, keepdims=True)
    log_softmax -= np.log(np.exp(log_softmax).sum(1, keepdims=True))
    expected = -log_softmax[np.arange(5), t].mean()
    assert F.softmax_loss(x, t, exact=True) == pytest.approx(expected, rel=1e-13)
    assert F.cross_entropy_error(x, t, exact=True) == pytest.approx(expected, rel=1e-13)
    # the book's 1e-7 bounds the loss of a confident wrong answer; the exact one does not
    assert F.softmax_loss(np.array([[0.0, 1e4]]), [0]) == pytest.approx(-np.log(1e-7), rel=1e-6)
    assert F.softmax_loss(np.array([[0.0, 1e4]]), [0], exact=True) == pytest.approx(1e4)


def test_one_hot():
    np.testing.assert_array_equal(F.one_hot([2, 0], 3), [[0, 0, 1], [1, 0, 0]])
    np.testing.assert_array_equal(F.one_hot(np.array([[1], [0]]), 2), [[[0, 1]], [[1, 0]]])
    # binary case: column 1 is the label, column 0 its complement
    labels = np.array([1, 0, 1])
    np.testing.assert_array_equal(F.one_hot(labels, 2)[:, 1], labels)
    np.testing.assert_array_equal(F.one_hot(labels, 2)[:, 0], 1 - labels)
    assert F.one_hot(np.array([1, 2], dtype=np.uint8)).shape == (2, 3)
    with pytest.raises(ValueError, match="label 3"):
        F.one_hot([3], 3)
    with pytest.raises(TypeError, match="integers"):
        F.one_hot([0.5], 2)


def test_binary_cross_entropy_is_two_class_softmax(rng):
    z = rng.standard_normal(8) * 5
    t = rng.integers(0, 2, 8)
    # sigmoid(z) = P(y1) of a softmax over logits (0, z): P(y0) = 1 - P(y1)
    two_class = np.stack([np.zeros_like(z), z], axis=1)
    np.testing.assert_allclose(F.sigmoid(z), F.softmax(two_class)[:, 1], rtol=1e-14)
    assert F.binary_cross_entropy(z, t, from_logits=True) == pytest.approx(
        F.softmax_loss(two_class, t, exact=True), rel=1e-12)
    big = np.array([1e4, -1e4, 800.0])
    loss = F.binary_cross_entropy(big, np.array([0.0, 1.0, 1.0]), from_logits=True)
    assert np.isfinite(loss) and loss == pytest.approx(2e4 / 3)


def test_softmax_with_loss_targets(rng):
    x = rng.standard_normal((5, 4))
    t = rng.integers(0, 4, 5)
    layers = [L.SoftmaxWithLoss() for _ in range(3)]
    losses = [layers[0].forward(x, t), layers[1].forward(x, t.reshape(5, 1)),
              layers[2].forward(x, np.eye(4)[t])]
    assert losses[0] == losses[1] == pytest.approx(losses[2], rel=1e-15)
    grads = [layer.backward() for layer in layers]
    np.testing.assert_allclose(grads[0], (layers[0].y - np.eye(4)[t]) / 5, rtol=1e-15)
    for g in grads[1:]:
        np.testing.assert_allclose(g, grads[0], rtol=1e-15)
    np.testing.assert_allclose(layers[0].backward(2.0), 2 * grads[0], rtol=1e-15)
    one = L.SoftmaxWithLoss()
    loss = one.forward(x[0], t[0])  # a single 1-D sample with a scalar label
    assert loss == pytest.approx(L.SoftmaxWithLoss().forward(x[:1], t[:1]), rel=1e-15)
    assert one.backward().shape == (4,)


def test_sigmoid_with_loss(rng):
    x = rng.standard_normal((6, 1)) * 4
    t = rng.integers(0, 2, (6, 1)).astype(float)
    layer = L.SigmoidWithLoss()
    loss = layer.forward(x, t)
    y = 1 / (1 + np.exp(-x))
    assert loss == pytest.approx(-np.sum(t * np.log(y) + (1 - t) * np.log(1 - y)) / 6, rel=1e-12)
    np.testing.assert_allclose(layer.backward(), (y - t) / 6, rtol=1e-13)

