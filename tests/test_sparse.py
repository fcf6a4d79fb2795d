"""The first dense layer on a sparse batch (fastnn/_kernels/_sparse.pyx): the compression and
both products against NumPy for each compression body, over shapes, densities and special
values; when the path is taken and when it is refused; the networks on it against their twins
and against their own dense path; bad input."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastnn import nets as N
from fastnn._kernels import _sparse
from fastnn.reference import nets as RN

KERNELS = _sparse.kernels()
TOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}


@pytest.fixture(params=KERNELS)
def kernel(request):
    """Each compression body in turn (the CPU's choice restored after)."""
    _sparse.set_kernel(request.param)
    yield request.param
    _sparse.set_kernel(None)


def sparse_batch(rng, n, k, dtype, density=0.15):
    x = rng.standard_normal((n, k))
    x[rng.random((n, k)) >= density] = 0
    return x.astype(dtype)


def taken(x):
    """Whether the path takes batch ``x`` (_sparse.pyx's rule, restated)."""
    n, k = x.shape
    most = int(_sparse.MAX_DENSITY * n * k)
    return np.count_nonzero(x) <= most and np.count_nonzero(x[0]) * n <= 2 * most


def assert_close(got, want, dtype, scale):
    """|got - want| within the dtype's tolerance of the sum of the terms' magnitudes."""
    assert got.dtype == dtype
    bound = TOL[np.dtype(dtype)] * np.maximum(scale, np.finfo(dtype).tiny)
    assert np.all(np.abs(got.astype(np.float64) - want) <= bound)


def test_the_cpu_runs_avx2_where_it_has_it():
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        pytest.skip("no /proc/cpuinfo to say what the CPU has")
    _sparse.set_kernel(None)
    assert "scalar" in KERNELS
    assert ("avx2" in KERNELS) == ("avx2" in flags and "popcnt" in flags)
    assert _sparse.kernel() == ("avx2" if "avx2" in KERNELS else "scalar")


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 40), k=st.integers(1, 70), m=st.integers(1, 120),
       f32=st.booleans(), density=st.sampled_from([0.0, 0.05, 0.2, 0.3]),
       seed=st.integers(0, 2**16))
def test_products_match_numpy(n, k, m, f32, density, seed):
    """Every output width (narrower than a vector, vector tails, several tiles) and both
    bodies; float64 sums hold the float64 tolerance, float32 the float32 one."""
    dtype = np.float32 if f32 else np.float64
    rng = np.random.default_rng(seed)
    x = sparse_batch(rng, n, k, dtype, density)
    W = rng.standard_normal((k, m)).astype(dtype)
    d = rng.standard_normal((n, m)).astype(dtype)
    for name in KERNELS:
        _sparse.set_kernel(name)
        out = np.full((n, m), np.nan, dtype)
        dW = np.full((k, m), np.nan, dtype)
        assert _sparse.matmul(x, W, out) == taken(x)
        assert _sparse.matmul_tn(x, d, dW) == taken(x)
        if not taken(x):
            assert np.isnan(out).all() and np.isnan(dW).all()  # untouched
            continue
        x64 = x.astype(np.float64)
        assert_close(out, x64 @ W, dtype, np.abs(x64) @ np.abs(W))
        assert_close(dW, x64.T @ d, dtype, np.abs(x64).T @ np.abs(d))
    _sparse.set_kernel(None)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 12), k=st.integers(1, 40), f32=st.booleans(), seed=st.integers(0, 2**16))
def test_compression_is_numpys_nonzero(n, k, f32, seed):
    """The CSR lists each row's nonzeros in column order, the CSC each column's in row order:
    NaN and inf are kept, both zeros dropped; both bodies alike."""
    dtype = np.float32 if f32 else np.float64
    rng = np.random.default_rng(seed)
    x = sparse_batch(rng, n, k, dtype, 0.2)
    special = rng.random((n, k))
    x[special < 0.03] = np.nan
    x[(special >= 0.03) & (special < 0.05)] = -np.inf
    x[(special >= 0.05) & (special < 0.2)] = -0.0
    rows, cols = np.nonzero(x)
    results = []
    for name in KERNELS:
        _sparse.set_kernel(name)
        result = _sparse.compress(x)
        if not taken(x):
            assert result is None
            continue
        (val, col, ptr), (cval, crow, cptr) = result
        np.testing.assert_array_equal(col, cols)
        np.testing.assert_array_equal(ptr, np.searchsorted(rows, np.arange(n + 1)))
        np.testing.assert_array_equal(val, x[rows, cols])
        order = np.lexsort((rows, cols))
        np.testing.assert_array_equal(crow, rows[order])
        np.testing.assert_array_equal(cptr, np.searchsorted(cols[order], np.arange(k + 1)))
        np.testing.assert_array_equal(cval, x[rows[order], cols[order]])
        results.append(result)
    _sparse.set_kernel(None)
    for other in results[1:]:
        for a, b in zip(sum(results[0], ()), sum(other, ())):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_batches_are_refused(kernel, dtype):
    rng = np.random.default_rng(1)
    out = np.zeros((8, 3), dtype)
    W = np.ones((20, 3), dtype)
    assert not _sparse.matmul(sparse_batch(rng, 8, 20, dtype, 0.9), W, out)
    assert not out.any()  # untouched
    # a quarter is still taken, a little more is not
    x = np.zeros((8, 20), dtype)
    x[:, :5] = 1
    assert _sparse.matmul(x, W, out)
    x[3, 5] = 1
    assert not _sparse.matmul(x, W, np.zeros((8, 3), dtype))
    # a first row past half its share gives up at once, whatever the rest
    x = np.zeros((8, 20), dtype)
    x[0, :11] = 1
    assert not _sparse.matmul(x, W, np.zeros((8, 3), dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_non_finite_operands_keep_the_dense_products(kernel, dtype, bad):
    """0 * inf is NaN in a dense GEMM: with a non-finite W (or d) the path steps aside."""
    rng = np.random.default_rng(2)
    x = sparse_batch(rng, 6, 30, dtype)
    W = rng.standard_normal((30, 5)).astype(dtype)
    W[4, 2] = bad
    assert not _sparse.matmul(x, W, np.zeros((6, 5), dtype))
    d = rng.standard_normal((6, 5)).astype(dtype)
    assert _sparse.matmul_tn(x, d, np.zeros((30, 5), dtype))
    d[1, 3] = bad
    assert not _sparse.matmul_tn(x, d, np.zeros((30, 5), dtype))


def _nets(dtype, sizes=(784, 50, 10)):
    fast = N.MultiLayerNet(sizes[0], list(sizes[1:-1]), sizes[-1], dtype=dtype, rng=0,
                           weight_decay_lambda=0.01)
    twin = RN.MultiLayerNet(sizes[0], list(sizes[1:-1]), sizes[-1], dtype=dtype, rng=0,
                            weight_decay_lambda=0.01)
    return fast, twin


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sizes", [(784, 50, 10), (30, 7, 5, 3), (9, 100, 4)])
def test_networks_on_sparse_batches(kernel, dtype, sizes):
    """The step, the loss and the predictions on the sparse path, against the twin and
    against the same network's dense GEMMs."""
    rng = np.random.default_rng(3)
    x = sparse_batch(rng, 64, sizes[0], dtype)
    t = rng.integers(0, sizes[-1], 64)
    fast, twin = _nets(dtype, sizes)
    grads = {k: g.copy() for k, g in fast.gradient(x, t).items()}
    ws = fast._workspaces[64]
    assert ws.sparse.built
    loss, scores = fast.loss(x, t), fast.predict(x)
    assert ws.sparse.built
    twin_grads = twin.gradient(x, t)
    tol = TOL[np.dtype(dtype)] * 10
    for key in grads:
        np.testing.assert_allclose(grads[key], twin_grads[key], rtol=tol,
                                   atol=tol * np.abs(twin_grads[key]).max())
    np.testing.assert_allclose(loss, twin.loss(x, t), rtol=tol)
    np.testing.assert_allclose(scores, twin.predict(x), rtol=tol, atol=tol)
    sparse, ws.sparse = ws.sparse, None  # the dense path of the same network
    try:
        dense = fast.gradient(x, t)
        for key in grads:
            np.testing.assert_allclose(grads[key], dense[key], rtol=tol,
                                       atol=tol * np.abs(dense[key]).max())
    finally:
        ws.sparse = sparse


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_networks_with_non_finite_weights_on_sparse_batches(dtype):
    rng = np.random.default_rng(4)
    x = sparse_batch(rng, 16, 40, dtype)
    t = rng.integers(0, 3, 16)
    fast, twin = _nets(dtype, (40, 6, 3))
    for net in (fast, twin):
        net.params["W1"][5, 1] = np.inf
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(np.isnan(fast.predict(x)), np.isnan(twin.predict(x)))
        grads, twin_grads = fast.gradient(x, t), twin.gradient(x, t)
        for key in grads:
            np.testing.assert_array_equal(np.isnan(grads[key]), np.isnan(twin_grads[key]))
    assert not _sparse.matmul(x, fast.params["W1"], np.zeros((16, 6), dtype))


@pytest.mark.parametrize("sizes", [(784, 50, 10), (30, 7, 5, 3)])
def test_bf16_networks_on_sparse_batches(kernel, sizes):
    """In bf16 the sparse products read the rounded operands: the bf16 GEMMs' products, summed
    in float32 in another order, so the step agrees with the network's dense bf16 GEMMs to
    float32's rounding of those sums."""
    rng = np.random.default_rng(5)
    x = sparse_batch(rng, 64, sizes[0], np.float32)
    t = rng.integers(0, sizes[-1], 64)
    net = N.MultiLayerNet(sizes[0], list(sizes[1:-1]), sizes[-1], dtype=np.float32, rng=0,
                          precision="bf16")
    grads = {k: g.copy() for k, g in net.gradient(x, t).items()}
    ws = net._workspaces[64]
    assert ws.sparse.built
    loss, scores = net.loss(x, t), net.predict(x)
    sparse, ws.sparse = ws.sparse, None  # the same network on its dense bf16 GEMMs
    try:
        dense = net.gradient(x, t)
        for key in grads:
            np.testing.assert_allclose(grads[key], dense[key], rtol=1e-4,
                                       atol=1e-5 * np.abs(dense[key]).max())
        np.testing.assert_allclose(loss, net.loss(x, t), rtol=1e-5)
        np.testing.assert_allclose(scores, net.predict(x), rtol=1e-5, atol=1e-5)
    finally:
        ws.sparse = sparse


def test_bad_input():
    with pytest.raises(ValueError, match="n, K"):
        _sparse.Buffers(-1, 5, np.float64)
    with pytest.raises(TypeError, match="dtype"):
        _sparse.Buffers(3, 5, np.int32)
    with pytest.raises(ValueError, match="x: expected a 2-D"):
        _sparse.compress(np.zeros(5))
    with pytest.raises(TypeError, match="x: "):
        _sparse.matmul(np.zeros((2, 3), np.int64), np.zeros((3, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="C-contiguous"):
        _sparse.matmul(np.zeros((3, 4))[:, ::2], np.zeros((2, 2)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="W"):
        _sparse.matmul(np.zeros((2, 3)), np.zeros((4, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="out"):
        _sparse.matmul_tn(np.zeros((2, 3)), np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="name"):
        _sparse.set_kernel("avx9000")
    from fastnn._kernels import _network
    with pytest.raises(TypeError, match="sparse: expected a _sparse.Buffers"):
        _network.forward([np.ones((3, 2))], [np.ones(2)], np.ones((4, 3)), [np.ones((4, 2))],
                         0, None, "buffers")
    with pytest.raises(ValueError, match="sparse: buffers for up to 2 rows"):
        _network.forward([np.ones((3, 2))], [np.ones(2)], np.ones((4, 3)), [np.ones((4, 2))],
                         0, None, _sparse.Buffers(2, 3, np.float64))


@pytest.mark.parametrize("density", [0.15, 0.9])
@pytest.mark.parametrize("bad_weight", [False, True])
def test_float64_networks_widen_float32_batches(kernel, density, bad_weight):
    """A float64 network given float32 images computes on them as NumPy promotes them: the
    sparse path widens each nonzero, the dense one (a dense batch, a non-finite weight) a
    float64 copy; gradient, loss, predict and accuracy, over blocks of rows too."""
    rng = np.random.default_rng(6)
    x = sparse_batch(rng, 2100, 30, np.float32, density)  # past one block of predict's
    t = rng.integers(0, 4, 2100)
    fast, twin = _nets(np.float64, (30, 8, 4))
    if bad_weight:
        for net in (fast, twin):
            net.params["W1"][3, 2] = np.inf
    with np.errstate(all="ignore"):
        grads = {k: g.copy() for k, g in fast.gradient(x[:64], t[:64]).items()}
        twin_grads = twin.gradient(x[:64], t[:64])
        for key in grads:
            assert grads[key].dtype == np.float64
            np.testing.assert_allclose(grads[key], twin_grads[key], rtol=1e-11, atol=1e-13)
        np.testing.assert_allclose(fast.loss(x[:64], t[:64]), twin.loss(x[:64], t[:64]),
                                   rtol=1e-12)
        scores = fast.predict(x)
        np.testing.assert_allclose(scores, twin.predict(x), rtol=1e-11, atol=1e-13)
        assert fast.accuracy(x, t) == twin.accuracy(x, t)
    assert fast._workspaces[64].sparse.built == (density < 0.25)


def test_buffers_are_reused_and_bounded():
    """Buffers serve any batch of up to their rows; past the int32 indices of the kernels
    (n * K > 2**31 - 1) a batch is never compressed, only multiplied densely."""
    rng = np.random.default_rng(7)
    buffers = _sparse.Buffers(10, 30, np.float64)
    for n in (10, 3):
        x = sparse_batch(rng, n, 30, np.float64)
        W = rng.standard_normal((30, 4))
        out = np.empty((n, 4))
        assert _sparse.matmul(x, W, out, buffers)
        np.testing.assert_allclose(out, x @ W, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="sparse: buffers for up to 10 rows"):
        _sparse.matmul(np.zeros((11, 30)), np.zeros((30, 4)), np.zeros((11, 4)), buffers)
    with pytest.raises(TypeError, match="buffers: expected"):
        _sparse.matmul(np.zeros((2, 30)), np.zeros((30, 4)), np.zeros((2, 4)), "buffers")
    huge = _sparse.Buffers(2**16, 2**16, np.float64)  # its entries are never allocated
    x = np.zeros((1, 2**16))
    x[0, 5] = 1.0
    assert not _sparse.matmul(x, np.ones((2**16, 2)), np.zeros((1, 2)), huge)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("precision", [None, "bf16"])
def test_extend_networks_on_sparse_batches(kernel, dtype, precision):
    """MultiLayerNetExtend's first layer takes the same path (_network_extend.pyx): its step
    agrees with the same network's dense GEMMs."""
    if precision:
        dtype = np.float32
    rng = np.random.default_rng(8)
    x = sparse_batch(rng, 64, 100, dtype)
    t = rng.integers(0, 5, 64)
    net = N.MultiLayerNetExtend(100, [20, 10], 5, use_batchnorm=True, dtype=dtype, rng=0,
                                weight_decay_lambda=0.01, precision=precision)
    grads = {k: g.copy() for k, g in net.gradient(x, t).items()}
    ws = net._workspaces[64]
    assert ws.sparse.built
    tol = 1e-4 if precision or dtype == np.float32 else 1e-11
    sparse, ws.sparse = ws.sparse, None
    try:
        dense = net.gradient(x, t)
        # the biases under batch normalization have no effect: their gradients are rounding
        # noise around 0 (fastnn.registry._extend_step leaves them out too)
        for key in [k for k in grads if k not in ("b1", "b2")]:
            np.testing.assert_allclose(grads[key], dense[key], rtol=tol,
                                       atol=tol * np.abs(dense[key]).max())
    finally:
        ws.sparse = sparse


def test_networks_with_buffers_still_copy_and_pickle():
    """The buffers are scratch space: a deep copy or a pickle of a network that has run gets
    fresh ones, and computes the same."""
    import copy
    import pickle

    rng = np.random.default_rng(9)
    x = sparse_batch(rng, 16, 40, np.float32)
    t = rng.integers(0, 3, 16)
    for make in (lambda: N.TwoLayerNet(40, 6, 3, rng=0),
                 lambda: N.MultiLayerNetExtend(40, [6], 3, use_batchnorm=True, rng=0)):
        net = make()
        grads = {k: g.copy() for k, g in net.gradient(x, t).items()}
        for other in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
            again = other.gradient(x, t)
            for key in grads:
                np.testing.assert_array_equal(again[key], grads[key])
