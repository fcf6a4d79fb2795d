"""fastnn.gradient: numerical differentiation, gradient descent, the compiled network sweep."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastnn import gradient as G
from fastnn import nets as N
from fastnn.reference import gradient as RG
from fastnn.reference import nets as RN

from conftest import SHARED_DATASETS

MNIST_DIR = SHARED_DATASETS / "mnist"
H = 1e-4


def sum_of_squares(x):
    return np.sum(x ** 2)


def normwise(fast, ref):
    """max |fast - ref| / max |ref|: a near-zero entry's own rounding does not count."""
    fast, ref = np.asarray(fast, np.float64), np.asarray(ref, np.float64)
    scale = np.max(np.abs(ref))
    return np.max(np.abs(fast - ref)) / scale if scale > 0 else np.max(np.abs(fast))


# ---------------------------------------------------------------- numerical_diff / gradient

@pytest.mark.parametrize("x", [-3.0, -0.5, 0.0, 1.0, 2.5, 10.0])
def test_numerical_diff_of_square(x):
    central = G.numerical_diff(lambda u: u ** 2, x)
    forward = G.numerical_diff(lambda u: u ** 2, x, method="forward")
    # central: ((x+h)^2 - (x-h)^2) / 2h = 2x exactly; only rounding (~eps x^2 / h) remains
    assert central == pytest.approx(2 * x, abs=1e-8)
    # forward: (2xh + h^2) / h = 2x + h, the O(h) bias of the one-sided difference
    assert forward - 2 * x == pytest.approx(H, abs=1e-8)
    assert central == RG.numerical_diff(lambda u: u ** 2, x)
    assert forward == RG.numerical_diff(lambda u: u ** 2, x, method="forward")


def test_numerical_diff_validates():
    with pytest.raises(ValueError, match="method"):
        G.numerical_diff(np.sin, 1.0, method="backward")
    for h in (0, -1e-4, np.inf, np.nan):
        with pytest.raises(ValueError, match="h"):
            G.numerical_diff(np.sin, 1.0, h=h)
    with pytest.raises(TypeError, match="h"):
        G.numerical_diff(np.sin, 1.0, h="1e-4")


@pytest.mark.parametrize("point, expected", [((3.0, 4.0), (6, 8)), ((0.0, 2.0), (0, 4)),
                                             ((3.0, 0.0), (6, 0))])
def test_gradient_of_sum_of_squares(point, expected):
    x = np.array(point)
    grad = G.numerical_gradient(sum_of_squares, x)
    np.testing.assert_allclose(grad, expected, atol=1e-6)
    np.testing.assert_array_equal(grad, RG.numerical_gradient(sum_of_squares, np.array(point)))
    batched = G.numerical_gradient_batched(lambda P: np.sum(P ** 2, axis=1), x)
    np.testing.assert_array_equal(batched, grad)


def test_numerical_gradient_2d_row_by_row():
    X = np.array([[3.0, 4.0], [0.0, 2.0], [3.0, 0.0]])
    grad = G.numerical_gradient_2d(sum_of_squares, X)
    np.testing.assert_allclose(grad, [[6, 8], [0, 4], [6, 0]], atol=1e-6)
    np.testing.assert_array_equal(grad, RG.numerical_gradient_2d(sum_of_squares, X.copy()))
    np.testing.assert_array_equal(G.numerical_gradient_2d(sum_of_squares, X[0]), grad[0])
    with pytest.raises(ValueError, match="1-D"):
        G.numerical_gradient_2d(sum_of_squares, np.zeros((2, 2, 2)))


def test_numerical_gradient_any_shape_and_strided_views():
    X = np.arange(24, dtype=np.float64).reshape(2, 3, 4) / 7
    view = X[:, ::2, 1:]        # not contiguous: must be perturbed where it lives
    grad = G.numerical_gradient(lambda v: np.sum(np.sin(v) * v), view)
    expected = np.sin(view) + view * np.cos(view)
    assert grad.shape == view.shape
    np.testing.assert_allclose(grad, expected, atol=1e-7)
    scalar = np.array(1.5)
    assert G.numerical_gradient(lambda v: v ** 3, scalar) == pytest.approx(3 * 1.5 ** 2, rel=1e-7)


def test_gradient_descent_reaches_the_minimum():
    init = np.array([-3.0, 4.0])
    x = G.gradient_descent(sum_of_squares, init, lr=0.1, step_num=100)
    assert np.max(np.abs(x)) < 1e-6
    np.testing.assert_array_equal(init, [-3.0, 4.0])  # not moved, unlike the book's
    x2, path = G.gradient_descent(sum_of_squares, init, lr=0.1, step_num=100, return_path=True)
    assert path.shape == (101, 2)
    np.testing.assert_array_equal(path[0], init)
    np.testing.assert_array_equal(path[-1], x2)
    np.testing.assert_array_equal(x2, x)
    ref_x, ref_path = RG.gradient_descent(sum_of_squares, init, lr=0.1, step_num=100,
                                          return_path=True)
    np.testing.assert_array_equal(path, ref_path)
    # integer starting points work (as float64); float32 ones stay float32
    assert G.gradient_descent(sum_of_squares, [-3, 4], lr=0.1).dtype == np.float64
    assert G.gradient_descent(sum_of_squares, init.astype(np.float32), lr=0.1).dtype == np.float32
    assert G.gradient_descent(sum_of_squares, init, step_num=0, return_path=True)[1].shape == (1, 2)
    with pytest.raises(ValueError, match="step_num"):
        G.gradient_descent(sum_of_squares, init, step_num=-1)
    with pytest.raises(ValueError, match="lr"):
        G.gradient_descent(sum_of_squares, init, lr=np.nan)


# ---------------------------------------------------------------- the array is left alone

def awkward_array():
    """Values whose bits a careless restore would change: -0.0, a NaN payload, a denormal."""
    x = np.array([1.5, -0.0, 5e-324, 1e300, -7.25, 0.0])
    bits = x.view(np.uint64)
    bits[5] = 0x7FF8_0000_DEAD_BEEF  # a quiet NaN with a payload
    return x


def test_array_restored_bit_for_bit():
    x = awkward_array()
    before = x.tobytes()
    G.numerical_gradient(lambda v: float(np.nansum(v[:2])), x)
    assert x.tobytes() == before
    X = awkward_array().reshape(2, 3)
    G.numerical_gradient_2d(lambda v: float(np.nansum(v)), X)
    assert X.tobytes() == before


@pytest.mark.parametrize("fail_at", [1, 2, 5])
def test_array_restored_when_f_raises(fail_at):
    x = awkward_array()
    before = x.tobytes()
    calls = []

    def f(v):
        calls.append(1)
        if len(calls) == fail_at:
            raise RuntimeError("boom")
        return 0.0

    with pytest.raises(RuntimeError, match="boom"):
        G.numerical_gradient(f, x)
    assert x.tobytes() == before


@pytest.mark.parametrize("fn", [G.numerical_gradient, G.numerical_gradient_2d,
                                G.numerical_gradient_batched])
def test_integer_arrays_refused(fn):
    with pytest.raises(TypeError, match="float"):
        fn(sum_of_squares, np.array([3, 4]))
    with pytest.raises(TypeError, match="float"):
        fn(sum_of_squares, np.array([3, 4], dtype=np.complex128))


def test_non_arrays_and_read_only_arrays_refused():
    with pytest.raises(TypeError, match="NumPy array"):
        G.numerical_gradient(sum_of_squares, [3.0, 4.0])
    x = np.array([3.0, 4.0])
    x.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        G.numerical_gradient(sum_of_squares, x)


# ---------------------------------------------------------------- the vectorised form

@given(shape=st.lists(st.integers(1, 4), min_size=0, max_size=3),
       dtype=st.sampled_from([np.float32, np.float64]),
       chunk=st.sampled_from([None, 1, 2, 3, 7]),
       seed=st.integers(0, 2 ** 16))
def test_batched_equals_loop(shape, dtype, chunk, seed):
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    axes = tuple(range(1, x.ndim + 1))
    calls = []

    def f_stack(P):
        calls.append(len(P))
        return np.sum(np.sin(P) * P ** 2, axis=axes)

    before = x.tobytes()
    fast = G.numerical_gradient_batched(f_stack, x, chunk_size=chunk)
    assert x.tobytes() == before
    assert sum(calls) == 2 * x.size        # every point evaluated once, in stacks
    assert len(calls) == (1 if chunk is None else -(-x.size // chunk))
    loop = G.numerical_gradient(lambda v: f_stack(v[np.newaxis])[0], x.copy())
    assert fast.dtype == x.dtype and fast.shape == x.shape
    np.testing.assert_array_equal(fast, loop)


def test_batched_checks_f_and_chunk_size():
    with pytest.raises(ValueError, match="one value per point"):
        G.numerical_gradient_batched(lambda P: np.sum(P), np.ones(3))
    for bad, error in ((0, ValueError), (-2, ValueError), (1.5, TypeError), (True, TypeError)):
        with pytest.raises(error, match="chunk_size"):
            G.numerical_gradient_batched(lambda P: P.sum(axis=1), np.ones(3), chunk_size=bad)


# ---------------------------------------------------------------- the network sweep

def make_nets(kind, dtype=np.float64, activation="relu", lam=0.0, exact=False, seed=0,
              scale=None):
    """A fastnn network and its reference twin holding the same parameters."""
    if kind == "two":
        args = (20, 8, 4)
        kw = dict(weight_init_std=0.1 if scale is None else scale)
    else:
        args = (20, [8, 6, 5], 4)
        kw = dict(activation=activation, weight_decay_lambda=lam)
        if scale is not None:
            kw["weight_init_std"] = scale
    fast = (N.TwoLayerNet if kind == "two" else N.MultiLayerNet)(
        *args, dtype=dtype, rng=seed, exact_loss=exact, **kw)
    ref = (RN.TwoLayerNet if kind == "two" else RN.MultiLayerNet)(
        *args, dtype=dtype, rng=seed, exact_loss=exact, **kw)
    # nonzero biases: with zero ones a row whose ReLUs are all off puts the next layer
    # exactly on the kink, where the central difference sees half the slope and backprop none
    rng = np.random.default_rng(seed + 1)
    for key, value in fast.params.items():
        if key.startswith("b"):
            value[...] = 0.1 * rng.standard_normal(value.shape)
        ref.params[key][...] = value
    return fast, ref


def batch(rng, n=5, d=20, k=4, one_hot=False, dtype=np.float64):
    x = rng.standard_normal((n, d)).astype(dtype)
    x[rng.random(x.shape) < 0.3] = 0  # zero inputs: rows the sweep skips
    t = rng.integers(0, k, size=n)
    return x, (np.eye(k)[t] if one_hot else t)


NET_CASES = [
    ("two", "relu", 0.0, False), ("two", "relu", 0.0, True),
    ("multi", "relu", 0.0, False), ("multi", "sigmoid", 0.0, False),
    ("multi", "relu", 0.1, False), ("multi", "sigmoid", 0.05, True),
    ("multi", "identity", 0.0, False),
]


@pytest.mark.parametrize("kind, activation, lam, exact", NET_CASES)
@pytest.mark.parametrize("one_hot", [False, True])
def test_network_sweep_matches_the_brute_force(rng, kind, activation, lam, exact, one_hot):
    fast, ref = make_nets(kind, activation=activation, lam=lam, exact=exact)
    x, t = batch(rng, one_hot=one_hot)
    got = fast.numerical_gradient(x, t)
    want = ref.numerical_gradient(x, t)
    assert list(got) == list(want)
    for key in want:
        assert got[key].dtype == np.float64
        # the brute force's own rounding, ~eps * loss / h ~ 1e-12, is what is left
        assert normwise(got[key], want[key]) < 1e-7, key


@pytest.mark.parametrize("activation, lam, exact", [("sigmoid", 0.0, False), ("relu", 0.0, True),
                                                   ("relu", 0.1, False)])
def test_float32_network_sweep(rng, activation, lam, exact):
    """float32 parameters: perturbed in float32 as the book does, differenced in float64."""
    fast, ref = make_nets("multi", dtype=np.float32, activation=activation, lam=lam,
                          exact=exact)
    x, t = batch(rng, dtype=np.float32)
    got = fast.numerical_gradient(x, t)
    if lam == 0:
        # The twin fed float64 inputs computes the loss in float64 (NumPy promotion) while
        # it still stores p + h and p - h in float32: the same finite differences, with only
        # the float64 brute force's rounding (~1e-12) and our final rounding to float32
        # (2^-24).  (With weight decay its float32 sum of W**2 would add float32 noise.)
        Ws = [fast.params[f"W{i}"] for i in range(1, 5)]
        bs = [fast.params[f"b{i}"] for i in range(1, 5)]
        dWs, dbs = RG.network_numerical_gradient(Ws, bs, x.astype(np.float64), t, activation,
                                                 exact)
        for i, (dW, db) in enumerate(zip(dWs, dbs), start=1):
            assert got[f"W{i}"].dtype == np.float32
            assert normwise(got[f"W{i}"], dW) < 2e-7 and normwise(got[f"b{i}"], db) < 2e-7
    # The all-float32 brute force differences two float32 losses: each carries a few ulp of
    # the loss (~1e-7) of rounding, so every entry is off by ~ulp(L) / 2h ~ 1e-3 -- its noise,
    # not ours.  Allow 16 ulps of the loss per entry (observed: up to 3.5).
    want = ref.numerical_gradient(x, t)
    loss = np.float32(ref.loss(x, t))
    noise = 16 * np.spacing(loss) / (2 * H)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=0, atol=noise, err_msg=key)


@pytest.mark.parametrize("kind, activation", [("two", "relu"), ("multi", "relu"),
                                              ("multi", "sigmoid")])
def test_backprop_agrees_with_numerical_gradient(rng, kind, activation):
    x, t = batch(rng)
    scale = 0.1 if kind == "two" else None
    exact_net, _ = make_nets(kind, activation=activation, exact=True, scale=scale)
    for key, d in G.gradient_check(exact_net, x, t).items():
        assert d.max_abs < 1e-8, (key, d)
    # the book's +1e-7 inside the log: its derivative is not (y - t) / N, off by ~1e-7 / y
    book_net, _ = make_nets(kind, activation=activation, scale=scale)
    diffs = G.gradient_check(book_net, x, t)
    for key, d in diffs.items():
        assert d.max_abs < 1e-5, (key, d)
        assert d.mean_abs <= d.max_abs and d.max_rel <= 1


def test_network_sweep_leaves_its_inputs_alone(rng):
    fast, _ = make_nets("multi", activation="sigmoid", lam=0.1)
    x, t = batch(rng)
    before = {k: v.tobytes() for k, v in fast.params.items()}
    x_before, t_before = x.tobytes(), t.tobytes()
    fast.numerical_gradient(x, t)
    assert {k: v.tobytes() for k, v in fast.params.items()} == before
    assert x.tobytes() == x_before and t.tobytes() == t_before


@pytest.mark.parametrize("t_kind", ["labels", "one-hot"])
def test_network_sweep_read_only_inputs(rng, t_kind):
    Ws, bs = sweep_args(rng, [5, 4, 3, 3], 0.5)
    x, t = rng.standard_normal((3, 5)), np.array([0, 2, 1])
    if t_kind == "one-hot":  # and one sample: x.T of a (1, 5) array is a view, not a copy
        x, t = x[:1], t[:1]
        t = np.eye(3)[t]
    want = G.network_numerical_gradient(Ws, bs, x, t, "sigmoid")
    for a in Ws + bs + [x, t]:
        a.flags.writeable = False
    got = G.network_numerical_gradient(Ws, bs, x, t, "sigmoid")
    for g, w in zip(got[0] + got[1], want[0] + want[1]):
        np.testing.assert_array_equal(g, w)


def test_network_sweep_single_sample_and_nd_input(rng):
    fast, ref = make_nets("multi", activation="relu")
    x, t = batch(rng, n=1)
    one = fast.numerical_gradient(x[0], t[0])
    np.testing.assert_array_equal(one["W1"], fast.numerical_gradient(x, t)["W1"])
    x4, t4 = batch(rng, n=3)
    nd = fast.numerical_gradient(x4.reshape(3, 4, 5), t4)   # flattened as Affine does
    np.testing.assert_array_equal(nd["W2"], fast.numerical_gradient(x4, t4)["W2"])


def sweep_args(rng, sizes, scale):
    Ws = [scale * rng.standard_normal((a, b)) for a, b in zip(sizes[:-1], sizes[1:])]
    bs = [0.5 * rng.standard_normal(b) for b in sizes[1:]]
    return Ws, bs


@given(sizes=st.lists(st.integers(1, 5), min_size=2, max_size=5),
       n=st.integers(1, 4),
       activation=st.sampled_from(["relu", "sigmoid", "identity"]),
       exact=st.booleans(), soft=st.booleans(),
       lam=st.sampled_from([0.0, 0.3]),
       # large steps and weights leave the power series for libm (term count 0)
       h=st.sampled_from([1e-4, 1e-2, 0.3]), scale=st.sampled_from([0.3, 3.0, 40.0]),
       seed=st.integers(0, 2 ** 16))
def test_network_sweep_property(sizes, n, activation, exact, soft, lam, h, scale, seed):
    rng = np.random.default_rng(seed)
    Ws, bs = sweep_args(rng, sizes, scale)
    x = rng.standard_normal((n, sizes[0]))
    x[rng.random(x.shape) < 0.3] = 0
    k = sizes[-1]
    if soft:  # soft targets, rows summing to 1, some entries 0
        t = rng.random((n, k)) * (rng.random((n, k)) < 0.7)
        t /= np.maximum(t.sum(axis=1, keepdims=True), 1e-12)
    else:
        t = rng.integers(0, k, size=n)
    got = G.network_numerical_gradient(Ws, bs, x, t, activation, exact, lam, h)
    want = RG.network_numerical_gradient(Ws, bs, x, t, activation, exact, lam, h)
    # The brute force's own rounding: its losses carry ~eps of the magnitudes summed into
    # the logits (and of the weight decay), and their difference is divided by 2h.
    size = np.abs(x)
    for i, (W, b) in enumerate(zip(Ws, bs)):
        size = size @ np.abs(W) + np.abs(b)
        if activation == "sigmoid" and i < len(Ws) - 1:
            size = np.minimum(size, 1)
    magnitude = 1 + np.max(size) + lam * sum(np.sum(W ** 2) for W in Ws)
    for g, w in zip(got[0] + got[1], want[0] + want[1]):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-7, atol=64 * 2.2e-16 * magnitude / h)


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
@pytest.mark.parametrize("exact", [False, True])
def test_network_sweep_large_steps(rng, activation, exact):
    """Steps too large for the power series: moved sigmoids and row losses are recomputed."""
    Ws, bs = sweep_args(rng, [6, 5, 4, 3], 8.0)
    x, t = rng.standard_normal((4, 6)), rng.integers(0, 3, size=4)
    for h in (0.5, 3.0):
        got = G.network_numerical_gradient(Ws, bs, x, t, activation, exact, 0.1, h)
        want = RG.network_numerical_gradient(Ws, bs, x, t, activation, exact, 0.1, h)
        for g, w in zip(got[0] + got[1], want[0] + want[1]):
            assert np.all(np.isfinite(g))
            np.testing.assert_allclose(g, w, rtol=1e-7, atol=1e-9)


def test_network_sweep_many_rows_per_unit(rng):
    """More perturbed rows per unit than one GEMM chunk holds (4096): chunks are flushed."""
    Ws, bs = sweep_args(rng, [50, 3, 3, 2], 0.5)
    x, t = rng.standard_normal((50, 50)), rng.integers(0, 2, size=50)
    got = G.network_numerical_gradient(Ws, bs, x, t, "sigmoid")
    want = RG.network_numerical_gradient(Ws, bs, x, t, "sigmoid")
    for g, w in zip(got[0] + got[1], want[0] + want[1]):
        assert normwise(g, w) < 1e-7


def test_network_sweep_validates(rng):
    Ws, bs = sweep_args(rng, [3, 2], 1.0)
    x, t = rng.standard_normal((4, 3)), np.array([0, 1, 1, 0])
    with pytest.raises(TypeError, match="float32 or float64"):
        G.network_numerical_gradient([Ws[0].astype(int)], bs, x, t)
    with pytest.raises(ValueError, match="one bias per weight"):
        G.network_numerical_gradient(Ws, [], x, t)
    with pytest.raises(ValueError, match="W2"):
        G.network_numerical_gradient(Ws + [np.ones((3, 2))], bs + [np.ones(2)], x, t)
    with pytest.raises(ValueError, match="b1"):
        G.network_numerical_gradient(Ws, [np.ones(3)], x, t)
    with pytest.raises(ValueError, match="activation"):
        G.network_numerical_gradient(Ws, bs, x, t, activation="tanh")
    with pytest.raises(ValueError, match="features"):
        G.network_numerical_gradient(Ws, bs, x[:, :2], t)
    with pytest.raises(ValueError, match="empty batch"):
        G.network_numerical_gradient(Ws, bs, x[:0], t[:0])
    with pytest.raises(ValueError, match="label 2"):
        G.network_numerical_gradient(Ws, bs, x, [0, 1, 2, 0])
    with pytest.raises(ValueError, match="h"):
        G.network_numerical_gradient(Ws, bs, x, t, h=0.0)
    with pytest.raises(TypeError):
        G.network_numerical_gradient(Ws, bs, x.astype(complex), t)


# ---------------------------------------------------------------- MNIST and the command

needs_mnist = pytest.mark.skipif(not MNIST_DIR.is_dir(), reason=f"no MNIST at {MNIST_DIR}")


@needs_mnist
def test_mnist_two_layer_net_against_brute_force_entries():
    from fastnn.datasets import load_mnist

    (x_train, t_train), _ = load_mnist(data_dir=MNIST_DIR, download=False)
    x, t = x_train[:20], t_train[:20]
    np.random.seed(0)
    fast = N.TwoLayerNet(784, 50, 10)
    ref = RN.TwoLayerNet(784, 50, 10)
    for key, value in fast.params.items():
        ref.params[key][...] = value
    got = fast.numerical_gradient(x, t)
    # the book's brute force at a sample of entries (all of them would take seconds)
    rng = np.random.default_rng(1)
    for key, count in (("W1", 60), ("b1", 10), ("W2", 30), ("b2", 10)):
        p = ref.params[key]
        flat = rng.choice(p.size, size=count, replace=False)
        for idx in map(lambda i: np.unravel_index(i, p.shape), flat):
            tmp = p[idx]
            p[idx] = float(tmp) + H
            up = ref.loss(x, t)
            p[idx] = tmp - H
            down = ref.loss(x, t)
            p[idx] = tmp
            want = (up - down) / (2 * H)
            assert got[key][idx] == pytest.approx(want, rel=1e-7, abs=1e-11), (key, idx)
    # pixels that are 0 in every image give exactly 0, as in the brute force
    dead = np.all(x == 0, axis=0)
    assert dead.any() and np.all(got["W1"][dead] == 0)
