"""Test helpers: write tiny IDX datasets, so tests never touch the real data.

Usage from any test module (pytest puts ``tests/`` on ``sys.path``)::

    from _idx import tiny_dataset_info, write_tiny_dataset

    digests = write_tiny_dataset(tmp_path / "raw", "mnist", n_train=60, n_test=20)
    info = tiny_dataset_info("mnist", digests)   # a DatasetInfo pinned to these files
    mininn.data.fetch(info, tmp_path / "out", sources=[tmp_path / "raw"])
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
from pathlib import Path

import numpy as np

from mininn.data import DATASETS, DatasetInfo

IDX_DTYPE_CODES = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(">i2"): 0x0B,
    np.dtype(">i4"): 0x0C,
    np.dtype(">f4"): 0x0D,
    np.dtype(">f8"): 0x0E,
}


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode ``array`` as IDX: magic (0, 0, dtype code, ndim), big-endian dims, data."""
    array = np.asarray(array)
    dtype = array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype
    code = IDX_DTYPE_CODES[dtype]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(array, dtype=dtype).tobytes()


def write_idx(path: str | Path, array: np.ndarray) -> str:
    """Write ``array`` as IDX to ``path`` (gzip-compressed when it ends in ``.gz``).

    Returns:
        The SHA-256 (hex) of the uncompressed IDX bytes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = idx_bytes(array)
    path.write_bytes(gzip.compress(raw, mtime=0) if path.suffix == ".gz" else raw)
    return hashlib.sha256(raw).hexdigest()


def tiny_arrays(
    n: int, num_classes: int = 10, seed: int = 0, image_size: int = 28
) -> tuple[np.ndarray, np.ndarray]:
    """Random uint8 images ``(n, image_size, image_size)`` and balanced uint8 labels ``(n,)``.

    Labels cycle through the classes (then are shuffled), so every class has
    ``n // num_classes`` or one more samples; each image's mean grows with its
    label, which makes the classes learnable.
    """
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % num_classes).astype(np.uint8)
    base = rng.integers(0, 128, size=(n, image_size, image_size))
    images = np.clip(base + labels[:, None, None] * 12, 0, 255).astype(np.uint8)
    return images, labels


def write_tiny_dataset(
    root: str | Path,
    name: str = "mnist",
    n_train: int = 60,
    n_test: int = 20,
    seed: int = 0,
    gz: bool = True,
    subfolder: bool = True,
) -> dict[str, str]:
    """Write a tiny dataset's four IDX files, laid out as the mirrors lay them out.

    Args:
        root: the folder to write into (created).
        name: the dataset name; its registry entry gives the file and class names.
        n_train: training samples. n_test: test samples.
        seed: seeds the images and the label order.
        gz: gzip the files (``<file>.gz``) or write them plain.
        subfolder: write into ``root/<name>/`` (as the mirrors do), else into ``root``.

    Returns:
        IDX file name -> SHA-256 of its uncompressed content, ready for
        :func:`tiny_dataset_info`.
    """
    info = DATASETS[name]
    folder = Path(root) / name if subfolder else Path(root)
    digests: dict[str, str] = {}
    for split, n, offset in (("train", n_train, 0), ("test", n_test, 1)):
        images, labels = tiny_arrays(n, info.num_classes, seed + offset)
        images_name, labels_name = info.split_files(split)
        suffix = ".gz" if gz else ""
        digests[images_name] = write_idx(folder / f"{images_name}{suffix}", images)
        digests[labels_name] = write_idx(folder / f"{labels_name}{suffix}", labels)
    return {file: digests[file] for file in info.files}


def tiny_dataset_info(name: str, digests: dict[str, str]) -> DatasetInfo:
    """The registry entry ``name`` with the digests of tiny files and no URLs."""
    return dataclasses.replace(DATASETS[name], sha256=digests, urls=())


def write_prepared(folder: Path, n_train: int, n_val: int, n_test: int, seed: int = 5) -> Path:
    """A tiny output of ``prepare`` in ``folder``: train/val/test Parquet splits and
    the training split's normalisation statistics (stats.json)."""
    from pipeline import common  # the stage helpers write the real format

    images, labels = tiny_arrays(n_train + n_val + n_test, seed=seed)
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val)}
    bounds["test"] = (n_train + n_val, len(labels))
    for split, (lo, hi) in bounds.items():
        common.write_split(folder / f"{split}.parquet", images[lo:hi], labels[lo:hi])
    common.write_json(folder / common.STATS_FILE, common.pixel_stats(images[:n_train]))
    return folder
