"""MNIST, loaded exactly as the book's ``dataset/mnist.py`` loads it, and an offline stand-in.

``load_mnist`` reads the four standard IDX files (gzip-compressed or not), validates them,
and keeps a parsed ``.npz`` copy so that later loads skip the decompression.  Missing files
are downloaded from public mirrors and checked against their published SHA-256.

Where the files are looked for, in this order:

1. ``data_dir`` if given, else the folder named by the environment variable ``FASTNN_DATA``;
2. the per-user cache, ``$XDG_CACHE_HOME/fastnn/mnist`` or ``~/.cache/fastnn/mnist``.

The first folder holding all four files is used.  Downloads go to the first of these folders.

Every read is bounded before it starts: an IDX file's header is read first and at most the
size it announces (plus one byte, to see that nothing follows) is decompressed; the parsed
cache is read against the shapes the source headers announce and re-checked (counts, 28x28,
labels 0..9); FIFOs and devices are refused, never opened for reading; a download stops at
the file's published size and at an overall deadline.

This module imports nothing compiled: loading data works without fastnn's extension.

``load_digits`` returns scikit-learn's 8x8 digits in the same layout, for machines without
MNIST and without a network.
"""
import contextlib
import gzip
import hashlib
import http.client
import json
import math
import os
import socket
import struct
import sys
import threading
import urllib.request
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

# _DEFLATE_MAX_RATIO: a gzip file whose header announces more than that times its size is
# refused before anything is allocated; _CHUNK: bytes decompressed at a time.
from fastnn.io import (_CHUNK, _DEFLATE_MAX_RATIO, WeightFileError, _open_regular,
                       _read_npz_file, _write_npz, atomic_open)

__all__ = ["DatasetError", "DatasetNotFoundError", "MNIST_MIRRORS", "load_mnist", "load_digits"]

#: Base URLs tried in turn for missing MNIST files; all serve the files published by LeCun et al.
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
_DOWNLOAD_TIMEOUT = 60.0  # seconds without data before a mirror is given up
_DOWNLOAD_DEADLINE = 600.0  # seconds for one file from one mirror, whatever the server does


class _IdxFile(NamedTuple):
    name: str  # standard file name, gzip-compressed
    sha256: str  # of the published .gz
    ndim: int  # 3 for images (N x 28 x 28), 1 for labels (N)
    size: int  # bytes of the published .gz: a download stops there


_MNIST_FILES = {
    "train_img": _IdxFile("train-images-idx3-ubyte.gz",
                          "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 3,
                          9912422),
    "train_label": _IdxFile("train-labels-idx1-ubyte.gz",
                            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 1,
                            28881),
    "test_img": _IdxFile("t10k-images-idx3-ubyte.gz",
                         "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 3,
                         1648877),
    "test_label": _IdxFile("t10k-labels-idx1-ubyte.gz",
                           "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 1,
                           4542),
}
_SPLITS = (("train_img", "train_label"), ("test_img", "test_label"))
_IMAGE_SIDE = 28
_N_CLASSES = 10
_IDX_UBYTE = 0x08  # the IDX type code of unsigned bytes, the third byte of the magic number
_GZIP_MAGIC = b"\x1f\x8b"
_CACHE_VERSION = 2  # bump when the layout of the parsed cache changes
_CACHE_KEY_LIMIT = 1 << 16  # bytes; the key is a short JSON text


class DatasetError(ValueError):
    """A data file is missing, corrupt, or not what its name says; the message names it."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """The data files are not found and cannot be downloaded.

    Also a ``FileNotFoundError``, so either ``except`` clause catches it.
    """


def _user_cache_dir():
    """``$XDG_CACHE_HOME/fastnn/mnist``, or ``~/.cache/fastnn/mnist``."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG spec says to ignore a relative XDG_CACHE_HOME.
    root = Path(base) if os.path.isabs(base) else Path.home() / ".cache"
    return root / "fastnn" / "mnist"


def _search_folders(data_dir):
    """The folders to look in, most specific first, without repeats."""
    first = data_dir if data_dir is not None else os.environ.get("FASTNN_DATA") or None
    folders = [Path(first).expanduser()] if first is not None else []
    cache = _user_cache_dir()
    if cache not in folders:
        folders.append(cache)
    return folders


def _find_in(folder, spec):
    """Path of ``spec``'s file in ``folder``, compressed or not, or None."""
    for name in (spec.name, spec.name.removesuffix(".gz")):
        if (folder / name).is_file():
            return folder / name
    return None


def _find_complete(folders):
    """``{key: path}`` from the first folder holding all four files, or None."""
    for folder in folders:
        paths = {key: _find_in(folder, spec) for key, spec in _MNIST_FILES.items()}
        if all(paths.values()):
            return paths
    return None


def _not_found_message(folders, reason):
    looked = "\n".join(f"  {folder}" for folder in folders)
    names = ", ".join(spec.name for spec in _MNIST_FILES.values())
    return (f"MNIST not found: {reason}.\nLooked in:\n{looked}\n"
            f"Supply the files {names} (gzip-compressed or not) by passing "
            "load_mnist(data_dir=...), by setting the environment variable FASTNN_DATA to "
            "their folder, or by calling load_mnist(download=True) with network access.")


class _Watchdog:
    """Shuts down the sockets of one download when its deadline passes, so that a blocked
    read returns at once: a socket timeout bounds each read, not their sum, and a server
    sending a byte every few seconds would otherwise never be given up on."""

    def __init__(self, seconds):
        self.seconds = seconds
        self.expired = False
        self._sockets = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self.expire)
        self._timer.daemon = True

    def track(self, sock):
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                self._shutdown(sock)

    def expire(self):
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                self._shutdown(sock)

    @staticmethod
    def _shutdown(sock):
        with contextlib.suppress(OSError):
            # socket.socket's own shutdown, also for an SSLSocket: it ends the connection
            # under the TLS layer without touching the TLS state another thread is using.
            socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def connection_class(self, base):
        watchdog = self

        class Watched(base):
            def connect(self):
                super().connect()
                watchdog.track(self.sock)

        return Watched

    def __enter__(self):
        self._timer.start()
        return self

    def __exit__(self, *exc):
        self._timer.cancel()


class _WatchedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, watchdog):
        super().__init__()
        self._watchdog = watchdog

    def http_open(self, req):
        return self.do_open(self._watchdog.connection_class(http.client.HTTPConnection), req)


class _WatchedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, watchdog):
        super().__init__()
        self._watchdog = watchdog

    def https_open(self, req):
        return self.do_open(self._watchdog.connection_class(http.client.HTTPSConnection), req,
                            context=self._context)


def _fetch(url, timeout, max_bytes):
    """Return the body of ``url``; the only function here that touches the network.

    Refuses a body longer than ``max_bytes`` (announced or sent: at most ``max_bytes + 1``
    bytes are read), gives up when ``timeout`` seconds pass without data, and after
    ``_DOWNLOAD_DEADLINE`` seconds in all (connecting, headers and body), however the server
    paces its bytes.
    """
    with _Watchdog(_DOWNLOAD_DEADLINE) as watchdog:
        opener = urllib.request.build_opener(_WatchedHTTPHandler(watchdog),
                                             _WatchedHTTPSHandler(watchdog))
        body = bytearray()
        try:
            with opener.open(url, timeout=min(timeout, _DOWNLOAD_DEADLINE)) as response:
                length = response.headers.get("Content-Length", "").strip()
                if length.isdigit() and int(length) > max_bytes:
                    raise ValueError(f"the server announces {length} bytes, more than the "
                                     f"published {max_bytes}")
                # read1: at most one read from the socket, so the deadline is checked
                # between reads (read(n) would wait for all n bytes).
                while chunk := response.read1(min(1 << 16, max_bytes + 1 - len(body))):
                    body += chunk
                    if len(body) > max_bytes:
                        raise ValueError(f"the body is longer than the published {max_bytes} "
                                         "bytes; stopped reading")
                    if watchdog.expired:
                        break
        except (OSError, http.client.HTTPException):
            if not watchdog.expired:
                raise
        if watchdog.expired:
            raise TimeoutError(f"not complete after {_DOWNLOAD_DEADLINE:g} s "
                               f"({len(body)} bytes received); gave up")
    return bytes(body)


def _download(spec, target, folders):
    """Download ``spec`` into the folder ``target`` from the first mirror whose file has the
    published SHA-256, and return its path."""
    failures = []
    for mirror in MNIST_MIRRORS:
        url = mirror + spec.name
        print(f"Downloading {url} ...", file=sys.stderr)
        try:
            data = _fetch(url, _DOWNLOAD_TIMEOUT, spec.size)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            failures.append(f"  {url}: {exc}")
            continue
        digest = hashlib.sha256(data).hexdigest()
        if digest != spec.sha256:
            failures.append(f"  {url}: SHA-256 {digest}, expected {spec.sha256}")
            continue
        path = target / spec.name
        with atomic_open(path) as f:
            f.write(data)
        return path
    raise DatasetNotFoundError(_not_found_message(
        folders, f"{spec.name} could not be downloaded:\n" + "\n".join(failures)))


def _locate_or_download(folders, download):
    """``{key: path}`` of the four files, downloading the missing ones if allowed."""
    paths = _find_complete(folders)
    if paths is not None:
        return paths
    if not download:
        raise DatasetNotFoundError(_not_found_message(
            folders, "no folder holds all four files and download=False"))
    target = folders[0]
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetNotFoundError(_not_found_message(
            folders, f"cannot create {target} to download into: {exc}")) from exc
    # Keep what is already there: a file that is present is the user's, right or wrong.
    return {key: _find_in(target, spec) or _download(spec, target, folders)
            for key, spec in _MNIST_FILES.items()}


def _open_idx(path, stack):
    """``(stream, compressed, size of the file)`` of ``path``, the stream entered into
    ``stack``.  gzip or not is judged by the first bytes, so that a file that a browser
    already decompressed but left named ``.gz`` still loads.  Only a regular file is opened
    (a FIFO would block, a device would never end)."""
    f = stack.enter_context(_open_regular(path))
    size = os.fstat(f.fileno()).st_size
    compressed = f.read(len(_GZIP_MAGIC)) == _GZIP_MAGIC
    f.seek(0)
    if compressed:
        return stack.enter_context(gzip.GzipFile(fileobj=f, mode="rb")), True, size
    return f, False, size


@contextlib.contextmanager
def _idx_errors(path):
    """Turn what a damaged file makes gzip and the OS raise into a DatasetError naming it."""
    try:
        yield
    except EOFError as exc:
        raise DatasetError(f"{path}: truncated gzip file ({exc})") from exc
    except (gzip.BadGzipFile, zlib.error) as exc:  # before OSError: BadGzipFile is one
        raise DatasetError(f"{path}: corrupt gzip file ({exc})") from exc
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from exc


def _read_header(stream, path, spec):
    """Read and validate the IDX header of ``stream``; return the dimensions."""
    kind = "image" if spec.ndim == 3 else "label"
    magic = (_IDX_UBYTE << 8) | spec.ndim
    data = stream.read(4)
    if len(data) < 4:
        raise DatasetError(f"{path}: truncated: {len(data)} bytes, not even a magic number")
    found = int.from_bytes(data, "big")
    if found != magic:
        raise DatasetError(
            f"{path}: bad magic number 0x{found:08x}; an MNIST {kind} file starts with "
            f"0x{magic:08x} ({magic}: unsigned bytes, {spec.ndim} dimension(s))")
    header = 4 + 4 * spec.ndim
    data += stream.read(header - 4)
    if len(data) < header:
        raise DatasetError(f"{path}: truncated: {len(data)} bytes, shorter than the "
                           f"{header}-byte header")
    dims = struct.unpack(f">{spec.ndim}I", data[4:header])
    if dims[1:] != (_IMAGE_SIDE,) * (spec.ndim - 1):
        raise DatasetError(f"{path}: images are {dims[1]}x{dims[2]}, MNIST's are "
                           f"{_IMAGE_SIDE}x{_IMAGE_SIDE}")
    return dims


def _idx_dims(path, spec):
    """The dimensions that the IDX header of ``path`` announces (decompressing 16 bytes)."""
    with contextlib.ExitStack() as stack, _idx_errors(path):
        stream, _, _ = _open_idx(path, stack)
        return _read_header(stream, path, spec)


def _read_idx(path, spec):
    """Read and validate the IDX file ``path``; a uint8 array of shape (N, 28, 28) or (N,).

    The header comes first: the data it announces is allocated only if the file can hold it
    (its size, or 1032 times it for gzip), and no more than that plus one byte is ever
    decompressed, so a small file whose body inflates to gigabytes costs only what the header
    announced.
    """
    with contextlib.ExitStack() as stack, _idx_errors(path):
        stream, compressed, size = _open_idx(path, stack)
        dims = _read_header(stream, path, spec)
        header = 4 + 4 * spec.ndim
        expected = math.prod(dims)
        shown = "x".join(map(str, dims))
        if compressed and expected > _DEFLATE_MAX_RATIO * size:
            raise DatasetError(f"{path}: truncated: the header announces {shown} = {expected} "
                               f"bytes of data, more than a {size}-byte gzip file can hold")
        if not compressed and size - header != expected:
            problem = "truncated" if size - header < expected else "trailing bytes"
            raise DatasetError(f"{path}: {problem}: the header announces {shown} = {expected}"
                               f" bytes of data, the file holds {size - header}")
        array = np.empty(expected, np.uint8)  # writable, owns its memory
        view, body = memoryview(array), 0
        while body < expected:
            got = stream.readinto(view[body:body + min(_CHUNK, expected - body)])
            if not got:
                break
            body += got
        if body < expected:
            raise DatasetError(f"{path}: truncated: the header announces {shown} = {expected}"
                               f" bytes of data, the file holds {body}")
        if stream.read(1):  # reaching the end also makes gzip check the CRC-32 and length
            raise DatasetError(f"{path}: trailing bytes: the header announces {shown} = "
                               f"{expected} bytes of data, the file holds more")
    array = array.reshape(dims)
    if spec.ndim == 1 and array.size and array.max() >= _N_CLASSES:
        bad = int(np.argmax(array >= _N_CLASSES))
        raise DatasetError(f"{path}: label {array[bad]} at index {bad}; labels are 0..9")
    return array


def _parse_all(paths):
    """Read, validate and cross-check the four files; ``{key: uint8 array}``."""
    raw = {key: _read_idx(paths[key], spec) for key, spec in _MNIST_FILES.items()}
    for img, label in _SPLITS:
        if len(raw[img]) != len(raw[label]):
            raise DatasetError(f"{paths[img]} holds {len(raw[img])} images but "
                               f"{paths[label]} holds {len(raw[label])} labels")
    return raw


def _cache_key(paths):
    """What the parsed cache must match: the source files' paths, sizes, mtimes and inodes
    (the inode changes when a file is replaced, even within the mtime's resolution)."""
    stats = {key: os.stat(path) for key, path in paths.items()}
    return json.dumps({"version": _CACHE_VERSION,
                       "files": {key: [str(Path(paths[key]).resolve()), st.st_size,
                                       st.st_mtime_ns, st.st_ino]
                                 for key, st in stats.items()}},
                      sort_keys=True)


def _cache_path(paths):
    """Where the parsed copy of the files ``paths`` lives: always in the user cache, never
    beside the data, which may be shared or read-only by convention even where the file
    system would let the process write (as root in CI).  The name depends on the source
    folder, so that several folders do not overwrite each other's copy."""
    folder = Path(paths["train_img"]).resolve().parent
    tag = hashlib.sha256(str(folder).encode()).hexdigest()[:16]
    return _user_cache_dir() / f"parsed-{tag}.npz"


def _read_cache(path, key, paths):
    """The arrays of the parsed copy at ``path`` if it matches ``key`` and passes the checks,
    else None (the cache is then rebuilt).

    The cache is not trusted beyond its key: each array must have the shape that its source
    file's header announces (read before anything is allocated), uint8 dtype, and the labels
    must be 0..9.  These checks cost four 16-byte header reads and one pass over the labels.
    """
    try:
        dims = {name: _idx_dims(paths[name], spec) for name, spec in _MNIST_FILES.items()}
    except DatasetError:
        return None  # the sources are damaged: parsing them reports it
    expect = {name: (tuple(shape), np.dtype(np.uint8)) for name, shape in dims.items()}
    expect["key"] = ((len(key.encode()),), np.dtype(np.uint8))
    try:
        raw = _read_npz_file(path, max_bytes=max(math.prod(dims["train_img"]),
                                                 _CACHE_KEY_LIMIT),
                             kinds="u", expect=expect)
    except (OSError, WeightFileError):
        return None  # absent, unreadable, not a regular file, damaged or not matching
    if raw.pop("key").tobytes() != key.encode():
        return None
    for img, label in _SPLITS:
        labels = raw[label]
        if len(raw[img]) != len(labels) or (labels.size and labels.max() >= _N_CLASSES):
            return None
    return raw


def _write_cache(path, key, raw):
    """Store the parsed arrays at ``path``; if that is not writable (or not a regular file),
    store nothing."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path) as f:
            _write_npz(f, {"key": np.frombuffer(key.encode(), np.uint8), **raw})
    except OSError:
        pass


def _load_mnist_raw(data_dir, download):
    """``{key: uint8 array}`` of the four MNIST files, from the parsed cache when current."""
    folders = _search_folders(data_dir)
    paths = _locate_or_download(folders, download)
    key, cache = _cache_key(paths), _cache_path(paths)
    raw = _read_cache(cache, key, paths)
    if raw is None:
        raw = _parse_all(paths)
        _write_cache(cache, key, raw)
    return raw


def _one_hot(labels):
    """(N,) labels in 0..9 -> (N, 10) float64 one-hot rows, as the book's
    ``_change_one_hot_label`` builds them.  Plain NumPy, so that loading data imports no
    compiled kernel; the labels were checked when the files were read."""
    rows = np.zeros((labels.size, _N_CLASSES))
    np.put_along_axis(rows, labels.reshape(-1, 1).astype(np.intp), 1.0, axis=1)
    return rows


def _finish(images, labels, scale, normalize, flatten, one_hot_label):
    """Apply the book's three options to uint8 ``images`` (N, side, side) and uint8 labels."""
    n, side = images.shape[0], images.shape[1]
    if normalize:
        images = images.astype(np.float32)
        images /= scale
    images = images.reshape(n, side * side) if flatten else images.reshape(n, 1, side, side)
    return images, _one_hot(labels) if one_hot_label else labels


def load_mnist(normalize=True, flatten=True, one_hot_label=False, data_dir=None,
               download=True):
    """Load MNIST, as the book's ``dataset.mnist.load_mnist`` does.

    Parameters
    ----------
    normalize : bool
        True: images as float32 in [0, 1] (pixel / 255.0).  False: uint8 in 0..255.
    flatten : bool
        True: images of shape (N, 784).  False: (N, 1, 28, 28).
    one_hot_label : bool
        True: labels as (N, 10) float64 one-hot rows.  False: uint8 labels of shape (N,).
    data_dir : str or os.PathLike, optional
        Folder of the four IDX files.  Defaults to ``$FASTNN_DATA``; the per-user cache
        (``$XDG_CACHE_HOME/fastnn/mnist`` or ``~/.cache/fastnn/mnist``) is searched after it.
    download : bool
        Download missing files into ``data_dir`` (else ``$FASTNN_DATA``, else the user cache)
        from ``MNIST_MIRRORS``, accepting only files with the published SHA-256.

    Returns
    -------
    (x_train, t_train), (x_test, t_test) : tuple of tuple of ndarray
        60000 training and 10000 test images and labels, in the files' order.  The arrays
        are new on every call.

    Raises
    ------
    DatasetNotFoundError
        If no searched folder holds all four files and they cannot be downloaded; the message
        lists the folders and the ways to supply the files.  Also a ``FileNotFoundError``.
    DatasetError
        If a file is not valid MNIST IDX data (bad gzip, bad magic number, not 28x28,
        truncated, trailing bytes, labels outside 0..9, image and label counts that differ);
        the message names the file.

    Notes
    -----
    The files are validated as IDX, not by checksum, because valid copies exist whose gzip
    compression differs from the published one.  Downloads are checksummed.  Each file's
    header is read first, and no more than the data it announces (plus one byte, to see that
    nothing follows) is ever decompressed; FIFOs and devices are not data files.

    The first searched folder holding all four files is used.

    The parsed arrays are kept in an uncompressed ``.npz`` in the user cache (never beside
    the data), which later calls read instead of decompressing the files.  A change of any
    file's path, size, mtime or inode invalidates it; if the user cache is not writable,
    nothing is cached.  The cache is re-checked on every read (each array's shape against its
    source file's header, uint8, matching counts, labels 0..9) and rebuilt when it fails.

    A download reads at most the file's published size, gives up on a mirror after 60 s
    without data or 600 s in all, and moves on to the next mirror.
    """
    raw = _load_mnist_raw(data_dir, download)
    return tuple(_finish(raw[img], raw[label], 255.0, normalize, flatten, one_hot_label)
                 for img, label in _SPLITS)


def load_digits(normalize=True, flatten=True, one_hot_label=False):
    """Load scikit-learn's 8x8 handwritten digits, in ``load_mnist``'s layout.

    An offline stand-in for MNIST: 1797 images bundled with scikit-learn (install it with
    ``pip install fastnn[digits]``).

    Parameters
    ----------
    normalize : bool
        True: images as float32 in [0, 1] (pixel / 16).  False: uint8 in 0..16.
    flatten : bool
        True: images of shape (N, 64).  False: (N, 1, 8, 8).
    one_hot_label : bool
        True: labels as (N, 10) float64 one-hot rows.  False: uint8 labels of shape (N,).

    Returns
    -------
    (x_train, t_train), (x_test, t_test) : tuple of tuple of ndarray
        The first ``N - N // 5`` samples (1438) for training and the last ``N // 5`` (359)
        for testing, in scikit-learn's order, so the split is the same on every machine.

    Raises
    ------
    ImportError
        If scikit-learn is not installed.
    """
    try:
        from sklearn.datasets import load_digits as sklearn_load_digits
    except ImportError as exc:
        raise ImportError("load_digits needs scikit-learn: pip install fastnn[digits]") from exc
    bunch = sklearn_load_digits()
    # The pixels are whole numbers 0..16 stored as float64, so the cast is exact.
    images = np.asarray(bunch.images).astype(np.uint8)
    labels = np.asarray(bunch.target).astype(np.uint8)
    split = len(images) - len(images) // 5
    return tuple(_finish(images[part], labels[part], 16.0, normalize, flatten, one_hot_label)
                 for part in (slice(None, split), slice(split, None)))
