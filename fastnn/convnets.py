"""The book's convolutional networks: ``SimpleConvNet`` (ch. 7) and ``DeepConvNet`` (ch. 8).

Replace ``from simple_convnet import SimpleConvNet`` / ``from deep_convnet import
DeepConvNet`` by ``from fastnn.nets import ...``.  Constructors, ``params``, ``layers``,
``last_layer``, ``predict`` (DeepConvNet: ``train_flg``), ``loss``, ``accuracy(x, t,
batch_size=100)``, ``gradient``, ``numerical_gradient`` (SimpleConvNet) and
``save_params``/``load_params`` keep the book's names and meaning; weights are drawn from
``np.random.randn`` exactly as the book draws them, so ``np.random.seed`` reproduces the
book's initial weights, and DeepConvNet's dropout masks come from ``np.random.rand`` as the
book's.  Additions: ``dtype`` (float64 as in the book, or float32), ``last_loss`` (the loss of
the last ``gradient`` batch), ``snapshot()``, ``config`` (the constructor's arguments, which
``fastnn.io.save_network`` stores with the weights), and ``precision='bf16'`` (float32
networks: every product of the convolutions and the dense layers takes bfloat16-rounded
operands and sums in float32; weights, gradients, optimizer state and activations stay
float32; such a network computes in float32 whatever the images' dtype, and only on the
compiled path, the book's layers having no bf16).

Whenever the layers hold the network's own C-contiguous weights of its dtype and the images
compute in that dtype, ``predict``, ``loss``, ``accuracy`` and ``gradient`` run the whole
network in one compiled call (fastnn/_kernels/_convnet.pyx, which documents the design);
otherwise (say float64 images into a float32 network, which NumPy promotes to float64) the
same results come layer by layer, through ``layers`` as the book computes them.

``gradient`` returns the network's gradient buffers, overwritten by its next call (as
PyTorch's ``.grad``): copy them to keep them.

Twins: :mod:`fastnn.reference.convnets`.
"""
import math
from collections import OrderedDict
from pathlib import Path

import numpy as np

from fastnn import _validation as v
from fastnn import threads
from fastnn._kernels._convnet import Plan
from fastnn._kernels._network import count_argmax_hits
from fastnn.layers import Affine, Convolution, Dropout, Pooling, Relu, SoftmaxWithLoss

__all__ = ["SimpleConvNet", "DeepConvNet"]

# images per compiled block of predict and accuracy: the workspace of a block stays a few MB
_PREDICT_BLOCK = 100


def _check_dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype not in v.FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    return dtype


def _conv_param(param, name):
    """(filter_num, filter_size, pad, stride) of one of the book's conv_param dicts."""
    if not isinstance(param, dict):
        raise TypeError(f"{name} must be a dict with filter_num, filter_size, pad and stride, "
                        f"got {type(param).__name__}")
    missing = {"filter_num", "filter_size", "pad", "stride"} - set(param)
    if missing:
        raise ValueError(f"{name} lacks {sorted(missing)}: the book's conv_param holds "
                         "filter_num, filter_size, pad and stride")
    return (v.check_count(param["filter_num"], f"{name}['filter_num']"),
            v.check_count(param["filter_size"], f"{name}['filter_size']"),
            v.check_count(param["pad"], f"{name}['pad']", minimum=0),
            v.check_count(param["stride"], f"{name}['stride']"))


def _input_dim(input_dim):
    if len(input_dim) != 3:
        raise ValueError(f"input_dim must be (channels, height, width), got {input_dim!r}")
    return tuple(v.check_count(d, "input_dim") for d in input_dim)


def _geometry(input_dim, convs):
    """The Plan's convolution tuples for ``convs`` = [(F, FS, pad, stride, pooled), ...] over
    images of ``input_dim``, and the number of features the last one gives per image."""
    C, H, W = input_dim
    plan = []
    for idx, (F, FS, pad, stride, pooled) in enumerate(convs, start=1):
        if FS > H + 2 * pad or FS > W + 2 * pad:
            raise ValueError(f"convolution {idx}: a {FS}x{FS} filter is larger than its input "
                             f"{(C, H, W)} padded by {pad} ({H + 2 * pad}x{W + 2 * pad})")
        OH, OW = (H + 2 * pad - FS) // stride + 1, (W + 2 * pad - FS) // stride + 1
        if pooled and min(OH, OW) < 2:
            raise ValueError(f"convolution {idx} gives {OH}x{OW} images, too small for the "
                             "2x2 pooling after it")
        plan.append((C, H, W, F, FS, FS, stride, pad, int(pooled)))
        C, H, W = (F, OH // 2, OW // 2) if pooled else (F, OH, OW)
    return plan, C * H * W


def _blas_work(plan):
    """The work by which a Plan's call sets the BLAS threads.  On the direct path the
    convolutions run on threads of their own (threads.for_split) and BLAS has only the small
    dense GEMMs: one BLAS thread, so that no OpenBLAS thread spins, after its GEMM, on the
    core a share of the images needs."""
    if plan.direct:
        return min(plan.largest_gemm, threads.MIN_WORK_PER_THREAD)
    return plan.largest_gemm


class _ConvNet:
    """What both networks share: the compiled path, the book's accuracy and weight files."""

    _dropout_ratio = 0.0

    def _setup(self, input_dim, convs, dense_sizes, dtype, precision):
        self.dtype = _check_dtype(dtype)
        self.precision = v.check_precision(precision, self.dtype)
        if self.precision is not None:  # absent: the dtype's own (fastnn.io reads config)
            self.config["precision"] = self.precision
        self.input_dim = input_dim
        self._plan_convs, features = _geometry(input_dim, convs)
        self._sizes = [features, *dense_sizes]
        self._plans = {}
        self._checked = None
        self.last_loss = None

    def _check_features(self, rows, what):
        if rows != self._sizes[0]:
            raise ValueError(
                f"{what} has {rows} rows, but the convolutions give {self._sizes[0]} features "
                f"per image of {self.input_dim} (the book's size formula assumes an even "
                "convolution output)")

    def _allocate_gradients(self):
        self._grads = {key: np.empty_like(p) for key, p in self.params.items()}
        n_conv = len(self._conv_layers)
        self._dWc = [self._grads[f"W{i}"] for i in range(1, n_conv + 1)]
        self._dbc = [self._grads[f"b{i}"] for i in range(1, n_conv + 1)]
        n = n_conv + len(self._dense_layers)
        self._dWd = [self._grads[f"W{i}"] for i in range(n_conv + 1, n + 1)]
        self._dbd = [self._grads[f"b{i}"] for i in range(n_conv + 1, n + 1)]

    # --- the compiled path -------------------------------------------------------------------

    def _weights(self, dtype):
        """(Wc, bc, Wd, bd) from the layers when the compiled path applies, else None (and
        for a bf16 network, which has only the compiled path, a TypeError)."""
        weights = self._own_weights(dtype)
        if weights is None and self.precision is not None:
            shapes = {key: g.shape for key, g in self._grads.items()}
            v.refuse_foreign_weights(self._conv_layers + self._dense_layers,
                                     f"the network's parameter shapes {shapes}")
        return weights

    def _own_weights(self, dtype):
        if dtype != self.dtype:
            return None
        layers = self._conv_layers + self._dense_layers
        cached = self._checked
        if cached is not None and all(
                layer.W is W and layer.b is b and W.dtype == dtype and b.dtype == dtype
                and W.flags.c_contiguous and b.flags.c_contiguous and W.shape == ws
                and b.shape == bs
                for layer, W, b, ws, bs in zip(layers, cached[4], cached[5], cached[6],
                                               cached[7])):
            return cached[:4]
        Ws, bs = [], []
        for layer in layers:
            W, b = layer.W, layer.b
            if not (type(W) is np.ndarray and type(b) is np.ndarray and W.dtype == dtype
                    and b.dtype == dtype and W.flags.c_contiguous and b.flags.c_contiguous):
                return None
            Ws.append(W)
            bs.append(b)
        shapes = [p.shape for p in self._grads.values()]
        if [s for pair in zip((W.shape for W in Ws), (b.shape for b in bs)) for s in pair] != shapes:
            return None
        k = len(self._conv_layers)
        self._checked = (Ws[:k], bs[:k], Ws[k:], bs[k:], Ws, bs,
                         [W.shape for W in Ws], [b.shape for b in bs])
        return self._checked[:4]

    def _plan(self, n):
        plan = self._plans.get(n)
        if plan is None:
            if len(self._plans) >= 4:  # batch sizes come and go; keep the latest few
                self._plans.pop(next(iter(self._plans)))
            dropout = [self._dropout_ratio] * (len(self._sizes) - 1)
            plan = self._plans[n] = Plan(self._plan_convs, self._sizes, dropout, n, self.dtype,
                                         max_shares=threads.available_cpus(),
                                         precision=self.precision)
        return plan

    def _images(self, x):
        """(x as an ndarray, its compute dtype), checked to be (N, C, H, W) of input_dim."""
        x = np.asarray(v.as_plain(x, "x"))
        dtype = v.compute_dtype(("x", x), ("W1", self._conv_layers[0].W))
        if self.precision is not None:
            dtype = self.dtype  # a bf16 network computes in float32, its operands rounded anyway
        if x.ndim != 4 or x.shape[1:] != self.input_dim:
            raise ValueError(f"x must be a batch of images (N, {', '.join(map(str, self.input_dim))}), "
                             f"got shape {x.shape}")
        if x.dtype.kind != "f" or x.dtype.itemsize < 4:
            x = x.astype(dtype)  # integers, bools and float16 compute in the policy's dtype
        return x, dtype

    def _masks(self, n, train):
        """The book's Dropout masks for a batch of n (drawn in its order), or None."""
        if not (train and self._dropout_ratio):
            return None
        masks = []
        for size in self._sizes[1:]:
            mask = np.random.rand(n, size) > self._dropout_ratio
            masks.append(mask.astype(self.dtype))
        for layer, mask in zip(self._dropout_layers, masks):
            layer.mask = mask.astype(bool)
        return masks

    def _forward_blocks(self, x, weights, train=False):
        """Scores for every image of x, block by block (each cast to the network's dtype)."""
        n = x.shape[0]
        out = np.empty((n, self._sizes[-1]), self.dtype)
        for start in range(0, n, _PREDICT_BLOCK):
            stop = min(start + _PREDICT_BLOCK, n)
            block = np.ascontiguousarray(x[start:stop], dtype=self.dtype)
            plan = self._plan(stop - start)
            masks = self._masks(stop - start, train)
            shares = threads.for_split(plan.conv_work)
            with threads.for_work(_blas_work(plan)):
                plan.forward(*weights, block, out[start:stop], masks, shares)
        return out

    def _layered_predict(self, x, train_flg=False):
        for layer in self.layers.values() if isinstance(self.layers, dict) else self.layers:
            x = layer.forward(x, train_flg) if isinstance(layer, Dropout) else layer.forward(x)
        return x

    def _predict(self, x, train_flg=False):
        x, dtype = self._images(x)
        weights = self._weights(dtype)
        if weights is None:
            return self._layered_predict(x, train_flg)
        if x.shape[0] == 0:
            return np.empty((0, self._sizes[-1]), self.dtype)
        return self._forward_blocks(x, weights, train_flg)

    def _targets(self, n, t, dtype):
        kind, t = v.as_targets(t, (n, self._sizes[-1]))
        if kind == "targets":
            t = v.as_float(t, "t", dtype)
        return kind == "labels", t

    def _run(self, x, t, backward):
        x, dtype = self._images(x)
        if x.shape[0] == 0:
            raise ValueError(f"x is an empty batch, shape {x.shape}: a mean over it is undefined")
        weights = self._weights(dtype)
        if weights is None:
            return None, x
        labels, t = self._targets(x.shape[0], t, dtype)
        x = np.ascontiguousarray(x, dtype=self.dtype)
        plan = self._plan(x.shape[0])
        masks = self._masks(x.shape[0], True)
        shares = threads.for_split(plan.conv_work)
        with threads.for_work(_blas_work(plan)):
            loss = plan.gradient(*weights, x, t, labels, self._dWc, self._dbc, self._dWd,
                                 self._dbd, masks, False, backward, shares)
        return self.dtype.type(loss), x

    def loss(self, x, t):
        """The mean cross-entropy of softmax(scores) against ``t`` (labels or one-hot), as
        the book's (DeepConvNet: with dropout on, as the book's ``loss``)."""
        loss, x = self._run(x, t, False)
        if loss is None:
            y = self._layered_predict(x, True)
            return self.last_layer.forward(y, t)
        return loss

    def accuracy(self, x, t, batch_size=100):
        """The book's accuracy: hits over the first ``int(N / batch_size)`` full batches,
        divided by N (the book's code counts no partial last batch)."""
        batch_size = v.check_count(batch_size, "batch_size")
        x, dtype = self._images(x)
        t = np.asarray(v.as_plain(t, "t"))
        if t.ndim == 2 and t.shape == (x.shape[0], self._sizes[-1]):
            t = np.argmax(t, axis=1)  # one-hot rows, as the book's t.ndim != 1
        t = v.as_labels(t, x.shape[0], self._sizes[-1], "t")
        used = int(x.shape[0] / batch_size) * batch_size
        if x.shape[0] == 0:
            raise ValueError("x is an empty batch: its accuracy is undefined")
        weights = self._weights(dtype)
        if weights is None or used == 0:
            hits = 0
            for i in range(used // batch_size):
                y = self._layered_predict(x[i * batch_size:(i + 1) * batch_size])
                hits += np.sum(np.argmax(y, axis=1) == t[i * batch_size:(i + 1) * batch_size])
            return hits / x.shape[0]
        scores = self._forward_blocks(x[:used], weights)
        return count_argmax_hits(scores, np.ascontiguousarray(t[:used])) / x.shape[0]

    def gradient(self, x, t):
        """Backprop: the gradient of ``loss(x, t)`` for every entry of ``params``, in the
        network's own buffers (copy them to keep them); the batch loss in ``last_loss``."""
        loss, x = self._run(x, t, True)
        if loss is None:
            return self._layered_gradient(x, t)
        self.last_loss = loss
        idx = 1
        for layer in self._conv_layers + self._dense_layers:
            layer.dW, layer.db = self._grads[f"W{idx}"], self._grads[f"b{idx}"]
            idx += 1
        return self._grads

    def _layered_gradient(self, x, t):
        """The book's gradient, layer object by layer object."""
        self.last_loss = self.loss(x, t)
        dout = self.last_layer.backward(1)
        layers = list(self.layers.values()) if isinstance(self.layers, dict) else list(self.layers)
        for layer in reversed(layers):
            dout = layer.backward(dout)
        grads = {}
        for idx, layer in enumerate(self._conv_layers + self._dense_layers, start=1):
            grads[f"W{idx}"], grads[f"b{idx}"] = layer.dW, layer.db
        return grads

    # --- the book's weight files -------------------------------------------------------------

    def save_params(self, file_name="params.pkl"):
        """Save ``params`` as the book does (a pickled dict of arrays; ``.npz`` for a name
        ending in .npz), written atomically."""
        from fastnn.io import save_params  # fastnn.io builds networks: imported on use

        fmt = "npz" if Path(file_name).suffix.lower() == ".npz" else "pkl"
        save_params(file_name, self.params, format=fmt)

    def load_params(self, file_name="params.pkl"):
        """Load the book's pickle (``ch07/params.pkl``, ``ch08/deep_convnet_params.pkl``) or
        an ``.npz``, through fastnn's safe unpickler; the weights are cast to the network's
        dtype and handed to its layers, as the book's ``load_params`` does."""
        from fastnn.io import load_params

        loaded = load_params(file_name)
        for key, val in loaded.items():
            if key not in self.params:
                raise ValueError(f"{file_name}: parameter {key!r} is not one of this network's "
                                 f"{sorted(self.params)}")
            if val.shape != self.params[key].shape:
                raise ValueError(f"{file_name}: parameter {key!r} has shape {val.shape}, the "
                                 f"network's has {self.params[key].shape}")
        for key, val in loaded.items():
            self.params[key] = np.ascontiguousarray(val, dtype=self.dtype)
        for idx, layer in enumerate(self._conv_layers + self._dense_layers, start=1):
            layer.W, layer.b = self.params[f"W{idx}"], self.params[f"b{idx}"]


class SimpleConvNet(_ConvNet):
    """conv - relu - pool - affine - relu - affine - softmax (the book's ch07/simple_convnet.py).

    Parameters as the book's; ``dtype`` float64 (the book's) or float32; ``precision`` None
    (the dtype's own) or 'bf16' (float32 only: the products on bfloat16 operands, see the
    module).  Input images are (N, C, H, W) batches of ``input_dim``.

    Twin: :class:`fastnn.reference.convnets.SimpleConvNet`.
    """

    def __init__(self, input_dim=(1, 28, 28),
                 conv_param={'filter_num': 30, 'filter_size': 5, 'pad': 0, 'stride': 1},
                 hidden_size=100, output_size=10, weight_init_std=0.01, dtype=np.float64,
                 precision=None):
        input_dim = _input_dim(input_dim)
        filter_num, filter_size, filter_pad, filter_stride = _conv_param(conv_param, "conv_param")
        self.config = {"input_dim": list(input_dim), "conv_param": dict(conv_param),
                       "hidden_size": hidden_size, "output_size": output_size,
                       "weight_init_std": weight_init_std}
        hidden_size = v.check_count(hidden_size, "hidden_size")
        output_size = v.check_count(output_size, "output_size")
        weight_init_std = v.check_finite_scalar(weight_init_std, "weight_init_std")
        self._setup(input_dim, [(filter_num, filter_size, filter_pad, filter_stride, True)],
                    [hidden_size, output_size], dtype, precision)
        # the book's size formula (true division), which the weights are drawn for
        conv_output_size = (input_dim[1] - filter_size + 2 * filter_pad) / filter_stride + 1
        pool_output_size = int(filter_num * (conv_output_size / 2) * (conv_output_size / 2))
        self._check_features(pool_output_size, "W2 (the book's pool_output_size)")

        dt = self.dtype
        self.params = {}
        self.params['W1'] = (weight_init_std * np.random.randn(
            filter_num, input_dim[0], filter_size, filter_size)).astype(dt)
        self.params['b1'] = np.zeros(filter_num, dtype=dt)
        self.params['W2'] = (weight_init_std * np.random.randn(pool_output_size, hidden_size)).astype(dt)
        self.params['b2'] = np.zeros(hidden_size, dtype=dt)
        self.params['W3'] = (weight_init_std * np.random.randn(hidden_size, output_size)).astype(dt)
        self.params['b3'] = np.zeros(output_size, dtype=dt)

        self.layers = OrderedDict()
        self.layers['Conv1'] = Convolution(self.params['W1'], self.params['b1'],
                                           conv_param['stride'], conv_param['pad'])
        self.layers['Relu1'] = Relu()
        self.layers['Pool1'] = Pooling(pool_h=2, pool_w=2, stride=2)
        self.layers['Affine1'] = Affine(self.params['W2'], self.params['b2'])
        self.layers['Relu2'] = Relu()
        self.layers['Affine2'] = Affine(self.params['W3'], self.params['b3'])
        self.last_layer = SoftmaxWithLoss()
        self._conv_layers = [self.layers['Conv1']]
        self._dense_layers = [self.layers['Affine1'], self.layers['Affine2']]
        self._dropout_layers = []
        self._allocate_gradients()

    def predict(self, x):
        """Scores (logits) of the images ``x`` (N, C, H, W)."""
        return self._predict(x)

    def numerical_gradient(self, x, t):
        """The book's brute force: central differences (h = 1e-4) of ``loss`` for every
        parameter, each loss computed by the compiled forward pass."""
        from fastnn.gradient import numerical_gradient

        v.refuse_bf16_numerical_gradient(self.precision)
        loss_w = lambda w: self.loss(x, t)  # noqa: E731 (the book's form)
        grads = {}
        for idx in (1, 2, 3):
            for p in "Wb":
                key = f"{p}{idx}"
                grads[key] = numerical_gradient(loss_w, self.params[key])
        return grads

    def snapshot(self):
        """An independent network with copies of this one's parameters."""
        return _copy(self)


class DeepConvNet(_ConvNet):
    """The book's ch08/deep_convnet.py: six 3x3 convolutions with ReLU, a 2x2 pooling after
    every second, then affine - relu - dropout - affine - dropout - softmax.

    Parameters as the book's; ``dtype`` float64 (the book's) or float32; ``precision`` None
    or 'bf16' (float32 only, see the module).  Dropout ratio 0.5,
    masks drawn from ``np.random.rand`` as the book's ``Dropout`` draws them.

    Twin: :class:`fastnn.reference.convnets.DeepConvNet`.
    """

    _dropout_ratio = 0.5

    def __init__(self, input_dim=(1, 28, 28),
                 conv_param_1={'filter_num': 16, 'filter_size': 3, 'pad': 1, 'stride': 1},
                 conv_param_2={'filter_num': 16, 'filter_size': 3, 'pad': 1, 'stride': 1},
                 conv_param_3={'filter_num': 32, 'filter_size': 3, 'pad': 1, 'stride': 1},
                 conv_param_4={'filter_num': 32, 'filter_size': 3, 'pad': 2, 'stride': 1},
                 conv_param_5={'filter_num': 64, 'filter_size': 3, 'pad': 1, 'stride': 1},
                 conv_param_6={'filter_num': 64, 'filter_size': 3, 'pad': 1, 'stride': 1},
                 hidden_size=50, output_size=10, dtype=np.float64, precision=None):
        input_dim = _input_dim(input_dim)
        conv_params = [conv_param_1, conv_param_2, conv_param_3, conv_param_4, conv_param_5,
                       conv_param_6]
        parsed = [_conv_param(p, f"conv_param_{i}") for i, p in enumerate(conv_params, start=1)]
        self.config = {"input_dim": list(input_dim), "hidden_size": hidden_size,
                       "output_size": output_size,
                       **{f"conv_param_{i}": dict(p) for i, p in enumerate(conv_params, start=1)}}
        hidden_size = v.check_count(hidden_size, "hidden_size")
        output_size = v.check_count(output_size, "output_size")
        self._setup(input_dim, [(*p, i % 2 == 1) for i, p in enumerate(parsed)],
                    [hidden_size, output_size], dtype, precision)
        self._check_features(64 * 4 * 4, "W7 (the book's 64*4*4)")

        # the book's initial scales (He), with its fixed fan-ins
        pre_node_nums = np.array([1*3*3, 16*3*3, 16*3*3, 32*3*3, 32*3*3, 64*3*3, 64*4*4, hidden_size])
        weight_init_scales = np.sqrt(2.0 / pre_node_nums)
        dt = self.dtype
        self.params = {}
        pre_channel_num = input_dim[0]
        for idx, (filter_num, filter_size, _, _) in enumerate(parsed):
            self.params['W' + str(idx + 1)] = (weight_init_scales[idx] * np.random.randn(
                filter_num, pre_channel_num, filter_size, filter_size)).astype(dt)
            self.params['b' + str(idx + 1)] = np.zeros(filter_num, dtype=dt)
            pre_channel_num = filter_num
        self.params['W7'] = (weight_init_scales[6] * np.random.randn(64*4*4, hidden_size)).astype(dt)
        self.params['b7'] = np.zeros(hidden_size, dtype=dt)
        self.params['W8'] = (weight_init_scales[7] * np.random.randn(hidden_size, output_size)).astype(dt)
        self.params['b8'] = np.zeros(output_size, dtype=dt)

        self.layers = []
        self._conv_layers = []
        for idx, (_, _, pad, stride) in enumerate(parsed):
            conv = Convolution(self.params['W' + str(idx + 1)], self.params['b' + str(idx + 1)],
                               stride, pad)
            self._conv_layers.append(conv)
            self.layers += [conv, Relu()]
            if idx % 2 == 1:
                self.layers.append(Pooling(pool_h=2, pool_w=2, stride=2))
        self._dense_layers = [Affine(self.params['W7'], self.params['b7']),
                              Affine(self.params['W8'], self.params['b8'])]
        self._dropout_layers = [Dropout(0.5), Dropout(0.5)]
        self.layers += [self._dense_layers[0], Relu(), self._dropout_layers[0],
                        self._dense_layers[1], self._dropout_layers[1]]
        self.last_layer = SoftmaxWithLoss()
        self._allocate_gradients()

    def predict(self, x, train_flg=False):
        """Scores of the images ``x``; ``train_flg=True`` drops units as in training."""
        return self._predict(x, bool(train_flg))

    def snapshot(self):
        """An independent network with copies of this one's parameters."""
        return _copy(self)


def _copy(net):
    import copy

    # the compiled plans are workspaces, not state: the copy makes its own
    plans, checked = net._plans, net._checked
    net._plans, net._checked = {}, None
    try:
        return copy.deepcopy(net)
    finally:
        net._plans, net._checked = plans, checked
