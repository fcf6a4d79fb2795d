"""The book's functions: its worked examples, edge cases, dtypes and clear errors."""
import numpy as np
import pytest

from fastnn import functions as F
from fastnn.reference import functions as R

# the book's chapter 4 example: the "2" is the correct class
Y_BOOK = np.array([0.1, 0.05, 0.6, 0.0, 0.05, 0.1, 0.0, 0.1, 0.0, 0.0])
T_BOOK = np.array([0, 0, 1, 0, 0, 0, 0, 0, 0, 0])


def test_book_loss_examples():
    assert F.mean_squared_error(Y_BOOK, T_BOOK) == pytest.approx(0.0975, abs=1e-15)
    assert F.cross_entropy_error(Y_BOOK, T_BOOK) == pytest.approx(0.510825457099338, rel=1e-12)
    assert F.cross_entropy_error(Y_BOOK, 2) == F.cross_entropy_error(Y_BOOK, T_BOOK)
    assert F.mean_squared_error is F.sum_squared_error


def test_activation_values():
    x = np.array([-1.0, 0.0, 2.0])
    np.testing.assert_array_equal(F.step_function(x), [0, 0, 1])
    np.testing.assert_array_equal(F.relu(x), [0, 0, 2])
    np.testing.assert_array_equal(F.relu_grad(x), [0, 1, 1])  # the book's 1 at x = 0
    np.testing.assert_allclose(F.sigmoid(x), 1 / (1 + np.exp(-x)), rtol=1e-15)
    assert F.identity_function(x) is x


def test_sigmoid_extremes_are_finite_and_exact():
    x = np.array([-1e4, -745.0, -30.0, 0.0, 30.0, 1e4])
    s = F.sigmoid(x)
    assert np.all(np.isfinite(s))
    assert s[0] == 0.0 and s[-1] == 1.0 and s[3] == 0.5
    assert s[1] > 0  # exp(-745) is subnormal, not flushed


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


def test_shape_errors_name_arguments():
    with pytest.raises(ValueError, match=r"t must have shape \(4,\), got \(4, 1\)"):
        F.sum_squared_error(np.zeros(4), np.zeros((4, 1)))
    with pytest.raises(ValueError, match="1-D .* or 2-D"):
        F.cross_entropy_error(np.zeros((2, 3, 4)), np.zeros(2, dtype=int))
    with pytest.raises(ValueError, match="empty batch"):
        F.softmax_loss(np.zeros((0, 3)), np.zeros(0, dtype=int))


@pytest.mark.parametrize("dtype", [np.complex128, object, np.longdouble])
def test_unsupported_dtypes_refused(dtype):
    with pytest.raises(TypeError, match="x has dtype"):
        F.sigmoid(np.zeros(3, dtype=dtype))


def test_dtype_promotion():
    y32 = np.full((2, 3), 1 / 3, dtype=np.float32)
    t64 = np.eye(3)[[0, 1]]
    assert F.softmax(y32).dtype == np.float32
    assert type(F.cross_entropy_error(y32, np.array([0, 1]))) is np.float32
    assert type(F.cross_entropy_error(y32, t64)) is np.float64  # as y32 * t64 promotes
    assert F.sigmoid(np.array([1, 2])).dtype == np.float64  # integers compute in float64
    assert F.sigmoid(np.zeros(2, dtype=np.float16)).dtype == np.float32


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
