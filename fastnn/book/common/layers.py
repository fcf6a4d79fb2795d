"""The book's ``common/layers.py``, answered by :mod:`fastnn.layers`.

Its star import hands a script what the book's does: the layers, ``np``, the functions of
``common.functions`` and ``im2col``/``col2im``.
"""
import numpy as np

from fastnn.book._exports import export
from fastnn.book.common.functions import FUNCTIONS

# the families of chapters 6-8 may live in a module of their own
LAYERS = {
    "Relu": "fastnn.layers", "Sigmoid": "fastnn.layers", "Affine": "fastnn.layers",
    "SoftmaxWithLoss": "fastnn.layers",
    "Dropout": ("fastnn.layers", "fastnn.dropout", "fastnn.normalization"),
    "BatchNormalization": ("fastnn.layers", "fastnn.normalization", "fastnn.dropout"),
    "Convolution": ("fastnn.layers", "fastnn.conv", "fastnn.convolution"),
    "Pooling": ("fastnn.layers", "fastnn.conv", "fastnn.convolution"),
}

__all__, __getattr__ = export(globals(), "common.layers", {
    "np": None, **FUNCTIONS, "im2col": "fastnn.util", "col2im": "fastnn.util", **LAYERS})
