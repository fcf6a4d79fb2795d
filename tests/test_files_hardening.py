"""Issue 13, the file and data side: hostile destinations and files, bounded reads, bounded
downloads, a re-checked parse cache, kill -9 during saves, the errors load_params raises.

Each case that could hang or crash runs in a child process with a time limit.  Nothing here
touches the network: the download tests talk to an HTTP server on 127.0.0.1 in this process.
"""
import gzip
import http.server
import os
import pickle
import signal
import stat
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from fastnn import datasets, io as fio
from fastnn.datasets import DatasetError, DatasetNotFoundError, load_mnist
from fastnn.io import UnsafePickleError, WeightFileError, atomic_open, load_params, save_params

ROOT = Path(__file__).resolve().parents[1]
posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX files, signals and FIFOs")


def run_child(code, timeout=60, env=None, check=True):
    """Run ``code`` in a fresh interpreter with a time limit; return the CompletedProcess."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                            capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, **(env or {})})
    if check:
        assert result.returncode == 0, result.stderr
    return result


def temporaries(folder):
    return sorted(p.name for p in Path(folder).iterdir() if p.name.endswith(".tmp"))


def make_device(path, zero=False):
    """A character device node like /dev/null (or /dev/zero) at ``path``, or skip."""
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 5 if zero else 3))
    except (PermissionError, AttributeError, OSError) as exc:
        pytest.skip(f"cannot create a device node here: {exc}")


def anonymous_temporaries_work(folder):
    fd = fio._open_anonymous(str(folder))
    if fd is None:
        return False
    try:
        probe = os.path.join(folder, ".probe")
        ok = fio._link_anonymous(fd, probe)
        if ok:
            os.unlink(probe)
        return ok
    finally:
        os.close(fd)


# --- case 3: what saving does to the destination --------------------------------------------

@posix_only
@pytest.mark.parametrize("relative", [False, True])
def test_save_writes_through_a_symlink_to_its_target(tmp_path, relative):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "w.npz"
    save_params(target, {"W": np.zeros(3)})
    link = tmp_path / "link.npz"
    link.symlink_to(os.path.relpath(target, tmp_path) if relative else target)
    save_params(link, {"W": np.ones(3)})
    assert link.is_symlink() and os.readlink(link) == str(
        os.path.relpath(target, tmp_path) if relative else target)
    np.testing.assert_array_equal(load_params(target)["W"], np.ones(3))
    assert sorted(os.listdir(tmp_path)) == ["link.npz", "real"]
    assert os.listdir(tmp_path / "real") == ["w.npz"]


@posix_only
def test_symlink_chain_and_dangling_link(tmp_path):
    """A chain of links ends at one file; a dangling link creates its target."""
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "sub" / "c")
    (tmp_path / "sub").mkdir()
    save_params(tmp_path / "a", {"W": np.arange(3.0)})
    assert (tmp_path / "a").is_symlink() and (tmp_path / "b").is_symlink()
    assert (tmp_path / "sub" / "c").is_file() and not (tmp_path / "sub" / "c").is_symlink()
    np.testing.assert_array_equal(load_params(tmp_path / "a")["W"], np.arange(3.0))
    assert temporaries(tmp_path) == temporaries(tmp_path / "sub") == []


@posix_only
def test_temporary_is_created_beside_the_target(tmp_path, monkeypatch):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real" / "f.bin")
    renames = []
    replace = os.replace

    def spy(src, dst):
        renames.append((os.path.dirname(src), dst))
        return replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    with atomic_open(tmp_path / "link") as f:
        f.write(b"data")
    assert renames == [(str(tmp_path / "real"), str(tmp_path / "real" / "f.bin"))]
    assert (tmp_path / "real" / "f.bin").read_bytes() == b"data"


@posix_only
@pytest.mark.parametrize("through_link", [False, True])
def test_fifo_destination_is_refused_and_kept(tmp_path, through_link):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    dest = fifo
    if through_link:
        dest = tmp_path / "link"
        dest.symlink_to(fifo)
    result = run_child(f"""
        import numpy as np
        from fastnn.io import save_params
        try:
            save_params({str(dest)!r}, {{"W": np.ones(3)}})
        except OSError as exc:
            print(type(exc).__name__, exc)
        """, timeout=60)
    assert "FIFO" in result.stdout and str(dest) in result.stdout, result.stdout
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert temporaries(tmp_path) == []


@posix_only
def test_device_destination_is_refused_and_kept(tmp_path):
    """As root, ``--save /dev/null`` used to turn the device into a regular file; here on a
    device node of our own, so that a failure cannot harm the real one."""
    node = tmp_path / "null"
    make_device(node)
    with pytest.raises(OSError, match="character device") as info:
        save_params(node, {"W": np.ones(3)})
    assert str(node) in str(info.value)
    assert stat.S_ISCHR(os.lstat(node).st_mode)
    link = tmp_path / "link"
    link.symlink_to(node)
    with pytest.raises(OSError, match="character device"):
        save_params(link, {"W": np.ones(3)})
    assert stat.S_ISCHR(os.lstat(node).st_mode) and link.is_symlink()
    assert temporaries(tmp_path) == []


def test_directory_destination_is_refused_and_kept(tmp_path):
    folder = tmp_path / "w.npz"
    folder.mkdir()
    (folder / "inside").write_bytes(b"keep")
    with pytest.raises(IsADirectoryError) as info:
        save_params(folder, {"W": np.ones(3)})
    assert str(folder) in str(info.value)
    assert (folder / "inside").read_bytes() == b"keep"
    with pytest.raises(IsADirectoryError):
        with atomic_open(tmp_path) as f:
            f.write(b"x")
    assert sorted(os.listdir(tmp_path)) == ["w.npz"]


@posix_only
def test_socket_destination_is_refused(tmp_path):
    import socket

    path = tmp_path / "s"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        with pytest.raises(OSError, match="socket"):
            save_params(path, {"W": np.ones(3)})
        assert stat.S_ISSOCK(os.lstat(path).st_mode)


@pytest.mark.parametrize("stage", ["write", "link", "copy", "replace"])
def test_every_failure_keeps_the_previous_file(tmp_path, monkeypatch, stage):
    path = tmp_path / "w.npz"
    save_params(path, {"W": np.zeros(3)})
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError(f"injected failure at {stage}")

    if stage == "write":
        monkeypatch.setattr(fio, "_write_npz", fail)
    elif stage == "link":
        monkeypatch.setattr(fio, "_name_anonymous", fail)
    elif stage == "copy":  # no way to link the anonymous file, and then the copy fails
        monkeypatch.setattr(fio, "_link_anonymous", lambda fd, p: False)
        monkeypatch.setattr(fio, "_NO_LINKAT", set())
        monkeypatch.setattr(os, "pread", fail)
    else:
        monkeypatch.setattr(os, "replace", fail)
    try:
        save_params(path, {"W": np.ones(3)})
    except OSError as exc:
        assert "injected" in str(exc)
    else:
        # Without O_TMPFILE the link and copy stages never run: the save succeeds.
        assert stage in ("link", "copy") and fio._open_anonymous(str(tmp_path)) is None
        return
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["w.npz"]


def test_no_way_to_link_falls_back_to_a_copy(tmp_path, monkeypatch):
    monkeypatch.setattr(fio, "_link_anonymous", lambda fd, p: False)
    monkeypatch.setattr(fio, "_NO_LINKAT", set())
    for value in (1.0, 2.0):  # the second save skips O_TMPFILE on this file system
        save_params(tmp_path / "w.npz", {"W": np.full(100_000, value)})
        np.testing.assert_array_equal(load_params(tmp_path / "w.npz")["W"], value)
        assert os.listdir(tmp_path) == ["w.npz"]


@posix_only
def test_replacing_a_file_keeps_its_permissions(tmp_path):
    path = tmp_path / "w.npz"
    save_params(path, {"W": np.zeros(3)})
    os.chmod(path, 0o600)
    save_params(path, {"W": np.ones(3)})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# --- case 4: parameter names a format cannot represent --------------------------------------

@pytest.mark.parametrize("names, message", [
    (["a", "a.npy"], "collide"),
    (["W.npy", "W.npy.npy"], "collide"),
    (["a\x00b"], "NUL|'\\\\x00'"),
    (["a/b"], "'/'"),
    (["a\\b"], r"'\\\\'"),
    (["\ud800"], "not valid Unicode"),
])
def test_npz_refuses_names_it_cannot_give_back(tmp_path, names, message):
    params = {name: np.full(2, i, np.float64) for i, name in enumerate(names)}
    with pytest.raises(ValueError, match=message):
        save_params(tmp_path / "w.npz", params)
    assert list(tmp_path.iterdir()) == []
    if names != ["\ud800"]:  # a pickle can hold these names
        save_params(tmp_path / "w.pkl", params)
        loaded = load_params(tmp_path / "w.pkl")
        assert list(loaded) == names
        for i, name in enumerate(names):
            np.testing.assert_array_equal(loaded[name], np.full(2, i))


@pytest.mark.parametrize("key", [1, 2.5, None, b"W", ("W", 1)])
def test_non_str_names_are_refused_by_both_formats(tmp_path, key):
    for name in ("w.npz", "w.pkl"):
        with pytest.raises(ValueError, match="names must be str"):
            save_params(tmp_path / name, {key: np.ones(2)})
    assert list(tmp_path.iterdir()) == []


def test_names_with_npy_inside_round_trip(tmp_path):
    """A name ending in '.npy' is fine alone: only the pair collides."""
    params = {"x.npy": np.ones(2), "y": np.zeros(2), "": np.full(1, 3.0)}
    save_params(tmp_path / "w.npz", params)
    loaded = load_params(tmp_path / "w.npz")
    assert list(loaded) == list(params)
    for key, value in params.items():
        np.testing.assert_array_equal(loaded[key], value)
    with np.load(tmp_path / "w.npz") as npz:  # and NumPy reads the same
        for key, value in params.items():
            np.testing.assert_array_equal(npz[key], value)


def npy_bytes(array):
    buffer = __import__("io").BytesIO()
    np.lib.format.write_array(buffer, array)
    return buffer.getvalue()


def write_zip(path, members, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members:
            archive.writestr(name, data)


def test_load_refuses_colliding_members(tmp_path):
    path = tmp_path / "w.npz"
    # What an older save_params wrote for {'a': zeros, 'a.npy': ones}: np.load reads 'a''s
    # member for both names.
    write_zip(path, [("a.npy", npy_bytes(np.zeros(2))), ("a.npy.npy", npy_bytes(np.ones(2)))])
    with pytest.raises(WeightFileError, match="collide") as info:
        load_params(path)
    assert str(path) in str(info.value)
    with pytest.warns(UserWarning, match="Duplicate name"):
        write_zip(path, [("W.npy", npy_bytes(np.zeros(2))), ("W.npy", npy_bytes(np.ones(2)))])
    with pytest.raises(WeightFileError, match="more than once"):
        load_params(path)
    write_zip(path, [("W", npy_bytes(np.zeros(2)))])  # np.load would call it 'W' too
    with pytest.raises(WeightFileError, match="is not a '<name>.npy' array"):
        load_params(path)


def test_load_refuses_a_nul_in_a_member_name(tmp_path):
    path = tmp_path / "w.npz"
    write_zip(path, [("aXb.npy", npy_bytes(np.zeros(2))), ("a.npy", npy_bytes(np.ones(2)))])
    # The same length: patch the local and the central header's copy of the name.
    path.write_bytes(path.read_bytes().replace(b"aXb.npy", b"a\x00b.npy"))
    with pytest.raises(WeightFileError, match="a\\\\x00b.npy"):
        load_params(path)


# --- case 5: every reader bounds what it reads before reading -------------------------------

def peak_rss_mb_code(body):
    """Child code that runs ``body`` and prints the growth of peak RSS in MB."""
    return f"""
        import resource, numpy as np
        from fastnn import datasets, io
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
{textwrap.indent(textwrap.dedent(body), " " * 12)}
        except Exception as exc:
            print("ERROR", type(exc).__name__, exc)
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        print("GROWN_MB", grown / 1024)
        """


def grown_mb(stdout):
    return float(stdout.split("GROWN_MB")[1])


def gzip_stream(parts):
    """gzip of the concatenation of ``parts`` (bytes, or (byte, count) runs), streamed."""
    out = [b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"]  # gzip header, no name, mtime 0
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    crc, size = 0, 0
    for part in parts:
        if isinstance(part, tuple):
            block = part[0] * min(part[1], 1 << 20)
            left = part[1]
            while left:
                piece = block[:min(left, len(block))]
                out.append(compressor.compress(piece))
                crc, size, left = zlib.crc32(piece, crc), size + len(piece), left - len(piece)
        else:
            out.append(compressor.compress(part))
            crc, size = zlib.crc32(part, crc), size + len(part)
    out.append(compressor.flush())
    out.append(struct.pack("<II", crc, size & 0xFFFFFFFF))
    return b"".join(out)


def small_mnist(folder, n_train=5, n_test=3):
    rng = np.random.default_rng(0)
    arrays = {"train_img": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "train_label": rng.integers(0, 10, n_train, dtype=np.uint8),
              "test_img": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "test_label": rng.integers(0, 10, n_test, dtype=np.uint8)}
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, array in arrays.items():
        paths[key] = folder / datasets._MNIST_FILES[key].name
        header = struct.pack(f">I{array.ndim}I", 0x0800 | array.ndim, *array.shape)
        paths[key].write_bytes(gzip.compress(header + array.tobytes(), mtime=0))
    return arrays, paths


@posix_only
def test_idx_gzip_bomb_decompresses_only_what_the_header_announces(tmp_path):
    """A valid header announcing 1000 images (784 kB) over a 400 MB body of zeros (a 400 kB
    .gz): refused as trailing bytes after at most 784 kB + 1 byte are decompressed."""
    arrays, paths = small_mnist(tmp_path / "data", n_train=1000)
    header = struct.pack(">IIII", 0x0803, 1000, 28, 28)
    paths["train_img"].write_bytes(gzip_stream([header, (b"\0", 400 * 2**20)]))
    assert paths["train_img"].stat().st_size < 2**20
    result = run_child(peak_rss_mb_code(f"""
        datasets.load_mnist(data_dir={str(tmp_path / "data")!r}, download=False)
        """), env={"XDG_CACHE_HOME": str(tmp_path / "cache")}, timeout=120)
    assert "ERROR DatasetError" in result.stdout and "trailing bytes" in result.stdout
    assert str(paths["train_img"]) in result.stdout
    assert grown_mb(result.stdout) < 100, result.stdout  # the whole body would be 400 MB


def test_idx_header_larger_than_the_file_can_hold_is_refused_before_allocating(tmp_path,
                                                                               monkeypatch):
    arrays, paths = small_mnist(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    # 4e9 images of 28x28 = 3 TB announced by a 100-byte gzip file, and by a raw file.
    header = struct.pack(">IIII", 0x0803, 4_000_000_000, 28, 28)
    allocations = []
    empty = np.empty
    monkeypatch.setattr(datasets.np, "empty", lambda *a, **k: allocations.append(a) or
                        empty(*a, **k))
    for data in (gzip.compress(header + bytes(1000)), header + bytes(1000)):
        paths["train_img"].write_bytes(data)
        with pytest.raises(DatasetError, match="truncated") as info:
            load_mnist(data_dir=tmp_path, download=False)
        assert "3136000000000 bytes" in str(info.value)
    assert allocations == []


def craft_zip(members):
    """Bytes of a zip archive built by hand, so that its recorded sizes can lie.

    ``members``: (name, data, method, file_size, compress_size) tuples; ``data`` is what is
    stored, the sizes are what the headers claim (None: the true ones)."""
    body, central = bytearray(), bytearray()
    for name, data, method, file_size, compress_size in members:
        name = name.encode()
        crc = zlib.crc32(data) if method == 0 else 0
        compress_size = len(data) if compress_size is None else compress_size
        file_size = len(data) if file_size is None else file_size
        offset = len(body)
        fields = struct.pack("<HHHHHIII", 20, 0, method, 0, 0, crc, compress_size, file_size)
        body += b"PK\x03\x04" + fields + struct.pack("<HH", len(name), 0) + name + data
        central += (b"PK\x01\x02" + struct.pack("<H", 20) + fields
                    + struct.pack("<HHHHHII", len(name), 0, 0, 0, 0, 0, offset) + name)
    end = b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, len(members), len(members),
                                      len(central), len(body), 0)
    return bytes(body + central + end)


def npy_header(shape, dtype="<f8"):
    """The .npy header (magic, version 1.0, dict) of an array of ``shape``, without data."""
    buffer = __import__("io").BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


@pytest.fixture
def allocations(monkeypatch):
    """Sizes (in elements) of the np.empty calls made while the test runs."""
    sizes = []
    empty = np.empty

    def spy(shape, *args, **kwargs):
        sizes.append(int(np.prod(shape)))
        return empty(shape, *args, **kwargs)

    monkeypatch.setattr(np, "empty", spy)
    return sizes


def test_truncated_npz_member_is_refused_before_allocating(tmp_path, allocations):
    """A 1 MB file whose member claims a 1 GiB array, with consistent but false sizes."""
    header = npy_header((2**27,))  # 1 GiB of float64
    claimed = len(header) + 2**30
    path = tmp_path / "w.npz"
    path.write_bytes(craft_zip([("W.npy", header + bytes(2**20), 0, claimed, claimed)]))
    with pytest.raises(WeightFileError, match="truncated: the member claims") as info:
        load_params(path)
    assert str(path) in str(info.value)
    assert all(size < 2**20 for size in allocations), allocations


@pytest.mark.parametrize("case, message", [
    ("sizes disagree with the header", "truncated"),
    ("trailing bytes", "trailing bytes"),
    ("stored sizes differ", "cannot hold"),
    ("deflate bomb claim", "cannot hold"),
    ("bzip2", "compression method"),
])
def test_npz_member_sizes_are_checked_from_the_headers(tmp_path, case, message):
    header = npy_header((4,))
    if case == "sizes disagree with the header":
        members = [("W.npy", header + bytes(16), 0, None, None)]  # 16 of the 32 bytes
    elif case == "trailing bytes":
        members = [("W.npy", header + bytes(40), 0, None, None)]
    elif case == "stored sizes differ":
        members = [("W.npy", header + bytes(32), 0, len(header) + 3200, None)]
    elif case == "deflate bomb claim":
        members = [("W.npy", zlib.compress(header + bytes(32))[2:-4], 8, 2**30, None)]
    else:
        members = [("W.npy", header + bytes(32), 12, None, None)]
    path = tmp_path / "w.npz"
    path.write_bytes(craft_zip(members))
    with pytest.raises(WeightFileError, match=message) as info:
        load_params(path)
    assert str(path) in str(info.value)


def test_npz_members_are_capped(tmp_path, monkeypatch):
    path = tmp_path / "w.npz"
    # 8 MiB of zeros, which np.savez_compressed stores in 8 kB.
    np.savez_compressed(path, W=np.zeros(2**20), b=np.zeros(10))
    assert path.stat().st_size < 2**16
    with pytest.raises(WeightFileError, match="more than the limit of 1048576") as info:
        load_params(path, max_bytes=2**20)
    assert "'W.npy'" in str(info.value) and str(path) in str(info.value)
    assert load_params(path, max_bytes=2**23)["W"].shape == (2**20,)
    monkeypatch.setattr(fio, "MAX_MEMBER_BYTES", 2**20)
    with pytest.raises(WeightFileError, match="limit"):
        load_params(path)
    for bad in (-1, 1.5, "big", True):
        with pytest.raises(ValueError, match="max_bytes"):
            load_params(path, max_bytes=bad)


def test_default_cap_refuses_a_small_archive_claiming_a_large_array(tmp_path, monkeypatch):
    """A 320 kB deflated member announcing 320 MiB, over the 256 MiB default: refused from the
    header, without allocating."""
    path = tmp_path / "w.npz"
    n = 40 * 2**20  # float64 elements: 320 MiB
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("W.npy", "w", force_zip64=True) as member:
            member.write(npy_header((n,)))
            block = bytes(2**20)
            for _ in range(8 * n // len(block)):
                member.write(block)
    assert path.stat().st_size < 2 * 2**20
    assert fio.MAX_MEMBER_BYTES == 256 * 2**20
    sizes = []
    empty = np.empty
    monkeypatch.setattr(np, "empty", lambda shape, *a, **k: sizes.append(shape) or
                        empty(shape, *a, **k))
    with pytest.raises(WeightFileError, match="335544320 bytes, more than the limit of "
                                              "268435456"):
        load_params(path)
    assert sizes == []


def test_pickle_declaring_more_bytes_than_it_holds(tmp_path):
    """BINBYTES8 announcing 2**60 bytes in a 30-byte file: a truncated pickle, found without
    asking the allocator for 2**60 bytes."""
    path = tmp_path / "w.pkl"
    path.write_bytes(b"\x80\x04\x8e" + struct.pack("<Q", 2**60) + b"abc.")
    with pytest.raises(WeightFileError, match="truncated") as info:
        load_params(path)
    assert str(path) in str(info.value)


# --- case 6: downloads are capped and have a deadline ---------------------------------------

class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


class _Handler(http.server.BaseHTTPRequestHandler):
    sent = {}

    def log_message(self, *args):
        pass

    def _send(self, data):
        self.wfile.write(data)
        self.wfile.flush()
        _Handler.sent[self.path] = _Handler.sent.get(self.path, 0) + len(data)

    def do_GET(self):
        try:
            if self.path == "/ok":
                self.send_response(200)
                self.send_header("Content-Length", "5")
                self.end_headers()
                self._send(b"hello")
            elif self.path == "/announced-too-large":
                self.send_response(200)
                self.send_header("Content-Length", str(10**12))
                self.end_headers()
                time.sleep(30)  # a client that read on would wait here
            elif self.path == "/endless":
                self.send_response(200)
                self.end_headers()  # no length: the body ends when the connection does
                for _ in range(10**5):
                    self._send(bytes(2**16))
            elif self.path == "/drip-body":
                self.send_response(200)
                self.send_header("Content-Length", "1000")
                self.end_headers()
                for _ in range(300):
                    self._send(b"x")
                    time.sleep(0.1)
            elif self.path == "/drip-headers":
                for byte in b"HTTP/1.0 200 OK\r\nX-Slow: " + b"y" * 300:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.1)
        except OSError:
            pass  # the client hung up, as it should


@pytest.fixture(scope="module")
def server():
    httpd = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def fetch_in_child(url, max_bytes, deadline=600.0, timeout=60.0):
    result = run_child(f"""
        import time
        from fastnn import datasets
        datasets._DOWNLOAD_DEADLINE = {deadline}
        start = time.monotonic()
        try:
            body = datasets._fetch({url!r}, {timeout}, {max_bytes})
            print("BODY", len(body))
        except Exception as exc:
            print("ERROR", type(exc).__name__, exc)
        print("SECONDS", time.monotonic() - start)
        """, timeout=60)
    return result.stdout, float(result.stdout.split("SECONDS")[1])


def test_download_reads_a_normal_body(server):
    out, _ = fetch_in_child(server + "/ok", 5)
    assert "BODY 5" in out


def test_download_announcing_more_than_the_published_size_is_refused(server):
    out, seconds = fetch_in_child(server + "/announced-too-large", 1000)
    assert "ERROR ValueError" in out and "announces" in out and "1000" in out
    assert seconds < 20


def test_download_stops_at_the_published_size(server):
    _Handler.sent.pop("/endless", None)
    out, _ = fetch_in_child(server + "/endless", 2**20)
    assert "ERROR ValueError" in out and "longer than the published 1048576" in out
    time.sleep(0.5)
    assert _Handler.sent.get("/endless", 0) < 2**20 + 2**19 + 2**23  # not the 6.5 GB offered


@pytest.mark.parametrize("path", ["/drip-body", "/drip-headers"])
def test_download_has_an_overall_deadline(server, path):
    """A byte every 0.1 s never trips a 60 s per-read timeout; the 2 s deadline stops it."""
    out, seconds = fetch_in_child(server + path, 10**6, deadline=2.0, timeout=60.0)
    assert "ERROR TimeoutError" in out and "not complete after 2 s" in out, out
    assert seconds < 15


def test_a_capped_mirror_is_skipped_for_the_next(tmp_path, server, monkeypatch):
    """Through load_mnist: the first mirror sends an endless body, the second the file."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    arrays, paths = small_mnist(tmp_path / "src")
    blobs = {key: path.read_bytes() for key, path in paths.items()}
    import hashlib

    specs = {key: spec._replace(sha256=hashlib.sha256(blobs[key]).hexdigest(),
                                size=len(blobs[key]))
             for key, spec in datasets._MNIST_FILES.items()}
    monkeypatch.setattr(datasets, "_MNIST_FILES", specs)
    by_name = {spec.name: blobs[key] for key, spec in specs.items()}
    monkeypatch.setattr(datasets, "MNIST_MIRRORS", (server + "/endless-", "https://second/"))
    real_fetch = datasets._fetch
    calls = []

    def fetch(url, timeout, max_bytes):
        calls.append(url)
        if url.startswith(server):
            return real_fetch(server + "/endless", timeout, max_bytes)
        return by_name[url.rsplit("/", 1)[1]]

    monkeypatch.setattr(datasets, "_fetch", fetch)
    (x, t), _ = load_mnist(normalize=False, data_dir=tmp_path / "dl")
    np.testing.assert_array_equal(t, arrays["train_label"])
    assert len(calls) == 8


# --- case 7: FIFOs and devices are never read -----------------------------------------------

@posix_only
def test_fifo_or_device_as_weights_path_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "w.npz"
    os.mkfifo(fifo)
    result = run_child(f"""
        from fastnn.io import load_params
        try:
            load_params({str(fifo)!r})
        except OSError as exc:
            print("REFUSED", exc)
        """, timeout=30)
    assert "REFUSED" in result.stdout and "FIFO" in result.stdout
    assert str(fifo) in result.stdout
    zero = tmp_path / "zero"
    make_device(zero, zero=True)  # /dev/zero would be read forever
    with pytest.raises(OSError, match="character device"):
        load_params(zero)


@posix_only
def test_fifo_at_the_parse_cache_path_is_ignored(tmp_path, monkeypatch):
    arrays, paths = small_mnist(tmp_path / "data")
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    monkeypatch.setenv("XDG_CACHE_HOME", env["XDG_CACHE_HOME"])
    cache = datasets._cache_path(paths)
    cache.parent.mkdir(parents=True)
    os.mkfifo(cache)
    result = run_child(f"""
        from fastnn.datasets import load_mnist
        for _ in range(2):
            (x, t), _ = load_mnist(normalize=False, data_dir={str(tmp_path / "data")!r},
                                   download=False)
        print("LOADED", x.shape, t.tolist())
        """, env=env, timeout=60)
    assert f"LOADED (5, 784) {arrays['train_label'].tolist()}" in result.stdout
    assert stat.S_ISFIFO(os.lstat(cache).st_mode)  # neither read nor replaced
    assert temporaries(cache.parent) == []


@posix_only
def test_fifo_named_like_an_idx_file_is_not_a_data_file(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    _, paths = small_mnist(tmp_path)
    paths["test_img"].unlink()
    os.mkfifo(paths["test_img"])
    with pytest.raises(DatasetNotFoundError):
        load_mnist(data_dir=tmp_path, download=False)
    # And if a FIFO is swapped in after the files were found, reading it is refused.
    with pytest.raises(DatasetError, match="FIFO") as info:
        datasets._read_idx(paths["test_img"], datasets._MNIST_FILES["test_img"])
    assert str(paths["test_img"]) in str(info.value)


# --- case 8: the parse cache is re-checked --------------------------------------------------

def _tamper(arrays, how):
    tampered = dict(arrays)
    if how == "10 images for 5 labels":
        tampered["train_img"] = np.zeros((10, 28, 28), np.uint8)
    elif how == "5x5 images":
        tampered["test_img"] = np.zeros((3, 5, 5), np.uint8)
    elif how == "label 200":
        tampered["train_label"] = np.full(5, 200, np.uint8)
    elif how == "consistent but not the sources' counts":
        tampered["train_img"] = tampered["train_img"][:2]
        tampered["train_label"] = tampered["train_label"][:2]
    elif how == "float images":
        tampered["test_img"] = tampered["test_img"].astype(np.float64)
    elif how == "extra member":
        tampered["evil"] = np.zeros(3, np.uint8)
    elif how == "missing member":
        del tampered["test_label"]
    return tampered


@pytest.mark.parametrize("how", ["10 images for 5 labels", "5x5 images", "label 200",
                                 "consistent but not the sources' counts", "float images",
                                 "extra member", "missing member", "object array key"])
def test_tampered_cache_with_the_right_key_is_rebuilt(tmp_path, monkeypatch, how):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    arrays, _ = small_mnist(tmp_path / "data")
    load_mnist(data_dir=tmp_path / "data")
    (cache,) = (tmp_path / "cache").rglob("parsed-*.npz")
    with np.load(cache) as npz:
        stored = {name: npz[name] for name in npz.files}
    key = stored.pop("key")
    if how == "object array key":
        np.savez(cache, key=np.array([key.tobytes().decode()], dtype=object), **stored)
    else:
        np.savez(cache, key=key, **_tamper(stored, how))
    parsed = []
    parse_all = datasets._parse_all
    monkeypatch.setattr(datasets, "_parse_all", lambda paths: parsed.append(1) or
                        parse_all(paths))
    (x, t), (x_test, t_test) = load_mnist(normalize=False, data_dir=tmp_path / "data")
    assert parsed == [1]
    np.testing.assert_array_equal(x, arrays["train_img"].reshape(-1, 784))
    np.testing.assert_array_equal(t, arrays["train_label"])
    np.testing.assert_array_equal(x_test, arrays["test_img"].reshape(-1, 784))
    np.testing.assert_array_equal(t_test, arrays["test_label"])
    # The cache was rebuilt and is trusted again.
    load_mnist(data_dir=tmp_path / "data")
    assert parsed == [1]


# --- case 12: kill -9 during saves ----------------------------------------------------------

SAVE_AND_HANG = """
    import os, sys, time
    import numpy as np
    from fastnn import io
    if {named}:
        io._open_anonymous = lambda folder: None
    stage = {stage!r}
    if stage == "rename":
        def hang(src, dst):
            print("READY", flush=True)
            time.sleep(120)
        os.replace = hang
    with io.atomic_open({path!r}) as f:
        f.write(b"new" * 100_000)
        if stage == "write":
            print("READY", flush=True)
            time.sleep(120)
"""


def start_hanging_save(path, named, stage):
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(SAVE_AND_HANG.format(
        path=str(path), named=named, stage=stage))], cwd=ROOT, stdout=subprocess.PIPE,
        text=True)
    line = child.stdout.readline()
    assert line.strip() == "READY", line
    return child


def kill(child):
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    child.stdout.close()


@posix_only
def test_killed_save_with_an_anonymous_temporary_leaves_nothing(tmp_path):
    if not anonymous_temporaries_work(tmp_path):
        pytest.skip("no O_TMPFILE with linkat on this file system")
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    child = start_hanging_save(path, named=False, stage="write")
    try:
        assert os.listdir(tmp_path) == ["f.bin"]  # the temporary has no name
    finally:
        kill(child)
    assert os.listdir(tmp_path) == ["f.bin"] and path.read_bytes() == b"old"


@posix_only
@pytest.mark.parametrize("named, stage", [(True, "write"), (False, "rename"), (True, "rename")])
def test_stale_named_temporary_is_removed_by_the_next_save(tmp_path, named, stage):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    child = start_hanging_save(path, named=named, stage=stage)
    try:
        (left,) = temporaries(tmp_path)
        assert fio._TEMP_RE.fullmatch(left) and f"-{child.pid}-" in left
        # The writer is alive: another save in the folder leaves its temporary alone.
        with atomic_open(tmp_path / "other.bin") as f:
            f.write(b"x")
        assert temporaries(tmp_path) == [left]
    finally:
        kill(child)
    assert temporaries(tmp_path) == [left] and path.read_bytes() == b"old"
    with atomic_open(tmp_path / "other.bin") as f:  # any later save in the folder cleans up
        f.write(b"y")
    assert temporaries(tmp_path) == []
    assert sorted(os.listdir(tmp_path)) == ["f.bin", "other.bin"]


def test_only_stale_temporaries_of_this_host_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    tag = fio._host_tag()
    names = {
        f".w.npz.fastnn-{tag}-{dead.pid}-0123abcd.tmp": False,  # stale: removed
        f".w.npz.fastnn-{tag}-{os.getpid()}-0123abcd.tmp": True,  # this live process
        f".w.npz.fastnn-{'0' * 8 if tag != '0' * 8 else '1' * 8}-{dead.pid}-0123abcd.tmp": True,
        f".w.npz.{'ab' * 4}.tmp": True,  # not ours
        "w.npz": True,
    }
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    folder_like = tmp_path / f".d.fastnn-{tag}-{dead.pid}-0123abcd.tmp"
    folder_like.mkdir()  # not a regular file: left alone
    save_params(tmp_path / "v.npz", {"W": np.ones(2)})
    assert {name: (tmp_path / name).exists() for name in names} == names
    assert folder_like.is_dir()


@posix_only
@pytest.mark.parametrize("named", [False, True])
def test_repeated_kills_during_saves(tmp_path, named):
    """SIGKILL a process that saves in a loop, eight times at random moments: the file is
    always one complete version, and the next save leaves no temporary."""
    path = tmp_path / "w.npz"
    save_params(path, {"W": np.zeros(2**18), "b": np.zeros(3)})
    code = textwrap.dedent(f"""
        import numpy as np
        from fastnn import io
        if {named}:
            io._open_anonymous = lambda folder: None
        print("READY", flush=True)
        k = 1
        while True:
            io.save_params({str(path)!r}, {{"W": np.full(2**18, k, np.float64),
                                            "b": np.full(3, k, np.float64)}})
            k += 1
        """)
    rng = np.random.default_rng(0)
    for _ in range(8):
        child = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT,
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "READY"
        time.sleep(float(rng.uniform(0.05, 0.4)))
        kill(child)
        params = load_params(path)
        assert params["W"].shape == (2**18,) and params["b"].shape == (3,)
        value = params["b"][0]
        assert (params["W"] == value).all() and (params["b"] == value).all()
    save_params(path, {"W": np.ones(2), "b": np.ones(3)})
    assert temporaries(tmp_path) == [] and os.listdir(tmp_path) == ["w.npz"]


# --- case 13: the errors load_params raises -------------------------------------------------

@pytest.mark.parametrize("content", [
    b"PK\x03\x04 not really a zip archive",
    b"PK\x05\x06" + bytes(10),
    b"",
    b"\x80\x04\x95",  # a pickle cut short
    b"garbage that is neither",
    pickle.dumps({"W": np.ones(3)})[:-20],
])
def test_corrupt_files_raise_weight_file_error_naming_the_file(tmp_path, content):
    path = tmp_path / "w.bin"
    path.write_bytes(content)
    with pytest.raises(WeightFileError) as info:
        load_params(path)
    assert isinstance(info.value, ValueError)
    assert str(path) in str(info.value)


def test_cut_npz_raises_weight_file_error(tmp_path):
    path = tmp_path / "w.npz"
    save_params(path, {"W": np.ones((100, 100)), "b": np.ones(3)})
    data = path.read_bytes()
    for length in (10, 100, len(data) // 2, len(data) - 30):
        path.write_bytes(data[:length])
        with pytest.raises(WeightFileError) as info:
            load_params(path)
        assert str(path) in str(info.value)


def test_flipped_crc_raises_weight_file_error(tmp_path):
    path = tmp_path / "w.npz"
    save_params(path, {"W": np.ones(1000)})
    data = bytearray(path.read_bytes())
    data[200] ^= 0xFF  # inside W's data
    path.write_bytes(bytes(data))
    with pytest.raises(WeightFileError, match="CRC"):
        load_params(path)


REFUSED = {
    "str": np.array(["a", "b"]),
    "bytes": np.array([b"a"]),
    "complex": np.ones(2, np.complex128),
    "datetime": np.array(["2020-01-01"], dtype="datetime64[D]"),
    "timedelta": np.array([1], dtype="timedelta64[s]"),
    "structured": np.zeros(2, dtype=[("a", "<f8"), ("b", "<i4")]),
    "void": np.zeros(2, dtype="V8"),
}


@pytest.mark.parametrize("kind", sorted(REFUSED))
def test_non_numeric_arrays_are_refused_on_save_and_load(tmp_path, kind):
    array = REFUSED[kind]
    for name in ("w.npz", "w.pkl"):
        with pytest.raises(ValueError, match="not a numeric array"):
            save_params(tmp_path / name, {"W": array})
    assert list(tmp_path.iterdir()) == []
    np.savez(tmp_path / "w.npz", W=array)
    (tmp_path / "w.pkl").write_bytes(pickle.dumps({"W": array}, protocol=4))
    for name in ("w.npz", "w.pkl"):
        with pytest.raises(WeightFileError, match="numeric array") as info:
            load_params(tmp_path / name)
        assert str(tmp_path / name) in str(info.value)


def test_object_arrays_are_refused_before_unpickling_in_npz(tmp_path):
    path = tmp_path / "w.npz"
    np.savez(path, W=np.array([None, {"a": 1}], dtype=object))
    with pytest.raises(WeightFileError, match="dtype object"):
        load_params(path)


@pytest.mark.parametrize("format", ["npz", "pkl"])
def test_byte_swapped_weights_load_in_native_order(tmp_path, format):
    rng = np.random.default_rng(1)
    native = {"W1": rng.standard_normal((4, 3)), "b1": rng.standard_normal(3),
              "W2": rng.standard_normal((3, 2)), "b2": rng.standard_normal(2)}
    swapped = {key: value.astype(value.dtype.newbyteorder()) for key, value in native.items()}
    assert not swapped["W1"].dtype.isnative
    path = tmp_path / f"w.{format}"
    if format == "npz":
        np.savez(path, **swapped)
    else:
        path.write_bytes(pickle.dumps(swapped, protocol=2))
    loaded = load_params(path)
    for key, value in native.items():
        assert loaded[key].dtype == np.float64 and loaded[key].dtype.isnative
        assert loaded[key].flags.writeable
        np.testing.assert_array_equal(loaded[key], value)
    from fastnn.nets import MultiLayerNet

    net = MultiLayerNet.from_params(loaded)  # as the docs promise for byte-swapped files
    x = rng.standard_normal((5, 4))
    reference = np.maximum(x @ native["W1"] + native["b1"], 0) @ native["W2"] + native["b2"]
    np.testing.assert_allclose(net.predict(x), reference, rtol=1e-12)


def test_unsafe_pickle_error_is_a_weight_file_error_naming_the_file(tmp_path):
    path = tmp_path / "w.pkl"
    path.write_bytes(b"cos\nsystem\n(S'true'\ntR.")
    with pytest.raises(UnsafePickleError, match="os.system") as info:
        load_params(path)
    assert isinstance(info.value, WeightFileError) and isinstance(info.value, ValueError)
    assert isinstance(info.value, pickle.UnpicklingError)
    assert str(path) in str(info.value)


def test_fortran_ordered_npz_member_loads(tmp_path):
    array = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    np.savez(tmp_path / "w.npz", W=array)
    np.testing.assert_array_equal(load_params(tmp_path / "w.npz")["W"], array)


# --- issue 9: data loading imports no compiled kernel ---------------------------------------

def test_data_loading_imports_nothing_compiled(tmp_path):
    small_mnist(tmp_path / "data")
    result = run_child(f"""
        import sys
        from fastnn.datasets import load_mnist
        (x, t), _ = load_mnist(one_hot_label=True, data_dir={str(tmp_path / "data")!r},
                               download=False)
        assert t.shape == (5, 10)
        loaded = dict((name, getattr(module, "__file__", None) or "")
                      for name, module in sys.modules.items()
                      if name == "fastnn" or name.startswith("fastnn."))
        print("MODULES", sorted(loaded))
        print("COMPILED", sorted(name for name, file in loaded.items()
                                 if not file.endswith(".py")))
        """, env={"XDG_CACHE_HOME": str(tmp_path / "cache")}, timeout=60)
    assert "COMPILED []" in result.stdout, result.stdout
    modules = eval(result.stdout.split("MODULES")[1].split("\n")[0])
    assert {"fastnn.datasets", "fastnn.io"} <= set(modules)
    assert not {"fastnn.functions", "fastnn.layers", "fastnn._validation"} & set(modules)
    assert not any(name.startswith("fastnn._kernels") for name in modules), modules


def test_loader_one_hot_matches_functions_one_hot():
    from fastnn.functions import one_hot

    labels = np.random.default_rng(2).integers(0, 10, 1000).astype(np.uint8)
    rows = datasets._one_hot(labels)
    expected = one_hot(labels, 10)
    assert rows.dtype == expected.dtype == np.float64 and rows.shape == (1000, 10)
    np.testing.assert_array_equal(rows, expected)
    assert datasets._one_hot(labels[:0]).shape == (0, 10)


def test_missing_directory_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="directory does not exist") as info:
        save_params(tmp_path / "no" / "w.npz", {"W": np.ones(2)})
    assert str(tmp_path / "no") in str(info.value)
    assert list(tmp_path.iterdir()) == []


@posix_only
def test_symlink_loop_is_refused(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(OSError):
        save_params(tmp_path / "a", {"W": np.ones(2)})
    assert (tmp_path / "a").is_symlink() and (tmp_path / "b").is_symlink()
    assert sorted(os.listdir(tmp_path)) == ["a", "b"]
