"""The activations family (fastnn/_kernels/_activations.pyx): values, extremes, the book's Relu."""
import numpy as np

from fastnn import functions as F
from fastnn import layers as L


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


def test_relu_mask_and_backward_keeps_dout(rng):
    x = rng.standard_normal((4, 5))
    x[0, 0] = 0.0
    relu = L.Relu()
    out = relu.forward(x)
    np.testing.assert_array_equal(relu.mask, x <= 0)  # the book's mask
    np.testing.assert_array_equal(out, np.maximum(x, 0))
    dout = rng.standard_normal((4, 5))
    kept = dout.copy()
    dx = relu.backward(dout)
    np.testing.assert_array_equal(dout, kept)  # unlike the book, dout is not overwritten
    np.testing.assert_array_equal(dx, np.where(x <= 0, 0, kept))

