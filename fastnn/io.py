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


# --- networks that say what they are ------------------------------------------------------------
#
# save_network writes the network's arrays as save_params does, plus one more member,
# NETWORK_MEMBER: the architecture as UTF-8 JSON in a uint8 array.  So the file is read by the
# same safe loader (load_params: no pickle in an .npz, the restricted unpickler for a .pkl),
# the book's code still finds W1, b1, ... in a .pkl, and the JSON can be read by anyone:
# ``bytes(np.load(path)[NETWORK_MEMBER]).decode()``.
#
# The JSON holds: "format" and "version" (of this layout), "fastnn" (the version that wrote
# it), "class", "dtype", "config" (the constructor's arguments, per class), "params" (the
# names of network.params, the arrays an optimizer updates), "state" (other arrays the network
# needs to predict, such as batch-normalization running statistics) and "info" (the caller's,
# e.g. the data set it was trained on).  A new network class is one entry in _ARCHITECTURES:
# a function describe(network) -> (config, params, state) and a function
# build(config, arrays, dtype) -> network; the classes are looked up by name in that table
# only, so a file cannot make load_network import anything.

import json  # noqa: E402  (this section's own imports, kept with it)
import warnings  # noqa: E402

NETWORK_MEMBER = "__network__"
NETWORK_FORMAT = "fastnn.network"
NETWORK_FORMAT_VERSION = 1
_MAX_DESCRIPTION_BYTES = 1 << 20
_BARE_ACTIVATION = {"pkl": "sigmoid", "npz": "relu"}  # the book's sample_weight.pkl; fastnn's
_ACTIVATIONS = ("relu", "sigmoid", "identity")

__all__ += ["save_network", "load_network", "NETWORK_MEMBER", "BareWeightsWarning"]


class BareWeightsWarning(UserWarning):
    """``load_network`` read a file of weights only (the book's pickle, or an ``.npz`` of an
    older fastnn) and assumed the hidden activation."""


def _dense_describe(network):
    sizes = [int(network.affine_layers[0].W.shape[0])]
    sizes += [int(layer.W.shape[1]) for layer in network.affine_layers]
    config = {"sizes": sizes, "activation": network.activation,
              "weight_decay_lambda": float(getattr(network, "weight_decay_lambda", 0) or 0),
              "exact_loss": bool(network.exact_loss)}
    return config, dict(network.params), {}


def _dense_build(name):
    def build(config, arrays, dtype):
        from fastnn import nets

        sizes, activation = config["sizes"], config["activation"]
        if name == "TwoLayerNet":
            if len(sizes) != 3 or activation != "relu":
                raise ValueError(f"a TwoLayerNet has sizes [in, hidden, out] and relu, got "
                                 f"{sizes} and {activation!r}")
            network = nets.TwoLayerNet(*sizes, dtype=dtype, rng=0,
                                       exact_loss=config["exact_loss"])
            for key, target in network.params.items():
                if key not in arrays or arrays[key].shape != target.shape:
                    raise ValueError(f"{key} must have shape {target.shape} for sizes {sizes}, "
                                     f"got {getattr(arrays.get(key), 'shape', None)}")
                np.copyto(target, arrays[key])
            return network
        network = nets.MultiLayerNet.from_params(
            arrays, activation=activation, weight_decay_lambda=config["weight_decay_lambda"],
            exact_loss=config["exact_loss"])
        if network._sizes != list(sizes):
            raise ValueError(f"the weights give layer sizes {network._sizes}, the description "
                             f"{sizes}")
        return network
    return build


_ARCHITECTURES = {
    "TwoLayerNet": (_dense_describe, _dense_build("TwoLayerNet")),
    "MultiLayerNet": (_dense_describe, _dense_build("MultiLayerNet")),
}


def save_network(path, network, format=None, info=None):
    """Save a network with its architecture, atomically, so that :func:`load_network` rebuilds
    it without being told what it is.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file, written exactly at this path.
    network : TwoLayerNet or MultiLayerNet
    format : {'npz', 'pkl'}, optional
        As in :func:`save_params` (default from the suffix, else ``'npz'``).  A ``.pkl`` stays
        the book's dict of arrays: the book's code finds ``W1``, ``b1``, ... in it.
    info : dict, optional
        JSON-serialisable facts to keep with it (``fastnn train`` stores the data set and the
        test accuracy); given back by ``load_network(..., return_description=True)``.

    Raises
    ------
    ValueError
        If the network's class is not one that ``load_network`` can rebuild, ``info`` is not
        JSON-serialisable, or ``format`` is unknown.
    """
    import fastnn

    name = type(network).__name__
    if name not in _ARCHITECTURES:
        raise ValueError(f"save_network saves {', '.join(_ARCHITECTURES)}, not {name}; "
                         "save_params(path, network.params) saves the weights alone")
    config, params, state = _ARCHITECTURES[name][0](network)
    clash = set(params) & set(state) | ({NETWORK_MEMBER} & (set(params) | set(state)))
    if clash:
        raise ValueError(f"array names used twice or reserved: {sorted(clash)}")
    dtypes = {np.asarray(a).dtype.name for a in params.values()}
    description = {"format": NETWORK_FORMAT, "version": NETWORK_FORMAT_VERSION,
                   "fastnn": fastnn.__version__, "class": name,
                   "dtype": getattr(network, "dtype", np.dtype(dtypes.pop())).name,
                   "config": config, "params": list(params), "state": list(state),
                   "info": dict(info or {})}
    try:
        text = json.dumps(description, allow_nan=False, sort_keys=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"info must be JSON-serialisable (finite numbers, str, lists, "
                         f"dicts): {exc}") from None
    arrays = {**params, **state, NETWORK_MEMBER: np.frombuffer(text.encode("utf-8"), np.uint8)}
    save_params(path, arrays, format=format)


def _read_description(member, source):
    """The JSON description in ``member`` (a uint8 array), checked, or ValueError."""
    if member.dtype != np.uint8 or member.ndim != 1 or member.size > _MAX_DESCRIPTION_BYTES:
        raise ValueError(f"{source}: {NETWORK_MEMBER} must be a 1-D uint8 array of at most "
                         f"{_MAX_DESCRIPTION_BYTES} bytes, got dtype {member.dtype} and shape "
                         f"{member.shape}")
    try:
        description = json.loads(member.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{source}: {NETWORK_MEMBER} is not UTF-8 JSON ({exc})") from None
    if not isinstance(description, dict) or description.get("format") != NETWORK_FORMAT:
        raise ValueError(f"{source}: {NETWORK_MEMBER} is not a {NETWORK_FORMAT} description")
    version = description.get("version")
    if not isinstance(version, int) or version > NETWORK_FORMAT_VERSION:
        raise ValueError(f"{source}: network description version {version!r}; this fastnn "
                         f"reads up to {NETWORK_FORMAT_VERSION} (written by fastnn "
                         f"{description.get('fastnn', '?')})")
    expected = {"class": str, "dtype": str, "config": dict, "params": list, "state": list,
                "info": dict}
    for key, kind in expected.items():
        if not isinstance(description.get(key), kind):
            raise ValueError(f"{source}: the network description needs {key!r} as a "
                             f"{kind.__name__}, got {description.get(key)!r}")
    return description


def load_network(path, activation=None, return_description=False):
    """Rebuild a network saved by :func:`save_network`, or one from weights alone.

    Parameters
    ----------
    path : str or os.PathLike
        A file of :func:`save_network`; or weights alone (:func:`save_params`, the book's
        ``sample_weight.pkl``), read as a ``MultiLayerNet`` with a ``BareWeightsWarning``.
    activation : {'relu', 'sigmoid', 'identity'}, optional
        The hidden activation of a file of weights alone (by default 'sigmoid' for a pickle,
        as the book's ``sample_weight.pkl``, 'relu' for an ``.npz`` of an older fastnn).  A
        described file knows its own: a different one is refused.
    return_description : bool
        Also return the file's description (None for weights alone).

    Returns
    -------
    network : TwoLayerNet or MultiLayerNet
    description : dict or None, only with ``return_description``
        The JSON stored by ``save_network``: 'class', 'dtype', 'config', 'info', ...

    Raises
    ------
    ValueError
        If the file holds no weights of a network or a description that does not fit them
        (plus the errors of :func:`load_params`).
    """
    if activation is not None and activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {list(_ACTIVATIONS)}, got {activation!r}")
    source = os.fspath(path)
    arrays = load_params(path)
    member = arrays.pop(NETWORK_MEMBER, None)
    if member is None:
        with open(path, "rb") as f:
            kind = "npz" if f.read(4) in _ZIP_MAGICS else "pkl"
        assumed = activation or _BARE_ACTIVATION[kind]
        if activation is None:
            what = "a pickle of weights alone (as the book's sample_weight.pkl)" if kind == "pkl" \
                else "weights alone (an .npz of save_params, or of an older fastnn train)"
            warnings.warn(f"{source} is {what}: read as a MultiLayerNet with {assumed} hidden "
                          "layers (say the activation to be sure)", BareWeightsWarning,
                          stacklevel=2)
        from fastnn.nets import MultiLayerNet

        if "W1" not in arrays:
            raise ValueError(f"{source}: not the weights of a network: it holds "
                             f"{sorted(arrays)[:8]}, no W1, b1, W2, b2, ...")
        try:
            network = MultiLayerNet.from_params(arrays, activation=assumed)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source}: not the weights of a network: {exc}") from None
        return (network, None) if return_description else network

    description = _read_description(member, source)
    name = description["class"]
    if name not in _ARCHITECTURES:
        raise ValueError(f"{source}: a {name}, which this fastnn cannot rebuild (it knows "
                         f"{', '.join(_ARCHITECTURES)})")
    names = description["params"] + description["state"]
    if sorted(names) != sorted(arrays):
        raise ValueError(f"{source}: the description lists arrays {sorted(names)}, the file "
                         f"holds {sorted(arrays)}")
    dtype = description["dtype"]
    if dtype not in ("float32", "float64") or any(a.dtype != dtype for a in arrays.values()):
        raise ValueError(f"{source}: a {dtype} network with arrays of dtypes "
                         f"{sorted({a.dtype.name for a in arrays.values()})}")
    config = description["config"]
    if activation is not None and config.get("activation", activation) != activation:
        raise ValueError(f"{source} is a network with {config.get('activation')} hidden "
                         f"layers, not {activation}")
    try:
        network = _ARCHITECTURES[name][1](config, arrays, np.dtype(dtype))
    except (KeyError, TypeError, ValueError) as exc:
        detail = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ValueError(f"{source}: the {name} description does not fit: {detail}") from None
    return (network, description) if return_description else network
