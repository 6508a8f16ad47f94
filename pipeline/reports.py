"""Report pieces shared by the stages: the history and steps tables, classification
metrics, and the baseline file format (docs/baseline-format.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import mininn
from mininn.data import DATASETS
from pipeline import common
from pipeline.common import StageError

HISTORY_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds")
FORMAT = "mininn-baseline/1"
BASELINES_DIR = "baselines"
"""The folder (beside params.yaml) that holds ingested baseline files; a DVC dependency."""
METRIC_KEYS = ("test_accuracy", "test_loss", "val_accuracy", "val_loss", "macro_f1",
               "train_seconds", "epochs")  # fmt: skip
ENVIRONMENT = {"torch_version": str, "threads": int, "device": str, "wall_seconds": float}
RANGES = {  # key: (type, low, high, low_open); accuracies are fractions
    "train_loss": (float, 0.0), "val_loss": (float, 0.0), "test_loss": (float, 0.0),
    "train_accuracy": (float, 0.0, 1.0), "val_accuracy": (float, 0.0, 1.0),
    "test_accuracy": (float, 0.0, 1.0), "macro_f1": (float, 0.0, 1.0),
    "seconds": (float, 0.0), "train_seconds": (float, 0.0, None, True), "epochs": (int, 1),
}  # fmt: skip


def write_csv(path: Path, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Write a CSV atomically, floats at full precision (``repr``), ints as ints."""
    lines = [",".join(columns)]
    lines += [",".join(repr(float(v)) if isinstance(v, float) else str(v) for v in r) for r in rows]
    with common.atomic_file(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]) -> dict:
    """test_accuracy, macro_f1 and per_class_accuracy (recall by class name), as evaluate's."""
    from sklearn.metrics import f1_score

    matrix = mininn.metrics.confusion_matrix(y_true, y_pred, num_classes=len(classes))
    per_class = np.diag(matrix) / np.maximum(matrix.sum(axis=1), 1)
    return {
        "test_accuracy": float(np.mean(y_pred == y_true)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro")),
        "per_class_accuracy": dict(zip(classes, per_class.tolist(), strict=True)),
    }


def _number(
    value: Any,
    where: str,
    path: Path,
    kind: type = float,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> Any:
    """``value`` if it is a ``kind`` (finite for float) in [low, high] (``(low`` when low_open)."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float) if kind is float else kind)
    if not ok or (kind is float and not np.isfinite(value)):
        what = {float: "a finite number", int: "an integer", str: "a string"}[kind]
        raise StageError(f"{path}: key '{where}': expected {what}, got {value!r}")
    below = low is not None and (value <= low if low_open else value < low)
    if below or (high is not None and value > high):
        interval = f"{'(' if low_open else '['}{low}, {'inf' if high is None else high}]"
        raise StageError(f"{path}: key '{where}': expected a value in {interval}, got {value!r}")
    return value


def _mapping(obj: Any, where: str, path: Path, keys: Sequence[str]) -> dict:
    if not isinstance(obj, dict):
        raise StageError(f"{path}: key '{where}': expected an object, got {obj!r:.60}")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise StageError(f"{path}: key '{where}': missing {missing} (see docs/baseline-format.md)")
    return obj


def read_baseline(path: Path, dataset: str) -> dict[str, Any]:
    """Read a baseline JSON file and check it against docs/baseline-format.md.

    Raises:
        StageError: the file is missing or not JSON, or a key is missing or has the
            wrong type or value (accuracies outside [0, 1], negative losses, a
            ``train_seconds`` that is not positive, ``metrics.epochs`` other than the
            number of history rows); the message names the file, the key and what
            is expected.
    """
    result = common.read_json(path)
    top = ("format", "framework", "dataset", "params", "history", "metrics", "environment")
    _mapping(result, "(top level)", path, top)
    for key, expected in (("format", FORMAT), ("dataset", dataset)):
        if result[key] != expected:
            raise StageError(f"{path}: key '{key}': expected {expected!r}, got {result[key]!r}")
    _number(result["framework"], "framework", path, str)
    _mapping(result["params"], "params", path, ["model", "train"])
    for section in ("model", "train"):
        _mapping(result["params"][section], f"params.{section}", path, [])
    history = result["history"]
    if not isinstance(history, list) or not history:
        raise StageError(f"{path}: key 'history': expected a non-empty list of epochs")
    for i, row in enumerate(history):
        _mapping(row, f"history[{i}]", path, HISTORY_COLUMNS)
        if _number(row["epoch"], f"history[{i}].epoch", path, int) != i + 1:
            raise StageError(
                f"{path}: key 'history[{i}].epoch': expected {i + 1}, got {row['epoch']}"
            )
        for column in HISTORY_COLUMNS[1:]:
            _number(row[column], f"history[{i}].{column}", path, *RANGES[column])
    if not isinstance(result.get("steps", []), list):
        raise StageError(f"{path}: key 'steps': expected a list of losses")
    for i, loss in enumerate(result.get("steps", [])):
        _number(loss, f"steps[{i}]", path, float, 0.0)
    metrics = _mapping(result["metrics"], "metrics", path, [*METRIC_KEYS, "per_class_accuracy"])
    for key in METRIC_KEYS:
        _number(metrics[key], f"metrics.{key}", path, *RANGES[key])
    if metrics["epochs"] != len(history):
        raise StageError(
            f"{path}: key 'metrics.epochs': expected {len(history)}, the number of epochs in "
            f"'history', got {metrics['epochs']}"
        )
    classes = DATASETS[dataset].classes
    per_class = _mapping(metrics["per_class_accuracy"], "metrics.per_class_accuracy", path, classes)
    for name in classes:
        _number(per_class[name], f"metrics.per_class_accuracy.{name}", path, float, 0.0, 1.0)
    environment = _mapping(result["environment"], "environment", path, list(ENVIRONMENT))
    for key, kind in ENVIRONMENT.items():
        _number(environment[key], f"environment.{key}", path, kind)
    return result


def baseline_file(source: Any, dataset: str, params_file: Path) -> Path:
    """The file ``baseline.source`` names for ``dataset``, checked to lie in ``baselines/``.

    Args:
        source: ``baseline.source``, a path template such as ``baselines/{dataset}.json``,
            relative to the folder of params.yaml (the project root) or absolute.
        dataset: the value for ``{dataset}``.
        params_file: params.yaml; its folder holds ``baselines/``.
    Raises:
        StageError: the template has another placeholder, or the file lies outside
            ``baselines/``, which is the only place dvc.yaml watches for changes.
    """
    key = "baseline.source"
    try:
        name = source.format(dataset=dataset)
    except (KeyError, IndexError, ValueError) as exc:
        raise StageError(
            f"{key}: {source!r} is not a path template with {{dataset}} as its only "
            f"placeholder ({type(exc).__name__}: {exc}), e.g. baselines/{{dataset}}.json"
        ) from None
    root = Path(params_file).resolve().parent
    folder = root / BASELINES_DIR
    path = (root / name).resolve()
    if not path.is_relative_to(folder.resolve()):
        raise StageError(
            f"{key}: {name} is outside {BASELINES_DIR}/, the folder dvc.yaml tracks as the "
            f"baseline stage's input (a file elsewhere would not rerun the stage when it "
            f"changes); copy it into {BASELINES_DIR}/ and set {key}: "
            f"{BASELINES_DIR}/{{dataset}}.json"
        )
    return path


def params_mismatch(recorded: dict, current: dict) -> list[str]:
    """The dotted params keys (``train.lr``) whose recorded value differs from the current one."""
    return sorted(
        f"{section}.{key}"
        for section in current
        for key in set(current[section]) | set(recorded.get(section, {}))
        if recorded.get(section, {}).get(key) != current[section].get(key)
    )
