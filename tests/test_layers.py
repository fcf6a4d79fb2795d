"""The book's computational-graph layers (chapter 5 examples) and the layer API across families: clear errors."""
import numpy as np
import pytest

from fastnn import layers as L


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
