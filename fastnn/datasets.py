"""MNIST, loaded exactly as the book's ``dataset/mnist.py`` loads it, and an offline stand-in.

``load_mnist`` reads the four standard IDX files (gzip-compressed or not), validates them,
and keeps a parsed ``.npz`` copy so that later loads skip the decompression.  Missing files
are downloaded from public mirrors and checked against their published SHA-256.

Where the files are looked for, in this order:

1. ``data_dir`` if given, else the folder named by the environment variable ``FASTNN_DATA``;
2. the per-user cache, ``$XDG_CACHE_HOME/fastnn/mnist`` or ``~/.cache/fastnn/mnist``.

The first folder holding all four files is used.  Downloads go to the first of these folders.

``load_digits`` returns scikit-learn's 8x8 digits in the same layout, for machines without
MNIST and without a network.
"""
import gzip
import hashlib
import http.client
import json
import math
import os
import struct
import sys
import urllib.request
import zipfile
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from fastnn.functions import one_hot
from fastnn.io import atomic_open

__all__ = ["DatasetError", "DatasetNotFoundError", "MNIST_MIRRORS", "load_mnist", "load_digits"]

#: Base URLs tried in turn for missing MNIST files; all serve the files published by LeCun et al.
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
_DOWNLOAD_TIMEOUT = 60.0  # seconds without data before a mirror is given up


class _IdxFile(NamedTuple):
    name: str  # standard file name, gzip-compressed
    sha256: str  # of the published .gz
    ndim: int  # 3 for images (N x 28 x 28), 1 for labels (N)


_MNIST_FILES = {
    "train_img": _IdxFile("train-images-idx3-ubyte.gz",
                          "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 3),
    "train_label": _IdxFile("train-labels-idx1-ubyte.gz",
                            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 1),
    "test_img": _IdxFile("t10k-images-idx3-ubyte.gz",
                         "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 3),
    "test_label": _IdxFile("t10k-labels-idx1-ubyte.gz",
                           "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 1),
}
_SPLITS = (("train_img", "train_label"), ("test_img", "test_label"))
_IMAGE_SIDE = 28
_N_CLASSES = 10
_IDX_UBYTE = 0x08  # the IDX type code of unsigned bytes, the third byte of the magic number
_GZIP_MAGIC = b"\x1f\x8b"
_CACHE_VERSION = 1  # bump when the layout of the parsed cache changes


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


def _fetch(url, timeout):
    """Return the body of ``url``; the only function here that touches the network."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def _download(spec, target, folders):
    """Download ``spec`` into the folder ``target`` from the first mirror whose file has the
    published SHA-256, and return its path."""
    failures = []
    for mirror in MNIST_MIRRORS:
        url = mirror + spec.name
        print(f"Downloading {url} ...", file=sys.stderr)
        try:
            data = _fetch(url, _DOWNLOAD_TIMEOUT)
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


def _read_bytes(path):
    """The uncompressed content of ``path``, gzip or not, judged by its first bytes so that a
    file that a browser already decompressed but left named ``.gz`` still loads."""
    try:
        with open(path, "rb") as f:
            if f.read(len(_GZIP_MAGIC)) != _GZIP_MAGIC:
                f.seek(0)
                return f.read()
            f.seek(0)
            try:
                with gzip.GzipFile(fileobj=f) as stream:
                    return stream.read()
            except EOFError as exc:
                raise DatasetError(f"{path}: truncated gzip file ({exc})") from exc
            except (gzip.BadGzipFile, zlib.error) as exc:
                raise DatasetError(f"{path}: corrupt gzip file ({exc})") from exc
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from exc


def _parse_idx(data, path, spec):
    """Validate the IDX bytes ``data`` read from ``path`` and return them as a uint8 array of
    shape (N, 28, 28) or (N,)."""
    kind = "image" if spec.ndim == 3 else "label"
    magic = (_IDX_UBYTE << 8) | spec.ndim
    if len(data) < 4:
        raise DatasetError(f"{path}: truncated: {len(data)} bytes, not even a magic number")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DatasetError(
            f"{path}: bad magic number 0x{found:08x}; an MNIST {kind} file starts with "
            f"0x{magic:08x} ({magic}: unsigned bytes, {spec.ndim} dimension(s))")
    header = 4 + 4 * spec.ndim
    if len(data) < header:
        raise DatasetError(f"{path}: truncated: {len(data)} bytes, shorter than the "
                           f"{header}-byte header")
    dims = struct.unpack(f">{spec.ndim}I", data[4:header])
    if dims[1:] != (_IMAGE_SIDE,) * (spec.ndim - 1):
        raise DatasetError(f"{path}: images are {dims[1]}x{dims[2]}, MNIST's are "
                           f"{_IMAGE_SIDE}x{_IMAGE_SIDE}")
    expected = math.prod(dims)
    body = len(data) - header
    if body != expected:
        problem = "truncated" if body < expected else "trailing bytes"
        raise DatasetError(f"{path}: {problem}: the header announces {'x'.join(map(str, dims))}"
                           f" = {expected} bytes of data, the file holds {body}")
    # A copy, so the arrays handed out are writable and do not pin the decompressed bytes.
    array = np.frombuffer(data, np.uint8, offset=header).reshape(dims).copy()
    if spec.ndim == 1 and array.size and array.max() >= _N_CLASSES:
        bad = int(np.argmax(array >= _N_CLASSES))
        raise DatasetError(f"{path}: label {array[bad]} at index {bad}; labels are 0..9")
    return array


def _parse_all(paths):
    """Read, validate and cross-check the four files; ``{key: uint8 array}``."""
    raw = {key: _parse_idx(_read_bytes(paths[key]), paths[key], spec)
           for key, spec in _MNIST_FILES.items()}
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


def _read_cache(path, key):
    """The arrays of the parsed copy at ``path`` if it matches ``key``, else None."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            if str(npz["key"]) != key:
                return None
            raw = {name: npz[name] for name in _MNIST_FILES}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None  # absent, unreadable or damaged: parse the sources instead
    if all(raw[name].dtype == np.uint8 and raw[name].ndim == spec.ndim
           for name, spec in _MNIST_FILES.items()):
        return raw
    return None


def _write_cache(path, key, raw):
    """Store the parsed arrays at ``path``; if that is not writable, store nothing."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path) as f:
            np.savez(f, key=np.array(key), **raw)
    except OSError:
        pass


def _load_mnist_raw(data_dir, download):
    """``{key: uint8 array}`` of the four MNIST files, from the parsed cache when current."""
    folders = _search_folders(data_dir)
    paths = _locate_or_download(folders, download)
    key, cache = _cache_key(paths), _cache_path(paths)
    raw = _read_cache(cache, key)
    if raw is None:
        raw = _parse_all(paths)
        _write_cache(cache, key, raw)
    return raw


def _finish(images, labels, scale, normalize, flatten, one_hot_label):
    """Apply the book's three options to uint8 ``images`` (N, side, side) and uint8 labels."""
    n, side = images.shape[0], images.shape[1]
    if normalize:
        images = images.astype(np.float32)
        images /= scale
    images = images.reshape(n, side * side) if flatten else images.reshape(n, 1, side, side)
    # float64 one-hot rows, as the book's _change_one_hot_label builds them
    return images, one_hot(labels, _N_CLASSES) if one_hot_label else labels


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
    compression differs from the published one.  Downloads are checksummed.

    The first searched folder holding all four files is used.

    The parsed arrays are kept in an uncompressed ``.npz`` in the user cache (never beside
    the data), which later calls read instead of decompressing the files.  A change of any
    file's path, size, mtime or inode invalidates it; if the user cache is not writable,
    nothing is cached.
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
