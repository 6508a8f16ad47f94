"""Shared by the benchmark's worker processes: the data, the thread limits, memory use.

Each worker imports this module before its framework, so every framework trains
on the same float32 array, built the same way, and its memory peak includes the
same data.
"""

from __future__ import annotations

import gzip
import os
import resource
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR_ENV = "MININN_DATA_DIR"
TRAIN_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
#: The variables that change which BLAS kernel runs and with how many threads.
BLAS_ENV_VARS = (
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
)
#: Unset, together, for the second column of figures (that worker process only).
KERNEL_ENV_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def data_folders(dataset: str) -> list[Path]:
    """The folders tried for a dataset's IDX files, in mininn.data's order.

    ``$MININN_DATA_DIR``, then ``data/raw/<dataset>`` (what the pipeline's fetch
    stage wrote), the team mirror ``<repo>/../shared/datasets``, and Debian's
    ``/usr/share/datasets``.
    """
    folders = []
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        folders.append(Path(env).expanduser())
    folders += [
        REPO_ROOT / "data" / "raw" / dataset,
        REPO_ROOT.parent / "shared" / "datasets",
        Path("/usr/share/datasets") / dataset,
    ]
    return folders


def find_idx(dataset: str, file: str) -> Path:
    """Find one IDX file (plain or ``.gz``) in :func:`data_folders`.

    Raises:
        FileNotFoundError: no folder holds it; the message lists every path tried.
    """
    tried = []
    for folder in data_folders(dataset):
        for candidate in (
            folder / dataset / f"{file}.gz",
            folder / dataset / file,
            folder / f"{file}.gz",
            folder / file,
        ):
            if candidate.is_file():
                return candidate
            tried.append(str(candidate))
    raise FileNotFoundError(
        f"benchmark: cannot find {file} of {dataset!r}; tried:\n  "
        + "\n  ".join(tried)
        + f"\nFix: set {DATA_DIR_ENV} to a folder holding {dataset}/{file}.gz"
    )


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file with mininn.data.read_idx, or a minimal local reader.

    The local reader serves while mininn.data is missing; it handles only the
    unsigned-byte files that MNIST and Fashion-MNIST consist of.
    """
    try:
        from mininn.data import read_idx as mininn_read_idx
    except ImportError:
        pass
    else:
        return mininn_read_idx(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if data[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {data[:4].hex()})")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_training_split(
    dataset: str = "fashion-mnist", samples: int = 50_000
) -> tuple[np.ndarray, np.ndarray]:
    """The first ``samples`` training images, standardised, and their labels.

    Returns:
        ``x`` float32 ``(samples, 784)``, ``(x / 255 - mean) / std`` with the scalar
        mean and std of those samples; ``y`` int64 ``(samples,)``.

    The statistics come from a histogram of the byte values, and the scaling is
    done in place, so that no temporary larger than ``x`` inflates the workers'
    peak memory (``x.std()`` alone would allocate a float64 copy, twice ``x``).
    """
    images = read_idx(find_idx(dataset, TRAIN_FILES[0]))[:samples]
    labels = read_idx(find_idx(dataset, TRAIN_FILES[1]))[:samples]
    if len(images) < samples:
        raise ValueError(f"benchmark: samples={samples} but {dataset} has {len(images)}")
    counts = sum(np.bincount(chunk.ravel(), minlength=256) for chunk in np.array_split(images, 50))
    values = np.arange(256) / 255
    mean = counts @ values / counts.sum()
    std = np.sqrt(counts @ (values - mean) ** 2 / counts.sum())
    x = images.reshape(samples, -1).astype(np.float32)
    x *= np.float32(1 / (255 * std))
    x -= np.float32(mean / std)
    return x, labels.astype(np.int64)


def limit_threads(threads: int):
    """Cap every BLAS/OpenMP pool in this process at ``threads``; keep the result alive."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads)


def blas_info() -> list[dict]:
    """threadpoolctl's description of the BLAS/OpenMP libraries loaded in this process."""
    from threadpoolctl import threadpool_info

    keys = ("user_api", "internal_api", "prefix", "version", "architecture", "num_threads")
    return [{k: pool.get(k) for k in keys} for pool in threadpool_info()]


def blas_env() -> dict[str, str | None]:
    """The BLAS-related environment variables as this process sees them."""
    return {name: os.environ.get(name) for name in BLAS_ENV_VARS}


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB (ru_maxrss)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
