"""The book's ``common/multi_layer_net_extend.py``, answered by fastnn's
``MultiLayerNetExtend`` (Dropout and BatchNormalization layers)."""
import os
import sys
from collections import OrderedDict

import numpy as np

from fastnn.book._exports import export
from fastnn.book.common.functions import FUNCTIONS
from fastnn.book.common.layers import LAYERS

__all__, __getattr__ = export(globals(), "common.multi_layer_net_extend", {
    "sys": None, "os": None, "np": None, "OrderedDict": None, **FUNCTIONS,
    "im2col": "fastnn.util", "col2im": "fastnn.util", **LAYERS,
    "numerical_gradient": "fastnn.gradient",
    "MultiLayerNetExtend": ("fastnn.nets", "fastnn.nets_extend")})
