"""Training end to end: the Trainer, the book's published weights, the fastnn command."""
import tracemalloc

import numpy as np
import pytest
from conftest import SHARED_DATASETS

from fastnn.__main__ import main
from fastnn.nets import MultiLayerNet, TwoLayerNet
from fastnn.trainer import Trainer

MNIST = SHARED_DATASETS / "mnist"
needs_mnist = pytest.mark.skipif(not MNIST.is_dir(), reason=f"MNIST not found in {MNIST}")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("FASTNN_DATA", raising=False)


def blobs(n, rng, d=20, k=4):
    """Linearly separable clusters: a training run must learn them."""
    centers = rng.standard_normal((k, d)) * 3
    t = rng.integers(0, k, n)
    return (centers[t] + rng.standard_normal((n, d))).astype(np.float32), t.astype(np.uint8)


@pytest.mark.parametrize("optimizer", ["sgd", "Momentum", "NESTEROV", "AdaGrad", "rmsprop", "Adam"])
def test_training_lowers_the_loss(optimizer):
    rng = np.random.default_rng(0)
    x, t = blobs(600, rng)
    net = TwoLayerNet(20, 16, 4, dtype=np.float32, rng=1)
    lr = 0.1 if optimizer.lower() in ("sgd", "momentum", "nesterov", "adagrad") else 0.01
    trainer = Trainer(net, x[:500], t[:500], x[500:], t[500:], epochs=5, mini_batch_size=50,
                      optimizer=optimizer, optimizer_param={"lr": lr}, verbose=False, seed=3)
    trainer.train()
    losses = trainer.train_loss_list
    assert len(losses) == trainer.max_iter == 50
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5])
    assert trainer.test_acc_list[-1] > 0.9
    assert len(trainer.train_acc_list) == 5


def test_seed_makes_a_run_reproducible():
    rng = np.random.default_rng(0)
    x, t = blobs(300, rng)
    runs = []
    for _ in range(2):
        net = MultiLayerNet(20, [10, 8], 4, rng=2)
        trainer = Trainer(net, x, t, x, t, epochs=2, mini_batch_size=30, verbose=False, seed=7)
        trainer.train()
        runs.append((trainer.train_loss_list, net.params["W2"].copy()))
    assert runs[0][0] == runs[1][0]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


def test_a_step_allocates_no_arrays():
    rng = np.random.default_rng(0)
    x, t = blobs(1000, rng, d=100)
    net = TwoLayerNet(100, 50, 4, dtype=np.float32, rng=1)
    trainer = Trainer(net, x, t, x[:10], t[:10], epochs=100, mini_batch_size=100,
                      optimizer="Adam", optimizer_param={"lr": 0.001}, verbose=False, seed=0)
    trainer.train_step()  # warm-up: workspaces and optimizer state
    trainer.train_step()
    trainer.iter_per_epoch = 10**9  # no evaluation inside the measured steps
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        for _ in range(20):
            trainer.train_step()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    batch_bytes = 100 * 100 * 4
    assert peak - base < batch_bytes // 4, (base, current, peak)


def test_bad_trainer_arguments():
    x = np.zeros((10, 4))
    net = TwoLayerNet(4, 3, 2)
    with pytest.raises(ValueError, match="integer labels"):
        Trainer(net, x, np.zeros(10), x, np.zeros(10, int))
    with pytest.raises(ValueError, match="optimizer"):
        Trainer(net, x, np.zeros(10, int), x, np.zeros(10, int), optimizer="adamw")


def test_plot_training(tmp_path):
    pytest.importorskip("matplotlib")
    from fastnn.trainer import plot_training

    rng = np.random.default_rng(0)
    x, t = blobs(200, rng)
    trainer = Trainer(TwoLayerNet(20, 8, 4), x, t, x, t, epochs=2, mini_batch_size=20, verbose=False)
    trainer.train()
    plot_training(trainer, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@needs_mnist
def test_book_sample_weights_classify_mnist_as_the_book_reports():
    from fastnn.datasets import load_mnist
    from fastnn.io import load_params

    weights = SHARED_DATASETS / "book" / "sample_weight.pkl"
    if not weights.exists():
        pytest.skip(f"{weights} not found")
    network = MultiLayerNet.from_params(load_params(weights), activation="sigmoid")
    _, (x_test, t_test) = load_mnist(normalize=True, flatten=True, data_dir=MNIST)
    assert network.accuracy(x_test, t_test) == 0.9352


@needs_mnist
def test_command_trains_saves_and_predicts(tmp_path, capsys):
    weights = tmp_path / "w.npz"
    main(["train", "--data-dir", str(MNIST), "--iters", "300", "--dtype", "float32",
          "--save", str(weights), "--quiet"])
    out = capsys.readouterr().out
    assert "MNIST: 60000 training and 10000 test images" in out
    accuracy = float(out.split("fastnn: test accuracy")[1].split(",")[0])
    assert accuracy > 0.85
    main(["predict", str(weights), "--activation", "relu", "--data-dir", str(MNIST)])
    assert f"test accuracy {accuracy:.4f}" in capsys.readouterr().out


def test_background_evaluation_records_what_the_network_scored_then():
    rng = np.random.default_rng(0)
    x, t = blobs(400, rng)
    lists = []
    for background in (True, False):
        net = TwoLayerNet(20, 8, 4, rng=1)
        trainer = Trainer(net, x, t, x[:100], t[:100], epochs=4, mini_batch_size=20,
                          optimizer_param={"lr": 0.05}, verbose=False, seed=5)
        if background:
            trainer.train()  # epochs evaluated on snapshots, in a second thread
        else:
            for _ in range(trainer.max_iter):
                trainer.train_step()  # evaluated in place, at the epoch boundary
        lists.append((trainer.train_acc_list, trainer.test_acc_list))
    assert lists[0] == lists[1]
    assert len(lists[0][0]) == 4
