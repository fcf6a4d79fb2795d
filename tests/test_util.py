"""fastnn.util against the book's common/util.py."""
import numpy as np
import pytest
from conftest import book_module

from fastnn import util


@pytest.mark.parametrize("n", [6, 11, 50, 1000])
def test_smooth_curve_is_the_books(n):
    x = np.random.default_rng(n).standard_normal(n)
    np.testing.assert_array_equal(util.smooth_curve(x), book_module("common.util").smooth_curve(x))


def test_smooth_curve_refuses_what_it_cannot_mirror():
    with pytest.raises(ValueError, match="at least 6"):
        util.smooth_curve(np.ones(5))
    with pytest.raises(ValueError, match="1-D"):
        util.smooth_curve(np.ones((3, 4)))


@pytest.mark.parametrize("shape", [(10, 3), (7, 1, 4, 4)])
def test_shuffle_dataset_draws_the_books_permutation(shape):
    x = np.arange(np.prod(shape)).reshape(shape)
    t = np.arange(shape[0]) * 10
    np.random.seed(5)
    ours = util.shuffle_dataset(x, t)
    np.random.seed(5)
    books = book_module("common.util").shuffle_dataset(x, t)
    for a, b in zip(ours, books):
        np.testing.assert_array_equal(a, b)


def test_shuffle_dataset_refuses_mismatched_counts():
    with pytest.raises(ValueError, match=r"\(4, 2\) and \(3,\)"):
        util.shuffle_dataset(np.zeros((4, 2)), np.zeros(3))


@pytest.mark.parametrize("args", [(28, 5), (28, 5, 1, 2), (7, 3, 2, 0), (10, 4, 3, 1)])
def test_conv_output_size_is_the_books(args):
    assert util.conv_output_size(*args) == book_module("common.util").conv_output_size(*args)


def test_conv_output_size_refuses_a_zero_stride():
    with pytest.raises(ValueError, match="stride"):
        util.conv_output_size(28, 5, stride=0)
