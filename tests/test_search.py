"""fastnn search: the book's hyperparameter search, in this process and on a real Dask cluster.

The cluster tests start a Dask scheduler and two single-threaded workers on 127.0.0.1 as
processes of their own (``dask scheduler``, ``dask worker --no-nanny``, so that a killed worker
stays dead), run small searches against them through ``python -m fastnn search``, kill a worker
or the search itself mid-run, and read the results file.  They skip where Dask's
``distributed`` is not installed (``pip install ".[distributed]"``) and every test skips where
MNIST is not in ../shared/datasets/mnist; nothing is downloaded and everything written goes
to pytest's tmp folders.

Reproducibility is asserted exactly: on one machine a trial's hyperparameters and every
per-epoch accuracy are bit-identical whatever runs it (same code, same BLAS build, one BLAS
thread everywhere).
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import SHARED_DATASETS, book_module
from fastnn import search
from fastnn.search import SearchError

MNIST = SHARED_DATASETS / "mnist"
needs_mnist = pytest.mark.skipif(not (MNIST / "train-images-idx3-ubyte.gz").is_file(),
                                 reason=f"MNIST is not at {MNIST}")
TIMEOUT = 180  # seconds for any one process of these tests; a hang fails instead of blocking


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """MNIST's parsed cache in a tmp folder, never downloads."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("FASTNN_DATA", raising=False)


def small(**kw):
    """A search of seconds: the book's network, its 20% split of a small training set."""
    return dict(dict(epochs=2, train_size=100, data_dir=MNIST, download=False, progress=False, workers=1,
                     log=lambda m: None), **kw)


def lines_of(path):
    return Path(path).read_bytes().split(b"\n")[:-1]


def trials_in(path):
    return [json.loads(line)["trial"] for line in lines_of(path)[1:]]


# --- settings ----------------------------------------------------------------------------------

def test_default_space_and_net_are_the_books():
    assert search.parse_space(None) == {"weight_decay": [1e-8, 1e-4, "log"],
                                        "lr": [1e-6, 1e-2, "log"]}
    assert search.parse_net(search.DEFAULT_NET) == {"kind": "dense", "hidden": [100] * 6,
                                                    "activation": "relu"}


def test_parse_space_forms():
    space = search.parse_space("lr=0.01, weight-decay=0:1e-3:linear")
    assert space == {"weight_decay": [0.0, 1e-3, "linear"], "lr": [0.01, 0.01, "fixed"]}
    assert search.parse_space("lr=1e-3:1e-1")["lr"] == [1e-3, 1e-1, "log"]
    assert search.parse_space("lr=1e-3:1e-1")["weight_decay"] == [1e-8, 1e-4, "log"]
    for bad in ["momentum=0.9", "lr", "lr=a:b", "lr=1:0.1", "lr=0:1:log", "lr=1e-3:1:cubic",
                "lr=nan", "lr=1,lr=2", "lr=1:2:3:log", "weight_decay=-1:1:linear"]:
        with pytest.raises(SearchError):
            search.parse_space(bad)


def test_parse_net_forms():
    assert search.parse_net("50,20x2:sigmoid") == {"kind": "dense", "hidden": [50, 20, 20],
                                                   "activation": "sigmoid"}
    for bad in ["conv:30", "dense:", "dense:0", "dense:10xq", "dense:10:tanh", "", "dense:10:relu:x"]:
        with pytest.raises(SearchError):
            search.parse_net(bad)


@given(st.text(alphabet="lrweight_dcay=:,.-0123456789eEloginarx ", max_size=40))
def test_parsers_answer_any_text_cleanly(text):
    for parse in (search.parse_space, search.parse_net):
        try:
            result = parse(text)
        except SearchError:
            continue
        assert isinstance(result, dict)


def test_bad_options_are_refused_before_anything_runs(tmp_path):
    out = tmp_path / "r.jsonl"
    for kw in [dict(trials=0), dict(epochs=0), dict(seed=-1), dict(seed=2**32), dict(workers=0),
               dict(train_size=4), dict(validation_rate=1.0), dict(net="conv:1")]:
        with pytest.raises(SearchError):
            search.random_search(**{**small(out=out), "trials": 2, **kw})
        assert not out.exists()


# --- one trial is the book's experiment ---------------------------------------------------------

@needs_mnist
def test_a_trial_is_the_books_trainer_on_the_same_draws(monkeypatch):
    """run_trial against the book's own MultiLayerNet + Trainer, given the same initial weights
    and the same mini-batches: the same accuracies at the same steps."""
    net_mod = book_module("common.multi_layer_net")
    trainer_mod = book_module("common.trainer")
    from fastnn.nets import MultiLayerNet

    # 200 training images: two steps an epoch, evaluated after steps 0, 2 and 4
    config = search._config("dense:30x2", "lr=0.05:0.1", 3, 250, 7, 100, 0.2)
    data = search.prepare_data(250, 7, data_dir=MNIST, download=False)
    record = search.run_trial(4, config, data)

    hyper = search._draw(config["space"], np.random.default_rng([7, 4, 0]))
    assert (record["lr"], record["weight_decay"]) == (hyper["lr"], hyper["weight_decay"])
    rng = np.random.default_rng([7, 4, 1])
    ours = MultiLayerNet(784, [30, 30], 10, weight_decay_lambda=hyper["weight_decay"], rng=rng)
    book = net_mod.MultiLayerNet(784, [30, 30], 10, weight_decay_lambda=hyper["weight_decay"])
    for key, value in ours.params.items():
        book.params[key][...] = value  # in place: the book's layers hold these arrays
    monkeypatch.setattr(np.random, "choice", lambda n, size: rng.integers(0, n, size))
    x_train, t_train, x_val, t_val = data
    trainer = trainer_mod.Trainer(book, x_train.astype(np.float32), t_train,
                                  x_val.astype(np.float32), t_val, epochs=3, mini_batch_size=100,
                                  optimizer="sgd", optimizer_param={"lr": hyper["lr"]},
                                  verbose=False)
    trainer.train()
    assert len(record["val_acc"]) == search._evaluations(config) == 3
    assert record["val_acc"] == [float(a) for a in trainer.test_acc_list]
    assert record["train_acc"] == [float(a) for a in trainer.train_acc_list]


def _unaligned(a):
    buf = np.zeros(a.nbytes + 1, np.uint8)
    out = np.frombuffer(buf[1:].data, dtype=a.dtype).reshape(a.shape)
    out[...] = a
    return out


@needs_mnist
def test_a_trial_takes_arrays_as_dask_delivers_them():
    """Arrays sent between workers can sit at unaligned offsets of a message frame."""
    config = search._config("dense:20", None, 2, 100, 1, 100, 0.2)
    data = search.prepare_data(100, 1, data_dir=MNIST, download=False)
    unaligned = tuple(_unaligned(a) for a in data)
    assert not unaligned[0].flags.aligned
    a, b = search.run_trial(0, config, data), search.run_trial(0, config, unaligned)
    assert a["val_acc"] == b["val_acc"] and a["train_acc"] == b["train_acc"]


@needs_mnist
def test_split_is_the_books_shuffle_under_the_seed_and_leaves_numpy_alone():
    from fastnn.datasets import load_mnist

    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    x_train, t_train, x_val, t_val = search.prepare_data(50, 3, data_dir=MNIST, download=False)
    assert np.array_equal(np.random.get_state()[1], before)
    (x, t), _ = load_mnist(data_dir=MNIST, download=False)
    p = np.random.RandomState(3).permutation(50)
    assert np.array_equal(t_val, t[:50][p][:10]) and np.array_equal(t_train, t[:50][p][10:])
    assert x_train.dtype == np.float64 and np.array_equal(x_val, x[:50][p][:10])


# --- the results file ------------------------------------------------------------------------------

@needs_mnist
def test_in_process_search_writes_one_line_per_trial_and_prints_the_books_summary(tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    from fastnn.__main__ import main

    main(["search", "--trials", "3", "--epochs", "2", "--train-size", "100", "--workers", "1",
          "--data-dir", str(MNIST), "--out", str(out), "--quiet"])
    printed = capsys.readouterr().out.splitlines()
    header, *records = [json.loads(line) for line in lines_of(out)]
    assert header["format"] == "fastnn-search" and header["config"]["epochs"] == 2
    assert sorted(r["trial"] for r in records) == [0, 1, 2]
    for r in records:
        assert len(r["val_acc"]) == len(r["train_acc"]) == 2 and r["worker"] == "in-process"
        assert 1e-6 <= r["lr"] <= 1e-2 and 1e-8 <= r["weight_decay"] <= 1e-4
        assert r["wall_time"] > 0 and r["host"]
    best = sorted(sorted(records, key=lambda r: r["trial"]), key=lambda r: r["val_acc"][-1],
                  reverse=True)
    k = printed.index(search.SUMMARY_HEADER)
    assert printed[k + 1:k + 4] == [
        f"Best-{i + 1}(val acc:{r['val_acc'][-1]}) | lr:{r['lr']}, weight decay:{r['weight_decay']}"
        for i, r in enumerate(best)]


@needs_mnist
def test_progress_says_trials_done_and_best_so_far(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # the plain lines, where tqdm is absent
    said = []
    records = search.random_search(3, **small(progress=True, log=said.append))
    lines = [m for m in said if m.startswith("[")]
    assert [m.split("]")[0] for m in lines] == ["[1/3", "[2/3", "[3/3"]
    best = max(r["val_acc"][-1] for r in records)
    assert lines[-1].endswith(f"(best {best})")
    monkeypatch.delitem(sys.modules, "tqdm")
    pytest.importorskip("tqdm")
    search.random_search(2, **small(progress=True))
    assert "2/2" in capsys.readouterr().err  # the bar, on stderr


def test_summary_keeps_the_best_20_ties_in_trial_order():
    records = [{"trial": i, "lr": 0.1 * i, "weight_decay": 1e-6, "val_acc": [0.0, (i % 3) / 4],
                "train_acc": [0.0, 0.0]} for i in range(30)]
    lines = search.summary_lines(records)
    assert len(lines) == 21 and lines[0] == search.SUMMARY_HEADER
    assert lines[1] == f"Best-1(val acc:0.5) | lr:{0.1 * 2}, weight decay:1e-06"
    assert lines[2] == f"Best-2(val acc:0.5) | lr:{0.1 * 5}, weight decay:1e-06"
    assert lines[20].startswith("Best-20(val acc:0.25) | lr:")


@needs_mnist
def test_plot_draws_the_books_figure(tmp_path):
    pytest.importorskip("matplotlib")
    records = search.random_search(3, **small())
    search.plot_results(records, tmp_path / "best.png")
    assert (tmp_path / "best.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@needs_mnist
def test_results_files_are_refused_never_overwritten(tmp_path):
    out = tmp_path / "r.jsonl"
    search.random_search(2, **small(out=out))
    original = out.read_bytes()

    with pytest.raises(SearchError, match="exists"):
        search.random_search(2, **small(out=out))
    with pytest.raises(SearchError, match="other settings.*epochs=2"):
        search.random_search(2, **small(out=out, resume=True, epochs=3))
    assert out.read_bytes() == original

    header, first, second = original.split(b"\n")[:3]
    cases = {
        "foreign.jsonl": b'{"some": "other tool"}\n' + first + b"\n",
        "text.jsonl": b"lr,acc\n0.1,0.5\n",
        "bad-line.jsonl": header + b"\n" + b"{not json\n" + second + b"\n",
        "short-curve.jsonl": header + b"\n" + first.replace(b'"val_acc": [', b'"val_acc": [0.5, ') + b"\n",
        "twice.jsonl": header + b"\n" + first + b"\n" + first + b"\n",
        "empty.jsonl": b"",
    }
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(SearchError) as info:
            search.random_search(2, **small(out=path, resume=True))
        assert str(path) in str(info.value)
        assert path.read_bytes() == content, name


@needs_mnist
def test_resume_in_process_drops_a_cut_last_line_and_runs_only_the_missing(tmp_path):
    out = tmp_path / "r.jsonl"
    full = search.random_search(4, **small())
    search.random_search(2, **small(out=out))
    kept = out.read_bytes()
    with open(out, "ab") as f:
        f.write(b'{"trial": 3, "lr": 0.00')  # a write cut short
    said = []
    records = search.random_search(4, **small(out=out, resume=True, log=said.append))
    assert any("dropping an unfinished last line" in m for m in said)
    assert any("2 of 4 trials done, running the 2 missing" in m for m in said)
    assert out.read_bytes().startswith(kept)
    assert trials_in(out) == [0, 1, 2, 3]
    timeless = [[{k: v for k, v in r.items() if not k.endswith("_time")} for r in rs]
                for rs in (records, full)]
    assert timeless[0] == timeless[1]


@needs_mnist
def test_no_data_or_no_folder_leaves_no_file(tmp_path):
    from fastnn.datasets import DatasetNotFoundError

    out = tmp_path / "r.jsonl"
    with pytest.raises(DatasetNotFoundError):
        search.random_search(2, **small(out=out, data_dir=tmp_path / "empty"))
    assert not out.exists()
    with pytest.raises(SearchError, match="cannot write"):
        search.random_search(2, **small(out=tmp_path / "no" / "such" / "folder.jsonl"))


def test_two_searches_never_share_a_file(tmp_path):
    out = tmp_path / "r.jsonl"
    config = search._config(search.DEFAULT_NET, None, 1, 100, 0, 100, 0.2)
    first = search._ResultsFile(out, config, False, print)
    try:
        with pytest.raises(SearchError, match="in use"):
            search._ResultsFile(out, config, True, print)
    finally:
        first.close()


# --- without Dask -------------------------------------------------------------------------------

@needs_mnist
def test_without_dask_one_worker_runs_and_other_choices_say_what_to_install(monkeypatch, tmp_path,
                                                                          capsys):
    monkeypatch.setattr(search, "_have_dask", lambda: False)
    monkeypatch.setattr(search, "available_cpus", lambda: 2)
    for kw in [dict(workers=2), dict(scheduler="tcp://127.0.0.1:1")]:
        with pytest.raises(SearchError, match=r'pip install "fastnn\[distributed\]"'):
            search.random_search(2, **small(**kw))
    said = []
    assert len(search.random_search(2, **small(log=said.append, workers=None))) == 2  # default: CPUs, falls back
    assert "Dask is not installed" in said[0] and "fastnn[distributed]" in said[0]
    from fastnn.__main__ import main

    code = main(["search", "--workers", "2", "--data-dir", str(MNIST), "--out", str(tmp_path / "r")])
    message = capsys.readouterr().err
    assert code == 1 and message.startswith("fastnn search: error: ")
    assert message.count("\n") == 1 and "fastnn[distributed]" in message and "--workers 2" in message


# --- on a Dask cluster ------------------------------------------------------------------------------

def _env(tmp_path):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "xdg-cache"),
               DASK_TEMPORARY_DIRECTORY=str(tmp_path / "dask"), PYTHONUNBUFFERED="1")
    env.pop("FASTNN_DATA", None)
    return env


def _stop(process):
    if process.poll() is None:
        process.kill()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass


class LoopbackCluster:
    """A Dask scheduler and workers on 127.0.0.1, each its own process."""

    def __init__(self, folder, n_workers=2):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.env = _env(self.folder)
        self.processes = []
        self.workers = {}
        scheduler_file = self.folder / "scheduler.json"
        self._spawn([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host",
                     "127.0.0.1", "--port", "0", "--no-dashboard", "--dashboard-address", "127.0.0.1:0",
                     "--scheduler-file",
                     str(scheduler_file)], "scheduler")
        deadline = time.monotonic() + 60
        while not scheduler_file.is_file() or not scheduler_file.read_text().strip():
            if time.monotonic() > deadline or self.processes[0].poll() is not None:
                self.close()
                pytest.fail(f"the Dask scheduler did not start: {self._log('scheduler')}")
            time.sleep(0.1)
        self.address = json.loads(scheduler_file.read_text())["address"]
        for k in range(n_workers):
            self._spawn([sys.executable, "-m", "distributed.cli.dask_worker", self.address,
                         "--nthreads", "1", "--no-nanny", "--host", "127.0.0.1",
                         "--no-dashboard", "--name", f"w{k}", "--local-directory",
                         str(self.folder / f"w{k}")], f"w{k}")
        from distributed import Client

        self.client = Client(self.address, timeout=60)
        try:
            self.client.wait_for_workers(n_workers, timeout=90)
        except Exception:
            self.close()
            raise
        for address, info in self.client.scheduler_info()["workers"].items():
            self.workers[info["name"]] = address

    def _spawn(self, command, name):
        log = open(self.folder / f"{name}.log", "wb")
        self.processes.append(subprocess.Popen(command, env=self.env, stdout=log,
                                               stderr=subprocess.STDOUT, cwd=self.folder))
        self.processes[-1].name = name

    def _log(self, name):
        return (self.folder / f"{name}.log").read_text(errors="replace")[-2000:]

    def process(self, name):
        return next(p for p in self.processes if p.name == name)

    def close(self):
        if getattr(self, "client", None) is not None:
            self.client.close(timeout=10)
        for process in reversed(self.processes):
            _stop(process)


@pytest.fixture
def cluster(tmp_path):
    pytest.importorskip("distributed")
    if not (MNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"MNIST is not at {MNIST}")
    c = LoopbackCluster(tmp_path / "cluster")
    yield c
    c.close()


def _search(tmp_path, *options):
    """``python -m fastnn search`` as a process of its own, its output to a log file."""
    log = open(tmp_path / "search.log", "ab")
    return subprocess.Popen([sys.executable, "-m", "fastnn", "search", "--data-dir", str(MNIST),
                             "--quiet", *options], env=_env(tmp_path), stdout=log,
                            stderr=subprocess.STDOUT, cwd=tmp_path)


def _wait(process, tmp_path):
    try:
        code = process.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        _stop(process)
        pytest.fail(f"the search hung: {(tmp_path / 'search.log').read_text()[-3000:]}")
    assert code == 0, (tmp_path / "search.log").read_text()[-3000:]
    return (tmp_path / "search.log").read_text()


def _until(condition, what, process=None, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline or (process is not None and process.poll() is not None):
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.02)


# each trial about a second here (40 epochs of 4 steps of the book's network), so that a kill
# lands while trials are running
SLOW = ["--epochs", "40", "--train-size", "500"]


def test_a_killed_worker_loses_no_trial_and_none_runs_twice(cluster, tmp_path):
    out = tmp_path / "r.jsonl"
    victim, survivor = cluster.workers["w0"], cluster.workers["w1"]
    run = _search(tmp_path, "--scheduler", cluster.address, "--trials", "8", *SLOW,
                  "--out", str(out))
    seen = set()

    def victim_busy_after_a_result():
        running = [k for k in cluster.client.processing().get(victim, []) if "trial" in str(k)]
        seen.clear()
        seen.update(int(str(k).split("-")[3]) for k in running)
        return running and out.is_file() and len(lines_of(out)) >= 2

    _until(victim_busy_after_a_result, "a result and a trial running on the victim", run)
    cluster.process("w0").send_signal(signal.SIGKILL)
    _wait(run, tmp_path)

    assert sorted(trials_in(out)) == list(range(8))  # every trial, each exactly once
    records = {json.loads(line)["trial"]: json.loads(line) for line in lines_of(out)[1:]}
    assert {r["worker"] for r in records.values()} <= {victim, survivor}
    # a trial that was running on the killed worker was run again by the other
    assert any(records[i]["worker"] == survivor for i in seen), (seen, records)


def test_resume_after_a_killed_search_runs_only_the_missing(cluster, tmp_path):
    out = tmp_path / "r.jsonl"
    options = ["--scheduler", cluster.address, "--trials", "12", "--epochs", "10", "--seed", "5"]
    run = _search(tmp_path, *options, "--out", str(out))
    _until(lambda: out.is_file() and len(lines_of(out)) >= 3, "two results", run)
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=30)
    before = out.read_bytes()
    done = trials_in(out)
    assert 2 <= len(done) < 12

    log = _wait(_search(tmp_path, *options, "--out", str(out), "--resume"), tmp_path)
    assert f"{len(done)} of 12 trials done, running the {12 - len(done)} missing" in log
    after = out.read_bytes()
    assert before.endswith(b"\n") and after.startswith(before)  # what was there is kept as it was
    assert sorted(trials_in(out)) == list(range(12))
    assert trials_in(out)[:len(done)] == done
    assert "Best-1(val acc:" in log

    # and the resumed file holds what an uninterrupted in-process run computes
    fresh = search.random_search(12, epochs=10, seed=5, train_size=500, data_dir=MNIST,
                                 download=False, workers=1, progress=False, log=lambda m: None)
    stored = sorted((json.loads(line) for line in after.split(b"\n")[1:-1]),
                    key=lambda r: r["trial"])
    assert len(stored) == len(fresh) == 12
    for a, b in zip(stored, fresh):
        assert {k: a[k] for k in ("trial", "lr", "weight_decay", "val_acc", "train_acc")} == \
               {k: b[k] for k in ("trial", "lr", "weight_decay", "val_acc", "train_acc")}


def test_same_seed_same_trials_on_the_cluster_locally_and_in_process(cluster, tmp_path):
    import dask

    kw = small(epochs=3, train_size=200, seed=11)
    in_process = search.random_search(6, **kw)
    on_cluster = search.random_search(6, **dict(kw, scheduler=cluster.address))
    with dask.config.set({"temporary-directory": str(tmp_path / "dask")}):
        on_local = search.random_search(6, **dict(kw, workers=2))
    keys = ("trial", "lr", "weight_decay", "val_acc", "train_acc")
    expected = [{k: r[k] for k in keys} for r in in_process]
    assert [{k: r[k] for k in keys} for r in on_cluster] == expected  # exactly, bit for bit
    assert [{k: r[k] for k in keys} for r in on_local] == expected
    assert {r["worker"] for r in on_cluster} <= set(cluster.workers.values())
    assert len({tuple(r["val_acc"]) + (r["lr"],) for r in in_process}) == 6  # distinct trials
