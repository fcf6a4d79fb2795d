"""Chapter 5's ``two_layer_net.py``, answered by :class:`fastnn.nets.TwoLayerNet`: the same
layers (``Affine1``, ``Relu1``, ``Affine2``, ``lastLayer``), weights and methods, the forward
and backward passes of a step in one compiled call."""
import numpy as np

from fastnn.book._exports import export

__all__, __getattr__ = export(globals(), "two_layer_net", {"np": None,
                                                          "TwoLayerNet": "fastnn.nets"})
