"""bfloat16 mixed precision (precision="bf16", fastnn/_kernels/_bf16.pyx): the rounding
kernels bit for bit against the twin, the one GEMM door, the networks' bf16 passes against
their twins (fastnn.reference.nets with precision="bf16"), and bad input.

The registry's bf16 pairs (tests/test_parity.py) run the whole training step over shapes,
layouts and dtypes at fastnn.registry.BF16_STEP_TOLERANCE; here the checks that can be held
to float32's own tolerance are: every pass whose GEMM operands are the same on both sides."""
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastnn import functions as F
from fastnn import nets as N
from fastnn._kernels import _bf16, _blas
from fastnn.reference import functions as RF
from fastnn.reference import nets as RN

KERNELS = [k for k in _bf16.KERNELS if k == "scalar" or _bf16.have_avx2()]
EPS32 = 2.0**-24  # float32's unit roundoff


@pytest.fixture(params=KERNELS)
def kernel(request):
    """Each rounding body in turn (the CPU's choice restored after)."""
    previous = _bf16.set_kernel(request.param)
    yield request.param
    _bf16.set_kernel(None)
    assert _bf16.kernel() == previous


def special_bits():
    """Bit patterns where rounding is decided: ties (even and odd kept bits, both signs, every
    binade's edges), one below and above them, zeros, subnormals, the normal minimum, the
    largest finite and what overflows, infinities, quiet and signalling NaNs (payloads in the
    kept and in the dropped bits)."""
    kept = np.array([0x0000, 0x0001, 0x0002, 0x007F, 0x0080, 0x0081, 0x3F80, 0x3F81, 0x3FFF,
                     0x4000, 0x7F7E, 0x7F7F], np.uint32)
    low = np.array([0x0000, 0x0001, 0x7FFF, 0x8000, 0x8001, 0xFFFF], np.uint32)
    patterns = ((kept[:, None] << 16) | low[None, :]).ravel()
    extra = np.array([0x7F800000, 0x7F800001, 0x7F808000, 0x7FC00000, 0x7FFFFFFF, 0x7F810000,
                      0x7FBFFFFF, 0x7F7FFFFF, 0x7F7F8000, 0x7F7F7FFF, 0x00800000, 0x007FFFFF,
                      0x00008000, 0x00018000], np.uint32)
    patterns = np.concatenate([patterns, extra])
    return np.concatenate([patterns, patterns | np.uint32(0x80000000)])


def test_round_bf16_specials(kernel):
    bits = special_bits()
    x = bits.view(np.float32)
    out = np.empty_like(x)
    _bf16.round_bf16(x, out)
    np.testing.assert_array_equal(out.view(np.uint32), RF.round_bf16(x).view(np.uint32))
    # what the twin's bit arithmetic stands for, independently: IEEE round to nearest even
    # (as float64 arithmetic on the neighbours gives it), inf beyond, NaN kept
    # NaN lanes are checked apart: their arithmetic in _check_ieee is ignored
    with np.errstate(invalid="ignore"):
        _check_ieee(bits, x, out)
    assert np.all(np.isnan(out[np.isnan(x)]))
    assert np.all(np.signbit(out[np.isnan(x)]) == np.signbit(x[np.isnan(x)]))
    np.testing.assert_array_equal(out[np.isinf(x)], x[np.isinf(x)])
    assert np.isinf(F.round_bf16(np.array([np.finfo(np.float32).max], np.float32)))[0]


def _check_ieee(bits, x, out):
    finite = np.isfinite(x)
    lo = (bits & np.uint32(0xFFFF0000)).view(np.float32)
    hi_bits = (bits & np.uint32(0xFFFF0000)) + np.uint32(0x10000)
    hi = hi_bits.view(np.float32)
    x64, lo64 = x.astype(np.float64), lo.astype(np.float64)
    # the upper neighbour, inf where it is past the largest bfloat16 (IEEE overflow)
    hi64 = np.where(np.isfinite(hi), hi.astype(np.float64), np.copysign(2.0**128, x64))
    d_lo, d_hi = np.abs(x64 - lo64), np.abs(hi64 - x64)
    even_lo = ((bits >> 16) & 1) == 0
    expect = np.where((d_lo < d_hi) | ((d_lo == d_hi) & even_lo), lo64, hi64)
    expect = np.where(np.abs(expect) == 2.0**128, np.copysign(np.inf, x64), expect)
    np.testing.assert_array_equal(out[finite].astype(np.float64), expect[finite])


@pytest.mark.parametrize("size", [0, 1, 7, 8, 9, 15, 16, 17, 31, 33, 1000])
def test_round_bf16_random_bits(kernel, size):
    """Every bit pattern is a float32 (NaNs and subnormals included): random ones, at sizes
    around the AVX2 body's 8 and 16 lanes."""
    bits = np.random.default_rng(size).integers(0, 2**32, size, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    out = np.empty_like(x)
    _bf16.round_bf16(x, out)
    twin = RF.round_bf16(x)
    np.testing.assert_array_equal(out.view(np.uint32), twin.view(np.uint32))
    packed = np.empty(size, np.uint16)
    _bf16.pack_bf16(x, packed)
    np.testing.assert_array_equal(packed.astype(np.uint32) << 16, twin.view(np.uint32))
    _bf16.round_bf16(x, x)  # in place
    np.testing.assert_array_equal(x.view(np.uint32), twin.view(np.uint32))


@given(bits=st.lists(st.integers(0, 2**32 - 1), max_size=40))
def test_round_bf16_property(bits):
    x = np.array(bits, np.uint64).astype(np.uint32).view(np.float32)
    for name in KERNELS:
        previous = _bf16.set_kernel(name)
        try:
            fast = F.round_bf16(x)
        finally:
            _bf16.set_kernel(previous)
        np.testing.assert_array_equal(fast.view(np.uint32), RF.round_bf16(x).view(np.uint32))


def test_round_bf16_layouts_and_errors():
    x = np.random.default_rng(1).standard_normal((6, 5)).astype(np.float32)
    for view in (x.T, x[::2], x[:, ::-1], x[0, 0]):
        np.testing.assert_array_equal(F.round_bf16(view), RF.round_bf16(view))
        assert F.round_bf16(view).shape == np.shape(view)
    assert F.round_bf16(np.empty((0, 3), np.float32)).shape == (0, 3)
    for bad in (x.astype(np.float64), x.astype(np.float16), [1.0, 2.0], x.astype(">f4")):
        with pytest.raises(TypeError, match="x must be float32"):
            F.round_bf16(bad)
        with pytest.raises(TypeError, match="x must be float32"):
            RF.round_bf16(bad)
    with pytest.raises(ValueError, match="out: expected 30 elements"):
        _bf16.round_bf16(x, np.empty(29, np.float32))
    with pytest.raises(TypeError, match="out"):
        _bf16.pack_bf16(x, np.empty(30, np.int16))
    with pytest.raises(ValueError, match="overlaps"):
        _bf16.round_bf16(x.ravel()[1:], x.ravel()[:-1])


def test_kernel_choice():
    assert _bf16.kernel() in KERNELS
    with pytest.raises(ValueError, match="name must be one of"):
        _bf16.set_kernel("avx512")
    if not _bf16.have_avx2():
        with pytest.raises(ValueError, match="not available"):
            _bf16.set_kernel("avx2")
    code = "from fastnn._kernels import _bf16; print(_bf16.kernel(), _bf16.describe())"
    env = {**os.environ, "FASTNN_BF16_KERNEL": "scalar"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.startswith("scalar portable: operands rounded"), out.stdout
    env["FASTNN_BF16_KERNEL"] = "fast"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "FASTNN_BF16_KERNEL must be one of" in out.stderr


# --- the one door: round_operand + gemm ---------------------------------------------------------

@given(m=st.integers(1, 40), n=st.integers(1, 40), k=st.integers(1, 40),
       trans_a=st.booleans(), trans_b=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_gemm_door_matches_twin(m, n, k, trans_a, trans_b, seed):
    """Both sides multiply the same bfloat16 operands, each product exact in float32: they
    differ by the order of the sums only, which float32's accumulation bound covers
    (|error| <= k * eps * (|A| @ |B|) elementwise, twice for two orders)."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    out = np.empty((m, n), np.float32)
    _bf16.matmul(a, b, trans_a, trans_b, out)
    op_a, op_b = (a.T if trans_a else a), (b.T if trans_b else b)
    twin = RF.matmul_bf16(op_a, op_b)
    scale = np.abs(RF.round_bf16(op_a)).astype(np.float64) @ np.abs(RF.round_bf16(op_b))
    assert np.all(np.abs(out.astype(np.float64) - twin) <= 2 * k * EPS32 * scale)
    # and it is the bfloat16 product, not the float32 one: the operands were rounded
    exact = RF.round_bf16(op_a).astype(np.float64) @ RF.round_bf16(op_b).astype(np.float64)
    assert np.all(np.abs(out - exact) <= k * EPS32 * scale)


@pytest.mark.skipif(not _blas.HAVE_GEMM_BF16, reason="the native bfloat16 GEMM needs MKL as "
                    "the BLAS backend (pip install 'fastnn[mkl]', FASTNN_BLAS=mkl)")
def test_native_gemm_path_matches_the_portable_one():
    """MKL's bfloat16 GEMM (uint16 operands) through the same door: the same products as the
    portable path, summed in another order (the door's bound above), in a whole step too.
    Forced on here: at import it is chosen only on CPUs with bf16 instructions."""
    rng = np.random.default_rng(11)
    x, t = _mnist_like(rng, 100)
    results = []
    for flag in (False, True):
        previous = _bf16.set_native(flag)
        try:
            assert _bf16.native() is flag and ("MKL" in _bf16.describe()) is flag
            for m, n, k in [(1, 1, 1), (7, 5, 3), (100, 50, 784), (33, 65, 17)]:
                a = rng.standard_normal((m, k)).astype(np.float32)
                b = rng.standard_normal((n, k)).astype(np.float32)
                out = np.empty((m, n), np.float32)
                _bf16.matmul(a, b, False, True, out)
                scale = np.abs(RF.round_bf16(a)).astype(np.float64) @ np.abs(RF.round_bf16(b)).T
                assert np.all(np.abs(out - RF.matmul_bf16(a, b.T)) <= 2 * k * EPS32 * scale)
            net = NETWORKS["TwoLayerNet"](N)
            results.append({key: np.array(g) for key, g in net.gradient(x, t).items()})
        finally:
            _bf16.set_native(previous)
    for key, g in results[0].items():
        assert np.abs(results[1][key] - g).max() <= 1e-5 * np.abs(g).max(), key


def test_native_gemm_needs_mkl():
    if _blas.HAVE_GEMM_BF16:
        pytest.skip("MKL's bfloat16 GEMM is there")
    with pytest.raises(ValueError, match="flag: the native bfloat16 GEMM needs MKL"):
        _bf16.set_native(True)
    assert _bf16.native() is False


def test_gemm_door_errors():
    a = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match="inner sizes differ"):
        _bf16.matmul(a, a, False, False, np.empty((3, 4), np.float32))
    with pytest.raises(TypeError, match="float32"):
        _bf16.matmul(a.astype(np.float64), a, False, True, np.empty((3, 3), np.float32))


# --- the networks -------------------------------------------------------------------------------

def _mnist_like(rng, n, d=784):
    x = rng.random((n, d), dtype=np.float32)
    x[rng.random((n, d)) < 0.8] = 0
    return x, rng.integers(0, 10, n)


@given(n=st.integers(1, 30), d=st.integers(1, 30), k=st.integers(1, 12),
       seed=st.integers(0, 2**32 - 1), f64=st.booleans())
def test_one_layer_forward_matches_twin(n, d, k, seed, f64):
    """A network of one layer rounds only its input and its weight, the same values on both
    sides: logits within float32's accumulation bound, the loss to float32's 1e-5."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float64 if f64 else np.float32)
    t = rng.integers(0, k, n)
    fast = N.MultiLayerNet(d, [], k, "identity", 0.5, dtype=np.float32, rng=seed % 97,
                           precision="bf16")
    twin = RN.MultiLayerNet(d, [], k, "identity", 0.5, dtype=np.float32, rng=seed % 97,
                            precision="bf16")
    logits, ref = fast.predict(x), twin.predict(x)
    assert logits.dtype == np.float32
    x32 = x.astype(np.float32)
    scale = np.abs(RF.round_bf16(x32)).astype(np.float64) @ np.abs(RF.round_bf16(fast.params["W1"]))
    assert np.all(np.abs(logits.astype(np.float64) - ref) <= 2 * d * EPS32 * scale + 1e-30)
    loss, ref_loss = fast.loss(x, t), twin.loss(x, t)
    assert abs(loss - ref_loss) <= 1e-5 * max(abs(ref_loss), 1.0)


NETWORKS = {  # name: make(api, precision="bf16")
    "TwoLayerNet": lambda api, p="bf16": api.TwoLayerNet(784, 50, 10, 0.1, dtype=np.float32,
                                                         rng=0, precision=p),
    "MultiLayerNet[relu, weight decay]": lambda api, p="bf16": api.MultiLayerNet(
        784, [100, 100, 100], 10, weight_decay_lambda=0.01, dtype=np.float32, rng=1,
        precision=p),
    "MultiLayerNet[sigmoid]": lambda api, p="bf16": api.MultiLayerNet(
        784, [50, 20], 10, "sigmoid", "sigmoid", dtype=np.float32, rng=2, precision=p),
    "MultiLayerNetExtend[batchnorm, dropout]": lambda api, p="bf16": api.MultiLayerNetExtend(
        784, [100, 100], 10, use_batchnorm=True, use_dropout=True, dropout_ration=0.2,
        dtype=np.float32, rng=3, precision=p),
}


@pytest.mark.parametrize("name", list(NETWORKS))
def test_step_is_the_twins_bf16_step(name):
    """A training step at the book's shapes (784 inputs, batch 100): against the bf16 twin,
    and against the float32 twin, which differs by the rounding of every operand.  fastnn
    must be far closer to the first: a GEMM whose operands were not rounded would leave a
    sizeable part of that difference (tests/test_parity.py: why not float32's tolerance
    through a whole step; measured here: about 1e-7 of the arrays' largest values without
    batch normalization, 1e-3 with it, against 2e-3 to 3e-1 for float32)."""
    x, t = _mnist_like(np.random.default_rng(5), 100)
    make = NETWORKS[name]
    fast, twin = make(N), make(RN)
    ref32 = make(RN, None)  # the same weights (one seed) at float32's own precision
    extend = name.startswith("MultiLayerNetExtend")
    grads = {}
    for net in (fast, twin, ref32):
        if extend:
            np.random.seed(0)
        grads[id(net)] = {k: np.array(g) for k, g in net.gradient(x, t).items()}
    bn_noise = {"b1", "b2"} if extend else set()  # the biases before batch normalization
    limit = 0.25 if extend else 1e-3
    for key in grads[id(twin)]:
        if key in bn_noise:
            continue
        ref, f, f32 = grads[id(twin)][key], grads[id(fast)][key], grads[id(ref32)][key]
        scale = np.abs(ref).max()
        err, effect = np.abs(f - ref).max() / scale, np.abs(f32 - ref).max() / scale
        assert effect > 1e-4, (key, effect)  # the rounding shows
        assert err <= limit * effect, (key, err, effect)
    if not extend:
        assert abs(fast.last_loss - twin.loss(x, t)) <= 1e-5 * abs(twin.loss(x, t))


def test_scalar_and_avx2_kernels_give_the_same_step():
    x, t = _mnist_like(np.random.default_rng(6), 64)
    results = []
    for name in KERNELS:
        previous = _bf16.set_kernel(name)
        try:
            net = NETWORKS["TwoLayerNet"](N)
            results.append([g.copy() for g in net.gradient(x, t).values()] + [net.predict(x)])
        finally:
            _bf16.set_kernel(previous)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def test_weights_stay_float32_and_are_rounded_per_call():
    """The step leaves the float32 weights as they were; an in-place update (an optimizer's)
    is seen by the next call, the weights rounded again; predict in blocks is predict."""
    rng = np.random.default_rng(7)
    x, t = _mnist_like(rng, 4100)
    fast, twin = NETWORKS["TwoLayerNet"](N), NETWORKS["TwoLayerNet"](RN)
    before = {k: a.copy() for k, a in fast.params.items()}
    fast.gradient(x[:100], t[:100])
    for k, a in fast.params.items():
        np.testing.assert_array_equal(a, before[k])
        assert a.dtype == np.float32
    for net in (fast, twin):
        net.params["W1"] += np.float32(0.01)
        net.params["W2"] *= np.float32(1.5)
    blocks = np.concatenate([fast.predict(x[:2048]), fast.predict(x[2048:4096]),
                             fast.predict(x[4096:])])
    whole = fast.predict(x)
    np.testing.assert_array_equal(whole, blocks)
    # Against the twin: float32's tolerance, but for the rare row where a hidden activation,
    # computed a few ulps apart by another BLAS (MKL's sums differ from NumPy's OpenBLAS's),
    # lies at a bfloat16 rounding midpoint and the two round it one bf16 ulp (2^-8) apart.
    err = np.abs(whole - twin.predict(x)) / np.abs(whole).max()
    assert err.max() <= 2**-7, err.max()
    assert np.mean(np.any(err > 1e-5, axis=1)) <= 0.01, np.flatnonzero(np.any(err > 1e-5, axis=1))
    assert fast.accuracy(x, t) == np.mean(np.argmax(whole, axis=1) == t)
    # float64 input computes as its float32 cast
    np.testing.assert_array_equal(fast.predict(x[:50].astype(np.float64)), fast.predict(x[:50]))


def test_snapshot_and_files_keep_the_precision(tmp_path):
    from fastnn.io import load_network, save_network

    x, t = _mnist_like(np.random.default_rng(8), 20)
    for name, make in NETWORKS.items():
        net = make(N)
        copy = net.snapshot()
        assert copy.precision == "bf16"
        np.testing.assert_array_equal(copy.predict(x), net.predict(x))
        path = tmp_path / "net.npz"
        save_network(path, net)
        loaded = load_network(path)
        assert loaded.precision == "bf16", name
        np.testing.assert_array_equal(loaded.predict(x), net.predict(x))


@pytest.mark.parametrize("api", [N, RN], ids=["fastnn", "twin"])
def test_bad_precision(api):
    for cls, args in ((api.TwoLayerNet, (4, 3, 2)), (api.MultiLayerNet, (4, [3], 2)),
                      (api.MultiLayerNetExtend, (4, [3], 2))):
        with pytest.raises(TypeError, match="precision='bf16' needs dtype=float32"):
            cls(*args, dtype=np.float64, precision="bf16")
        for bad in ("fp16", "BF16", 16, "float32"):
            with pytest.raises(ValueError, match="precision must be None"):
                cls(*args, dtype=np.float32, precision=bad)
        assert cls(*args, dtype=np.float64, precision=None).precision is None


def test_bf16_refuses_what_it_cannot_compute():
    net = N.TwoLayerNet(4, 3, 2, dtype=np.float32, rng=0, precision="bf16")
    x, t = np.ones((2, 4), np.float32), np.array([0, 1])
    with pytest.raises(ValueError, match="numerical_gradient: a precision='bf16'"):
        net.numerical_gradient(x, t)
    ext = N.MultiLayerNetExtend(4, [3], 2, dtype=np.float32, rng=0, precision="bf16")
    with pytest.raises(ValueError, match="numerical_gradient"):
        ext.numerical_gradient(x, t)
    # weights replaced by arrays the compiled pass cannot take: refused, not run in float32
    net.affine_layers[0].W = np.asfortranarray(net.params["W1"])
    with pytest.raises(TypeError, match=r"precision='bf16' computes with the layers' own"):
        net.predict(x)
    with pytest.raises(TypeError, match="layer sizes"):
        net.gradient(x, t)
    with pytest.raises(TypeError, match="complex"):
        N.TwoLayerNet(4, 3, 2, dtype=np.float32, rng=0, precision="bf16").predict(x + 1j)
