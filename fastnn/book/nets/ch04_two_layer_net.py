"""Chapter 4's ``two_layer_net.py``: a sigmoid network whose ``predict`` returns probabilities.

The book's chapter-4 ``TwoLayerNet`` computes ``softmax(sigmoid(x W1 + b1) W2 + b2)`` and
differentiates it by hand (``gradient``) or by central differences (``numerical_gradient``).
Here the same network is fastnn's :class:`~fastnn.nets.MultiLayerNet` with one sigmoid hidden
layer: the same initial weights under ``np.random.seed`` (drawn by ``np.random.randn`` in the
book's order), the same loss (the book's cross-entropy with its 1e-7), the gradient in one
compiled call and the numerical gradient swept in compiled code (about 10 ms per step at
batch 100 where the book's takes tens of seconds, which makes the commented-out
``network.numerical_gradient`` line of ``train_neuralnet.py`` usable).
"""
import numpy as np

from fastnn.functions import softmax
from fastnn.nets import MultiLayerNet

__all__ = ["TwoLayerNet", "np"]


class TwoLayerNet:
    """input -> Affine1 -> sigmoid -> Affine2 -> softmax (the book's chapter 4).

    Parameters
    ----------
    input_size, hidden_size, output_size : int
    weight_init_std : float, default 0.01
        The standard deviation of the initial weights.
    dtype : float32 or float64, default float64 (the book's)
    rng : int, Generator or None
        None draws the weights from ``np.random.randn``, as the book does.

    Attributes
    ----------
    params : dict of ndarray
        ``W1``, ``b1``, ``W2``, ``b2``, updated in place by the book's
        ``network.params[key] -= ...``.
    network : MultiLayerNet
        The network of scores that computes everything.

    Notes
    -----
    ``predict`` returns probabilities (the softmax of the scores), as in the book; ``loss``,
    ``accuracy``, ``gradient`` and ``numerical_gradient`` are those of the network of scores,
    which the softmax does not change (``accuracy`` takes one-hot rows or labels).
    Twin: the book's ``ch04/two_layer_net.py``.
    """

    def __init__(self, input_size, hidden_size, output_size, weight_init_std=0.01,
                 dtype=np.float64, rng=None):
        self.network = MultiLayerNet(input_size, [hidden_size], output_size,
                                     activation="sigmoid", weight_init_std=weight_init_std,
                                     dtype=dtype, rng=rng)
        self.params = self.network.params
        self.dtype = self.network.dtype

    def predict(self, x):
        """Class probabilities: the softmax of the scores, rows summing to 1."""
        return softmax(self.network.predict(x))

    def loss(self, x, t):
        """The book's ``cross_entropy_error(predict(x), t)``."""
        return self.network.loss(x, t)

    def accuracy(self, x, t):
        """Fraction of rows whose most probable class is the label (or one-hot argmax)."""
        return self.network.accuracy(x, t)

    def gradient(self, x, t):
        """The gradient of ``loss`` for every parameter (the network's reused buffers: copy
        them to keep them); the batch loss is left in ``last_loss``."""
        return self.network.gradient(x, t)

    def numerical_gradient(self, x, t):
        """Central differences (h = 1e-4) of ``loss`` for every parameter, as the book's."""
        return self.network.numerical_gradient(x, t)

    @property
    def last_loss(self):
        """The loss of the last ``gradient`` call's batch."""
        return self.network.last_loss

    def snapshot(self):
        """An independent copy for evaluation (what the Trainer evaluates in a thread)."""
        return self.network.snapshot()
