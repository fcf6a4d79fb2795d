"""Chapter 7's ``simple_convnet.py``, answered by fastnn's ``SimpleConvNet``."""
import numpy as np

from fastnn.book._exports import export

__all__, __getattr__ = export(globals(), "simple_convnet", {
    "np": None, "SimpleConvNet": ("fastnn.nets", "fastnn.convnets", "fastnn.conv")})
