"""What a user can hand a compiled path behind the validation's back (issue 13, cases 1, 2, 9):
reassigned cache attributes, ndarray subclasses whose ``.shape`` lies, arrays changed in place,
a network's own gradient buffers as input.  Each must give the right answer or a clean
ValueError/TypeError, never an out-of-bounds access (the riskiest run in a subprocess, so that
a crash fails the test instead of killing the run)."""
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import fastnn.layers as L
import fastnn.nets as N
import fastnn.optim as O
from fastnn._kernels import _activations, _conv, _dense, _loss, _network, _optim

def run_isolated(code):
    """Run ``code`` in a fresh interpreter; a crash or a hang fails the test."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.mark.parametrize("view", ["reversed", "fortran", "strided"])
def test_affine_backward_after_x_reassigned(view):
    rng = np.random.default_rng(0)
    x, W, b = rng.standard_normal((6, 4)), rng.standard_normal((4, 3)), rng.standard_normal(3)
    layer = L.Affine(W, b)
    layer.forward(x)
    new_x = {"reversed": x[::-1], "fortran": np.asfortranarray(x),
             "strided": np.repeat(x, 2, axis=0)[::2]}[view]
    layer.x = new_x
    dout = rng.standard_normal((6, 3))
    layer.backward(dout)
    np.testing.assert_allclose(layer.dW, new_x.T @ dout, rtol=1e-12)


def test_affine_backward_refuses_a_1d_x():
    layer = L.Affine(np.ones((4, 3)), np.zeros(3))
    layer.forward(np.ones((2, 4)))
    layer.x = np.ones(4)
    with pytest.raises(ValueError, match="2-D"):
        layer.backward(np.ones((2, 3)))


def test_affine_reversed_x_in_a_subprocess_is_no_crash():
    run_isolated("""
        import numpy as np, fastnn.layers as L
        x = np.random.default_rng(0).standard_normal((512, 784))
        layer = L.Affine(np.ones((784, 50)), np.zeros(50))
        layer.forward(x)
        layer.x = x[::-1]
        layer.backward(np.ones((512, 50)))
        assert np.allclose(layer.dW, x[::-1].T @ np.ones((512, 50)))
    """)


def test_relu_mask_of_another_dtype_is_refused():
    """The book's ``dx[mask] = 0`` reads an integer mask as row indices (it would zero rows
    0 and 1 here), which no caller means: a TypeError naming the mask, not another number."""
    x = np.array([[-1.0, 2.0], [3.0, -4.0]])
    layer = L.Relu()
    layer.forward(x)
    layer.mask = (x <= 0).astype(np.int64)
    with pytest.raises(TypeError, match="Relu.mask must be a bool array"):
        layer.backward(np.ones((2, 2)))
    layer.mask = (x <= 0).tolist()  # a list of bools is the bool mask it spells
    np.testing.assert_array_equal(layer.backward(np.ones((2, 2))), [[0, 1], [1, 0]])


def test_sigmoid_out_reassigned_to_a_reversed_view():
    layer = L.Sigmoid()
    out = layer.forward(np.linspace(-2, 2, 12).reshape(4, 3))
    layer.out = out[::-1]
    dout = np.ones((4, 3))
    np.testing.assert_allclose(layer.backward(dout), (1 - out[::-1]) * out[::-1], rtol=1e-15)


@pytest.mark.parametrize("entry", ["Affine", "Linear", "MultiLayerNet", "SGD"])
def test_lying_shape_subclasses_are_no_crash(entry):
    run_isolated(f"""
        import numpy as np
        import fastnn.layers as L, fastnn.nets as N, fastnn.optim as O
        class LyingShape(np.ndarray):
            @property
            def shape(self):
                real = np.ndarray.shape.__get__(self)
                return (real[0] * 10,) + real[1:] if real else real
        lie = lambda a: np.asarray(a, dtype=float).view(LyingShape)
        rng = np.random.default_rng(0)
        x, W, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 2)), np.zeros(2)
        try:
            if "{entry}" == "Affine":
                out = L.Affine(lie(W), lie(b)).forward(lie(x))
                assert np.allclose(out, x @ W + b)
            elif "{entry}" == "Linear":
                out = L.Linear(lie(W.T), lie(b)).forward(lie(x))
                assert np.allclose(out, x @ W + b)
            elif "{entry}" == "MultiLayerNet":
                net = N.MultiLayerNet.from_params({{"W1": lie(W), "b1": lie(b)}})
                net.predict(lie(x))
                net.gradient(lie(x), np.array([0, 1, 0]))
            else:
                p, g = lie(np.ones(5)), lie(np.ones(5))
                O.SGD(lr=0.5).update({{"w": p}}, {{"w": g}})
                assert np.allclose(np.asarray(p), 0.5)
        except (ValueError, TypeError) as exc:
            assert str(exc)
    """)


@pytest.mark.parametrize("call", [
    lambda: _activations.relu_backward(np.ones(200), np.zeros(100, np.uint8), np.empty(200)),
    lambda: _activations.sigmoid_forward(np.ones(10), np.empty(9)),
    lambda: _activations.sigmoid_backward(np.ones(10), np.ones(10)[::-1], np.empty(10)),
    lambda: _loss.softmax_forward(np.ones((4, 3)), np.empty((3, 3))),
    lambda: _loss.softmax_xent_grad(np.ones((4, 3)), np.zeros(3, np.int64), True,
                                    np.empty((4, 3)), np.empty(4)),
    lambda: _loss.softmax_xent_forward(np.ones((4, 3)), np.zeros((4, 3), np.float32), False,
                                       np.empty((4, 3)), np.empty(4)),
    lambda: _loss.xent(np.ones((4, 3)), np.zeros(4, np.int32), True, np.empty(4)),
    lambda: _loss.first_bad_label(np.zeros((2, 2), np.int64), 3),
    lambda: _dense.dense_forward(np.ones((4, 3)), np.ones((2, 5)), np.ones(5), np.empty((4, 5))),
    lambda: _dense.dense_forward(np.ones((4, 3)), np.ones((3, 5)), np.ones(5),
                                 np.empty((4, 5)).view(np.float32)),
    lambda: _dense.dense_backward(np.ones((4, 5)), np.ones((4, 3)), np.ones((3, 5)),
                                  np.empty((3, 4)), np.empty(5)),
    lambda: _dense.dense_forward(np.ones((4, 3)), np.ones((3, 5)), np.ones(5),
                                 np.zeros((4, 5)).copy().setflags(write=False) or
                                 np.broadcast_to(np.zeros(5), (4, 5))),
    lambda: _optim.sgd_update(np.ones(10), np.ones(5), 0.1),
    lambda: _optim.adam_update(np.ones(10), np.ones(10), np.ones(10), np.ones(3), 0.1, 0.9, 0.99),
    lambda: _network.forward([np.ones((3, 2))], [np.ones(2)], np.ones((4, 3)),
                             [np.empty((3, 2))], 1),
    lambda: _network.count_argmax_hits(np.ones((5, 3)), np.zeros(4, np.int64)),
    lambda: _network.gradient([np.ones((3, 4)), np.ones((4, 2))], [np.ones(4), np.ones(2)],
                              np.ones((5, 3)), np.zeros(5, np.int64), True,
                              [np.empty((5, 4)), np.empty((5, 2))],
                              [np.empty((3, 4)), np.empty((4, 2))], [np.empty(4), np.empty(2)],
                              np.empty((5, 1)), np.empty((5, 4)), np.empty(5), 1, False, 0.0),
    lambda: _conv.conv_forward(np.ones((2, 3, 8, 8)), np.ones((4, 3, 3, 3)), np.ones(4),
                               np.empty((2, 4, 6, 5)), 1, 0),
    lambda: _conv.conv_backward(np.ones((2, 4, 6, 6)), np.ones((2, 3, 8, 8)),
                                np.ones((4, 3, 3, 3)), np.empty(107), np.empty(4),
                                np.empty((2, 3, 8, 8)), 1, 0),
    lambda: _conv.conv_relu_pool_forward(np.ones((2, 3, 8, 8)), np.ones((4, 3, 3, 3)),
                                         np.ones(4), np.empty((2, 4, 3, 3)),
                                         np.empty((2, 4, 3, 2), np.int32), 1, 0, 2, 2, 2, 0),
    lambda: _conv.conv_relu_pool_backward(np.ones((2, 4, 3, 3)), np.zeros((2, 4, 3, 3), np.int32),
                                          np.ones((2, 4, 3, 3)), np.ones((2, 3, 8, 8)),
                                          np.ones((4, 3, 3, 3)), np.empty((4, 3, 3, 3)),
                                          np.empty(4), np.empty((2, 3, 8, 7)), 1, 0, 2, 2, 2, 0),
    lambda: _conv.maxpool_forward(np.ones((2, 3, 8, 8)), np.empty((2, 3, 4, 4)),
                                  np.empty((2, 3, 4, 4), np.int32)[:, :, ::-1], 2, 2, 2, 0),
    lambda: _conv.maxpool_backward(np.ones((2, 3, 4, 4)), np.zeros((2, 3, 4, 4), np.int32),
                                   np.empty((2, 3, 11, 11)), 2, 2, 2, 0),
    lambda: _conv.im2col(np.ones((2, 3, 8, 8)), np.empty((72, 12)), 2, 2, 1, 0),
    lambda: _conv.col2im(np.ones((98, 12), np.float32), np.empty((2, 3, 8, 8)), 2, 2, 1, 0),
    lambda: _conv.conv_forward(np.ones((2, 3, 8, 8)), np.ones((4, 3, 9, 9)), np.ones(4),
                               np.empty((2, 4, 0, 0)), 1, 0),
], ids=lambda c: "")
def test_compiled_entry_points_refuse_arrays_that_do_not_fit(call):
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    assert str(info.value)


@pytest.mark.parametrize("change", ["strides", "dtype"])
def test_network_weights_changed_in_place_are_seen(change):
    rng = np.random.default_rng(1)
    net = N.TwoLayerNet(4, 5, 3, weight_init_std=1.0, rng=1)
    x, t = rng.standard_normal((6, 4)), np.array([0, 1, 2, 0, 1, 2])
    net.gradient(x, t)  # caches the compiled weights
    W1 = net.params["W1"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # NumPy deprecates both, still allows
        if change == "strides":
            W1.strides = (8, 32)  # the same buffer read column-major: other values, other layout
        else:
            W1.dtype = np.float32  # (4, 10) float32 now: the network must not take it as (4, 5)
    if change == "dtype":
        with pytest.raises(ValueError):
            net.gradient(x, t)
        return
    fresh = N.MultiLayerNet.from_params({k: np.array(v) for k, v in net.params.items()})
    want = {k: np.copy(g) for k, g in fresh.gradient(x, t).items()}
    got = net.gradient(x, t)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-12)


def test_gradient_of_its_own_buffer_as_input():
    net = N.TwoLayerNet(5, 5, 5, weight_init_std=1.0, rng=2)
    rng = np.random.default_rng(2)
    t = rng.integers(0, 5, 5)
    x_again = net.gradient(rng.standard_normal((5, 5)), t)["W1"]  # overwritten by the next call
    fresh = N.MultiLayerNet.from_params({k: np.copy(v) for k, v in net.params.items()})
    want = {k: np.copy(g) for k, g in fresh.gradient(np.copy(x_again), t).items()}
    got = net.gradient(x_again, t)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-12)
