"""The book's ``common/optimizer.py``, answered by :mod:`fastnn.optim` (whose optimizers take
the book's parameter kinds: arrays of any layout, and numbers as in
``optimizer_compare_naive.py``)."""
import numpy as np

from fastnn.book._exports import export

OPTIMIZERS = {name: "fastnn.optim"
              for name in ("SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam")}

__all__, __getattr__ = export(globals(), "common.optimizer", {"np": None, **OPTIMIZERS})
