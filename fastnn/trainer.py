"""Minibatch training, as the book's ``common/trainer.py`` and ``train_neuralnet.py`` do it.

Differences that make it faster without changing what is learned:

* each minibatch is gathered into a buffer that is reused and cast there to the network's
  dtype, so a step allocates no arrays and the data are never copied whole (a float64 copy of
  MNIST's float32 images would take 376 MB); labels become int64 once;
* ``train_loss_list`` records the minibatch loss that ``gradient()`` computes anyway (before
  the update), where the book runs a second forward pass after it;
* sampling comes from a seeded generator (``seed``), so a run can be repeated exactly;
* during ``train()``, the accuracies of each epoch are computed on a snapshot of the network
  (copies of its parameters, taken at the epoch boundary) in a second thread, on the second
  core, while training goes on: the numbers are the same, the time mostly hidden.
"""
import math
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from fastnn import _validation as v
from fastnn import threads
from fastnn.optim import get_optimizer

__all__ = ["Trainer", "plot_training"]


def _progress(total, enabled):
    """A tqdm bar when stderr is a terminal and tqdm is installed, else None."""
    if not enabled or not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="it", leave=False, dynamic_ncols=True)


class Trainer:
    """Train ``network`` by minibatch gradient descent (the book's ``Trainer``).

    Parameters
    ----------
    network : TwoLayerNet or MultiLayerNet (or any object with the book's ``params``,
        ``gradient``, ``loss`` and ``accuracy``)
    x_train, t_train, x_test, t_test : array_like
        Data and integer labels (or one-hot targets).
    epochs : int
    mini_batch_size : int
    optimizer : str or optimizer
        A name from :func:`fastnn.optim.get_optimizer` (case-insensitive) or an instance.
    optimizer_param : dict
        Constructor arguments of the optimizer when given by name.
    evaluate_sample_num_per_epoch : int or None
        Evaluate accuracies on only the first this many samples at each epoch.
    verbose : bool
        Print one line per epoch (and show a progress bar on a terminal).
    seed : int or None
        Seed of the minibatch sampling.
    max_iter : int or None
        Number of steps; default ``epochs * max(train_size / mini_batch_size, 1)``.
    """

    def __init__(self, network, x_train, t_train, x_test, t_test, epochs=20, mini_batch_size=100,
                 optimizer="SGD", optimizer_param=None, evaluate_sample_num_per_epoch=None,
                 verbose=True, seed=None, max_iter=None):
        self.network = network
        self.verbose = verbose
        # the data keep their own float dtype; minibatches are cast as they are gathered
        self.x_train = v.as_float(x_train, "x_train")
        self.x_test = v.as_float(x_test, "x_test")
        dtype = getattr(network, "dtype", None) or self.x_train.dtype
        self.t_train = self._targets(t_train, self.x_train, "t_train", dtype)
        self.t_test = self._targets(t_test, self.x_test, "t_test", dtype)
        self.epochs = int(epochs)
        self.batch_size = int(mini_batch_size)
        if self.batch_size < 1 or self.epochs < 0:
            raise ValueError(f"mini_batch_size must be >= 1 and epochs >= 0, got "
                             f"{mini_batch_size} and {epochs}")
        self.evaluate_sample_num_per_epoch = evaluate_sample_num_per_epoch
        self.optimizer = get_optimizer(optimizer, **(optimizer_param or {"lr": 0.01}))
        self.rng = np.random.default_rng(seed)

        self.train_size = self.x_train.shape[0]
        # whole steps per epoch: the book's float train_size / batch_size meets an epoch
        # boundary only every few epochs when the batch size does not divide the data
        self.iter_per_epoch = max(math.ceil(self.train_size / self.batch_size), 1)
        self.max_iter = int(self.epochs * self.iter_per_epoch) if max_iter is None else int(max_iter)
        self.current_iter = 0
        self.current_epoch = 0
        self.train_loss_list = []
        self.train_acc_list = []
        self.test_acc_list = []
        self.seconds_per_iter = None
        self._x_gathered = np.empty((self.batch_size,) + self.x_train.shape[1:], self.x_train.dtype)
        self._x_batch = (self._x_gathered if dtype == self.x_train.dtype
                         else np.empty(self._x_gathered.shape, dtype))
        self._t_batch = np.empty((self.batch_size,) + self.t_train.shape[1:], self.t_train.dtype)
        self._index = np.empty(self.batch_size, np.int64)

    @staticmethod
    def _targets(t, x, name, dtype):
        t = np.asarray(t)
        if t.ndim == 2 and t.shape[0] == x.shape[0] and t.shape[1] > 1:
            return v.as_float(t, name, dtype)
        if t.dtype.kind not in "iu" or t.shape[:1] != x.shape[:1]:
            raise ValueError(f"{name} must hold {x.shape[0]} integer labels or one-hot rows, "
                             f"got dtype {t.dtype} and shape {t.shape}")
        return np.ascontiguousarray(t.reshape(x.shape[0]), dtype=np.int64)

    def train_step(self):
        """One minibatch step; at each epoch boundary, evaluate the accuracies."""
        # the book samples with replacement (np.random.choice(train_size, batch_size))
        self._index[:] = self.rng.integers(0, self.train_size, self.batch_size)
        # mode="clip": the indices are in range, and mode="raise" would buffer the output
        np.take(self.x_train, self._index, axis=0, out=self._x_gathered, mode="clip")
        if self._x_batch is not self._x_gathered:
            np.copyto(self._x_batch, self._x_gathered)
        np.take(self.t_train, self._index, axis=0, out=self._t_batch, mode="clip")
        grads = self.network.gradient(self._x_batch, self._t_batch)
        loss = getattr(self.network, "last_loss", None)
        if loss is None:
            loss = self.network.loss(self._x_batch, self._t_batch)
        self.optimizer.update(self.network.params, grads)
        self.train_loss_list.append(float(loss))
        if self.current_iter % self.iter_per_epoch == 0:
            self._evaluate()
        self.current_iter += 1

    def _evaluate(self):
        self.current_epoch += 1
        loss = self.train_loss_list[-1] if self.train_loss_list else float("nan")
        snapshot = getattr(self.network, "snapshot", None)
        if self._pool is not None and snapshot is not None:
            # results are recorded in epoch order: one worker takes them first in, first out
            self._pending.append(self._pool.submit(
                self._accuracies, snapshot(), self.current_epoch, self.current_iter, loss))
        else:
            self._record(self._accuracies(self.network, self.current_epoch, self.current_iter, loss))

    def _accuracies(self, network, epoch, iteration, loss):
        k = self.evaluate_sample_num_per_epoch
        sl = slice(None) if k is None else slice(0, k)
        train_acc = network.accuracy(self.x_train[sl], self.t_train[sl])
        test_acc = network.accuracy(self.x_test[sl], self.t_test[sl])
        if self.verbose:
            self._print(f"epoch {epoch:3d}  iter {iteration:6d}  loss {loss:.4f}  "
                        f"train acc {train_acc:.4f}  test acc {test_acc:.4f}")
        return train_acc, test_acc

    def _record(self, accuracies):
        self.train_acc_list.append(accuracies[0])
        self.test_acc_list.append(accuracies[1])

    def _print(self, line):
        if self._bar is not None:
            self._bar.write(line)
        else:
            print(line, flush=True)

    def train(self):
        """Run ``max_iter`` steps; returns the final test accuracy."""
        self._bar = _progress(self.max_iter, self.verbose)
        self._pending = []
        start = time.perf_counter()
        # two threads now share the machine's cores: each runs its BLAS on one
        with (ThreadPoolExecutor(max_workers=1) as pool, threads.blas_limit(1),
              threads.num_threads(1)):
            self._pool = pool
            try:
                for _ in range(self.max_iter):
                    self.train_step()
                    if self._bar is not None:
                        self._bar.update()
                for future in self._pending:
                    self._record(future.result())
            finally:
                self._pool = None
                if self._bar is not None:
                    self._bar.close()
                self._bar = None
        elapsed = time.perf_counter() - start
        self.seconds_per_iter = elapsed / max(self.max_iter, 1)
        test_acc = self.network.accuracy(self.x_test, self.t_test)
        if self.verbose:
            print(f"final test acc {test_acc:.4f}  ({self.max_iter} iterations in {elapsed:.2f} s, "
                  f"{1e6 * self.seconds_per_iter:.0f} us per iteration with evaluations)", flush=True)
        return test_acc

    _bar = None
    _pool = None


def plot_training(trainer, path):
    """Write the loss per step and the accuracies per epoch of a trained ``Trainer`` to a PNG.

    Needs matplotlib (``pip install fastnn[plot]``); the file is written atomically.
    """
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("plotting needs matplotlib: pip install 'fastnn[plot]'") from exc
    from fastnn.io import atomic_open

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(trainer.train_loss_list, lw=0.5)
    ax_loss.set(xlabel="iteration", ylabel="minibatch loss", yscale="log", title="loss")
    epochs = np.arange(1, len(trainer.train_acc_list) + 1)
    ax_acc.plot(epochs, trainer.train_acc_list, "o-", label="train")
    ax_acc.plot(epochs, trainer.test_acc_list, "s--", label="test")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    ax_acc.legend()
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
