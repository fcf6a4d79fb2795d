"""The book's ``common/util.py`` helpers: curve smoothing, data shuffling, convolution sizes,
and the convolution matrices ``im2col``/``col2im``.

The first three are not hot loops; they follow the book's code so that a script gets the
book's numbers (``shuffle_dataset`` draws the book's permutation under ``np.random.seed``).
``im2col`` and ``col2im`` are compiled (fastnn/_kernels/_conv.pyx); fastnn's own layers do not
use them (they never build the whole matrix), they are here for the book's scripts; their
kernels are imported on first use (loading data through this module imports nothing compiled).
"""
import numpy as np

__all__ = ["smooth_curve", "shuffle_dataset", "conv_output_size", "im2col", "col2im"]


def smooth_curve(x):
    """The book's loss-curve smoothing: a normalised Kaiser window (length 11, beta 2) slid
    over ``x`` mirrored at both ends.  Returns ``len(x)`` values for ``len(x) >= 11``; a
    shorter curve (at least 6 values) gives fewer, as the book's mirroring does."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"smooth_curve: x must be 1-D, got shape {x.shape}")
    window_len = 11
    if x.shape[0] < window_len // 2 + 1:
        raise ValueError(f"smooth_curve: x needs at least {window_len // 2 + 1} values to "
                         f"mirror the window at its ends, got {x.shape[0]}")
    s = np.r_[x[window_len - 1:0:-1], x, x[-1:-window_len:-1]]
    w = np.kaiser(window_len, 2)
    y = np.convolve(w / w.sum(), s, mode="valid")
    return y[5:len(y) - 5]


def shuffle_dataset(x, t):
    """``(x[p], t[p])`` for ``p = np.random.permutation(len(x))``: the book's shuffle, drawn
    from NumPy's global generator so that ``np.random.seed`` fixes it."""
    x, t = np.asarray(x), np.asarray(t)
    if x.ndim == 0 or t.ndim == 0 or x.shape[0] != t.shape[0]:
        raise ValueError(f"shuffle_dataset: x and t need the same number of samples, got "
                         f"shapes {x.shape} and {t.shape}")
    permutation = np.random.permutation(x.shape[0])
    return x[permutation], t[permutation]


def conv_output_size(input_size, filter_size, stride=1, pad=0):
    """``(input_size + 2 pad - filter_size) / stride + 1``, the book's formula, true division
    included: a result that is not whole says that the filter does not tile the input."""
    if stride <= 0:
        raise ValueError(f"conv_output_size: stride must be positive, got {stride}")
    return (input_size + 2 * pad - filter_size) / stride + 1



def _window(filter_h, filter_w, stride, pad, where):
    from fastnn import _validation as v

    stride, pad = v.check_window(stride, pad, where)
    filter_h = v.check_count(filter_h, f"{where}: filter_h")
    filter_w = v.check_count(filter_w, f"{where}: filter_w")
    return filter_h, filter_w, stride, pad


def im2col(input_data, filter_h, filter_w, stride=1, pad=0):
    """The book's im2col: every ``filter_h`` x ``filter_w`` window of the zero-padded input as
    one row.

    Parameters
    ----------
    input_data : array_like, shape (N, C, H, W)
    filter_h, filter_w : int
        The window's height and width (at most H + 2 pad and W + 2 pad).
    stride : int, >= 1
    pad : int, >= 0

    Returns
    -------
    col : ndarray, shape (N * OH * OW, C * filter_h * filter_w)
        Row ``(n * OH + oh) * OW + ow`` holds the window at output position (oh, ow) of sample
        n, its columns in (c, ky, kx) order; OH = (H + 2 pad - filter_h) // stride + 1, OW
        likewise.  The book's values exactly; the dtype is the input's (float32 stays float32,
        where the book's np.zeros makes float64), integers and bool give float64.

    Twin: :func:`fastnn.reference.conv.im2col`.
    """
    from fastnn import _validation as v
    from fastnn._kernels import _conv

    filter_h, filter_w, stride, pad = _window(filter_h, filter_w, stride, pad, "im2col")
    x = v.as_images(input_data, "input_data")
    OH, OW = v.window_output_size(x.shape, (filter_h, filter_w), stride, pad, "input_data",
                                  "the filter")
    N, C = x.shape[:2]
    col = np.empty((N * OH * OW, C * filter_h * filter_w), dtype=x.dtype)
    if col.size:
        _conv.im2col(x, col, filter_h, filter_w, stride, pad)
    return col


def col2im(col, input_shape, filter_h, filter_w, stride=1, pad=0):
    """The book's col2im, the adjoint of :func:`im2col`: each entry of ``col`` added to the
    pixel of the (N, C, H, W) input it was taken from (entries from the padding dropped).

    Parameters
    ----------
    col : array_like, shape (N * OH * OW, C * filter_h * filter_w)
    input_shape : tuple of 4 ints (N, C, H, W)
    filter_h, filter_w, stride, pad : int
        As given to :func:`im2col`.

    Returns
    -------
    ndarray, shape ``input_shape``, of ``col``'s dtype; the sums in the book's order, so
    float64 results are the book's to the bit.

    Twin: :func:`fastnn.reference.conv.col2im`.
    """
    from fastnn import _validation as v
    from fastnn._kernels import _conv

    filter_h, filter_w, stride, pad = _window(filter_h, filter_w, stride, pad, "col2im")
    try:
        shape = tuple(int(v.check_count(d, "col2im: input_shape", 0)) for d in input_shape)
    except TypeError:
        raise TypeError(f"col2im: input_shape must be 4 integers (N, C, H, W), got "
                        f"{input_shape!r}") from None
    if len(shape) != 4:
        raise ValueError(f"col2im: input_shape must be 4 integers (N, C, H, W), got {shape}")
    col = v.as_float(col, "col")
    OH, OW = v.window_output_size(shape, (filter_h, filter_w), stride, pad, "input_shape",
                                  "the filter")
    N, C = shape[:2]
    expected = (N * OH * OW, C * filter_h * filter_w)
    if col.shape != expected:
        raise ValueError(f"col must have shape {expected} for input_shape {shape} and a "
                         f"{filter_h}x{filter_w} filter (stride {stride}, pad {pad}), got "
                         f"{col.shape}")
    x = np.empty(shape, dtype=col.dtype)
    if x.size == 0:
        return x
    if col.size == 0:
        x.fill(0)
        return x
    _conv.col2im(col, x, filter_h, filter_w, stride, pad)
    return x
