"""What every stage shares: params.yaml, validators, atomic writers, prepared data.

A stage calls :func:`load_params` for its own section, checks each value with
:func:`check_int`, :func:`check_number`, :func:`check_choice` (a wrong value stops
with a :class:`StageError` naming the key, the value and what is allowed), writes
its outputs with :func:`write_json`, :func:`atomic_file` or :func:`atomic_dir`
(a temporary path, then a rename: a failed stage leaves nothing half-written for
DVC to cache), and is run by :func:`run_stage`, which turns a user error into one
line ``error: ...`` on stderr and exit status 1.

Later stages read the output of ``prepare`` with :func:`read_prepared`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PARAMS_FILE = PROJECT_ROOT / "params.yaml"

STATS_FILE = "stats.json"
"""Name of the normalisation-statistics file in a prepared folder."""
SPLITS = ("train", "val", "test")
"""The splits ``prepare`` writes, each as ``<split>.parquet``."""
IMAGE_SIZE = 28
NUM_FEATURES = IMAGE_SIZE * IMAGE_SIZE


class StageError(Exception):
    """An error the user can fix (bad parameter, missing input); printed as one line."""


# ------------------------------------------------------------------ running


def run_stage(
    main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None
) -> int:
    """Run a stage's ``main(argv)``; a :class:`StageError` prints ``error: ...`` and gives 1.

    Use it as the last line of a stage script::

        if __name__ == "__main__":
            raise SystemExit(run_stage(main))
    """
    try:
        return main(argv)
    except StageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


# ------------------------------------------------------------------ params


def load_params(
    section: str, keys: Iterable[str] = (), path: str | os.PathLike | None = None
) -> dict[str, Any]:
    """Return one top-level section of params.yaml, checking that ``keys`` are present.

    Args:
        section: the top-level key, e.g. ``"prepare"`` or ``"datasets"``.
        keys: keys the section must hold (a mapping section only); all missing
            ones are reported together.
        path: the params file. Default: ``<project root>/params.yaml``.

    Returns:
        The section (a dict, or the value itself for a non-mapping section such
        as the ``datasets`` list).

    Raises:
        StageError: the file is missing or not valid YAML, the section is missing,
            or a key is missing.
    """
    import yaml  # the pipeline's dependency, not the library's

    path = Path(PARAMS_FILE if path is None else path)
    try:
        with open(path, encoding="utf-8") as f:
            params = yaml.safe_load(f)
    except FileNotFoundError:
        raise StageError(f"params file {path} not found") from None
    except yaml.YAMLError as exc:
        raise StageError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(params, dict) or section not in params:
        present = sorted(params) if isinstance(params, dict) else []
        raise StageError(f"{path}: missing section '{section}:' (sections present: {present})")
    value = params[section]
    keys = list(keys)
    if keys:
        if not isinstance(value, dict):
            raise StageError(f"{path}: expected '{section}:' to be a mapping, got {value!r}")
        missing = [k for k in keys if k not in value]
        if missing:
            raise StageError(
                f"{path}: missing key(s) {', '.join(f'{section}.{k}' for k in missing)}; "
                f"add them under '{section}:'"
            )
    return value


def _type_name(value: Any) -> str:
    return type(value).__name__


def check_int(
    value: Any, key: str, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """Return ``value`` if it is an int in [minimum, maximum], else raise a StageError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise StageError(f"{key}: expected an integer, got {value!r} ({_type_name(value)})")
    _check_range(value, key, minimum, maximum, True, True)
    return int(value)


def check_number(
    value: Any,
    key: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    min_inclusive: bool = True,
    max_inclusive: bool = True,
) -> float:
    """Return ``value`` as a float if it is a number in range, else raise StageError.

    A string is rejected with a hint: PyYAML reads ``1e-3`` as the string
    ``'1e-3'``; write ``0.001`` or ``1.0e-3``.
    """
    if isinstance(value, str):
        raise StageError(
            f"{key}: expected a number, got the string {value!r}; PyYAML reads exponents "
            "without a dot (1e-3) as strings: write 0.001 or 1.0e-3"
        )
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise StageError(f"{key}: expected a number, got {value!r} ({_type_name(value)})")
    if not np.isfinite(value):
        raise StageError(f"{key}: expected a finite number, got {value!r}")
    _check_range(value, key, minimum, maximum, min_inclusive, max_inclusive)
    return float(value)


def _check_range(value, key, minimum, maximum, min_inclusive, max_inclusive) -> None:
    low_ok = minimum is None or (value >= minimum if min_inclusive else value > minimum)
    high_ok = maximum is None or (value <= maximum if max_inclusive else value < maximum)
    if low_ok and high_ok:
        return
    low = "-inf" if minimum is None else str(minimum)
    high = "inf" if maximum is None else str(maximum)
    interval = f"{'[' if min_inclusive else '('}{low}, {high}{']' if max_inclusive else ')'}"
    raise StageError(f"{key}: expected a value in {interval}, got {value!r}")


def check_choice(value: Any, key: str, choices: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``, else raise StageError listing them."""
    choices = list(choices)
    if value not in choices:
        raise StageError(f"{key}: expected one of {choices}, got {value!r}")
    return value


# ------------------------------------------------------------------ atomic writers


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return value.as_posix()
    raise TypeError(f"write_json: cannot encode {value!r} ({_type_name(value)})")


def _tmp_sibling(path: Path) -> Path:
    return path.parent / f".{path.name}.tmp-{os.getpid()}"


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``.

    On an exception the temporary file is removed and ``path`` left as it was.
    The parent folder is created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path``.

    On an exception the temporary folder is removed and ``path`` left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        old = path.parent / f".{path.name}.old-{os.getpid()}"
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | os.PathLike, obj: Mapping[str, Any]) -> None:
    """Write ``obj`` as JSON (indent=2, sorted keys, numpy scalars as int/float), atomically."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n"
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; a missing file is a StageError naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise StageError(f"{path} not found; run the stage that writes it first") from None


# ------------------------------------------------------------------ prepared data


def write_split(path: str | os.PathLike, pixels: np.ndarray, labels: np.ndarray) -> None:
    """Write one split as Parquet (the layout :func:`read_split` reads), atomically.

    Args:
        path: the ``.parquet`` file.
        pixels: ``(N, 784)`` or ``(N, 28, 28)`` uint8 images.
        labels: ``(N,)`` integer class indices in [0, 255].

    Raises:
        ValueError: wrong dtype or shape, or N differs between pixels and labels.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    pixels = np.ascontiguousarray(pixels).reshape(len(pixels), -1)
    if pixels.dtype != np.uint8 or pixels.shape[1] != NUM_FEATURES or len(labels) != len(pixels):
        raise ValueError(
            f"write_split: expected uint8 pixels (N, {NUM_FEATURES}) and labels (N,), "
            f"got {pixels.dtype} {pixels.shape} and {np.shape(labels)}"
        )
    column = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(NUM_FEATURES), len(pixels), [None, pa.py_buffer(pixels)]
    )
    table = pa.table({"label": pa.array(np.asarray(labels, dtype=np.uint8)), "pixels": column})
    with atomic_file(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def pixel_stats(pixels: np.ndarray) -> dict[str, float]:
    """Return the scalar mean and (population) std of ``pixels / 255``, exactly.

    Counts each of the 256 grey levels (in chunks, to keep memory small) and takes
    the moments of the histogram in float64.
    """
    flat = np.asarray(pixels, dtype=np.uint8).reshape(-1)
    if flat.size == 0:
        raise ValueError("pixel_stats: expected at least one pixel, got none")
    counts = np.zeros(256, dtype=np.int64)
    chunk = 1 << 16  # bincount casts each chunk to intp: a chunk that stays in cache is faster
    for start in range(0, flat.size, chunk):
        counts += np.bincount(flat[start : start + chunk], minlength=256)
    levels = np.arange(256, dtype=np.float64) / 255.0
    mean = float(counts @ levels) / flat.size
    var = float(counts @ (levels - mean) ** 2) / flat.size
    return {"mean": mean, "std": float(np.sqrt(var))}


def read_split(prepared_dir: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read ``<prepared_dir>/<split>.parquet`` as written by ``prepare``.

    The layout: a ``label`` column (uint8) and a ``pixels`` column of
    ``fixed_size_binary(784)``, one row-major 28x28 image per row. Reading it
    back is one buffer copy, ~0.05 s for 60,000 images.

    Returns:
        ``(pixels, labels)``: pixels ``(N, 784)`` uint8, labels ``(N,)`` int64.

    Raises:
        StageError: ``split`` is unknown, the file is missing or has another layout.
    """
    import pyarrow.parquet as pq

    if split not in SPLITS:
        raise StageError(f"split: expected one of {SPLITS}, got {split!r}")
    path = Path(prepared_dir) / f"{split}.parquet"
    if not path.is_file():
        raise StageError(f"{path} not found; run `dvc repro prepare` first")
    table = pq.read_table(path, columns=["pixels", "label"])
    pixels = table.column("pixels").combine_chunks()
    width = getattr(pixels.type, "byte_width", None)
    if width != NUM_FEATURES or pixels.null_count:
        raise StageError(
            f"{path}: expected a 'pixels' column of fixed_size_binary({NUM_FEATURES}) "
            f"without nulls, got {pixels.type}"
        )
    offset = pixels.offset * NUM_FEATURES
    x = np.frombuffer(pixels.buffers()[1], dtype=np.uint8)
    x = x[offset : offset + len(pixels) * NUM_FEATURES].reshape(len(pixels), NUM_FEATURES)
    y = table.column("label").to_numpy().astype(np.int64)
    return x, y


def read_stats(prepared_dir: str | os.PathLike) -> dict[str, float]:
    """Return the training-split statistics ``{"mean": ..., "std": ...}`` of pixel/255."""
    stats = read_json(Path(prepared_dir) / STATS_FILE)
    return {"mean": float(stats["mean"]), "std": float(stats["std"])}


def read_prepared(
    prepared_dir: str | os.PathLike, split: str, dtype: Any = np.float32
) -> tuple[np.ndarray, np.ndarray]:
    """Return one split's normalised features and labels.

    Features are ``(pixel / 255 - mean) / std``, with the scalar mean and std
    computed by ``prepare`` over the training split only (no leakage from the
    validation or test splits).

    Args:
        prepared_dir: the folder ``prepare`` wrote, e.g. ``data/prepared/mnist``.
        split: ``"train"``, ``"val"`` or ``"test"``.
        dtype: the float dtype of the features. Default: float32.

    Returns:
        ``(x, y)``: x ``(N, 784)`` of ``dtype``, y ``(N,)`` int64 class indices.

    Raises:
        StageError: the split or the statistics file is missing or malformed.
    """
    pixels, labels = read_split(prepared_dir, split)
    stats = read_stats(prepared_dir)
    dtype = np.dtype(dtype)
    scale = dtype.type(1.0 / (255.0 * stats["std"]))
    shift = dtype.type(stats["mean"] / stats["std"])
    x = pixels.astype(dtype)
    x *= scale
    x -= shift
    return x, labels
