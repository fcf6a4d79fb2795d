"""The functions API across families: clear errors naming arguments, dtypes and their promotion."""
import numpy as np
import pytest

from fastnn import functions as F


def test_shape_errors_name_arguments():
    with pytest.raises(ValueError, match=r"t must have shape \(4,\), got \(4, 1\)"):
        F.sum_squared_error(np.zeros(4), np.zeros((4, 1)))
    with pytest.raises(ValueError, match="1-D .* or 2-D"):
        F.cross_entropy_error(np.zeros((2, 3, 4)), np.zeros(2, dtype=int))
    with pytest.raises(ValueError, match="empty batch"):
        F.softmax_loss(np.zeros((0, 3)), np.zeros(0, dtype=int))


@pytest.mark.parametrize("dtype", [np.complex128, object, np.longdouble])
def test_unsupported_dtypes_refused(dtype):
    with pytest.raises(TypeError, match="x has dtype"):
        F.sigmoid(np.zeros(3, dtype=dtype))


def test_dtype_promotion():
    y32 = np.full((2, 3), 1 / 3, dtype=np.float32)
    t64 = np.eye(3)[[0, 1]]
    assert F.softmax(y32).dtype == np.float32
    assert type(F.cross_entropy_error(y32, np.array([0, 1]))) is np.float32
    assert type(F.cross_entropy_error(y32, t64)) is np.float64  # as y32 * t64 promotes
    assert F.sigmoid(np.array([1, 2])).dtype == np.float64  # integers compute in float64
    assert F.sigmoid(np.zeros(2, dtype=np.float16)).dtype == np.float32


