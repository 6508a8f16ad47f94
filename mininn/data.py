"""The MNIST and Fashion-MNIST datasets: a registry, an IDX reader, and fetching.

The two datasets ship as four IDX files each (training and test images, training
and test labels). IDX is the format of LeCun et al. (1998): a four-byte magic
number (two zero bytes, a data-type code, the number of dimensions), then each
dimension as a big-endian uint32, then the data in C order, big-endian.

:data:`DATASETS` pins the SHA-256 of each file's *uncompressed* content, so a file
is identified whichever mirror or gzip container delivered it. :func:`fetch`
tries the sources in order (a local folder named by ``MININN_DATA_DIR``, the team
mirror ``../shared/datasets`` beside the project, Debian's ``/usr/share/datasets``,
the publishers' addresses), verifies each candidate, and writes the four files
uncompressed into one folder, atomically.

Only NumPy and the standard library are imported here; ``tqdm`` is imported when
a download needs a progress bar, and is optional.

References:
    LeCun, Bottou, Bengio & Haffner (1998), "Gradient-based learning applied to
    document recognition", Proc. IEEE 86(11); the MNIST database and the IDX
    format: http://yann.lecun.com/exdb/mnist/
    Xiao, Rasul & Vollgraf (2017), "Fashion-MNIST: a Novel Image Dataset for
    Benchmarking Machine Learning Algorithms", https://arxiv.org/abs/1708.07747
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np

from mininn import config

__all__ = [
    "DATASETS",
    "DATA_DIR_ENV",
    "DatasetInfo",
    "DatasetNotFoundError",
    "default_sources",
    "fetch",
    "get_dataset",
    "load_split",
    "read_idx",
]

DATA_DIR_ENV = config.DATA_DIR_ENV
_log = config.get_logger("mininn.data")
"""Name of the environment variable that points at a local copy of the datasets."""

_PROJECT_ROOT = Path(__file__).resolve().parents[1]

# IDX data-type codes (third byte of the magic number) -> big-endian NumPy dtype.
_IDX_DTYPES: Mapping[int, np.dtype] = MappingProxyType(
    {
        0x08: np.dtype(np.uint8),
        0x09: np.dtype(np.int8),
        0x0B: np.dtype(">i2"),
        0x0C: np.dtype(">i4"),
        0x0D: np.dtype(">f4"),
        0x0E: np.dtype(">f8"),
    }
)

_SPLITS = ("train", "test")


@dataclass(frozen=True)
class DatasetInfo:
    """What identifies one dataset: its files, their digests, classes and addresses.

    Args:
        name: the dataset's name, also the name of its folder in a mirror.
        sha256: IDX file name (without ``.gz``) -> SHA-256 (hex) of its uncompressed
            content. Four files, in the order train images, train labels, test
            images, test labels.
        classes: class names, indexed by label.
        urls: base addresses (ending in ``/``) that serve each file as ``<file>.gz``.

    Example:
        >>> info = get_dataset("mnist")
        >>> info.split_files("test")
        ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')
        >>> info.classes[:3]
        ('0', '1', '2')
    """

    name: str
    sha256: Mapping[str, str]
    classes: tuple[str, ...]
    urls: tuple[str, ...] = ()
    files: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha256", MappingProxyType(dict(self.sha256)))
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "urls", tuple(self.urls))
        object.__setattr__(self, "files", tuple(self.sha256))
        for split in _SPLITS:
            for f in self.split_files(split):
                if f not in self.sha256:
                    raise ValueError(f"DatasetInfo {self.name!r}: no SHA-256 given for {f!r}")

    @property
    def num_classes(self) -> int:
        """The number of classes."""
        return len(self.classes)

    def split_files(self, split: str) -> tuple[str, str]:
        """Return the (images, labels) file names of ``split`` ('train' or 'test')."""
        if split not in _SPLITS:
            raise ValueError(f"split: expected one of {_SPLITS}, got {split!r}")
        prefix = "train" if split == "train" else "t10k"
        return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


DATASETS: Mapping[str, DatasetInfo] = MappingProxyType(
    {
        "mnist": DatasetInfo(
            name="mnist",
            sha256={
                "train-images-idx3-ubyte": (
                    "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"
                ),
                "train-labels-idx1-ubyte": (
                    "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"
                ),
                "t10k-images-idx3-ubyte": (
                    "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"
                ),
                "t10k-labels-idx1-ubyte": (
                    "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"
                ),
            },
            classes=tuple(str(d) for d in range(10)),
            urls=(
                "https://ossci-datasets.s3.amazonaws.com/mnist/",
                "http://yann.lecun.com/exdb/mnist/",
            ),
        ),
        "fashion-mnist": DatasetInfo(
            name="fashion-mnist",
            sha256={
                "train-images-idx3-ubyte": (
                    "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"
                ),
                "train-labels-idx1-ubyte": (
                    "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"
                ),
                "t10k-images-idx3-ubyte": (
                    "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"
                ),
                "t10k-labels-idx1-ubyte": (
                    "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"
                ),
            },
            classes=(
                "T-shirt/top",
                "Trouser",
                "Pullover",
                "Dress",
                "Coat",
                "Sandal",
                "Shirt",
                "Sneaker",
                "Bag",
                "Ankle boot",
            ),
            urls=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        ),
    }
)
"""The registry: dataset name -> :class:`DatasetInfo`."""


class DatasetNotFoundError(RuntimeError):
    """No source served a dataset's files; the message lists every place tried."""


def get_dataset(name: str | DatasetInfo) -> DatasetInfo:
    """Return the registry entry ``name`` (a :class:`DatasetInfo` is returned as is).

    Raises:
        ValueError: ``name`` is not in :data:`DATASETS`.
    """
    if isinstance(name, DatasetInfo):
        return name
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}") from None


# --------------------------------------------------------------------------- IDX


def _read_bytes(path: Path) -> bytes:
    """The file's content, gunzipped when the name ends in ``.gz``."""
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as f:
            return f.read()
    return path.read_bytes()


def _parse_idx(data: bytes, where: str, ndim: int | None = None) -> np.ndarray:
    """Parse IDX bytes; ``where`` names the source in error messages."""
    if len(data) < 4:
        raise ValueError(f"{where}: not an IDX file: {len(data)} bytes, shorter than the header")
    zero0, zero1, code, dims = data[0], data[1], data[2], data[3]
    if zero0 != 0 or zero1 != 0:
        raise ValueError(
            f"{where}: bad IDX magic number 0x{data[:4].hex()}: expected two zero bytes "
            f"first, got 0x{zero0:02x}{zero1:02x} (is it gzip-compressed without a .gz name?)"
        )
    if code not in _IDX_DTYPES:
        allowed = ", ".join(f"0x{c:02x}" for c in _IDX_DTYPES)
        raise ValueError(
            f"{where}: bad IDX data-type code: expected one of {allowed}, got 0x{code:02x}"
        )
    if dims == 0:
        raise ValueError(f"{where}: bad IDX header: expected at least 1 dimension, got 0")
    if ndim is not None and dims != ndim:
        raise ValueError(f"{where}: expected an IDX file with {ndim} dimensions, got {dims}")
    header = 4 + 4 * dims
    if len(data) < header:
        raise ValueError(
            f"{where}: truncated IDX header: expected {header} bytes for {dims} dimensions, "
            f"got {len(data)}"
        )
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=dims, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    got = len(data) - header
    if got != expected:
        problem = "truncated" if got < expected else "too long"
        raise ValueError(
            f"{where}: IDX data {problem}: header shape {shape} of {dtype.name} needs "
            f"{expected} bytes after the {header}-byte header, got {got}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    if dtype.itemsize > 1:  # big-endian on disk: convert once to native order
        array = array.astype(dtype.newbyteorder("="))
    return array


def read_idx(path: str | os.PathLike, ndim: int | None = None) -> np.ndarray:
    """Read an IDX file (plain, or gzip-compressed when its name ends in ``.gz``).

    Args:
        path: the file.
        ndim: when given, the number of dimensions the file must have
            (3 for images, 1 for labels). Default: None (any).

    Returns:
        The array, with the header's shape. One-byte types (uint8, int8) are a
        read-only, zero-copy view of the bytes read (``.copy()`` to write to it);
        wider types are converted to native byte order.

    Raises:
        ValueError: the magic number is wrong (non-zero first bytes, a data-type
            code other than 0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, zero dimensions or
            not ``ndim``), or the data length differs from the product of the
            header's dimensions (a truncated or too-long file). The message names
            the file, the expected and the actual value.
        OSError: the file cannot be read (e.g. a corrupt gzip stream).

    References:
        LeCun et al. (1998); the format is described at http://yann.lecun.com/exdb/mnist/

    Example:
        >>> import gzip, tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x-idx1-ubyte.gz"
        >>> _ = p.write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9])))
        >>> read_idx(p)
        array([7, 8, 9], dtype=uint8)
    """
    path = Path(path)
    try:
        data = _read_bytes(path)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise ValueError(f"{path}: not a valid gzip file ({exc})") from exc
    return _parse_idx(data, str(path), ndim)


def load_split(
    root: str | os.PathLike, split: str, dataset: str | DatasetInfo
) -> tuple[np.ndarray, np.ndarray]:
    """Read one split's images and labels from a folder that :func:`fetch` wrote.

    Args:
        root: the folder holding the four uncompressed IDX files.
        split: 'train' or 'test'.
        dataset: a registry name or a :class:`DatasetInfo`.

    Returns:
        ``(images, labels)``: images ``(N, H, W)`` uint8, labels ``(N,)`` uint8,
        both read-only views.

    Raises:
        ValueError: a file is malformed, images and labels disagree in N, or a
            label is not a class index of the dataset.
        FileNotFoundError: a file is missing.
    """
    info = get_dataset(dataset)
    images_name, labels_name = info.split_files(split)
    images = read_idx(Path(root) / images_name, ndim=3)
    labels = read_idx(Path(root) / labels_name, ndim=1)
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        raise ValueError(
            f"{root}: expected uint8 images and labels, got {images.dtype} and {labels.dtype}"
        )
    if len(images) != len(labels):
        raise ValueError(f"{root}: {split} split has {len(images)} images but {len(labels)} labels")
    if labels.size and int(labels.max()) >= info.num_classes:
        raise ValueError(
            f"{root}/{labels_name}: label {int(labels.max())} out of range for "
            f"{info.num_classes} classes"
        )
    return images, labels


# ------------------------------------------------------------------------- fetch


def default_sources(dataset: str | DatasetInfo) -> list[str | Path]:
    """The sources :func:`fetch` tries when given none, in order.

    1. the folder named by the ``MININN_DATA_DIR`` environment variable (if set);
    2. ``<project root>/../shared/datasets``, the team mirror beside the project;
    3. ``/usr/share/datasets/<name>``, where Debian's ``dataset-fashion-mnist``
       package installs its files;
    4. the publishers' download addresses (strings starting with ``http``).
    """
    info = get_dataset(dataset)
    sources: list[str | Path] = []
    env = config.data_dir()
    if env:
        sources.append(Path(env).expanduser())
    sources.append(_PROJECT_ROOT.parent / "shared" / "datasets")
    sources.append(Path("/usr/share/datasets") / info.name)
    sources.extend(info.urls)
    return sources


def _is_url(source: str | Path) -> bool:
    return isinstance(source, str) and source.startswith(("http://", "https://", "file:"))


def _folder_candidates(folder: Path, name: str, file: str) -> list[Path]:
    """The paths a folder source may hold ``file`` under, in order of preference."""
    return [
        folder / name / f"{file}.gz",
        folder / name / file,
        folder / f"{file}.gz",
        folder / file,
    ]


def _download(url: str, timeout: float, retries: int, progress: bool) -> bytes:
    """GET ``url`` with a timeout and ``retries`` extra attempts; a tqdm bar on stderr."""
    last: Exception | None = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(min(2.0**attempt, 8.0))
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                total = int(response.headers.get("Content-Length") or 0) or None
                with _progress_bar(total, url.rsplit("/", 1)[-1], progress) as update:
                    chunks = []
                    while chunk := response.read(1 << 16):
                        chunks.append(chunk)
                        update(len(chunk))
                return b"".join(chunks)
        except urllib.error.HTTPError as exc:
            if exc.code < 500:  # 404 and friends will not get better by retrying
                raise
            last = exc
        except (urllib.error.URLError, OSError) as exc:
            last = exc
    assert last is not None
    raise last


@contextlib.contextmanager
def _progress_bar(total: int | None, desc: str, enabled: bool) -> Iterator:
    """Yield an ``update(n)`` callable: a tqdm bar on stderr when tqdm is installed."""
    try:
        if not enabled:
            raise ImportError
        from tqdm import tqdm
    except ImportError:
        yield lambda n: None
        return
    with tqdm(total=total, desc=desc, unit="B", unit_scale=True, file=sys.stderr) as bar:
        yield bar.update


def _check(data: bytes, expected: str) -> str | None:
    """None when ``data`` has SHA-256 ``expected``, else the problem in words."""
    got = hashlib.sha256(data).hexdigest()
    if got == expected:
        return None
    return f"wrong SHA-256: got {got}, expected {expected}"


def _gunzip(data: bytes) -> bytes:
    """Decompress ``data`` if it is gzip (some servers decompress on the way)."""
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    return data


def _obtain(
    info: DatasetInfo,
    file: str,
    sources: Sequence[str | Path],
    timeout: float,
    retries: int,
    progress: bool,
) -> tuple[bytes | None, list[str]]:
    """Try every source for ``file``; return (uncompressed bytes or None, problems)."""
    expected = info.sha256[file]
    problems: list[str] = []
    for source in sources:
        if _is_url(source):
            url = str(source).rstrip("/") + f"/{file}.gz"
            try:
                data = _gunzip(_download(url, timeout, retries, progress))
            except (urllib.error.URLError, OSError, ValueError, EOFError, zlib.error) as exc:
                problems.append(f"{url}: network or gzip error: {exc}")
                continue
            problem = _check(data, expected)
            if problem is None:
                _log.info("%s: %s from %s", info.name, file, url)
                return data, problems
            problems.append(f"{url}: {problem}")
            _log.warning("%s: %s: %s; trying the next source", info.name, url, problem)
            continue
        folder = Path(source)
        if not folder.is_dir():
            problems.append(f"{folder}: missing (no such folder)")
            continue
        found = [p for p in _folder_candidates(folder, info.name, file) if p.is_file()]
        if not found:
            problems.append(
                f"{folder}: missing (looked for {info.name}/{file}[.gz] and {file}[.gz])"
            )
        for path in found:
            try:
                data = _read_bytes(path)
            except (OSError, EOFError, zlib.error) as exc:
                problems.append(f"{path}: unreadable: {exc}")
                _log.warning("%s: %s: unreadable (%s); next source", info.name, path, exc)
                continue
            problem = _check(data, expected)
            if problem is None:
                _log.info("%s: %s from %s", info.name, file, path)
                return data, problems
            problems.append(f"{path}: {problem}")
            _log.warning("%s: %s: %s; trying the next source", info.name, path, problem)
    return None, problems


@contextlib.contextmanager
def _atomic_directory(dest: Path) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``dest``, on error vanishes."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        old = dest.parent / f".{dest.name}.old-{os.getpid()}"
        if dest.exists():
            os.replace(dest, old)
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fetch(
    dataset: str | DatasetInfo,
    dest: str | os.PathLike,
    sources: Sequence[str | os.PathLike] | None = None,
    *,
    timeout: float = 30.0,
    retries: int = 2,
    progress: bool = True,
) -> Path:
    """Obtain a dataset's four IDX files, verified, uncompressed, into ``dest``.

    For each file the sources are tried in order. A folder source may hold the
    file as ``<folder>/<name>/<file>.gz``, ``<folder>/<name>/<file>``,
    ``<folder>/<file>.gz`` or ``<folder>/<file>``; a URL source (a string starting
    with ``http://``, ``https://`` or ``file:``) serves ``<url>/<file>.gz``. Each
    candidate's uncompressed content is checked against the pinned SHA-256; a
    candidate that fails is recorded and the next one tried. The files are written
    uncompressed, so ``dest`` is byte-identical whichever source delivered them,
    and atomically: into a temporary sibling folder that is renamed to ``dest``
    only when all four files are there. A failure leaves ``dest`` untouched.

    Args:
        dataset: a name in :data:`DATASETS`, or a :class:`DatasetInfo` (e.g. with
            other digests, for tests or a new dataset).
        dest: the folder to create (replaced if it exists).
        sources: folders and URLs to try, in order. Default: :func:`default_sources`.
        timeout: seconds before a download attempt gives up. Default: 30.
        retries: further attempts after a network error. Default: 2.
        progress: show a tqdm progress bar on stderr while downloading. Default: True.

    Returns:
        ``dest`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: ``dataset`` is not in the registry.
        DatasetNotFoundError: some file was served by no source. The message lists,
            for each such file, every place tried and what was wrong there (missing,
            wrong digest with both digests, unreadable, network error), and how to fix it.

    References:
        LeCun et al. (1998), MNIST; Xiao, Rasul & Vollgraf (2017), arXiv:1708.07747.
    """
    info = get_dataset(dataset)
    dest = Path(dest)
    chosen = [
        s if _is_url(s) else Path(s)
        for s in (default_sources(info) if sources is None else sources)
    ]
    contents: dict[str, bytes] = {}
    failures: dict[str, list[str]] = {}
    for file in info.files:
        data, problems = _obtain(info, file, chosen, timeout, retries, progress)
        if data is None:
            failures[file] = problems or ["no sources given"]
        else:
            contents[file] = data
    if failures:
        lines = [
            f"fetch: could not obtain {len(failures)} of {len(info.files)} files of dataset "
            f"{info.name!r}; places tried:"
        ]
        for file, problems in failures.items():
            lines.append(f"  {file}:")
            lines.extend(f"    - {p}" for p in problems)
        lines.append(
            f"Fix: set {DATA_DIR_ENV} to a folder holding {info.name}/<file>.gz (or the "
            "files themselves) with the published content, or restore network access to "
            "the download addresses."
        )
        raise DatasetNotFoundError("\n".join(lines))
    with _atomic_directory(dest) as tmp:
        for file, data in contents.items():
            (tmp / file).write_bytes(data)
    return dest
