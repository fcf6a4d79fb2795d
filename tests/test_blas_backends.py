"""fastnn._kernels._blas: the backends FASTNN_BLAS chooses (mkl, openblas, scipy), their GEMMs
against NumPy, MKL's bfloat16 GEMM, and the errors for a value or a backend that is not there.

The backend is chosen at import, so the other backends run in subprocesses; CI also runs the
parity tests under FASTNN_BLAS=mkl (.ci/run)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastnn._kernels import _blas

AVAILABLE = _blas.available_backends()
on_mkl = pytest.mark.skipif(_blas.BLAS_BACKEND != "mkl",
                            reason="fastnn's BLAS is not MKL (pip install 'fastnn[mkl]')")
TOL = {np.float32: 1e-5, np.float64: 1e-12}


def _operands(rng, m, n, k, trans_a, trans_b, dtype):
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    return a, b, rng.standard_normal((m, n)).astype(dtype)


def _expected(a, b, c, trans_a, trans_b, alpha, beta):
    op_a, op_b = (a.T if trans_a else a), (b.T if trans_b else b)
    return alpha * (op_a.astype(np.float64) @ op_b.astype(np.float64)) + beta * c


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_gemm_is_row_major_alpha_op_a_op_b_plus_beta_c(dtype, trans_a, trans_b):
    rng = np.random.default_rng(0)
    a, b, c = _operands(rng, 13, 7, 29, trans_a, trans_b, dtype)
    expected = _expected(a, b, c, trans_a, trans_b, 0.5, -2.0)
    _blas._gemm(a, b, c, trans_a, trans_b, 0.5, -2.0)
    np.testing.assert_allclose(c, expected, rtol=TOL[dtype], atol=TOL[dtype] * 30)


@settings(max_examples=40, deadline=None)
@given(m=st.integers(0, 20), n=st.integers(0, 20), k=st.integers(0, 20),
       trans_a=st.booleans(), trans_b=st.booleans(), beta=st.sampled_from([0.0, 1.0, 0.25]),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_gemm_over_shapes_including_empty(m, n, k, trans_a, trans_b, beta, dtype):
    rng = np.random.default_rng(m * 441 + n * 21 + k)
    a, b, c = _operands(rng, m, n, k, trans_a, trans_b, dtype)
    expected = _expected(a, b, c, trans_a, trans_b, 1.0, beta)
    _blas._gemm(a, b, c, trans_a, trans_b, 1.0, beta)
    np.testing.assert_allclose(c, expected, rtol=TOL[dtype], atol=TOL[dtype] * 30)


def _to_bf16(x):
    """float32 -> bfloat16 bits (round to nearest even), as uint16."""
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def _widen(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


@on_mkl
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("m, n, k", [(100, 50, 784), (784, 50, 100), (100, 784, 50), (3, 5, 0),
                                     (1, 1, 1), (17, 9, 33)])
def test_gemm_bf16_is_the_float32_product_of_the_widened_operands(m, n, k, trans_a, trans_b):
    # bf16 x bf16 products are exact in float32 (8-bit significands); only the float32
    # accumulation's order and rounding differ from NumPy's float64 sum of the same products:
    # a relative error of k * 2^-24 at worst, bounded here by 1e-5 of the sum of |products|
    assert _blas.HAVE_GEMM_BF16
    rng = np.random.default_rng(m + n + k)
    a, b, c = _operands(rng, m, n, k, trans_a, trans_b, np.float32)
    a16, b16 = _to_bf16(a), _to_bf16(b)
    wa, wb = _widen(a16), _widen(b16)
    expected = _expected(wa, wb, c, trans_a, trans_b, 0.5, 0.75)
    scale = 0.5 * (np.abs(wa.T if trans_a else wa).astype(np.float64)
                   @ np.abs(wb.T if trans_b else wb)) + 0.75 * np.abs(c)
    _blas._gemm(a16, b16, c, trans_a, trans_b, 0.5, 0.75)
    assert c.dtype == np.float32
    assert np.all(np.abs(c - expected) <= 1e-5 * scale + 1e-30)


@on_mkl
def test_gemm_bf16_rounds_nothing_it_is_given():
    # operands already bfloat16: a 1x1x1 product of two of them is exact
    a = _to_bf16(np.array([[3.140625]], np.float32))
    b = _to_bf16(np.array([[-1.5]], np.float32))
    c = np.zeros((1, 1), np.float32)
    _blas._gemm(a, b, c)
    assert c[0, 0] == np.float32(3.140625 * -1.5)


@pytest.mark.skipif(_blas.BLAS_BACKEND == "mkl", reason="MKL has the bfloat16 GEMM")
def test_gemm_bf16_without_mkl_says_so():
    assert not _blas.HAVE_GEMM_BF16
    a = np.zeros((2, 2), np.uint16)
    with pytest.raises(RuntimeError, match=f"needs MKL.*{_blas.BLAS_BACKEND}"):
        _blas._gemm(a, a, np.zeros((2, 2), np.float32))


def test_gemm_checks_its_arrays():
    a = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"b: expected shape \(4, 2\)"):
        _blas._gemm(a, np.zeros((5, 2)), np.zeros((3, 2)))
    with pytest.raises(TypeError, match="c: expected a native float64"):
        _blas._gemm(a, np.zeros((4, 2)), np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match="c: expected a C-contiguous"):
        _blas._gemm(a, np.zeros((4, 2)), np.zeros((2, 3)).T)


@pytest.mark.parametrize("value", ["mkl", "MKL", " openblas ", "scipy", "", "  "])
def test_the_variable_s_values(value):
    assert _blas.requested_backend(value) == (value.strip().lower() or None)


@pytest.mark.parametrize("value", ["mlk", "numpy", "blis", "openblas,mkl"])
def test_an_unknown_value_is_an_error_naming_the_variable(value):
    with pytest.raises(ValueError, match=f"FASTNN_BLAS={value!r} names no BLAS backend.*"
                                         "mkl, openblas, scipy"):
        _blas.requested_backend(value)


def test_a_backend_asked_for_and_absent_is_an_import_error(monkeypatch):
    monkeypatch.setattr(_blas, "find_mkl", lambda: None)
    monkeypatch.setattr(_blas, "_numpy_cblas", lambda: None)
    with pytest.raises(ImportError, match=r"FASTNN_BLAS=mkl, but no libmkl_rt.*fastnn\[mkl\]"):
        _blas._choose("mkl")
    with pytest.raises(ImportError, match="FASTNN_BLAS=openblas, but NumPy's OpenBLAS"):
        _blas._choose("openblas")
    assert _blas._choose(None) == ("scipy", None)  # unset: whatever is there


def test_unset_mkl_goes_first_on_intel_cpus_only():
    # on AMD's Zen 3 MKL's GEMMs were slower than OpenBLAS's (README, "BLAS backends")
    assert _blas._unset_order("GenuineIntel") == ("mkl", "openblas", "scipy")
    assert _blas._unset_order("AuthenticAMD") == ("openblas", "mkl", "scipy")
    assert _blas._unset_order("HygonGenuine")[0] == "openblas"


def test_unset_the_first_backend_that_is_there_runs():
    if os.environ.get("FASTNN_BLAS", "").strip():
        pytest.skip("FASTNN_BLAS is set")
    assert _blas.BLAS_BACKEND == AVAILABLE[0]


def _in_a_process(backend, code):
    env = {**os.environ, "FASTNN_BLAS": backend}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=300)
    return out


def test_an_unknown_value_stops_the_import():
    out = _in_a_process("openblass", "import fastnn.layers")
    assert out.returncode != 0
    assert "ValueError: FASTNN_BLAS='openblass' names no BLAS backend" in out.stderr


_PROBE = """
import json, numpy as np
from threadpoolctl import threadpool_info
from fastnn import threads
from fastnn._kernels import _blas
from fastnn.nets import TwoLayerNet
from fastnn.reference.nets import TwoLayerNet as Twin
rng = np.random.default_rng(0)
x, t = rng.random((100, 784)), rng.integers(0, 10, 100)
errors = {}
for dtype in ("float32", "float64"):
    fast, twin = TwoLayerNet(784, 50, 10, dtype=dtype, rng=0), Twin(784, 50, 10, dtype=dtype, rng=0)
    got, want = fast.gradient(x.astype(dtype), t), twin.gradient(x.astype(dtype), t)
    errors[dtype] = max(float(np.max(np.abs(got[k] - want[k])) /
                              max(np.max(np.abs(want[k])), 1e-300)) for k in want)
lib = threads._blas()
with threads.blas_limit(1):
    limited = [i["num_threads"] for i in threadpool_info() if i["filepath"] == _blas.BLAS_PATH]
print(json.dumps({"backend": _blas.BLAS_BACKEND, "route": _blas.BLAS_ROUTE,
                  "layer": _blas.MKL_THREADING_LAYER, "errors": errors,
                  "controlled": None if lib is None else lib.internal_api, "limited": limited,
                  "apis": sorted(i["internal_api"] for i in threadpool_info())}))
"""


@pytest.mark.parametrize("backend", ["mkl", "openblas", "scipy"])
def test_each_backend_computes_the_twin_s_gradients_under_the_thread_policy(backend):
    if backend not in AVAILABLE:
        pytest.skip(f"{backend} is not installed here")
    out = _in_a_process(backend, _PROBE)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["backend"] == backend
    assert seen["errors"]["float64"] <= 1e-12
    assert seen["errors"]["float32"] <= 1e-5
    if backend == "mkl":
        assert seen["route"] == "mkl-cblas"
        # MKL's threads are set by fastnn.threads through threadpoolctl's MKL controller
        assert seen["controlled"] == "mkl"
        assert seen["limited"] == [1]
        assert "mkl" in seen["apis"]
        if not os.environ.get("MKL_THREADING_LAYER"):
            assert seen["layer"] in ("gnu", "sequential")  # never Intel's spinning OpenMP
    else:
        assert seen["layer"] is None


def test_asking_for_mkl_where_it_is_absent_stops_the_import():
    if "mkl" in AVAILABLE:
        pytest.skip("MKL is installed here (the absent case is tested through _choose)")
    out = _in_a_process("mkl", "import fastnn.layers")
    assert out.returncode != 0
    assert "ImportError: FASTNN_BLAS=mkl, but no libmkl_rt" in out.stderr


def test_find_mkl_takes_libmkl_rt_and_its_highest_version_only(monkeypatch, tmp_path):
    import site

    for attr in ("prefix", "exec_prefix", "base_prefix"):
        monkeypatch.setattr(sys, attr, str(tmp_path))
    monkeypatch.setattr(site, "getuserbase", lambda: str(tmp_path))
    monkeypatch.setenv("LD_LIBRARY_PATH", "")
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "libmkl_rt.so.3.hidden").write_bytes(b"")
    (lib / "libmkl_rt_other.so").write_bytes(b"")
    assert _blas.find_mkl() is None
    for name in ("libmkl_rt.so.2", "libmkl_rt.so.3"):
        (lib / name).write_bytes(b"")
    assert _blas.find_mkl() == str(lib / "libmkl_rt.so.3")
    (lib / "libmkl_rt.so").write_bytes(b"")  # the unversioned name, where a link provides it
    assert _blas.find_mkl() == str(lib / "libmkl_rt.so")
