"""The book's TwoLayerNet (ch. 5) and MultiLayerNet in plain NumPy: twins of ``fastnn.nets``.

Same constructors as ``fastnn.nets`` (``dtype``, ``rng``, ``exact_loss`` and ``precision``
included), so a test can build both from one seed; the numerical gradient is the book's brute
force.  ``precision='bf16'`` replaces each Affine layer by
:class:`fastnn.reference.layers.Bf16Affine`, whose GEMMs
round both operands to bfloat16 (:func:`fastnn.reference.functions.round_bf16`) and sum in
float32, and computes in float32 whatever the input's dtype.
"""
from collections import OrderedDict

import numpy as np

from fastnn.reference.gradient import numerical_gradient
from fastnn.reference.layers import (Affine, Bf16Affine, Identity, Relu, Sigmoid,  # noqa: F401
                                     SoftmaxWithLoss, bf16_precision)


def _affine_class(precision, dtype):
    return Bf16Affine if bf16_precision(precision, dtype) else Affine


def _as_compute(x, precision):
    """A bf16 network computes in float32, whatever the input's dtype."""
    return x if precision is None else np.asarray(x, dtype=np.float32)


def _targets(t, precision):
    t = np.asarray(t)
    return _as_compute(t, precision) if t.dtype.kind == 'f' else t


def _randn(rng, shape):
    return np.random.randn(*shape) if rng is None else np.random.default_rng(rng).standard_normal(shape)


class TwoLayerNet:
    def __init__(self, input_size, hidden_size, output_size, weight_init_std=0.01,
                 dtype=np.float64, rng=None, exact_loss=False, precision=None):
        affine = _affine_class(precision, dtype)
        self.precision = precision
        rng = None if rng is None else np.random.default_rng(rng)
        self.params = {}
        self.params['W1'] = (weight_init_std * _randn(rng, (input_size, hidden_size))).astype(dtype)
        self.params['b1'] = np.zeros(hidden_size, dtype=dtype)
        self.params['W2'] = (weight_init_std * _randn(rng, (hidden_size, output_size))).astype(dtype)
        self.params['b2'] = np.zeros(output_size, dtype=dtype)

        self.layers = OrderedDict()
        self.layers['Affine1'] = affine(self.params['W1'], self.params['b1'])
        self.layers['Relu1'] = Relu()
        self.layers['Affine2'] = affine(self.params['W2'], self.params['b2'])
        self.lastLayer = SoftmaxWithLoss(exact=exact_loss)

    def predict(self, x):
        x = _as_compute(x, self.precision)
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x, t):
        y = self.predict(x)
        return self.lastLayer.forward(y, _targets(t, self.precision))

    def accuracy(self, x, t):
        y = self.predict(x)
        y = np.argmax(y, axis=1)
        if t.ndim != 1:
            t = np.argmax(t, axis=1)
        return np.sum(y == t) / float(x.shape[0])

    def numerical_gradient(self, x, t):
        loss_W = lambda W: self.loss(x, t)
        grads = {}
        for key in ('W1', 'b1', 'W2', 'b2'):
            grads[key] = numerical_gradient(loss_W, self.params[key])
        return grads

    def gradient(self, x, t):
        self.loss(x, t)
        dout = 1
        dout = self.lastLayer.backward(dout)
        layers = list(self.layers.values())
        layers.reverse()
        for layer in layers:
            dout = layer.backward(dout)
        grads = {}
        grads['W1'], grads['b1'] = self.layers['Affine1'].dW, self.layers['Affine1'].db
        grads['W2'], grads['b2'] = self.layers['Affine2'].dW, self.layers['Affine2'].db
        return grads


class MultiLayerNet:
    def __init__(self, input_size, hidden_size_list, output_size, activation='relu',
                 weight_init_std='relu', weight_decay_lambda=0, dtype=np.float64, rng=None,
                 exact_loss=False, precision=None):
        affine = _affine_class(precision, dtype)
        self.precision = precision
        rng = None if rng is None else np.random.default_rng(rng)
        self.input_size = input_size
        self.output_size = output_size
        self.hidden_size_list = list(hidden_size_list)
        self.hidden_layer_num = len(hidden_size_list)
        self.weight_decay_lambda = weight_decay_lambda
        self.params = {}

        all_size_list = [input_size] + self.hidden_size_list + [output_size]
        for idx in range(1, len(all_size_list)):
            scale = weight_init_std
            if str(weight_init_std).lower() in ('relu', 'he'):
                scale = np.sqrt(2.0 / all_size_list[idx - 1])
            elif str(weight_init_std).lower() in ('sigmoid', 'xavier'):
                scale = np.sqrt(1.0 / all_size_list[idx - 1])
            self.params['W' + str(idx)] = (scale * _randn(rng, (all_size_list[idx - 1], all_size_list[idx]))).astype(dtype)
            self.params['b' + str(idx)] = np.zeros(all_size_list[idx], dtype=dtype)

        activation_layer = {'sigmoid': Sigmoid, 'relu': Relu, 'identity': Identity}
        self.layers = OrderedDict()
        for idx in range(1, self.hidden_layer_num + 1):
            self.layers['Affine' + str(idx)] = affine(self.params['W' + str(idx)], self.params['b' + str(idx)])
            self.layers['Activation_function' + str(idx)] = activation_layer[activation]()
        idx = self.hidden_layer_num + 1
        self.layers['Affine' + str(idx)] = affine(self.params['W' + str(idx)], self.params['b' + str(idx)])
        self.last_layer = SoftmaxWithLoss(exact=exact_loss)

    def predict(self, x):
        x = _as_compute(x, self.precision)
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x, t):
        y = self.predict(x)
        t = _targets(t, self.precision)
        weight_decay = 0
        for idx in range(1, self.hidden_layer_num + 2):
            W = self.params['W' + str(idx)]
            weight_decay += 0.5 * self.weight_decay_lambda * np.sum(W ** 2)
        return self.last_layer.forward(y, t) + weight_decay

    def accuracy(self, x, t):
        y = self.predict(x)
        y = np.argmax(y, axis=1)
        if t.ndim != 1:
            t = np.argmax(t, axis=1)
        return np.sum(y == t) / float(x.shape[0])

    def numerical_gradient(self, x, t):
        loss_W = lambda W: self.loss(x, t)
        grads = {}
        for idx in range(1, self.hidden_layer_num + 2):
            grads['W' + str(idx)] = numerical_gradient(loss_W, self.params['W' + str(idx)])
            grads['b' + str(idx)] = numerical_gradient(loss_W, self.params['b' + str(idx)])
        return grads

    def gradient(self, x, t):
        self.loss(x, t)
        dout = 1
        dout = self.last_layer.backward(dout)
        layers = list(self.layers.values())
        layers.reverse()
        for layer in layers:
            dout = layer.backward(dout)
        grads = {}
        for idx in range(1, self.hidden_layer_num + 2):
            grads['W' + str(idx)] = self.layers['Affine' + str(idx)].dW + self.weight_decay_lambda * self.layers['Affine' + str(idx)].W
            grads['b' + str(idx)] = self.layers['Affine' + str(idx)].db
        return grads


# --- chapter 6: the book's common/multi_layer_net_extend.py ---------------------------------

class MultiLayerNetExtend:
    """The book's MultiLayerNetExtend (weight decay, dropout, batch normalization), with the
    additions of ``fastnn.nets``: ``dtype``, ``rng`` (one Generator for the weights and then
    the dropout masks; None: np.random as in the book) and ``exact_loss``."""

    def __init__(self, input_size, hidden_size_list, output_size,
                 activation='relu', weight_init_std='relu', weight_decay_lambda=0,
                 use_dropout=False, dropout_ration=0.5, use_batchnorm=False,
                 dtype=np.float64, rng=None, exact_loss=False, precision=None):
        from fastnn.reference.normalization import BatchNormalization, Dropout

        affine = _affine_class(precision, dtype)
        self.precision = precision
        rng = None if rng is None else np.random.default_rng(rng)
        self.input_size = input_size
        self.output_size = output_size
        self.hidden_size_list = list(hidden_size_list)
        self.hidden_layer_num = len(hidden_size_list)
        self.use_dropout = use_dropout
        self.weight_decay_lambda = weight_decay_lambda
        self.use_batchnorm = use_batchnorm
        self.params = {}

        all_size_list = [self.input_size] + self.hidden_size_list + [self.output_size]
        for idx in range(1, len(all_size_list)):
            scale = weight_init_std
            if str(weight_init_std).lower() in ('relu', 'he'):
                scale = np.sqrt(2.0 / all_size_list[idx - 1])
            elif str(weight_init_std).lower() in ('sigmoid', 'xavier'):
                scale = np.sqrt(1.0 / all_size_list[idx - 1])
            self.params['W' + str(idx)] = (scale * _randn(rng, (all_size_list[idx-1], all_size_list[idx]))).astype(dtype)
            self.params['b' + str(idx)] = np.zeros(all_size_list[idx], dtype=dtype)

        activation_layer = {'sigmoid': Sigmoid, 'relu': Relu, 'identity': Identity}
        self.layers = OrderedDict()
        for idx in range(1, self.hidden_layer_num+1):
            self.layers['Affine' + str(idx)] = affine(self.params['W' + str(idx)],
                                                      self.params['b' + str(idx)])
            if self.use_batchnorm:
                self.params['gamma' + str(idx)] = np.ones(hidden_size_list[idx-1], dtype=dtype)
                self.params['beta' + str(idx)] = np.zeros(hidden_size_list[idx-1], dtype=dtype)
                self.layers['BatchNorm' + str(idx)] = BatchNormalization(self.params['gamma' + str(idx)], self.params['beta' + str(idx)])

            self.layers['Activation_function' + str(idx)] = activation_layer[activation]()

            if self.use_dropout:
                self.layers['Dropout' + str(idx)] = Dropout(dropout_ration, rng=rng)

        idx = self.hidden_layer_num + 1
        self.layers['Affine' + str(idx)] = affine(self.params['W' + str(idx)], self.params['b' + str(idx)])

        self.last_layer = SoftmaxWithLoss(exact=exact_loss)

    def predict(self, x, train_flg=False):
        x = _as_compute(x, self.precision)
        for key, layer in self.layers.items():
            if "Dropout" in key or "BatchNorm" in key:
                x = layer.forward(x, train_flg)
            else:
                x = layer.forward(x)
        return x

    def loss(self, x, t, train_flg=False):
        y = self.predict(x, train_flg)
        t = _targets(t, self.precision)
        weight_decay = 0
        for idx in range(1, self.hidden_layer_num + 2):
            W = self.params['W' + str(idx)]
            weight_decay += 0.5 * self.weight_decay_lambda * np.sum(W**2)
        return self.last_layer.forward(y, t) + weight_decay

    def accuracy(self, x, t):
        y = self.predict(x, train_flg=False)
        y = np.argmax(y, axis=1)
        if t.ndim != 1:
            t = np.argmax(t, axis=1)
        return np.sum(y == t) / float(x.shape[0])

    def numerical_gradient(self, x, t):
        loss_W = lambda W: self.loss(x, t, train_flg=True)
        grads = {}
        for idx in range(1, self.hidden_layer_num+2):
            grads['W' + str(idx)] = numerical_gradient(loss_W, self.params['W' + str(idx)])
            grads['b' + str(idx)] = numerical_gradient(loss_W, self.params['b' + str(idx)])
            if self.use_batchnorm and idx != self.hidden_layer_num+1:
                grads['gamma' + str(idx)] = numerical_gradient(loss_W, self.params['gamma' + str(idx)])
                grads['beta' + str(idx)] = numerical_gradient(loss_W, self.params['beta' + str(idx)])
        return grads

    def gradient(self, x, t):
        self.loss(x, t, train_flg=True)
        dout = 1
        dout = self.last_layer.backward(dout)
        layers = list(self.layers.values())
        layers.reverse()
        for layer in layers:
            dout = layer.backward(dout)
        grads = {}
        for idx in range(1, self.hidden_layer_num+2):
            grads['W' + str(idx)] = self.layers['Affine' + str(idx)].dW + self.weight_decay_lambda * self.params['W' + str(idx)]
            grads['b' + str(idx)] = self.layers['Affine' + str(idx)].db
            if self.use_batchnorm and idx != self.hidden_layer_num+1:
                grads['gamma' + str(idx)] = self.layers['BatchNorm' + str(idx)].dgamma
                grads['beta' + str(idx)] = self.layers['BatchNorm' + str(idx)].dbeta
        return grads


# the convolutional networks of chapters 7 and 8 (twins of fastnn.nets's)
from fastnn.reference.convnets import DeepConvNet, SimpleConvNet  # noqa: E402,F401
