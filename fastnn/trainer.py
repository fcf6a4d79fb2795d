"""Minibatch training, as the book's ``common/trainer.py`` does it.

What a script can see is the book's, by default:

* mini-batches are drawn with ``np.random.choice(train_size, batch_size)`` from NumPy's
  global generator, so ``np.random.seed`` reproduces a run (``seed=`` gives the Trainer a
  private ``RandomState`` that draws the same numbers as ``np.random.seed(seed)`` would);
* ``train_loss_list`` records ``network.loss(x_batch, t_batch)`` computed after the update,
  as the book does (``record_loss="before"`` records the loss that ``gradient()`` computed
  before it instead, which costs no second forward pass);
* accuracies are computed at each epoch boundary on the first
  ``evaluate_sample_num_per_epoch`` samples of the training and the test data;
* ``verbose=True`` prints the book's lines (``train loss:...`` at every step,
  ``=== epoch:... ===`` at every epoch, the final test accuracy); ``log="epoch"`` prints one
  compact line per epoch instead (fastnn's own ``train`` command).

Differences that make it faster without changing what is learned:

* each minibatch is gathered into a buffer that is reused and cast there to the network's
  dtype, so a step allocates no large arrays and the data are never copied whole (a float64
  copy of MNIST's float32 images would take 376 MB); labels become int64 once;
* an epoch has a whole number of steps, ``ceil(train_size / batch_size)`` (the book's float
  ``train_size / batch_size`` meets an epoch boundary only every few epochs when the batch
  size does not divide the data; the two agree whenever it does, as in every book script);
* when nothing is printed between epochs (``verbose=False`` or ``log="epoch"``) and the
  network has ``snapshot()`` (fastnn's networks), each epoch's accuracies are computed on a
  snapshot of the network (copies of its parameters, taken at the epoch boundary) in a second
  thread while training goes on: the numbers are the same, the time mostly hidden.

Threads: while ``train()`` runs, fastnn's BLAS library is set to ``blas_threads`` threads
(default 1: the training and the evaluation thread each take one core) and restored
afterwards; the BLAS setting is the library's, so other threads' GEMMs see it too during
training.  ``blas_threads=None`` leaves the setting alone.  Forking while another thread is
inside an OpenBLAS call can deadlock in OpenBLAS's fork handler (plain NumPy too); the
evaluation thread makes that reachable during ``train()``, so do not fork from another thread
then.
"""
import contextlib
import math
import numbers
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from fastnn import _validation as v
from fastnn import threads
from fastnn.optim import get_optimizer

__all__ = ["Trainer", "plot_training"]

_LOGS = ("book", "epoch")
_RECORD_LOSS = ("after", "before")


def _progress(total, enabled):
    """A tqdm bar when stderr is a terminal and tqdm is installed, else None."""
    if not enabled or not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="it", leave=False, dynamic_ncols=True)


def _check_epochs(epochs):
    """``epochs`` as a finite real >= 0 (the book multiplies it by the steps per epoch, so
    2.5 epochs are two and a half epochs of steps)."""
    if isinstance(epochs, (bool, np.bool_)) or not isinstance(epochs, numbers.Real):
        raise TypeError(f"epochs must be a real number, got {epochs!r}")
    if not math.isfinite(epochs) or epochs < 0:
        raise ValueError(f"epochs must be finite and >= 0, got {epochs!r}")
    return epochs


class Trainer:
    """Train ``network`` by minibatch gradient descent (the book's ``Trainer``).

    Parameters
    ----------
    network : TwoLayerNet or MultiLayerNet (or any object with the book's ``params``,
        ``gradient``, ``loss`` and ``accuracy``)
    x_train, t_train, x_test, t_test : array_like
        Data and integer labels (or one-hot targets); ``x_train`` must not be empty.
    epochs : real, >= 0
        Epochs of training: ``int(epochs * iter_per_epoch)`` steps, as in the book.
    mini_batch_size : int, >= 1
    optimizer : str or optimizer
        A name from :func:`fastnn.optim.get_optimizer` (case-insensitive) or an instance.
    optimizer_param : dict
        Constructor arguments of the optimizer when given by name (default ``{'lr': 0.01}``).
    evaluate_sample_num_per_epoch : int >= 1 or None
        Evaluate accuracies on only the first this many samples at each epoch.
    verbose : bool
        Print the lines of ``log``.
    seed : int or None
        None: minibatches come from NumPy's global generator, as in the book
        (``np.random.seed`` fixes them).  An int: from a private ``np.random.RandomState(seed)``,
        which draws what the global generator draws after ``np.random.seed(seed)``.
    max_iter : int or None
        Number of steps; default ``int(epochs * iter_per_epoch)``.
    log : {'book', 'epoch'}
        'book': the book's lines, ``train loss:...`` at every step, ``=== epoch:N, train
        acc:..., test acc:... ===`` at every epoch and the final test accuracy.
        'epoch': one line per epoch (with a progress bar on a terminal) and a final line with
        the time per step.
    record_loss : {'after', 'before'}
        'after': ``train_loss_list`` holds ``network.loss`` of the batch after the update
        (the book's).  'before': the loss that ``gradient()`` computed (fastnn's networks
        keep it in ``last_loss``), saving a forward pass per step.
    blas_threads : int >= 1 or None
        BLAS threads while ``train()`` runs (restored afterwards); None: leave them as set.
    on_epoch : callable or None
        Called as ``on_epoch(epoch, iteration, loss, train_acc, test_acc)`` after each
        epoch's evaluation, in epoch order (from the evaluation thread when there is one).

    Raises
    ------
    TypeError, ValueError
        For arguments that cannot give a run (empty ``x_train``, a batch size below 1,
        ``evaluate_sample_num_per_epoch`` below 1, unknown ``log``...), before any step.
    """

    def __init__(self, network, x_train, t_train, x_test, t_test, epochs=20, mini_batch_size=100,
                 optimizer="SGD", optimizer_param=None, evaluate_sample_num_per_epoch=None,
                 verbose=True, seed=None, max_iter=None, *, log="book", record_loss="after",
                 blas_threads=1, on_epoch=None):
        self.network = network
        self.verbose = bool(verbose)
        if log not in _LOGS:
            raise ValueError(f"log must be one of {_LOGS}, got {log!r}")
        if record_loss not in _RECORD_LOSS:
            raise ValueError(f"record_loss must be one of {_RECORD_LOSS}, got {record_loss!r}")
        self.log, self.record_loss = log, record_loss
        if on_epoch is not None and not callable(on_epoch):
            raise TypeError(f"on_epoch must be callable, got {type(on_epoch).__name__}")
        self.on_epoch = on_epoch
        self.blas_threads = None if blas_threads is None else v.check_count(blas_threads,
                                                                            "blas_threads")
        # the data keep their own float dtype; minibatches are cast as they are gathered
        self.x_train = v.as_float(x_train, "x_train")
        self.x_test = v.as_float(x_test, "x_test")
        for name, x in (("x_train", self.x_train), ("x_test", self.x_test)):
            if x.ndim == 0 or x.shape[0] == 0:
                raise ValueError(f"{name} must hold at least one sample, got shape {x.shape}")
        dtype = getattr(network, "dtype", None) or self.x_train.dtype
        self.t_train = self._targets(t_train, self.x_train, "t_train", dtype)
        self.t_test = self._targets(t_test, self.x_test, "t_test", dtype)
        self.epochs = _check_epochs(epochs)
        self.batch_size = v.check_count(mini_batch_size, "mini_batch_size")
        if evaluate_sample_num_per_epoch is not None:
            evaluate_sample_num_per_epoch = v.check_count(evaluate_sample_num_per_epoch,
                                                          "evaluate_sample_num_per_epoch")
        self.evaluate_sample_num_per_epoch = evaluate_sample_num_per_epoch
        self.optimizer = get_optimizer(optimizer, **(optimizer_param or {"lr": 0.01}))
        self.rng = np.random if seed is None else np.random.RandomState(seed)

        self.train_size = self.x_train.shape[0]
        # whole steps per epoch: the book's float train_size / batch_size meets an epoch
        # boundary only every few epochs when the batch size does not divide the data
        self.iter_per_epoch = max(math.ceil(self.train_size / self.batch_size), 1)
        self.max_iter = (int(self.epochs * self.iter_per_epoch) if max_iter is None
                         else v.check_count(max_iter, "max_iter", minimum=0))
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

    @staticmethod
    def _targets(t, x, name, dtype):
        t = np.asarray(t)
        if t.ndim == 2 and t.shape[0] == x.shape[0] and t.shape[1] > 1:
            return v.as_float(t, name, dtype)
        if t.dtype.kind not in "iu" or t.shape[:1] != x.shape[:1]:
            raise ValueError(f"{name} must hold {x.shape[0]} integer labels or one-hot rows, "
                             f"got dtype {t.dtype} and shape {t.shape}")
        return np.ascontiguousarray(t.reshape(x.shape[0]), dtype=np.int64)

    def _book_lines(self):
        return self.verbose and self.log == "book"

    def train_step(self):
        """One minibatch step; at each epoch boundary, evaluate the accuracies."""
        # the book's draw, with replacement, from the global generator (or the seeded one)
        index = self.rng.choice(self.train_size, self.batch_size)
        # mode="clip": the indices are in range, and mode="raise" would buffer the output
        np.take(self.x_train, index, axis=0, out=self._x_gathered, mode="clip")
        if self._x_batch is not self._x_gathered:
            np.copyto(self._x_batch, self._x_gathered)
        np.take(self.t_train, index, axis=0, out=self._t_batch, mode="clip")
        grads = self.network.gradient(self._x_batch, self._t_batch)
        loss = getattr(self.network, "last_loss", None) if self.record_loss == "before" else None
        self.optimizer.update(self.network.params, grads)
        if loss is None:
            loss = self.network.loss(self._x_batch, self._t_batch)
        self.train_loss_list.append(loss)
        if self._book_lines():
            self._print("train loss:" + str(loss))
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
            if self.log == "book":
                self._print(f"=== epoch:{epoch}, train acc:{train_acc}, test acc:{test_acc} ===")
            else:
                self._print(f"epoch {epoch:3d}  iter {iteration:6d}  loss {float(loss):.4f}  "
                            f"train acc {train_acc:.4f}  test acc {test_acc:.4f}")
        if self.on_epoch is not None:
            self.on_epoch(epoch, iteration, loss, train_acc, test_acc)
        return train_acc, test_acc

    def _record(self, accuracies):
        self.train_acc_list.append(accuracies[0])
        self.test_acc_list.append(accuracies[1])

    def _print(self, line):
        if self._bar is not None:
            self._bar.write(line)
        else:
            print(line, flush=self.log == "epoch")

    def train(self):
        """Run ``max_iter`` steps; returns the final test accuracy (on all of ``x_test``)."""
        self._bar = _progress(self.max_iter, self.verbose and self.log == "epoch")
        self._pending = []
        start = time.perf_counter()
        # the book's lines interleave steps and epochs: evaluate in place when they are printed
        background = not self._book_lines() and callable(getattr(self.network, "snapshot", None))
        limit = self.blas_threads
        with (ThreadPoolExecutor(max_workers=1) as pool,
              threads.blas_limit(limit) if limit else contextlib.nullcontext(),
              threads.num_threads(limit) if limit else contextlib.nullcontext()):
            self._pool = pool if background else None
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
            if self.log == "book":
                print("=============== Final Test Accuracy ===============")
                print("test acc:" + str(test_acc))
            else:
                print(f"final test acc {test_acc:.4f}  ({self.max_iter} iterations in "
                      f"{elapsed:.2f} s, {1e6 * self.seconds_per_iter:.0f} us per iteration "
                      "with evaluations)", flush=True)
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
    ax_loss.plot(np.asarray(trainer.train_loss_list, dtype=np.float64), lw=0.5)
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
