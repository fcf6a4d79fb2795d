"""The book's networks: ``TwoLayerNet`` (ch. 5) and ``MultiLayerNet``, on fastnn's layers.

Replace ``from two_layer_net import TwoLayerNet`` / ``from common.multi_layer_net import
MultiLayerNet`` by imports from here.  ``params``, ``layers``, ``predict``, ``loss``,
``accuracy``, ``gradient`` and ``numerical_gradient`` keep the book's names and meaning.
Additions: ``dtype`` (float64 as in the book, or float32), ``rng`` (a seed or Generator; by
default weights come from ``np.random.randn`` exactly as in the book, so ``np.random.seed``
reproduces the book's initial weights), ``exact_loss`` (log-softmax loss without the 1e-7),
and the 'identity' activation.

Twins: :mod:`fastnn.reference.nets`.
"""
from collections import OrderedDict

import numpy as np

from fastnn import _validation as v
from fastnn import threads
from fastnn._kernels import _network
from fastnn._kernels._network import ACTIVATION_CODES, count_argmax_hits
from fastnn.layers import Affine, Identity, Relu, Sigmoid, SoftmaxWithLoss

__all__ = ["TwoLayerNet", "MultiLayerNet", "SimpleConvNet", "DeepConvNet"]

ACTIVATIONS = {"relu": Relu, "sigmoid": Sigmoid, "identity": Identity}
# rows per block of predict/accuracy: large enough for efficient GEMMs, small enough that the
# block's activations stay in cache
_BLOCK_ROWS = 2048


class _Workspace:
    """The buffers of the compiled forward and backward passes for batches of ``n`` rows."""

    def __init__(self, sizes, n, dtype):
        self.n = n
        # the largest GEMM of a pass decides its BLAS threads (fastnn.threads)
        self.work = n * max(a * b for a, b in zip(sizes, sizes[1:]))
        self.x = np.empty((n, sizes[0]), dtype)  # an input block cast to the network's dtype
        self.a = [np.empty((n, s), dtype) for s in sizes[1:]]
        width = max(sizes[1:-1], default=1)
        self.s0 = np.empty((n, width), dtype)
        self.s1 = np.empty((n, width), dtype)
        self.row_loss = np.empty(n)

    def rows(self, m):
        """The layer buffers cut to the first ``m`` rows (C-contiguous views)."""
        return self.a if m == self.n else [a[:m] for a in self.a]


def _require_rows(x2, x):
    if x2.shape[0] == 0:
        raise ValueError(f"x is an empty batch, shape {np.shape(x)}: a mean over it is undefined")


def _check_dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype not in v.FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    return dtype


def _init_scale(weight_init_std, fan_in):
    """The book's rule: 'relu'/'he' -> sqrt(2/fan_in), 'sigmoid'/'xavier' -> sqrt(1/fan_in)."""
    name = str(weight_init_std).lower()
    if name in ("relu", "he"):
        return np.sqrt(2.0 / fan_in)
    if name in ("sigmoid", "xavier"):
        return np.sqrt(1.0 / fan_in)
    return v.check_finite_scalar(weight_init_std, "weight_init_std")


class _Network:
    """Affine layers with an activation between them and softmax-with-loss at the end.

    Subclasses name the activation layers as the book does.
    """

    _activation_name = "Activation_function"

    def _build(self, sizes, activation, weight_init_std, dtype, rng, exact_loss, params=None):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        for s in sizes:
            if v.check_count(s, "layer sizes") > v.GEMM_MAX:
                raise ValueError(f"layer sizes must be at most {v.GEMM_MAX}, got {list(sizes)}")
        self.activation = activation
        self.exact_loss = bool(exact_loss)
        self.dtype = _check_dtype(dtype)
        self.hidden_layer_num = len(sizes) - 2
        if params is None:
            generator = None if rng is None else np.random.default_rng(rng)
            params = {}
            for idx in range(1, len(sizes)):
                shape = (sizes[idx - 1], sizes[idx])
                noise = np.random.randn(*shape) if generator is None else generator.standard_normal(shape)
                params[f"W{idx}"] = (_init_scale(weight_init_std, sizes[idx - 1]) * noise).astype(self.dtype)
                params[f"b{idx}"] = np.zeros(sizes[idx], dtype=self.dtype)
        self.params = params

        self.layers = OrderedDict()
        last = len(sizes) - 1
        for idx in range(1, last + 1):
            self.layers[f"Affine{idx}"] = Affine(params[f"W{idx}"], params[f"b{idx}"])
            if idx < last:
                self.layers[f"{self._activation_name}{idx}"] = ACTIVATIONS[activation]()
        # the book calls it lastLayer in TwoLayerNet and last_layer in MultiLayerNet
        self.last_layer = self.lastLayer = SoftmaxWithLoss(exact=self.exact_loss)

        self._affines = [layer for name, layer in self.layers.items() if name.startswith("Affine")]
        self._sizes = list(sizes)
        self._code = ACTIVATION_CODES[activation]
        self._workspaces = {}
        self._checked_weights = None
        self._dW = [np.empty((sizes[i], sizes[i + 1]), self.dtype) for i in range(len(sizes) - 1)]
        self._db = [np.empty(sizes[i + 1], self.dtype) for i in range(len(sizes) - 1)]
        self._grad_buffers = self._dW + self._db
        self._grads = {}
        for idx, (dW, db) in enumerate(zip(self._dW, self._db), start=1):
            self._grads[f"W{idx}"], self._grads[f"b{idx}"] = dW, db
        self.last_loss = None

    @property
    def affine_layers(self):
        """The Affine layers, first to last."""
        return self._affines

    # --- the compiled path -------------------------------------------------------------------
    # It runs the whole network in one call whenever the layers' weights are the network's own
    # C-contiguous arrays of its dtype and the input computes in that dtype; otherwise (say
    # float32 weights given float64 data, which NumPy promotes to float64) the same results
    # come layer by layer.

    def _compiled_weights(self, x_dtype):
        if x_dtype != self.dtype:
            return None
        affines = self.affine_layers
        cached = self._checked_weights
        # the same arrays as last time, still of their shapes, dtype and layout (in-place
        # assignment to .shape, .strides or .dtype can change each): nothing else about them
        # can have changed
        dtype = self.dtype
        if cached is not None and len(affines) == len(cached[0]) and all(
                layer.W is W and layer.b is b and W.shape == (i, o) and b.shape == (o,)
                and W.dtype == dtype and b.dtype == dtype
                and W.flags.c_contiguous and b.flags.c_contiguous
                for layer, W, b, i, o in zip(affines, *cached, self._sizes, self._sizes[1:])):
            return cached
        Ws, bs = [], []
        for layer, size_in, size_out in zip(affines, self._sizes, self._sizes[1:]):
            W, b = layer.W, layer.b
            if not (isinstance(W, np.ndarray) and isinstance(b, np.ndarray)
                    and W.dtype == self.dtype and b.dtype == self.dtype
                    and W.flags.c_contiguous and b.flags.c_contiguous
                    and W.shape == (size_in, size_out) and b.shape == (size_out,)):
                return None
            Ws.append(W)
            bs.append(b)
        self._checked_weights = Ws, bs
        return self._checked_weights

    def _workspace(self, n):
        ws = self._workspaces.get(n)
        if ws is None:
            if len(self._workspaces) >= 4:  # batch sizes come and go; keep the latest few
                self._workspaces.pop(next(iter(self._workspaces)))
            ws = self._workspaces[n] = _Workspace(self._sizes, n, self.dtype)
        return ws

    def _prepare(self, x, cast=True):
        """(x as an (n, features) batch, one-sample flag, compiled weights or None).

        With ``cast=False`` the batch keeps its own dtype and layout: predict and accuracy
        cast it block by block, so a large data set is never copied whole.
        """
        dtype = v.compute_dtype(("x", x), ("W1", self._affines[0].W))
        if cast:
            x2, single = v.as_batch(x, "x", dtype)
        else:
            x2, single = v.batch_view(x)
        if x2.shape[1] != self._sizes[0]:
            raise ValueError(
                f"x has {x2.shape[1]} features per sample (shape {np.shape(x)}) but the network "
                f"takes {self._sizes[0]}"
            )
        return x2, single, self._compiled_weights(dtype)

    def _blocks(self, x2):
        """(start, stop, workspace, block) over blocks of rows of x2, each block C-contiguous
        in the network's dtype (cast into the workspace where it is not)."""
        n = x2.shape[0]
        ws = self._workspace(min(_BLOCK_ROWS, n))
        for start in range(0, n, _BLOCK_ROWS):
            stop = min(start + _BLOCK_ROWS, n)
            block = x2[start:stop]
            if block.dtype != self.dtype or not block.flags.c_contiguous:
                np.copyto(ws.x[:stop - start], block, casting="unsafe")
                block = ws.x[:stop - start]
            yield start, stop, ws, block

    def _targets(self, x2, t):
        return v.resolve_targets(t, (x2.shape[0], self._sizes[-1]), x2.dtype)

    def predict(self, x):
        """Scores (logits) for ``x`` of shape (N, input_size) or (input_size,)."""
        x2, single, weights = self._prepare(x, cast=False)
        if weights is None:
            for layer in self.layers.values():
                x = layer.forward(x)
            return x
        out = np.empty((x2.shape[0], self._sizes[-1]), self.dtype)
        for start, stop, ws, block in self._blocks(x2):
            with threads.for_work(ws.work):
                _network.forward(*weights, block, ws.rows(stop - start)[:-1] + [out[start:stop]],
                                 self._code)
        return out[0] if single else out

    def _weight_decay(self):
        if not self.weight_decay_lambda:
            return 0.0
        return sum(0.5 * self.weight_decay_lambda * float(np.vdot(W, W))
                   for W in (layer.W for layer in self.affine_layers))

    def loss(self, x, t):
        """The mean cross-entropy of softmax(predict(x)) against ``t``, plus weight decay."""
        x2, _, weights = self._prepare(x)
        _require_rows(x2, x)
        if weights is None:
            y = self.predict(x)
            return self.last_layer.forward(y, t) + self._weight_decay()
        labels, t = self._targets(x2, t)
        ws = self._workspace(x2.shape[0])
        with threads.for_work(ws.work):
            loss = _network.loss(*weights, x2, t, labels, ws.a, ws.row_loss, self._code,
                                 self.exact_loss)
        return self.dtype.type(loss) + self._weight_decay()

    def accuracy(self, x, t):
        """Fraction of rows of ``x`` whose argmax score equals the label (or one-hot argmax)."""
        x2, _, weights = self._prepare(x, cast=False)
        n, k = x2.shape[0], self._sizes[-1]
        t = np.asarray(t)
        if t.ndim != 1 and t.shape == (n, k):
            t = np.argmax(t, axis=-1)
        t = v.as_labels(t, n, k, "t")
        _require_rows(x2, x)
        if weights is None:
            return np.sum(np.argmax(self.predict(x2), axis=-1) == t) / float(n)
        hits = 0
        for start, stop, ws, block in self._blocks(x2):
            buffers = ws.rows(stop - start)
            with threads.for_work(ws.work):
                _network.forward(*weights, block, buffers, self._code)
            hits += count_argmax_hits(buffers[-1], t[start:stop])
        return hits / float(n)

    def gradient(self, x, t):
        """Backprop: the gradient of ``loss(x, t)`` for every entry of ``params``.

        The returned arrays are the network's gradient buffers, overwritten by its next
        ``gradient`` call (as PyTorch's ``.grad``): copy them to keep them.  The batch's loss
        is left in ``last_loss``.
        """
        x2, _, weights = self._prepare(x)
        _require_rows(x2, x)
        if weights is None:
            return self._layered_gradient(x, t)
        labels, t = self._targets(x2, t)
        ws = self._workspace(x2.shape[0])
        if _network.overlapping((x2, t), self._grad_buffers):
            # an input inside the gradient buffers (the last call's result handed back) would
            # be overwritten while it is read
            x2, t = x2.copy(), t.copy()
        with threads.for_work(ws.work):
            loss = _network.gradient(
                *weights, x2, t, labels, ws.a, self._dW, self._db, ws.s0, ws.s1, ws.row_loss,
                self._code, self.exact_loss, self.weight_decay_lambda)
        self.last_loss = self.dtype.type(loss) + self._weight_decay()
        for layer, dW, db in zip(self.affine_layers, self._dW, self._db):
            layer.dW, layer.db = dW, db
        return self._grads

    def _layered_gradient(self, x, t):
        """The book's gradient, layer object by layer object."""
        self.last_loss = self.loss(x, t)
        dout = self.last_layer.backward(1)
        layers = list(self.layers.values())
        for layer in reversed(layers[1:]):
            dout = layer.backward(dout)
        layers[0].backward(dout, compute_dx=False)  # nobody needs the input's gradient
        grads = {}
        for idx, layer in enumerate(self.affine_layers, start=1):
            grads[f"W{idx}"] = layer.dW + self.weight_decay_lambda * layer.W if self.weight_decay_lambda else layer.dW
            grads[f"b{idx}"] = layer.db
        return grads

    def snapshot(self):
        """An independent network with copies of this one's current parameters (the Trainer
        evaluates one in another thread while training goes on)."""
        params = {}
        for idx, layer in enumerate(self.affine_layers, start=1):
            params[f"W{idx}"], params[f"b{idx}"] = layer.W.copy(), layer.b.copy()
        return MultiLayerNet.from_params(params, activation=self.activation,
                                         weight_decay_lambda=self.weight_decay_lambda,
                                         exact_loss=self.exact_loss)

    def numerical_gradient(self, x, t):
        """Central differences (h = 1e-4) of ``loss`` for every parameter, as the book's
        brute force computes them, swept in compiled code (see :mod:`fastnn.gradient`)."""
        from fastnn.gradient import network_numerical_gradient

        affines = self.affine_layers
        with threads.for_work(0):  # the sweep's GEMMs are small: one thread, under a cap
            dWs, dbs = network_numerical_gradient(
                [layer.W for layer in affines], [layer.b for layer in affines], x, t,
                activation=self.activation, exact_loss=self.exact_loss,
                weight_decay_lambda=self.weight_decay_lambda,
            )
        grads = {}
        for idx, (dW, db) in enumerate(zip(dWs, dbs), start=1):
            grads[f"W{idx}"], grads[f"b{idx}"] = dW, db
        return grads


class TwoLayerNet(_Network):
    """input -> Affine1 -> Relu1 -> Affine2 -> softmax-with-loss (the book's chapter 5).

    Twin: :class:`fastnn.reference.nets.TwoLayerNet`.
    """

    _activation_name = "Relu"

    def __init__(self, input_size, hidden_size, output_size, weight_init_std=0.01,
                 dtype=np.float64, rng=None, exact_loss=False):
        self.weight_decay_lambda = 0
        self._build([input_size, hidden_size, output_size], "relu", weight_init_std, dtype,
                    rng, exact_loss)


class MultiLayerNet(_Network):
    """Fully connected network of any depth (the book's ``common/multi_layer_net.py``).

    ``activation`` is 'relu', 'sigmoid' or 'identity' (with 'identity', the whole network is
    one affine map); ``weight_init_std`` a number or 'relu'/'he', 'sigmoid'/'xavier';
    ``weight_decay_lambda`` adds 0.5 * lambda * sum(W**2) to the loss.

    Twin: :class:`fastnn.reference.nets.MultiLayerNet`.
    """

    def __init__(self, input_size, hidden_size_list, output_size, activation="relu",
                 weight_init_std="relu", weight_decay_lambda=0, dtype=np.float64, rng=None,
                 exact_loss=False, *, _params=None):
        self.input_size = input_size
        self.output_size = output_size
        self.hidden_size_list = list(hidden_size_list)
        self.weight_decay_lambda = v.check_finite_scalar(weight_decay_lambda, "weight_decay_lambda")
        self._build([input_size, *self.hidden_size_list, output_size], activation,
                    weight_init_std, dtype, rng, exact_loss, _params)

    @classmethod
    def from_params(cls, params, activation="relu", weight_decay_lambda=0, exact_loss=False):
        """A network over given weights ``{'W1', 'b1', ..., 'WL', 'bL'}`` (e.g. from
        :func:`fastnn.io.load_params`), used as they are: no copy, their own dtype.

        The book's ``sample_weight.pkl`` is a 784-50-100-10 network with sigmoid layers:
        ``MultiLayerNet.from_params(load_params(path), activation='sigmoid')``.
        """
        n_layers = sum(1 for key in params if key.startswith("W"))
        expected = {f"{p}{i}" for i in range(1, n_layers + 1) for p in "Wb"}
        if n_layers == 0 or set(params) != expected:
            raise ValueError(f"params must hold W1, b1, ..., W{n_layers}, b{n_layers}; got {sorted(params)}")
        for key, a in params.items():
            if not isinstance(a, np.ndarray):
                raise TypeError(f"params[{key!r}] must be a NumPy array (the network's layers "
                                f"hold it by reference), got {type(a).__name__}")
        dtypes = {a.dtype for a in params.values()}
        if len(dtypes) != 1:
            raise TypeError(f"params must share one dtype, got {sorted(map(str, dtypes))}")
        if np.ndim(params["W1"]) != 2:
            raise ValueError(f"W1 must be a 2-D (inputs, units) array, got shape {np.shape(params['W1'])}")
        sizes = [np.shape(params["W1"])[0]]
        for idx in range(1, n_layers + 1):
            W, b = params[f"W{idx}"], params[f"b{idx}"]
            if np.ndim(W) != 2 or W.shape[0] != sizes[-1] or np.shape(b) != (W.shape[1],):
                raise ValueError(
                    f"W{idx} {np.shape(W)} and b{idx} {np.shape(b)} do not follow a layer of "
                    f"{sizes[-1]} units"
                )
            sizes.append(W.shape[1])
        return cls(sizes[0], sizes[1:-1], sizes[-1], activation=activation,
                   weight_decay_lambda=weight_decay_lambda, dtype=dtypes.pop(),
                   exact_loss=exact_loss, _params=dict(params))


# the convolutional networks of chapters 7 and 8 live in their own module
from fastnn.convnets import DeepConvNet, SimpleConvNet  # noqa: E402
