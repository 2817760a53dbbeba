"""Tests for examples/mnist_data.py: the IDX reader, locating and verified downloads.

Every file is written by the tests; downloads go to a threaded HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import mnist_data
from mnist_data import IdxFormatError, RemoteFile

# --------------------------------------------------------------------------------------------
# IDX reader


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize(
    "dtype,shape",
    [(np.uint8, (5, 28, 28)), (np.uint8, (7,)), (np.int32, (3, 4)), (np.float32, (2, 3, 4))],
)
def test_idx_round_trip(tmp_path, suffix, dtype, shape):
    rng = np.random.default_rng(0)
    array = (rng.standard_normal(shape) * 100).astype(dtype)
    path = tmp_path / f"a.idx{suffix}"
    mnist_data.write_idx(path, array)
    out = mnist_data.read_idx(path)
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, array)


def test_idx_header_is_big_endian_mnist_layout(tmp_path):
    # The bytes MNIST's train-labels file starts with: magic 0x00000801, then the count.
    path = tmp_path / "labels"
    path.write_bytes(bytes([0, 0, 8, 1]) + (3).to_bytes(4, "big") + bytes([7, 0, 9]))
    np.testing.assert_array_equal(mnist_data.read_idx(path, ndim=1, dtype=np.uint8), [7, 0, 9])


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_bad_magic_number(tmp_path):
    data = bytearray(_idx_bytes(np.zeros((2, 3))))
    data[1] = 0x01  # the first two bytes must be zero
    path = tmp_path / "bad-magic"
    path.write_bytes(bytes(data))
    with pytest.raises(IdxFormatError, match=r"bad-magic: bad IDX magic number 0x00010802"):
        mnist_data.read_idx(path)


def test_unknown_type_byte(tmp_path):
    data = bytearray(_idx_bytes(np.zeros(4)))
    data[2] = 0x07
    path = tmp_path / "f"
    path.write_bytes(bytes(data))
    with pytest.raises(IdxFormatError, match="bad IDX magic number 0x00000701"):
        mnist_data.read_idx(path)


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_payload(tmp_path, gz):
    data = _idx_bytes(np.zeros((10, 28, 28)))[:-100]
    path = tmp_path / ("t.gz" if gz else "t")
    path.write_bytes(gzip.compress(data) if gz else data)
    expected = 16 + 10 * 28 * 28
    with pytest.raises(
        IdxFormatError,
        match=rf"truncated: header declares shape \(10, 28, 28\).*{expected} bytes in all.*"
        rf"holds {expected - 100} bytes",
    ):
        mnist_data.read_idx(path)


def test_truncated_header(tmp_path):
    path = tmp_path / "t"
    path.write_bytes(bytes([0, 0, 8, 3]) + (10).to_bytes(4, "big"))
    with pytest.raises(IdxFormatError, match="truncated header: 8 bytes, a rank-3 header needs 16"):
        mnist_data.read_idx(path)


def test_truncated_gzip_stream(tmp_path):
    packed = gzip.compress(_idx_bytes(np.arange(200).reshape(2, 100) % 256))
    path = tmp_path / "t.gz"
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(IdxFormatError, match="truncated gzip stream"):
        mnist_data.read_idx(path)


def test_wrong_size_trailing_bytes(tmp_path):
    path = tmp_path / "w"
    path.write_bytes(_idx_bytes(np.zeros((4, 2))) + b"\0\0\0")
    with pytest.raises(
        IdxFormatError, match=r"wrong size: .*\(4, 2\).*holds 23 bytes \(3 too many"
    ):
        mnist_data.read_idx(path)


def test_expected_rank_and_type(tmp_path):
    path = tmp_path / "x"
    mnist_data.write_idx(path, np.zeros((2, 2), np.int32))
    with pytest.raises(IdxFormatError, match="expected 3 dimensions, the header declares 2"):
        mnist_data.read_idx(path, ndim=3)
    with pytest.raises(IdxFormatError, match="expected elements of type uint8, found >i4"):
        mnist_data.read_idx(path, dtype=np.uint8)


def _write_dataset(folder: Path, n_train=12, n_test=6, seed=0, gz=True) -> list[Path]:
    """Four tiny MNIST-format files; returns their paths in spec order."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = [
        rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, n_train, dtype=np.uint8),
        rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, n_test, dtype=np.uint8),
    ]
    paths = []
    for f, array in zip(mnist_data.DATASETS["mnist"].files, arrays, strict=True):
        path = folder / (f.name if gz else f.name.removesuffix(".gz"))
        mnist_data.write_idx(path, array)
        paths.append(path)
    return paths


@pytest.mark.parametrize("gz", [True, False])
def test_load_dataset_from_data_dir(tmp_path, gz):
    paths = _write_dataset(tmp_path / "d", seed=3, gz=gz)
    ds = mnist_data.load_dataset(
        "mnist", tmp_path / "d", allow_download=False, cache_dir=tmp_path / "c", log=lambda m: None
    )
    np.testing.assert_array_equal(ds.x_train, mnist_data.read_idx(paths[0]))
    np.testing.assert_array_equal(ds.y_test, mnist_data.read_idx(paths[3]))
    assert ds.y_train.dtype == np.int32
    assert (ds.x_train.shape, ds.x_test.shape) == ((12, 28, 28), (6, 28, 28))


def test_mismatched_counts_and_bad_labels(tmp_path):
    paths = _write_dataset(tmp_path, n_train=12)
    mnist_data.write_idx(paths[1], np.zeros(11, np.uint8))
    with pytest.raises(IdxFormatError, match=r"holds 12 images but .* holds 11 labels"):
        mnist_data.load_dataset("mnist", tmp_path, allow_download=False, cache_dir=tmp_path / "c")
    mnist_data.write_idx(paths[1], np.full(12, 10, np.uint8))
    with pytest.raises(IdxFormatError, match=r"label 10 outside 0\.\.9"):
        mnist_data.load_dataset("mnist", tmp_path, allow_download=False, cache_dir=tmp_path / "c")
    mnist_data.write_idx(paths[0], np.zeros((12, 28, 27), np.uint8))
    with pytest.raises(IdxFormatError, match="expected 28×28 images, found 28×27"):
        mnist_data.load_dataset("mnist", tmp_path, allow_download=False, cache_dir=tmp_path / "c")


def test_digits_is_28x28_and_stratified():
    ds = mnist_data.load_dataset("digits")
    assert ds.x_train.shape == (1437, 28, 28) and ds.x_test.shape == (360, 28, 28)
    assert ds.x_train.dtype == np.uint8 and ds.x_train.max() == 255
    # The 2-pixel border is blank, as in MNIST.
    assert not ds.x_train[:, :2].any() and not ds.x_train[:, :, -2:].any()
    assert set(np.bincount(ds.y_test)) <= {35, 36, 37}


# --------------------------------------------------------------------------------------------
# Locating


def _fake_spec(monkeypatch, name: str, files: list[Path], **changes) -> mnist_data.DatasetSpec:
    """Registers a spec for `name` whose published hashes are those of `files`."""
    spec = mnist_data.DATASETS[name]
    remote = [
        RemoteFile(f.name, hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_size)
        for f, p in zip(spec.files, files, strict=True)
    ]
    spec = dataclasses.replace(spec, files=tuple(remote), **changes)
    monkeypatch.setitem(mnist_data.DATASETS, name, spec)
    return spec


def test_lookup_order(tmp_path, monkeypatch):
    # One distinct fake dataset per place; each time the first place is removed, the next wins.
    cache = tmp_path / "cache"
    cached = _write_dataset(cache / "fashion_mnist", seed=2)
    _fake_spec(monkeypatch, "fashion_mnist", cached, system_dirs=(tmp_path / "debian",))
    _write_dataset(tmp_path / "debian", seed=3)
    _write_dataset(tmp_path / "env" / "fashion_mnist", seed=1)  # in the <dataset> subfolder
    _write_dataset(tmp_path / "flag", seed=0)
    monkeypatch.setenv("JAXLOSS_DATA_DIR", str(tmp_path / "env"))

    def where(data_dir):
        paths, tried = mnist_data.find_local("fashion_mnist", data_dir, cache_dir=cache)
        return paths[0].parent if paths else None, tried

    assert where(tmp_path / "flag")[0] == tmp_path / "flag"
    assert where(None)[0] == tmp_path / "env" / "fashion_mnist"
    monkeypatch.delenv("JAXLOSS_DATA_DIR")
    assert where(tmp_path / "nothing-here")[0] == cache / "fashion_mnist"
    # A cached file that fails its checksum disqualifies the cache.
    cached[3].write_bytes(cached[3].read_bytes()[:-1])
    folder, tried = where(None)
    assert folder == tmp_path / "debian"
    assert any("fails its size or SHA-256 check" in t for t in tried)
    for p in (tmp_path / "debian").iterdir():
        p.unlink()
    folder, tried = where(tmp_path / "nothing-here")
    assert folder is None
    assert [t.split(":")[0] for t in tried] == [
        "--data-dir",
        "--data-dir",
        "user cache",
        "system package",
    ]


def test_fashion_mnist_debian_dir_is_a_candidate():
    spec = mnist_data.DATASETS["fashion_mnist"]
    assert spec.system_dirs == (Path("/usr/share/datasets/fashion-mnist"),)
    assert "dataset-fashion-mnist" in spec.install_hint
    assert mnist_data.DATASETS["mnist"].system_dirs == ()


def test_published_checksums_are_well_formed():
    for spec in mnist_data.DATASETS.values():
        names = [f.name for f in spec.files]
        assert names == [
            "train-images-idx3-ubyte.gz",
            "train-labels-idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
        ]
        for f in spec.files:
            assert len(f.sha256) == 64 and int(f.sha256, 16) >= 0
        assert all(m.endswith("/") for m in spec.mirrors) and len(spec.mirrors) >= 2


# --------------------------------------------------------------------------------------------
# Downloading, against a local server


class _Server:
    """Serves `files` under several behaviours, one per URL prefix:

    /good/NAME   the file;  /bad/NAME  other bytes (a checksum mismatch);
    /drop/NAME   announces the full length, sends half and closes the connection;
    /missing/NAME  404;
    /trickle/NAME  announces the full length, then sends one byte every 50 ms;
    /stall/NAME  accepts the request and sends nothing for 3 s.
    """

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                _, mode, name = self.path.split("/", 2)
                body = server.files.get(name)
                try:
                    self._answer(mode, body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up, as it should

            def _answer(self, mode, body):
                if mode == "stall":
                    time.sleep(3)
                    return
                if body is None or mode == "missing":
                    self.send_error(404)
                    return
                if mode == "bad":
                    body = bytes(b ^ 0xFF for b in body)
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if mode == "drop":
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                if mode == "trickle":
                    for i in range(len(body)):
                        self.wfile.write(body[i : i + 1])
                        self.wfile.flush()
                        time.sleep(0.05)
                    return
                self.wfile.write(body)

            def log_message(self, *args):  # keep the test output clean
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def url(self, mode: str) -> str:
        return f"http://127.0.0.1:{self.port}/{mode}/"


@pytest.fixture
def served(tmp_path) -> Iterator[tuple[_Server, list[RemoteFile]]]:
    # Big enough (~190 kB) that a half-sent file arrives in several chunks.
    src = _write_dataset(tmp_path / "src", n_train=240, n_test=8, seed=5)
    files = {p.name: p.read_bytes() for p in src}
    remote = [RemoteFile(n, hashlib.sha256(b).hexdigest(), len(b)) for n, b in files.items()]
    server = _Server(files)
    server.thread.start()
    try:
        yield server, remote
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
        server.thread.join()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_download_verifies_and_caches(served, tmp_path):
    server, remote = served
    cache = tmp_path / "cache"
    paths = mnist_data.download(
        "mnist", cache_dir=cache, mirrors=[server.url("good")], files=remote, progress=False
    )
    assert [p.parent for p in paths] == [cache / "mnist"] * 4
    for p, f in zip(paths, remote, strict=True):
        assert hashlib.sha256(p.read_bytes()).digest().hex() == f.sha256
    assert _leftovers(cache) == sorted(f.name for f in remote)  # no temporary files left
    # A second call finds the verified files and makes no request.
    n = len(server.requests)
    mnist_data.download(
        "mnist", cache_dir=cache, mirrors=[server.url("good")], files=remote, progress=False
    )
    assert len(server.requests) == n


def test_checksum_mismatch_leaves_nothing(served, tmp_path):
    server, remote = served
    cache = tmp_path / "cache"
    with pytest.raises(mnist_data.DataUnavailableError) as info:
        mnist_data.download(
            "mnist", cache_dir=cache, mirrors=[server.url("bad")], files=remote, progress=False
        )
    message = str(info.value)
    assert f"{server.url('bad')}{remote[0].name}: ValueError" in message
    assert remote[0].sha256 in message  # pooch names the expected hash
    assert _leftovers(cache) == []


def test_dropped_connection_leaves_nothing(served, tmp_path):
    server, remote = served
    cache = tmp_path / "cache"
    with pytest.raises(mnist_data.DataUnavailableError, match="drop/train-images") as info:
        mnist_data.download(
            "mnist", cache_dir=cache, mirrors=[server.url("drop")], files=remote, progress=False
        )
    assert "ConnectionError: connection closed after" in str(info.value)
    assert _leftovers(cache) == []


def test_corrupt_cached_file_is_replaced(served, tmp_path):
    server, remote = served
    cache = tmp_path / "cache"
    (cache / "mnist").mkdir(parents=True)
    stale = cache / "mnist" / remote[1].name
    stale.write_bytes(b"half a file")
    mnist_data.download(
        "mnist", cache_dir=cache, mirrors=[server.url("good")], files=remote, progress=False
    )
    assert hashlib.sha256(stale.read_bytes()).hexdigest() == remote[1].sha256


def test_falls_back_to_next_mirror(served, tmp_path):
    server, remote = served
    mirrors = [server.url("missing"), server.url("drop"), server.url("good")]
    paths = mnist_data.download(
        "mnist", cache_dir=tmp_path / "cache", mirrors=mirrors, files=remote, progress=False
    )
    assert len(paths) == 4
    first = [r for r in server.requests if r.endswith(remote[0].name)]
    assert first == [f"/{m}/{remote[0].name}" for m in ("missing", "drop", "good")]
    assert _leftovers(tmp_path / "cache") == sorted(f.name for f in remote)


def test_load_dataset_downloads_then_reads(served, tmp_path, monkeypatch):
    server, remote = served
    spec = mnist_data.DATASETS["fashion_mnist"]
    monkeypatch.setitem(
        mnist_data.DATASETS,
        "fashion_mnist",
        dataclasses.replace(
            spec,
            mirrors=(server.url("missing"), server.url("good")),
            files=tuple(remote),
            system_dirs=(),
        ),
    )
    monkeypatch.delenv("JAXLOSS_DATA_DIR", raising=False)
    logs = []
    ds = mnist_data.load_dataset(
        "fashion_mnist", cache_dir=tmp_path / "cache", progress=False, log=logs.append
    )
    assert ds.x_train.shape == (240, 28, 28) and ds.source == str(tmp_path / "cache/fashion_mnist")
    assert "reading" in logs[0]


def test_offline_error_says_what_was_tried_and_what_to_do(tmp_path, monkeypatch):
    # Port 1 on 127.0.0.1: nothing listens, the connection is refused at once.
    monkeypatch.setitem(
        mnist_data.DATASETS,
        "fashion_mnist",
        dataclasses.replace(
            mnist_data.DATASETS["fashion_mnist"],
            mirrors=("http://127.0.0.1:1/a/", "http://127.0.0.1:1/b/"),
            system_dirs=(tmp_path / "no-debian",),
        ),
    )
    monkeypatch.delenv("JAXLOSS_DATA_DIR", raising=False)
    with pytest.raises(mnist_data.DataUnavailableError) as info:
        mnist_data.load_dataset(
            "fashion_mnist", tmp_path / "flag", cache_dir=tmp_path / "cache", progress=False
        )
    message = str(info.value)
    for needle in (
        f"--data-dir: {tmp_path / 'flag'}",
        f"user cache: {tmp_path / 'cache' / 'fashion_mnist'}",
        f"system package: {tmp_path / 'no-debian'}",
        "http://127.0.0.1:1/a/train-images-idx3-ubyte.gz: URLError",
        "http://127.0.0.1:1/b/train-images-idx3-ubyte.gz: URLError",
        "apt-get install dataset-fashion-mnist",
        "--dataset digits",
    ):
        assert needle in message
    assert _leftovers(tmp_path / "cache") == []


def test_no_download_error_lists_folders(tmp_path, monkeypatch):
    monkeypatch.delenv("JAXLOSS_DATA_DIR", raising=False)
    with pytest.raises(mnist_data.DataUnavailableError, match="downloads disabled") as info:
        mnist_data.load_dataset("mnist", allow_download=False, cache_dir=tmp_path)
    assert f"user cache: {tmp_path / 'mnist'}" in str(info.value)


def test_no_download_error_names_the_mirrors(tmp_path, monkeypatch):
    # It used to say "fetch ... (or any mirror above)" with no mirror above.
    monkeypatch.delenv("JAXLOSS_DATA_DIR", raising=False)
    spec = dataclasses.replace(mnist_data.DATASETS["fashion_mnist"], system_dirs=())
    monkeypatch.setitem(mnist_data.DATASETS, "fashion_mnist", spec)
    for name in ("mnist", "fashion_mnist"):
        with pytest.raises(mnist_data.DataUnavailableError) as info:
            mnist_data.load_dataset(name, allow_download=False, cache_dir=tmp_path)
        message = str(info.value)
        assert "above" not in message
        for mirror in mnist_data.DATASETS[name].mirrors:
            assert mirror in message


# --------------------------------------------------------------------------------------------
# Faults found by injection: each test fails without its fix.


def test_empty_test_set_is_rejected(tmp_path):
    # Zero images passed every IDX check, then training crashed in range(0, 0, 0).
    _write_dataset(tmp_path, n_test=0)
    with pytest.raises(IdxFormatError, match=r"t10k-images-idx3-ubyte.gz: holds no images"):
        mnist_data.load_dataset("mnist", tmp_path, allow_download=False, cache_dir=tmp_path / "c")


def test_trickling_mirror_is_abandoned_at_the_deadline(served, tmp_path):
    # One byte every 50 ms never trips the 5 s read timeout; only an overall deadline ends it.
    server, remote = served
    t0 = time.monotonic()
    with pytest.raises(mnist_data.DataUnavailableError) as info:
        mnist_data.download(
            "mnist",
            cache_dir=tmp_path / "cache",
            mirrors=[server.url("trickle")],
            files=remote[:1],
            progress=False,
            timeout=5.0,
            deadline=0.5,
        )
    assert time.monotonic() - t0 < 4.0
    assert "TimeoutError: not done after the 0.5 s deadline" in str(info.value)
    assert _leftovers(tmp_path / "cache") == []


def test_failed_mirror_is_not_asked_again(served, tmp_path):
    # A stalled mirror cost one timeout per file; now it costs one per run.
    server, remote = served
    paths = mnist_data.download(
        "mnist",
        cache_dir=tmp_path / "cache",
        mirrors=[server.url("stall"), server.url("good")],
        files=remote,
        progress=False,
        timeout=0.3,
    )
    assert len(paths) == 4
    assert [r for r in server.requests if r.startswith("/stall/")] == [f"/stall/{remote[0].name}"]
    assert len([r for r in server.requests if r.startswith("/good/")]) == 4


def test_all_mirrors_failed_earlier_says_so(served, tmp_path):
    server, remote = served
    with pytest.raises(mnist_data.DataUnavailableError) as info:
        mnist_data.download(
            "mnist",
            cache_dir=tmp_path / "cache",
            mirrors=[server.url("stall")],
            files=[remote[0], dataclasses.replace(remote[0], name=remote[1].name)],
            progress=False,
            timeout=0.3,
        )
    # The first file's error ends the call; the message names the mirror's error.
    assert "TimeoutError" in str(info.value) or "URLError" in str(info.value)
    assert len(server.requests) == 1


_KILLED_DOWNLOAD = """
import sys
sys.path.insert(0, sys.argv[1])
import mnist_data
f = mnist_data.RemoteFile(sys.argv[4], "0" * 64, int(sys.argv[5]))
mnist_data.download("mnist", cache_dir=sys.argv[2], mirrors=[sys.argv[3]], files=[f],
                    progress=False, deadline=600)
"""


def test_killed_download_leaves_no_temp_file_for_long(served, tmp_path):
    server, remote = served
    cache = tmp_path / "cache"
    examples = Path(mnist_data.__file__).parent
    argv = [str(examples), str(cache), server.url("trickle"), remote[0].name, str(remote[0].size)]
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_DOWNLOAD, *argv])
    try:
        for _ in range(400):  # until the download has started writing
            parts = list((cache / "mnist").glob("*.part.*")) if cache.exists() else []
            if parts and any(r.startswith("/trickle/") for r in server.requests):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the download never started")
    finally:
        proc.kill()
        proc.wait()
    assert parts[0].exists()  # SIGKILL runs no cleanup
    # Another run's live download and a fresh one from another host are left alone; an old
    # one from another host (its process cannot be checked) is removed.
    host = socket.gethostname()
    live = cache / "mnist" / f"x.gz.part.{os.getpid()}.abc@{host}"
    fresh = cache / "mnist" / "y.gz.part.1.abc@other-host"
    old = cache / "mnist" / "z.gz.part.1.abc@other-host"
    for p in (live, fresh, old):
        p.write_bytes(b"partial")
    os.utime(old, (0, time.time() - mnist_data.STALE_PART_SECONDS - 10))
    mnist_data.download(
        "mnist", cache_dir=cache, mirrors=[server.url("good")], files=remote, progress=False
    )
    assert _leftovers(cache) == sorted([live.name, fresh.name, *(f.name for f in remote)])


def test_unwritable_cache_is_reported_as_such(served, tmp_path):
    # It was reported as a failed download ("offline?"), after trying every mirror.
    server, remote = served
    (tmp_path / "a-file").write_text("")
    cache = tmp_path / "a-file" / "cache"
    with pytest.raises(mnist_data.CacheNotWritableError) as info:
        mnist_data.download(
            "mnist", cache_dir=cache, mirrors=[server.url("good")], files=remote, progress=False
        )
    assert f"cannot write to the download folder {cache / 'mnist'}: Not a directory" in str(
        info.value
    )
    assert "not the network" in str(info.value)
    assert server.requests == []


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="root writes into a read-only folder anyway (CI runs as root); the test above "
    "covers the same code path with a folder under a regular file",
)
def test_read_only_cache_is_a_permissions_problem(served, tmp_path):
    server, remote = served
    cache = tmp_path / "cache"
    (cache / "mnist").mkdir(parents=True)
    (cache / "mnist").chmod(0o555)
    try:
        with pytest.raises(mnist_data.CacheNotWritableError, match="Permission denied"):
            mnist_data.download(
                "mnist", cache_dir=cache, mirrors=[server.url("good")], files=remote
            )
    finally:
        (cache / "mnist").chmod(0o755)
    assert server.requests == []
