"""The dense family (fastnn/_kernels/_dense.pyx): the book's Affine and PyTorch-style Linear."""
import numpy as np

from fastnn import layers as L
from fastnn.reference import layers as R


def test_affine_keeps_references_to_params(rng):
    params = {"W1": rng.standard_normal((4, 3)), "b1": np.zeros(3)}
    layer = L.Affine(params["W1"], params["b1"])
    assert layer.W is params["W1"] and layer.b is params["b1"]
    x = rng.standard_normal((2, 4))
    before = layer.forward(x)
    params["W1"] -= 0.5 * np.ones((4, 3))  # an optimizer's in-place update
    params["b1"] += 1.0
    np.testing.assert_allclose(layer.forward(x), before - 0.5 * x.sum(1, keepdims=True) + 1.0)


def test_affine_single_sample_and_nd_input(rng):
    W, b = rng.standard_normal((6, 2)), rng.standard_normal(2)
    layer = L.Affine(W, b)
    out = layer.forward(np.arange(6.0))
    assert out.shape == (2,)
    np.testing.assert_allclose(out, np.arange(6.0) @ W + b)
    dx = layer.backward(np.ones(2))
    assert dx.shape == (6,) and layer.dW.shape == (6, 2)
    x4 = rng.standard_normal((3, 1, 2, 3))
    ref = R.Affine(W, b)
    np.testing.assert_allclose(layer.forward(x4), ref.forward(x4), rtol=1e-13)
    dout = rng.standard_normal((3, 2))
    dx = layer.backward(dout)
    assert dx.shape == x4.shape
    np.testing.assert_allclose(dx, ref.backward(dout), rtol=1e-13)


def test_affine_skip_input_gradient(rng):
    W, b = rng.standard_normal((5, 3)), rng.standard_normal(3)
    x, dout = rng.standard_normal((4, 5)), rng.standard_normal((4, 3))
    full, skip = L.Affine(W, b), L.Affine(W, b)
    full.forward(x)
    skip.forward(x)
    full.backward(dout)
    assert skip.backward(dout, compute_dx=False) is None
    np.testing.assert_array_equal(skip.dW, full.dW)
    np.testing.assert_array_equal(skip.db, full.db)


def test_linear_is_affine_with_transposed_weight(rng):
    W, b, x = rng.standard_normal((3, 5)), rng.standard_normal(3), rng.standard_normal((4, 5))
    lin, aff = L.Linear(W, b), L.Affine(np.ascontiguousarray(W.T), b)
    np.testing.assert_allclose(lin.forward(x), aff.forward(x), rtol=1e-14)
    dout = rng.standard_normal((4, 3))
    np.testing.assert_allclose(lin.backward(dout), aff.backward(dout), rtol=1e-14)
    np.testing.assert_allclose(lin.dW, aff.dW.T, rtol=1e-14)


def test_mixed_dtypes_promote_as_numpy(rng):
    W = rng.standard_normal((4, 3))
    x32 = rng.standard_normal((2, 4)).astype(np.float32)
    assert L.Affine(W, np.zeros(3)).forward(x32).dtype == np.float64  # as the book's code
    W32 = W.astype(np.float32)
    assert L.Affine(W32, np.zeros(3, np.float32)).forward(x32).dtype == np.float32
    assert L.Affine(W, np.zeros(3)).forward(np.ones((2, 4), dtype=np.uint8)).dtype == np.float64

