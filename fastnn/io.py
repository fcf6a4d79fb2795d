"""Weight files and atomic writes.

``save_params``/``load_params`` store a network's ``params`` dict (``str`` -> ndarray) as an
``.npz`` archive or as the book's pickle (a pickled dict of arrays, e.g. ``sample_weight.pkl``).
Pickles are read by a restricted unpickler that rebuilds only plain containers and NumPy
arrays, so loading a weight file from the internet cannot run code.

``atomic_open`` is the one place in fastnn that writes files: readers see either the old file
or the complete new one, never a half-written one.
"""
import collections
import contextlib
import os
import pickle
import secrets
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from numpy._core.multiarray import _reconstruct, scalar
from numpy._core.numeric import _frombuffer

__all__ = ["atomic_open", "save_params", "load_params", "UnsafePickleError"]

_FORMATS = {".npz": "npz", ".pkl": "pkl", ".pickle": "pkl"}
# A zip archive starts with a local file header, or, when empty, with the end record.
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
# Protocol 4 (Python >= 3.4) is the newest that every NumPy still in use can read.
_PICKLE_PROTOCOL = 4


@contextlib.contextmanager
def atomic_open(path, mode="wb"):
    """Open ``path`` for writing so that it is replaced all at once or not at all.

    The data goes to a temporary file in the same directory (so the final rename stays on one
    file system), which is flushed, fsynced and then renamed over ``path`` with
    ``os.replace``.  If the ``with`` block raises, the temporary file is removed and any
    existing ``path`` is left untouched.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file; its directory must exist.
    mode : {'wb', 'w'}
        Binary, or text in UTF-8.

    Yields
    ------
    file object
        The open temporary file.

    Examples
    --------
    >>> with atomic_open("weights.bin") as f:  # doctest: +SKIP
    ...     f.write(data)
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open supports mode 'wb' or 'w', not {mode!r}")
    path = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            # os.open with 0o666 lets the umask set the permissions, as a plain open() would;
            # tempfile.mkstemp would leave the final file readable by its owner only.
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if os.name == "posix":
        # Makes the rename itself durable; best effort, as some file systems refuse it.
        with contextlib.suppress(OSError):
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


def _check_params(params, source, convert):
    """Return ``params`` as a plain dict of numeric ndarrays, or raise ValueError.

    ``convert`` passes array_likes through ``np.asarray`` (saving); otherwise values must
    already be ndarrays (loading).  Object arrays are refused because the ``.npz`` format
    can only hold them as pickles.
    """
    if not isinstance(params, Mapping):
        raise ValueError(f"{source}: expected a dict of arrays, got {type(params).__name__}")
    checked = {}
    for key, value in params.items():
        if not isinstance(key, str):
            raise ValueError(f"{source}: parameter names must be str, got {key!r}")
        array = np.asarray(value) if convert else value
        if not isinstance(array, np.ndarray) or array.dtype.hasobject:
            raise ValueError(f"{source}: parameter {key!r} is not a numeric array "
                             f"(type {type(value).__name__}, "
                             f"dtype {getattr(value, 'dtype', None)})")
        checked[key] = array
    return checked


def save_params(path, params, format=None):
    """Save a network's parameters to ``path``, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file.  It is written exactly at this path (no suffix is added).
    params : dict of str to array_like
        Parameter name -> numeric array, e.g. ``net.params``.
    format : {'npz', 'pkl'}, optional
        ``'npz'``: an uncompressed NumPy archive, one ``<name>.npy`` member per parameter.
        ``'pkl'``: the book's format, ``pickle.dump(params, f)`` with protocol 4.
        By default taken from the suffix of ``path`` (``.npz``, ``.pkl``, ``.pickle``),
        else ``'npz'``.

    Raises
    ------
    ValueError
        If ``format`` is unknown, or ``params`` is not a dict of str to numeric arrays.
    """
    if format is None:
        format = _FORMATS.get(Path(path).suffix.lower(), "npz")
    if format not in ("npz", "pkl"):
        raise ValueError(f"format must be 'npz' or 'pkl', not {format!r}")
    arrays = _check_params(params, "params", convert=True)
    with atomic_open(path) as f:
        if format == "pkl":
            pickle.dump(arrays, f, protocol=_PICKLE_PROTOCOL)
            return
        # What np.savez does, written out because np.savez(f, **arrays) would take a
        # parameter named 'allow_pickle' as its own keyword and silently not save it.
        with zipfile.ZipFile(f, mode="w", compression=zipfile.ZIP_STORED,
                             allowZip64=True) as archive:
            for key, array in arrays.items():
                with archive.open(key + ".npy", mode="w", force_zip64=True) as member:
                    np.lib.format.write_array(member, array, allow_pickle=False)


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a global that ``load_params`` does not allow; nothing was run."""


def _latin1_bytes(text="", encoding="latin1"):
    """Rebuild ``bytes`` the way protocol 0-2 pickles do (``_codecs.encode(s, 'latin1')``,
    or ``bytes()`` when empty), refusing any other codec."""
    if not isinstance(text, str) or encoding.lower().replace("_", "-") not in ("latin1",
                                                                                "latin-1"):
        raise UnsafePickleError(f"refusing _codecs.encode({type(text).__name__}, "
                                f"{encoding!r}): only latin-1 text is allowed")
    return text.encode("latin-1")


# Everything a pickled dict of arrays needs, and nothing more.  Module names as NumPy 2 spells
# them; NumPy 1.x pickles say numpy.core, which find_class maps to numpy._core.
_SAFE_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # protocols 0-4
    ("numpy._core.multiarray", "scalar"): scalar,  # NumPy scalars
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,  # protocol 5 (Python 3.14's default)
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): _latin1_bytes,  # array data in protocols 0-2
    ("builtins", "bytes"): _latin1_bytes,  # empty array data in protocols 0-2
    ("__builtin__", "bytes"): _latin1_bytes,  # the same, written by Python 2
}


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals in ``_SAFE_GLOBALS``."""

    def find_class(self, module, name):
        resolved = module
        if module == "numpy.core" or module.startswith("numpy.core."):
            resolved = "numpy._core" + module[len("numpy.core"):]
        try:
            return _SAFE_GLOBALS[resolved, name]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load global {module}.{name}: a weight file may only hold "
                "dicts, lists, tuples, numbers, strings and NumPy arrays") from None


def load_params(path):
    """Load parameters saved by ``save_params`` or by the book (``sample_weight.pkl``).

    The format is recognised from the content, not the name: a zip archive is read as
    ``.npz`` with ``allow_pickle=False``; anything else as a pickle, through an unpickler
    that accepts only plain containers and NumPy arrays (pickles written by NumPy 1.x and
    2.x, any protocol).

    Parameters
    ----------
    path : str or os.PathLike
        File to read.

    Returns
    -------
    dict of str to ndarray
        A new plain dict of writable arrays, in file order.

    Raises
    ------
    UnsafePickleError
        If the pickle references any other global (``os.system``, ``builtins.eval``, ...);
        it is raised before anything is called.  A subclass of ``pickle.UnpicklingError``.
    ValueError
        If the file does not hold a dict of str to numeric arrays.
    pickle.UnpicklingError, EOFError
        If the pickle is corrupt or truncated.
    """
    with open(path, "rb") as f:
        if f.read(4) in _ZIP_MAGICS:
            with np.load(path, allow_pickle=False) as archive:
                params = {key: archive[key] for key in archive.files}
        else:
            f.seek(0)
            # latin1 turns Python 2 byte strings into str, as NumPy's own docs recommend.
            params = _SafeUnpickler(f, encoding="latin1").load()
    params = _check_params(params, os.fspath(path), convert=False)
    # Arrays unpickled from read-only buffers are read-only; optimizers update in place.
    return {key: a if a.flags.writeable else a.copy() for key, a in params.items()}
