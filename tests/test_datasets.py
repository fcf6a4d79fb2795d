"""MNIST loading: the book's options, IDX validation, the parsed cache, downloads, digits.

Everything here runs offline: small IDX files are written into tmp_path, and the download
function is replaced by one that serves bytes from memory.
"""
import gzip
import hashlib
import os
import struct
import sys
import tempfile
import types
import urllib.error
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastnn import datasets
from fastnn.datasets import DatasetError, DatasetNotFoundError, load_digits, load_mnist

SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "mnist"
# read before the autouse fixture below removes it from the environment of every test
USER_MNIST = os.environ.get("FASTNN_DATA")
NAMES = {key: spec.name for key, spec in datasets._MNIST_FILES.items()}


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A private user cache, no FASTNN_DATA, and no network."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("FASTNN_DATA", raising=False)

    def no_network(url, timeout, max_bytes):
        raise AssertionError(f"a test tried to download {url}")

    monkeypatch.setattr(datasets, "_fetch", no_network)


def user_cache():
    return Path(os.environ["XDG_CACHE_HOME"]) / "fastnn" / "mnist"


def idx(array, magic=None):
    """IDX bytes of a uint8 array: magic, big-endian dimensions, data."""
    magic = 0x0800 | array.ndim if magic is None else magic
    return (struct.pack(f">I{array.ndim}I", magic, *array.shape)
            + np.ascontiguousarray(array, np.uint8).tobytes())


def make_mnist(n_train=5, n_test=3, seed=0):
    rng = np.random.default_rng(seed)
    return {"train_img": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
            "train_label": rng.integers(0, 10, n_train, dtype=np.uint8),
            "test_img": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
            "test_label": rng.integers(0, 10, n_test, dtype=np.uint8)}


def write_mnist(folder, arrays=None, compress=True):
    """Write the four files into ``folder``; return the arrays and the paths."""
    arrays = make_mnist() if arrays is None else arrays
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, array in arrays.items():
        name = NAMES[key] if compress else NAMES[key].removesuffix(".gz")
        paths[key] = folder / name
        data = idx(array)
        paths[key].write_bytes(gzip.compress(data, mtime=0) if compress else data)
    return arrays, paths


def expected(arrays, normalize, flatten, one_hot_label):
    """What the book's load_mnist returns, computed as the book does."""
    out = []
    for img, label in (("train_img", "train_label"), ("test_img", "test_label")):
        x = arrays[img].reshape(-1, 784)
        if normalize:
            x = x.astype(np.float32)
            x /= 255.0
        t = arrays[label]
        if one_hot_label:
            one_hot = np.zeros((t.size, 10))
            for row, value in zip(one_hot, t):
                row[value] = 1
            t = one_hot
        if not flatten:
            x = x.reshape(-1, 1, 28, 28)
        out.append((x, t))
    return tuple(out)


def assert_same(result, wanted):
    assert isinstance(result, tuple) and len(result) == 2
    for got_pair, want_pair in zip(result, wanted):
        assert isinstance(got_pair, tuple) and len(got_pair) == 2
        for got, want in zip(got_pair, want_pair):
            assert got.dtype == want.dtype
            assert got.shape == want.shape
            np.testing.assert_array_equal(got, want)


# --- the book's options ---------------------------------------------------------------------

@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("flatten", [True, False])
@pytest.mark.parametrize("one_hot_label", [True, False])
def test_options_match_the_book(tmp_path, normalize, flatten, one_hot_label):
    arrays, _ = write_mnist(tmp_path / "data")
    result = load_mnist(normalize, flatten, one_hot_label, data_dir=tmp_path / "data")
    assert_same(result, expected(arrays, normalize, flatten, one_hot_label))
    # Twice: the second call reads the parsed cache and must give the same.
    result = load_mnist(normalize=normalize, flatten=flatten, one_hot_label=one_hot_label,
                        data_dir=str(tmp_path / "data"))
    assert_same(result, expected(arrays, normalize, flatten, one_hot_label))


def test_dtypes_and_shapes(tmp_path):
    write_mnist(tmp_path)
    (x, t), (x_test, t_test) = load_mnist(data_dir=tmp_path)
    assert (x.shape, x.dtype, t.shape, t.dtype) == ((5, 784), np.float32, (5,), np.uint8)
    assert (x_test.shape, t_test.shape) == ((3, 784), (3,))
    assert 0 <= x.min() and x.max() <= 1
    (x, t), _ = load_mnist(normalize=False, flatten=False, one_hot_label=True, data_dir=tmp_path)
    assert (x.shape, x.dtype, t.shape, t.dtype) == ((5, 1, 28, 28), np.uint8, (5, 10),
                                                     np.float64)


def test_arrays_are_new_and_writable(tmp_path):
    arrays, _ = write_mnist(tmp_path)
    for _ in range(2):  # parsed, then cached
        (x, t), (x_test, t_test) = load_mnist(normalize=False, data_dir=tmp_path)
        for array in (x, t, x_test, t_test):
            assert array.flags.writeable
            array[...] = 0
    (x, _), _ = load_mnist(normalize=False, data_dir=tmp_path)
    np.testing.assert_array_equal(x, arrays["train_img"].reshape(-1, 784))


def test_uncompressed_files(tmp_path):
    arrays, _ = write_mnist(tmp_path, compress=False)
    assert_same(load_mnist(data_dir=tmp_path), expected(arrays, True, True, False))


def test_uncompressed_file_named_gz(tmp_path):
    """Browsers sometimes decompress a download but keep the .gz name."""
    arrays, paths = write_mnist(tmp_path)
    paths["train_img"].write_bytes(idx(arrays["train_img"]))
    assert_same(load_mnist(data_dir=tmp_path), expected(arrays, True, True, False))


def test_empty_dataset(tmp_path):
    arrays, _ = write_mnist(tmp_path, make_mnist(n_train=0, n_test=0))
    (x, t), _ = load_mnist(one_hot_label=True, data_dir=tmp_path)
    assert x.shape == (0, 784) and t.shape == (0, 10)


# --- invalid files --------------------------------------------------------------------------

def _rewrite(paths, key, raw):
    paths[key].write_bytes(gzip.compress(raw))


CORRUPTIONS = {
    "truncated data": ("train_img", lambda a: idx(a["train_img"])[:-10], "truncated"),
    "trailing bytes": ("test_img", lambda a: idx(a["test_img"]) + b"\0", "trailing bytes"),
    "truncated header": ("train_img", lambda a: idx(a["train_img"])[:10], "truncated"),
    "empty": ("train_label", lambda a: b"", "truncated"),
    "labels magic in image file": (
        "train_img", lambda a: idx(a["train_img"], magic=0x0801), "bad magic number 0x00000801"),
    "int32 data": ("train_label", lambda a: idx(a["train_label"], magic=0x0C01), "bad magic"),
    "not IDX": ("test_label", lambda a: b"<html>404 Not Found</html>", "bad magic"),
    "27x28 images": ("test_img", lambda a: idx(a["test_img"][:, 1:, :]), "27x28"),
    "header count too large": (
        "train_label",
        lambda a: struct.pack(">II", 0x0801, 6) + a["train_label"].tobytes(), "truncated"),
    "fewer labels than images": ("train_label", lambda a: idx(a["train_label"][:4]),
                                 "5 images but .* 4 labels"),
    "label 10": ("test_label", lambda a: idx(np.array([1, 10, 2], np.uint8)),
                 "label 10 at index 1"),
}


@pytest.mark.parametrize("case", CORRUPTIONS)
def test_invalid_idx_is_reported(tmp_path, case):
    key, corrupt, message = CORRUPTIONS[case]
    arrays, paths = write_mnist(tmp_path)
    _rewrite(paths, key, corrupt(arrays))
    with pytest.raises(DatasetError, match=message) as info:
        load_mnist(data_dir=tmp_path, download=False)
    assert str(paths[key]) in str(info.value)
    assert not isinstance(info.value, FileNotFoundError)


@pytest.mark.parametrize("case, message", [
    ("cut", "truncated gzip"),
    ("garbage", "corrupt gzip"),
    ("crc", "corrupt gzip"),
])
def test_bad_gzip_is_reported(tmp_path, case, message):
    _, paths = write_mnist(tmp_path)
    path = paths["test_img"]
    data = bytearray(path.read_bytes())
    if case == "cut":
        data = data[: len(data) // 2]
    elif case == "garbage":
        data[10:] = b"\xff" * (len(data) - 10)
    else:
        data[-8] ^= 0xFF  # the stored CRC-32 of the content
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=message) as info:
        load_mnist(data_dir=tmp_path)
    assert str(path) in str(info.value)


# The autouse fixture's state (a private cache, no network) is meant to be shared by examples.
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), key=st.sampled_from(sorted(NAMES)))
def test_damaged_file_raises_dataset_error_or_loads_intact(data, key):
    """Cutting or flipping bytes anywhere in a .gz either raises DatasetError or, where the
    damage hits an unchecked gzip header field, yields the original arrays: never another
    exception, never garbage."""
    with tempfile.TemporaryDirectory() as folder:  # a new folder: no parsed cache to hit
        arrays, paths = write_mnist(folder)
        raw = bytearray(paths[key].read_bytes())
        if data.draw(st.booleans(), label="cut"):
            raw = raw[: data.draw(st.integers(0, len(raw) - 1), label="length")]
        else:
            position = data.draw(st.integers(0, len(raw) - 1), label="position")
            raw[position] ^= data.draw(st.integers(1, 255), label="xor")
        paths[key].write_bytes(bytes(raw))
        try:
            result = load_mnist(normalize=False, data_dir=folder, download=False)
        except DatasetError as exc:
            assert str(paths[key]) in str(exc)
        else:
            assert_same(result, expected(arrays, False, True, False))


# --- where the files are looked for ---------------------------------------------------------

def test_missing_files_without_download(tmp_path):
    write_mnist(tmp_path / "data")
    os.remove(tmp_path / "data" / NAMES["test_label"])
    with pytest.raises(DatasetNotFoundError) as info:
        load_mnist(data_dir=tmp_path / "data", download=False)
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, DatasetError)
    assert str(tmp_path / "data") in message
    assert str(user_cache()) in message
    for hint in ("data_dir=", "FASTNN_DATA", "download=True", NAMES["test_label"]):
        assert hint in message


def test_fastnn_data_is_the_default_folder(tmp_path, monkeypatch):
    arrays, _ = write_mnist(tmp_path / "env")
    monkeypatch.setenv("FASTNN_DATA", str(tmp_path / "env"))
    assert_same(load_mnist(download=False), expected(arrays, True, True, False))
    # data_dir wins over FASTNN_DATA.
    other, _ = write_mnist(tmp_path / "arg", make_mnist(seed=1))
    assert_same(load_mnist(data_dir=tmp_path / "arg"), expected(other, True, True, False))


def test_user_cache_is_searched_last(tmp_path, monkeypatch):
    arrays, _ = write_mnist(user_cache())
    assert_same(load_mnist(download=False), expected(arrays, True, True, False))
    monkeypatch.setenv("FASTNN_DATA", str(tmp_path / "empty"))
    assert_same(load_mnist(download=False), expected(arrays, True, True, False))
    write_mnist(tmp_path / "incomplete", make_mnist(seed=1))
    os.remove(tmp_path / "incomplete" / NAMES["train_img"])
    assert_same(load_mnist(data_dir=tmp_path / "incomplete", download=False),
                expected(arrays, True, True, False))


# --- the parsed cache -----------------------------------------------------------------------

def test_second_load_uses_the_cache(tmp_path, monkeypatch):
    arrays, _ = write_mnist(tmp_path / "data")
    first = load_mnist(data_dir=tmp_path / "data")
    cached = list(user_cache().glob("parsed-*.npz"))
    assert len(cached) == 1
    assert sorted(os.listdir(tmp_path / "data")) == sorted(NAMES.values())  # nothing added

    def no_parsing(paths):
        raise AssertionError("parsed again instead of reading the cache")

    monkeypatch.setattr(datasets, "_parse_all", no_parsing)
    assert_same(load_mnist(data_dir=tmp_path / "data"), first)
    with np.load(cached[0], allow_pickle=False) as npz:
        assert set(npz.files) == {"key", *NAMES}


@pytest.mark.parametrize("change", ["content, same size", "size", "replaced"])
def test_changed_file_invalidates_the_cache(tmp_path, change):
    arrays, paths = write_mnist(tmp_path)
    load_mnist(data_dir=tmp_path)
    path = paths["train_label"]
    stat = path.stat()
    if change == "size":
        arrays = {**arrays, "train_img": arrays["train_img"][:4],
                  "train_label": arrays["train_label"][:4]}
        write_mnist(tmp_path, arrays)
    else:
        arrays["train_label"] = (arrays["train_label"] + 1) % 10
        new = gzip.compress(idx(arrays["train_label"]), mtime=0)
        assert len(new) == stat.st_size
        if change == "replaced":  # a new inode with the old mtime
            os.replace(_sibling_with(path, new), path)
        else:  # the same inode, another mtime
            path.write_bytes(new)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + (change != "replaced") * 10**9))
    assert_same(load_mnist(data_dir=tmp_path), expected(arrays, True, True, False))


def _sibling_with(path, data):
    sibling = path.with_name(path.name + ".new")
    sibling.write_bytes(data)
    return sibling


def test_damaged_cache_is_ignored(tmp_path):
    arrays, _ = write_mnist(tmp_path / "data")
    load_mnist(data_dir=tmp_path / "data")
    (cache,) = user_cache().glob("parsed-*.npz")
    cache.write_bytes(cache.read_bytes()[:100])
    assert_same(load_mnist(data_dir=tmp_path / "data"), expected(arrays, True, True, False))


def test_unwritable_cache_is_skipped(tmp_path, monkeypatch):
    """A file where the cache folder should be cannot be written into, even by root."""
    arrays, _ = write_mnist(tmp_path / "data")
    (tmp_path / "not-a-folder").write_bytes(b"")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "not-a-folder"))
    for _ in range(2):
        assert_same(load_mnist(data_dir=tmp_path / "data"), expected(arrays, True, True, False))
    assert sorted(os.listdir(tmp_path / "data")) == sorted(NAMES.values())


# --- downloads ------------------------------------------------------------------------------

@pytest.fixture
def mirrors(monkeypatch):
    """Serve small MNIST files from memory under the real mirror URLs, with the checksums
    swapped for theirs.  Returns (arrays, {url: bytes or exception}, list of fetched URLs)."""
    arrays = make_mnist(seed=3)
    served, fetched = {}, []
    specs = {}
    for key, spec in datasets._MNIST_FILES.items():
        blob = gzip.compress(idx(arrays[key]), mtime=0)
        specs[key] = spec._replace(sha256=hashlib.sha256(blob).hexdigest())
        for mirror in datasets.MNIST_MIRRORS:
            served[mirror + spec.name] = blob
    monkeypatch.setattr(datasets, "_MNIST_FILES", specs)

    def fetch(url, timeout, max_bytes):
        assert timeout > 0
        fetched.append(url)
        answer = served[url]
        if isinstance(answer, Exception):
            raise answer
        assert len(answer) <= max_bytes  # the small files are within the published sizes
        return answer

    monkeypatch.setattr(datasets, "_fetch", fetch)
    return arrays, served, fetched


def test_download_into_data_dir(tmp_path, mirrors, monkeypatch):
    arrays, served, fetched = mirrors
    writes = []
    atomic_open = datasets.atomic_open

    def spy(path, *args):
        writes.append(Path(path))
        return atomic_open(path, *args)

    monkeypatch.setattr(datasets, "atomic_open", spy)
    assert_same(load_mnist(data_dir=tmp_path / "new" / "folder"),
                expected(arrays, True, True, False))
    folder = tmp_path / "new" / "folder"
    assert sorted(os.listdir(folder)) == sorted(NAMES.values())
    assert set(writes) >= {folder / name for name in NAMES.values()}
    for name in NAMES.values():
        assert (folder / name).read_bytes() == served[datasets.MNIST_MIRRORS[0] + name]
    assert fetched == [datasets.MNIST_MIRRORS[0] + name for name in NAMES.values()]


def test_download_defaults_to_the_user_cache(mirrors):
    arrays, _, _ = mirrors
    assert_same(load_mnist(), expected(arrays, True, True, False))
    assert set(NAMES.values()) <= set(os.listdir(user_cache()))


def test_download_only_missing_files(tmp_path, mirrors):
    arrays, _, fetched = mirrors
    write_mnist(tmp_path, arrays)
    os.remove(tmp_path / NAMES["test_img"])
    assert_same(load_mnist(data_dir=tmp_path), expected(arrays, True, True, False))
    assert fetched == [datasets.MNIST_MIRRORS[0] + NAMES["test_img"]]


@pytest.mark.parametrize("failure", [
    b"tampered",
    urllib.error.URLError("no route to host"),
    TimeoutError("timed out"),
])
def test_failing_mirror_is_skipped(tmp_path, mirrors, failure):
    arrays, served, fetched = mirrors
    first, second = datasets.MNIST_MIRRORS[:2]
    served[first + NAMES["train_img"]] = failure
    assert_same(load_mnist(data_dir=tmp_path), expected(arrays, True, True, False))
    assert fetched[:2] == [first + NAMES["train_img"], second + NAMES["train_img"]]
    assert (tmp_path / NAMES["train_img"]).read_bytes() == served[second + NAMES["train_img"]]
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_all_mirrors_failing(tmp_path, mirrors):
    _, served, _ = mirrors
    bad = {}
    for i, mirror in enumerate(datasets.MNIST_MIRRORS):
        bad[mirror] = b"wrong bytes" if i % 2 else urllib.error.URLError("offline")
        served[mirror + NAMES["train_label"]] = bad[mirror]
    with pytest.raises(DatasetNotFoundError) as info:
        load_mnist(data_dir=tmp_path)
    message = str(info.value)
    for mirror in datasets.MNIST_MIRRORS:
        assert mirror + NAMES["train_label"] in message
    assert "offline" in message and "SHA-256" in message
    assert str(tmp_path) in message and "FASTNN_DATA" in message
    assert NAMES["train_label"] not in os.listdir(tmp_path)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_local_files_are_not_checksummed(tmp_path, mirrors):
    """Valid local files load whatever their .gz checksum (the shared train-images file was
    recompressed); only downloads are checked."""
    arrays, _, fetched = mirrors
    arrays, paths = write_mnist(tmp_path, arrays)
    paths["train_img"].write_bytes(gzip.compress(idx(arrays["train_img"]), compresslevel=1))
    assert_same(load_mnist(data_dir=tmp_path), expected(arrays, True, True, False))
    assert fetched == []


# --- the real MNIST -------------------------------------------------------------------------

def test_real_mnist():
    folder = Path(USER_MNIST or SHARED_MNIST)
    if not all((folder / name).is_file() for name in NAMES.values()):
        pytest.skip(f"MNIST is not in {folder} (set FASTNN_DATA or provide "
                    "../shared/datasets/mnist/)")
    (x, t), (x_test, t_test) = load_mnist(data_dir=folder, download=False)
    assert (x.shape, x.dtype, x_test.shape) == ((60000, 784), np.float32, (10000, 784))
    assert (t.shape, t.dtype, t_test.shape) == ((60000,), np.uint8, (10000,))
    assert x.min() == 0.0 and x.max() == 1.0
    assert set(np.unique(t)) == set(np.unique(t_test)) == set(range(10))
    assert t[:5].tolist() == [5, 0, 4, 1, 9] and t_test[:5].tolist() == [7, 2, 1, 0, 4]
    (x, t), (x_test, t_test) = load_mnist(normalize=False, flatten=False, one_hot_label=True,
                                          data_dir=folder, download=False)
    assert (x.shape, x.dtype, x.max()) == ((60000, 1, 28, 28), np.uint8, 255)
    assert t.shape == (60000, 10) and t_test.shape == (10000, 10)
    assert (t.sum(axis=1) == 1).all() and (t_test.sum(axis=1) == 1).all()
    assert list(user_cache().glob("parsed-*.npz"))  # read-only data, so cached in the user cache


# --- load_digits ----------------------------------------------------------------------------

@pytest.fixture
def fake_sklearn(monkeypatch):
    """A stand-in for sklearn.datasets with 10 digit images whose pixels are their index."""
    images = np.stack([np.full((8, 8), i % 17, dtype=np.float64) for i in range(10)])
    target = np.arange(10) % 10
    module = types.ModuleType("sklearn.datasets")
    module.load_digits = lambda: types.SimpleNamespace(images=images, target=target,
                                                       data=images.reshape(10, 64))
    package = types.ModuleType("sklearn")
    package.datasets = module
    monkeypatch.setitem(sys.modules, "sklearn", package)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", module)
    return images, target


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("flatten", [True, False])
@pytest.mark.parametrize("one_hot_label", [True, False])
def test_digits_options(fake_sklearn, normalize, flatten, one_hot_label):
    images, target = fake_sklearn
    (x, t), (x_test, t_test) = load_digits(normalize, flatten, one_hot_label)
    assert len(x) == 8 and len(x_test) == 2  # the last N // 5 are the test set
    assert x.dtype == (np.float32 if normalize else np.uint8)
    assert x.shape[1:] == ((64,) if flatten else (1, 8, 8))
    scale = 16.0 if normalize else 1.0
    np.testing.assert_array_equal(x_test.reshape(2, 64), images[8:].reshape(2, 64) / scale)
    if one_hot_label:
        assert t.dtype == np.float64 and t.shape == (8, 10)
        np.testing.assert_array_equal(t.argmax(axis=1), target[:8])
    else:
        assert t.dtype == np.uint8
        np.testing.assert_array_equal(t_test, target[8:])


def test_digits_without_sklearn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r"pip install fastnn\[digits\]"):
        load_digits()


def test_real_digits():
    pytest.importorskip("sklearn", reason="scikit-learn is not installed")
    (x, t), (x_test, t_test) = load_digits()
    assert x.shape == (1438, 64) and x_test.shape == (359, 64)
    assert x.dtype == np.float32 and 0 <= x.min() and x.max() == 1
    assert set(np.unique(t)) == set(range(10))
