"""The book's ``common/util.py`` helpers: curve smoothing, data shuffling, convolution sizes.

These are not hot loops; they follow the book's code so that a script gets the book's numbers
(``shuffle_dataset`` draws the book's permutation under ``np.random.seed``).
"""
import numpy as np

__all__ = ["smooth_curve", "shuffle_dataset", "conv_output_size"]


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
