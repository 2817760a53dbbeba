"""Data for the MNIST example: find, download (verified) and read the IDX files.

Three datasets are known:

* ``mnist``: LeCun, Cortes and Burges' handwritten digits, four gzipped IDX files.
* ``fashion_mnist``: Zalando's Fashion-MNIST, the same four file names and format.
* ``digits``: scikit-learn's bundled 8×8 digits, upscaled to 28×28; needs no files at all.

The IDX files are looked for, in this order, in ``--data-dir``, in ``$JAXLOSS_DATA_DIR``,
in the user cache (``~/.cache/jaxloss/<dataset>``, honouring ``$XDG_CACHE_HOME``) and, for
Fashion-MNIST, in the folder of Debian's ``dataset-fashion-mnist`` package. A folder
matches when it, or its ``<dataset>`` subfolder, holds all four files, gzipped or not.
Failing all of them, the files are downloaded into the cache, mirror after mirror, each
checked against its published SHA-256 before it gets its final name.

Files found locally are checked for structure (magic number, dimensions, exact size, matching
and non-zero counts, labels in range) but not against the download checksums: a file
re-compressed by a packager is the same data in other gzip bytes (Debian's are).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.client
import os
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# The IDX type byte (third byte of the magic number) and the big-endian numpy dtype it means.
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {dt: code for code, dt in _IDX_DTYPES.items()}

# Where Debian's `dataset-fashion-mnist` package puts the four .gz files (`dpkg -L`, version
# 0.0~git20200523.55506a9-1). Debian strips the file name from each gzip header and clamps its
# timestamp, so the files hold the upstream deflate streams under other SHA-256s.
FASHION_MNIST_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")

ENV_DATA_DIR = "JAXLOSS_DATA_DIR"
NUM_CLASSES = 10
DATASET_NAMES = ("mnist", "fashion_mnist", "digits")

# A download in progress is written to `<name>.part.<pid>.<random>@<host>` beside its target.
# A later download removes the ones whose process is gone (same host) or that have not been
# touched for STALE_PART_SECONDS (any host: a live download writes or gives up long before).
_PART = ".part."
STALE_PART_SECONDS = 3600.0


class IdxFormatError(ValueError):
    """A file is not a well-formed IDX file, or not the one that was expected."""


class DataUnavailableError(RuntimeError):
    """A dataset could be neither found locally nor downloaded."""


class CacheNotWritableError(DataUnavailableError):
    """The download folder cannot be created or written: a permissions or disk problem."""


LOAD_ERRORS = (DataUnavailableError, IdxFormatError)  # what `load` raises about the data


@dataclasses.dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset as published: its name, SHA-256 and size in bytes."""

    name: str
    sha256: str
    size: int


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What is known about an IDX dataset: its files, mirrors and where to read about it."""

    name: str
    title: str
    homepage: str
    mirrors: tuple[str, ...]
    files: tuple[RemoteFile, ...]  # train images, train labels, test images, test labels
    system_dirs: tuple[Path, ...] = ()
    install_hint: str = ""


def _published(*sha256_and_size: tuple[str, int]) -> tuple[RemoteFile, ...]:
    names = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
    names += ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    return tuple(RemoteFile(n, *f) for n, f in zip(names, sha256_and_size, strict=True))


# SHA-256 and size of the gzipped files as served. MNIST: the values registered by
# torchvision's and TensorFlow Datasets' download checksums (the same four in both).
# Fashion-MNIST: TensorFlow Datasets' values (upstream publishes MD5s only; Debian's files,
# given back their gzip headers, match both).
DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        "mnist",
        "MNIST",
        "http://yann.lecun.com/exdb/mnist/",
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        files=_published(
            ("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9912422),
            ("3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28881),
            ("8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1648877),
            ("f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4542),
        ),
    ),
    "fashion_mnist": DatasetSpec(
        "fashion_mnist",
        "Fashion-MNIST",
        "https://github.com/zalandoresearch/fashion-mnist",
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        files=_published(
            ("3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84", 26421880),
            ("a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845", 29515),
            ("346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073", 4422102),
            ("67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5", 5148),
        ),
        system_dirs=(FASHION_MNIST_DEBIAN_DIR,),
        install_hint="on Debian or Ubuntu: `apt-get install dataset-fashion-mnist`",
    ),
}


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A loaded dataset: uint8 images ``(N, 28, 28)``, int32 labels ``(N,)``, and provenance."""

    name: str
    title: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str


# --------------------------------------------------------------------------------------------
# IDX files


def _read_bytes(path: Path) -> bytes:
    """The content of ``path``, gunzipped when it is gzip (by its magic bytes, not its name)."""
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError as err:
        raise IdxFormatError(f"{path}: truncated gzip stream ({len(raw)} bytes read)") from err
    except (gzip.BadGzipFile, zlib.error) as err:
        raise IdxFormatError(f"{path}: corrupt gzip stream: {err}") from err


def read_idx(
    path: str | os.PathLike[str],
    *,
    ndim: int | None = None,
    dtype: np.dtype | type | None = None,
) -> np.ndarray:
    """Reads an IDX file (raw or gzipped) into a native-endian numpy array.

    Args:
      path: the file; gzip is recognised by its content, whatever the name.
      ndim: if given, the number of dimensions the file must have.
      dtype: if given, the element type the file must have (e.g. ``np.uint8``).

    Raises:
      IdxFormatError: bad magic number, unknown type, unexpected rank or type, a truncated
        header or payload, or bytes beyond the declared payload; the message names the file
        and gives the expected and found values.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise IdxFormatError(f"{path}: {len(data)} bytes, too short for an IDX magic number")
    zero, code, rank = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0 or code not in _IDX_DTYPES:
        raise IdxFormatError(
            f"{path}: bad IDX magic number 0x{data[:4].hex()}; expected 0x0000TTNN with type "
            f"byte TT in {{{', '.join(f'{c:02x}' for c in _IDX_DTYPES)}}} (08 = uint8)"
        )
    if rank == 0:
        raise IdxFormatError(f"{path}: IDX header declares 0 dimensions")
    item = _IDX_DTYPES[code]
    if ndim is not None and rank != ndim:
        raise IdxFormatError(f"{path}: expected {ndim} dimensions, the header declares {rank}")
    if dtype is not None and item.newbyteorder("=") != np.dtype(dtype).newbyteorder("="):
        raise IdxFormatError(f"{path}: expected elements of type {np.dtype(dtype)}, found {item}")
    header = 4 + 4 * rank
    if len(data) < header:
        raise IdxFormatError(
            f"{path}: truncated header: {len(data)} bytes, a rank-{rank} header needs {header}"
        )
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank))
    expected = header + item.itemsize * int(np.prod(shape, dtype=np.int64))
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "wrong size"
        extra = f" ({len(data) - expected} too many)" if len(data) > expected else ""
        raise IdxFormatError(
            f"{path}: {what}: header declares shape {shape} of {item} ({expected} bytes in "
            f"all), the file holds {len(data)} bytes{extra}"
        )
    array = np.frombuffer(data, dtype=item, offset=header).reshape(shape)
    return array.astype(item.newbyteorder("="))


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Writes ``array`` as an IDX file, gzipped when ``path`` ends in ``.gz``."""
    array = np.asarray(array)
    big = array.dtype.newbyteorder(">")
    if big not in _IDX_CODES:
        raise ValueError(f"IDX cannot hold {array.dtype}")
    header = bytes([0, 0, _IDX_CODES[big], array.ndim])
    header += b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    payload = header + array.astype(big).tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(payload, mtime=0) if path.suffix == ".gz" else payload)


def _load_idx_pair(images: Path, labels: Path) -> tuple[np.ndarray, np.ndarray]:
    x = read_idx(images, ndim=3, dtype=np.uint8)
    y = read_idx(labels, ndim=1, dtype=np.uint8)
    if x.shape[1:] != (28, 28):
        raise IdxFormatError(f"{images}: expected 28×28 images, found {x.shape[1]}×{x.shape[2]}")
    if x.shape[0] != y.shape[0]:
        raise IdxFormatError(
            f"{images} holds {x.shape[0]} images but {labels} holds {y.shape[0]} labels"
        )
    if x.shape[0] == 0:
        raise IdxFormatError(f"{images}: holds no images (the header declares a count of 0)")
    if int(y.max()) >= NUM_CLASSES:
        raise IdxFormatError(f"{labels}: label {int(y.max())} outside 0..{NUM_CLASSES - 1}")
    return x, y.astype(np.int32)


# --------------------------------------------------------------------------------------------
# Locating


def default_cache_dir() -> Path:
    """The user cache root, ``~/.cache/jaxloss`` on Linux (``$XDG_CACHE_HOME`` honoured)."""
    import pooch

    return Path(pooch.os_cache("jaxloss"))


def _files_in(folder: Path, spec: DatasetSpec) -> list[Path] | None:
    """The four files of ``spec`` in ``folder``, each gzipped or raw; None if one is missing."""
    found = []
    for f in spec.files:
        for candidate in (folder / f.name, folder / f.name.removesuffix(".gz")):
            if candidate.is_file():
                found.append(candidate)
                break
        else:
            return None
    return found


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _is_published(path: Path, f: RemoteFile) -> bool:
    return path.stat().st_size == f.size and _sha256(path) == f.sha256  # size first: cheap


def find_local(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[list[Path] | None, list[str]]:
    """Looks for the four files of IDX dataset ``name`` without touching the network.

    Returns:
      ``(paths, tried)``: the four paths in the order train images, train labels, test images,
      test labels (or None), and one line per folder looked at.
    """
    spec = DATASETS[name]
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    candidates: list[tuple[str, Path]] = []
    for label, root in (
        ("--data-dir", data_dir),
        (f"${ENV_DATA_DIR}", os.environ.get(ENV_DATA_DIR)),
    ):
        if root:
            root = Path(root).expanduser()
            candidates += [(label, root / spec.name), (label, root)]
    candidates.append(("user cache", cache / spec.name))
    candidates += [("system package", d) for d in spec.system_dirs]
    tried = []
    for label, folder in candidates:
        paths = _files_in(folder, spec)
        if paths is None:
            tried.append(f"{label}: {folder} (not all four files there)")
        # Only our verified downloads land in the cache, so it must hold the published bytes.
        elif label == "user cache" and not all(
            p.name == f.name and _is_published(p, f) for p, f in zip(paths, spec.files, strict=True)
        ):
            tried.append(f"{label}: {folder} (a file fails its size or SHA-256 check)")
        else:
            return paths, tried
    return None, tried


# --------------------------------------------------------------------------------------------
# Downloading

# Errors that say the mirror (or the way to it) is unusable, not just this one file: the
# mirror is skipped for the rest of the run. An HTTP error or a checksum mismatch is per file.
_MIRROR_ERRORS = (urllib.error.URLError, OSError, http.client.HTTPException)


def download(
    name: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    mirrors: Sequence[str] | None = None,
    files: Sequence[RemoteFile] | None = None,
    progress: bool = True,
    timeout: float = 30.0,
    deadline: float = 600.0,
) -> list[Path]:
    """Downloads the files of dataset ``name`` into ``<cache_dir>/<name>``, verified.

    Each file is streamed to a temporary file beside its target, checked against its
    SHA-256 and only then renamed, so an interrupted or corrupt download never leaves a file
    under the final name; temporary files left by a killed run are removed here. A file that
    fails on one mirror is tried on the next; a mirror that stalls, refuses or drops the
    connection is not asked again for the other files. Files already in the cache with the
    right checksum are not fetched again.

    Args:
      name: ``"mnist"`` or ``"fashion_mnist"``.
      cache_dir: the cache root (default: :func:`default_cache_dir`).
      mirrors: base URLs ending in ``/`` (default: the spec's mirrors).
      files: which files to fetch (default: the four of the spec); tests pass their own.
      progress: show a tqdm progress bar per file.
      timeout: seconds to wait for the connection, or for the next bytes, before giving up.
      deadline: seconds one file may take in all on one mirror (a trickling mirror is
        abandoned after this long, whatever the rate).

    Raises:
      CacheNotWritableError: the cache folder cannot be created or written.
      DataUnavailableError: a file could not be had from any mirror; the message lists each
        URL tried with its error, and how to get the data by hand.
    """
    spec = DATASETS[name]
    target = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / name
    mirrors = tuple(mirrors) if mirrors is not None else spec.mirrors
    files = tuple(files) if files is not None else spec.files
    _prepare_cache(target)
    failed: dict[str, str] = {}  # mirror -> why it was given up
    paths = []
    for f in files:
        path = target / f.name
        errors = []
        if path.is_file() and _is_published(path, f):
            paths.append(path)
            continue
        for base in mirrors:
            url = base + f.name
            if base in failed:
                errors.append(f"  {url}: skipped, the mirror failed earlier ({failed[base]})")
                continue
            try:
                _fetch(url, path, f, timeout=timeout, deadline=deadline, progress=progress)
            except (urllib.error.HTTPError, ValueError) as err:
                if isinstance(err, urllib.error.HTTPError):
                    err.close()
                errors.append(f"  {url}: {type(err).__name__}: {_one_line(err)}")
                continue
            except _MIRROR_ERRORS as err:
                failed[base] = f"{type(err).__name__}: {_one_line(err)}"
                errors.append(f"  {url}: {failed[base]}")
                continue
            paths.append(path)
            break
        else:
            raise DataUnavailableError(
                f"could not download {spec.title} file {f.name} into {target}; tried:\n"
                + "\n".join(errors)
                + "\n"
                + _how_to_get(spec)
            )
    return paths


def ensure_writable(folder: Path) -> None:
    """Creates ``folder`` and proves it writable with a probe file; raises OSError if not."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test-")
    os.close(fd)
    os.unlink(probe)


def _prepare_cache(target: Path) -> None:
    """Creates ``target``, proves it writable, and removes temporary files of dead downloads."""
    try:
        ensure_writable(target)
    except OSError as err:
        raise CacheNotWritableError(
            f"cannot write to the download folder {target}: {err.strerror or err} (a "
            f"permissions or disk problem, not the network); pass --data-dir with the files, "
            f"or point $XDG_CACHE_HOME at a writable folder"
        ) from err
    host = socket.gethostname()
    for part in target.glob(f"*{_PART}*"):
        pid, _, rest = part.name.partition(_PART)[2].partition(".")
        try:
            age = time.time() - part.stat().st_mtime
        except FileNotFoundError:
            continue  # another run just finished with it
        gone = rest.rpartition("@")[2] == host and pid.isdigit() and not _alive(int(pid))
        if gone or age > STALE_PART_SECONDS:
            part.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _fetch(url: str, path: Path, f: RemoteFile, *, timeout, deadline, progress) -> None:
    from tqdm.auto import tqdm

    start = time.monotonic()
    try:
        fd, tmp = tempfile.mkstemp(
            dir=path.parent,
            prefix=f"{path.name}{_PART}{os.getpid()}.",
            suffix=f"@{socket.gethostname()}",
        )
    except OSError as err:
        raise CacheNotWritableError(f"cannot write to {path.parent}: {err}") from err
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or f.size)
            digest, received = hashlib.sha256(), 0
            with tqdm(
                total=total, unit="B", unit_scale=True, desc=f.name, disable=not progress
            ) as bar:
                # read1 returns what has arrived, so a slow trickle still reaches the deadline.
                while chunk := response.read1(1 << 16):
                    if time.monotonic() - start > deadline:
                        raise TimeoutError(
                            f"not done after the {deadline:g} s deadline ({received} of "
                            f"{total} bytes)"
                        )
                    try:
                        out.write(chunk)
                    except OSError as err:
                        raise CacheNotWritableError(f"cannot write to {tmp}: {err}") from err
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if received < total:
            raise ConnectionError(f"connection closed after {received} of {total} bytes")
        if digest.hexdigest() != f.sha256:
            raise ValueError(f"SHA-256 {digest.hexdigest()}, expected {f.sha256}")
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= 300 else text[:297] + "..."


def _how_to_get(spec: DatasetSpec) -> str:
    lines = [
        f"To get {spec.title} by hand ({spec.homepage}): fetch "
        f"{', '.join(f.name for f in spec.files)} from one of these mirrors:",
        *(f"  {m}" for m in spec.mirrors),
        f"and put them in a folder passed as --data-dir or ${ENV_DATA_DIR} (directly or in a",
        f"'{spec.name}' subfolder), or in {default_cache_dir() / spec.name}.",
    ]
    if spec.install_hint:
        lines.append(f"Or install it: {spec.install_hint}.")
    lines.append("For a fully offline run use --dataset digits (scikit-learn's bundled digits).")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Loading


def _load_digits(seed: int = 0) -> Dataset:
    """scikit-learn's 1797 8×8 digits, upscaled ×3 and padded to 28×28, split 80/20."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    # Values are 0..16; ×3 nearest-neighbour upscaling gives 24×24, a 2-pixel border 28×28,
    # which is MNIST's layout (digit in the centre, blank border).
    images = digits.images.astype(np.float32) * (255.0 / 16.0)
    images = np.repeat(np.repeat(images, 3, axis=1), 3, axis=2)
    images = np.round(np.pad(images, ((0, 0), (2, 2), (2, 2)))).astype(np.uint8)
    labels = digits.target.astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=360, random_state=seed, stratify=labels
    )
    return Dataset(
        "digits",
        "scikit-learn digits",
        x_train,
        y_train,
        x_test,
        y_test,
        "scikit-learn load_digits()",
    )


def load_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    allow_download: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    log=None,
) -> Dataset:
    """Finds (or downloads) and reads dataset ``name``: ``mnist``, ``fashion_mnist`` or ``digits``.

    Args:
      data_dir: the ``--data-dir`` flag.
      allow_download: when False, only local folders are looked at.
      cache_dir: the cache root (default: :func:`default_cache_dir`).
      progress: show download progress bars.
      log: a ``print``-like function for what was found where (default: stderr).

    Raises:
      DataUnavailableError: not found locally and (if allowed) not downloadable; the message
        lists every folder and URL tried and how to get the data.
      CacheNotWritableError: the same, when the download folder cannot be written.
      IdxFormatError: a file was found but is not a well-formed IDX file of the right kind.
    """
    if name == "digits":
        return _load_digits()
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {DATASET_NAMES}")
    spec = DATASETS[name]
    paths, tried = find_local(name, data_dir, cache_dir=cache_dir)
    looked = "; looked in:\n  " + "\n  ".join(tried)
    if paths is None and not allow_download:
        raise DataUnavailableError(
            f"{spec.title} is not available locally (downloads disabled){looked}\n"
            + _how_to_get(spec)
        )
    if paths is None:
        try:
            paths = download(name, cache_dir=cache_dir, progress=progress)
        except DataUnavailableError as err:
            raise type(err)(f"{spec.title} is not available locally{looked}\nand {err}") from None
    source = str(paths[0].parent)
    (log or (lambda m: print(m, file=sys.stderr)))(
        f"{spec.title}: reading the {len(paths)} IDX files in {source}"
    )
    x_train, y_train = _load_idx_pair(paths[0], paths[1])
    x_test, y_test = _load_idx_pair(paths[2], paths[3])
    return Dataset(name, spec.title, x_train, y_train, x_test, y_test, source)


def load(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    allow_download: bool = True,
    progress: bool = True,
    log=print,
) -> Dataset:
    """:func:`load_dataset`, and ``name="auto"``: the first of the three that can be had.

    With ``"auto"``: MNIST if it is found or can be downloaded, else an installed Fashion-MNIST,
    else scikit-learn's digits; ``log`` says why each one was passed over.
    """

    def attempt(name: str, allow_download: bool) -> Dataset:
        return load_dataset(name, data_dir, allow_download=allow_download, progress=progress)

    if name != "auto":
        return attempt(name, allow_download)
    try:
        return attempt("mnist", allow_download)
    except CacheNotWritableError as err:  # a local problem: say which
        log(f"MNIST cannot be had: not found locally, {str(err).splitlines()[-1]}")
    except DataUnavailableError:
        how = "and the download failed: offline?" if allow_download else "downloads disabled"
        log(f"MNIST cannot be had: not found locally, {how} (--dataset mnist says more).")
    try:
        return attempt("fashion_mnist", False)
    except DataUnavailableError:
        log("Fashion-MNIST is not installed either (apt-get install dataset-fashion-mnist).")
    log("Using scikit-learn's digits.")
    return load_dataset("digits")


def fixed_subset(n: int, size: int | None, seed: int, salt: int) -> np.ndarray:
    """Sorted indices of ``size`` of ``n`` rows, the same for every run with this seed."""
    if size is None or size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng([seed, salt]).permutation(n)[:size])
