"""Data for the MNIST example: an IDX reader, dataset locating, and verified downloads.

Three datasets are known:

* ``mnist``: LeCun, Cortes and Burges' handwritten digits, four gzipped IDX files.
* ``fashion_mnist``: Zalando's Fashion-MNIST, the same four file names and format.
* ``digits``: scikit-learn's bundled 8×8 digits, upscaled to 28×28; needs no files at all.

The IDX files are looked for, in this order, in ``--data-dir``, in ``$JAXLOSS_DATA_DIR``,
in the user cache (``~/.cache/jaxloss/<dataset>``, honouring ``$XDG_CACHE_HOME``) and, for
Fashion-MNIST, in the folder of Debian's ``dataset-fashion-mnist`` package. A folder
matches when it, or its ``<dataset>`` subfolder, holds all four files, gzipped or not.
Failing all of them, the files are downloaded into the cache with pooch, mirror after
mirror, and each is checked against its published SHA-256 before it gets its final name.

Files that are found locally are checked for structure (magic number, dimensions, exact
size, matching counts, labels in range) but not against the download checksums: a file
re-compressed by a packager is the same data in different gzip bytes (Debian's Fashion-MNIST
files are: see ``FASHION_MNIST_DEBIAN_DIR``).
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import sys
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "DATASETS",
    "DataUnavailableError",
    "Dataset",
    "IdxFormatError",
    "RemoteFile",
    "available_offline",
    "default_cache_dir",
    "download",
    "find_local",
    "load_dataset",
    "read_idx",
    "write_idx",
]

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

# Where Debian's `dataset-fashion-mnist` package puts the four .gz files (checked with
# `dpkg -L dataset-fashion-mnist`, version 0.0~git20200523.55506a9-1). Debian's build strips
# the file name from each gzip header and clamps its timestamp (strip-nondeterminism), so
# these files hold the same deflate stream as the upstream ones but have other SHA-256s:
# putting the name and the upstream timestamp back gives files whose MD5 and SHA-256 match
# the published ones byte for byte.
FASHION_MNIST_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")

ENV_DATA_DIR = "JAXLOSS_DATA_DIR"


class IdxFormatError(ValueError):
    """A file is not a well-formed IDX file, or not the one that was expected."""


class DataUnavailableError(RuntimeError):
    """A dataset could be neither found locally nor downloaded."""


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
    train_images: RemoteFile
    train_labels: RemoteFile
    test_images: RemoteFile
    test_labels: RemoteFile
    system_dirs: tuple[Path, ...] = ()
    install_hint: str = ""

    @property
    def files(self) -> tuple[RemoteFile, ...]:
        return (self.train_images, self.train_labels, self.test_images, self.test_labels)


# SHA-256 of the gzipped files as served by the mirrors. MNIST: the values registered by
# torchvision's and TensorFlow Datasets' download checksums (the same four in both).
# Fashion-MNIST: TensorFlow Datasets' values; the upstream README publishes MD5s only, and
# the files rebuilt from Debian's package (see FASHION_MNIST_DEBIAN_DIR) match both.
DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        title="MNIST",
        homepage="http://yann.lecun.com/exdb/mnist/",
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        train_images=RemoteFile(
            "train-images-idx3-ubyte.gz",
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            9912422,
        ),
        train_labels=RemoteFile(
            "train-labels-idx1-ubyte.gz",
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            28881,
        ),
        test_images=RemoteFile(
            "t10k-images-idx3-ubyte.gz",
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            1648877,
        ),
        test_labels=RemoteFile(
            "t10k-labels-idx1-ubyte.gz",
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            4542,
        ),
    ),
    "fashion_mnist": DatasetSpec(
        name="fashion_mnist",
        title="Fashion-MNIST",
        homepage="https://github.com/zalandoresearch/fashion-mnist",
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        train_images=RemoteFile(
            "train-images-idx3-ubyte.gz",
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            26421880,
        ),
        train_labels=RemoteFile(
            "train-labels-idx1-ubyte.gz",
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            29515,
        ),
        test_images=RemoteFile(
            "t10k-images-idx3-ubyte.gz",
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            4422102,
        ),
        test_labels=RemoteFile(
            "t10k-labels-idx1-ubyte.gz",
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
            5148,
        ),
        system_dirs=(FASHION_MNIST_DEBIAN_DIR,),
        install_hint="on Debian or Ubuntu: `apt-get install dataset-fashion-mnist`",
    ),
}

DATASET_NAMES = ("mnist", "fashion_mnist", "digits")
NUM_CLASSES = 10


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A loaded dataset: uint8 images ``(N, 28, 28)``, int32 labels ``(N,)``, and provenance."""

    name: str
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

    Returns:
      An array of the shape and type the header declares.

    Raises:
      IdxFormatError: bad magic number, unknown type, unexpected rank or type, a truncated
        header or payload, or bytes beyond the declared payload. The message names the file
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
    if len(data) < expected:
        raise IdxFormatError(
            f"{path}: truncated: header declares shape {shape} of {item} ({expected} bytes in "
            f"all), the file holds {len(data)} bytes"
        )
    if len(data) > expected:
        raise IdxFormatError(
            f"{path}: wrong size: header declares shape {shape} of {item} ({expected} bytes in "
            f"all), the file holds {len(data)} bytes ({len(data) - expected} too many)"
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
    if y.size and int(y.max()) >= NUM_CLASSES:
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
        raw_name = f.name.removesuffix(".gz")
        for candidate in (folder / f.name, folder / raw_name):
            if candidate.is_file():
                found.append(candidate)
                break
        else:
            return None
    return found


def _candidate_dirs(
    spec: DatasetSpec, data_dir: str | os.PathLike[str] | None, cache_dir: Path
) -> list[tuple[str, Path]]:
    dirs: list[tuple[str, Path]] = []
    roots = (("--data-dir", data_dir), (f"${ENV_DATA_DIR}", os.environ.get(ENV_DATA_DIR)))
    for label, root in roots:
        if root:
            root = Path(root).expanduser()
            dirs += [(label, root / spec.name), (label, root)]
    dirs.append(("user cache", cache_dir / spec.name))
    dirs += [("system package", d) for d in spec.system_dirs]
    return dirs


def find_local(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    system_dirs: Sequence[str | os.PathLike[str]] | None = None,
) -> tuple[list[Path] | None, list[str]]:
    """Looks for the four files of IDX dataset ``name`` without touching the network.

    Args:
      name: ``"mnist"`` or ``"fashion_mnist"``.
      data_dir: the ``--data-dir`` flag, looked at first (its ``<name>`` subfolder, then itself).
      cache_dir: the cache root (default: :func:`default_cache_dir`).
      system_dirs: overrides the spec's system folders (tests use this).

    Returns:
      ``(paths, tried)``: the four paths in the order train images, train labels, test images,
      test labels (or None), and one line per folder looked at.
    """
    spec = DATASETS[name]
    if system_dirs is not None:
        spec = dataclasses.replace(spec, system_dirs=tuple(Path(d) for d in system_dirs))
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    tried = []
    for label, folder in _candidate_dirs(spec, data_dir, cache):
        paths = _files_in(folder, spec)
        if paths is None:
            tried.append(f"{label}: {folder} (not all four files there)")
            continue
        if label == "user cache" and not _cache_is_valid(paths, spec):
            tried.append(f"{label}: {folder} (a file fails its size or SHA-256 check)")
            continue
        return paths, tried
    return None, tried


def _cache_is_valid(paths: list[Path], spec: DatasetSpec) -> bool:
    # Only our downloads land in the cache, so everything there must be the published bytes.
    import pooch

    return all(
        p.name == f.name
        and p.stat().st_size == f.size  # cheap first, and catches a truncated file
        and pooch.file_hash(str(p), alg="sha256") == f.sha256
        for p, f in zip(paths, spec.files, strict=True)
    )


# --------------------------------------------------------------------------------------------
# Downloading


def download(
    name: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    mirrors: Sequence[str] | None = None,
    files: Sequence[RemoteFile] | None = None,
    progress: bool = True,
    timeout: float = 30.0,
) -> list[Path]:
    """Downloads the files of dataset ``name`` into ``<cache_dir>/<name>``, verified.

    Each file is fetched by pooch, which streams it to a temporary file beside its target,
    checks the SHA-256 and only then renames it: an interrupted or corrupt download never
    leaves a file under the final name. A file that fails on one mirror (connection error,
    HTTP error, checksum mismatch) is tried on the next one. Files already in the cache with
    the right checksum are not fetched again.

    Args:
      name: ``"mnist"`` or ``"fashion_mnist"``.
      cache_dir: the cache root (default: :func:`default_cache_dir`).
      mirrors: base URLs ending in ``/`` (default: the spec's mirrors).
      files: which files to fetch (default: the four of the spec); tests pass their own.
      progress: show a tqdm progress bar per file.
      timeout: seconds to wait for a connection or for data before giving up on a mirror.

    Returns:
      The downloaded paths, in the order of ``files``.

    Raises:
      DataUnavailableError: a file could not be had from any mirror; the message lists each
        URL tried with its error, and how to get the data by hand.
    """
    import pooch
    import requests

    spec = DATASETS[name]
    target = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / name
    mirrors = tuple(mirrors) if mirrors is not None else spec.mirrors
    files = tuple(files) if files is not None else spec.files
    paths = []
    for f in files:
        errors = []
        for base in mirrors:
            url = base + f.name
            # Connect timeout, then read timeout between chunks.
            downloader = pooch.HTTPDownloader(progressbar=progress, timeout=(timeout, timeout))
            try:
                path = pooch.retrieve(
                    url,
                    known_hash=f"sha256:{f.sha256}",
                    fname=f.name,
                    path=target,
                    downloader=downloader,
                )
            except (requests.RequestException, ValueError, OSError) as err:
                errors.append(f"  {url}: {type(err).__name__}: {_one_line(err)}")
                continue
            paths.append(Path(path))
            break
        else:
            raise DataUnavailableError(
                f"could not download {spec.title} file {f.name} into {target}; tried:\n"
                + "\n".join(errors)
                + "\n"
                + _how_to_get(spec)
            )
    return paths


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= 300 else text[:297] + "..."


def _how_to_get(spec: DatasetSpec) -> str:
    names = ", ".join(f.name for f in spec.files)
    lines = [
        f"To get {spec.title} by hand: fetch {names} from {spec.homepage} (or any mirror above)",
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
    # which is MNIST's layout (digit in the centre 20×20-ish box, blank border).
    images = digits.images.astype(np.float32) * (255.0 / 16.0)
    images = np.repeat(np.repeat(images, 3, axis=1), 3, axis=2)
    images = np.pad(images, ((0, 0), (2, 2), (2, 2)))
    images = np.round(images).astype(np.uint8)
    labels = digits.target.astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=360, random_state=seed, stratify=labels
    )
    return Dataset("digits", x_train, y_train, x_test, y_test, "scikit-learn load_digits()")


def load_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    allow_download: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    log=None,
) -> Dataset:
    """Finds (or downloads) and reads dataset ``name``.

    Args:
      name: ``"mnist"``, ``"fashion_mnist"`` or ``"digits"``.
      data_dir: the ``--data-dir`` flag.
      allow_download: when False, only local folders are looked at.
      cache_dir: the cache root (default: :func:`default_cache_dir`).
      progress: show download progress bars.
      log: a ``print``-like function for what was found where (default: stderr).

    Raises:
      DataUnavailableError: not found locally and (if allowed) not downloadable; the message
        lists every folder and URL tried and how to get the data.
      IdxFormatError: a file was found but is not a well-formed IDX file of the right kind.
    """
    if log is None:

        def log(msg: str) -> None:
            print(msg, file=sys.stderr)

    if name == "digits":
        return _load_digits()
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {DATASET_NAMES}")
    spec = DATASETS[name]
    paths, tried = find_local(name, data_dir, cache_dir=cache_dir)
    if paths is None and allow_download:
        try:
            paths = download(name, cache_dir=cache_dir, progress=progress)
        except DataUnavailableError as err:
            raise DataUnavailableError(
                f"{spec.title} is not available locally; looked in:\n  "
                + "\n  ".join(tried)
                + f"\nand {err}"
            ) from None
    elif paths is None:
        raise DataUnavailableError(
            f"{spec.title} is not available locally (downloads disabled); looked in:\n  "
            + "\n  ".join(tried)
            + "\n"
            + _how_to_get(spec)
        )
    source = str(paths[0].parent)
    log(f"{spec.title}: reading {', '.join(p.name for p in paths)} from {source}")
    x_train, y_train = _load_idx_pair(paths[0], paths[1])
    x_test, y_test = _load_idx_pair(paths[2], paths[3])
    return Dataset(name, x_train, y_train, x_test, y_test, source)


def available_offline(name: str, data_dir: str | os.PathLike[str] | None = None) -> bool:
    """Whether dataset ``name`` can be loaded without the network."""
    return name == "digits" or find_local(name, data_dir)[0] is not None
