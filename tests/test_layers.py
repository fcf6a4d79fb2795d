"""The book's layers: its chapter 5 examples, drop-in semantics and clear errors."""
import numpy as np
import pytest

from fastnn import layers as L
from fastnn.reference import layers as R


def test_apple_and_mandarin():
    apple, apple_num, mandarin, mandarin_num, tax = 100, 2, 150, 3, 1.1
    mul_apple, mul_mandarin, add, mul_tax = L.MulLayer(), L.MulLayer(), L.AddLayer(), L.MulLayer()
    apple_price = mul_apple.forward(apple, apple_num)
    mandarin_price = mul_mandarin.forward(mandarin, mandarin_num)
    all_price = add.forward(apple_price, mandarin_price)
    price = mul_tax.forward(all_price, tax)
    assert price == pytest.approx(715)
    dall_price, dtax = mul_tax.backward(1)
    dapple_price, dmandarin_price = add.backward(dall_price)
    dmandarin, dmandarin_num = mul_mandarin.backward(dmandarin_price)
    dapple, dapple_num = mul_apple.backward(dapple_price)
    assert (dapple_num, dapple, dmandarin, dmandarin_num, dtax) == pytest.approx((110, 2.2, 3.3, 165, 650))


@pytest.mark.parametrize("x, y", [(3.0, 4.0), (np.array([1.0, -2.0]), np.array([0.5, 0.5]))])
def test_chain_rule_square_of_sum(x, y):
    add, square = L.AddLayer(), L.SquareLayer()
    z = square.forward(add.forward(x, y))
    np.testing.assert_allclose(z, (x + y) ** 2)
    dx, dy = add.backward(square.backward(1))
    np.testing.assert_allclose(dx, 2 * (x + y))
    np.testing.assert_allclose(dy, 2 * (x + y))


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


@pytest.mark.parametrize("layer, args", [
    (L.Relu(), ()), (L.Sigmoid(), ()), (L.Affine(np.ones((2, 2)), np.ones(2)), ()),
    (L.SoftmaxWithLoss(), ()), (L.MulLayer(), ()), (L.SquareLayer(), ()), (L.Identity(), ()),
])
def test_backward_before_forward(layer, args):
    with pytest.raises(ValueError, match="before forward"):
        layer.backward(np.ones((2, 2)))


def test_shape_errors_name_shapes(rng):
    layer = L.Affine(np.ones((4, 3)), np.ones(3))
    with pytest.raises(ValueError, match=r"x has 5 features .*\(2, 5\).*\(4, 3\)"):
        layer.forward(np.ones((2, 5)))
    with pytest.raises(ValueError, match=r"b must have shape \(3,\)"):
        L.Affine(np.ones((4, 3)), np.ones(4)).forward(np.ones((2, 4)))
    layer.forward(np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"dout must have shape \(2, 3\)"):
        layer.backward(np.ones((2, 4)))
    relu = L.Relu()
    relu.forward(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"dout must have shape \(2, 3\), got \(3, 2\)"):
        relu.backward(np.ones((3, 2)))
    with pytest.raises(ValueError, match="label 7"):
        L.SoftmaxWithLoss().forward(np.ones((2, 3)), [0, 7])
    with pytest.raises(TypeError, match="dout must be a real number"):
        sm = L.SoftmaxWithLoss()
        sm.forward(np.ones((2, 3)), [0, 1])
        sm.backward(np.ones(3))
