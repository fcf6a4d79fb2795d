"""The book's ``common/trainer.py``, answered by :class:`fastnn.trainer.Trainer` (the book's
batches, loss records, evaluations and lines by default)."""
import os
import sys

import numpy as np

from fastnn.book._exports import export
from fastnn.book.common.optimizer import OPTIMIZERS

__all__, __getattr__ = export(globals(), "common.trainer", {
    "sys": None, "os": None, "np": None, **OPTIMIZERS, "Trainer": "fastnn.trainer"})
