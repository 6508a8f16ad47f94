"""Report pieces shared by the stages: the training history (logged live through
DVCLive, read back with one reader), the tables, classification metrics, and the
baseline file format (docs/baseline-format.md).
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import mininn
from mininn.data import DATASETS
from pipeline import common
from pipeline.common import StageError

HISTORY_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr",
                   "seconds")  # fmt: skip
"""The history's columns: one row per epoch. ``lr`` is the learning rate of the
epoch's first step; ``seconds`` is wall-clock time (the only column that differs
between two runs of the same params on the same machine)."""
LIVE_METRICS = HISTORY_COLUMNS[1:]
"""What train and baseline log to DVCLive every epoch (DVCLive's ``step`` is the epoch)."""
LIVE_DIR = "live"
"""The DVCLive folder inside train's and baseline's output folder."""
FORMAT = "mininn-baseline/1"
BASELINES_DIR = "baselines"
"""The folder (beside params.yaml) that holds ingested baseline files; a DVC dependency."""
METRIC_KEYS = ("test_accuracy", "test_loss", "val_accuracy", "val_loss", "macro_f1",
               "train_seconds", "epochs")  # fmt: skip
"""The keys of a baseline's ``metrics`` (docs/baseline-format.md), with ``per_class_accuracy``."""
REPORT_METRICS = ("test_accuracy", "test_loss", "val_accuracy", "macro_f1", "epochs")
"""The keys of the reports ``reports/<dataset>/metrics.json`` (evaluate) and
``torch_metrics.json`` (compare). Per class: classification_report.txt; the times:
comparison.md. The DVC metric is evaluate's ``accuracy.json``."""
LIVE_SUMMARY = ("val_accuracy",)
"""What DVCLive's ``metrics.json`` keeps besides ``step`` (the epoch): the progress
``dvc exp show`` shows while a stage runs. Every metric stays in ``plots/metrics/``."""
ENVIRONMENT = {"torch_version": str, "threads": int, "device": str, "wall_seconds": float}
RANGES = {  # key: (type, low, high, low_open); accuracies are fractions
    "train_loss": (float, 0.0), "val_loss": (float, 0.0), "test_loss": (float, 0.0),
    "train_accuracy": (float, 0.0, 1.0), "val_accuracy": (float, 0.0, 1.0),
    "test_accuracy": (float, 0.0, 1.0), "macro_f1": (float, 0.0, 1.0), "lr": (float, 0.0),
    "seconds": (float, 0.0), "train_seconds": (float, 0.0, None, True), "epochs": (int, 1),
}  # fmt: skip


# ------------------------------------------------------------------ tables


def write_table(path: str | os.PathLike, table: Any) -> None:
    """Write a pandas DataFrame as CSV, atomically: no index, floats at full precision
    (pandas writes the shortest text that reads back as the same float)."""
    with common.atomic_file(path) as tmp:
        table.to_csv(tmp, index=False, lineterminator="\n")


def write_steps(path: str | os.PathLike, losses: Sequence[float]) -> None:
    """``steps.csv``: ``step,loss``, one row per optimisation step (1-based)."""
    import pandas as pd

    steps = pd.DataFrame({"step": np.arange(1, len(losses) + 1),
                          "loss": np.asarray(losses, dtype=np.float64)})  # fmt: skip
    write_table(path, steps)


def read_steps(path: str | os.PathLike) -> list[float]:
    """The losses of ``steps.csv`` (``step,loss``), in order; [] for a header alone.

    Raises:
        StageError: the file is missing or not such a table.
    """
    import pandas as pd

    reason = ""
    try:
        steps = pd.read_csv(path)
        if list(steps.columns) != ["step", "loss"]:
            reason = f"columns {list(steps.columns)}"
        elif list(steps["step"]) != list(range(1, len(steps) + 1)):
            reason = "steps out of order"
        else:
            return steps["loss"].astype("float64").tolist()
    except FileNotFoundError:
        raise StageError(f"{path} not found; run the stage that writes it first") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        reason = " ".join(str(exc).split())
    raise StageError(f"{path}: expected the columns step,loss with steps 1, 2, ... "
                     f"({reason}); run the stage that writes it again")  # fmt: skip


def history_frame(rows: Sequence[Mapping[str, Any]]) -> Any:
    """History rows (``fit``'s ``History.epochs``) as a DataFrame of HISTORY_COLUMNS
    (``lr`` NaN where a row has none: an ingested baseline's may not)."""
    import pandas as pd

    frame = pd.DataFrame([{c: row.get(c, math.nan) for c in HISTORY_COLUMNS} for row in rows],
                         columns=list(HISTORY_COLUMNS))  # fmt: skip
    return frame.astype({"epoch": "int64"})


def read_history(path: str | os.PathLike) -> Any:
    """Read a history: a DVCLive folder (train's or baseline's ``live/``) or a CSV file
    (``reports/<dataset>/history.csv``); the one reader of every stage.

    Returns:
        A pandas DataFrame, one row per epoch in order: ``epoch`` (int) and the other
        HISTORY_COLUMNS (float) present in the source; a CSV may lack ``lr`` (older
        files), a DVCLive folder must hold every column.
    Raises:
        StageError: the file or folder is missing, empty, lacks a column, or holds a
            value that is not a number, or epochs other than 1, 2, ...
    """
    import pandas as pd

    path = Path(path)
    redo = "run the stage that writes it again"
    try:
        if path.is_dir():  # DVCLive: plots/metrics/<name>.tsv with columns step, <name>
            frame = None
            for name in LIVE_METRICS:
                tsv = path / "plots" / "metrics" / f"{name}.tsv"
                column = pd.read_csv(tsv, sep="\t").rename(columns={"step": "epoch"})
                if list(column.columns) != ["epoch", name]:
                    raise ValueError(f"{tsv.name}: expected the columns step, {name}")
                frame = column if frame is None else frame.merge(column, on="epoch", how="outer")
        else:
            frame = pd.read_csv(path)
    except FileNotFoundError as exc:
        raise StageError(f"{exc.filename or path} not found; {redo}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, KeyError) as exc:
        reason = " ".join(str(exc).split())
        raise StageError(f"{path}: not a history of one row per epoch ({reason}); {redo}") from None
    required = [c for c in HISTORY_COLUMNS if c != "lr" or path.is_dir()]
    missing = [c for c in required if c not in frame.columns]
    if frame.empty or missing:
        what = f"the columns {missing} are missing" if missing else "it has no rows"
        raise StageError(f"{path}: expected a header and one row per epoch, but {what}; {redo}")
    columns = [c for c in HISTORY_COLUMNS if c in frame.columns]
    frame = frame[columns]
    values = frame.apply(pd.to_numeric, errors="coerce")
    bad = values.isna().to_numpy()
    if "lr" in columns:  # an ingested baseline may have no lr: NaN there is allowed
        lr = columns.index("lr")
        bad[:, lr] &= ~frame["lr"].astype(str).str.lower().isin(["nan", ""]).to_numpy()
    if bad.any():
        row, column = np.argwhere(bad)[0]
        raise StageError(f"{path}: expected numbers in every column, got "
                         f"{frame.iat[row, column]!r} in {columns[column]} of row {row + 1}; "
                         f"{redo}")  # fmt: skip
    if list(values["epoch"]) != list(range(1, len(values) + 1)):
        raise StageError(f"{path}: expected epochs 1, 2, ..., {len(values)} in order, got "
                         f"{list(values['epoch'])[:10]}; {redo}")  # fmt: skip
    return (
        values.astype({"epoch": "int64"})
        .astype({c: "float64" for c in columns if c != "epoch"})
        .reset_index(drop=True)
    )


# ------------------------------------------------------------------ DVCLive


class LiveHistory:
    """The history of a run, logged through DVCLive as it trains.

    ``Live(dir=folder, dvcyaml=False, save_dvc_exp=False, monitor_system=False)``:
    dvc.yaml declares the outputs itself (``dvcyaml=False`` keeps DVCLive from
    rewriting it in the middle of ``dvc repro``), and ``dvc exp run`` records the
    experiment (``save_dvc_exp=False``). The folder holds ``params.yaml`` (the
    recipe), ``metrics.json`` (the last epoch's ``val_accuracy`` and ``step``, the
    epoch: what ``dvc exp show`` reads while the stage runs) and
    ``plots/metrics/<name>.tsv`` (every metric, one row per epoch). Creating it
    empties the folder: a resumed run replays the checkpoint's rows first
    (:meth:`log` for each), so the files never depend on where the previous run
    was killed.
    """

    def __init__(self, folder: str | os.PathLike, params: Mapping[str, Any]) -> None:
        from dvclive import Live

        self.folder = Path(folder)
        self.live = Live(dir=str(folder), dvcyaml=False, save_dvc_exp=False,
                         monitor_system=False)  # fmt: skip
        self.live.log_params(dict(params))

    def log(self, row: Mapping[str, Any]) -> None:
        """Log one epoch's history row (``epoch`` becomes DVCLive's step)."""
        self.live.step = int(row["epoch"])
        for name in LIVE_METRICS:
            self.live.log_metric(name, float(row[name]))
        # The summary may be edited (DVCLive's docs); a narrow one keeps `dvc metrics show` so.
        self.live.summary = {k: v for k, v in self.live.summary.items() if k in LIVE_SUMMARY}
        self.live.next_step()  # writes metrics.json; tells the VS Code extension

    def end(self) -> None:
        self.live.end()


def discard_live(live_dir: str | os.PathLike) -> None:
    """Remove a failed run's DVCLive folder, and its parent (the stage's output folder)
    when that leaves it empty: a failed stage leaves nothing behind."""
    live_dir = Path(live_dir)
    shutil.rmtree(live_dir, ignore_errors=True)
    with contextlib.suppress(OSError):
        live_dir.parent.rmdir()


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
    required = [c for c in HISTORY_COLUMNS if c != "lr"]  # lr: optional (older files)
    for i, row in enumerate(history):
        _mapping(row, f"history[{i}]", path, required)
        if _number(row["epoch"], f"history[{i}].epoch", path, int) != i + 1:
            raise StageError(
                f"{path}: key 'history[{i}].epoch': expected {i + 1}, got {row['epoch']}"
            )
        for column in HISTORY_COLUMNS[1:]:
            if column in row:
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
