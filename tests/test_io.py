"""Weight files (``save_params``/``load_params``), the restricted unpickler, ``atomic_open``."""
import collections
import os
import pickle
import pickletools
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fastnn.io import UnsafePickleError, atomic_open, load_params, save_params

BOOK_WEIGHTS = (Path(__file__).resolve().parents[1].parent
                / "shared" / "datasets" / "book" / "sample_weight.pkl")


def _params():
    rng = np.random.default_rng(0)
    return {
        "W1": rng.standard_normal((4, 3)).astype(np.float32),
        "b1": np.zeros(3, np.float32),
        "W2": np.asfortranarray(rng.standard_normal((3, 2))),
        "steps": np.arange(5, dtype=np.int64)[::2],  # not contiguous
        "mask": np.array([True, False]),
        "empty": np.zeros((0, 3), np.float16),
        "scale": np.array(2.5),  # 0-d
        # np.savez(f, **params) would take these two as its own arguments.
        "allow_pickle": np.ones(2),
        "file": np.full(2, 7.0),
    }


def _assert_same(loaded, expected):
    assert type(loaded) is dict
    assert list(loaded) == list(expected)
    for key, value in expected.items():
        assert loaded[key].dtype == value.dtype, key
        np.testing.assert_array_equal(loaded[key], value, err_msg=key)
        assert loaded[key].flags.writeable, key


def _no_temp_files(folder):
    return [p.name for p in Path(folder).iterdir() if p.name.endswith(".tmp")] == []


# --- save_params / load_params --------------------------------------------------------------

@pytest.mark.parametrize("name, format, kind", [
    ("w.npz", None, "npz"),
    ("w.pkl", None, "pkl"),
    ("w.pickle", None, "pkl"),
    ("w.PKL", None, "pkl"),
    ("weights", None, "npz"),  # no suffix: npz, and no '.npz' appended
    ("w.bin", "pkl", "pkl"),
    ("w.pkl", "npz", "npz"),  # an explicit format wins over the suffix
])
def test_round_trip(tmp_path, name, format, kind):
    path = tmp_path / name
    save_params(path, _params(), format=format)
    assert sorted(os.listdir(tmp_path)) == [name]
    assert (path.read_bytes()[:4] == b"PK\x03\x04") == (kind == "npz")
    _assert_same(load_params(path), _params())
    _assert_same(load_params(str(path)), _params())


def test_pickle_is_the_books_format(tmp_path):
    """A plain pickle.load gives back the dict, as the book's code expects."""
    save_params(tmp_path / "w.pkl", _params())
    with open(tmp_path / "w.pkl", "rb") as f:
        raw = pickle.load(f)
    _assert_same(raw, _params())
    assert (tmp_path / "w.pkl").read_bytes()[:2] == b"\x80\x04"  # protocol 4


def test_npz_is_readable_by_numpy(tmp_path):
    save_params(tmp_path / "w.npz", _params())
    with np.load(tmp_path / "w.npz", allow_pickle=False) as npz:
        _assert_same({key: npz[key] for key in npz.files}, _params())


def test_array_likes_are_saved_as_arrays(tmp_path):
    save_params(tmp_path / "w.npz", {"W": [[1.0, 2.0]], "b": 3})
    loaded = load_params(tmp_path / "w.npz")
    np.testing.assert_array_equal(loaded["W"], [[1.0, 2.0]])
    assert loaded["b"].shape == ()


def test_loaded_arrays_are_independent_of_the_file(tmp_path):
    for name in ("w.npz", "w.pkl"):
        save_params(tmp_path / name, _params())
        first = load_params(tmp_path / name)
        first["W1"][...] = 0
        assert not np.array_equal(load_params(tmp_path / name)["W1"], first["W1"])


def test_ordered_dict_loads_as_plain_dict(tmp_path):
    path = tmp_path / "w.pkl"
    path.write_bytes(pickle.dumps(collections.OrderedDict(_params()), protocol=4))
    _assert_same(load_params(path), _params())


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_every_pickle_protocol_loads(tmp_path, protocol):
    """Protocols 0-2 spell bytes as _codecs.encode(..., 'latin1'), protocol 5 uses
    numpy._core.numeric._frombuffer; all must load."""
    path = tmp_path / "w.pkl"
    path.write_bytes(pickle.dumps(_params(), protocol=protocol))
    _assert_same(load_params(path), _params())


def _globals_of(data):
    """The (module, name) pairs a pickle refers to, for checking hand-made pickles."""
    found, strings = [], []
    for opcode, arg, _ in pickletools.genops(data):
        if opcode.name == "GLOBAL":
            found.append(tuple(arg.split(" ")))
        elif "UNICODE" in opcode.name:
            strings.append(arg)
        elif opcode.name == "STACK_GLOBAL":
            found.append(tuple(strings[-2:]))
    return found


def _numpy1_pickle(params, protocol):
    """A pickle of ``params`` as NumPy 1.x writes it: arrays rebuilt by
    numpy.core.multiarray._reconstruct rather than numpy._core.multiarray._reconstruct."""
    data = pickle.dumps(params, protocol=protocol)
    if protocol == 2:
        # GLOBAL names its module as newline-terminated text.
        old, new = b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"
    else:
        # SHORT_BINUNICODE carries its length in a byte; the FRAME opcode that would announce
        # the old length is optional, so drop it rather than recompute it.
        frames = [pos for op, _, pos in pickletools.genops(data) if op.name == "FRAME"]
        assert frames == [2], "expected one frame right after PROTO"
        data = data[:2] + data[11:]
        old, new = b"\x8c\x16numpy._core.multiarray", b"\x8c\x15numpy.core.multiarray"
    assert old in data
    return data.replace(old, new)


@pytest.mark.parametrize("protocol", [2, 4])
def test_numpy1_pickles_load(tmp_path, protocol):
    data = _numpy1_pickle(_params(), protocol)
    assert ("numpy.core.multiarray", "_reconstruct") in _globals_of(data)
    assert not any(module.startswith("numpy._core") for module, _ in _globals_of(data))
    with warnings.catch_warnings():
        # numpy.core is NumPy 2's deprecated alias; it proves the hand-made stream is valid.
        warnings.simplefilter("ignore", DeprecationWarning)
        _assert_same(pickle.loads(data), _params())
    path = tmp_path / "w.pkl"
    path.write_bytes(data)
    _assert_same(load_params(path), _params())


def test_book_sample_weights_load():
    if not BOOK_WEIGHTS.is_file():
        pytest.skip(f"the book's weights are not at {BOOK_WEIGHTS} (../shared/datasets/book/)")
    params = load_params(BOOK_WEIGHTS)
    shapes = {"W1": (784, 50), "b1": (50,), "W2": (50, 100), "b2": (100,),
              "W3": (100, 10), "b3": (10,)}
    assert {key: value.shape for key, value in params.items()} == shapes
    assert all(value.dtype == np.float32 for value in params.values())
    # Written by NumPy 1.x: the file refers to numpy.core, which NumPy 2 renamed.
    assert ("numpy.core.multiarray", "_reconstruct") in _globals_of(BOOK_WEIGHTS.read_bytes())


NUMERIC_DTYPES = st.one_of(hnp.boolean_dtypes(), hnp.integer_dtypes(endianness="?"),
                           hnp.unsigned_integer_dtypes(endianness="?"),
                           hnp.floating_dtypes(endianness="?"))


@settings(max_examples=40, deadline=None)
@given(arrays=st.dictionaries(
    st.text(st.characters(codec="utf-8", exclude_characters="/\\\x00"), min_size=1,
            max_size=8),
    hnp.arrays(NUMERIC_DTYPES,
               hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)),
    max_size=4).filter(lambda d: not any(key + ".npy" in d for key in d)),
    format=st.sampled_from(["npz", "pkl"]))
def test_round_trip_any_numeric_arrays(tmp_path_factory, arrays, format):
    path = tmp_path_factory.mktemp("rt") / "w"
    save_params(path, arrays, format=format)
    loaded = load_params(path)
    assert list(loaded) == list(arrays)
    for key, value in arrays.items():
        # Byte-swapped arrays come back in native order, values unchanged.
        assert loaded[key].dtype == value.dtype.newbyteorder("=")
        assert loaded[key].dtype.isnative
        np.testing.assert_array_equal(loaded[key], value)


@pytest.mark.parametrize("params, message", [
    ([np.ones(2)], "expected a dict"),
    ({1: np.ones(2)}, "names must be str"),
    ({"W": np.array([None, 1], dtype=object)}, "not a numeric array"),
])
def test_save_rejects_non_params(tmp_path, params, message):
    with pytest.raises(ValueError, match=message):
        save_params(tmp_path / "w.npz", params)
    assert list(tmp_path.iterdir()) == []


def test_save_rejects_unknown_format(tmp_path):
    with pytest.raises(ValueError, match="'npz' or 'pkl'"):
        save_params(tmp_path / "w", _params(), format="h5")


@pytest.mark.parametrize("content, message", [
    ([np.ones(2)], "expected a dict"),
    ((np.ones(2),), "expected a dict"),
    ({"W": [1.0, 2.0]}, "not a numeric array"),
    ({"W": np.float32(1.0)}, "not a numeric array"),  # a NumPy scalar, not an array
    ({"W": np.array(["a", 1], dtype=object)}, "not a numeric array"),
    ({3: np.ones(2)}, "names must be str"),
])
def test_load_rejects_other_structures(tmp_path, content, message):
    path = tmp_path / "w.pkl"
    path.write_bytes(pickle.dumps(content, protocol=4))
    with pytest.raises(ValueError, match=message) as info:
        load_params(path)
    assert str(path) in str(info.value)


def test_load_rejects_object_arrays_in_npz(tmp_path):
    path = tmp_path / "w.npz"
    np.savez(path, W=np.array([None], dtype=object))
    with pytest.raises(ValueError):
        load_params(path)


# --- the restricted unpickler ---------------------------------------------------------------

class _RunsCommand:
    """Pickles as a call of os.system, the classic pickle exploit."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class _StartsProcess:
    def __init__(self, argv):
        self.argv = argv

    def __reduce__(self):
        return subprocess.Popen, (self.argv,)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("nested", [False, True])
def test_malicious_pickle_is_refused_and_not_run(tmp_path, protocol, nested):
    victim = tmp_path / "pwned"
    payload = _RunsCommand(f"touch {victim}")
    content = {"W1": np.ones(3), "evil": payload} if nested else payload
    path = tmp_path / "w.pkl"
    path.write_bytes(pickle.dumps(content, protocol=protocol))
    with pytest.raises(UnsafePickleError, match=r"system") as info:
        load_params(path)
    assert isinstance(info.value, pickle.UnpicklingError)
    assert not victim.exists()


def test_popen_payload_is_refused(tmp_path):
    victim = tmp_path / "pwned"
    path = tmp_path / "w.pkl"
    path.write_bytes(pickle.dumps({"W": _StartsProcess(["touch", str(victim)])}))
    with pytest.raises(UnsafePickleError, match="subprocess.Popen"):
        load_params(path)
    assert not victim.exists()


@pytest.mark.parametrize("module, name", [
    ("builtins", "eval"),
    ("builtins", "exec"),
    ("builtins", "getattr"),
    ("__builtin__", "eval"),
    ("os", "system"),
    ("posix", "system"),
    ("subprocess", "Popen"),
    ("numpy", "load"),  # a NumPy function, but not one that rebuilds arrays
    ("numpy.core.multiarray", "frombuffer"),
    ("numpy.testing._private.utils", "runstring"),  # runs a string as code
    ("numpy.corex", "ndarray"),  # only the exact package numpy.core is mapped
    ("collections", "namedtuple"),
])
def test_refused_globals(tmp_path, module, name):
    path = tmp_path / "w.pkl"
    # Protocol 0 by hand: GLOBAL module name, then a call with one string argument.
    path.write_bytes(f"c{module}\n{name}\n(S'print(1)'\ntR.".encode())
    with pytest.raises(UnsafePickleError, match=f"{module}.{name}"):
        load_params(path)


def test_codecs_encode_only_latin1(tmp_path):
    path = tmp_path / "w.pkl"
    path.write_bytes(b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13"
                     b"\x86R.")
    with pytest.raises(UnsafePickleError, match="rot13"):
        load_params(path)


# --- atomic_open ----------------------------------------------------------------------------

def test_atomic_open_writes(tmp_path):
    path = tmp_path / "f.bin"
    with atomic_open(path) as f:
        f.write(b"new")
    assert path.read_bytes() == b"new"
    with atomic_open(str(path), "w") as f:
        f.write("text é")
    assert path.read_text(encoding="utf-8") == "text é"
    assert os.listdir(tmp_path) == ["f.bin"]


@pytest.mark.parametrize("existing", [True, False])
def test_interrupted_write_leaves_old_file(tmp_path, existing):
    path = tmp_path / "f.bin"
    if existing:
        path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="midway"):
        with atomic_open(path) as f:
            f.write(b"half of the new")
            raise RuntimeError("midway")
    assert os.listdir(tmp_path) == (["f.bin"] if existing else [])
    if existing:
        assert path.read_bytes() == b"old"


def test_interrupted_save_params_leaves_old_file(tmp_path, monkeypatch):
    path = tmp_path / "w.npz"
    save_params(path, {"W": np.zeros(3)})
    write_array = np.lib.format.write_array
    calls = []

    def fail_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return write_array(*args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", fail_on_second)
    with pytest.raises(OSError, match="disk full"):
        save_params(path, {"W": np.ones(3), "b": np.ones(2)})
    monkeypatch.undo()
    _assert_same(load_params(path), {"W": np.zeros(3)})
    assert _no_temp_files(tmp_path)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_atomic_open_follows_umask(tmp_path):
    old = os.umask(0o027)
    try:
        with atomic_open(tmp_path / "f.bin") as f:
            f.write(b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "f.bin").stat().st_mode & 0o777 == 0o640


def test_atomic_open_rejects_other_modes(tmp_path):
    with pytest.raises(ValueError, match="'wb' or 'w'"):
        with atomic_open(tmp_path / "f", "ab"):
            pass
    assert list(tmp_path.iterdir()) == []
