"""The convolution family: fastnn.util.im2col/col2im and fastnn.layers.Convolution/Pooling
against their twins (fastnn.reference.conv), the book's own code, and PyTorch where installed;
the kernel API of fastnn._kernels._conv that the networks call; errors on bad input."""
import numpy as np
import pytest
from conftest import assert_twin, book_module
from hypothesis import given
from hypothesis import strategies as st

from fastnn import layers as L
from fastnn import util as U
from fastnn._kernels import _conv
from fastnn.reference import conv as R

DTYPES = [np.float32, np.float64]


def relayout(a, layout):
    """The same values in another memory layout: C, Fortran, or a strided view."""
    if layout == "F":
        return np.asfortranarray(a)
    if layout == "strided":
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
        big[..., ::2] = a
        return big[..., ::2]
    return a


@st.composite
def geometries(draw, max_side=9):
    """(N, C, H, W, FH, FW, stride, pad) whose window fits the padded input."""
    n, c = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    h, w = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    pad = draw(st.integers(0, 2))
    fh = draw(st.integers(1, min(h + 2 * pad, 5)))
    fw = draw(st.integers(1, min(w + 2 * pad, 5)))
    return n, c, h, w, fh, fw, draw(st.integers(1, 3)), pad


def _conv_inputs(rng, g, fn, dtype):
    n, c, h, w, fh, fw, stride, pad = g
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    W = rng.standard_normal((fn, c, fh, fw)).astype(dtype)
    b = rng.standard_normal(fn).astype(dtype)
    oh, ow = (h + 2 * pad - fh) // stride + 1, (w + 2 * pad - fw) // stride + 1
    dout = rng.standard_normal((n, fn, oh, ow)).astype(dtype)
    return x, W, b, dout


def _run_conv(mod, x, W, b, dout, stride, pad):
    layer = mod.Convolution(W, b, stride, pad)
    out = layer.forward(x)
    dx = layer.backward(dout)
    return out, dx, layer.dW, layer.db


def _run_pool(mod, x, ph, pw, stride, pad, dout_of):
    layer = mod.Pooling(ph, pw, stride, pad)
    out = layer.forward(x)
    return out, layer.backward(dout_of(out.shape)), layer.arg_max


# --- against the twins ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("layout", ["C", "F", "strided"])
@given(g=geometries(), seed=st.integers(0, 2**32 - 1))
def test_im2col_col2im_match_twin(dtype, layout, g, seed):
    rng = np.random.default_rng(seed)
    n, c, h, w, fh, fw, stride, pad = g
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    col = U.im2col(relayout(x, layout), fh, fw, stride, pad)
    ref = R.im2col(x, fh, fw, stride, pad)
    assert col.dtype == dtype
    np.testing.assert_array_equal(col, ref)  # a copy of values: exact
    dcol = rng.standard_normal(ref.shape).astype(dtype)
    assert_twin(U.col2im(relayout(dcol, layout), x.shape, fh, fw, stride, pad),
                R.col2im(dcol, x.shape, fh, fw, stride, pad), dtype, "col2im")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("layout", ["C", "F", "strided"])
@given(g=geometries(), fn=st.integers(1, 5), seed=st.integers(0, 2**32 - 1))
def test_convolution_matches_twin(dtype, layout, g, fn, seed):
    x, W, b, dout = _conv_inputs(np.random.default_rng(seed), g, fn, dtype)
    stride, pad = g[6], g[7]
    fast = _run_conv(L, relayout(x, layout), relayout(W, layout), b, relayout(dout, layout),
                     stride, pad)
    assert_twin(fast, _run_conv(R, x, W, b, dout, stride, pad), dtype, "Convolution")
    assert all(a.dtype == dtype for a in fast)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("layout", ["C", "F", "strided"])
@given(g=geometries(), seed=st.integers(0, 2**32 - 1), ties=st.booleans())
def test_pooling_matches_twin(dtype, layout, g, seed, ties):
    rng = np.random.default_rng(seed)
    n, c, h, w, ph, pw, stride, pad = g
    x = rng.standard_normal((n, c, h, w))
    if ties:  # few distinct values, zeros among them: the first maximum must win, as np.argmax
        x = np.round(x)
    x = x.astype(dtype)
    dout = rng.standard_normal((n, c, (h + 2 * pad - ph) // stride + 1,
                                (w + 2 * pad - pw) // stride + 1)).astype(dtype)
    fast = _run_pool(L, relayout(x, layout), ph, pw, stride, pad, lambda s: relayout(dout, layout))
    ref = _run_pool(R, x, ph, pw, stride, pad, lambda s: dout)
    assert_twin(fast[:2], ref[:2], dtype, "Pooling")
    np.testing.assert_array_equal(fast[2], ref[2])


@pytest.mark.parametrize("block", [64, 1000, 32768, 10**7])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_every_blocking_matches_twin(block, dtype):
    """Blocks of a few output rows, of whole samples, of several samples side by side."""
    rng = np.random.default_rng(block)
    previous = _conv._set_block(block)
    try:
        for g, fn in [((5, 3, 11, 9, 3, 2, 1, 1), 4), ((3, 8, 16, 16, 3, 3, 2, 2), 6),
                      ((7, 1, 28, 28, 5, 5, 1, 0), 30)]:
            x, W, b, dout = _conv_inputs(rng, g, fn, dtype)
            assert_twin(_run_conv(L, x, W, b, dout, g[6], g[7]),
                        _run_conv(R, x, W, b, dout, g[6], g[7]), dtype, f"block {block} {g}")
    finally:
        _conv._set_block(previous)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [(3, 4, 24, 24), (2, 2, 17, 16), (2, 2, 16, 17), (2, 3, 7, 9),
                                   (1, 2, 1, 5)])
def test_book_pooling_paths(dtype, shape):
    """The book's 2x2/2 pooling (vectorised path, odd sizes leave a row or column uncovered),
    with NaN, inf and ties."""
    rng = np.random.default_rng(1)
    x = np.round(rng.standard_normal(shape) * 2).astype(dtype)
    x.flat[::7] = np.nan
    x.flat[3::11] = np.inf
    x.flat[5::13] = -np.inf
    dout = rng.standard_normal((shape[0], shape[1], shape[2] // 2, shape[3] // 2)).astype(dtype)
    if dout.size == 0:
        with pytest.raises(ValueError):
            L.Pooling(2, 2, 2).forward(x)
        return
    fast = _run_pool(L, x, 2, 2, 2, 0, lambda s: dout)
    ref = _run_pool(R, x, 2, 2, 2, 0, lambda s: dout)
    np.testing.assert_array_equal(fast[0], ref[0])
    np.testing.assert_array_equal(fast[1], ref[1])
    np.testing.assert_array_equal(fast[2], ref[2])


def test_inputs_not_modified():
    rng = np.random.default_rng(3)
    x, W, b, dout = _conv_inputs(rng, (2, 3, 6, 6, 3, 3, 1, 1), 4, np.float64)
    before = [a.copy() for a in (x, W, b, dout)]
    _run_conv(L, x, W, b, dout, 1, 1)
    _run_pool(L, x, 2, 2, 2, 0, lambda s: dout[:, :3, :3, :3].copy())
    U.col2im(U.im2col(x, 3, 3, 1, 1), x.shape, 3, 3, 1, 1)
    for a, c in zip((x, W, b, dout), before):
        np.testing.assert_array_equal(a, c)


# --- against the book's own code -------------------------------------------------------------------

@given(g=geometries(), seed=st.integers(0, 2**32 - 1))
def test_im2col_col2im_equal_the_books(g, seed):
    book = book_module("common.util")
    rng = np.random.default_rng(seed)
    n, c, h, w, fh, fw, stride, pad = g
    x = rng.standard_normal((n, c, h, w))
    col = book.im2col(x, fh, fw, stride, pad)
    np.testing.assert_array_equal(U.im2col(x, fh, fw, stride, pad), col)
    dcol = rng.standard_normal(col.shape)
    # the book's order of additions: float64 to the bit
    np.testing.assert_array_equal(U.col2im(dcol, x.shape, fh, fw, stride, pad),
                                  book.col2im(dcol, x.shape, fh, fw, stride, pad))


@given(g=geometries(), fn=st.integers(1, 5), seed=st.integers(0, 2**32 - 1))
def test_convolution_matches_the_books(g, fn, seed):
    book = book_module("common.layers")
    x, W, b, dout = _conv_inputs(np.random.default_rng(seed), g, fn, np.float64)
    stride, pad = g[6], g[7]
    fast_layer = L.Convolution(W, b, stride, pad)
    book_layer = book.Convolution(W, b, stride, pad)
    out = fast_layer.forward(x)
    assert_twin(out, book_layer.forward(x), np.float64, "forward")
    assert_twin(fast_layer.backward(dout), book_layer.backward(dout), np.float64, "dx")
    assert_twin((fast_layer.dW, fast_layer.db), (book_layer.dW, book_layer.db), np.float64)
    # the book's attributes, computed on request
    np.testing.assert_array_equal(fast_layer.col, book_layer.col)
    np.testing.assert_array_equal(fast_layer.col_W, book_layer.col_W)
    assert fast_layer.W is W and fast_layer.b is b


@given(g=geometries(), seed=st.integers(0, 2**32 - 1), ties=st.booleans())
def test_pooling_matches_the_books(g, seed, ties):
    """Without padding (the book's Pooling sizes its output as if pad were 0, so its reshape
    fails for pad > 0)."""
    book = book_module("common.layers")
    rng = np.random.default_rng(seed)
    n, c, h, w, ph, pw, stride, _ = g
    ph, pw = min(ph, h), min(pw, w)
    x = rng.standard_normal((n, c, h, w))
    x = np.round(x) if ties else x
    fast_layer, book_layer = L.Pooling(ph, pw, stride), book.Pooling(ph, pw, stride)
    out = fast_layer.forward(x)
    np.testing.assert_array_equal(out, book_layer.forward(x))
    np.testing.assert_array_equal(fast_layer.arg_max, book_layer.arg_max)
    dout = rng.standard_normal(out.shape)
    assert_twin(fast_layer.backward(dout), book_layer.backward(dout), np.float64, "dx")


def test_defaults_are_the_books():
    book = book_module("common.layers")
    import inspect
    for name in ("Convolution", "Pooling"):
        fast = inspect.signature(getattr(L, name)).parameters
        ours = {k: p.default for k, p in fast.items()}
        theirs = {k: p.default
                  for k, p in inspect.signature(getattr(book, name)).parameters.items()}
        assert ours == theirs, name


# --- against PyTorch ---------------------------------------------------------------------------------

@pytest.mark.parametrize("c,fn,k,stride,pad", [
    (1, 30, (5, 5), 1, 0), (3, 4, (3, 3), 1, 1), (16, 8, (3, 3), 1, 2), (2, 5, (2, 3), 2, 1),
    (4, 3, (5, 2), 3, 2), (6, 2, (1, 1), 2, 0),
])
def test_convolution_matches_torch(c, fn, k, stride, pad):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(c * 7 + fn)
    x = rng.standard_normal((3, c, 13, 11))
    W = rng.standard_normal((fn, c) + k)
    b = rng.standard_normal(fn)
    layer = L.Convolution(W, b, stride, pad)
    out = layer.forward(x)
    xt = torch.tensor(x, requires_grad=True)
    Wt, bt = torch.tensor(W, requires_grad=True), torch.tensor(b, requires_grad=True)
    ot = torch.nn.functional.conv2d(xt, Wt, bt, stride, pad)
    assert_twin(out, ot.detach().numpy(), np.float64, "forward")
    dout = rng.standard_normal(out.shape)
    ot.backward(torch.tensor(dout))
    dx = layer.backward(dout)
    assert_twin((dx, layer.dW, layer.db),
                (xt.grad.numpy(), Wt.grad.numpy(), bt.grad.numpy()), np.float64, "backward")


@pytest.mark.parametrize("c,k,stride,pad", [
    (1, (2, 2), 2, 0), (3, (3, 3), 1, 1), (16, (2, 2), 1, 0), (2, (3, 2), 2, 1), (4, (4, 4), 3, 2),
])
def test_pooling_matches_torch(c, k, stride, pad):
    """PyTorch pads with -inf, the book with zeros: the same wherever windows hold a value
    >= 0, so the inputs are positive (and distinct: no ties, whose order PyTorch leaves open)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(c + 10 * pad)
    x = rng.permutation(3 * c * 12 * 10).reshape(3, c, 12, 10) + 1.0
    layer = L.Pooling(*k, stride, pad)
    out = layer.forward(x)
    xt = torch.tensor(x, requires_grad=True)
    ot = torch.nn.functional.max_pool2d(xt, k, stride, pad)
    np.testing.assert_array_equal(out, ot.detach().numpy())
    dout = rng.standard_normal(out.shape)
    ot.backward(torch.tensor(dout))
    assert_twin(layer.backward(dout), xt.grad.numpy(), np.float64, "backward")


# --- the kernel API the networks call --------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("g,fn", [((4, 1, 28, 28, 5, 5, 1, 0), 30), ((3, 16, 14, 14, 3, 3, 1, 2), 8),
                                  ((2, 3, 9, 9, 3, 3, 2, 1), 5)])
def test_fused_relu_and_skipped_dx(dtype, g, fn):
    rng = np.random.default_rng(0)
    x, W, b, dout = _conv_inputs(rng, g, fn, dtype)
    stride, pad = g[6], g[7]
    ref = R.Convolution(W, b, stride, pad)
    pre = ref.forward(x)
    relu = np.ascontiguousarray(np.where(pre <= 0, 0, pre), dtype=dtype)
    out = np.empty(relu.shape, dtype)
    work = np.empty(_conv.conv_work_size(g[1], g[2], g[3], fn, g[4], g[5], stride, pad), dtype)
    _conv.conv_forward(x, W, b, out, stride, pad, True, work)
    assert_twin(out, relu, dtype, "conv + ReLU")
    masked = np.ascontiguousarray(np.where(pre <= 0, 0, dout), dtype=dtype)
    dx_ref = ref.backward(masked)
    dW, db, dx = np.empty_like(W), np.empty_like(b), np.full_like(x, np.nan)
    dout_before = dout.copy()
    _conv.conv_backward(dout, x, W, dW, db, dx, stride, pad, out, work)
    np.testing.assert_array_equal(dout, dout_before)
    assert_twin((dx, dW, db), (dx_ref, ref.dW, ref.db), dtype, "backward through ReLU")
    dW2, db2 = np.empty_like(W), np.empty_like(b)
    _conv.conv_backward(dout, x, W, dW2, db2, None, stride, pad, out)
    np.testing.assert_array_equal(dW2, dW)
    np.testing.assert_array_equal(db2, db)


def test_kernel_api_checks_its_arrays():
    x = np.zeros((2, 3, 8, 8))
    W, b = np.zeros((4, 3, 3, 3)), np.zeros(4)
    out = np.empty((2, 4, 6, 6))
    with pytest.raises(ValueError, match="out"):
        _conv.conv_forward(x, W, b, np.empty((2, 4, 6, 5)), 1, 0)
    with pytest.raises(TypeError, match="W"):
        _conv.conv_forward(x, W.astype(np.float32), b, out, 1, 0)
    with pytest.raises(ValueError, match="channels"):
        _conv.conv_forward(x, np.zeros((4, 2, 3, 3)), b, out, 1, 0)
    with pytest.raises(ValueError, match="work"):
        _conv.conv_forward(x, W, b, out, 1, 0, False, np.empty(3))
    with pytest.raises(ValueError, match="C-contiguous"):
        _conv.conv_forward(x[:, :, ::-1], W, b, out, 1, 0)
    with pytest.raises(ValueError, match="stride"):
        _conv.conv_forward(x, W, b, out, 0, 0)
    argmax = np.empty((2, 3, 4, 4), np.int64)
    with pytest.raises(TypeError, match="argmax_out"):
        _conv.maxpool_forward(x, np.empty((2, 3, 4, 4)), argmax, 2, 2, 2, 0)
    with pytest.raises(ValueError, match="dx_out"):
        _conv.maxpool_backward(np.empty((2, 3, 4, 4)), argmax.astype(np.int32),
                               np.empty((2, 3, 8)), 2, 2, 2, 0)


def test_tampered_argmax_stays_in_bounds():
    """Any int32 values in argmax write only inside dx (positions outside are dropped)."""
    rng = np.random.default_rng(5)
    argmax = rng.integers(-2**31, 2**31 - 1, (2, 3, 5, 5)).astype(np.int32)
    argmax[0, 0, 0, :] = [0, 1, 2, 3, 50]
    dx = np.empty((2, 3, 10, 10))
    for window in [(2, 2, 2, 0), (3, 3, 2, 1)]:
        _conv.maxpool_backward(np.ones((2, 3, 5, 5)), argmax, dx, *window)
        assert np.isfinite(dx).all()


# --- bad input -----------------------------------------------------------------------------------------

def test_convolution_errors_name_the_argument():
    x = np.zeros((2, 3, 8, 8))
    W, b = np.zeros((4, 3, 3, 3)), np.zeros(4)
    with pytest.raises(ValueError, match=r"x \(2, 3, 8, 8\) has 3 channels but W \(4, 2, 3, 3\)"):
        L.Convolution(np.zeros((4, 2, 3, 3)), b).forward(x)
    with pytest.raises(ValueError, match=r"filter W 9x9 is larger than x \(2, 3, 8, 8\) padded"):
        L.Convolution(np.zeros((4, 3, 9, 9)), b).forward(x)
    L.Convolution(np.zeros((4, 3, 9, 9)), b, pad=1).forward(x)  # fits once padded
    for stride in (0, -1):
        with pytest.raises(ValueError, match="stride must be >= 1"):
            L.Convolution(W, b, stride=stride)
        layer = L.Convolution(W, b)
        layer.stride = stride
        with pytest.raises(ValueError, match="stride"):
            layer.forward(x)
    with pytest.raises(TypeError, match="stride must be an integer"):
        L.Convolution(W, b, stride=1.5)
    with pytest.raises(ValueError, match="pad must be >= 0"):
        L.Convolution(W, b, pad=-1)
    with pytest.raises(ValueError, match=r"x must be a 4-D array \(N, C, H, W\), got shape \(3, 8, 8\)"):
        L.Convolution(W, b).forward(x[0])
    with pytest.raises(ValueError, match=r"W must be a 4-D array \(FN, C, FH, FW\), got shape \(4, 27\)"):
        L.Convolution(W.reshape(4, 27), b).forward(x)
    with pytest.raises(TypeError, match="W must be a NumPy array"):
        L.Convolution(W.tolist(), b).forward(x)
    with pytest.raises(ValueError, match=r"b must have shape \(4,\)"):
        L.Convolution(W, np.zeros(3)).forward(x)
    layer = L.Convolution(W, b)
    with pytest.raises(ValueError, match="before forward"):
        layer.backward(np.zeros((2, 4, 6, 6)))
    layer.forward(x)
    with pytest.raises(ValueError, match=r"dout must have shape \(2, 4, 6, 6\)"):
        layer.backward(np.zeros((2, 4, 6, 5)))
    layer.W = np.zeros((4, 5, 3, 3))  # replaced since forward
    with pytest.raises(ValueError, match=r"Convolution.W was replaced after forward\(\) by one "
                                         r"of shape \(4, 5, 3, 3\)"):
        layer.backward(np.zeros((2, 4, 6, 6)))
    with pytest.raises(TypeError, match="complex"):
        L.Convolution(W, b).forward(x.astype(complex))


def test_pooling_and_matrix_errors_name_the_argument():
    x = np.zeros((2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"pooling window 9x2 is larger than x \(2, 3, 8, 8\)"):
        L.Pooling(9, 2).forward(x)
    with pytest.raises(ValueError, match="stride must be >= 1"):
        L.Pooling(2, 2, 0)
    with pytest.raises(ValueError, match="pool_h must be >= 1"):
        L.Pooling(0, 2)
    with pytest.raises(ValueError, match="x must be a 4-D array"):
        L.Pooling(2, 2).forward(np.zeros((8, 8)))
    layer = L.Pooling(2, 2)
    with pytest.raises(ValueError, match="before forward"):
        layer.backward(np.zeros((2, 3, 4, 4)))
    layer.forward(x)
    with pytest.raises(ValueError, match=r"dout must have shape \(2, 3, 4, 4\)"):
        layer.backward(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="input_data must be a 4-D array"):
        U.im2col(np.zeros((3, 8, 8)), 2, 2)
    with pytest.raises(ValueError, match="larger than input_data"):
        U.im2col(x, 9, 2)
    with pytest.raises(ValueError, match="im2col: stride must be >= 1"):
        U.im2col(x, 2, 2, stride=0)
    with pytest.raises(ValueError, match=r"col must have shape \(98, 12\)"):
        U.col2im(np.zeros((98, 11)), x.shape, 2, 2)
    with pytest.raises(ValueError, match="input_shape must be 4 integers"):
        U.col2im(np.zeros((98, 12)), (2, 3, 8), 2, 2)
    with pytest.raises(TypeError, match="input_shape must be 4 integers"):
        U.col2im(np.zeros((98, 12)), (2, 3, 8, 8.5), 2, 2)


def test_empty_batches():
    W, b = np.ones((4, 3, 3, 3)), np.ones(4)
    layer = L.Convolution(W, b)
    out = layer.forward(np.zeros((0, 3, 5, 5)))
    assert out.shape == (0, 4, 3, 3)
    assert layer.backward(out).shape == (0, 3, 5, 5)
    np.testing.assert_array_equal(layer.dW, np.zeros_like(W))
    pool = L.Pooling(2, 2)
    assert pool.backward(pool.forward(np.zeros((0, 3, 4, 4)))).shape == (0, 3, 4, 4)
    assert U.im2col(np.zeros((0, 3, 4, 4)), 2, 2).shape == (0, 12)
    assert U.col2im(np.zeros((0, 12)), (0, 3, 4, 4), 2, 2).shape == (0, 3, 4, 4)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("g,fn,window", [
    ((5, 1, 28, 28, 5, 5, 1, 0), 30, (2, 2, 2, 0)),    # SimpleConvNet's
    ((3, 16, 14, 14, 3, 3, 1, 2), 8, (2, 2, 2, 0)),   # DeepConvNet's conv4 + pool
    ((4, 3, 9, 8, 3, 2, 2, 1), 5, (3, 2, 1, 1)),      # overlapping windows, padded
    ((2, 40, 12, 12, 3, 3, 1, 1), 6, (2, 2, 2, 0)),   # samples larger than a block
])
def test_fused_conv_relu_pool(dtype, g, fn, window):
    """conv_relu_pool_forward/backward equal Convolution -> Relu -> Pooling of the twins."""
    rng = np.random.default_rng(fn)
    x, W, b, _ = _conv_inputs(rng, g, fn, dtype)
    x[0, 0, :2] = np.nan  # NaN through ReLU (kept, as the book's) and the pooling
    stride, pad = g[6], g[7]
    conv, pool = R.Convolution(W, b, stride, pad), R.Pooling(*window)
    relu = __import__("fastnn.reference.layers", fromlist=["Relu"]).Relu()
    ref_out = pool.forward(relu.forward(conv.forward(x)))
    out = np.empty(ref_out.shape, dtype)
    argmax = np.empty(ref_out.shape, np.int32)
    work = np.empty(_conv.conv_work_size(g[1], g[2], g[3], fn, g[4], g[5], stride, pad), dtype)
    _conv.conv_relu_pool_forward(x, W, b, out, argmax, stride, pad, *window, work)
    assert_twin(np.nan_to_num(out, nan=7.0), np.nan_to_num(ref_out, nan=7.0), dtype, "forward")
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref_out))
    dout = rng.standard_normal(out.shape).astype(dtype)
    dx_ref = conv.backward(relu.backward(pool.backward(dout)))
    dW, db, dx = np.empty_like(W), np.empty_like(b), np.empty_like(x)
    _conv.conv_relu_pool_backward(dout, argmax, out, x, W, dW, db, dx, stride, pad, *window, work)
    finite = [np.nan_to_num(a, nan=7.0) for a in (dx, dW, db)]
    ref = [np.nan_to_num(a, nan=7.0) for a in (dx_ref, conv.dW, conv.db)]
    assert_twin(finite, ref, dtype, "backward")
    dW2, db2 = np.empty_like(W), np.empty_like(b)
    _conv.conv_relu_pool_backward(dout, argmax, out, x, W, dW2, db2, None, stride, pad, *window)
    np.testing.assert_array_equal(dW2, dW)


@pytest.mark.parametrize("b", [0, 0.25, np.float32(-1.5), np.array([0.5]), np.array(2.0)],
                         ids=["int 0", "float", "float32", "(1,)", "0-d"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_one_bias_for_every_filter_as_the_book_broadcasts_it(b, dtype):
    """ch07/apply_filter.py passes ``b=0``: the book's Convolution adds it by broadcasting,
    and its ``db`` has one entry per filter all the same (issue 12)."""
    book = book_module("common.layers")
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 6, 5)).astype(dtype)
    W = rng.standard_normal((4, 3, 3, 2)).astype(dtype)
    fast, ref = L.Convolution(W, b, 1, 1), book.Convolution(W.astype(np.float64), b, 1, 1)
    out = fast.forward(x)
    assert out.dtype == (x + b).dtype  # NumPy's promotion: a Python number does not widen x
    assert_twin(out, ref.forward(x.astype(np.float64)), dtype)
    dout = rng.standard_normal(out.shape).astype(dtype)
    dx = fast.backward(dout)
    assert_twin(dx, ref.backward(dout.astype(np.float64)), dtype)
    assert_twin(fast.dW, ref.dW, dtype)
    assert fast.db.shape == ref.db.shape == (4,)
    assert_twin(fast.db, ref.db, dtype)
    dense, book_dense = L.Affine(W.reshape(4, -1).T.copy(), b), book.Affine(
        W.reshape(4, -1).T.astype(np.float64), b)
    flat = x.reshape(2, -1)[:, :18]
    assert_twin(dense.forward(flat), book_dense.forward(flat.astype(np.float64)), dtype)


def test_a_bias_of_another_length_is_still_refused():
    with pytest.raises(ValueError, match=r"b must have shape \(4,\) to match W \(4, 3, 3, 3\), "
                                         r"got \(2,\) \(or be one value for every output\)"):
        L.Convolution(np.ones((4, 3, 3, 3)), np.ones(2)).forward(np.ones((1, 3, 5, 5)))
