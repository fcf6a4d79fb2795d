"""fastnn.optim against its twins in fastnn.reference.optim: values, in-place semantics, errors,
names, and no allocation per step."""
import tracemalloc

import numpy as np
import pytest
from conftest import assert_twin
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fastnn import optim
from fastnn._kernels import _optim
from fastnn.reference import optim as ref

NAMES = list(optim.OPTIMIZERS)
DTYPES = [np.float32, np.float64]
DTYPE_IDS = ["f32", "f64"]
STATES = ("v", "h", "m")
# hyper-parameters away from the defaults, so that a kernel ignoring one of them fails
CUSTOM = {
    "sgd": dict(lr=0.1),
    "momentum": dict(lr=0.05, momentum=0.5),
    "nesterov": dict(lr=0.05, momentum=0.7),
    "adagrad": dict(lr=0.2),
    "rmsprop": dict(lr=0.02, decay_rate=0.9),
    "adam": dict(lr=0.01, beta1=0.8, beta2=0.99),
}
SHAPES = {"W1": (7, 5), "b1": (5,), "empty": (0,), "W2": (2, 3, 4), "scalar": ()}


class Layer:
    """Holds references to a net's parameter arrays, as the book's Affine holds W and b."""

    def __init__(self, W, b):
        self.W, self.b = W, b


def random_params(rng, dtype, shapes=SHAPES, scale=1.0):
    return {k: np.asarray(scale * rng.standard_normal(s), dtype) for k, s in shapes.items()}


def copies(d):
    return {k: np.array(a, copy=True) for k, a in d.items()}


def assert_states_match(fast, twin, dtype, what):
    for attr in STATES:
        if getattr(twin, attr, None) is None:
            continue
        fast_state, twin_state = getattr(fast, attr), getattr(twin, attr)
        assert fast_state.keys() == twin_state.keys(), what
        for key, s in fast_state.items():
            assert s.dtype == np.dtype(dtype), f"{what}: {attr}[{key!r}] has dtype {s.dtype}"
            assert_twin(s, twin_state[key], dtype, f"{what}: {attr}[{key!r}]")
    assert getattr(fast, "iter", None) == getattr(twin, "iter", None), what


def run_twins(name, kwargs, fast_params, grads_per_step, dtype):
    """Run both optimizers over the steps and compare params and state after each."""
    ref_params = copies(fast_params)
    fast, twin = optim.OPTIMIZERS[name](**kwargs), ref.OPTIMIZERS[name](**kwargs)
    for step, grads in enumerate(grads_per_step):
        fast.update(fast_params, grads)
        twin.update(ref_params, copies(grads))
        for key, p in fast_params.items():
            assert_twin(p, ref_params[key], dtype, f"{name} step {step}: params[{key!r}]")
        assert_states_match(fast, twin, dtype, f"{name} step {step}")
    return fast


def test_registry_pairs_every_optimizer_with_its_twin():
    assert optim.OPTIMIZERS.keys() == ref.OPTIMIZERS.keys()
    for name, cls in optim.OPTIMIZERS.items():
        assert cls.__name__ == ref.OPTIMIZERS[name].__name__
        assert getattr(optim, cls.__name__) is cls


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("custom", [False, True], ids=["defaults", "custom"])
def test_matches_twin_in_place(name, dtype, custom):
    rng = np.random.default_rng(NAMES.index(name) + 10 * custom)
    params = random_params(rng, dtype)
    originals = dict(params)
    layer = Layer(params["W1"], params["b1"])
    W1_before = params["W1"].copy()
    grads_per_step = [random_params(rng, dtype) for _ in range(6)]
    grads_before = [copies(g) for g in grads_per_step]

    fast = run_twins(name, CUSTOM[name] if custom else {}, params, grads_per_step, dtype)

    # the very arrays were updated: the dict and the layer still hold them
    assert all(params[k] is originals[k] for k in params)
    assert layer.W is params["W1"] and layer.b is params["b1"]
    assert not np.array_equal(layer.W, W1_before)
    for g, before in zip(grads_per_step, grads_before):
        for k in g:
            np.testing.assert_array_equal(g[k], before[k], err_msg=f"grads[{k!r}] modified")
    for attr in STATES:
        state = getattr(fast, attr, None)
        if state is not None:
            assert all(state[k].shape == params[k].shape for k in params)


@pytest.mark.parametrize("name", NAMES)
def test_state_is_created_at_the_first_update(name):
    opt = optim.OPTIMIZERS[name]()
    names = [a for a in STATES if hasattr(ref.OPTIMIZERS[name](), a)]
    assert all(getattr(opt, a) is None for a in names)
    params = {"W": np.ones((3, 2), np.float32), "b": np.ones(2)}
    opt.update(params, {"W": np.ones((3, 2), np.float32), "b": np.ones(2)})
    for a in names:
        state = getattr(opt, a)
        assert state.keys() == params.keys()
        for k, p in params.items():
            assert state[k].shape == p.shape and state[k].dtype == p.dtype
            assert state[k].flags.c_contiguous


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_no_array_allocated_per_step(name, dtype):
    rng = np.random.default_rng(3)
    shapes = {"W": (300, 100), "b": (100,)}
    params, grads = random_params(rng, dtype, shapes), random_params(rng, dtype, shapes, 0.01)
    array_bytes = params["W"].nbytes
    opt, twin = optim.OPTIMIZERS[name](), ref.OPTIMIZERS[name]()
    for _ in range(2):  # warm-up: the first update creates the state
        opt.update(params, grads)
        twin.update(params, grads)

    def peak_growth(update):
        tracemalloc.start()
        try:
            start, _ = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            update(params, grads)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        return peak - start

    # the measurement sees NumPy's arrays: the twin's temporaries
    assert peak_growth(twin.update) >= array_bytes
    growth = peak_growth(opt.update)
    assert growth < 4096, f"{name}: update allocated {growth} bytes (a param has {array_bytes})"


@pytest.mark.parametrize(
    "name_variant, cls",
    [("SGD", optim.SGD), ("momentum", optim.Momentum), ("NesteroV", optim.Nesterov),
     ("AdaGrad", optim.AdaGrad), ("RMSPROP", optim.RMSprop), ("adam", optim.Adam)],
)
def test_get_optimizer_resolves_names_in_any_case(name_variant, cls):
    assert type(optim.get_optimizer(name_variant)) is cls


def test_get_optimizer_hyperparameters_instances_and_classes():
    opt = optim.get_optimizer("Momentum", lr=0.1, momentum=0.5)
    assert (opt.lr, opt.momentum) == (0.1, 0.5)
    assert repr(opt) == "Momentum(lr=0.1, momentum=0.5)"
    assert optim.get_optimizer(opt) is opt
    twin = ref.Adam()
    assert optim.get_optimizer(twin) is twin  # any object with update(params, grads)
    adam = optim.get_optimizer(optim.Adam, lr=0.01)
    assert type(adam) is optim.Adam and adam.lr == 0.01
    with pytest.raises(TypeError, match="only be given with an optimizer name"):
        optim.get_optimizer(opt, lr=0.1)
    with pytest.raises(TypeError, match="update"):
        optim.get_optimizer(42)
    with pytest.raises(TypeError):
        optim.get_optimizer("sgd", momentum=0.9)


def test_get_optimizer_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="'adamw'") as info:
        optim.get_optimizer("adamw")
    for name in NAMES:
        assert repr(name) in str(info.value)


@pytest.mark.parametrize(
    "cls, kwargs, error, match",
    [
        (optim.SGD, dict(lr=0), ValueError, "lr must be > 0"),
        (optim.SGD, dict(lr=-0.1), ValueError, "lr must be > 0"),
        (optim.AdaGrad, dict(lr=float("nan")), ValueError, "lr must be finite"),
        (optim.Adam, dict(lr=float("inf")), ValueError, "lr must be finite"),
        (optim.SGD, dict(lr="0.1"), TypeError, "lr must be a real number"),
        (optim.SGD, dict(lr=None), TypeError, "lr must be a real number"),
        (optim.SGD, dict(lr=True), TypeError, "lr must be a real number"),
        (optim.Momentum, dict(momentum=1.0), ValueError, r"momentum must be in \[0, 1\)"),
        (optim.Nesterov, dict(momentum=-0.1), ValueError, r"momentum must be in \[0, 1\)"),
        (optim.Nesterov, dict(momentum=float("nan")), ValueError, "momentum must be finite"),
        (optim.RMSprop, dict(decay_rate=1), ValueError, r"decay_rate must be in \[0, 1\)"),
        (optim.Adam, dict(beta1=1.0), ValueError, r"beta1 must be in \[0, 1\)"),
        (optim.Adam, dict(beta2=-1e-3), ValueError, r"beta2 must be in \[0, 1\)"),
        (optim.Adam, dict(beta2=[0.9]), TypeError, "beta2 must be a real number"),
    ],
)
def test_bad_hyperparameters(cls, kwargs, error, match):
    with pytest.raises(error, match=match):
        cls(**kwargs)


def test_hyperparameters_are_checked_when_set_later():
    opt = optim.SGD(lr=np.float32(0.5))
    assert type(opt.lr) is float and opt.lr == 0.5
    opt.lr *= 0.1  # a schedule
    assert opt.lr == pytest.approx(0.05)
    with pytest.raises(ValueError, match="lr must be > 0"):
        opt.lr = 0.0
    assert opt.lr == pytest.approx(0.05)


def small_problem(dtype=np.float64):
    rng = np.random.default_rng(5)
    shapes = {"W": (4, 5), "b": (5,)}
    return random_params(rng, dtype, shapes), random_params(rng, dtype, shapes)


@pytest.mark.parametrize("name", NAMES)
def test_mismatched_keys_and_shapes_change_nothing(name):
    params, grads = small_problem()
    before = copies(params)
    opt = optim.OPTIMIZERS[name]()
    with pytest.raises(ValueError, match=r"grads lacks \['b'\]"):
        opt.update(params, {"W": grads["W"]})
    with pytest.raises(ValueError, match=r"grads has extra keys \['c'\]"):
        opt.update(params, {**grads, "c": grads["b"]})
    # 'W' comes first and is fine: it must not be updated when 'b' is refused
    with pytest.raises(ValueError, match=r"grads\['b'\] must have shape \(5,\), got \(4,\)"):
        opt.update(params, {"W": grads["W"], "b": grads["b"][:4]})
    with pytest.raises(ValueError, match=r"grads\['W'\] must have shape \(4, 5\), got \(5, 4\)"):
        opt.update(params, {"W": grads["W"].T, "b": grads["b"]})
    with pytest.raises(TypeError, match="params must be a dict"):
        opt.update([params["W"]], grads)
    for k in params:
        np.testing.assert_array_equal(params[k], before[k])
    assert all(getattr(opt, a, None) is None for a in STATES)
    assert getattr(opt, "iter", 0) == 0


def _strided(a):
    """``a``'s values in a view that is not contiguous (every other element of the last axis)."""
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    big[..., ::2] = a
    return big[..., ::2]


def _read_only(a):
    a.flags.writeable = False
    return a


def _byte_swapped(a):
    return a.astype(a.dtype.newbyteorder())


# Issue 12: strided, Fortran-ordered, float16 and byte-swapped parameters, which this test
# refused, are writable float arrays that the book's optimizers update; they are now updated
# in place by the book's NumPy expressions (test_any_writable_float_array_is_updated_in_place).
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "make, error, match",
    [
        (_read_only, ValueError, "read-only"),
        (lambda a: a.astype(np.int64), TypeError, "dtype int64"),
        (lambda a: a.astype(np.complex128), TypeError, "dtype complex128"),
        (lambda a: a.tolist(), TypeError, "must be a NumPy array"),
    ],
    ids=["read-only", "int64", "complex", "list"],
)
def test_param_that_cannot_be_updated_in_place_is_refused(name, make, error, match):
    params, grads = small_problem()
    params["W"] = make(params["W"].copy())
    before = np.array(params["b"], copy=True)
    with pytest.raises(error, match=r"params\['W'\].*" + match):
        optim.OPTIMIZERS[name]().update(params, grads)
    np.testing.assert_array_equal(params["b"], before)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize(
    "convert",
    [lambda g: g.astype(np.float32), lambda g: g.astype(np.float64),
     lambda g: np.round(10 * g).astype(np.int32), np.asfortranarray, _strided,
     lambda g: g.tolist(), _byte_swapped],
    ids=["f32", "f64", "int32", "fortran", "strided", "list", "byte-swapped"],
)
def test_grads_of_another_dtype_or_layout_are_converted(name, dtype, convert):
    params, grads = small_problem(dtype)
    rng = np.random.default_rng(9)
    given_grads = [{k: convert(rng.standard_normal(g.shape)) for k, g in grads.items()}
                   for _ in range(3)]
    # the documented semantics: each grad is first converted to its parameter's dtype
    fast = optim.OPTIMIZERS[name]()
    twin_params, twin = copies(params), ref.OPTIMIZERS[name]()
    for grads in given_grads:
        fast.update(params, grads)
        twin.update(twin_params, {k: np.asarray(g, dtype=dtype) for k, g in grads.items()})
    for k in params:
        assert params[k].dtype == np.dtype(dtype)
        assert_twin(params[k], twin_params[k], dtype, f"params[{k!r}]")


@pytest.mark.parametrize("name", NAMES)
def test_grad_sharing_memory_with_its_param_is_read_as_it_was(name):
    # degenerate, but must neither corrupt memory nor read half-updated values: each grad is
    # read as it was when update() was called
    base = np.random.default_rng(8).standard_normal(11)
    # grads["p"][i] is params["p"][i - 1], which a forward pass has already updated
    params = {"p": base[1:], "q": np.linspace(-1, 1, 6)}
    grads = {"p": base[:-1], "q": params["q"]}
    twin_params = copies(params)
    twin_grads = copies(grads)
    optim.OPTIMIZERS[name]().update(params, grads)
    ref.OPTIMIZERS[name]().update(twin_params, twin_grads)
    for k in params:
        assert_twin(params[k], twin_params[k], np.float64, k)


@pytest.mark.parametrize("name", [n for n in NAMES if n != "sgd"])
def test_parameters_that_changed_since_the_state_was_made_are_refused(name):
    params, grads = small_problem()
    opt = optim.OPTIMIZERS[name]()
    opt.update(params, grads)
    with pytest.raises(ValueError, match=r"params\['b'\] has shape \(6,\).*use a new optimizer"):
        opt.update({**params, "b": np.zeros(6)}, {**grads, "b": np.zeros(6)})
    with pytest.raises(ValueError, match=r"no state for it"):
        opt.update({**params, "c": np.zeros(2)}, {**grads, "c": np.zeros(2)})
    with pytest.raises(ValueError, match="dtype float32"):
        opt.update({k: p.astype(np.float32) for k, p in params.items()}, grads)


def test_kernel_ready_is_the_kernels_contract():
    p = np.zeros((3, 4))
    ok = np.ones((3, 4))
    assert _optim.kernel_ready(p, ok)
    assert _optim.kernel_ready(p, _read_only(np.ones((3, 4))))  # a grad is only read
    assert not _optim.kernel_ready(p, _read_only(np.ones((3, 4))), True)  # a state is written
    assert not _optim.kernel_ready(_read_only(np.zeros((3, 4))), ok)
    assert not _optim.kernel_ready(p, np.ones((4, 3)))
    assert not _optim.kernel_ready(p, np.ones(12))
    assert not _optim.kernel_ready(p, ok.astype(np.float32))
    assert not _optim.kernel_ready(p, np.asfortranarray(ok))
    assert not _optim.kernel_ready(p, _byte_swapped(ok))
    assert not _optim.kernel_ready(p.astype(np.int64), ok.astype(np.int64))
    assert not _optim.kernel_ready(p, ok.tolist())
    assert not _optim.kernel_ready(p, p)
    assert not _optim.kernel_ready(p[:2], p[1:])
    assert _optim.kernel_ready(p[:1], p[1:2])
    assert _optim.kernel_ready(np.zeros(0), np.zeros(0))


@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from(NAMES),
    f64=st.booleans(),
    shapes=st.lists(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
                    min_size=1, max_size=3),
    steps=st.integers(1, 3),
    data=st.data(),
)
def test_matches_twin_property(name, f64, shapes, steps, data):
    dtype = np.float64 if f64 else np.float32
    values = st.floats(-100, 100, width=32)

    def arrays():
        return {f"k{i}": data.draw(hnp.arrays(dtype, s, elements=values))
                for i, s in enumerate(shapes)}

    run_twins(name, {}, arrays(), [arrays() for _ in range(steps)], dtype)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "make",
    [_strided, np.asfortranarray, lambda a: a.astype(np.float16), _byte_swapped,
     lambda a: a.astype(np.float32)[::-1]],
    ids=["strided", "fortran", "float16", "byte-swapped", "reversed-f32"],
)
def test_any_writable_float_array_is_updated_in_place(name, make):
    """The book's ``params[key] -= ...`` updates any writable float array in place; so does
    fastnn, by the book's own expressions where no kernel takes the layout."""
    params, _ = small_problem()
    params["W"] = make(params["W"].copy())
    W = params["W"]
    layer = Layer(params["W"], params["b"])
    twin_params = {k: p.copy() for k, p in params.items()}  # same dtype and values, C order
    rng = np.random.default_rng(4)
    fast, twin = optim.OPTIMIZERS[name](), ref.OPTIMIZERS[name]()
    for _ in range(3):
        grads = {k: rng.standard_normal(p.shape) for k, p in params.items()}
        fast.update(params, grads)
        twin.update(twin_params, {k: g.astype(twin_params[k].dtype) for k, g in grads.items()})
    assert params["W"] is W and layer.W is W  # in place: the layer sees the update
    for k in params:
        assert params[k].dtype == twin_params[k].dtype
        # the same NumPy expressions on the same values: the same numbers
        np.testing.assert_array_equal(params[k], twin_params[k], err_msg=k)


BOOK_NAIVE = {"SGD": dict(lr=0.95), "Momentum": dict(lr=0.1), "AdaGrad": dict(lr=1.5),
              "Adam": dict(lr=0.3), "Nesterov": dict(lr=0.1), "RMSprop": dict(lr=0.3)}


@pytest.mark.parametrize("cls_name", list(BOOK_NAIVE))
def test_numbers_are_replaced_by_their_update_as_in_optimizer_compare_naive(cls_name):
    """ch06/optimizer_compare_naive.py: Python-float parameters, tuple-unpacked float grads;
    the book's ``params[key] -= ...`` replaces each number by its update."""
    def df(x, y):
        return x / 10.0, 2.0 * y

    paths = []
    for module in (optim, ref):
        opt = getattr(module, cls_name)(**BOOK_NAIVE[cls_name])
        params, grads = {"x": -7.0, "y": 2.0}, {"x": 0, "y": 0}
        path = []
        for _ in range(30):
            path.append((params["x"], params["y"]))
            grads["x"], grads["y"] = df(params["x"], params["y"])
            opt.update(params, grads)
        paths.append(path)
    fast, book = paths
    assert [tuple(map(type, p)) for p in fast] == [tuple(map(type, p)) for p in book]
    np.testing.assert_array_equal(np.array(fast), np.array(book))
    assert np.hypot(*fast[-1]) < np.hypot(-7.0, 2.0)  # moved towards the minimum at 0


def test_numbers_and_arrays_mix_and_bad_numbers_change_nothing():
    params = {"W": np.ones((2, 3)), "s": 1.5, "n": np.float32(2.0)}
    before = copies(params)
    opt = optim.Momentum(lr=0.1)
    with pytest.raises(ValueError, match=r"grads\['s'\] must have shape \(\), got \(2,\)"):
        opt.update(params, {"W": np.ones((2, 3)), "s": np.ones(2), "n": 1.0})
    with pytest.raises(TypeError, match=r"params\['b'\] must be a NumPy array"):
        opt.update({**params, "b": True}, {"W": np.ones((2, 3)), "s": 1.0, "n": 1.0, "b": 1.0})
    assert all(np.array_equal(params[k], before[k]) for k in params) and opt.v is None
    opt.update(params, {"W": np.ones((2, 3)), "s": 1.0, "n": np.array(1.0)})
    assert np.allclose(params["W"], 0.9) and params["s"] == pytest.approx(1.4)
    assert params["n"] == pytest.approx(1.9)
    with pytest.raises(TypeError, match="mutable dict"):
        from types import MappingProxyType
        optim.SGD().update(MappingProxyType({"s": 1.0}), {"s": 1.0})
