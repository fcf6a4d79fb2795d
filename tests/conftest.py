import importlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

# Bounded example counts so the suite fits CI; FASTNN_HYPOTHESIS_PROFILE=thorough for more.
settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True)
settings.register_profile("thorough", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("FASTNN_HYPOTHESIS_PROFILE", "ci"))

SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
BOOK_CODE = SHARED_DATASETS / "book-code"

# float64 results agree with their twins to 1e-12 and float32 ones to 1e-5, relative to the
# largest magnitude of the twin's result (a norm-wise error, so that a near-zero element
# computed by another order of additions does not count as a large relative error).
TOLERANCE = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}


def assert_twin(fast, ref, dtype, what="", tolerance=None):
    """Assert that ``fast`` equals the twin's ``ref`` (arrays, scalars or tuples of them) to
    the dtype's tolerance, or to ``tolerance`` where given (a registry pair's own)."""
    if isinstance(ref, (tuple, list)):
        assert isinstance(fast, (tuple, list)) and len(fast) == len(ref), what
        for i, (f, r) in enumerate(zip(fast, ref)):
            assert_twin(f, r, dtype, f"{what}[{i}]", tolerance)
        return
    fast, ref = np.asarray(fast), np.asarray(ref)
    assert fast.shape == ref.shape, f"{what}: shape {fast.shape} != twin's {ref.shape}"
    if ref.size == 0:
        return
    scale = max(float(np.max(np.abs(ref))), np.finfo(np.float64).tiny)
    err = float(np.max(np.abs(fast.astype(np.float64) - ref.astype(np.float64)))) / scale
    tol = TOLERANCE[np.dtype(dtype)] if tolerance is None else tolerance
    assert err <= tol, f"{what}: relative error {err:.3g} (dtype {dtype}, tolerance {tol:.3g})"


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def book_module(name):
    """A module of the book's own code (``"common.layers"``, ``"ch07.simple_convnet"``...),
    imported from ../shared/datasets/book-code/ as the book's scripts import it; the test
    skips where the snapshot is absent.  Read-only use: nothing is written there (Python's
    bytecode cache is kept out of the read-only folder)."""
    if not (BOOK_CODE / "common" / "layers.py").is_file():
        pytest.skip(f"the book's code is not at {BOOK_CODE} (../shared/datasets/book-code/)")
    sys.dont_write_bytecode = True
    for folder in (str(BOOK_CODE), *(str(BOOK_CODE / name.split(".")[0]),) * ("." in name)):
        if folder not in sys.path:
            sys.path.append(folder)
    return importlib.import_module(name)
