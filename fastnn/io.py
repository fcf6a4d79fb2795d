"""Weight files and atomic writes.

``save_params``/``load_params`` store a network's ``params`` dict (``str`` -> ndarray) as an
``.npz`` archive or as the book's pickle (a pickled dict of arrays, e.g. ``sample_weight.pkl``).
Pickles are read by a restricted unpickler that rebuilds only plain containers and NumPy
arrays, so loading a weight file from the internet cannot run code.

Reading is bounded: a file is opened only if it is a regular file (never blocking on a FIFO or
reading a device), and every ``.npz`` member's header is checked before its array is
allocated: its dtype, its size against the member's recorded size and against
``MAX_MEMBER_BYTES``, so that a small or truncated archive cannot claim gigabytes.

``atomic_open`` is the one place in fastnn that writes files: readers see either the old file
or the complete new one, never a half-written one.  It writes through symbolic links to their
target, refuses destinations that are not regular files, and leaves no temporary file behind,
even when the process is killed.
"""
import collections
import contextlib
import errno
import hashlib
import io
import math
import numbers
import os
import pickle
import pickletools
import re
import secrets
import socket
import stat
import struct
import zipfile
import zlib
from collections.abc import Mapping

import numpy as np
from numpy._core.multiarray import _reconstruct, scalar
from numpy._core.numeric import _frombuffer

__all__ = ["atomic_open", "save_params", "load_params", "UnsafePickleError", "WeightFileError",
           "MAX_MEMBER_BYTES"]

#: Largest array, in bytes, that ``load_params`` reads from one ``.npz`` member unless its
#: ``max_bytes`` argument says otherwise (256 MiB: a 8192 x 4096 float64 weight matrix).
#: Checked from the member's header before anything is allocated.
MAX_MEMBER_BYTES = 256 * 2**20

_FORMATS = {".npz": "npz", ".pkl": "pkl", ".pickle": "pkl"}
# A zip archive starts with a local file header, or, when empty, with the end record.
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
# Protocol 4 (Python >= 3.4) is the newest that every NumPy still in use can read.
_PICKLE_PROTOCOL = 4
# Array kinds a weight file may hold: bool, signed and unsigned integers, floats.  Strings,
# complex numbers, dates, structured and object arrays are not parameters of a network.
_PARAM_KINDS = "biuf"
# Characters a .npz member name cannot carry: zipfile cuts names at NUL, '/' makes a folder,
# and on Windows zipfile turns '\\' into '/'.
_NPZ_BAD_CHARS = ("\x00", "/", "\\")
_NPY_HEADER_LIMIT = 10000  # bytes; NumPy's own default limit for a .npy header
# Deflate cannot expand its input more than about 1032-fold; a member claiming more is a lie.
_DEFLATE_MAX_RATIO = 1032
_CHUNK = 1 << 18  # bytes read at a time: no read copies a whole array; fits in L2 (NumPy reads so)


class WeightFileError(ValueError):
    """A weight file is corrupt, truncated, or holds what a weight file may not; the message
    names the file."""


# --- atomic writes --------------------------------------------------------------------------

def _kind_of(mode):
    """What a non-regular file is, for error messages."""
    for test, kind in ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO (named pipe)"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISSOCK, "socket")):
        if test(mode):
            return kind
    return "special file"


def _not_regular(path, mode, action):
    """The OSError for a destination or source that is not a regular file."""
    kind = _kind_of(mode)
    code = errno.EISDIR if stat.S_ISDIR(mode) else errno.EINVAL
    cls = IsADirectoryError if stat.S_ISDIR(mode) else OSError
    return cls(code, f"{action}: it is a {kind}, not a regular file", os.fspath(path))


def _destination(path):
    """The file that writing ``path`` must replace: symbolic links resolved (so the link is
    kept and its target written), and its ``os.stat`` result, or None if it does not exist.
    Refuses anything that exists and is not a regular file."""
    target = os.path.realpath(os.fsdecode(os.fspath(path)))
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return target, None
    if not stat.S_ISREG(st.st_mode):
        # Replacing it by a regular file would destroy a FIFO, a device node or a folder.
        raise _not_regular(path, st.st_mode, "refusing to write over it")
    return target, st


_host_tag_cache = []


def _host_tag():
    """8 hex digits naming this host and PID namespace, so that a process cleaning up
    temporaries judges only PIDs it can see (a shared folder may be written by others)."""
    if not _host_tag_cache:
        try:
            namespace = os.readlink("/proc/self/ns/pid")
        except OSError:
            namespace = ""
        text = f"{socket.gethostname()}|{namespace}"
        _host_tag_cache.append(hashlib.sha256(text.encode()).hexdigest()[:8])
    return _host_tag_cache[0]


# A named temporary of atomic_open: ".<name>.fastnn-<host>-<pid>-<random>.tmp".
_TEMP_RE = re.compile(r"\..*\.fastnn-(?P<host>[0-9a-f]{8})-(?P<pid>[0-9]{1,10})-[0-9a-f]{8}\.tmp",
                      re.DOTALL)


def _temp_path(folder, name):
    # The name is shortened so that the temporary's name stays within NAME_MAX (255).
    return os.path.join(folder, f".{name[:150]}.fastnn-{_host_tag()}-{os.getpid()}-"
                                f"{secrets.token_hex(4)}.tmp")


def _pid_alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by another user
    except (OverflowError, OSError):
        return False  # no such PID can exist
    return True


def _remove_stale_temporaries(folder):
    """Remove the named temporaries of atomic_open in ``folder`` whose writer, a process of
    this host, is gone (killed before it could rename or remove them)."""
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows
        return
    try:
        with os.scandir(folder) as entries:
            stale = [entry for entry in entries
                     if (match := _TEMP_RE.fullmatch(entry.name))
                     and match["host"] == _host_tag() and not _pid_alive(int(match["pid"]))
                     and entry.is_file(follow_symlinks=False)]
    except OSError:
        return
    for entry in stale:
        with contextlib.suppress(OSError):  # another process may have removed it first
            os.unlink(entry.path)


# st_dev of file systems where an anonymous file could not be linked in: not tried again.
_NO_LINKAT = set()


def _open_anonymous(folder):
    """An O_TMPFILE descriptor in ``folder`` (a file without a name, which vanishes with the
    process), or None where the OS or the file system has none."""
    if not hasattr(os, "O_TMPFILE"):
        return None
    try:
        if os.stat(folder).st_dev in _NO_LINKAT:
            return None
        return os.open(folder, os.O_TMPFILE | os.O_RDWR, 0o666)
    except OSError:
        return None  # EOPNOTSUPP, EISDIR (kernels before 3.11), ...


_libc = []


def _linkat():
    """libc's linkat, or None."""
    if not _libc:
        try:
            import ctypes

            _libc.append(ctypes.CDLL(None, use_errno=True).linkat)
        except (ImportError, OSError, AttributeError):
            _libc.append(None)
    return _libc[0]


def _link_anonymous(fd, path):
    """Give the anonymous file ``fd`` the name ``path``; False if no way works here."""
    linkat = _linkat()
    # linkat(fd, "", AT_FDCWD, path, AT_EMPTY_PATH): needs CAP_DAC_READ_SEARCH (or Linux 6.10)
    if linkat is not None and linkat(fd, b"", -100, os.fsencode(path), 0x1000) == 0:
        return True
    try:  # the classic way, through /proc (needs /proc, and the same mount)
        os.link(f"/proc/self/fd/{fd}", path, follow_symlinks=True)
        return True
    except OSError:
        return False


def _open_named(folder, name):
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = _temp_path(folder, name)
        try:
            # os.open with 0o666 lets the umask set the permissions, as a plain open() would;
            # tempfile.mkstemp would leave the final file readable by its owner only.
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue


def _name_anonymous(fd, folder, name):
    """Link the written anonymous file ``fd`` in under a temporary name and return it; where
    linking is impossible, copy its content into a named temporary instead."""
    while True:
        tmp = _temp_path(folder, name)
        if _link_anonymous(fd, tmp):
            return tmp
        if not os.path.lexists(tmp):
            break
    with contextlib.suppress(OSError):
        _NO_LINKAT.add(os.fstat(fd).st_dev)
    out, tmp = _open_named(folder, name)
    try:
        with contextlib.suppress(OSError):
            os.fchmod(out, stat.S_IMODE(os.fstat(fd).st_mode))
        offset = 0
        while chunk := os.pread(fd, _CHUNK, offset):
            view = memoryview(chunk)
            while view:
                view = view[os.write(out, view):]
            offset += len(chunk)
        os.fsync(out)
    except BaseException:
        os.close(out)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(out)
    return tmp


@contextlib.contextmanager
def atomic_open(path, mode="wb"):
    """Open ``path`` for writing so that it is replaced all at once or not at all.

    The data goes to a temporary file in the destination's directory (so the final rename
    stays on one file system), which is flushed, fsynced and then renamed over the
    destination with ``os.replace``.  If the ``with`` block raises, the temporary file is
    removed and any existing file is left untouched.

    Where Linux allows it, the temporary is an anonymous file (``O_TMPFILE``), given a name
    only for the instant before the rename: a process killed while writing leaves nothing
    behind.  Elsewhere it is named ``.<name>.fastnn-<host>-<pid>-<random>.tmp``; every
    ``atomic_open`` removes those of its folder whose process (on this host) is gone.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file; its directory must exist.  A symbolic link is followed: its target
        is replaced (atomically, by a temporary beside the target) and the link is kept.  An
        existing file keeps its permission bits (not its owner, nor other hard links: the
        name gets a new file).
    mode : {'wb', 'w'}
        Binary, or text in UTF-8.

    Yields
    ------
    file object
        The open temporary file.

    Raises
    ------
    IsADirectoryError
        If the destination is a directory.
    OSError
        If the destination exists and is not a regular file (a FIFO, a device, a socket):
        replacing it would destroy it; ``errno.EINVAL``, the message names the path.

    Examples
    --------
    >>> with atomic_open("weights.bin") as f:  # doctest: +SKIP
    ...     f.write(data)
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open supports mode 'wb' or 'w', not {mode!r}")
    target, existing = _destination(path)
    folder, name = os.path.split(target)
    if not os.path.isdir(folder):
        raise FileNotFoundError(errno.ENOENT, f"cannot write {os.fspath(path)}: its directory "
                                "does not exist", folder)
    _remove_stale_temporaries(folder)
    fd = _open_anonymous(folder)
    tmp = None
    if fd is None:
        fd, tmp = _open_named(folder, name)
    try:
        if existing is not None and hasattr(os, "fchmod"):
            with contextlib.suppress(OSError):
                os.fchmod(fd, stat.S_IMODE(existing.st_mode))
        with os.fdopen(fd, mode, closefd=False,
                       **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(fd)
        if tmp is None:
            tmp = _name_anonymous(fd, folder, name)
        # Closed before the rename, which Windows refuses for an open file.
        os.close(fd)
        fd = None
        os.replace(tmp, target)
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
    finally:
        if fd is not None:
            os.close(fd)
    if os.name == "posix":
        # Makes the rename itself durable; best effort, as some file systems refuse it.
        with contextlib.suppress(OSError):
            dir_fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


# --- reading --------------------------------------------------------------------------------

def _open_regular(path):
    """Open ``path`` for binary reading if it is a regular file, else raise OSError.

    Checked before opening (so a device is never opened) and again on the open descriptor
    (so a file swapped in between is caught); the open itself cannot block, as O_NONBLOCK
    makes opening a FIFO return at once.
    """
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(path, st.st_mode, "refusing to read it")
    nonblock = getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path, os.O_RDONLY | nonblock | getattr(os, "O_BINARY", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(path, st.st_mode, "refusing to read it")
        if nonblock:
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _check_max_bytes(max_bytes):
    if max_bytes is None:
        return MAX_MEMBER_BYTES
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, numbers.Integral) \
            or max_bytes < 0:
        raise ValueError(f"max_bytes must be a non-negative integer, got {max_bytes!r}")
    return int(max_bytes)


def _read_npy_header(member, where):
    """``(shape, fortran_order, dtype, header_bytes)`` of the .npy stream ``member``, read
    with a bounded header length."""
    prefix = member.read(8)
    if len(prefix) < 8 or prefix[:6] != b"\x93NUMPY":
        raise WeightFileError(f"{where}: not a .npy array (bad magic string)")
    major = prefix[6]
    if major not in (1, 2):
        raise WeightFileError(f"{where}: .npy format version {major}.{prefix[7]} is not "
                              "supported (1.0 and 2.0 are)")
    size_field = member.read(2 if major == 1 else 4)
    length = int.from_bytes(size_field, "little")
    if len(size_field) < (2 if major == 1 else 4) or length > _NPY_HEADER_LIMIT:
        raise WeightFileError(f"{where}: .npy header of {length} bytes, more than "
                              f"{_NPY_HEADER_LIMIT}")
    header = member.read(length)
    if len(header) < length:
        raise WeightFileError(f"{where}: truncated .npy header")
    reader = (np.lib.format.read_array_header_1_0 if major == 1
              else np.lib.format.read_array_header_2_0)
    try:
        shape, fortran, dtype = reader(io.BytesIO(size_field + header))
    except ValueError as exc:
        raise WeightFileError(f"{where}: bad .npy header ({exc})") from exc
    return shape, fortran, dtype, 8 + len(size_field) + length


def _check_dtype(dtype, where, kinds):
    if dtype.hasobject or dtype.kind not in kinds or dtype.fields is not None \
            or dtype.subdtype is not None:
        raise WeightFileError(f"{where}: dtype {dtype} is not a numeric array (weight files "
                              "hold bool, integer or float arrays)")


def _read_npy_member(archive, info, where, max_bytes, kinds, expect, archive_size):
    """The array of the .npy member ``info``, its header and sizes checked before the array
    is allocated; ``expect`` (shape, dtype) or None."""
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise WeightFileError(f"{where}: compression method {info.compress_type} is not "
                              "supported (stored and deflated are)")
    if info.header_offset + info.compress_size > archive_size:
        raise WeightFileError(f"{where}: truncated: the member claims {info.compress_size} "
                              f"bytes past offset {info.header_offset} of a "
                              f"{archive_size}-byte file")
    if (info.file_size != info.compress_size if info.compress_type == zipfile.ZIP_STORED
            else info.file_size > _DEFLATE_MAX_RATIO * info.compress_size + 1024):
        raise WeightFileError(f"{where}: {info.compress_size} compressed bytes cannot hold the "
                              f"{info.file_size} bytes the member claims")
    with archive.open(info) as member:
        shape, fortran, dtype, header = _read_npy_header(member, where)
        _check_dtype(dtype, where, kinds)
        if expect is not None and (shape, dtype) != expect:
            raise WeightFileError(f"{where}: {dtype} array of shape {shape}, expected "
                                  f"{expect[1]} of shape {expect[0]}")
        count = math.prod(shape)  # exact: Python integers
        nbytes = count * dtype.itemsize
        if nbytes > max_bytes:
            raise WeightFileError(
                f"{where}: a {dtype} array of shape {shape} is {nbytes} bytes, more than the "
                f"limit of {max_bytes} (load_params(max_bytes=...) or "
                "fastnn.io.MAX_MEMBER_BYTES raise it)")
        if info.file_size != header + nbytes:
            problem = "truncated" if info.file_size < header + nbytes else "trailing bytes"
            raise WeightFileError(f"{where}: {problem}: its header announces {nbytes} bytes "
                                  f"of data, the member holds {info.file_size - header}")
        flat = np.empty(count, dtype)
        view = memoryview(flat.view(np.uint8))
        done = 0
        while done < nbytes:
            chunk = member.read(min(_CHUNK, nbytes - done))
            if not chunk:
                raise WeightFileError(f"{where}: truncated: {done} of {nbytes} bytes")
            view[done:done + len(chunk)] = chunk
            done += len(chunk)
        if member.read(1):  # also makes zipfile check the CRC-32
            raise WeightFileError(f"{where}: trailing bytes after the array")
    if fortran:
        return flat.reshape(shape[::-1]).transpose()
    return flat.reshape(shape)


def _read_npz(f, source, max_bytes=MAX_MEMBER_BYTES, kinds=_PARAM_KINDS, expect=None):
    """``{name: array}`` of the .npz archive open as ``f``, in archive order.

    Every member must be ``<name>.npy`` with a name that ``save_params`` could write (see
    ``_check_names``), hold an array of a dtype kind in ``kinds`` of at most ``max_bytes``
    bytes, and match ``expect[name]`` (shape, dtype) when ``expect`` is given, which must
    then name every member.  Raises WeightFileError naming ``source``.
    """
    archive_size = os.fstat(f.fileno()).st_size
    with zipfile.ZipFile(f) as archive:
        infos = archive.infolist()
        names = []
        for info in infos:
            if info.orig_filename != info.filename or not info.filename.endswith(".npy"):
                raise WeightFileError(f"{source}: member {info.orig_filename!r} is not a "
                                      "'<name>.npy' array")
            names.append(info.filename[:-len(".npy")])
        if len(set(names)) != len(names):
            twice = sorted({name for name in names if names.count(name) > 1})
            raise WeightFileError(f"{source}: members {twice} appear more than once")
        _check_names(names, source, "npz", WeightFileError)
        if expect is not None and set(names) != set(expect):
            raise WeightFileError(f"{source}: members {sorted(names)}, expected "
                                  f"{sorted(expect)}")
        return {name: _read_npy_member(archive, info, f"{source}: member {info.filename!r}",
                                       max_bytes, kinds,
                                       None if expect is None else expect[name], archive_size)
                for name, info in zip(names, infos)}


def _write_npz(f, arrays):
    """What np.savez does, written out because np.savez(f, **arrays) would take a parameter
    named 'allow_pickle' as its own keyword and silently not save it."""
    with zipfile.ZipFile(f, mode="w", compression=zipfile.ZIP_STORED,
                         allowZip64=True) as archive:
        for key, array in arrays.items():
            with archive.open(key + ".npy", mode="w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


# --- checks shared by saving and loading ----------------------------------------------------

def _check_names(names, source, format, error=ValueError):
    """Refuse parameter names that ``format`` cannot store and read back as themselves."""
    names = list(names)
    for key in names:
        if not isinstance(key, str):
            raise error(f"{source}: parameter names must be str, got {key!r}")
    if format != "npz":
        return
    present = set(names)
    for key in names:
        bad = next((c for c in _NPZ_BAD_CHARS if c in key), None)
        if bad is not None:
            raise error(f"{source}: parameter name {key!r} holds {bad!r}, which a .npz member "
                        "name cannot carry (format='pkl' can)")
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            raise error(f"{source}: parameter name {key!r} is not valid Unicode") from None
        if key + ".npy" in present:
            # np.load would read both names from the member '<key>.npy'.
            raise error(f"{source}: parameter names {key!r} and {key + '.npy'!r} collide in a "
                        ".npz archive, which adds '.npy' to each (format='pkl' can hold both)")


def _check_params(params, source, convert, format=None):
    """Return ``params`` as a plain dict of numeric ndarrays, or raise ValueError.

    ``convert`` passes array_likes through ``np.asarray`` (saving); otherwise values must
    already be ndarrays (loading), and byte-swapped ones are converted to native order.
    Only bool, integer and float arrays are parameters: object arrays could only be stored
    as pickles, and strings, complex numbers and dates are no network's weights.
    """
    error = ValueError if convert else WeightFileError
    if not isinstance(params, Mapping):
        raise error(f"{source}: expected a dict of arrays, got {type(params).__name__}")
    _check_names(params.keys(), source, format, error)
    checked = {}
    for key, value in params.items():
        array = np.asarray(value) if convert else value
        if not isinstance(array, np.ndarray) or array.dtype.hasobject \
                or array.dtype.kind not in _PARAM_KINDS or array.dtype.fields is not None:
            raise error(f"{source}: parameter {key!r} is not a numeric array "
                        f"(type {type(value).__name__}, "
                        f"dtype {getattr(value, 'dtype', None)}); weight files hold bool, "
                        "integer or float arrays")
        if not convert and not array.dtype.isnative:
            array = array.astype(array.dtype.newbyteorder("="))
        checked[key] = array
    return checked


def save_params(path, params, format=None):
    """Save a network's parameters to ``path``, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file.  It is written exactly at this path (no suffix is added), through
        :func:`atomic_open`: a symbolic link's target is replaced, a destination that is not
        a regular file (a FIFO, a device, a folder) is refused, and on any failure the
        previous file stays as it was.
    params : dict of str to array_like
        Parameter name -> numeric (bool, integer or float) array, e.g. ``net.params``.
    format : {'npz', 'pkl'}, optional
        ``'npz'``: an uncompressed NumPy archive, one ``<name>.npy`` member per parameter.
        ``'pkl'``: the book's format, ``pickle.dump(params, f)`` with protocol 4.
        By default taken from the suffix of ``path`` (``.npz``, ``.pkl``, ``.pickle``),
        else ``'npz'``.

    Raises
    ------
    ValueError
        If ``format`` is unknown; if ``params`` is not a dict of str to numeric arrays
        (strings, complex, dates and objects are refused); or, for ``'npz'``, if a name holds
        NUL, ``'/'`` or ``'\\'``, or both ``name`` and ``name + '.npy'`` are present (names a
        ``.npz`` archive cannot give back as they were).
    OSError
        If the destination is not a regular file, or cannot be written.
    """
    if format is None:
        format = _FORMATS.get(os.path.splitext(os.fsdecode(os.fspath(path)))[1].lower(), "npz")
    if format not in ("npz", "pkl"):
        raise ValueError(f"format must be 'npz' or 'pkl', not {format!r}")
    arrays = _check_params(params, "params", convert=True, format=format)
    with atomic_open(path) as f:
        if format == "pkl":
            pickle.dump(arrays, f, protocol=_PICKLE_PROTOCOL)
        else:
            _write_npz(f, arrays)


class UnsafePickleError(WeightFileError, pickle.UnpicklingError):
    """A pickle asked for a global that ``load_params`` does not allow; nothing was run.

    Also a ``WeightFileError`` (a ``ValueError``) and a ``pickle.UnpicklingError``."""


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


# What a corrupt or truncated file makes zipfile, zlib, NumPy and the unpickler raise.
_CORRUPT = (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, zlib.error, ValueError,
            TypeError, KeyError, IndexError, AttributeError, struct.error, OverflowError,
            NotImplementedError, RuntimeError)


@contextlib.contextmanager
def _as_weight_file_error(source, kind):
    """Re-raise what a corrupt ``kind`` of file makes the readers raise as a WeightFileError
    naming ``source``."""
    try:
        yield
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{source}: {exc}") from None
    except WeightFileError:
        raise
    except _CORRUPT as exc:
        raise WeightFileError(f"{source}: corrupt or truncated {kind}: "
                              f"{type(exc).__name__}: {exc}") from exc


def _unpickle(f):
    """Unpickle the open file ``f`` with the restricted unpickler.

    The opcodes are first walked over an in-memory copy, which checks that every length the
    stream declares is there: the unpickler itself allocates a declared length before reading
    it, so a 100-byte pickle could otherwise ask for terabytes.
    """
    # read(size), not read(): after the 4-byte sniff and a seek, read() grows its buffer step
    # by step and takes ten times as long.
    data = f.read(os.fstat(f.fileno()).st_size)
    for _ in pickletools.genops(io.BytesIO(data)):
        pass
    # latin1 turns Python 2 byte strings into str, as NumPy's own docs recommend.
    return _SafeUnpickler(io.BytesIO(data), encoding="latin1").load()


def _read_npz_file(path, max_bytes=MAX_MEMBER_BYTES, kinds=_PARAM_KINDS, expect=None):
    """``_read_npz`` of the regular file ``path``, every failure a WeightFileError (or an
    OSError if it cannot be opened)."""
    source = os.fspath(path)
    with _open_regular(path) as f, _as_weight_file_error(source, "zip archive (.npz)"):
        return _read_npz(f, source, max_bytes, kinds, expect)


def load_params(path, max_bytes=None):
    """Load parameters saved by ``save_params`` or by the book (``sample_weight.pkl``).

    The format is recognised from the content, not the name: a zip archive is read as
    ``.npz`` (without pickles); anything else as a pickle, through an unpickler that accepts
    only plain containers and NumPy arrays (pickles written by NumPy 1.x and 2.x, any
    protocol).

    Parameters
    ----------
    path : str or os.PathLike
        File to read; must be a regular file (a FIFO or a device is refused, never read).
    max_bytes : int, optional
        Largest array, in bytes, accepted from a ``.npz`` member; default
        ``fastnn.io.MAX_MEMBER_BYTES`` (256 MiB).  Checked from the member's header before
        the array is allocated.  A pickle is bounded by the file's own size, as its array
        data is inside it.

    Returns
    -------
    dict of str to ndarray
        A new plain dict of writable bool, integer or float arrays, in file order, in native
        byte order (byte-swapped arrays are converted).

    Raises
    ------
    UnsafePickleError
        If the pickle references any other global (``os.system``, ``builtins.eval``, ...);
        it is raised before anything is called.  A subclass of ``WeightFileError`` and of
        ``pickle.UnpicklingError``.
    WeightFileError
        A ``ValueError`` naming the file: if it is corrupt or truncated (a bad zip, a bad
        ``.npy`` header, a pickle cut short), if it does not hold a dict of str to bool,
        integer or float arrays (strings, complex, dates and objects are refused), if an
        ``.npz`` member is larger than ``max_bytes``, or if two members would load under
        the same name.
    OSError
        If the file cannot be opened, or is not a regular file.
    """
    source = os.fspath(path)
    limit = _check_max_bytes(max_bytes)
    with _open_regular(path) as f:
        head = f.read(4)
        f.seek(0)
        with _as_weight_file_error(source, "zip archive (.npz)" if head in _ZIP_MAGICS
                                   else "pickle"):
            if head in _ZIP_MAGICS:
                params = _read_npz(f, source, limit)
            else:
                params = _unpickle(f)
    params = _check_params(params, source, convert=False)
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
    if getattr(network, "precision", None) is not None:  # absent: the dtype's own
        config["precision"] = network.precision
    return config, dict(network.params), {}


def _fill_params(network, arrays, described):
    """Copy a file's ``arrays`` into the freshly built ``network``'s params, each of the shape
    the description (``described``, for the message) gives it."""
    for key, target in network.params.items():
        if key not in arrays or arrays[key].shape != target.shape:
            raise ValueError(f"{key} must have shape {target.shape} for {described}, got "
                             f"{getattr(arrays.get(key), 'shape', None)}")
        np.copyto(target, arrays[key])
    return network


def _dense_build(name):
    def build(config, arrays, dtype):
        from fastnn import nets

        sizes, activation = config["sizes"], config["activation"]
        if name == "TwoLayerNet":
            if len(sizes) != 3 or activation != "relu":
                raise ValueError(f"a TwoLayerNet has sizes [in, hidden, out] and relu, got "
                                 f"{sizes} and {activation!r}")
            network = nets.TwoLayerNet(*sizes, dtype=dtype, rng=0,
                                       exact_loss=config["exact_loss"],
                                       precision=config.get("precision"))
            return _fill_params(network, arrays, f"sizes {sizes}")
        network = nets.MultiLayerNet.from_params(
            arrays, activation=activation, weight_decay_lambda=config["weight_decay_lambda"],
            exact_loss=config["exact_loss"], precision=config.get("precision"))
        if network._sizes != list(sizes):
            raise ValueError(f"the weights give layer sizes {network._sizes}, the description "
                             f"{sizes}")
        return network
    return build


def _convnet_describe(network):
    return dict(network.config), dict(network.params), {}


def _convnet_build(name):
    def build(config, arrays, dtype):
        from fastnn import nets

        config = dict(config)
        config["input_dim"] = tuple(config["input_dim"])
        return _fill_params(getattr(nets, name)(dtype=dtype, **config), arrays,
                            f"a {name} of {config}")
    return build


def _extend_describe(network):
    config, params, _ = _dense_describe(network)
    config.update(use_dropout=network.use_dropout, dropout_ration=network.dropout_ration,
                  use_batchnorm=network.use_batchnorm)
    return config, params, network.running_statistics()


def _extend_build(config, arrays, dtype):
    from fastnn import nets

    sizes = config["sizes"]
    network = nets.MultiLayerNetExtend(
        sizes[0], sizes[1:-1], sizes[-1], activation=config["activation"],
        weight_decay_lambda=config["weight_decay_lambda"], use_dropout=config["use_dropout"],
        dropout_ration=config["dropout_ration"], use_batchnorm=config["use_batchnorm"],
        dtype=dtype, rng=0, exact_loss=config["exact_loss"],
        precision=config.get("precision"))
    for key, target in network.params.items():
        if key not in arrays or np.shape(arrays[key]) != target.shape:
            raise ValueError(f"{key} must have shape {target.shape} for sizes {sizes}, got "
                             f"{getattr(arrays.get(key), 'shape', None)}")
        np.copyto(target, arrays[key])
    network.set_running_statistics({k: a for k, a in arrays.items() if k.startswith("running_")})
    return network


_ARCHITECTURES = {
    "TwoLayerNet": (_dense_describe, _dense_build("TwoLayerNet")),
    "MultiLayerNet": (_dense_describe, _dense_build("MultiLayerNet")),
    "SimpleConvNet": (_convnet_describe, _convnet_build("SimpleConvNet")),
    "DeepConvNet": (_convnet_describe, _convnet_build("DeepConvNet")),
    "MultiLayerNetExtend": (_extend_describe, _extend_build),
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
    # the parameters are of the network's dtype; state (the running statistics of batch
    # normalization) may be float64 in a float32 network, and its builder checks it
    params = [arrays[key] for key in description["params"]]
    if dtype not in ("float32", "float64") or any(a.dtype != dtype for a in params):
        raise ValueError(f"{source}: a {dtype} network with arrays of dtypes "
                         f"{sorted({a.dtype.name for a in params})}")
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
