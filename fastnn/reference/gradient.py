"""The book's ``common/gradient.py`` in plain NumPy: twins of ``fastnn.gradient``."""
import numpy as np


def _numerical_gradient_1d(f, x, h=1e-4):
    grad = np.zeros_like(x)
    for idx in range(x.size):
        tmp_val = x[idx]
        x[idx] = float(tmp_val) + h
        fxh1 = f(x)
        x[idx] = tmp_val - h
        fxh2 = f(x)
        grad[idx] = (fxh1 - fxh2) / (2 * h)
        x[idx] = tmp_val
    return grad


def numerical_gradient_2d(f, X, h=1e-4):
    if X.ndim == 1:
        return _numerical_gradient_1d(f, X, h)
    grad = np.zeros_like(X)
    for idx, x in enumerate(X):
        grad[idx] = _numerical_gradient_1d(f, x, h)
    return grad


def numerical_gradient(f, x, h=1e-4):
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=["readwrite"])
    while not it.finished:
        idx = it.multi_index
        tmp_val = x[idx]
        x[idx] = float(tmp_val) + h
        fxh1 = f(x)
        x[idx] = tmp_val - h
        fxh2 = f(x)
        grad[idx] = (fxh1 - fxh2) / (2 * h)
        x[idx] = tmp_val
        it.iternext()
    return grad


def numerical_diff(f, x, h=1e-4, method="central"):
    if method == "forward":
        return (f(x + h) - f(x)) / h
    return (f(x + h) - f(x - h)) / (2 * h)


def numerical_gradient_batched(f, x, h=1e-4, chunk_size=None):
    """The loop of numerical_gradient on a copy of x, f evaluated one point at a time
    (chunk_size, a bound on the fast version's memory, changes nothing here)."""
    x = np.array(x)
    return numerical_gradient(lambda p: f(p[np.newaxis])[0], x, h)


def gradient_descent(f, init_x, lr=0.01, step_num=100, return_path=False):
    x = np.array(init_x)  # a copy: the book's x = init_x would move the caller's array
    if x.dtype.kind in "biu":
        x = x.astype(np.float64)
    x_history = [x.copy()]
    for i in range(step_num):
        grad = numerical_gradient(f, x)
        x -= lr * grad
        x_history.append(x.copy())
    if return_path:
        return x, np.array(x_history)
    return x


def network_numerical_gradient(weights, biases, x, t, activation="relu", exact_loss=False,
                               weight_decay_lambda=0.0, h=1e-4):
    """The book's brute force over the loss of MultiLayerNet, on copies of the parameters."""
    from fastnn.reference.functions import cross_entropy_error, relu, sigmoid, softmax

    act = {"relu": relu, "sigmoid": sigmoid, "identity": lambda z: z}[activation]
    Ws = [np.array(W) for W in weights]
    bs = [np.array(b) for b in biases]
    x = np.asarray(x)
    x = x.reshape(1, -1) if x.ndim == 1 else x.reshape(x.shape[0], -1)
    t = np.asarray(t)
    if t.ndim == 1 and t.size == Ws[-1].shape[1] and x.shape[0] == 1 and t.dtype.kind == "f":
        t = t.reshape(1, -1)

    def loss(_):
        a = x
        for W, b in zip(Ws[:-1], bs[:-1]):
            a = act(a @ W + b)
        z = a @ Ws[-1] + bs[-1]
        if exact_loss:
            ce = cross_entropy_error(z, t, exact=True)
        else:
            ce = cross_entropy_error(softmax(z), t)
        weight_decay = 0
        for W in Ws:
            weight_decay += 0.5 * weight_decay_lambda * np.sum(W ** 2)
        return ce + weight_decay

    dWs = [numerical_gradient(loss, W, h) for W in Ws]
    dbs = [numerical_gradient(loss, b, h) for b in bs]
    return dWs, dbs
