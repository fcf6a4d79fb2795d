"""The book's ``common/functions.py``, answered by :mod:`fastnn.functions`."""
import numpy as np

from fastnn.book._exports import export

FUNCTIONS = {name: "fastnn.functions" for name in (
    "identity_function", "step_function", "sigmoid", "sigmoid_grad", "relu", "relu_grad",
    "softmax", "sum_squared_error", "cross_entropy_error", "softmax_loss")}

__all__, __getattr__ = export(globals(), "common.functions", {"np": None, **FUNCTIONS})
