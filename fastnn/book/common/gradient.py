"""The book's ``common/gradient.py``, answered by :mod:`fastnn.gradient`."""
import numpy as np

from fastnn.book._exports import export

__all__, __getattr__ = export(globals(), "common.gradient", {
    "np": None, "numerical_gradient_2d": "fastnn.gradient",
    "numerical_gradient": "fastnn.gradient"})
