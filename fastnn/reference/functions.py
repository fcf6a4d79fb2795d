"""The book's ``common/functions.py`` in plain NumPy: twins of ``fastnn.functions``."""
import numpy as np


def identity_function(x):
    return x


def step_function(x):
    return np.array(x > 0, dtype=int)


def sigmoid(x):
    # the book's form; exp(-x) overflows to inf for x < -709 and the result is then exactly 0
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-x))


def sigmoid_grad(x):
    return (1.0 - sigmoid(x)) * sigmoid(x)


def relu(x):
    return np.maximum(0, x)


def relu_grad(x):
    grad = np.zeros_like(x)
    grad[x >= 0] = 1
    return grad


def softmax(x):
    x = x - np.max(x, axis=-1, keepdims=True)
    return np.exp(x) / np.sum(np.exp(x), axis=-1, keepdims=True)


def sum_squared_error(y, t):
    return 0.5 * np.sum((y - t) ** 2)


mean_squared_error = sum_squared_error


def _as_batch(y, t):
    if y.ndim == 1:
        y = y.reshape(1, y.size)
        t = t.reshape(1, t.size) if t.shape == y.shape else t.reshape(1)
    return y, t


def cross_entropy_error(y, t, exact=False):
    """-sum t log(y + 1e-7) / batch; ``exact=True`` takes y as logits (log-softmax form)."""
    y, t = _as_batch(y, t)
    batch_size = y.shape[0]
    if exact:
        log_y = y - np.max(y, axis=1, keepdims=True)
        log_y = log_y - np.log(np.sum(np.exp(log_y), axis=1, keepdims=True))
    else:
        log_y = np.log(y + 1e-7)
    if t.shape == y.shape:
        return -np.sum(t * log_y) / batch_size
    t = t.reshape(batch_size)
    return -np.sum(log_y[np.arange(batch_size), t]) / batch_size


def softmax_loss(X, t, exact=False):
    if exact:
        return cross_entropy_error(X, t, exact=True)
    y = softmax(X)
    return cross_entropy_error(y, t)


def softmax_loss_backward(y, t, dout=1):
    """The book's SoftmaxWithLoss.backward: (y - t) * dout / batch, t one-hot or labels."""
    y2 = y.reshape(1, -1) if y.ndim == 1 else y
    t = np.asarray(t)
    batch_size = y2.shape[0]
    if t.shape == y.shape:
        dx = (y2 - t.reshape(y2.shape)) * dout / batch_size
    else:
        dx = y2.copy()
        dx[np.arange(batch_size), t.reshape(batch_size)] -= 1
        dx = dx * dout / batch_size
    return dx.reshape(y.shape)


def softmax_loss_grad(X, t, exact=False):
    """SoftmaxWithLoss forward then backward, as the book's layer computes them."""
    return softmax_loss(X, t, exact), softmax_loss_backward(softmax(X), t)


def one_hot(labels, num_classes=None, dtype=np.float64):
    labels = np.asarray(labels)
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if labels.size else 0
    T = np.zeros(labels.shape + (num_classes,), dtype=dtype)
    T.reshape(-1, num_classes)[np.arange(labels.size), labels.reshape(-1)] = 1
    return T


def binary_cross_entropy(y, t, from_logits=False):
    """-mean over the batch of t log y + (1 - t) log(1 - y), y = P(class 1)."""
    batch_size = y.shape[0] if y.ndim else 1
    if from_logits:
        # log(1 + exp(-|z|)) form: no overflow for logits of any magnitude
        loss = np.maximum(y, 0) - y * t + np.log1p(np.exp(-np.abs(y)))
    else:
        loss = -(t * np.log(y + 1e-7) + (1 - t) * np.log(1 - y + 1e-7))
    return np.sum(loss) / batch_size


# --- bfloat16 mixed precision (precision="bf16"): the rounding made explicit -------------------

def round_bf16(x):
    """The nearest bfloat16 of every float32 of ``x`` (ties to even), as float32: bfloat16 is
    float32's upper 16 bits, so the rounding is integer arithmetic on the bits.  Adding 0x7fff
    plus the lowest kept bit carries into the kept bits exactly when the dropped 16 bits are
    above half, or at half with the kept bits odd; the carry may run into the exponent (up to
    inf, as IEEE rounding overflows).  NaN is quieted (bit 22), sign and upper payload kept."""
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise TypeError(f"x must be float32 (bfloat16 rounds float32 values), got {x.dtype}")
    u = x.view(np.uint32).astype(np.uint64)  # room for the carry of 0xffffffff + 0x8000
    lsb = (u >> 16) & 1
    rounded = ((u + 0x7FFF + lsb) & 0xFFFF0000).astype(np.uint32)
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    quieted = ((u | 0x00400000) & 0xFFFF0000).astype(np.uint32)
    return np.where(nan, quieted, rounded).view(np.float32).reshape(x.shape)


def matmul_bf16(a, b):
    """``a @ b`` with both operands rounded to bfloat16 and the products summed in float32
    (each product of two bfloat16 values is exact in float32)."""
    return np.matmul(round_bf16(a), round_bf16(b))
