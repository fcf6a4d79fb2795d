"""The one place where arguments are checked before they reach compiled code.

Kernels in ``fastnn._kernels`` trust what they are given: C-contiguous arrays of one floating
dtype with agreeing shapes and labels in range.  Every public function and layer goes through
these helpers first, so a bad argument becomes a ``TypeError``/``ValueError`` that names the
argument and the shapes, never an out-of-bounds read or a silently wrong number.

Dtype policy (NumPy's promotion, restricted to what the kernels compute in):
float32 and float64 stay as they are and promote together as NumPy promotes them; bool and
integers become float64 (as ``x * 1.0`` would); float16 becomes float32.  Complex, object,
string and extended-precision inputs are refused.
"""
import math
import numbers
import operator

import numpy as np

from fastnn._kernels._loss import first_bad_label

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
GEMM_MAX = 2**31 - 1  # BLAS dimensions are C ints


def _kind_error(name, dtype):
    return TypeError(
        f"{name} has dtype {dtype}; fastnn computes in float32 or float64 and accepts "
        "real floating, integer or bool arrays"
    )


def as_plain(a, name):
    """``a`` with an ndarray subclass viewed as the plain ndarray it holds (the same memory).

    ``np.matrix``, a subclass whose ``.shape`` property says otherwise, any subclass: every
    shape read after this is the buffer's own.  A masked array with masked entries is a
    ``TypeError`` (fastnn has no masks: it would compute with the hidden values); one with
    nothing masked is its data.
    """
    if isinstance(a, np.ndarray) and type(a) is not np.ndarray:
        if isinstance(a, np.ma.MaskedArray) and np.ma.is_masked(a):
            raise TypeError(f"{name} is a masked array with {np.ma.count_masked(a)} masked "
                            f"entries; fastnn computes on every value, so pass "
                            f"{name}.filled(value) or the values you mean")
        return np.asarray(a)
    return a


def compute_dtype(*named_arrays):
    """The float dtype in which arrays given as ``(name, array)`` pairs are combined."""
    first = named_arrays[0][1]
    if type(first) is np.ndarray and first.dtype in FLOAT_DTYPES:
        # the common case: arrays of one float dtype
        for _, a in named_arrays:
            if type(a) is not np.ndarray or a.dtype != first.dtype:
                break
        else:
            return first.dtype
    dtypes = []
    for name, a in named_arrays:
        a = as_plain(a, name)
        dt = np.asarray(a).dtype if not isinstance(a, np.ndarray) else a.dtype
        if dt.kind in "biu":
            dt = np.dtype(np.float64)
        elif dt.kind != "f" or dt.itemsize > 8:
            raise _kind_error(name, dt)
        dtypes.append(dt)
    dt = np.result_type(*dtypes)
    return np.dtype(np.float32) if dt == np.float16 else dt


PRECISIONS = (None, "bf16")


def check_precision(precision, dtype):
    """A network's ``precision``: None (its dtype's own) or 'bf16' (float32 weights, GEMM
    operands rounded to bfloat16), which only a float32 network can have."""
    if precision is None:
        return None
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f"precision must be None (the dtype's own) or 'bf16', got {precision!r}")
    if np.dtype(dtype) != np.float32:
        raise TypeError(f"precision='bf16' needs dtype=float32 (its weights, gradients and "
                        f"activations are float32; only the GEMM operands are rounded to "
                        f"bfloat16), got dtype {np.dtype(dtype)}")
    return precision


def refuse_foreign_weights(layers, expected):
    """The error of a precision='bf16' network whose ``layers`` (Affine or Convolution) hold
    weights its compiled pass cannot take (``expected`` says what it takes): such a network
    has no layered path to fall back on, the book's layers having no bf16."""
    shapes = [(getattr(layer.W, "dtype", type(layer.W).__name__), np.shape(layer.W))
              for layer in layers]
    raise TypeError(f"precision='bf16' computes with the layers' own C-contiguous float32 "
                    f"weights and biases of {expected}; the layers hold weights of "
                    f"(dtype, shape) {shapes}")


def refuse_bf16_numerical_gradient(precision):
    """A precision='bf16' network has no numerical gradient worth computing."""
    if precision is not None:
        raise ValueError(f"numerical_gradient: a precision={precision!r} network's "
                         "loss moves in steps of its operands' rounding (2**-8 relative), "
                         "far above the central difference's h = 1e-4: its numerical gradient "
                         "would be noise; check the gradient on the same network with "
                         "precision=None")


def common_contiguous_dtype(*arrays):
    """The dtype of ``arrays`` if all are C-contiguous ndarrays of one float32/float64 dtype,
    else None: the common case, in which nothing needs converting."""
    dtype = arrays[0].dtype if type(arrays[0]) is np.ndarray else None
    if dtype not in FLOAT_DTYPES:
        return None
    for a in arrays:
        if (type(a) is not np.ndarray or a.dtype != dtype or not a.flags.c_contiguous
                or not a.flags.aligned):
            return None
    return dtype


def as_float(x, name, dtype=None):
    """``x`` as a C-contiguous array of ``dtype`` (default: its own compute dtype).

    Copies only when ``x`` is not already such an array.
    """
    x = np.asarray(as_plain(x, name))
    if dtype is None:
        dtype = compute_dtype((name, x))
    elif x.dtype.kind not in "biuf" or (x.dtype.kind == "f" and x.dtype.itemsize > 8):
        raise _kind_error(name, x.dtype)
    x = np.asarray(x, dtype=dtype, order="C")  # keeps 0-d, unlike ascontiguousarray
    # an unaligned buffer (a slice of raw bytes, an array Dask received) is C-contiguous too
    return x if x.flags.aligned else x.copy()


def as_mask(mask, name):
    """A cached boolean mask (a layer's public attribute, which a caller may have replaced)
    as a C-contiguous bool array.  Any other dtype is a TypeError: the book indexes with the
    mask (``dout[mask] = 0``), and an integer array there selects rows, not elements."""
    mask = np.asarray(as_plain(mask, name))
    if mask.dtype != np.bool_:
        raise TypeError(f"{name} must be a bool array (True where the gradient is stopped), "
                        f"got dtype {mask.dtype} of shape {mask.shape}")
    return np.asarray(mask, order="C")  # keeps 0-d, unlike ascontiguousarray


def check_same_shape(a, name, cached, cached_name):
    """Raise unless ``a`` (an argument) has the shape of ``cached`` (a layer's attribute)."""
    if np.shape(a) != np.shape(cached):
        raise ValueError(f"{name} must have shape {np.shape(cached)}, got {np.shape(a)} (the "
                         f"shape of {cached_name})")


def as_shape(shape, size, name):
    """A cached shape (a layer's ``input_shape``/``original_x_shape``) as a tuple of ints
    holding ``size`` elements, as ``reshape`` takes it (one -1 allowed)."""
    try:
        if not isinstance(shape, (tuple, list)):
            raise TypeError("not a sequence")
        dims = tuple(operator.index(d) for d in shape)
        known = math.prod(d for d in dims if d != -1)
        free = dims.count(-1)
        if min(dims, default=0) < -1 or free > 1 or (
                known != size if not free else known == 0 or size % known):
            raise ValueError("no such shape")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a shape of {size} elements (the gradient's), got "
                         f"{shape!r}") from exc
    return dims


def as_batch(x, name, dtype):
    """``x`` as a C-contiguous 2-D ``(batch, features)`` array, and whether it was one sample.

    A 1-D ``x`` is a batch of one; more than two dimensions are flattened after the first,
    as the book's Affine does with ``x.reshape(x.shape[0], -1)``.
    """
    x = as_float(x, name, dtype)
    x2, single = batch_view(x, name)
    if max(x2.shape) > GEMM_MAX:
        raise ValueError(f"{name} has shape {x.shape}: BLAS takes at most {GEMM_MAX} rows and "
                         "features (32-bit dimensions)")
    return x2, single


def check_shape(a, expected, name, of=""):
    """Raise unless ``a.shape == expected``; ``of`` says where ``expected`` comes from (the
    cached attribute it must match, say)."""
    if a.shape != tuple(expected):
        raise ValueError(f"{name} must have shape {tuple(expected)}{of}, got {a.shape}")


def check_finite_scalar(value, name, positive=False):
    """A real, finite Python float from ``value`` (hyper-parameters such as lr or h)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def check_ratio(value, name):
    """``value`` as a float in [0, 1) (the share of units a Dropout layer drops)."""
    value = check_finite_scalar(value, name)
    if not 0 <= value < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return value


def check_count(value, name, minimum=1):
    """``value`` as a Python int >= ``minimum`` (sizes, counts): TypeError for a non-integer
    (bool included), ValueError below the minimum."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def check_in_place(p, name):
    """Raise unless ``p`` (a parameter) can be updated in place by a kernel: a writable,
    C-contiguous float32/float64 ndarray."""
    if not isinstance(p, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, updated in place; got {type(p).__name__}")
    if p.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} has dtype {p.dtype}; parameters are updated in place and must be native "
            "float32 or float64 arrays (convert them once, before training)"
        )
    flags = p.flags
    if not flags.c_contiguous:
        raise ValueError(
            f"{name} is not C-contiguous: updating it would update a copy that the layer "
            "holding it never sees (give the layer np.ascontiguousarray(...) once)"
        )
    if not flags.writeable:
        raise ValueError(f"{name} is read-only and cannot be updated in place")


def as_labels(t, n, k, name="t"):
    """Integer class labels for a batch of ``n`` rows and ``k`` classes, as C int64 ``(n,)``.

    Accepts any integer dtype, shapes ``(n,)`` and ``(n, 1)``, and a scalar when ``n == 1``.
    """
    t = np.asarray(as_plain(t, name))
    if t.dtype.kind not in "iu":
        raise TypeError(
            f"{name} holds class labels and must be an integer array, got dtype {t.dtype} "
            f"(one-hot targets must have the shape of the scores, ({n}, {k}))"
        )
    if t.ndim == 0 and n == 1:
        t = t.reshape(1)
    elif t.ndim == 2 and t.shape[1] == 1:
        t = t.reshape(-1)
    if t.shape != (n,):
        raise ValueError(
            f"{name} must hold one label per row: expected shape ({n},) (or ({n}, 1)) or "
            f"one-hot targets of shape ({n}, {k}), got {t.shape}"
        )
    labels = np.ascontiguousarray(t, dtype=np.int64)
    bad = first_bad_label(labels, k)
    if bad >= 0:
        raise ValueError(f"{name} holds label {t[bad]}, outside the {k} classes [0, {k - 1}]")
    return labels


def accuracy_labels(t, n, k, name="t"):
    """The labels an accuracy compares with: integer labels as ``as_labels`` takes them, or
    the argmax of one-hot rows of shape ``(n, k)``."""
    t = np.asarray(as_plain(t, name))
    if t.ndim != 1 and t.shape == (n, k):
        t = np.argmax(t, axis=-1)
    return as_labels(t, n, k, name)


def as_targets(t, scores_shape, name="t"):
    """Resolve the targets of a classification loss over scores of ``(n, k)``.

    Returns ``("targets", array)`` when ``t`` has the scores' shape (one-hot or soft
    targets, any real dtype), else ``("labels", int64 array)``.
    """
    n, k = scores_shape
    t = np.asarray(as_plain(t, name))
    if t.shape == (n, k):
        compute_dtype((name, t))  # refuses complex/object targets
        return "targets", t
    return "labels", as_labels(t, n, k, name)


def resolve_targets(t, scores_shape, dtype, name="t"):
    """The one resolver of classification targets, for every caller: ``(True, int64 labels
    (n,))`` or ``(False, targets)`` of the scores' shape ``(n, k)``, C-contiguous in
    ``dtype``.  Labels may be of any integer dtype, shaped ``(n,)`` or ``(n, 1)`` (a scalar
    for one row); anything else is a TypeError (wrong dtype) or a ValueError (wrong shape,
    label out of range) naming ``name`` and the shapes."""
    kind, t = as_targets(t, scores_shape, name)
    if kind == "targets":
        return False, as_float(t, name, dtype)
    return True, t


def dense_sizes(W, b, transposed=False):
    """``(inputs, outputs)`` of a dense layer's weight ``W`` ((in, out) as the book's Affine,
    (out, in) when ``transposed``, as Linear) and bias ``b`` of shape ``(out,)``."""
    if not isinstance(W, np.ndarray):
        raise TypeError(f"W must be a NumPy array (the layer holds it by reference, as the "
                        f"book's does), got {type(W).__name__}")
    W = as_plain(W, "W")
    if W.ndim != 2:
        raise ValueError(f"W must be a 2-D array, got shape {W.shape}")
    n_in, n_out = W.shape[::-1] if transposed else W.shape
    if n_in == 0 or n_out == 0:
        # the GEMM kernels are never given an empty weight (as nets and numgrad refuse it)
        raise ValueError(f"W must have at least one input and one output, got shape {W.shape}")
    check_bias(b, n_out, W.shape)
    return n_in, n_out


def check_bias(b, n_out, w_shape):
    """Raise unless the bias ``b`` has shape ``(n_out,)``, or is a scalar or of shape ``(1,)``
    (the book adds it by broadcasting: ch07/apply_filter.py passes ``b=0``)."""
    shape = np.shape(as_plain(b, "b"))
    if shape not in ((n_out,), (), (1,)):
        raise ValueError(f"b must have shape ({n_out},) to match W {tuple(w_shape)}, got "
                         f"{shape} (or be one value for every output)")


def bias_dtype(b):
    """The bias as ``compute_dtype`` takes it: nothing for a Python number, which takes the
    arrays' dtype as NumPy's ``x32 @ W32 + 0`` does (the book's ch07/apply_filter.py passes
    ``b=0`` with float32 images)."""
    return () if type(b) in (int, float) else (("b", b),)


def as_bias(b, n_out, dtype):
    """The bias as a C-contiguous ``(n_out,)`` array of ``dtype`` (one value broadcast)."""
    b = as_float(b, "b", dtype)
    return b if b.shape == (n_out,) else np.full(n_out, b.reshape(()), dtype=dtype)


def batch_view(x, name="x"):
    """``x`` (not converted) viewed as a 2-D ``(batch, features)`` batch, and whether it was
    one sample: a 1-D ``x`` is a batch of one, more dimensions are flattened after the first
    (the book's ``x.reshape(x.shape[0], -1)``)."""
    x = np.asarray(as_plain(x, name))
    if x.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension, got a scalar")
    # the features counted, not inferred: reshape(0, -1) of an empty batch is ambiguous
    rows, features = (1, x.size) if x.ndim == 1 else (x.shape[0], math.prod(x.shape[1:]))
    return x.reshape(rows, features), x.ndim == 1


def as_scores_and_targets(y, t, name="y"):
    """Scores (probabilities or logits) and the targets of a classification loss.

    Returns ``(y2, kind, t2, dtype)``: ``y2`` the C-contiguous ``(n, k)`` batch (a 1-D ``y``
    is one sample), ``kind`` "targets" (``t2`` of ``y2``'s shape and dtype) or "labels"
    (``t2`` int64 of shape ``(n,)``), and the compute dtype.
    """
    y_arr = np.asarray(as_plain(y, name))
    t_arr = np.asarray(as_plain(t, "t"))
    if y_arr.ndim == 1 and t_arr.shape == y_arr.shape:
        t_arr = t_arr.reshape(1, -1)
    if y_arr.ndim != 1 and y_arr.ndim != 2:
        raise ValueError(f"{name} must be 1-D (one sample) or 2-D (batch, classes), got {y_arr.shape}")
    y2 = y_arr.reshape(1, -1) if y_arr.ndim == 1 else y_arr
    if y2.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch, shape {y_arr.shape}: the mean loss is undefined")
    if y2.shape[1] == 0:
        raise ValueError(f"{name} has no classes, shape {y_arr.shape}: the loss is undefined")
    kind, t_res = as_targets(t_arr, y2.shape)
    if kind == "targets":
        dtype = compute_dtype((name, y2), ("t", t_res))
        t_res = as_float(t_res, "t", dtype)
    else:
        dtype = compute_dtype((name, y2))
    return as_float(y2, name, dtype), kind, t_res, dtype


# --- convolution and pooling ----------------------------------------------------------------

def check_window(stride, pad, where):
    """``stride`` (an integer >= 1) and ``pad`` (an integer >= 0) of a convolution or pooling
    window, as Python ints; ``where`` names the caller in the message."""
    for value, name, minimum in ((stride, "stride", 1), (pad, "pad", 0)):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{where}: {name} must be an integer, got {value!r}")
        if value < minimum:
            raise ValueError(f"{where}: {name} must be >= {minimum}, got {value!r}")
    return int(stride), int(pad)


def as_images(x, name, dtype=None):
    """``x`` as a C-contiguous 4-D (N, C, H, W) float array of ``dtype``."""
    x = as_float(x, name, dtype)
    if x.ndim != 4:
        raise ValueError(f"{name} must be a 4-D array (N, C, H, W), got shape {x.shape}")
    return x


def window_output_size(in_shape, window, stride, pad, name, window_name):
    """(OH, OW) of a window of shape ``window`` (FH, FW) sliding over the (H, W) of
    ``in_shape`` (N, C, H, W) padded by ``pad``: the book's ``(H + 2 pad - FH) // stride + 1``.
    Raises unless the window fits the padded input."""
    H, W = in_shape[2], in_shape[3]
    FH, FW = window
    if FH < 1 or FW < 1:
        raise ValueError(f"{window_name} must be at least 1x1, got {FH}x{FW}")
    if FH > H + 2 * pad or FW > W + 2 * pad:
        raise ValueError(f"{window_name} {FH}x{FW} is larger than {name} {tuple(in_shape)} "
                         f"padded by {pad} ({H + 2 * pad}x{W + 2 * pad})")
    return (H + 2 * pad - FH) // stride + 1, (W + 2 * pad - FW) // stride + 1


def check_filters(W, b, x_shape=None):
    """Raise unless ``W`` is a 4-D (FN, C, FH, FW) filter bank, ``b`` has shape (FN,), and
    ``x_shape`` (N, C, H, W) has W's C channels."""
    if not isinstance(W, np.ndarray):
        raise TypeError(f"W must be a NumPy array (the layer holds it by reference, as the "
                        f"book's does), got {type(W).__name__}")
    W = as_plain(W, "W")
    if W.ndim != 4:
        raise ValueError(f"W must be a 4-D array (FN, C, FH, FW), got shape {W.shape}")
    if min(W.shape) == 0:
        raise ValueError(f"W must have at least one filter, channel, row and column, got shape "
                         f"{W.shape}")
    check_bias(b, W.shape[0], W.shape)
    if x_shape is not None and x_shape[1] != W.shape[1]:
        raise ValueError(f"x {tuple(x_shape)} has {x_shape[1]} channels but W {W.shape} "
                         f"expects {W.shape[1]}")
