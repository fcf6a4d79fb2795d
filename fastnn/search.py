"""The book's hyperparameter search (``ch06/hyperparameter_optimization.py``), trial by trial on
a Dask cluster or in this process: ``python -m fastnn search`` and :func:`random_search`.

The default is the book's experiment: 100 trials, each a 784-100x6-10 ReLU ``MultiLayerNet``
trained by SGD for 50 epochs of batches of 100 on the first 500 MNIST training images, of
which 20% (100 images, after ``shuffle_dataset``) are held out for validation; the learning
rate is drawn from 10^U(-6, -2) and the weight decay from 10^U(-8, -4).  The summary prints
the book's lines, "Best-1(val acc:...) | lr:..., weight decay:...", for the best 20, and
``--plot`` draws the book's figure of their validation against training curves.

Design:

- **Reproducible.**  Trial ``i`` of a search with seed ``s`` draws its hyperparameters from
  ``default_rng([s, i, 0])`` and its initial weights and mini-batches from
  ``default_rng([s, i, 1])`` (two streams of the same ``(s, i)``, so that changing a range
  changes the hyperparameters only, and two spaces are compared on the same weights and
  batches).  The validation split is drawn from ``s`` alone: the permutation that the book's
  ``shuffle_dataset`` draws after ``np.random.seed(s)``.  Every trial runs its BLAS on one
  thread.  So the same seed gives the same trials, bit for bit, whatever the number of workers
  or the order in which they finish, on one machine; on another machine (another BLAS build,
  or fastnn's kernels built for another CPU) float64 results differ in the last bits and,
  after 50 epochs, an accuracy may differ by a few samples.
- **Where it runs.**  ``workers=1`` runs the trials one after another in this process and
  needs nothing but fastnn.  Otherwise the trials are Dask tasks: on a local cluster of
  ``workers`` single-threaded worker processes, or on the workers of a running scheduler
  (``scheduler='tcp://host:8786'``), which may be on other machines.  The data set is loaded
  here once and sent to the cluster as one task that every trial depends on, so the workers
  need fastnn but no MNIST files; it is held by the scheduler's graph and recomputed if the
  workers that held it die.
- **Fault-tolerant.**  When a worker dies, Dask's scheduler gives the trials that were running
  on it to other workers (``distributed.scheduler.allowed-failures``, 3 by default, is how many
  worker deaths one task may see before it fails with ``KilledWorker``); ``retries`` is Dask's
  re-run of a trial that raised.  Results come back to this process, which alone writes the
  results file, one line per trial, once: each trial is one task with its own key, and a
  trial whose index was already written is never written again.
- **Durable and resumable.**  The results file is JSON Lines: a header line naming the search
  (network, space, epochs, data, seed: everything but the number of trials), then one line per
  finished trial (index, hyperparameters, per-epoch validation and training accuracy, wall
  and CPU time, host, worker), each written by one ``write`` and fsynced before the trial is reported.
  A killed search loses only the trials in flight; ``resume=True`` reads the file and runs only
  the missing trials (and more, if ``trials`` grew).  A file that is not a fastnn search's, is
  malformed, or was written with other settings is refused with the reason, never
  overwritten; an existing file is never replaced.  The one repair is to drop a last line cut
  short by an interrupted write (it lacks its newline), said in one line.
"""
import contextlib
import json
import math
import os
import socket
import sys
import threading
import time
import uuid

import numpy as np

__all__ = ["random_search", "run_trial", "prepare_data", "parse_space", "parse_net",
           "load_results", "summary_lines", "plot_results", "available_cpus", "SearchError",
           "DEFAULT_SPACE", "DEFAULT_NET", "add_arguments", "run"]

FORMAT = "fastnn-search"
FORMAT_VERSION = 1
DEFAULT_NET = "dense:100x6"
# the book's ranges, in the book's order of drawing (weight decay first, then lr)
DEFAULT_SPACE = "weight_decay=1e-8:1e-4:log,lr=1e-6:1e-2:log"
PARAMETERS = ("weight_decay", "lr")
SUMMARY_HEADER = "=========== Hyper-Parameter Optimization Result ==========="
INSTALL_HINT = 'pip install "fastnn[distributed]" (or pip install "dask[distributed]")'


class SearchError(ValueError):
    """A search that cannot run as asked: bad options, or a results file that is refused."""


# --- the search's settings -----------------------------------------------------------------

def parse_space(text):
    """The search space from ``"name=low:high[:log|:linear],name=value,..."``.

    Parameters
    ----------
    text : str or None
        Comma-separated entries for ``lr`` and ``weight_decay``: ``low:high:log`` draws
        ``10 ** U(log10 low, log10 high)`` (the book's form; ``log`` is the default scale),
        ``low:high:linear`` draws ``U(low, high)``, a single number fixes the value.  A name
        not given keeps the book's range.  None or '' is the book's space.

    Returns
    -------
    dict
        ``{name: [low, high, scale]}`` for each of ``PARAMETERS``, in the order they are drawn
        (``scale`` 'log', 'linear' or 'fixed', where ``low == high``).

    Raises
    ------
    SearchError
        For an unknown name, a repeated name, a malformed or non-finite bound, ``low > high``,
        or a log range that is not positive.
    """
    space = {} if not text else _parse_space_entries(text)
    if text != DEFAULT_SPACE:
        space = {**parse_space(DEFAULT_SPACE), **space}
    return {name: space[name] for name in PARAMETERS}


def _parse_space_entries(text):
    if not isinstance(text, str):
        raise SearchError(f"space must be a string like {DEFAULT_SPACE!r}, got {type(text).__name__}")
    space = {}
    for entry in text.split(","):
        name, sep, spec = entry.strip().partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in PARAMETERS:
            raise SearchError(f"space entry {entry.strip()!r}: expected name=low:high[:log|:linear] "
                              f"or name=value with name one of {list(PARAMETERS)}")
        if name in space:
            raise SearchError(f"space names {name!r} twice in {text!r}")
        parts = [p.strip() for p in spec.split(":")]
        scale = "log"
        if len(parts) == 3:
            scale = parts.pop()
            if scale not in ("log", "linear"):
                raise SearchError(f"space entry {entry.strip()!r}: scale must be 'log' or "
                                  f"'linear', got {scale!r}")
        if len(parts) not in (1, 2):
            raise SearchError(f"space entry {entry.strip()!r}: expected low:high[:scale] or a value")
        try:
            bounds = [float(p) for p in parts]
        except ValueError:
            raise SearchError(f"space entry {entry.strip()!r}: bounds must be numbers") from None
        if not all(math.isfinite(b) for b in bounds):
            raise SearchError(f"space entry {entry.strip()!r}: bounds must be finite")
        low, high = bounds[0], bounds[-1]
        if low > high:
            raise SearchError(f"space entry {entry.strip()!r}: low {low} is above high {high}")
        if len(parts) == 1 or low == high:
            scale = "fixed"
        elif scale == "log" and low <= 0:
            raise SearchError(f"space entry {entry.strip()!r}: a log range needs low > 0 "
                              f"(add ':linear' for a linear one)")
        if low < 0:
            raise SearchError(f"space entry {entry.strip()!r}: {name} must not be negative")
        space[name] = [low, high, scale]
    return space


def parse_net(text):
    """The network of the trials from ``"dense:H[xR],H[xR],...[:activation]"``.

    ``dense:100x6`` (the default, the book's) is six hidden layers of 100 units;
    ``dense:100,50:sigmoid`` two sigmoid layers.  The 'dense:' prefix may be left out.  Weights
    start as the book's He initialisation ('relu' and 'identity') or Xavier ('sigmoid').

    Returns
    -------
    dict
        ``{"kind": "dense", "hidden": [int, ...], "activation": str}``.

    Raises
    ------
    SearchError
        For another kind, a malformed size, a size below 1 or an unknown activation.
    """
    if not isinstance(text, str) or not text.strip():
        raise SearchError(f"net must be a string like {DEFAULT_NET!r}, got {text!r}")
    parts = text.strip().split(":")
    if parts[0] != "dense" and not parts[0][:1].isdigit():
        raise SearchError(f"net {text!r}: only dense networks ('dense:100x6') can be searched")
    if parts[0] == "dense":
        parts = parts[1:]
    if len(parts) not in (1, 2):
        raise SearchError(f"net {text!r}: expected dense:H[xR],...[:activation]")
    activation = parts[1] if len(parts) == 2 else "relu"
    if activation not in ("relu", "sigmoid", "identity"):
        raise SearchError(f"net {text!r}: activation must be relu, sigmoid or identity")
    hidden = []
    for group in parts[0].split(","):
        size, _, repeat = group.strip().partition("x")
        try:
            size, repeat = int(size), int(repeat or 1)
        except ValueError:
            raise SearchError(f"net {text!r}: {group.strip()!r} is not SIZE or SIZExREPEAT") from None
        if size < 1 or repeat < 1 or repeat > 1000 or size > 100_000:
            raise SearchError(f"net {text!r}: sizes and repeats must be positive (and sane), "
                              f"got {group.strip()!r}")
        hidden += [size] * repeat
    return {"kind": "dense", "hidden": hidden, "activation": activation}


def _config(net, space, epochs, train_size, seed, batch_size, validation_rate):
    """The settings that define a search's trials (all but their number), as stored in the
    results file's header and checked on resume."""
    for value, name in ((epochs, "epochs"), (train_size, "train_size"), (batch_size, "batch_size")):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise SearchError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise SearchError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    if not 0 < validation_rate < 1:
        raise SearchError(f"validation_rate must be in (0, 1), got {validation_rate!r}")
    n_val = int(train_size * validation_rate)
    if n_val < 1 or n_val >= train_size:
        raise SearchError(f"train_size {train_size} with validation_rate {validation_rate} leaves "
                          f"{n_val} validation and {train_size - n_val} training images; both "
                          f"must be at least 1")
    return {"dataset": "MNIST", "net": parse_net(net), "optimizer": "SGD",
            "space": parse_space(space),
            "epochs": int(epochs), "batch_size": int(batch_size), "train_size": int(train_size),
            "validation_rate": float(validation_rate), "seed": int(seed)}


def _evaluations(config):
    """How many accuracy pairs a trial records: the book's Trainer evaluates after every
    step ``it`` with ``it % iter_per_epoch == 0``, for ``int(epochs * iter_per_epoch)`` steps."""
    n_train = config["train_size"] - int(config["train_size"] * config["validation_rate"])
    per_epoch = max(n_train / config["batch_size"], 1)
    return sum(1 for it in range(int(config["epochs"] * per_epoch)) if it % per_epoch == 0)


# --- data and one trial ----------------------------------------------------------------------

def prepare_data(train_size=500, seed=0, validation_rate=0.2, data_dir=None, download=True):
    """The book's split: the first ``train_size`` MNIST training images, shuffled as the book's
    ``shuffle_dataset`` does after ``np.random.seed(seed)`` (NumPy's global generator is
    restored afterwards), the first ``int(train_size * validation_rate)`` held out.

    Returns
    -------
    (x_train, t_train, x_val, t_val)
        float64 images of shape (n, 784) in [0, 1] (the networks' dtype, cast once: the
        float32 pixels are exact in float64, so the results are the book's float32-into-float64
        ones) and uint8 labels.
    """
    from fastnn.datasets import load_mnist
    from fastnn.util import shuffle_dataset

    (x, t), _ = load_mnist(normalize=True, flatten=True, data_dir=data_dir, download=download)
    if not 1 <= train_size <= x.shape[0]:
        raise SearchError(f"train_size must be between 1 and {x.shape[0]}, got {train_size}")
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        x, t = shuffle_dataset(x[:train_size], t[:train_size])
    finally:
        np.random.set_state(state)
    n_val = int(train_size * validation_rate)
    x = x.astype(np.float64)
    return x[n_val:], t[n_val:], x[:n_val], t[:n_val]


def _draw(space, rng):
    values = {}
    for name in PARAMETERS:
        low, high, scale = space[name]
        if scale == "log":
            values[name] = float(10 ** rng.uniform(math.log10(low), math.log10(high)))
        elif scale == "linear":
            values[name] = float(rng.uniform(low, high))
        else:
            values[name] = float(low)
    return values


_blas_lock = threading.Lock()
_blas_users = 0
_blas_stack = None


@contextlib.contextmanager
def _one_blas_thread():
    """fastnn's BLAS on one thread while any trial of this process runs.  The setting is the
    library's, shared by a worker's threads: the first trial in sets it, the last one out
    restores it, so a trial never sees another thread count (which would change its last bits)."""
    global _blas_users, _blas_stack
    from fastnn import threads

    with _blas_lock:
        if _blas_users == 0:
            stack = contextlib.ExitStack()
            stack.enter_context(threads.blas_limit(1))
            stack.enter_context(threads.num_threads(1))
            _blas_stack = stack
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                _blas_stack.close()
                _blas_stack = None


def _worker_name():
    if "distributed" in sys.modules:
        try:
            from distributed import get_worker

            return get_worker().address
        except ValueError:  # not inside a Dask task
            pass
    return "in-process"


def run_trial(index, config, data):
    """Train trial ``index`` of the search ``config`` on ``data`` and return its record.

    The book's ``__train`` with its ``Trainer``: a ``MultiLayerNet`` with the trial's weight
    decay, SGD with its learning rate, ``int(epochs * iter_per_epoch)`` steps on batches drawn
    with replacement, and training and validation accuracies on the whole sets after every
    step ``it`` with ``it % iter_per_epoch == 0``.  Everything random comes from
    ``(config['seed'], index)`` (see the module doc).

    Parameters
    ----------
    index : int
        The trial's index, from 0.
    config : dict
        The search's settings (as stored in a results file's header).
    data : tuple
        ``(x_train, t_train, x_val, t_val)`` from :func:`prepare_data`.

    Returns
    -------
    dict
        ``trial``, ``lr``, ``weight_decay``, ``val_acc`` and ``train_acc`` (lists, one entry
        per evaluation), ``wall_time`` and ``cpu_time`` (seconds; the CPU time of the thread
        that trained, so that a busy machine shows as wall time well above it), ``host`` and
        ``worker`` (a Dask worker's address, or 'in-process').
    """
    from fastnn.nets import MultiLayerNet
    from fastnn.optim import SGD

    start, cpu_start = time.perf_counter(), time.thread_time()
    seed = config["seed"]
    hyper = _draw(config["space"], np.random.default_rng([seed, index, 0]))
    rng = np.random.default_rng([seed, index, 1])
    # arrays sent between Dask workers may arrive at unaligned offsets of a message frame;
    # fastnn's compiled calls take aligned C-contiguous arrays (one copy here, not per step)
    x_train, t_train, x_val, t_val = (np.require(a, requirements=["C", "A"]) for a in data)
    net = config["net"]
    network = MultiLayerNet(x_train.shape[1], net["hidden"], 10, activation=net["activation"],
                            weight_init_std="sigmoid" if net["activation"] == "sigmoid" else "relu",
                            weight_decay_lambda=hyper["weight_decay"], rng=rng)
    optimizer = SGD(lr=hyper["lr"])
    n, batch_size = x_train.shape[0], config["batch_size"]
    per_epoch = max(n / batch_size, 1)
    val_acc, train_acc = [], []
    # the batch gathered into buffers of its own: a new 0.6 MB array per step would be an
    # mmap and page faults each time where malloc does not keep freed memory (Dask's nanny
    # sets MALLOC_TRIM_THRESHOLD_, which makes glibc return it at once)
    x_batch = np.empty((batch_size, x_train.shape[1]), x_train.dtype)
    t_batch = np.empty(batch_size, t_train.dtype)
    with _one_blas_thread():
        for it in range(int(config["epochs"] * per_epoch)):
            batch = rng.integers(0, n, batch_size)  # np.random.choice(n, batch), as the book's
            np.take(x_train, batch, axis=0, out=x_batch)
            np.take(t_train, batch, out=t_batch)
            grads = network.gradient(x_batch, t_batch)
            optimizer.update(network.params, grads)
            if it % per_epoch == 0:
                train_acc.append(float(network.accuracy(x_train, t_train)))
                val_acc.append(float(network.accuracy(x_val, t_val)))
    return {"trial": int(index), "lr": hyper["lr"], "weight_decay": hyper["weight_decay"],
            "val_acc": val_acc, "train_acc": train_acc,
            "wall_time": round(time.perf_counter() - start, 4),
            "cpu_time": round(time.thread_time() - cpu_start, 4), "host": socket.gethostname(),
            "worker": _worker_name()}


def _hold(data):
    """The data set as a task of its own: the scheduler keeps its inputs, so it is recomputed
    if the workers holding it die."""
    return data


# --- the results file ------------------------------------------------------------------------

def _check_record(record, config, where):
    if not isinstance(record, dict):
        raise SearchError(f"{where}: a trial line must be a JSON object")
    missing = {"trial", "lr", "weight_decay", "val_acc", "train_acc", "wall_time", "host"} - set(record)
    if missing:
        raise SearchError(f"{where}: a trial line lacks {sorted(missing)}")
    trial = record["trial"]
    if isinstance(trial, bool) or not isinstance(trial, int) or trial < 0:
        raise SearchError(f"{where}: trial must be a non-negative integer, got {trial!r}")
    n = _evaluations(config)
    for key in ("val_acc", "train_acc"):
        values = record[key]
        if (not isinstance(values, list) or len(values) != n
                or not all(isinstance(a, (int, float)) and 0 <= a <= 1 for a in values)):
            raise SearchError(f"{where}: {key} must be {n} accuracies in [0, 1]")
    for key in ("lr", "weight_decay", "wall_time"):
        if isinstance(record[key], bool) or not isinstance(record[key], (int, float)):
            raise SearchError(f"{where}: {key} must be a number, got {record[key]!r}")


def load_results(path, config=None):
    """Read a results file: its settings and its trials.

    Parameters
    ----------
    path : str or os.PathLike
    config : dict, optional
        The settings of the search that wants to continue the file; if given, the file's must
        be the same.

    Returns
    -------
    (config, records, cut)
        The file's settings, its trial records sorted by index, and the byte length of the
        well-formed part (shorter than the file only if its last line was cut short).

    Raises
    ------
    SearchError
        If the file is not a fastnn search's, a line is malformed, a trial appears twice, or
        its settings differ from ``config``; the message names the file and the line.
    """
    with open(path, "rb") as f:
        raw = f.read()
    lines = raw.split(b"\n")
    tail = lines.pop()  # b'' when the file ends with a newline
    good_length = len(raw) - len(tail)
    if not lines:
        raise SearchError(f"{path} is not a fastnn search results file (no header line); "
                          "refusing to use it")
    try:
        header = json.loads(lines[0])
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise SearchError(f"{path} is not a fastnn search results file (its first line is not "
                          f"a {FORMAT} header); refusing to use it")
    if header.get("version") != FORMAT_VERSION or not isinstance(header.get("config"), dict):
        raise SearchError(f"{path}: results format version {header.get('version')!r}, this "
                          f"fastnn reads version {FORMAT_VERSION}")
    stored = header["config"]
    if config is not None and stored != config:
        diffs = [f"{k}={stored.get(k)!r} (asked: {config.get(k)!r})"
                 for k in sorted(set(stored) | set(config)) if stored.get(k) != config.get(k)]
        raise SearchError(f"{path} holds a search with other settings: {'; '.join(diffs)}. "
                          "Use the same options to resume it, or another --out")
    records = {}
    for number, line in enumerate(lines[1:], start=2):
        where = f"{path}, line {number}"
        try:
            record = json.loads(line)
        except ValueError:
            raise SearchError(f"{where} is not JSON; refusing to use the file") from None
        _check_record(record, stored, where)
        if record["trial"] in records:
            raise SearchError(f"{where}: trial {record['trial']} appears twice; refusing to "
                              "use the file")
        records[record["trial"]] = record
    return stored, [records[i] for i in sorted(records)], good_length


class _ResultsFile:
    """Appends trial lines to a results file, each in one write and fsynced; holds an
    exclusive lock on it so that two searches never append to one file."""

    def __init__(self, path, config, resume, log):
        self.path = os.fspath(path)
        self.records = []
        line = json.dumps({"format": FORMAT, "version": FORMAT_VERSION, "config": config}) + "\n"
        if resume and os.path.exists(self.path):
            self.fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
            self._lock()  # before reading: no other search appends meanwhile
            try:
                _, self.records, good_length = load_results(self.path, config)
            except BaseException:
                os.close(self.fd)
                raise
            if os.fstat(self.fd).st_size > good_length:
                log(f"{self.path}: dropping an unfinished last line (a write that was cut short)")
                os.ftruncate(self.fd, good_length)
                os.fsync(self.fd)
        else:
            if os.path.exists(self.path):
                raise SearchError(f"{self.path} exists: pass --resume (resume=True) to continue "
                                  "it, or choose another --out; it is never overwritten")
            # O_EXCL: a file created meanwhile by someone else is not overwritten either
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
            self._lock()
            self._write(line)
            self._sync_directory()

    def _lock(self):
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; one search per file is then the user's care
            return
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self.fd)
            raise SearchError(f"{self.path} is in use by another running search") from None

    def _write(self, text):
        data = text.encode()
        # one write of the whole line: an interruption leaves a cut last line, never a mix
        written = os.write(self.fd, data)
        while written < len(data):
            written += os.write(self.fd, data[written:])
        os.fsync(self.fd)

    def _sync_directory(self):
        try:
            fd = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    def append(self, record):
        self._write(json.dumps(record) + "\n")

    def close(self):
        os.close(self.fd)


# --- where the trials run --------------------------------------------------------------------

def _have_dask():
    try:
        import distributed  # noqa: F401
    except ImportError:
        return False
    return True


def available_cpus():
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _in_process(missing, config, data, failures):
    for index in missing:
        yield run_trial(index, config, data)


def _on_dask(client, missing, config, data, retries, failures):
    from distributed import as_completed

    token = uuid.uuid4().hex[:10]
    data_future = client.submit(_hold, data, key=f"fastnn-search-data-{token}")
    futures = [client.submit(run_trial, index, config, data_future, retries=retries,
                             key=f"fastnn-search-trial-{index}-{token}")
               for index in missing]
    index_of = {future.key: index for future, index in zip(futures, missing)}
    for future in as_completed(futures):
        if future.status == "finished":
            record = future.result()
        else:
            record = None
            failures.append((index_of[future.key], future.exception()))
        future.release()  # the result is here now: the cluster need not keep it
        if record is not None:
            yield record
    data_future.release()


@contextlib.contextmanager
def _client(workers, scheduler, log):
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout="30s")
        except (OSError, TimeoutError) as exc:
            raise SearchError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
        with client:
            n = sum(client.nthreads().values())
            log(f"on the Dask scheduler {scheduler} ({len(client.nthreads())} workers, {n} threads)"
                + ("; the trials wait for workers to join" if not n else ""))
            yield client
        return
    import logging

    # on loopback only; no dashboard, and its HTTP routes on a free port rather than 8787
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, silence_logs=logging.ERROR,
                      scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"}
                      ) as cluster, \
            Client(cluster) as client:
        log(f"on a local Dask cluster of {workers} single-threaded worker processes")
        yield client


# --- progress and summary --------------------------------------------------------------------

class _Progress:
    def __init__(self, total, done, best, enabled, log):
        self.total, self.done, self.best, self.log = total, done, best, log
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                pass
            else:
                self.bar = tqdm(total=total, initial=done, desc="trials", unit="trial",
                                file=sys.stderr, dynamic_ncols=True)
        self.enabled = enabled

    def update(self, record):
        self.done += 1
        self.best = max(self.best, record["val_acc"][-1])
        if self.bar is not None:
            self.bar.set_postfix_str(f"best val acc {self.best}", refresh=False)
            self.bar.update(1)
        elif self.enabled:
            self.log(f"[{self.done}/{self.total}] trial {record['trial']}: val acc:"
                     f"{record['val_acc'][-1]} | lr:{record['lr']}, weight decay:"
                     f"{record['weight_decay']} (best {self.best})")

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        if self.bar is not None:
            self.bar.close()


def _best(records, top):
    # the book sorts its dict of trials (in trial order) by final validation accuracy, stable
    ordered = sorted(records, key=lambda r: r["trial"])
    return sorted(ordered, key=lambda r: r["val_acc"][-1], reverse=True)[:top]


def summary_lines(records, top=20):
    """The book's summary of the ``top`` best trials by final validation accuracy:
    ``"Best-1(val acc:0.83) | lr:0.0061..., weight decay:2.3...e-07"``, ties in trial order."""
    return [SUMMARY_HEADER] + [
        f"Best-{k}(val acc:{r['val_acc'][-1]}) | lr:{r['lr']}, weight decay:{r['weight_decay']}"
        for k, r in enumerate(_best(records, top), start=1)]


def _matplotlib():
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise SearchError('--plot needs matplotlib: pip install "fastnn[plot]"') from None
    return Figure


def plot_results(records, path, top=20):
    """The book's figure: the ``top`` best trials' validation accuracy per epoch (solid)
    against training accuracy (dashed), 5 to a row, written to ``path`` (PNG, SVG, PDF... by
    its extension; replaced all at once).  Needs matplotlib (``fastnn[plot]``)."""
    Figure = _matplotlib()
    from fastnn.io import atomic_open

    best = _best(records, top)
    col_num = 5
    row_num = max(1, int(np.ceil(len(best) / col_num)))
    figure = Figure(figsize=(10, 2 * row_num))
    for i, r in enumerate(best):
        ax = figure.add_subplot(row_num, col_num, i + 1)
        ax.set_title(f"Best-{i + 1}")
        ax.set_ylim(0.0, 1.0)
        if i % 5:
            ax.set_yticks([])
        ax.set_xticks([])
        x = np.arange(len(r["val_acc"]))
        ax.plot(x, r["val_acc"])
        ax.plot(x, r["train_acc"], "--")
    figure.tight_layout()
    fmt = os.path.splitext(os.fspath(path))[1].lstrip(".").lower() or "png"
    with atomic_open(path, "wb") as f:
        figure.savefig(f, format=fmt)


# --- the search --------------------------------------------------------------------------------

def random_search(trials=100, *, net=DEFAULT_NET, space=None, epochs=50, train_size=500,
                  seed=0, out=None, resume=False, workers=None, scheduler=None, data_dir=None,
                  download=True, batch_size=100, validation_rate=0.2, retries=2, progress=True,
                  log=print):
    """Run the book's random hyperparameter search (see the module doc for the guarantees).

    Parameters
    ----------
    trials : int
        Trials 0 .. trials-1 (the book's 100).
    net, space : str
        See :func:`parse_net` and :func:`parse_space`; the book's by default.
    epochs, train_size, batch_size, validation_rate : int, int, int, float
        The book's 50, 500, 100 and 0.2 by default.
    seed : int
        In [0, 2**32): the split and every trial come from it (and the trial's index).
    out : str or os.PathLike, optional
        The results file (JSON Lines); created, never overwritten.  None keeps the results in
        memory only.
    resume : bool
        Continue ``out``: run only the trials it lacks.
    workers : int, optional
        1: in this process, without Dask.  More: a local Dask cluster of that many
        single-threaded worker processes.  Default: the CPUs available (1 without Dask).
    scheduler : str, optional
        The address of a running Dask scheduler ('tcp://host:8786') whose workers run the
        trials; ``workers`` is then ignored.
    data_dir, download
        Where MNIST is and whether it may be downloaded (:func:`fastnn.datasets.load_mnist`).
    retries : int
        Dask's re-runs of a trial that raised (a worker's death is handled by the scheduler).
    progress : bool
        A tqdm bar where tqdm is installed, else a line per finished trial.
    log : callable
        Where the one-line messages go.

    Returns
    -------
    list of dict
        The records of trials 0 .. trials-1 that finished (from the file too, on resume),
        sorted by index; see :func:`run_trial`.

    Raises
    ------
    SearchError
        For bad options, a refused results file, Dask missing where it is needed, or trials
        that failed (the message lists them; the others are in the file, and ``resume``
        runs the failed ones again).
    """
    if isinstance(trials, bool) or not isinstance(trials, (int, np.integer)) or trials < 1:
        raise SearchError(f"trials must be a positive integer, got {trials!r}")
    config = _config(net, space, epochs, train_size, seed, batch_size, validation_rate)
    if scheduler is None:
        if workers is None:
            workers = available_cpus()
            if workers > 1 and not _have_dask():
                log(f"Dask is not installed: running the trials one after another in this "
                    f"process ({INSTALL_HINT} for {workers} worker processes)")
                workers = 1
        if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
            raise SearchError(f"workers must be a positive integer, got {workers!r}")
    if (scheduler is not None or workers > 1) and not _have_dask():
        where = f"--scheduler {scheduler}" if scheduler is not None else f"--workers {workers}"
        raise SearchError(f"{where} needs Dask: {INSTALL_HINT}; --workers 1 runs in this "
                          "process without it")

    # the data first: a search that cannot load it leaves no results file behind
    data = prepare_data(config["train_size"], config["seed"], config["validation_rate"],
                        data_dir, download)
    try:
        results = _ResultsFile(out, config, resume, log) if out is not None else None
    except OSError as exc:
        raise SearchError(f"cannot write the results to {out}: {exc}") from None
    try:
        records = {r["trial"]: r for r in results.records} if results else {}
        missing = [i for i in range(trials) if i not in records]
        kept = [r for r in records.values() if r["trial"] < trials]
        if resume and out is not None:
            log(f"{out}: {len(kept)} of {trials} trials done, running the {len(missing)} missing")
        n_val = int(config["train_size"] * config["validation_rate"])
        net_text = "-".join(map(str, [784, *config["net"]["hidden"], 10]))
        log(f"search: {len(missing)} trials of {net_text} {config['net']['activation']}, SGD, "
            f"{config['epochs']} epochs on {config['train_size'] - n_val} MNIST images "
            f"(validation {n_val}), seed {config['seed']}")
        failures = []
        best = max((r["val_acc"][-1] for r in kept), default=0.0)
        if missing and scheduler is None and workers == 1:
            log("in this process, one trial after another")
            with _Progress(trials, len(kept), best, progress, log) as bar:
                _consume(_in_process(missing, config, data, failures), records, results, bar)
        elif missing:
            with _client(workers, scheduler, log) as client, \
                    _Progress(trials, len(kept), best, progress, log) as bar:
                _consume(_on_dask(client, missing, config, data, retries, failures),
                         records, results, bar)
    finally:
        if results is not None:
            results.close()
    if failures:
        lines = "; ".join(f"trial {i}: {type(e).__name__}: {e}" for i, e in failures[:5])
        raise SearchError(f"{len(failures)} trial(s) failed ({lines}); the others are "
                          f"{'in ' + os.fspath(out) if out is not None else 'lost (no --out)'}"
                          f"{'; --resume runs the failed ones again' if out is not None else ''}")
    return [records[i] for i in sorted(records) if i < trials]


def _consume(stream, records, results, bar):
    for record in stream:
        if record["trial"] in records:  # never twice, whatever the cluster does
            continue
        if results is not None:
            results.append(record)  # durable before it is reported
        records[record["trial"]] = record
        bar.update(record)


# --- the command -------------------------------------------------------------------------------

def add_arguments(p):
    """Declare the ``fastnn search`` command's arguments on the argparse parser ``p``."""
    p.description = ("The book's random hyperparameter search (ch06/hyperparameter_optimization"
                     ".py): trials on a local Dask cluster, a remote scheduler or in this "
                     "process, each appended to --out as it finishes; --resume runs the "
                     "missing ones.")
    p.add_argument("--trials", type=int, default=100, help="number of trials (the book's 100)")
    p.add_argument("--epochs", type=int, default=50, help="epochs per trial (the book's 50)")
    p.add_argument("--net", default=DEFAULT_NET,
                   help="dense:H[xR],...[:activation] (default %(default)s: 784-100x6-10 relu)")
    p.add_argument("--space", default=None,
                   help="ranges, e.g. 'lr=1e-6:1e-2:log,weight_decay=1e-8:1e-4:log' (the "
                        "default); 'lr=0.01' fixes one; ':linear' for a uniform range")
    p.add_argument("--train-size", type=int, default=500,
                   help="first N MNIST training images, 20%% of them for validation (500)")
    p.add_argument("--seed", type=int, default=0, help="the split and every trial come from it")
    p.add_argument("--out", default="search-results.jsonl",
                   help="results, one JSON line per trial (default %(default)s); never "
                        "overwritten; '' keeps them in memory only")
    p.add_argument("--resume", action="store_true", help="run only the trials --out lacks")
    p.add_argument("--plot", default=None, metavar="PNG",
                   help="draw the best 20 trials' validation and training curves")
    p.add_argument("--workers", type=int, default=None,
                   help="local worker processes (default: the CPUs available); 1 runs in this "
                        "process without Dask")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="a running Dask scheduler, e.g. tcp://host:8786, to run the trials on "
                        "its workers")
    p.add_argument("--data-dir", default=None, help="folder of the MNIST IDX files")
    p.add_argument("--quiet", action="store_true", help="no progress bar or lines")


def run(args):
    """Run ``fastnn search`` from parsed arguments (see :func:`add_arguments`)."""
    try:
        if args.plot:
            _matplotlib()  # before the search, not after it
        records = random_search(args.trials, net=args.net, space=args.space, epochs=args.epochs,
                                train_size=args.train_size, seed=args.seed,
                                out=args.out or None, resume=args.resume, workers=args.workers,
                                scheduler=args.scheduler, data_dir=args.data_dir,
                                progress=not args.quiet, log=lambda m: print(m, flush=True))
        for line in summary_lines(records):
            print(line)
        if args.plot:
            plot_results(records, args.plot)
            print(f"the best {min(20, len(records))} trials' curves written to {args.plot}")
    except KeyboardInterrupt:
        # the command's own line ("interrupted") follows; first, where the work is
        kept = f"the finished trials are in {args.out}; --resume runs the others" if args.out \
            else "no --out: the finished trials are lost"
        print(f"fastnn search: note: {kept}", file=sys.stderr, flush=True)
        raise
    return 0

