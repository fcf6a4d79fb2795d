"""The book's networks: ``TwoLayerNet`` (ch. 5) and ``MultiLayerNet``, on fastnn's layers.

Replace ``from two_layer_net import TwoLayerNet`` / ``from common.multi_layer_net import
MultiLayerNet`` by imports from here.  ``params``, ``layers``, ``predict``, ``loss``,
``accuracy``, ``gradient`` and ``numerical_gradient`` keep the book's names and meaning.
Additions: ``dtype`` (float64 as in the book, or float32), ``rng`` (a seed or Generator; by
default weights come from ``np.random.randn`` exactly as in the book, so ``np.random.seed``
reproduces the book's initial weights), ``exact_loss`` (log-softmax loss without the 1e-7),
the 'identity' activation, and ``precision='bf16'`` (float32 networks: the operands of every
GEMM rounded to bfloat16, products summed in float32; weights, gradients, optimizer state and
activations stay float32; fastnn/_kernels/_bf16.pyx).

Twins: :mod:`fastnn.reference.nets`.
"""
from collections import OrderedDict

import numpy as np

from fastnn import _validation as v
from fastnn import threads
from fastnn._kernels import _bf16, _network, _network_extend, _normalization, _sparse
from fastnn._kernels._network import ACTIVATION_CODES, count_argmax_hits
from fastnn.layers import Affine, Identity, Relu, Sigmoid, SoftmaxWithLoss

__all__ = ["TwoLayerNet", "MultiLayerNet", "MultiLayerNetExtend", "SimpleConvNet", "DeepConvNet"]

ACTIVATIONS = {"relu": Relu, "sigmoid": Sigmoid, "identity": Identity}
# rows per block of predict/accuracy: large enough for efficient GEMMs, small enough that the
# block's activations stay in cache
_BLOCK_ROWS = 2048


class _Bf16Buffers:
    """A bf16 network's operand buffers for batches of ``n`` rows (fastnn/_kernels/_bf16.pyx):
    every layer's rounded input and the rounded delta of the layer being walked."""

    def __init__(self, sizes, n):
        self.inputs = [np.empty((n, s), np.float32) for s in sizes[:-1]]
        self.delta = np.empty((n, max(sizes[1:])), np.float32)

    def operands(self, weights, sizes, m, round_weights):
        """The checked buffers of a pass of ``m`` rows; the rounded ``weights`` (the
        network's) are rewritten by the pass when ``round_weights``."""
        n = self.delta.shape[0]
        inputs = self.inputs if m == n else [a[:m] for a in self.inputs]
        return _bf16.Operands(weights, inputs, self.delta[:m], sizes, m, round_weights)


def _bf16_weights(sizes, precision):
    """A bf16 network's rounded weights (rewritten at every call), or None."""
    if precision != "bf16":
        return None
    return [np.empty((i, o), np.float32) for i, o in zip(sizes, sizes[1:])]


def _refuse_foreign_weights(network):
    v.refuse_foreign_weights(network.affine_layers,
                             f"the network's layer sizes {network._sizes}")


class _Workspace:
    """The buffers of the compiled forward and backward passes for batches of ``n`` rows."""

    def __init__(self, sizes, n, dtype, precision=None):
        self.n = n
        # the largest GEMM of a pass decides its BLAS threads (fastnn.threads)
        self.work = n * max(a * b for a, b in zip(sizes, sizes[1:]))
        self.x = np.empty((n, sizes[0]), dtype)  # an input block cast to the network's dtype
        self.a = [np.empty((n, s), dtype) for s in sizes[1:]]
        width = max(sizes[1:-1], default=1)
        self.s0 = np.empty((n, width), dtype)
        self.s1 = np.empty((n, width), dtype)
        self.row_loss = np.empty(n)
        self.bf16 = _Bf16Buffers(sizes, n) if precision == "bf16" else None
        # the first layer over a sparse batch's nonzeros (_network.pyx)
        self.sparse = _sparse.Buffers(n, sizes[0], dtype)

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

    def _build(self, sizes, activation, weight_init_std, dtype, rng, exact_loss, params=None,
               precision=None):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        for s in sizes:
            if v.check_count(s, "layer sizes") > v.GEMM_MAX:
                raise ValueError(f"layer sizes must be at most {v.GEMM_MAX}, got {list(sizes)}")
        self.activation = activation
        self.exact_loss = bool(exact_loss)
        self.dtype = _check_dtype(dtype)
        self.precision = v.check_precision(precision, self.dtype)
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
        self._bf16_W = _bf16_weights(self._sizes, self.precision)
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
    # come layer by layer.  A bf16 network always computes in float32 (its input cast, as
    # its GEMM operands are rounded anyway) and only on the compiled path: the book's layers
    # have no bf16.

    def _bf16_operands(self, ws, m, round_weights=True):
        """The bf16 operand buffers of a pass of ``m`` rows, or None for the dtype's own
        precision."""
        if ws.bf16 is None:
            return None
        return ws.bf16.operands(self._bf16_W, self._sizes, m, round_weights)

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
            ws = self._workspaces[n] = _Workspace(self._sizes, n, self.dtype, self.precision)
        return ws

    def _prepare(self, x, cast=True):
        """(x as an (n, features) batch, one-sample flag, compiled weights or None).

        With ``cast=False`` the batch keeps its own dtype and layout: predict and accuracy
        cast it block by block, so a large data set is never copied whole.
        """
        dtype = v.compute_dtype(("x", x), ("W1", self._affines[0].W))
        if self.precision is not None:
            dtype = self.dtype
        if cast:
            # float32 images stay float32 for a float64 network: the compiled pass widens
            # them itself (_network.pyx), as the GEMM's float64 copy or not at all
            widen = (dtype == np.float64 and self.precision is None
                     and getattr(x, "dtype", None) == np.float32)
            x2, single = v.as_batch(x, "x", np.float32 if widen else dtype)
        else:
            x2, single = v.batch_view(x)
        if x2.shape[1] != self._sizes[0]:
            raise ValueError(
                f"x has {x2.shape[1]} features per sample (shape {np.shape(x)}) but the network "
                f"takes {self._sizes[0]}"
            )
        weights = self._compiled_weights(dtype)
        if weights is None and self.precision is not None:
            _refuse_foreign_weights(self)
        return x2, single, weights

    def _blocks(self, x2):
        """(start, stop, workspace, block) over blocks of rows of x2, each block C-contiguous
        in the network's dtype (cast into the workspace where it is not), or float32 for a
        float64 network, which widens it itself."""
        n = x2.shape[0]
        ws = self._workspace(min(_BLOCK_ROWS, n))
        ok = (self.dtype, np.float32)
        for start in range(0, n, _BLOCK_ROWS):
            stop = min(start + _BLOCK_ROWS, n)
            block = x2[start:stop]
            if block.dtype not in ok or not block.flags.c_contiguous:
                np.copyto(ws.x[:stop - start], block, casting="unsafe")
                block = ws.x[:stop - start]
            yield start, stop, ws, block

    def _targets(self, x2, t):
        # in the network's dtype: the compiled pass's, whatever x2's (widened float32 images)
        return v.resolve_targets(t, (x2.shape[0], self._sizes[-1]), self.dtype)

    def predict(self, x):
        """Scores (logits) for ``x`` of shape (N, input_size) or (input_size,)."""
        x2, single, weights = self._prepare(x, cast=False)
        if weights is None:
            for layer in self.layers.values():
                x = layer.forward(x)
            return x
        out = np.empty((x2.shape[0], self._sizes[-1]), self.dtype)
        for start, stop, ws, block in self._blocks(x2):
            ops = self._bf16_operands(ws, stop - start, round_weights=start == 0)
            with threads.for_work(ws.work):
                _network.forward(*weights, block, ws.rows(stop - start)[:-1] + [out[start:stop]],
                                 self._code, ops, ws.sparse)
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
        ops = self._bf16_operands(ws, x2.shape[0])
        with threads.for_work(ws.work):
            loss = _network.loss(*weights, x2, t, labels, ws.a, ws.row_loss, self._code,
                                 self.exact_loss, ops, ws.sparse)
        return self.dtype.type(loss) + self._weight_decay()

    def accuracy(self, x, t):
        """Fraction of rows of ``x`` whose argmax score equals the label (or one-hot argmax)."""
        x2, _, weights = self._prepare(x, cast=False)
        n, k = x2.shape[0], self._sizes[-1]
        t = v.accuracy_labels(t, n, k)
        _require_rows(x2, x)
        if weights is None:
            return np.sum(np.argmax(self.predict(x2), axis=-1) == t) / float(n)
        hits = 0
        for start, stop, ws, block in self._blocks(x2):
            buffers = ws.rows(stop - start)
            ops = self._bf16_operands(ws, stop - start, round_weights=start == 0)
            with threads.for_work(ws.work):
                _network.forward(*weights, block, buffers, self._code, ops, ws.sparse)
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
        ops = self._bf16_operands(ws, x2.shape[0])
        with threads.for_work(ws.work):
            loss = _network.gradient(
                *weights, x2, t, labels, ws.a, self._dW, self._db, ws.s0, ws.s1, ws.row_loss,
                self._code, self.exact_loss, self.weight_decay_lambda, ops, ws.sparse)
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
                                         exact_loss=self.exact_loss, precision=self.precision)

    def numerical_gradient(self, x, t):
        """Central differences (h = 1e-4) of ``loss`` for every parameter, as the book's
        brute force computes them, swept in compiled code (see :mod:`fastnn.gradient`)."""
        from fastnn.gradient import network_numerical_gradient

        v.refuse_bf16_numerical_gradient(self.precision)
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
                 dtype=np.float64, rng=None, exact_loss=False, precision=None):
        self.weight_decay_lambda = 0
        self._build([input_size, hidden_size, output_size], "relu", weight_init_std, dtype,
                    rng, exact_loss, precision=precision)


class MultiLayerNet(_Network):
    """Fully connected network of any depth (the book's ``common/multi_layer_net.py``).

    ``activation`` is 'relu', 'sigmoid' or 'identity' (with 'identity', the whole network is
    one affine map); ``weight_init_std`` a number or 'relu'/'he', 'sigmoid'/'xavier';
    ``weight_decay_lambda`` adds 0.5 * lambda * sum(W**2) to the loss; ``precision='bf16'``
    (float32 only) rounds the operands of every GEMM to bfloat16 (see the module's notes).

    Twin: :class:`fastnn.reference.nets.MultiLayerNet`.
    """

    def __init__(self, input_size, hidden_size_list, output_size, activation="relu",
                 weight_init_std="relu", weight_decay_lambda=0, dtype=np.float64, rng=None,
                 exact_loss=False, precision=None, *, _params=None):
        self.input_size = input_size
        self.output_size = output_size
        self.hidden_size_list = list(hidden_size_list)
        self.weight_decay_lambda = v.check_finite_scalar(weight_decay_lambda, "weight_decay_lambda")
        self._build([input_size, *self.hidden_size_list, output_size], activation,
                    weight_init_std, dtype, rng, exact_loss, _params, precision)

    @classmethod
    def from_params(cls, params, activation="relu", weight_decay_lambda=0, exact_loss=False,
                    precision=None):
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
        # subclasses as the plain arrays they hold (the same memory): shapes are the buffers'
        params = {key: v.as_plain(a, f"params[{key!r}]") for key, a in params.items()}
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
                   exact_loss=exact_loss, precision=precision, _params=dict(params))


# --- chapter 6: MultiLayerNetExtend (weight decay, dropout, batch normalization) -----------------

class _ExtendWorkspace:
    """The buffers of MultiLayerNetExtend's compiled passes for batches of ``n`` rows."""

    def __init__(self, sizes, n, dtype, batchnorm, dropout, precision=None):
        hidden = sizes[1:-1]
        widest = max(hidden, default=1)
        self.n = n
        self.work = n * max(a * b for a, b in zip(sizes, sizes[1:]))
        self.x = np.empty((n, sizes[0]), dtype)
        self.a = [np.empty((n, s), dtype) for s in sizes[1:]]
        self.s0 = np.empty((n, widest), dtype)
        self.s1 = np.empty((n, widest), dtype)
        self.row_loss = np.empty(n)
        self.masks = [np.empty((n, s), bool) for s in hidden] if dropout else None
        self.bf16 = _Bf16Buffers(sizes, n) if precision == "bf16" else None
        # the first layer over a sparse batch's nonzeros (_network_extend.pyx)
        self.sparse = _sparse.Buffers(n, sizes[0], dtype)
        self.bn = None
        if batchnorm:
            self.bn = {
                "xn": [np.empty((n, s), dtype) for s in hidden],
                "inv_std": [np.empty(s) for s in hidden],
                "std": [np.empty(s, dtype) for s in hidden],
                "z": np.empty((n, widest), dtype),
                "work": np.empty(2 * widest),
            }


class MultiLayerNetExtend:
    """The book's ``common/multi_layer_net_extend.py``: a fully connected network with weight
    decay, dropout and batch normalization, each layer ``Affine -> [BatchNorm] -> activation
    -> [Dropout]`` and softmax-with-loss at the end.

    The book's arguments (its ``dropout_ration`` spelling included), ``params`` (``W1``,
    ``b1``, ..., then ``gamma1``, ``beta1``, ... with batch normalization), ``layers``,
    ``predict(x, train_flg=False)``, ``loss(x, t, train_flg=False)``, ``accuracy``,
    ``gradient`` (weight decay added to each dW as the book adds it) and
    ``numerical_gradient``.  Additions as in :class:`MultiLayerNet`: ``dtype``,
    ``precision``, ``rng`` (a
    seed or Generator for the weights and then the dropout masks; by default both come from
    NumPy's global generator in the book's order, so ``np.random.seed`` reproduces the book's
    weights, masks and numbers), ``exact_loss``, the 'identity' activation.

    ``gradient`` is one compiled training step (GEMMs, batch normalization with the
    activation and the dropout mask fused into its passes, the loss) whenever the layers hold
    the network's own C-contiguous arrays of its dtype and the input computes in it; else the
    layer objects run one by one, as in the book.  The returned arrays are the network's
    buffers, overwritten by its next call (as PyTorch's ``.grad``); the batch loss is left in
    ``last_loss``.  The running statistics live in the BatchNorm layers (float64).

    Twin: :class:`fastnn.reference.nets.MultiLayerNetExtend`.
    """

    def __init__(self, input_size, hidden_size_list, output_size, activation="relu",
                 weight_init_std="relu", weight_decay_lambda=0, use_dropout=False,
                 dropout_ration=0.5, use_batchnorm=False, dtype=np.float64, rng=None,
                 exact_loss=False, precision=None):
        from fastnn.layers import BatchNormalization, Dropout

        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.hidden_size_list = list(hidden_size_list)
        sizes = [input_size, *self.hidden_size_list, output_size]
        for s in sizes:
            if v.check_count(s, "layer sizes") > v.GEMM_MAX:
                raise ValueError(f"layer sizes must be at most {v.GEMM_MAX}, got {sizes}")
        self.input_size, self.output_size = input_size, output_size
        self.hidden_layer_num = len(self.hidden_size_list)
        self.activation = activation
        self.weight_decay_lambda = v.check_finite_scalar(weight_decay_lambda, "weight_decay_lambda")
        self.use_dropout = bool(use_dropout)
        self.dropout_ration = v.check_ratio(dropout_ration, "dropout_ration")
        self.use_batchnorm = bool(use_batchnorm)
        self.exact_loss = bool(exact_loss)
        self.dtype = _check_dtype(dtype)
        self.precision = v.check_precision(precision, self.dtype)
        self._generator = None if rng is None else np.random.default_rng(rng)

        self.params = {}
        for idx in range(1, len(sizes)):
            shape = (sizes[idx - 1], sizes[idx])
            noise = (np.random.randn(*shape) if self._generator is None
                     else self._generator.standard_normal(shape))
            self.params[f"W{idx}"] = (_init_scale(weight_init_std, sizes[idx - 1]) * noise).astype(self.dtype)
            self.params[f"b{idx}"] = np.zeros(sizes[idx], dtype=self.dtype)

        self.layers = OrderedDict()
        self._affines, self._batchnorms, self._dropouts = [], [], []
        for idx in range(1, self.hidden_layer_num + 1):
            self.layers[f"Affine{idx}"] = Affine(self.params[f"W{idx}"], self.params[f"b{idx}"])
            if self.use_batchnorm:
                width = sizes[idx]
                self.params[f"gamma{idx}"] = np.ones(width, dtype=self.dtype)
                self.params[f"beta{idx}"] = np.zeros(width, dtype=self.dtype)
                self.layers[f"BatchNorm{idx}"] = BatchNormalization(self.params[f"gamma{idx}"],
                                                                    self.params[f"beta{idx}"])
            self.layers[f"Activation_function{idx}"] = ACTIVATIONS[activation]()
            if self.use_dropout:
                self.layers[f"Dropout{idx}"] = Dropout(self.dropout_ration, rng=self._generator)
        idx = self.hidden_layer_num + 1
        self.layers[f"Affine{idx}"] = Affine(self.params[f"W{idx}"], self.params[f"b{idx}"])
        self.last_layer = SoftmaxWithLoss(exact=self.exact_loss)
        for name, layer in self.layers.items():
            if name.startswith("Affine"):
                self._affines.append(layer)
            elif name.startswith("BatchNorm"):
                self._batchnorms.append(layer)
            elif name.startswith("Dropout"):
                self._dropouts.append(layer)

        self._sizes = sizes
        self._code = ACTIVATION_CODES[activation]
        self._workspaces = {}
        self._bf16_W = _bf16_weights(sizes, self.precision)
        L = len(sizes) - 1
        self._dW = [np.empty((sizes[i], sizes[i + 1]), self.dtype) for i in range(L)]
        self._db = [np.empty(sizes[i + 1], self.dtype) for i in range(L)]
        hidden = sizes[1:-1] if self.use_batchnorm else []
        self._dgamma = [np.empty(s, self.dtype) for s in hidden]
        self._dbeta = [np.empty(s, self.dtype) for s in hidden]
        self._grad_buffers = self._dW + self._db + self._dgamma + self._dbeta
        # the book's order of the gradients: W1, b1, gamma1, beta1, W2, ...
        self._grads = {}
        for i in range(L):
            self._grads[f"W{i + 1}"], self._grads[f"b{i + 1}"] = self._dW[i], self._db[i]
            if i < len(hidden):
                self._grads[f"gamma{i + 1}"] = self._dgamma[i]
                self._grads[f"beta{i + 1}"] = self._dbeta[i]
        self.last_loss = None

    # --- the compiled path ---------------------------------------------------------------------

    def _compiled_arrays(self, x_dtype):
        """(Ws, bs, gammas, betas) when every layer holds the network's own kind of arrays
        (C-contiguous, its dtype, the right shapes) and the input computes in its dtype."""
        if x_dtype != self.dtype:
            return None
        dtype, sizes = self.dtype, self._sizes

        def fits(a, shape):
            return (isinstance(a, np.ndarray) and a.dtype == dtype and a.shape == shape
                    and a.flags.c_contiguous)

        Ws, bs = [], []
        for layer, i, o in zip(self._affines, sizes, sizes[1:]):
            if not (fits(layer.W, (i, o)) and fits(layer.b, (o,))):
                return None
            Ws.append(layer.W)
            bs.append(layer.b)
        gammas, betas = [], []
        for layer, width in zip(self._batchnorms, sizes[1:-1]):
            if not (fits(layer.gamma, (width,)) and fits(layer.beta, (width,))):
                return None
            gammas.append(layer.gamma)
            betas.append(layer.beta)
        return Ws, bs, gammas, betas

    def _workspace(self, n):
        ws = self._workspaces.get(n)
        if ws is None:
            if len(self._workspaces) >= 4:  # batch sizes come and go; keep the latest few
                self._workspaces.pop(next(iter(self._workspaces)))
            ws = self._workspaces[n] = _ExtendWorkspace(self._sizes, n, self.dtype,
                                                        self.use_batchnorm, self.use_dropout,
                                                        self.precision)
        return ws

    def _bn_arrays(self, ws, arrays, rows=None):
        """The workspace's batch-normalization buffers (cut to the first ``rows`` rows) with
        the layers' parameters and running statistics (float64 (width,) arrays, created as
        the book's zeros at first use, updated in place by the training pass)."""
        if ws.bn is None:
            return None
        buffers = ws.bn
        if rows is not None and rows != ws.n:
            buffers = dict(buffers, xn=[a[:rows] for a in buffers["xn"]], z=buffers["z"][:rows])
        means, variances = [], []
        for layer, width in zip(self._batchnorms, self._sizes[1:-1]):
            for name in ("running_mean", "running_var"):
                stat = getattr(layer, name)
                if not (isinstance(stat, np.ndarray) and stat.dtype == np.float64
                        and stat.shape == (width,) and stat.flags.c_contiguous
                        and stat.flags.writeable):
                    stat = np.zeros(width) if stat is None else _as_stat(stat, width, name)
                    setattr(layer, name, stat)
            means.append(layer.running_mean)
            variances.append(layer.running_var)
        return dict(buffers, gammas=arrays[2], betas=arrays[3], running_means=means,
                    running_vars=variances)

    def _masks(self, ws, train_flg):
        if not (self.use_dropout and train_flg):
            return None
        from fastnn.layers import _bit_generator

        # in the book's order: the masks of the layers one after the other
        _normalization.dropout_masks(_bit_generator(self._generator), ws.masks, self.dropout_ration)
        return ws.masks

    def _prepare(self, x, cast=True):
        dtype = v.compute_dtype(("x", x), ("W1", self._affines[0].W))
        if self.precision is not None:
            dtype = self.dtype  # as in _Network._prepare
        if cast:
            x2, single = v.as_batch(x, "x", dtype)
        else:
            x2, single = v.batch_view(x)
        if x2.shape[1] != self._sizes[0]:
            raise ValueError(
                f"x has {x2.shape[1]} features per sample (shape {np.shape(x)}) but the network "
                f"takes {self._sizes[0]}"
            )
        arrays = self._compiled_arrays(dtype)
        if arrays is None and self.precision is not None:
            _refuse_foreign_weights(self)
        return x2, single, arrays

    _bf16_operands = _Network._bf16_operands

    def _targets(self, x2, t):
        kind, t = v.as_targets(t, (x2.shape[0], self._sizes[-1]))
        if kind == "targets":
            t = v.as_float(t, "t", x2.dtype)
        return kind == "labels", t

    def _forward(self, arrays, block, ws, out_rows, train_flg, round_weights=True):
        momentum = self._batchnorms[0].momentum if self._batchnorms else 0.9
        ops = self._bf16_operands(ws, block.shape[0], round_weights)
        with threads.for_work(ws.work):
            _network_extend.forward(arrays[0], arrays[1], block,
                                    self._bn_arrays(ws, arrays, block.shape[0]),
                                    self._masks(ws, train_flg), out_rows, self.use_dropout,
                                    self._code,
                                    bool(train_flg), momentum, 1.0 - self.dropout_ration, ops,
                                    ws.sparse)

    def predict(self, x, train_flg=False):
        """Scores (logits) for ``x`` of shape (N, input_size) or (input_size,).  With
        ``train_flg`` batch normalization uses the batch's statistics (and updates the running
        ones) and dropout drops units, as in training."""
        x2, single, arrays = self._prepare(x, cast=bool(train_flg))
        if arrays is None:
            for key, layer in self.layers.items():
                x = layer.forward(x, train_flg) if key.startswith(("Dropout", "BatchNorm")) else layer.forward(x)
            return x
        n = x2.shape[0]
        if train_flg:
            # one batch: its statistics are the whole batch's
            _require_rows(x2, x)
            ws = self._workspace(n)
            self._forward(arrays, x2, ws, ws.a, True)
            out = ws.a[-1].copy()
        else:
            out = np.empty((n, self._sizes[-1]), self.dtype)
            for start, stop, ws, block in self._blocks(x2):
                rows = [a[:stop - start] for a in ws.a[:-1]] + [out[start:stop]]
                self._forward(arrays, block, ws, rows, False, round_weights=start == 0)
        return out[0] if single else out

    def _blocks(self, x2):
        n = x2.shape[0]
        ws = self._workspace(min(_BLOCK_ROWS, n))
        for start in range(0, n, _BLOCK_ROWS):
            stop = min(start + _BLOCK_ROWS, n)
            block = x2[start:stop]
            if block.dtype != self.dtype or not block.flags.c_contiguous:
                np.copyto(ws.x[:stop - start], block, casting="unsafe")
                block = ws.x[:stop - start]
            yield start, stop, ws, block

    def _weight_decay(self):
        if not self.weight_decay_lambda:
            return 0.0
        return sum(0.5 * self.weight_decay_lambda * float(np.vdot(layer.W, layer.W))
                   for layer in self._affines)

    def _run(self, x, t, train_flg, backward):
        """The compiled loss (and gradient), or None where the layers must run one by one."""
        x2, _, arrays = self._prepare(x)
        _require_rows(x2, x)
        if arrays is None:
            return None
        labels, t = self._targets(x2, t)
        ws = self._workspace(x2.shape[0])
        if backward and _network.overlapping((x2, t), self._grad_buffers):
            x2, t = x2.copy(), t.copy()
        momentum = self._batchnorms[0].momentum if self._batchnorms else 0.9
        bn, masks = self._bn_arrays(ws, arrays), self._masks(ws, train_flg)
        ops = self._bf16_operands(ws, x2.shape[0])
        with threads.for_work(ws.work):
            loss = _network_extend.gradient(
                arrays[0], arrays[1], x2, t, labels, bn, masks, ws.a, self.use_dropout,
                self._dW if backward else None, self._db, self._dgamma, self._dbeta,
                ws.s0, ws.s1, ws.row_loss, self._code, self.exact_loss,
                self.weight_decay_lambda, bool(train_flg), momentum, 1.0 - self.dropout_ration,
                ops, ws.sparse)
        if train_flg:
            self._expose(ws, x2.shape[0])
        return self.dtype.type(loss) + self._weight_decay()

    def _expose(self, ws, n):
        """Leave the training pass's caches in the layer objects, as the book's layers hold
        them (views of the workspace, overwritten by the next pass)."""
        for i, layer in enumerate(self._dropouts):
            layer.mask = ws.masks[i]
        if ws.bn is not None:
            for i, layer in enumerate(self._batchnorms):
                layer.keep_training_cache(ws.bn["xn"][i], ws.bn["std"][i], ws.bn["inv_std"][i],
                                          ws.bn["xn"][i].shape)

    def loss(self, x, t, train_flg=False):
        """The mean cross-entropy of softmax(predict(x, train_flg)) against ``t``, plus
        0.5 * weight_decay_lambda * sum(W**2) over the weights."""
        loss = self._run(x, t, train_flg, backward=False)
        if loss is None:
            y = self.predict(x, train_flg)
            loss = self.last_layer.forward(y, t) + self._weight_decay()
        return loss

    def accuracy(self, x, t):
        """Fraction of rows of ``x`` whose argmax score (in test mode) equals the label."""
        x2, _, arrays = self._prepare(x, cast=False)
        n, k = x2.shape[0], self._sizes[-1]
        t = v.accuracy_labels(t, n, k)
        _require_rows(x2, x)
        if arrays is None:
            return np.sum(np.argmax(self.predict(x2), axis=-1) == t) / float(n)
        hits = 0
        for start, stop, ws, block in self._blocks(x2):
            rows = [a[:stop - start] for a in ws.a]
            self._forward(arrays, block, ws, rows, False, round_weights=start == 0)
            hits += count_argmax_hits(rows[-1], t[start:stop])
        return hits / float(n)

    def gradient(self, x, t):
        """Backprop in training mode: the gradient of ``loss(x, t, train_flg=True)`` for every
        entry of ``params``, in the book's order (W1, b1, gamma1, beta1, W2, ...)."""
        loss = self._run(x, t, True, backward=True)
        if loss is None:
            return self._layered_gradient(x, t)
        self.last_loss = loss
        for layer, dW, db in zip(self._affines, self._dW, self._db):
            layer.dW, layer.db = dW, db
        for layer, dgamma, dbeta in zip(self._batchnorms, self._dgamma, self._dbeta):
            layer.dgamma, layer.dbeta = dgamma, dbeta
        return self._grads

    def _layered_gradient(self, x, t):
        """The book's gradient, layer object by layer object."""
        self.last_loss = self.loss(x, t, train_flg=True)
        dout = self.last_layer.backward(1)
        for layer in reversed(list(self.layers.values())):
            dout = layer.backward(dout)
        grads = {}
        for idx, layer in enumerate(self._affines, start=1):
            grads[f"W{idx}"] = layer.dW + self.weight_decay_lambda * layer.W if self.weight_decay_lambda else layer.dW
            grads[f"b{idx}"] = layer.db
            if idx <= len(self._batchnorms):
                grads[f"gamma{idx}"] = self._batchnorms[idx - 1].dgamma
                grads[f"beta{idx}"] = self._batchnorms[idx - 1].dbeta
        return grads

    @property
    def affine_layers(self):
        """The Affine layers, first to last."""
        return self._affines

    def running_statistics(self):
        """``{'running_mean1': ..., 'running_var1': ..., ...}``: copies of the batch
        normalization layers' running statistics (those that exist yet)."""
        stats = {}
        for idx, layer in enumerate(self._batchnorms, start=1):
            if layer.running_mean is not None:
                stats[f"running_mean{idx}"] = np.array(layer.running_mean, dtype=np.float64)
                stats[f"running_var{idx}"] = np.array(layer.running_var, dtype=np.float64)
        return stats

    def set_running_statistics(self, stats):
        """Set the running statistics from a dict as :meth:`running_statistics` gives."""
        expected = {f"running_{s}{i}" for i in range(1, len(self._batchnorms) + 1)
                    for s in ("mean", "var")}
        for key in stats:
            if key not in expected:
                raise ValueError(f"{key}: expected running_mean1, running_var1, ... for "
                                 f"{len(self._batchnorms)} batch normalization layers")
        for idx, layer in enumerate(self._batchnorms, start=1):
            width = self._sizes[idx]
            if f"running_mean{idx}" in stats:
                layer.running_mean = _as_stat(stats[f"running_mean{idx}"], width, f"running_mean{idx}")
                layer.running_var = _as_stat(stats[f"running_var{idx}"], width, f"running_var{idx}")

    def snapshot(self):
        """An independent network with copies of this one's parameters and running
        statistics (the Trainer evaluates one in another thread while training goes on)."""
        net = MultiLayerNetExtend(
            self.input_size, self.hidden_size_list, self.output_size, self.activation,
            weight_init_std=1.0, weight_decay_lambda=self.weight_decay_lambda,
            use_dropout=self.use_dropout, dropout_ration=self.dropout_ration,
            use_batchnorm=self.use_batchnorm, dtype=self.dtype, rng=0,
            exact_loss=self.exact_loss, precision=self.precision)
        for key, a in self.params.items():
            np.copyto(net.params[key], a)
        net.set_running_statistics(self.running_statistics())
        return net

    def numerical_gradient(self, x, t):
        """The book's brute force: central differences (h = 1e-4) of ``loss(x, t,
        train_flg=True)`` for every entry of every parameter, each loss one compiled call.
        As in the book, every call is a training pass: it updates the running statistics and,
        with dropout, draws new masks."""
        from fastnn.gradient import numerical_gradient

        v.refuse_bf16_numerical_gradient(self.precision)
        loss_W = lambda W: self.loss(x, t, train_flg=True)
        grads = {}
        for idx in range(1, self.hidden_layer_num + 2):
            for key in (f"W{idx}", f"b{idx}", f"gamma{idx}", f"beta{idx}"):
                if key in self.params:
                    grads[key] = numerical_gradient(loss_W, self.params[key])
        return grads


def _as_stat(stat, width, name):
    from fastnn.layers import _as_statistic

    return _as_statistic(stat, width, name)


# the convolutional networks of chapters 7 and 8 live in their own module
from fastnn.convnets import DeepConvNet, SimpleConvNet  # noqa: E402
