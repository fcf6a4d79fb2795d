"""The Trainer behaves as the book's where a script can see it (issue 12): batches from
np.random.choice, the loss recorded after the update, evaluations on
evaluate_sample_num_per_epoch samples, the book's lines; its own options (log, record_loss,
blas_threads) and the argument errors that must come before any step (issues 9 and 13)."""
import contextlib
import io
import re

import numpy as np
import pytest
from conftest import book_module

from fastnn import threads
from fastnn.nets import MultiLayerNet, TwoLayerNet
from fastnn.trainer import Trainer

NUMBER = re.compile(r"-?\d+\.\d+(?:e[-+]?\d+)?|nan")


def blobs(n, seed=0, d=20, k=4):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, d)) * 3
    t = rng.integers(0, k, n)
    return (centers[t] + rng.standard_normal((n, d))).astype(np.float32), t.astype(np.uint8)


def printed(run):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        run()
    return out.getvalue()


def same_lines(ours, books, rel=1e-9):
    """The same lines, their numbers equal to ``rel`` (a compiled optimizer step may round
    its last bit otherwise than NumPy's two operations)."""
    ours, books = ours.splitlines(), books.splitlines()
    assert len(ours) == len(books)
    for a, b in zip(ours, books):
        assert NUMBER.sub("#", a) == NUMBER.sub("#", b), (a, b)
        np.testing.assert_allclose([float(x) for x in NUMBER.findall(a)],
                                   [float(x) for x in NUMBER.findall(b)], rtol=rel, atol=0)


@pytest.mark.parametrize("optimizer", ["SGD", "Adam"])
def test_the_books_run_and_lines_with_the_books_network(optimizer):
    """The book's Trainer and fastnn's, on the book's own MultiLayerNet, from one seed."""
    book_trainer = book_module("common.trainer")
    book_net = book_module("common.multi_layer_net")
    x, t = blobs(300)
    runs = []
    for cls in (book_trainer.Trainer, Trainer):
        np.random.seed(4)
        net = book_net.MultiLayerNet(20, [16, 8], 4)
        trainer = cls(net, x[:200], t[:200], x[200:], t[200:], epochs=3, mini_batch_size=50,
                      optimizer=optimizer, optimizer_param={"lr": 0.05},
                      evaluate_sample_num_per_epoch=60)
        out = printed(trainer.train)
        runs.append((out, trainer.train_loss_list, trainer.train_acc_list,
                     trainer.test_acc_list, net.params["W3"].copy()))
    (book_out, book_losses, book_train, book_test, book_W), (out, losses, train, test, W) = runs
    same_lines(out, book_out)
    assert out.count("train loss:") == 12 and out.count("=== epoch:") == 3
    assert out.splitlines()[-2] == "=============== Final Test Accuracy ==============="
    np.testing.assert_allclose(losses, book_losses, rtol=1e-9)
    assert train == book_train and test == book_test
    np.testing.assert_allclose(W, book_W, rtol=1e-9, atol=1e-12)


def test_np_random_seed_reproduces_a_run_and_seed_draws_the_same():
    x, t = blobs(200)
    losses = []
    for seed in (None, None, 11):
        if seed is None:
            np.random.seed(11)
        net = TwoLayerNet(20, 8, 4, rng=1)
        trainer = Trainer(net, x, t, x, t, epochs=2, mini_batch_size=20, verbose=False,
                          seed=seed)
        trainer.train()
        losses.append(trainer.train_loss_list)
    assert losses[0] == losses[1] == losses[2]
    # and the draws are the book's: np.random.choice(train_size, batch_size) per step
    np.random.seed(11)
    expected = [np.random.choice(200, 20) for _ in range(3)]
    np.random.seed(11)
    trainer = Trainer(TwoLayerNet(20, 8, 4, rng=1), x, t, x, t, mini_batch_size=20,
                      verbose=False)
    seen = []
    gradient = trainer.network.gradient
    trainer.network.gradient = lambda xb, tb: (seen.append(xb.copy()), gradient(xb, tb))[1]
    for _ in range(3):
        trainer.train_step()
    for batch, index in zip(seen, expected):
        np.testing.assert_array_equal(batch, x[index])


def test_loss_recorded_after_the_update_or_before():
    x, t = blobs(200)
    after = Trainer(TwoLayerNet(20, 8, 4, rng=1), x, t, x, t, epochs=1, mini_batch_size=20,
                    verbose=False, seed=2)
    before = Trainer(TwoLayerNet(20, 8, 4, rng=1), x, t, x, t, epochs=1, mini_batch_size=20,
                     verbose=False, seed=2, record_loss="before")
    for trainer in (after, before):
        trainer.train_step()
    # 'after': the batch's loss under the updated weights, as the book's network.loss()
    net = after.network
    assert after.train_loss_list[0] == net.loss(after._x_batch, after._t_batch)
    assert before.train_loss_list[0] == before.network.last_loss
    assert before.train_loss_list[0] != after.train_loss_list[0]


def test_evaluations_use_the_first_samples():
    x, t = blobs(300)
    trainer = Trainer(TwoLayerNet(20, 8, 4, rng=1), x[:200], t[:200], x[200:], t[200:],
                      epochs=2, mini_batch_size=50, verbose=False, seed=0,
                      evaluate_sample_num_per_epoch=30)
    sizes = []
    accuracy = trainer.network.accuracy
    trainer.network.accuracy = lambda xs, ts: (sizes.append(len(xs)), accuracy(xs, ts))[1]
    trainer.network.snapshot = None  # evaluate in place, where the wrapper sees it
    trainer.train()
    assert sizes == [30, 30, 30, 30, 100]  # two epochs of train and test, then all of x_test
    net = trainer.network
    assert trainer.test_acc_list[-1] == accuracy(x[200:230], t[200:230])


def test_compact_log_and_background_evaluation_give_the_same_numbers():
    x, t = blobs(400)
    lists, outs = [], []
    for log in ("book", "epoch"):
        trainer = Trainer(TwoLayerNet(20, 8, 4, rng=1), x, t, x[:100], t[:100], epochs=3,
                          mini_batch_size=40, optimizer_param={"lr": 0.05}, seed=5, log=log)
        outs.append(printed(trainer.train))
        lists.append((trainer.train_loss_list, trainer.train_acc_list, trainer.test_acc_list))
    assert lists[0] == lists[1]
    seen = []
    trainer = Trainer(TwoLayerNet(20, 8, 4, rng=1), x, t, x[:100], t[:100], epochs=3,
                      mini_batch_size=40, optimizer_param={"lr": 0.05}, seed=5, verbose=False,
                      on_epoch=lambda *record: seen.append(record))
    trainer.train()
    assert [r[:2] for r in seen] == [(1, 0), (2, 10), (3, 20)]
    assert [r[3] for r in seen] == lists[0][1] and [r[4] for r in seen] == lists[0][2]
    assert [r[2] for r in seen] == [lists[0][0][i] for i in (0, 10, 20)]
    compact = outs[1].splitlines()
    assert len(compact) == 4 and compact[0].startswith("epoch   1  iter      0  loss ")
    assert compact[-1].startswith("final test acc ")
    assert outs[0].count("train loss:") == 30


def test_blas_threads_is_a_parameter_scoped_to_train():
    x, t = blobs(100)
    previous = threads.set_num_threads(None)
    try:
        for blas_threads, during in ((1, 1), (None, None), (2, 2)):
            net = TwoLayerNet(20, 8, 4, rng=1)
            seen = []
            gradient = net.gradient
            net.gradient = lambda xb, tb: (seen.append(threads.get_num_threads()),
                                           gradient(xb, tb))[1]
            Trainer(net, x, t, x, t, epochs=1, mini_batch_size=50, verbose=False,
                    blas_threads=blas_threads).train()
            assert set(seen) == {during}
            assert threads.get_num_threads() is None  # restored: no process-wide change
    finally:
        threads.set_num_threads(previous)
    with pytest.raises(ValueError, match="blas_threads must be >= 1"):
        Trainer(TwoLayerNet(20, 8, 4), x, t, x, t, blas_threads=0)


class _CountingNet(TwoLayerNet):
    steps = 0

    def gradient(self, x, t):
        type(self).steps += 1
        return super().gradient(x, t)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(evaluate_sample_num_per_epoch=0), ValueError,
         "evaluate_sample_num_per_epoch must be >= 1, got 0"),
        (dict(evaluate_sample_num_per_epoch=2.5), TypeError,
         "evaluate_sample_num_per_epoch must be an integer"),
        (dict(epochs=-1), ValueError, "epochs must be finite and >= 0"),
        (dict(epochs=float("nan")), ValueError, "epochs must be finite"),
        (dict(epochs="3"), TypeError, "epochs must be a real number"),
        (dict(epochs=True), TypeError, "epochs must be a real number"),
        (dict(mini_batch_size=0), ValueError, "mini_batch_size must be >= 1"),
        (dict(mini_batch_size=10.5), TypeError, "mini_batch_size must be an integer"),
        (dict(max_iter=-1), ValueError, "max_iter must be >= 0"),
        (dict(log="tqdm"), ValueError, "log must be one of"),
        (dict(record_loss="never"), ValueError, "record_loss must be one of"),
        (dict(on_epoch=42), TypeError, "on_epoch must be callable"),
    ],
)
def test_bad_arguments_fail_before_any_step(kwargs, error, match):
    x, t = blobs(50)
    _CountingNet.steps = 0
    with pytest.raises(error, match=match):
        Trainer(_CountingNet(20, 8, 4), x, t, x, t, verbose=False, **kwargs).train()
    assert _CountingNet.steps == 0


def test_empty_data_is_refused_clearly():
    x, t = blobs(50)
    with pytest.raises(ValueError, match=r"x_train must hold at least one sample, got shape "
                                         r"\(0, 20\)"):
        Trainer(TwoLayerNet(20, 8, 4), x[:0], t[:0], x, t)
    with pytest.raises(ValueError, match="x_test must hold at least one sample"):
        Trainer(TwoLayerNet(20, 8, 4), x, t, x[:0], t[:0])


def test_fractional_epochs_train_that_many_epochs_of_steps():
    x, t = blobs(100)
    trainer = Trainer(TwoLayerNet(20, 8, 4, rng=0), x, t, x, t, epochs=2.7, mini_batch_size=10,
                      verbose=False, seed=0)
    assert trainer.max_iter == 27  # the book's int(epochs * iter_per_epoch), not 2 epochs
    trainer.train()
    assert len(trainer.train_loss_list) == 27 and len(trainer.test_acc_list) == 3
    whole = Trainer(TwoLayerNet(20, 8, 4, rng=0), x, t, x, t, epochs=3, mini_batch_size=30,
                    verbose=False)
    assert whole.iter_per_epoch == 4 and whole.max_iter == 12  # whole steps per epoch
