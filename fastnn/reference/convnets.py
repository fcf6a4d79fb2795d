"""The book's SimpleConvNet (ch07/simple_convnet.py) and DeepConvNet (ch08/deep_convnet.py)
in plain NumPy: twins of ``fastnn.nets.SimpleConvNet`` and ``fastnn.nets.DeepConvNet``.

The book's code, with one addition: ``dtype`` (the weights are drawn as the book draws them,
in float64 from ``np.random.randn``, then cast); the layers are the twins of
:mod:`fastnn.reference.conv` and :mod:`fastnn.reference.normalization`, which compute in the
dtype of their input (the book's ``im2col`` allocates float64 whatever it is given).  Dropout draws its
masks from ``np.random.rand`` exactly as the book's, so under one ``np.random.seed`` twin and
fastnn drop the same units.

``precision='bf16'`` (float32 only) replaces the Convolution and Affine layers by
:class:`fastnn.reference.conv.Bf16Convolution` and :class:`fastnn.reference.layers.Bf16Affine`,
whose products take bfloat16-rounded operands and sum in float32, and computes in float32
whatever the images' dtype.
"""
from collections import OrderedDict

import numpy as np

from fastnn.reference.conv import Bf16Convolution, Convolution, Pooling
from fastnn.reference.gradient import numerical_gradient
from fastnn.reference.layers import Affine, Bf16Affine, Relu, SoftmaxWithLoss, bf16_precision
from fastnn.reference.normalization import Dropout

__all__ = ["SimpleConvNet", "DeepConvNet"]


def _layer_classes(precision, dtype):
    """(Convolution, Affine) of a network of ``precision`` and ``dtype``."""
    if bf16_precision(precision, dtype):
        return Bf16Convolution, Bf16Affine
    return Convolution, Affine


def _compute(a, precision):
    """A bf16 network computes in float32: its images, and float (one-hot) targets."""
    a = np.asarray(a)
    return a if precision is None or a.dtype.kind != 'f' else a.astype(np.float32)


# --- the networks ---------------------------------------------------------------------------

class SimpleConvNet:
    def __init__(self, input_dim=(1, 28, 28),
                 conv_param={'filter_num': 30, 'filter_size': 5, 'pad': 0, 'stride': 1},
                 hidden_size=100, output_size=10, weight_init_std=0.01, dtype=np.float64,
                 precision=None):
        Convolution, Affine = _layer_classes(precision, dtype)
        self.precision = precision
        filter_num = conv_param['filter_num']
        filter_size = conv_param['filter_size']
        filter_pad = conv_param['pad']
        filter_stride = conv_param['stride']
        input_size = input_dim[1]
        conv_output_size = (input_size - filter_size + 2*filter_pad) / filter_stride + 1
        pool_output_size = int(filter_num * (conv_output_size/2) * (conv_output_size/2))

        self.params = {}
        self.params['W1'] = (weight_init_std *
                             np.random.randn(filter_num, input_dim[0], filter_size, filter_size)).astype(dtype)
        self.params['b1'] = np.zeros(filter_num, dtype=dtype)
        self.params['W2'] = (weight_init_std * np.random.randn(pool_output_size, hidden_size)).astype(dtype)
        self.params['b2'] = np.zeros(hidden_size, dtype=dtype)
        self.params['W3'] = (weight_init_std * np.random.randn(hidden_size, output_size)).astype(dtype)
        self.params['b3'] = np.zeros(output_size, dtype=dtype)

        self.layers = OrderedDict()
        self.layers['Conv1'] = Convolution(self.params['W1'], self.params['b1'],
                                           conv_param['stride'], conv_param['pad'])
        self.layers['Relu1'] = Relu()
        self.layers['Pool1'] = Pooling(pool_h=2, pool_w=2, stride=2)
        self.layers['Affine1'] = Affine(self.params['W2'], self.params['b2'])
        self.layers['Relu2'] = Relu()
        self.layers['Affine2'] = Affine(self.params['W3'], self.params['b3'])
        self.last_layer = SoftmaxWithLoss()

    def predict(self, x):
        x = _compute(x, self.precision)
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x, t):
        y = self.predict(x)
        return self.last_layer.forward(y, _compute(t, self.precision))

    def accuracy(self, x, t, batch_size=100):
        if t.ndim != 1:
            t = np.argmax(t, axis=1)
        acc = 0.0
        for i in range(int(x.shape[0] / batch_size)):
            tx = x[i*batch_size:(i+1)*batch_size]
            tt = t[i*batch_size:(i+1)*batch_size]
            y = self.predict(tx)
            y = np.argmax(y, axis=1)
            acc += np.sum(y == tt)
        return acc / x.shape[0]

    def numerical_gradient(self, x, t):
        loss_w = lambda w: self.loss(x, t)
        grads = {}
        for idx in (1, 2, 3):
            grads['W' + str(idx)] = numerical_gradient(loss_w, self.params['W' + str(idx)])
            grads['b' + str(idx)] = numerical_gradient(loss_w, self.params['b' + str(idx)])
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
        grads['W1'], grads['b1'] = self.layers['Conv1'].dW, self.layers['Conv1'].db
        grads['W2'], grads['b2'] = self.layers['Affine1'].dW, self.layers['Affine1'].db
        grads['W3'], grads['b3'] = self.layers['Affine2'].dW, self.layers['Affine2'].db
        return grads


class DeepConvNet:
    def __init__(self, input_dim=(1, 28, 28),
                 conv_param_1={'filter_num': 16, 'filter_size': 3, 'pad': 1, 'stride': 1},
                 conv_param_2={'filter_num': 16, 'filter_size': 3, 'pad': 1, 'stride': 1},
                 conv_param_3={'filter_num': 32, 'filter_size': 3, 'pad': 1, 'stride': 1},
                 conv_param_4={'filter_num': 32, 'filter_size': 3, 'pad': 2, 'stride': 1},
                 conv_param_5={'filter_num': 64, 'filter_size': 3, 'pad': 1, 'stride': 1},
                 conv_param_6={'filter_num': 64, 'filter_size': 3, 'pad': 1, 'stride': 1},
                 hidden_size=50, output_size=10, dtype=np.float64, precision=None):
        Convolution, Affine = _layer_classes(precision, dtype)
        self.precision = precision
        pre_node_nums = np.array([1*3*3, 16*3*3, 16*3*3, 32*3*3, 32*3*3, 64*3*3, 64*4*4, hidden_size])
        weight_init_scales = np.sqrt(2.0 / pre_node_nums)

        self.params = {}
        pre_channel_num = input_dim[0]
        for idx, conv_param in enumerate([conv_param_1, conv_param_2, conv_param_3,
                                          conv_param_4, conv_param_5, conv_param_6]):
            self.params['W' + str(idx+1)] = (weight_init_scales[idx] * np.random.randn(
                conv_param['filter_num'], pre_channel_num, conv_param['filter_size'],
                conv_param['filter_size'])).astype(dtype)
            self.params['b' + str(idx+1)] = np.zeros(conv_param['filter_num'], dtype=dtype)
            pre_channel_num = conv_param['filter_num']
        self.params['W7'] = (weight_init_scales[6] * np.random.randn(64*4*4, hidden_size)).astype(dtype)
        self.params['b7'] = np.zeros(hidden_size, dtype=dtype)
        self.params['W8'] = (weight_init_scales[7] * np.random.randn(hidden_size, output_size)).astype(dtype)
        self.params['b8'] = np.zeros(output_size, dtype=dtype)

        conv_params = [conv_param_1, conv_param_2, conv_param_3, conv_param_4, conv_param_5,
                       conv_param_6]
        self.layers = []
        for idx, conv_param in enumerate(conv_params):
            self.layers.append(Convolution(self.params['W' + str(idx+1)], self.params['b' + str(idx+1)],
                                           conv_param['stride'], conv_param['pad']))
            self.layers.append(Relu())
            if idx % 2 == 1:
                self.layers.append(Pooling(pool_h=2, pool_w=2, stride=2))
        self.layers.append(Affine(self.params['W7'], self.params['b7']))
        self.layers.append(Relu())
        self.layers.append(Dropout(0.5))
        self.layers.append(Affine(self.params['W8'], self.params['b8']))
        self.layers.append(Dropout(0.5))
        self.last_layer = SoftmaxWithLoss()

    def predict(self, x, train_flg=False):
        x = _compute(x, self.precision)
        for layer in self.layers:
            if isinstance(layer, Dropout):
                x = layer.forward(x, train_flg)
            else:
                x = layer.forward(x)
        return x

    def loss(self, x, t):
        y = self.predict(x, train_flg=True)
        return self.last_layer.forward(y, _compute(t, self.precision))

    def accuracy(self, x, t, batch_size=100):
        if t.ndim != 1:
            t = np.argmax(t, axis=1)
        acc = 0.0
        for i in range(int(x.shape[0] / batch_size)):
            tx = x[i*batch_size:(i+1)*batch_size]
            tt = t[i*batch_size:(i+1)*batch_size]
            y = self.predict(tx, train_flg=False)
            y = np.argmax(y, axis=1)
            acc += np.sum(y == tt)
        return acc / x.shape[0]

    def gradient(self, x, t):
        self.loss(x, t)
        dout = 1
        dout = self.last_layer.backward(dout)
        tmp_layers = self.layers.copy()
        tmp_layers.reverse()
        for layer in tmp_layers:
            dout = layer.backward(dout)
        grads = {}
        for i, layer_idx in enumerate((0, 2, 5, 7, 10, 12, 15, 18)):
            grads['W' + str(i+1)] = self.layers[layer_idx].dW
            grads['b' + str(i+1)] = self.layers[layer_idx].db
        return grads
