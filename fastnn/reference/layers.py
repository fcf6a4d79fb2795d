"""The book's ``common/layers.py`` (and chapter 5's graph nodes) in plain NumPy.

Twins of ``fastnn.layers``.  Two deliberate differences from the book, because the twins are
also oracles: ``Affine`` treats a 1-D input as a batch of one, and ``Relu.backward`` does not
overwrite the caller's ``dout`` (fastnn's documented behaviour).

``Bf16Affine`` is the layer of a ``precision='bf16'`` twin network (fastnn.reference.nets and
fastnn.reference.convnets): the book's Affine on bfloat16-rounded operands.
"""
import numpy as np

from fastnn.reference.functions import (cross_entropy_error, matmul_bf16, sigmoid, softmax,
                                        softmax_loss_backward)
from fastnn.reference.normalization import BatchNormalization, Dropout  # noqa: F401 (chapter 6)


class MulLayer:
    def __init__(self):
        self.x = None
        self.y = None

    def forward(self, x, y):
        self.x = x
        self.y = y
        return x * y

    def backward(self, dout):
        dx = dout * self.y
        dy = dout * self.x
        return dx, dy


class AddLayer:
    def forward(self, x, y):
        return x + y

    def backward(self, dout):
        return dout * 1, dout * 1


class SquareLayer:
    def __init__(self):
        self.x = None

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, dout):
        return dout * 2 * self.x


class Identity:
    def forward(self, x):
        return x

    def backward(self, dout):
        return dout


class Relu:
    def __init__(self):
        self.mask = None

    def forward(self, x):
        self.mask = (x <= 0)
        out = x.copy()
        out[self.mask] = 0
        return out

    def backward(self, dout):
        dx = dout.copy()
        dx[self.mask] = 0
        return dx


class Sigmoid:
    def __init__(self):
        self.out = None

    def forward(self, x):
        out = sigmoid(x)
        self.out = out
        return out

    def backward(self, dout):
        return dout * (1.0 - self.out) * self.out


class Affine:
    # the layer's matrix products: the book's np.dot (Bf16Affine rounds their operands), looked
    # up at each call, as the book's code does
    @staticmethod
    def _dot(a, b):
        return np.dot(a, b)

    def __init__(self, W, b):
        self.W = W
        self.b = b
        self.x = None
        self.original_x_shape = None
        self.dW = None
        self.db = None

    def forward(self, x):
        self.original_x_shape = x.shape
        x = x.reshape(x.shape[0], -1) if x.ndim > 1 else x.reshape(1, -1)
        self.x = x
        out = self._dot(self.x, self.W) + self.b
        return out.reshape(-1) if len(self.original_x_shape) == 1 else out

    def backward(self, dout):
        dout = dout.reshape(self.x.shape[0], -1)
        dx = self._dot(dout, self.W.T)
        self.dW = self._dot(self.x.T, dout)
        self.db = np.sum(dout, axis=0)
        return dx.reshape(*self.original_x_shape)


class Bf16Affine(Affine):
    """The book's Affine with the operands of its three GEMMs rounded to bfloat16: x @ W,
    dout @ W.T and x.T @ dout (the twin of a precision='bf16' network's layer).  Its inputs
    are float32 as the network's activations are (the book's test-mode BatchNormalization
    gives float64 from its float64 running statistics; the compiled pass writes float32)."""

    _dot = staticmethod(matmul_bf16)

    def forward(self, x):
        return super().forward(np.asarray(x, dtype=np.float32))

    def backward(self, dout):
        return super().backward(np.asarray(dout, dtype=np.float32))


def bf16_precision(precision, dtype):
    """Whether a twin network of ``dtype`` computes with ``precision='bf16'`` (True) or its
    dtype's own precision (``precision=None``: False); anything else is refused, as fastnn's
    networks refuse it."""
    if precision is None:
        return False
    if precision != 'bf16':
        raise ValueError(f"precision must be None (the dtype's own) or 'bf16', got {precision!r}")
    if np.dtype(dtype) != np.float32:
        raise TypeError(f"precision='bf16' needs dtype=float32, got dtype {np.dtype(dtype)}")
    return True


class Linear:
    """x @ W.T + b with W stored (out, in), as PyTorch stores it."""

    def __init__(self, W, b):
        self.W = W
        self.b = b
        self.x = None
        self.original_x_shape = None
        self.dW = None
        self.db = None

    def forward(self, x):
        self.original_x_shape = x.shape
        x = x.reshape(x.shape[0], -1) if x.ndim > 1 else x.reshape(1, -1)
        self.x = x
        out = np.dot(self.x, self.W.T) + self.b
        return out.reshape(-1) if len(self.original_x_shape) == 1 else out

    def backward(self, dout):
        dout = dout.reshape(self.x.shape[0], -1)
        dx = np.dot(dout, self.W)
        self.dW = np.dot(dout.T, self.x)
        self.db = np.sum(dout, axis=0)
        return dx.reshape(*self.original_x_shape)


class SoftmaxWithLoss:
    def __init__(self, exact=False):
        self.exact = exact
        self.loss = None
        self.y = None
        self.t = None
        self.x = None

    def forward(self, x, t):
        self.t = t
        self.x = x
        self.y = softmax(x)
        if self.exact:
            self.loss = cross_entropy_error(x, t, exact=True)
        else:
            self.loss = cross_entropy_error(self.y, self.t)
        return self.loss

    def backward(self, dout=1):
        return softmax_loss_backward(self.y, self.t, dout)


class SigmoidWithLoss:
    """Sigmoid output with binary cross-entropy, the loss computed from the logits."""

    def __init__(self):
        self.loss = None
        self.y = None
        self.t = None

    def forward(self, x, t):
        self.t = t
        self.y = sigmoid(x)
        batch_size = x.shape[0] if x.ndim else 1
        self.loss = np.sum(np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))) / batch_size
        return self.loss

    def backward(self, dout=1):
        batch_size = self.y.shape[0] if self.y.ndim else 1
        return (self.y - self.t) * dout / batch_size
