"""Chapter 8's ``deep_convnet.py``, answered by fastnn's ``DeepConvNet``."""
import numpy as np

from fastnn.book._exports import export

__all__, __getattr__ = export(globals(), "deep_convnet", {
    "np": None, "DeepConvNet": ("fastnn.nets", "fastnn.convnets", "fastnn.conv")})
