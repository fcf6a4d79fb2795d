"""Fuzzing every public entry point: the twin's result or a clean error, never a crash.

Hypothesis draws the arguments of each public function, layer, network, optimizer and
gradient routine: arrays of random shapes (empty, size-1 dimensions, 0-d), magnitudes from
1e-300 to 1e300, NaN and inf, C/Fortran order, strided, reversed and read-only views, Python
lists and scalars, and dtypes that fastnn accepts (float64/32/16, int8/64, uint8, bool,
byte-swapped float64) or refuses (complex, object, str, long double); some arguments get a
shape other than the one the entry point expects.  For every draw, fastnn must either

* return what its twin in ``fastnn.reference`` returns on the same values converted by
  fastnn's dtype policy (NaN and inf at the same places, finite values to the tolerance of
  conftest.assert_twin, relative to the result's magnitude or, for sums of products, to the
  magnitude of the terms), without modifying its inputs; or
* raise ``ValueError`` or ``TypeError`` with a message: ``TypeError`` for a refused dtype,
  and never an error at all when every argument is valid.

Any other exception fails the test; a crash kills the run.  Example counts come from the
hypothesis profile (conftest: 40 per test in "ci"; FASTNN_HYPOTHESIS_PROFILE=thorough for 500).
"""
import copy
import numbers
import os
import re
import subprocess
import sys
import textwrap
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import TOLERANCE
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastnn.functions as F
import fastnn.gradient as G
import fastnn.layers as L
import fastnn.nets as N
import fastnn.optim as O
import fastnn.reference.conv as RC
import fastnn.reference.functions as RF
import fastnn.reference.gradient as RG
import fastnn.reference.layers as RL
import fastnn.reference.nets as RN
import fastnn.reference.normalization as RNORM
import fastnn.reference.optim as RO
import fastnn.util as U

pytestmark = pytest.mark.filterwarnings("ignore")  # the twins warn on overflow and log(0)
FUZZ = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# --- the inputs ------------------------------------------------------------------------------

ACCEPTED = ["float64", "float32", "float16", "int8", "int64", "uint8", "bool", ">f8"]
REFUSED = ["complex128", "object", "str", "longdouble"]
SPECIALS = [np.nan, np.inf, -np.inf, 0.0, -0.0, 5e-324]
SCALES = [1.0, 1.0, 1.0, 1e4, -1e4, 1e30, 1e300, 1e-30, 1e-300]
# ndarray subclasses in every array argument: np.matrix (2-D), a plain subclass, one whose
# .shape property lies, masked arrays with nothing masked (their data) and with a masked entry
# (refused: fastnn has no masks)
SUBCLASSES = ["subclass", "lying shape", "matrix", "masked", "masked, one masked"]
LAYOUTS = ["C"] * 4 + ["F", "strided", "reversed", "readonly", "list"] + SUBCLASSES


class PlainSubclass(np.ndarray):
    """An ndarray subclass that changes nothing."""


class LyingShape(np.ndarray):
    """An ndarray subclass whose ``.shape`` property lies (ten times the rows)."""

    @property
    def shape(self):
        real = np.ndarray.shape.__get__(self)
        return (real[0] * 10,) + real[1:] if real else (3,)

    def __repr__(self):  # NumPy's printing believes the lie (hypothesis prints the draws)
        return f"LyingShape({np.asarray(self)!r})"

    __str__ = __repr__


def _masked_some(a):
    mask = np.zeros(a.shape, dtype=bool)
    mask.flat[0] = True
    return np.ma.masked_array(a, mask=mask)




def policy_dtype(*dtypes):
    """fastnn's documented dtype policy, written out independently of fastnn._validation:
    bool and integers compute in float64, float16 in float32, float32/64 promote as NumPy."""
    dts = [np.dtype(np.float64) if np.dtype(d).kind in "biu" else np.dtype(d) for d in dtypes]
    dt = np.result_type(*dts)
    return np.dtype(np.float32) if dt == np.float16 else dt


def refused_dtype(dt):
    return dt.kind not in "biuf" or (dt.kind == "f" and dt.itemsize > 8)


@dataclass
class Arg:
    """One drawn argument: ``value`` goes to fastnn, ``array`` holds its values for the twin."""

    value: object
    array: np.ndarray
    mutated: bool = False  # its shape is not the one the entry point expects
    layout: str = "C"

    @property
    def refused(self):
        masked = self.layout == "masked, one masked" and np.ma.is_masked(self.value)
        return refused_dtype(self.array.dtype) or masked

    @property
    def lenient(self):
        """A subclass whose .shape lies: the twin's answer on its data, or a clean error."""
        return self.layout == "lying shape"

    @property
    def valid(self):
        return not self.mutated and not self.refused and not self.lenient

    def ref(self, dtype=None):
        """The values as a fresh C-ordered array of ``dtype`` (default: the policy's)."""
        dtype = policy_dtype(self.array.dtype) if dtype is None else dtype
        return np.array(self.array, dtype=dtype, order="C", copy=True)

    def ref_labels(self, dtype, score_shape):
        """The twin's targets for scores of ``score_shape``: labels as int64 ``(n,)`` (the
        book misreads ``(n, 1)``), or the values in ``dtype`` when they have that shape."""
        if self._is_targets(score_shape):
            return self.ref(dtype)
        if self.mutated or self.refused:  # a subclass with a lying .shape holds good labels
            return self.array
        # (n, 1) labels as (n,); a scalar stays one (as (1,) it would be one-hot for k = 1)
        return self.array.reshape(-1 if self.array.ndim else ()).astype(np.int64)

    def dtypes(self, score_shape):
        """The dtypes these labels add to a loss of scores of ``score_shape``: none, unless
        they are one-hot targets of that shape."""
        return (self.array.dtype,) if self._is_targets(score_shape) else ()

    def _is_targets(self, score_shape):
        # one sample (k,) is the batch (1, k)
        return self.array.shape in (tuple(score_shape), (1,) * (len(score_shape) == 1)
                                    + tuple(score_shape))


def expect(*args, ok=True):
    """The contract for a call on ``args``: ``valid`` (must succeed) when every argument is
    valid and ``ok`` holds; ``refused`` (must raise TypeError) when the only fault is a
    refused dtype; anything else may be refused with either error."""
    shapes_ok = ok and not any(a.mutated or a.lenient for a in args)
    refused = any(a.refused for a in args)
    return dict(valid=shapes_ok and not refused, refused=shapes_ok and refused)


def _cast(base, dtype):
    with np.errstate(all="ignore"):
        if dtype == "bool":
            return base != 0
        if dtype == "str":
            return base.astype(str)
        if dtype in ("int8", "int64", "uint8"):
            info = np.iinfo(dtype)
            clean = np.nan_to_num(base, nan=0.0, posinf=info.max, neginf=info.min)
            return np.clip(clean, info.min, info.max).astype(dtype)
        return base.astype(dtype)


def _relayout(a, layout):
    if a.ndim == 0:
        return a.item() if layout == "list" else a
    if layout == "F":
        return np.asfortranarray(a)
    if layout == "strided":
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
        big[..., ::2] = a
        return big[..., ::2]
    if layout == "reversed":
        return np.ascontiguousarray(a[::-1])[::-1]
    if layout == "readonly":
        a = a.copy()
        a.flags.writeable = False
        return a
    if layout == "list":
        return a.tolist()
    if layout == "subclass":
        return a.view(PlainSubclass)
    if layout == "lying shape":
        return a.view(LyingShape)
    if layout == "matrix":
        return np.matrix(a) if a.ndim == 2 else a.view(PlainSubclass)
    if layout == "masked":
        return np.ma.masked_array(a)
    if layout == "masked, one masked":
        return _masked_some(a) if a.size else np.ma.masked_array(a)
    return np.ascontiguousarray(a)


def values(specials=True, scales=SCALES, sparse=False):
    """A float64 array strategy factory: moderate values times a drawn scale, with specials;
    with ``sparse``, sometimes mostly zeros (as images are: the networks' sparse first
    layer)."""
    elements = st.floats(-4, 4, width=64)
    if specials:
        elements = st.one_of(elements, elements, st.sampled_from(SPECIALS))

    @st.composite
    def draw_values(draw, shape):
        base = draw(hnp.arrays(np.float64, shape, elements=elements))
        if sparse and draw(st.booleans()):
            keep = draw(hnp.arrays(np.bool_, shape,
                                   elements=st.sampled_from([True, False, False, False, False])))
            base = np.where(keep, base, 0.0)
        with np.errstate(all="ignore"):
            return np.asarray(base * draw(st.sampled_from(scales)))
    return draw_values


ANY_SHAPE = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)


@st.composite
def args(draw, shape, dtypes=None, layouts=LAYOUTS, vals=values(), mutate=True):
    """An array argument of ``shape`` (sometimes another one, when ``mutate``)."""
    expected = tuple(shape)
    if mutate and draw(st.integers(0, 9)) == 0:
        shape = tuple(draw(ANY_SHAPE))
    if dtypes is None:
        dtypes = ACCEPTED if draw(st.integers(0, 9)) else REFUSED
    dtype = draw(st.sampled_from(dtypes))
    a = np.asarray(_cast(draw(vals(shape)), dtype))
    layout = draw(st.sampled_from(layouts))
    value = _relayout(a, layout)
    array = np.array(np.asarray(value), copy=True)  # a list of an empty array loses dims
    return Arg(value, array, array.shape != expected, layout)


@st.composite
def labels(draw, n, k, score_shape=None, layouts=LAYOUTS):
    """Class labels for ``n`` rows of ``k`` classes: mostly valid, sometimes out of range,
    negative, non-integer or of another shape.  Labels of the scores' shape (``(n, 1)`` when
    k = 1) are one-hot targets to fastnn and the twin."""
    dtype = draw(st.sampled_from(["int64", "int32", "int8", "uint8", "uint64"] * 3
                                 + ["float64", "bool"]))
    shape = draw(st.sampled_from([(n,), (n,), (n, 1)] + ([()] if n == 1 else [])))
    if draw(st.integers(0, 9)) == 0:
        shape = tuple(draw(ANY_SHAPE))
    hi = k + 1 if draw(st.integers(0, 9)) == 0 else max(k - 1, 0)
    lo = -2 if draw(st.integers(0, 9)) == 0 else 0
    raw = draw(hnp.arrays(np.int64, shape, elements=st.integers(lo, hi)))
    a = np.array(raw, dtype=dtype) if dtype != "uint64" else np.abs(raw).astype(dtype)
    layout = draw(st.sampled_from(layouts))
    value = _relayout(a, layout)
    arr = np.array(np.asarray(value), copy=True)
    if arr.shape == (score_shape or (n, k)):
        return Arg(value, arr, False, layout)
    in_range = arr.size == 0 or (arr.min() >= 0 and arr.max() < k)
    good_shape = arr.shape in ((n,), (n, 1)) + (((),) if n == 1 else ())
    return Arg(value, arr, not good_shape or arr.dtype.kind not in "iu" or not in_range, layout)


DOUTS = st.one_of(st.sampled_from([1, 1.0, 0.5, -2, np.float32(2.0), np.float64(0.25), 1e300]),
                  st.floats(-10, 10))
BAD_DOUTS = st.sampled_from([np.nan, np.inf, "1", None, True, 1j, np.ones(3), np.array(1.0)])

# --- the oracle ------------------------------------------------------------------------------


def _snapshot(inputs):
    return [copy.deepcopy(a) for a in inputs]


def _unchanged(a, b):
    if isinstance(a, np.ndarray):
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        if a.dtype.kind == "O":
            return [a.tolist()] == [b.tolist()]  # in a list, a NaN object equals itself
        return np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
    return a == b or repr(a) == repr(b)


def assert_close(fast, ref, dtype, scale=None, what="", check_dtype=True, tol_dtype=None):
    """``fast`` equals ``ref``: same shape (and dtype, when ``check_dtype``), NaN and inf at
    the same places, finite values within TOLERANCE[dtype] of max(|ref|, |scale|).

    ``scale``, when given, is the twin's result on the absolute values of the inputs, the size
    of the terms of a sum of products: where it overflows, any result is accepted (the order
    of the additions decides between inf and NaN there)."""
    if isinstance(ref, (tuple, list)):
        assert isinstance(fast, (tuple, list)) and len(fast) == len(ref), what
        scale = scale if isinstance(scale, (tuple, list)) else [scale] * len(ref)
        for i, (f, r, s) in enumerate(zip(fast, ref, scale)):
            assert_close(f, r, dtype, s, f"{what}[{i}]", check_dtype, tol_dtype)
        return
    if fast is None or ref is None:
        assert fast is None and ref is None, what
        return
    fast, ref = np.asarray(fast), np.asarray(ref)
    assert fast.shape == ref.shape, f"{what}: shape {fast.shape} != twin's {ref.shape}"
    if check_dtype:
        assert fast.dtype == dtype, f"{what}: dtype {fast.dtype}, expected {dtype}"
    f64, r64 = fast.astype(np.float64), ref.astype(np.float64)
    keep = np.ones(ref.shape, dtype=bool)
    bound = np.max(np.abs(r64[np.isfinite(r64)]), initial=0.0)
    if scale is not None:
        s64 = np.abs(np.broadcast_to(np.asarray(scale, dtype=np.float64), ref.shape))
        keep = np.isfinite(s64)
        bound = max(bound, np.max(s64[keep], initial=0.0))
    nan_f, nan_r = np.isnan(f64) & keep, np.isnan(r64) & keep
    assert np.array_equal(nan_f, nan_r), f"{what}: NaN at {np.argwhere(nan_f != nan_r)[:3]}"
    inf_r = np.isinf(r64) & keep
    assert np.array_equal(f64[inf_r], r64[inf_r]), f"{what}: inf differs"
    finite = np.isfinite(r64) & keep
    assert np.all(np.isfinite(f64[finite])), f"{what}: non-finite where the twin is finite"
    err = np.max(np.abs(f64[finite] - r64[finite]), initial=0.0)
    tol = TOLERANCE[policy_dtype(tol_dtype or dtype)] * max(bound, np.finfo(np.float64).tiny)
    assert err <= tol, f"{what}: error {err:.3g} > {tol:.3g} (dtype {dtype})"


def run_fast(call, inputs, valid, refused=False, mutable=()):
    """``call()`` under the contract: returns ``(ok, result)``; a clean ValueError/TypeError
    gives ``(False, None)``.  Checks that ``inputs`` (but those in ``mutable``) stay as they
    were, also when an error was raised."""
    before = _snapshot(inputs)
    try:
        result = call()
        ok = True
    except (ValueError, TypeError) as exc:
        assert str(exc), f"{type(exc).__name__} without a message"
        assert not valid, f"valid input refused: {type(exc).__name__}: {exc}"
        if refused:
            assert isinstance(exc, TypeError), f"refused dtype gave {type(exc).__name__}: {exc}"
        result, ok = None, False
    for i, (a, b) in enumerate(zip(inputs, before)):
        if i not in mutable:
            assert _unchanged(a, b), f"input {i} was modified"
    if ok:
        assert not refused, "a refused dtype was accepted"
    return ok, result


class _MatmulNumPy:
    """NumPy, but ``dot`` is ``matmul``: ``np.dot`` takes a 1x1 first operand for a scalar
    and returns 0, not NaN, for 0 * NaN and 0 * inf (``np.dot([[0.]], [[np.nan]])`` is
    ``[[0.]]``, ``np.zeros((1, 1)) @ [[np.nan]]`` is ``[[nan]]``); fastnn's GEMMs follow IEEE
    as ``@`` does, so the dense twins are run with ``@``."""

    dot = staticmethod(np.matmul)

    def __getattr__(self, name):
        return getattr(np, name)


def run_twin(call):
    """The twin's result, or None when the twin cannot compute it (nothing to compare)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        RL.np = RC.np = _MatmulNumPy()
        try:
            return call()
        except Exception:  # the book's code raises anything (IndexError, ...) on bad input
            return None
        finally:
            RL.np = RC.np = np


def fuzz(fast_call, ref_call, inputs, dtype, *, valid, refused=False, scale_call=None,
         check_dtype=True, mutable=(), tol_dtype=None):
    ok, fast = run_fast(fast_call, inputs, valid, refused, mutable)
    if not ok:
        return
    ref = run_twin(ref_call)
    if ref is None:
        return
    scale = run_twin(scale_call) if scale_call is not None else None
    assert_close(fast, ref, dtype, scale, check_dtype=check_dtype, tol_dtype=tol_dtype)


FUZZED = set()  # public names exercised here (test_every_public_name_is_fuzzed)


def LOG_SCALE():
    """The error scale of a cross-entropy: at least 1, for log(s) with s >= 1 (the sum of
    the shifted exponentials) is rounded to the dtype's epsilon, however small the loss."""
    return 1.0


def loss_scale(loss_of_abs_targets):
    """The error scale of a cross-entropy over soft targets, which may cancel between
    classes and rows: the loss of |t| (all terms positive), and at least LOG_SCALE.
    A loss that comes with its gradient (a tuple) gets the scale for its first entry."""
    def scale():
        loss = loss_of_abs_targets()
        first = loss[0] if isinstance(loss, tuple) else loss
        value = float(np.nanmax([LOG_SCALE(), abs(float(first))]))
        return (value,) + (None,) * (len(loss) - 1) if isinstance(loss, tuple) else value
    return scale


def covers(*names):
    FUZZED.update(names)


# --- fastnn.functions ------------------------------------------------------------------------

ELEMENTWISE = {
    "sigmoid": (F.sigmoid, RF.sigmoid, 0),
    "sigmoid_grad": (F.sigmoid_grad, RF.sigmoid_grad, 0),
    "relu": (F.relu, RF.relu, 0),
    "relu_grad": (F.relu_grad, RF.relu_grad, 0),
    "softmax": (F.softmax, RF.softmax, 1),
}
covers(*ELEMENTWISE, "identity_function", "step_function")


@pytest.mark.parametrize("name", list(ELEMENTWISE))
@FUZZ
@given(data=st.data())
def test_elementwise(name, data):
    fast, twin, min_ndim = ELEMENTWISE[name]
    x = data.draw(args(data.draw(ANY_SHAPE), mutate=False), "x")
    dtype = None if x.refused else policy_dtype(x.array.dtype)
    fuzz(lambda: fast(x.value), lambda: twin(x.ref()), [x.value], dtype,
         **expect(x, ok=x.array.ndim >= min_ndim))


covers("round_bf16")


@FUZZ
@given(data=st.data())
def test_round_bf16(data):
    """float32 only (any shape, layout, NaN, inf, subnormal): the twin's bits exactly; any
    other dtype (a list of floats is float64) a TypeError, as the twin's."""
    x = data.draw(args(data.draw(ANY_SHAPE), dtypes=ACCEPTED + REFUSED,
                       vals=values(scales=SCALES + [1e-40, 3.4e38]), mutate=False), "x")
    f32 = x.array.dtype == np.float32 and not isinstance(x.value, (list, float))
    ok, fast = run_fast(lambda: F.round_bf16(x.value), [x.value], valid=f32, refused=not f32)
    assert ok == f32
    if ok:
        twin = RF.round_bf16(x.array)
        assert fast.shape == twin.shape and fast.dtype == np.float32
        np.testing.assert_array_equal(fast.view(np.uint32), twin.view(np.uint32))
    else:
        with pytest.raises(TypeError):
            RF.round_bf16(x.value)


@FUZZ
@given(data=st.data())
def test_numpy_only_functions(data):
    x = data.draw(args(data.draw(ANY_SHAPE), mutate=False), "x")
    assert F.identity_function(x.value) is x.value
    if x.array.dtype.kind in "biuf":
        np.testing.assert_array_equal(F.step_function(x.value), RF.step_function(x.ref()))


PAIRED_LOSSES = {
    "sum_squared_error": (F.sum_squared_error, RF.sum_squared_error, 0),
    "mean_squared_error": (F.mean_squared_error, RF.mean_squared_error, 0),
    "binary_cross_entropy": (F.binary_cross_entropy, RF.binary_cross_entropy, 0),
    "binary_cross_entropy[logits]": (
        lambda y, t: F.binary_cross_entropy(y, t, from_logits=True),
        lambda y, t: RF.binary_cross_entropy(y, t, from_logits=True), 0),
    "cross_entropy_error[targets]": (F.cross_entropy_error, RF.cross_entropy_error, 1),
    "cross_entropy_error[exact]": (
        lambda y, t: F.cross_entropy_error(y, t, exact=True),
        lambda y, t: RF.cross_entropy_error(y, t, exact=True), 1),
    "softmax_loss[targets]": (F.softmax_loss, RF.softmax_loss, 1),
    "softmax_loss[exact]": (lambda x, t: F.softmax_loss(x, t, exact=True),
                            lambda x, t: RF.softmax_loss(x, t, exact=True), 1),
    "softmax_loss_grad[targets]": (F.softmax_loss_grad, RF.softmax_loss_grad, 1),
    "softmax_loss_grad[exact]": (lambda x, t: F.softmax_loss_grad(x, t, exact=True),
                                 lambda x, t: RF.softmax_loss_grad(x, t, exact=True), 1),
}
covers("sum_squared_error", "mean_squared_error", "binary_cross_entropy",
       "cross_entropy_error", "softmax_loss", "softmax_loss_grad")


@pytest.mark.parametrize("name", list(PAIRED_LOSSES))
@FUZZ
@given(data=st.data())
def test_losses_with_targets(name, data):
    """Losses of scores ``y`` against targets ``t`` of y's shape (a batch mean or a sum)."""
    fast, twin, classes = PAIRED_LOSSES[name]
    if classes:  # classification: (n, k) or one sample (k,)
        shape = data.draw(st.sampled_from([(3, 4), (1, 1), (2, 1), (1, 5), (4,), (1,)]))
    else:
        shape = data.draw(ANY_SHAPE)
    y = data.draw(args(shape), "y")
    t = data.draw(args(shape), "t")
    dtype = None if y.refused or t.refused else policy_dtype(y.array.dtype, t.array.dtype)
    fuzz(lambda: fast(y.value, t.value), lambda: twin(y.ref(dtype), t.ref(dtype)),
         [y.value, t.value], dtype, **expect(y, t, ok=not shape or shape[0] > 0),
         scale_call=loss_scale(lambda: twin(y.ref(dtype), np.abs(t.ref(dtype))))
         if classes else None)


LABEL_LOSSES = {
    "cross_entropy_error[labels]": (F.cross_entropy_error, RF.cross_entropy_error),
    "cross_entropy_error[labels, exact]": (
        lambda y, t: F.cross_entropy_error(y, t, exact=True),
        lambda y, t: RF.cross_entropy_error(y, t, exact=True)),
    "softmax_loss[labels]": (F.softmax_loss, RF.softmax_loss),
    "softmax_loss[labels, exact]": (lambda x, t: F.softmax_loss(x, t, exact=True),
                                    lambda x, t: RF.softmax_loss(x, t, exact=True)),
    "softmax_loss_grad[labels]": (F.softmax_loss_grad, RF.softmax_loss_grad),
    "softmax_loss_grad[labels, exact]": (lambda x, t: F.softmax_loss_grad(x, t, exact=True),
                                         lambda x, t: RF.softmax_loss_grad(x, t, exact=True)),
}


@pytest.mark.parametrize("name", list(LABEL_LOSSES))
@FUZZ
@given(data=st.data(), n=st.integers(1, 4), k=st.integers(1, 5), one_sample=st.booleans())
def test_losses_with_labels(name, data, n, k, one_sample):
    fast, twin = LABEL_LOSSES[name]
    shape = (k,) if one_sample else (n, k)
    n = 1 if one_sample else n
    y = data.draw(args(shape), "y")
    t = data.draw(labels(n, k, shape), "t")
    dtype = None if y.refused else policy_dtype(y.array.dtype, *t.dtypes(y.array.shape))
    fuzz(lambda: fast(y.value, t.value), lambda: twin(y.ref(dtype), t.ref_labels(dtype, y.array.shape)),
         [y.value, t.value], dtype, **expect(y, t), scale_call=LOG_SCALE)


covers("one_hot")


@FUZZ
@given(data=st.data(), k=st.one_of(st.none(), st.integers(-1, 5), st.just(2.0)))
def test_one_hot(data, k):
    t = data.draw(labels(3, 5 if k is None else max(int(k), 0)), "labels")
    a = t.array
    in_range = a.size == 0 or (a.min() >= 0 and (k is None or a.max() < k))
    valid = a.dtype.kind in "iu" and in_range and (k is None or isinstance(k, int) and k >= 0)
    fuzz(lambda: F.one_hot(t.value, k), lambda: RF.one_hot(t.array, k), [t.value],
         np.dtype(np.float64), valid=valid)


# --- fastnn.layers ---------------------------------------------------------------------------

covers("Relu", "Sigmoid")


@pytest.mark.parametrize("name", ["Relu", "Sigmoid"])
@FUZZ
@given(data=st.data())
def test_activation_layers(name, data):
    x = data.draw(args(data.draw(ANY_SHAPE), mutate=False), "x")
    dout = data.draw(args(x.array.shape), "dout")
    fast, twin = getattr(L, name)(), getattr(RL, name)()
    dtype = None if x.refused else policy_dtype(x.array.dtype)
    fuzz(lambda: fast.forward(x.value), lambda: twin.forward(x.ref()), [x.value], dtype,
         **expect(x))
    if (fast.mask if name == "Relu" else fast.out) is None:  # forward refused x
        return
    out_dtype = policy_dtype(dout.array.dtype, *((dtype,) if name == "Sigmoid" else ()))
    fuzz(lambda: fast.backward(dout.value), lambda: twin.backward(dout.ref()), [dout.value],
         out_dtype, **expect(dout),
         # the twin rounds 1 - out in the forward dtype: float32 accuracy at best
         tol_dtype=np.float32 if np.float32 in (dtype, out_dtype) else None)


def _dense_shapes(transposed, n, d, h, in_dims):
    w_shape = (h, d) if transposed else (d, h)
    if in_dims == 1:
        return (d,), w_shape, (h,)
    if in_dims == 3:
        return (n, 1, d), w_shape, (n, h)
    return (n, d), w_shape, (n, h)


covers("Affine", "Linear")


@pytest.mark.parametrize("name", ["Affine", "Linear"])
@FUZZ
@given(data=st.data(), n=st.integers(0, 4), d=st.integers(1, 4), h=st.integers(1, 4),
       in_dims=st.sampled_from([1, 2, 2, 3]), compute_dx=st.booleans())
def test_dense_layers(name, data, n, d, h, in_dims, compute_dx):
    x_shape, w_shape, out_shape = _dense_shapes(name == "Linear", n, d, h, in_dims)
    x = data.draw(args(x_shape), "x")
    W = data.draw(args(w_shape), "W")
    b = data.draw(args((h,)), "b")
    dout = data.draw(args(out_shape), "dout")
    contract = expect(x, W, b, ok=isinstance(W.value, np.ndarray))
    refused = x.refused or W.refused or b.refused
    dtype = None if refused else policy_dtype(x.array.dtype, W.array.dtype, b.array.dtype)
    fast = getattr(L, name)(W.value, b.value)

    def twin(absolute=False):
        f = np.abs if absolute else (lambda a: a)
        layer = getattr(RL, name)(f(W.ref(dtype)), f(b.ref(dtype)))
        return layer, layer.forward(f(x.ref(dtype)))

    fuzz(lambda: fast.forward(x.value), lambda: twin()[1], [x.value, W.value, b.value], dtype,
         **contract, scale_call=lambda: twin(True)[1])
    if fast.x is None:  # forward refused its input
        return

    def twin_backward(absolute=False):
        layer, _ = twin(absolute)
        dx = layer.backward(np.abs(dout.ref()) if absolute else dout.ref())
        return dx if compute_dx else None, layer.dW, layer.db

    def fast_backward():
        dx = fast.backward(dout.value, compute_dx=compute_dx)
        return dx, fast.dW, fast.db

    fuzz(fast_backward, twin_backward, [dout.value, W.value, b.value],
         None if dout.refused else policy_dtype(dout.array.dtype, dtype),
         **expect(dout, ok=not x.mutated), scale_call=lambda: twin_backward(True),
         # the twin sums db = dout.sum(0) in dout's dtype, fastnn in the promoted one
         tol_dtype=None if dout.refused else policy_dtype(dout.array.dtype))


covers("SoftmaxWithLoss")


@FUZZ
@given(data=st.data(), n=st.integers(1, 4), k=st.integers(1, 5), use_labels=st.booleans(),
       exact=st.booleans(), dout=st.one_of(DOUTS, DOUTS, BAD_DOUTS))
def test_softmax_with_loss(data, n, k, use_labels, exact, dout):
    x = data.draw(args((n, k)), "x")
    t = data.draw(labels(n, k) if use_labels else args((n, k)), "t")
    refused = x.refused or (not use_labels and t.refused)
    dtype = None if refused else policy_dtype(
        x.array.dtype, *(t.dtypes(x.array.shape) if use_labels else (t.array.dtype,)))
    t_ref = t.ref_labels(dtype, x.array.shape) if use_labels else t.ref(dtype)
    fast, twin = L.SoftmaxWithLoss(exact=exact), RL.SoftmaxWithLoss(exact=exact)
    fuzz(lambda: fast.forward(x.value, t.value), lambda: twin.forward(x.ref(dtype), t_ref),
         [x.value, t.value], dtype, **expect(x, t),
         scale_call=loss_scale(lambda: RL.SoftmaxWithLoss(exact).forward(x.ref(dtype),
                                                                         np.abs(t_ref))))
    if fast.y is None:
        return
    good = isinstance(dout, (int, float, np.floating)) and not isinstance(dout, bool) \
        and np.isfinite(dout)
    fuzz(lambda: fast.backward(dout), lambda: twin.backward(dout), [], dtype, valid=good)


covers("SigmoidWithLoss")


@FUZZ
@given(data=st.data(), dout=st.one_of(DOUTS, DOUTS, BAD_DOUTS))
def test_sigmoid_with_loss(data, dout):
    shape = data.draw(ANY_SHAPE)
    x = data.draw(args(shape), "x")
    t = data.draw(args(shape), "t")
    refused = x.refused or t.refused
    dtype = None if refused else policy_dtype(x.array.dtype, t.array.dtype)
    fast, twin = L.SigmoidWithLoss(), RL.SigmoidWithLoss()
    fuzz(lambda: fast.forward(x.value, t.value), lambda: twin.forward(x.ref(dtype), t.ref(dtype)),
         [x.value, t.value], dtype, **expect(x, t, ok=not shape or shape[0] > 0))
    if fast.y is None:
        return
    good = isinstance(dout, (int, float, np.floating)) and not isinstance(dout, bool) \
        and np.isfinite(dout)
    fuzz(lambda: fast.backward(dout), lambda: twin.backward(dout), [], dtype, valid=good,
         check_dtype=False)  # a NumPy float64 dout promotes the twin's float32 result


covers("MulLayer", "AddLayer", "SquareLayer", "Identity")


@FUZZ
@given(data=st.data())
def test_graph_nodes(data):
    """Chapter 5's nodes are plain arithmetic on whatever they are given, as in the book."""
    shape = data.draw(ANY_SHAPE)
    x, y, dout = (data.draw(args(shape, dtypes=ACCEPTED), name) for name in ("x", "y", "dout"))
    for name, fwd in [("MulLayer", (x, y)), ("AddLayer", (x, y)), ("SquareLayer", (x,)),
                      ("Identity", (x,))]:
        fast, twin = getattr(L, name)(), getattr(RL, name)()
        fast_out = run_twin(lambda: (fast.forward(*(a.array for a in fwd)),
                                     fast.backward(dout.array)))
        twin_out = run_twin(lambda: (twin.forward(*(a.array for a in fwd)),
                                     twin.backward(dout.array)))
        assert (fast_out is None) == (twin_out is None), name
        if twin_out is not None:
            for f, r in zip(_flatten(fast_out), _flatten(twin_out)):
                np.testing.assert_array_equal(np.asarray(f), np.asarray(r), strict=True)


def _flatten(nested):
    for item in nested:
        if isinstance(item, tuple):
            yield from _flatten(item)
        else:
            yield item


# --- fastnn.nets -----------------------------------------------------------------------------

NETS = {
    "TwoLayerNet": lambda api, d, k, dt: api.TwoLayerNet(d, 3, k, 0.5, dtype=dt, rng=0),
    "MultiLayerNet[relu]": lambda api, d, k, dt: api.MultiLayerNet(
        d, [3, 2], k, dtype=dt, rng=1, weight_decay_lambda=0.1),
    "MultiLayerNet[sigmoid, exact]": lambda api, d, k, dt: api.MultiLayerNet(
        d, [4], k, "sigmoid", "sigmoid", dtype=dt, rng=2, exact_loss=True),
    "MultiLayerNet[identity, no hidden]": lambda api, d, k, dt: api.MultiLayerNet(
        d, [], k, "identity", 0.3, dtype=dt, rng=3),
}
covers("TwoLayerNet", "MultiLayerNet")


@pytest.mark.parametrize("name", list(NETS))
@FUZZ
@given(data=st.data(), n=st.integers(1, 4), d=st.integers(1, 12), k=st.integers(1, 4),
       f32=st.booleans(), use_labels=st.booleans())
def test_networks(name, data, n, d, k, f32, use_labels):
    net_dtype = np.dtype(np.float32 if f32 else np.float64)
    fast, twin, twin_abs = (NETS[name](api, d, k, net_dtype) for api in (N, RN, RN))
    for key in twin_abs.params:  # twin_abs: the terms' magnitude, for the error bound
        twin_abs.params[key][...] = np.abs(twin_abs.params[key])
    x = data.draw(args((n, d), vals=values(scales=[1.0, 1.0, 1e4, 1e-30], sparse=True)), "x")
    t = data.draw(labels(n, k) if use_labels else args((n, k)), "t")
    # the targets are converted to the dtype of x and the weights
    dtype = None if x.refused else policy_dtype(x.array.dtype, net_dtype)
    t_ref = t.ref_labels(dtype, (n, k)) if use_labels else None if t.refused else t.ref(dtype)
    inputs = [x.value, t.value]

    def both(method, *targets):
        return (lambda: getattr(fast, method)(x.value, *(t.value for _ in targets)),
                lambda: getattr(twin, method)(x.ref(dtype), *targets),
                lambda: getattr(twin_abs, method)(np.abs(x.ref(dtype)), *targets))

    fast_call, twin_call, scale_call = both("predict")
    fuzz(fast_call, twin_call, inputs, dtype, **expect(x), scale_call=scale_call)
    fast_call, twin_call, _ = both("loss", t_ref)
    # the weight decay term is a sum over the weights, in their dtype
    fuzz(fast_call, twin_call, inputs, dtype, **expect(x, t),
         scale_call=loss_scale(lambda: twin.loss(x.ref(dtype), np.abs(t_ref))),
         tol_dtype=net_dtype if f32 else None)
    keys = list(twin.params)  # gradient() returns the net's buffers: copy them
    fuzz(lambda: [fast.gradient(x.value, t.value)[key].copy() for key in keys],
         lambda: [twin.gradient(x.ref(dtype), t_ref)[key] for key in keys], inputs, dtype,
         **expect(x, t),
         scale_call=lambda: [twin_abs.gradient(np.abs(x.ref(dtype)), t_ref)[key] for key in keys])
    if use_labels:
        fuzz(lambda: fast.accuracy(x.value, t.value), lambda: twin.accuracy(x.ref(dtype), t_ref),
             inputs, None, **expect(x, t), check_dtype=False)


@FUZZ
@given(data=st.data())
def test_network_constructors(data):
    """Bad sizes, activations, scales, dtypes and params are refused cleanly."""
    sizes = data.draw(st.lists(st.sampled_from([1, 2, 3, 4] * 4 + [-1, 0, 2.5, "3", True]),
                               min_size=2, max_size=4))
    activation = data.draw(st.sampled_from(["relu", "sigmoid", "identity"] * 3 + ["tanh", None]))
    std = data.draw(st.sampled_from([0.01, "he", "xavier", "Relu"] * 3
                                    + ["bogus", np.nan, -1.0, None]))
    dtype = data.draw(st.sampled_from([np.float32, np.float64, "f8"] * 3
                                      + [np.float16, np.int32, complex, "nonsense"]))
    ok, net = run_fast(lambda: N.MultiLayerNet(sizes[0], sizes[1:-1], sizes[-1], activation,
                                               std, dtype=dtype, rng=0), [], valid=False)
    if ok:
        x = np.ones((2, sizes[0]), dtype=net.dtype)
        assert net.predict(x).shape == (2, sizes[-1])
        rebuilt = N.MultiLayerNet.from_params(net.params, activation=activation)
        np.testing.assert_array_equal(rebuilt.predict(x), net.predict(x))
    # params for from_params: mostly a consistent 2-layer network, sometimes not
    d0, d1, d2 = data.draw(st.tuples(*[st.integers(1, 3)] * 3))
    shapes = {"W1": (d0, d1), "b1": (d1,), "W2": (d1, d2), "b2": (d2,)}
    dtype = data.draw(st.sampled_from(["float64", "float32"]))
    params = {}
    for key, shape in shapes.items():
        params[key] = data.draw(args(shape, dtypes=[dtype] * 10 + ["int8", "float16"],
                                     layouts=["C", "C", "F"] + SUBCLASSES, mutate=False),
                                key).value
    if data.draw(st.integers(0, 3)) == 0:
        params.pop(data.draw(st.sampled_from(sorted(params))))
    ok, net = run_fast(lambda: N.MultiLayerNet.from_params(params), [], valid=False)
    if ok:
        assert net.predict(np.ones((1, d0))).shape == (1, d2)


covers("numerical_gradient")  # the networks' method; gradient.py below


CONVNETS = {
    "SimpleConvNet": lambda api, c, k, dt: api.SimpleConvNet(
        input_dim=(c, 4, 4), conv_param={'filter_num': 2, 'filter_size': 3, 'pad': 1,
                                         'stride': 1},
        hidden_size=3, output_size=k, weight_init_std=0.5, dtype=dt),
    "DeepConvNet": lambda api, c, k, dt: api.DeepConvNet(
        (c, 28, 28), *({'filter_num': f, 'filter_size': 3, 'pad': p, 'stride': 1}
                       for f, p in ((2, 1), (2, 1), (2, 1), (2, 2), (2, 1), (64, 1))),
        hidden_size=3, output_size=k, dtype=dt),
}
covers(*CONVNETS)


@pytest.mark.parametrize("name", list(CONVNETS))
@settings(FUZZ, max_examples=15)
@given(data=st.data(), n=st.integers(1, 3), c=st.integers(1, 2), k=st.integers(1, 4),
       f32=st.booleans(), use_labels=st.booleans(), seed=st.integers(0, 1000))
def test_convnets(name, data, n, c, k, f32, use_labels, seed):
    """The book's convnets on images of drawn dtypes, layouts and shapes (finite values:
    the twins' NumPy products and fastnn's GEMMs treat 0 * NaN alike only in general)."""
    net_dtype = np.dtype(np.float32 if f32 else np.float64)
    np.random.seed(seed)
    fast = CONVNETS[name](N, c, k, net_dtype)
    np.random.seed(seed)
    twin = CONVNETS[name](RN, c, k, net_dtype)
    np.random.seed(seed)
    twin_abs = CONVNETS[name](RN, c, k, net_dtype)  # the terms' magnitude, for the error bound
    for key in twin_abs.params:
        twin_abs.params[key][...] = np.abs(twin_abs.params[key])
    # ... with every delta at the logits at its bound, 1/n: softmax - t is rounded to about
    # one ulp of 1 even where it is tiny (a saturated softmax), and that rounding reaches
    # every gradient through sums of these terms
    last = twin_abs.last_layer
    last.backward = lambda dout=1: np.full_like(last.y, 1.0 / last.y.shape[0])
    side = fast.input_dim[1]
    x = data.draw(args((n, c, side, side), vals=values(specials=False, scales=[1.0, 1e-3])),
                  "x")
    t = data.draw(labels(n, k) if use_labels else args((n, k), vals=values(specials=False)), "t")
    dtype = None if x.refused else policy_dtype(x.array.dtype, net_dtype)
    t_ref = t.ref_labels(dtype, (n, k)) if use_labels else None if t.refused else t.ref(dtype)
    inputs = [x.value, t.value]
    fuzz(lambda: fast.predict(x.value), lambda: twin.predict(x.ref(dtype)), inputs, dtype,
         **expect(x), scale_call=lambda: twin_abs.predict(np.abs(x.ref(dtype))))
    keys = list(twin.params)

    def gradient(net, images, targets):
        np.random.seed(1)  # DeepConvNet's dropout: the same masks on every side
        return [np.array(net.gradient(images, targets)[key]) for key in keys]

    fuzz(lambda: gradient(fast, x.value, t.value), lambda: gradient(twin, x.ref(dtype), t_ref),
         inputs, dtype, **expect(x, t),
         scale_call=lambda: gradient(twin_abs, np.abs(x.ref(dtype)), t_ref))
    if use_labels:
        fuzz(lambda: fast.accuracy(x.value, t.value, 1),
             lambda: twin.accuracy(x.ref(dtype), t_ref, 1), inputs, None, **expect(x, t),
             check_dtype=False)


BF16_CONVNETS = {  # precision="bf16" on both paths: im2col (stride 2), direct (stride 1)
    "SimpleConvNet[stride 2, bf16]": lambda c, k: N.SimpleConvNet(
        input_dim=(c, 4, 4), conv_param={'filter_num': 2, 'filter_size': 2, 'pad': 0,
                                         'stride': 2},
        hidden_size=3, output_size=k, weight_init_std=0.5, dtype=np.float32, precision="bf16"),
    "SimpleConvNet[16 filters, bf16]": lambda c, k: N.SimpleConvNet(
        input_dim=(c, 4, 4), conv_param={'filter_num': 16, 'filter_size': 3, 'pad': 1,
                                         'stride': 1},
        hidden_size=3, output_size=k, weight_init_std=0.5, dtype=np.float32, precision="bf16"),
}


@pytest.mark.parametrize("name", list(BF16_CONVNETS))
@settings(FUZZ, max_examples=15)
@given(data=st.data(), n=st.integers(1, 3), c=st.integers(1, 2), k=st.integers(1, 4),
       use_labels=st.booleans(), seed=st.integers(0, 1000))
def test_bf16_convnets(name, data, n, c, k, use_labels, seed):
    """A bf16 convnet computes in float32 whatever it is given: on every drawn dtype, layout
    and shape, exactly what it computes on the values' C-contiguous float32 copy (NaN and inf
    included), or a clean error (TypeError for a refused dtype)."""
    np.random.seed(seed)
    net = BF16_CONVNETS[name](c, k)
    x = data.draw(args((n, c, 4, 4)), "x")
    t = data.draw(labels(n, k) if use_labels else args((n, k)), "t")
    t_ref = t.ref_labels(np.float32, (n, k)) if use_labels else None if t.refused \
        else t.ref(np.float32)
    inputs = [x.value, t.value]
    ok, scores = run_fast(lambda: net.predict(x.value), inputs, **expect(x))
    if ok:
        np.testing.assert_array_equal(scores, net.predict(x.ref(np.float32)))
        assert scores.dtype == np.float32

    def gradient(images, targets):
        return [np.array(g) for g in net.gradient(images, targets).values()]

    ok, grads = run_fast(lambda: gradient(x.value, t.value), inputs, **expect(x, t))
    if ok:
        for got, ref in zip(grads, gradient(x.ref(np.float32), t_ref)):
            np.testing.assert_array_equal(got, ref)


# --- the normalization family (chapter 6) ----------------------------------------------------

covers("Dropout")


@FUZZ
@given(data=st.data(), ratio=st.sampled_from([0.0, 0.3, 0.5, 0.99]), train=st.booleans())
def test_dropout(data, ratio, train):
    x = data.draw(args(data.draw(ANY_SHAPE), mutate=False), "x")
    dout = data.draw(args(x.array.shape), "dout")
    fast, twin = L.Dropout(ratio, rng=5), RNORM.Dropout(ratio, rng=5)  # the same masks
    dtype = None if x.refused else policy_dtype(x.array.dtype)
    fuzz(lambda: fast.forward(x.value, train), lambda: twin.forward(x.ref(), train),
         [x.value], dtype, **expect(x), check_dtype=train)  # the twin's test mode: float64
    if fast.mask is None:  # test mode, or forward refused x
        return
    fuzz(lambda: fast.backward(dout.value), lambda: twin.backward(dout.ref()), [dout.value],
         None if dout.refused else policy_dtype(dout.array.dtype), **expect(dout))


covers("BatchNormalization")
FINITE = values(specials=False, scales=[1.0, 1.0, 1e4, 1e-4, 1e-30])


@FUZZ
@given(data=st.data(), n=st.integers(0, 4), dims=st.sampled_from([(3,), (1,), (2, 1, 2), (1, 1, 1)]),
       momentum=st.sampled_from([0.9, 0.0, 0.5]))
def test_batch_normalization(data, n, dims, momentum):
    shape = (n, *dims)
    d = int(np.prod(dims))
    x = data.draw(args(shape, vals=values(scales=[1.0, 1.0, 1e4, 1e-4, 1e-30])), "x")
    gamma = data.draw(args((d,)), "gamma")
    beta = data.draw(args((d,)), "beta")
    dout = data.draw(args(shape, vals=FINITE), "dout")
    fast = L.BatchNormalization(gamma.value, beta.value, momentum)
    refused = x.refused or gamma.refused or beta.refused
    dtype = None if refused else policy_dtype(x.array.dtype, gamma.array.dtype, beta.array.dtype)
    twin = RNORM.BatchNormalization(gamma.ref(dtype), beta.ref(dtype), momentum)

    def terms(layer):  # |gamma xn| + |beta|: the size of what the output adds up
        return np.abs(layer.gamma * layer.xn).reshape(np.shape(layer.xn)) + np.abs(layer.beta)

    fuzz(lambda: fast.forward(x.value), lambda: twin.forward(x.ref(dtype)),
         [x.value, gamma.value, beta.value], dtype, **expect(x, gamma, beta, ok=n > 0),
         scale_call=lambda: terms(twin).reshape(x.array.shape))
    if fast.xn is None:  # forward refused its input
        return
    def moments():  # the size of the terms of the mean and the variance
        x64 = np.abs(x.ref(np.float64)).reshape(n, d)
        return np.max(x64, axis=0), np.max(x64, axis=0) ** 2

    fuzz(lambda: (fast.running_mean, fast.running_var),
         lambda: (twin.running_mean, twin.running_var), [], np.dtype(np.float64), valid=True,
         tol_dtype=dtype, scale_call=moments)
    out_dtype = None if dout.refused else policy_dtype(dout.array.dtype, dtype)

    def twin_backward():
        dx = twin.backward(dout.ref(out_dtype))
        return dx, twin.dgamma, twin.dbeta

    def scale():  # dx is a difference of terms gamma dout / std (it cancels at n <= 2)
        g = np.abs(twin.gamma) * np.abs(dout.ref(out_dtype)).reshape(n, d) / twin.std
        return (np.broadcast_to(np.max(g, initial=0.0), x.array.shape),
                np.abs(twin.xn * dout.ref(out_dtype).reshape(n, d)).sum(0),
                np.abs(dout.ref(out_dtype).reshape(n, d)).sum(0))

    fuzz(lambda: (fast.backward(dout.value), fast.dgamma, fast.dbeta), twin_backward,
         [dout.value, gamma.value], out_dtype, **expect(dout), scale_call=scale,
         tol_dtype=np.float32 if np.float32 in (dtype, out_dtype) else None)


covers("MultiLayerNetExtend")
GENERIC_DTYPES = ["float64", "float32", ">f8"] * 3 + ["float16"] + REFUSED


def generic_values(scales):
    """Standard normal values (from a drawn seed) times a drawn scale."""
    def make(shape):
        return st.tuples(st.integers(0, 2**16), st.sampled_from(scales)).map(
            lambda p: np.random.default_rng(p[0]).standard_normal(shape) * p[1])
    return make


EXTEND = {
    "batchnorm": dict(use_batchnorm=True, weight_decay_lambda=0.1),
    "batchnorm, dropout": dict(use_batchnorm=True, use_dropout=True, dropout_ration=0.3),
    "dropout, sigmoid": dict(use_dropout=True, activation="sigmoid", weight_init_std="sigmoid"),
}


@pytest.mark.parametrize("name", list(EXTEND))
@FUZZ
@given(data=st.data(), n=st.integers(6, 8), d=st.integers(4, 6), k=st.integers(2, 4),
       f32=st.booleans(), use_labels=st.booleans())
def test_multilayer_net_extend(name, data, n, d, k, f32, use_labels):
    """k >= 2: with one class every loss is 0 and every gradient rounding noise."""
    net_dtype = np.dtype(np.float32 if f32 else np.float64)
    fast, twin = (api.MultiLayerNetExtend(d, [5, 4], k, dtype=net_dtype, rng=3, **EXTEND[name])
                  for api in (N, RN))
    # generic values: batch normalization of degenerate batches (identical rows, or rows
    # that differ in one feature only, so that every unit normalises to the same column) is
    # ill-conditioned, rounding noise in the twin as much as in fastnn; registry.py and
    # test_normalization.py cover the numbers, this test the arguments
    x = data.draw(args((n, d), dtypes=GENERIC_DTYPES, vals=generic_values([1.0, 1e2, 1e-2])), "x")
    t = data.draw(labels(n, k) if use_labels else args((n, k), vals=FINITE), "t")
    dtype = None if x.refused else policy_dtype(x.array.dtype, net_dtype)
    t_ref = t.ref_labels(dtype, (n, k)) if use_labels else None if t.refused else t.ref(dtype)
    inputs = [x.value, t.value]
    # float32 weights in float64 data: the layers compute in float64 from float32 weights
    tol = net_dtype if f32 else None
    fuzz(lambda: fast.predict(x.value), lambda: twin.predict(x.ref(dtype)), inputs, dtype,
         **expect(x), tol_dtype=tol)
    fuzz(lambda: fast.loss(x.value, t.value), lambda: twin.loss(x.ref(dtype), t_ref), inputs,
         dtype, **expect(x, t), scale_call=loss_scale(lambda: twin.loss(x.ref(dtype), np.abs(t_ref))),
         tol_dtype=tol)
    keys = list(twin.params)

    computed = []

    def twin_grads():
        grads = twin.gradient(x.ref(dtype), t_ref)
        computed.append([grads[key] for key in keys])
        return computed[-1]

    def scale():  # the biases before batch normalization: rounding noise around 0
        grads = computed[-1]  # one training step: the running statistics move once
        top = max(float(np.max(np.abs(g), initial=0.0)) for g in grads)
        return [np.full(np.shape(g), top) for g in grads]

    def fast_grads():  # one training step (each draws masks and moves the running stats)
        grads = fast.gradient(x.value, t.value)
        return [grads[key].copy() for key in keys]

    fuzz(fast_grads, twin_grads, inputs, dtype, **expect(x, t), scale_call=scale, tol_dtype=tol)
    if use_labels:
        # against fastnn's own predict: the twin's scores may tie with fastnn's to rounding
        fuzz(lambda: fast.accuracy(x.value, t.value),
             lambda: np.mean(np.argmax(fast.predict(x.ref(dtype)), axis=1) == t_ref),
             inputs, None, **expect(x, t), check_dtype=False)


# --- fastnn.optim ----------------------------------------------------------------------------

covers(*[cls.__name__ for cls in O.OPTIMIZERS.values()], "OPTIMIZERS", "get_optimizer")


@pytest.mark.parametrize("name", list(O.OPTIMIZERS))
@FUZZ
@given(data=st.data())
def test_optimizers(name, data):
    """Two updates: the twin's parameters, or a clean error that leaves every parameter as it
    was."""
    shapes = data.draw(st.lists(ANY_SHAPE, min_size=1, max_size=3))
    params, grads, valid, refused = {}, {}, True, False
    for i, shape in enumerate(shapes):
        p = data.draw(args(shape, dtypes=["float64", "float32"] * 8 + ["float16", "int64"],
                           layouts=["C"] * 12 + ["F", "strided", "readonly", "list"]
                           + SUBCLASSES,
                           vals=values(specials=False, scales=[1.0, 1e4, 1e-30]),
                           mutate=False), f"params[{i}]")
        g = data.draw(args(shape, vals=values(scales=[1.0, 1e4, 1e-30, 1e30])), f"grads[{i}]")
        params[f"p{i}"], grads[f"p{i}"] = p, g
        p_ok = (isinstance(p.value, np.ndarray) and p.array.dtype in (np.float32, np.float64)
                and p.value.flags.c_contiguous and p.value.flags.writeable)
        valid &= p_ok and g.valid and p.valid
        refused |= p.refused or g.refused
    fast_params = {k: p.value for k, p in params.items()}
    before = {k: copy.deepcopy(p) for k, p in fast_params.items()}
    # a number stays a number for the twin: the book's optimizers rebind the dict's value
    # (an int64 array would refuse the float update in place)
    twin_params = {k: (copy.copy(p.value) if isinstance(p.value, numbers.Number)
                       else p.ref(p.array.dtype)) for k, p in params.items()}
    fast_grads = {k: g.value for k, g in grads.items()}
    fast, twin = O.get_optimizer(name, lr=0.05), RO.OPTIMIZERS[name](lr=0.05)
    for step in range(2):
        before = {k: copy.deepcopy(p) for k, p in fast_params.items()}
        ok, _ = run_fast(lambda: fast.update(fast_params, fast_grads), list(fast_grads.values()),
                         valid)
        assert not (ok and refused), "a masked entry or a refused dtype was accepted"
        if not ok:
            for k, p in fast_params.items():
                assert _unchanged(p, before[k]), f"params[{k!r}] changed by a refused update"
            return
        run_twin(lambda: twin.update(twin_params, {
            k: g.ref(None if isinstance(twin_params[k], numbers.Number) else twin_params[k].dtype)
            for k, g in grads.items()}))
        for k, p in fast_params.items():
            # a number's update is the book's expression on its grad as given: a float32 grad
            # computes in float32 (NEP 50), where the twin was handed float64
            low = (not isinstance(params[k].value, np.ndarray)
                   and grads[k].array.dtype in (np.float16, np.float32))
            assert_close(p, twin_params[k], p.dtype, what=f"step {step}: params[{k!r}]",
                         tol_dtype=np.float32 if low else None)


# --- fastnn.gradient -------------------------------------------------------------------------

covers("numerical_diff", "numerical_gradient_2d", "numerical_gradient_batched",
       "gradient_descent", "network_numerical_gradient", "gradient_check", "GradientDifference")


def _function_2(x):
    """The book's f(x0, x1) = x0**2 + x1**2, summed over all entries."""
    return np.sum(np.asarray(x, dtype=np.float64) ** 2)


@FUZZ
@given(data=st.data(), h=st.sampled_from([1e-4, 1e-4, 0.5, 0.0, -1e-4, np.nan, "1e-4", None]))
def test_numerical_differentiation(data, h):
    shape = data.draw(ANY_SHAPE)
    x = data.draw(args(shape, vals=values(scales=[1.0, 1e4, 1e-30])), "x")
    good_h = isinstance(h, float) and np.isfinite(h) and h > 0
    perturbable = (isinstance(x.value, np.ndarray) and x.array.dtype.kind == "f"
                   and x.array.dtype.itemsize <= 8 and x.value.flags.writeable)
    dtype = x.array.dtype
    # numerical_gradient perturbs x in place and restores it: the input check covers that
    fuzz(lambda: G.numerical_gradient(_function_2, x.value, h),
         lambda: RG.numerical_gradient(_function_2, np.array(x.array), h), [x.value], dtype,
         valid=good_h and perturbable, check_dtype=False,
         scale_call=lambda: np.full(x.array.shape, 1.0 / h))
    fuzz(lambda: G.numerical_diff(_function_2, x.value, h),
         lambda: RG.numerical_diff(_function_2, x.array, h), [x.value], None,
         valid=False, check_dtype=False, scale_call=lambda: 1.0 / h)
    if x.array.ndim in (1, 2):
        fuzz(lambda: G.numerical_gradient_2d(_function_2, x.value, h),
             lambda: RG.numerical_gradient_2d(_function_2, np.array(x.array), h), [x.value],
             dtype, valid=good_h and perturbable, check_dtype=False,
             scale_call=lambda: np.full(x.array.shape, 1.0 / h))
    batched_ok = good_h and x.array.dtype.kind == "f" and x.array.dtype.itemsize <= 8
    fuzz(lambda: G.numerical_gradient_batched(
             lambda p: np.sum(np.asarray(p, np.float64) ** 2, axis=tuple(range(1, p.ndim))),
             x.value, h),
         lambda: RG.numerical_gradient_batched(
             lambda p: np.sum(np.asarray(p, np.float64) ** 2, axis=tuple(range(1, p.ndim))),
             x.array, h),
         [x.value], None, valid=batched_ok, check_dtype=False,
         scale_call=lambda: np.full(x.array.shape, 1.0 / h))
    fuzz(lambda: G.gradient_descent(_function_2, x.value, lr=0.1, step_num=3),
         lambda: RG.gradient_descent(_function_2, x.ref(), lr=0.1, step_num=3), [x.value], None,
         **expect(x), check_dtype=False,
         scale_call=lambda: np.abs(x.ref()) + 1.0)


@FUZZ
@given(data=st.data(), n=st.integers(1, 3), d=st.integers(1, 3), k=st.integers(1, 3),
       use_labels=st.booleans(), exact=st.booleans(), moderate=st.booleans())
def test_network_numerical_gradient(data, n, d, k, use_labels, exact, moderate):
    """The compiled sweep against the book's brute force on moderate float64 values (a
    finite difference of huge or non-finite losses means nothing, and in float32 the brute
    force's own rounding exceeds the difference); other draws must only be answered cleanly."""
    activations = ["relu", "sigmoid", "identity"] + ([] if moderate else ["tanh"])
    activation = data.draw(st.sampled_from(activations), "activation")
    lam = data.draw(st.sampled_from([0.0, 0.1] + ([] if moderate else [np.nan, "0"])), "lam")
    dt = "float64" if moderate else data.draw(st.sampled_from(["float64", "float32"]), "dtype")
    vals = values(specials=False, scales=[1.0]) if moderate else values()
    kw = dict(vals=vals, mutate=not moderate, layouts=LAYOUTS)
    # a read-only W2 of one column: test_robustness.py::test_numerical_gradient_of_read_only_arrays
    no_readonly = [layout for layout in LAYOUTS if layout != "readonly"]
    W1, W2, b1, b2 = (data.draw(args(shape, dtypes=[dt], **{**kw, "layouts": layouts}), name)
                      for name, shape, layouts in (("W1", (d, 2), LAYOUTS),
                                                   ("W2", (2, k), no_readonly),
                                                   ("b1", (2,), LAYOUTS), ("b2", (k,), LAYOUTS)))
    x = data.draw(args((n, d), **kw), "x")
    t = data.draw(labels(n, k, layouts=kw["layouts"]) if use_labels else args((n, k), **kw), "t")
    kwargs = dict(activation=activation, exact_loss=exact, weight_decay_lambda=lam)
    contract = expect(W1, W2, b1, b2, x, t, ok=activation != "tanh" and lam in (0.0, 0.1))
    ok, fast = run_fast(lambda: G.network_numerical_gradient(
        [W1.value, W2.value], [b1.value, b2.value], x.value, t.value, **kwargs),
        [W1.value, W2.value, b1.value, b2.value, x.value, t.value], **contract)
    if not (ok and moderate and contract["valid"]):
        return
    t_ref = t.ref_labels(np.float64, (n, k)) if use_labels else t.ref(np.float64)
    ref = run_twin(lambda: RG.network_numerical_gradient(
        [W1.ref(), W2.ref()], [b1.ref(), b2.ref()], x.ref(np.float64), t_ref, **kwargs))
    assert ref is not None
    for f, r in zip(fast[0] + fast[1], ref[0] + ref[1]):
        np.testing.assert_allclose(f, r, rtol=1e-6, atol=1e-8)


@FUZZ
@given(n=st.integers(1, 3), f32=st.booleans())
def test_gradient_check(n, f32):
    net = N.TwoLayerNet(4, 3, 2, 0.5, dtype=np.float32 if f32 else np.float64, rng=n)
    x = np.random.default_rng(n).standard_normal((n, 4))
    diffs = G.gradient_check(net, x, np.arange(n) % 2)
    assert set(diffs) == set(net.params)
    assert all(isinstance(d, G.GradientDifference) and d.max_rel < 1e-2 for d in diffs.values())


# --- convolution and pooling (fastnn.layers, fastnn.util) ------------------------------------

WINDOW_INTS = st.one_of(st.integers(1, 3), st.integers(1, 3), st.sampled_from([0, -1, 1.5, True]))


def _window_ok(*values, minimum=1):
    return all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in values)


def _fits(shape, fh, fw, pad):
    return (len(shape) == 4 and _window_ok(fh, fw) and _window_ok(pad, minimum=0)
            and fh <= shape[2] + 2 * pad and fw <= shape[3] + 2 * pad)


def _out_hw(shape, fh, fw, stride, pad):
    return (shape[2] + 2 * pad - fh) // stride + 1, (shape[3] + 2 * pad - fw) // stride + 1


covers("Convolution")


@FUZZ
@given(data=st.data(), n=st.integers(0, 3), c=st.integers(1, 3), h=st.integers(1, 5),
       w=st.integers(1, 5), fn=st.integers(1, 3), fh=st.integers(1, 4), fw=st.integers(1, 4),
       stride=WINDOW_INTS, pad=st.sampled_from([0, 0, 1, 2, -1]), compute_dx=st.booleans())
def test_convolution(data, n, c, h, w, fn, fh, fw, stride, pad, compute_dx):
    x = data.draw(args((n, c, h, w)), "x")
    W = data.draw(args((fn, c, fh, fw)), "W")
    b = data.draw(args((fn,)), "b")
    window_ok = _window_ok(stride) and _window_ok(pad, minimum=0)
    if not window_ok:
        with pytest.raises((ValueError, TypeError)):
            L.Convolution(W.value, b.value, stride, pad)
        return
    fits = _fits(x.array.shape, *W.array.shape[2:4], pad) if W.array.ndim == 4 else False
    contract = expect(x, W, b, ok=isinstance(W.value, np.ndarray) and _fits((n, c, h, w), fh, fw, pad))
    refused = x.refused or W.refused or b.refused
    dtype = None if refused else policy_dtype(x.array.dtype, W.array.dtype, b.array.dtype)
    fast = L.Convolution(W.value, b.value, stride, pad)

    def twin(absolute=False):
        f = np.abs if absolute else (lambda a: a)
        layer = RC.Convolution(f(W.ref(dtype)), f(b.ref(dtype)), stride, pad)
        return layer, layer.forward(f(x.ref(dtype)))

    fuzz(lambda: fast.forward(x.value), lambda: twin()[1], [x.value, W.value, b.value], dtype,
         **contract, scale_call=lambda: twin(True)[1])
    if fast.x is None or not fits:  # forward refused its input
        return
    oh, ow = _out_hw(x.array.shape, *W.array.shape[2:4], stride, pad)
    dout = data.draw(args((x.array.shape[0], W.array.shape[0], oh, ow)), "dout")

    def twin_backward(absolute=False):
        layer, _ = twin(absolute)
        dx = layer.backward(np.abs(dout.ref()) if absolute else dout.ref())
        return dx if compute_dx else None, layer.dW, layer.db

    def fast_backward():
        return fast.backward(dout.value, compute_dx=compute_dx), fast.dW, fast.db

    fuzz(fast_backward, twin_backward, [dout.value, W.value, b.value],
         None if dout.refused else policy_dtype(dout.array.dtype, dtype),
         **expect(dout, ok=not x.mutated and not W.mutated),
         scale_call=lambda: twin_backward(True),
         tol_dtype=None if dout.refused else policy_dtype(dout.array.dtype))


covers("Pooling")


@FUZZ
@given(data=st.data(), n=st.integers(0, 3), c=st.integers(1, 3), h=st.integers(1, 6),
       w=st.integers(1, 6), ph=WINDOW_INTS, pw=st.integers(1, 3), stride=WINDOW_INTS,
       pad=st.sampled_from([0, 0, 1, -1]))
def test_pooling(data, n, c, h, w, ph, pw, stride, pad):
    if not (_window_ok(ph, pw, stride) and _window_ok(pad, minimum=0)):
        with pytest.raises((ValueError, TypeError)):
            L.Pooling(ph, pw, stride, pad)
        return
    x = data.draw(args((n, c, h, w)), "x")
    dtype = None if x.refused else policy_dtype(x.array.dtype)
    fast = L.Pooling(ph, pw, stride, pad)
    twin = RC.Pooling(ph, pw, stride, pad)
    fuzz(lambda: fast.forward(x.value), lambda: twin.forward(x.ref()), [x.value], dtype,
         **expect(x, ok=_fits((n, c, h, w), ph, pw, pad)))
    if fast.x is None or not _fits(x.array.shape, ph, pw, pad):
        return
    np.testing.assert_array_equal(fast.arg_max, twin.arg_max)
    dout = data.draw(args((x.array.shape[0], c) + _out_hw(x.array.shape, ph, pw, stride, pad)),
                     "dout")
    fuzz(lambda: fast.backward(dout.value), lambda: twin.backward(dout.ref()), [dout.value],
         None if dout.refused else policy_dtype(dout.array.dtype), **expect(dout))


covers("im2col", "col2im")


@FUZZ
@given(data=st.data(), n=st.integers(0, 3), c=st.integers(0, 3), h=st.integers(0, 5),
       w=st.integers(0, 5), fh=WINDOW_INTS, fw=st.integers(1, 4), stride=WINDOW_INTS,
       pad=st.sampled_from([0, 0, 1, -1]))
def test_im2col_col2im(data, n, c, h, w, fh, fw, stride, pad):
    window_ok = _window_ok(fh, fw, stride) and _window_ok(pad, minimum=0)
    shape = (n, c, h, w)
    x = data.draw(args(shape), "input_data")
    dtype = None if x.refused else policy_dtype(x.array.dtype)
    fits = window_ok and _fits(shape, fh, fw, pad)
    fuzz(lambda: U.im2col(x.value, fh, fw, stride, pad),
         lambda: RC.im2col(x.ref(), fh, fw, stride, pad), [x.value], dtype,
         **expect(x, ok=fits))
    if not fits:
        return
    oh, ow = _out_hw(shape, fh, fw, stride, pad)
    col = data.draw(args((n * oh * ow, c * fh * fw)), "col")
    fuzz(lambda: U.col2im(col.value, shape, fh, fw, stride, pad),
         lambda: RC.col2im(col.ref(), shape, fh, fw, stride, pad), [col.value],
         None if col.refused else policy_dtype(col.array.dtype), **expect(col))


covers("smooth_curve", "shuffle_dataset", "conv_output_size")


@FUZZ
@given(data=st.data(), n=st.integers(0, 12))
def test_util_helpers(data, n):
    """The book's plain helpers: their result or a clean error."""
    x = data.draw(args((n,), dtypes=ACCEPTED), "x")
    ok, y = run_fast(lambda: U.smooth_curve(x.value), [x.value], valid=x.valid and n >= 6)
    if ok:  # (the book's mirroring gives len(x) values only from 11 on)
        assert y.ndim == 1 and y.shape[0] <= n and (n < 11 or y.shape[0] == n)
    t = data.draw(args((n,), dtypes=ACCEPTED), "t")
    ok, (xs, ts) = run_fast(lambda: U.shuffle_dataset(x.array, t.array), [], valid=True) \
        if x.array.shape[:1] == t.array.shape[:1] and x.array.ndim and t.array.ndim \
        else (False, (None, None))
    if ok:
        assert sorted(map(repr, xs.tolist())) == sorted(map(repr, x.array.tolist()))
    size, fs, st_, pd = (data.draw(st.integers(-2, 9)) for _ in range(4))
    ok, out = run_fast(lambda: U.conv_output_size(size, fs, st_, pd), [], valid=st_ > 0)
    if ok:
        assert out == (size + 2 * pd - fs) / st_ + 1


# --- the layers' public cache attributes -----------------------------------------------------
#
# After a forward, each public attribute that a later backward (or forward) reads is
# reassigned, on fastnn's layer and on its twin alike, to a view, a copy, a subclass, another
# dtype, another shape or a non-array; then both run on.  fastnn must give the twin's answer
# on the new value (a subclass read as the plain array it holds, float16 computed in float32
# as the dtype policy says), or raise a TypeError/ValueError that names the attribute.  The
# sweeps run in child processes (test_cache_attributes), so that a crash fails one test.

def _strided(a):
    big = np.zeros(a.shape + (2,), dtype=a.dtype)
    big[..., 0] = a
    return big[..., 0]


# (name, make the new value from a copy of the old, the twin's value of it (default: the
# same), must succeed).  "must succeed": the old values, or a reordering of them, in a layout
# or a subclass.  Where the twin's answer is complex, object or masked, fastnn must refuse.
CACHE_VARIANTS = [
    ("copy", np.copy, None, True),
    ("reversed", lambda a: a[::-1], None, True),
    ("strided", _strided, None, True),
    ("fortran", np.asfortranarray, None, True),
    ("transposed", lambda a: a.T, None, False),
    ("subclass", lambda a: a.view(PlainSubclass), np.asarray, True),
    ("lying shape", lambda a: a.view(LyingShape), np.asarray, False),
    ("matrix", lambda a: np.matrix(a) if a.ndim == 2 else a, np.asarray, True),
    ("masked, nothing masked", np.ma.masked_array, np.asarray, True),
    ("masked, one masked", _masked_some, None, False),
    ("int64", lambda a: a.astype(np.int64), None, False),
    ("bool", lambda a: a.astype(bool), "policy", False),
    ("float16", lambda a: a.astype(np.float16), lambda a: a.astype(np.float32), False),
    ("float32", lambda a: a.astype(np.float32), None, False),
    ("complex", lambda a: a.astype(complex), None, False),
    ("object", lambda a: a.astype(object), None, False),
    ("fewer rows", lambda a: a[:-1], None, False),
    ("extra axis", lambda a: a[None], None, False),
    ("flattened", np.ravel, None, False),
    ("list", lambda a: a.tolist(), np.asarray, False),
    ("scalar", lambda a: 0.5, None, False),
    ("string", lambda a: "x", None, False),
    ("None", lambda a: None, None, False),
]
SCALAR_VARIANTS = [  # for counts and shapes that a backward reads (batch_size, input shapes)
    ("same", lambda a: a, None, True),
    ("numpy int", lambda a: np.int64(a) if isinstance(a, int) else a, None, True),
    ("list", lambda a: list(a) if isinstance(a, tuple) else a, None, False),
    ("reversed", lambda a: tuple(a)[::-1] if isinstance(a, tuple) else a, None, False),
    ("zero", lambda a: 0, None, False),
    ("negative", lambda a: -1, None, False),
    ("float", lambda a: 2.5, None, False),
    ("string", lambda a: "3", None, False),
    ("None", lambda a: None, None, False),
]


def _attr_named(message, attr):
    return re.search(rf"(?<!\w){re.escape(attr)}\b", message) is not None


def _outputs(layer, result, names):
    return [result] + [getattr(layer, n) for n in names]


@dataclass
class CacheCase:
    """A layer, its twin, how to run them, and which attributes to reassign when."""

    make: object  # api -> layer (api: fastnn.layers or the twin's module)
    inputs: object  # rng -> forward arguments
    dout: object  # (rng, forward output) -> dout
    before_backward: tuple  # attributes reassigned between forward and backward
    before_forward: tuple = ()  # parameters reassigned before a second forward
    grads: tuple = ()  # attributes that backward sets
    scalars: tuple = ()  # attributes that are counts or shapes, not arrays
    forward_kwargs: dict = None


def _rand(rng, *shape):
    return rng.standard_normal(shape)


def _rows(rng):
    """A batch size of 2 to 5 (one row would make a transposed cache look valid)."""
    return int(rng.integers(2, 6))


def _twin_api(name):
    return RC if name in ("Convolution", "Pooling") else RNORM if name in (
        "Dropout", "BatchNormalization") else RL


def _dense_case(transposed):
    return CacheCase(
        make=lambda api, rng: getattr(api, "Linear" if transposed else "Affine")(
            _rand(rng, 3, 4) if transposed else _rand(rng, 4, 3), _rand(rng, 3)),
        inputs=lambda rng: (_rand(rng, _rows(rng), 4),),
        dout=lambda rng, out: _rand(rng, *out.shape),
        before_backward=("x", "W"), before_forward=("W", "b"), grads=("dW", "db"),
        scalars=("original_x_shape",))


def _labels_or_one_hot(rng):
    t = rng.integers(0, 3, 4)
    return t if rng.integers(2) else np.eye(3)[t]


CACHE_CASES = {
    "Relu": CacheCase(lambda api, rng: api.Relu(), lambda rng: (_rand(rng, _rows(rng), 3),),
                      lambda rng, out: _rand(rng, *out.shape), ("mask",)),
    "Sigmoid": CacheCase(lambda api, rng: api.Sigmoid(), lambda rng: (_rand(rng, _rows(rng), 3),),
                         lambda rng, out: _rand(rng, *out.shape), ("out",)),
    "Affine": _dense_case(False),
    "Linear": _dense_case(True),
    "SoftmaxWithLoss": CacheCase(lambda api, rng: api.SoftmaxWithLoss(),
                                 lambda rng: (_rand(rng, 4, 3), _labels_or_one_hot(rng)),
                                 lambda rng, out: 1, ("y", "t")),
    "SigmoidWithLoss": CacheCase(lambda api, rng: api.SigmoidWithLoss(),
                                 lambda rng: (_rand(rng, 4, 3),
                                              rng.integers(0, 2, (4, 3)).astype(float)),
                                 lambda rng, out: 1, ("y", "t")),
    "Dropout": CacheCase(lambda api, rng: api.Dropout(0.4, rng=3),
                         lambda rng: (_rand(rng, _rows(rng), 3),),
                         lambda rng, out: _rand(rng, *out.shape), ("mask",)),
    "BatchNormalization": CacheCase(
        lambda api, rng: api.BatchNormalization(1 + _rand(rng, 6), _rand(rng, 6)),
        # (at least 3 rows: at 2, dx is rounding noise, test_normalization.py says why)
        lambda rng: (_rand(rng, _rows(rng) + 1, 6) if rng.integers(2) else
                     _rand(rng, _rows(rng) + 1, 1, 2, 3),),
        lambda rng, out: _rand(rng, *out.shape), ("xn", "std", "xc", "gamma"),
        ("gamma", "beta", "running_mean", "running_var"), ("dgamma", "dbeta"),
        ("batch_size", "input_shape")),
    "Convolution": CacheCase(
        lambda api, rng: api.Convolution(_rand(rng, 2, 3, 2, 2), _rand(rng, 2), 1, 1),
        lambda rng: (_rand(rng, _rows(rng) - 1, 3, 4, 3 + rng.integers(3)),),
        lambda rng, out: _rand(rng, *out.shape), ("x", "W", "col", "col_W"), ("W", "b"),
        ("dW", "db")),
    "Pooling": CacheCase(lambda api, rng: api.Pooling(2, 2, 2, 0),
                         lambda rng: (_rand(rng, _rows(rng) - 1, 3, 4, 4 + rng.integers(3)),),
                         lambda rng, out: _rand(rng, *out.shape), ("x", "arg_max")),
}


def _run_pair(fast_call, twin_call, attr, variant, must_succeed, tol_dtype=None):
    """One reassignment: fastnn's result against the twin's, or a clean error naming attr."""
    where = f"{attr} := {variant}"
    try:
        fast = fast_call()
    except (TypeError, ValueError) as exc:
        assert str(exc) and _attr_named(str(exc), attr), \
            f"{where}: {type(exc).__name__} does not name {attr!r}: {exc}"
        assert not must_succeed, f"{where}: refused: {type(exc).__name__}: {exc}"
        return
    except Exception as exc:  # noqa: BLE001 (the contract: nothing but these two)
        raise AssertionError(f"{where}: {type(exc).__name__}: {exc}") from exc
    ref = run_twin(twin_call)
    assert ref is not None, f"{where}: accepted what the twin cannot compute"
    for i, (f, r) in enumerate(zip(fast, ref)):
        if f is None or r is None:
            assert f is None and r is None, f"{where}: output {i}"
            continue
        assert not np.ma.is_masked(r), f"{where}: accepted masked entries"
        f, r = np.asarray(f), np.asarray(r)
        assert r.dtype.kind in "biuf", f"{where}: accepted, the twin computes in {r.dtype}"
        assert_close(f, r, f.dtype, what=f"{where}: output {i}", check_dtype=False,
                     tol_dtype=tol_dtype or f.dtype)


def check_cache_attributes(name, seed):
    """Every reassignment of every cached attribute of layer ``name``."""
    case = CACHE_CASES[name]
    twin_api = _twin_api(name)
    kwargs = case.forward_kwargs or {}

    def fresh():
        rng = np.random.default_rng(seed)
        fast, twin = case.make(L, rng), case.make(twin_api, np.random.default_rng(seed))
        inputs = case.inputs(rng)
        out = fast.forward(*inputs, **kwargs)
        twin_out = run_twin(lambda: twin.forward(*(np.copy(a) for a in inputs), **kwargs))
        assert_close(out, twin_out, None, what=f"{name}.forward", check_dtype=False,
                     tol_dtype=np.asarray(out).dtype)
        return fast, twin, inputs, case.dout(rng, np.asarray(out))

    def backward(layer, dout):
        return _outputs(layer, layer.backward(np.copy(dout) if isinstance(dout, np.ndarray)
                                              else dout), case.grads)

    def forward_backward(layer, inputs, dout):
        out = layer.forward(*(np.copy(a) for a in inputs), **kwargs)
        return [out] + backward(layer, dout)

    plans = ([(a, "backward", CACHE_VARIANTS) for a in case.before_backward]
             + [(a, "forward", CACHE_VARIANTS) for a in case.before_forward]
             + [(a, "backward", SCALAR_VARIANTS) for a in case.scalars])
    for attr, when, variants in plans:
        for variant, make, twin_of, must_succeed in variants:
            fast, twin, inputs, dout = fresh()
            old = getattr(twin, attr)
            copy_of = (lambda: np.array(old)) if isinstance(old, np.ndarray) else lambda: old
            try:
                value = make(copy_of())
            except Exception:  # noqa: BLE001 (np.matrix of a 4-D array: no such variant)
                continue
            twin_value = make(copy_of())
            if twin_of == "policy":  # bool values in place of numbers compute in float64
                kind = getattr(old, "dtype", np.dtype(bool)).kind
                twin_value = twin_value.astype(np.float64) if kind == "f" else twin_value
            elif callable(twin_of):
                twin_value = twin_of(twin_value)
            try:
                setattr(fast, attr, value)
            except (TypeError, ValueError) as exc:  # refused on assignment: also clean
                assert _attr_named(str(exc), attr) and not must_succeed, f"{attr}: {exc}"
                continue
            setattr(twin, attr, twin_value)
            if when == "backward":
                calls = (lambda: backward(fast, dout), lambda: backward(twin, dout))
            else:
                calls = (lambda: forward_backward(fast, inputs, dout),
                         lambda: forward_backward(twin, inputs, dout))
            # the twin rounds in float32 when a float32 value meets a Python float
            tol = np.float32 if variant in ("float16", "float32") else None
            _run_pair(*calls, attr, f"{variant} (then {when})", must_succeed, tol)


def run_isolated(code, timeout=120):
    """Run ``code`` in a fresh interpreter with tests/ on sys.path; a crash or a hang fails
    the test (test_untrusted_arrays.py runs its own the same way)."""
    tests = str(Path(__file__).resolve().parent)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, cwd=tests,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              filter(None, [tests, os.environ.get("PYTHONPATH")]))})
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-6000:]}"


@pytest.mark.parametrize("name", sorted(CACHE_CASES))
def test_cache_attributes(name):
    """Each layer's sweep in a child process, over shapes and values drawn by hypothesis."""
    run_isolated(f"""
        import warnings
        warnings.simplefilter("ignore")
        from hypothesis import given, settings, strategies as st
        import test_fuzz
        given(st.integers(0, 2**16))(settings(max_examples=3, derandomize=True,
                                              deadline=None, database=None)(
            lambda seed: test_fuzz.check_cache_attributes({name!r}, seed)))()
    """)


def test_every_layer_with_a_cache_is_swept():
    """A new layer class that keeps state between forward and backward must join
    CACHE_CASES (the graph nodes of chapter 5 are plain arithmetic, tested above)."""
    stateless = {"MulLayer", "AddLayer", "SquareLayer", "Identity"}
    assert set(L.__all__) - stateless == set(CACHE_CASES)


# --- coverage --------------------------------------------------------------------------------

EXEMPT = set()  # the command-line front ends live in fastnn.__main__ (tests/test_cli.py)


@pytest.mark.parametrize("module", [F, L, N, O, G, U], ids=lambda m: m.__name__)
def test_every_public_name_is_fuzzed(module):
    missing = set(module.__all__) - FUZZED - EXEMPT
    assert not missing, f"public names of {module.__name__} without a fuzz test: {missing}"
