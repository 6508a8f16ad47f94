"""Stage prepare@<dataset>: stratified validation split, Parquet files, data report.

    python pipeline/prepare.py --dataset mnist --raw data/raw/mnist \\
        --out data/prepared/mnist --report reports/mnist

Inputs: ``--raw``, the four IDX files from ``fetch``. Params: ``prepare.val_size``
(a fraction in (0, 1) or a count of training images), ``prepare.seed``.
Outputs: ``--out`` holds ``train``/``val``/``test.parquet`` (see
``common.read_split`` for the layout) and ``stats.json``, the mean and std of
pixel/255 over the training split only; ``--report`` gets ``data.json`` (class
counts per split, DVC metrics) and ``samples.png`` (sample images per class).
The test split is the publishers' test set, untouched.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (by DVC): make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from pipeline.environment import ensure_environment

    ensure_environment()  # the project's .venv if this Python lacks the packages

import numpy as np

from mininn.data import DATASETS, load_split
from pipeline import common
from pipeline.common import StageError, run_stage


def prepare_params(path: str | Path | None = None) -> dict[str, Any]:
    """The ``prepare:`` section of params.yaml, every value checked (StageError naming the key).

    ``val_size``'s range against the data is checked later, by :func:`validation_count`.
    """
    p = common.load_params("prepare", ["val_size", "seed"], path)
    return {
        "val_size": _check_val_size(p["val_size"]),
        "seed": common.check_int(p["seed"], "prepare.seed", minimum=0, maximum=2**32 - 1),
    }


def _check_val_size(val_size: object) -> float | int:
    key = "prepare.val_size"
    allowed = "a fraction in (0, 1) or an integer count >= 1"
    if isinstance(val_size, str):
        common.check_number(val_size, key)  # always raises, with the quoted-number hint
    if isinstance(val_size, float):
        if not 0.0 < val_size < 1.0:
            raise StageError(f"{key}: expected {allowed}, got {val_size!r}")
    elif isinstance(val_size, bool) or not isinstance(val_size, int) or val_size < 1:
        raise StageError(f"{key}: expected {allowed}, got {val_size!r}")
    return val_size


def validation_count(val_size: object, n_train: int, n_classes: int) -> int:
    """Resolve ``prepare.val_size`` (fraction or count) to a count, checking its range."""
    key = "prepare.val_size"
    val_size = _check_val_size(val_size)
    if isinstance(val_size, float):
        count = math.ceil(val_size * n_train)  # as train_test_split rounds a test fraction
    else:
        count = val_size
    if not n_classes <= count <= n_train - n_classes:
        raise StageError(
            f"{key}: {val_size!r} gives {count} validation images; a stratified split of "
            f"{n_train} images in {n_classes} classes needs between {n_classes} and "
            f"{n_train - n_classes}"
        )
    return count


def stratified_split(labels: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, val) indices: ``count`` for validation, class proportions kept."""
    from sklearn.model_selection import train_test_split

    train_idx, val_idx = train_test_split(
        np.arange(len(labels)), test_size=count, stratify=labels, random_state=seed
    )
    return np.sort(train_idx), np.sort(val_idx)


def samples_png(images: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> bytes:
    """A PNG: one panel per class, titled with its name, of its first 16 images (4x4).

    The panels are laid out in one image drawn at one pixel per screen pixel
    (``figimage``), with the titles as figure text: no Axes, whose construction
    was most of this stage's drawing time.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg: no GUI backend
    from matplotlib.figure import Figure

    side, scale, gap, title = 4, 2, 16, 24  # 4x4 images per panel; pixels
    columns = math.ceil(len(classes) / 2)
    h, w = images.shape[1:]
    panel_h, panel_w = side * h * scale, side * w * scale
    canvas = np.zeros((2 * (title + panel_h), columns * (panel_w + gap) + gap), dtype=np.uint8)
    positions = []
    for k in range(len(classes)):
        chosen = images[labels == k][: side * side]
        grid = np.zeros((side * side, h, w), dtype=np.uint8)
        grid[: len(chosen)] = chosen
        mosaic = grid.reshape(side, side, h, w).transpose(0, 2, 1, 3).reshape(side * h, side * w)
        top, left = (
            (k // columns) * (title + panel_h) + title,
            gap + (k % columns) * (panel_w + gap),
        )
        canvas[top : top + panel_h, left : left + panel_w] = mosaic.repeat(scale, 0).repeat(
            scale, 1
        )
        positions.append((left + panel_w / 2, top))
    dpi = 80
    fig = Figure(figsize=(canvas.shape[1] / dpi, canvas.shape[0] / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    fig.figimage(canvas, cmap="gray_r", vmin=0, vmax=255, origin="upper")
    for name, (x, top) in zip(classes, positions, strict=True):
        fig.text(x / canvas.shape[1], 1 - (top - 4) / canvas.shape[0], name, fontsize=10,
                 ha="center", va="bottom")  # fmt: skip
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="a name from params.yaml's datasets")
    parser.add_argument("--raw", required=True, type=Path, help="folder of the IDX files")
    parser.add_argument("--out", required=True, type=Path, help="prepared folder to write")
    parser.add_argument("--report", required=True, type=Path, help="report folder")
    parser.add_argument("--params", type=Path, default=common.PARAMS_FILE)
    args = parser.parse_args(argv)
    info = common.check_dataset(args.dataset, DATASETS)

    params = prepare_params(args.params)
    seed = params["seed"]
    try:
        x_full, y_full = load_split(args.raw, "train", info)
        x_test, y_test = load_split(args.raw, "test", info)
    except (OSError, ValueError) as exc:
        raise StageError(f"{exc}; run `dvc repro fetch@{args.dataset}`") from exc
    count = validation_count(params["val_size"], len(y_full), info.num_classes)

    train_idx, val_idx = stratified_split(y_full, count, seed)
    splits = {
        "train": (x_full[train_idx], y_full[train_idx]),
        "val": (x_full[val_idx], y_full[val_idx]),
        "test": (x_test, y_test),
    }
    stats = common.pixel_stats(splits["train"][0])  # training split only: no leakage
    if stats["std"] == 0:
        raise StageError(f"{args.raw}: every training pixel has the same value; cannot normalise")
    report = {
        "n_samples": {split: len(y) for split, (_, y) in splits.items()},
        "class_counts": {
            split: dict(
                zip(info.classes, np.bincount(y, minlength=info.num_classes).tolist(), strict=True)
            )
            for split, (_, y) in splits.items()
        },
        "normalization": stats,
    }
    png = samples_png(*splits["train"], info.classes)

    with common.atomic_dir(args.out) as tmp:
        for split, (x, y) in splits.items():
            common.write_split(tmp / f"{split}.parquet", x, y)
        common.write_json(tmp / common.STATS_FILE, stats)
    common.write_json(args.report / "data.json", report)
    with common.atomic_file(args.report / "samples.png") as tmp:
        tmp.write_bytes(png)
    sizes = ", ".join(f"{split} {n}" for split, n in report["n_samples"].items())
    print(f"prepare: {args.dataset}: {sizes} -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_stage(main))
