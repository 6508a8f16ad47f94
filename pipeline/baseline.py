"""Stage baseline@<dataset>: the same network in PyTorch, from the same weights and batches.

    python pipeline/baseline.py --dataset mnist --prepared data/prepared/mnist \\
        --out models/mnist/torch

Inputs: ``--prepared``, the ``train``, ``val`` and ``test`` splits. Params: ``model.*``
and ``train.*`` (as train reads them), ``baseline.source`` and ``baseline.threads``.
Outputs in ``--out``: ``baseline.json`` (the format of docs/baseline-format.md),
``history.csv`` and ``steps.csv`` (the columns of train's), written only on success.

With ``baseline.source: run``, mininn builds the network exactly as train does
(``manual_seed(train.seed)``, then ``make_mlp``), ``mininn.interop.to_torch`` copies
it into PyTorch, and ``fit_torch`` trains the copy with the twin optimizer on the
batches of the same ``DataLoader`` seed: without Dropout the two runs differ by
floating-point rounding only. Dropout masks cannot be shared: the twin draws its
own (``torch.manual_seed(train.seed)``) with the same p, so with Dropout the
difference is statistical. With a path template (``baselines/{dataset}.json``) the
stage ingests a baseline produced elsewhere, validated against the format, and
lists in ``params_mismatch`` the params keys where it differs from params.yaml.
The file must lie in the project's ``baselines/`` folder, which dvc.yaml lists as
the stage's dependency: editing a baseline file reruns the stage.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (by DVC): make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from pipeline.environment import ensure_environment

    ensure_environment()  # the project's .venv if this Python lacks the packages

import numpy as np

import mininn
from mininn.data import DATASETS
from pipeline import common
from pipeline.common import StageError, run_stage
from pipeline.evaluate import classification_metrics
from pipeline.train import (
    HISTORY_COLUMNS,
    build,
    build_optimizer,
    model_params,
    train_params,
    write_csv,
)

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
INSTALL_HINT = (
    "pip install torch==2.13.0 (or pip install -e '.[torch]'), or set baseline.source in "
    "params.yaml to a baseline file, e.g. baselines/{dataset}.json"
)


def run_twin(dataset: str, prepared: Path, model_p: dict, train_p: dict, threads: int) -> dict:
    """Train and evaluate the PyTorch twin of train's network; the baseline as a dict."""
    try:
        import torch
    except ImportError:
        raise StageError(f"baseline@{dataset}: PyTorch is not installed; {INSTALL_HINT}") from None
    from mininn.interop import fit_torch, optimizer_to_torch, predict_torch, to_torch

    start = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(train_p["seed"])  # the twin's own Dropout masks
    dtype = train_p["dtype"]
    num_classes = DATASETS[dataset].num_classes
    x_train, y_train = common.read_prepared(prepared, "train", dtype, num_classes)
    x_val, y_val = common.read_prepared(prepared, "val", dtype, num_classes)
    x_test, y_test = common.read_prepared(prepared, "test", dtype, num_classes)
    mininn.manual_seed(train_p["seed"])  # as train: the same initial weights
    model = build(dataset, model_p, dtype)
    optimizer = build_optimizer(model, train_p)
    twin, loss_fn = to_torch(model), torch.nn.CrossEntropyLoss()
    loader = mininn.DataLoader(
        x_train, y_train, batch_size=train_p["batch_size"], shuffle=True, seed=train_p["seed"]
    )

    def state() -> Any:
        return ((name, t.detach().cpu().numpy()) for name, t in twin.state_dict().items())

    try:
        history = fit_torch(
            twin, loss_fn, optimizer_to_torch(optimizer, twin.parameters()), loader,
            epochs=train_p["epochs"], val_data=(x_val, y_val), metric="accuracy",
            patience=train_p["patience"], desc=f"{dataset} (PyTorch)",
            on_epoch_end=common.divergence_guard(state, train_p["lr"]),
        )  # fmt: skip
    except FloatingPointError as exc:
        raise StageError(f"baseline@{dataset}: {exc}; nothing was written") from exc

    def loss_of(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
        logits = predict_torch(twin, x)
        return logits, loss_fn(torch.from_numpy(logits), torch.from_numpy(y)).item()

    (val_logits, val_loss), (logits, test_loss) = loss_of(x_val, y_val), loss_of(x_test, y_test)
    metrics = classification_metrics(y_test, logits.argmax(axis=1), DATASETS[dataset].classes)
    metrics.update(test_loss=test_loss, val_loss=val_loss,
                   val_accuracy=float(np.mean(val_logits.argmax(axis=1) == y_val)),
                   train_seconds=sum(row["seconds"] for row in history.epochs),
                   epochs=len(history.epochs))  # fmt: skip
    return {
        "format": FORMAT, "framework": "pytorch", "dataset": dataset,
        "params": {"model": model_p, "train": train_p},
        "history": [{c: row[c] for c in HISTORY_COLUMNS} for row in history.epochs],
        "steps": history.step_losses, "metrics": metrics, "params_mismatch": [],
        "environment": {"torch_version": torch.__version__, "threads": torch.get_num_threads(),
                        "device": "cpu", "wall_seconds": time.perf_counter() - start},
    }  # fmt: skip


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


def baseline_params(path: str | Path | None = None) -> dict[str, Any]:
    """The ``baseline:`` section of params.yaml, every value checked (StageError naming the key)."""
    p = common.load_params("baseline", ["source", "threads"], path)
    source = p["source"]
    if not isinstance(source, str) or (source != "run" and "{dataset}" not in source):
        raise StageError(
            f"baseline.source: expected 'run' or a path template containing {{dataset}}, "
            f"e.g. baselines/{{dataset}}.json, got {source!r}"
        )
    return {"source": source, "threads": common.check_int(p["threads"], "baseline.threads",
                                                          minimum=0)}  # fmt: skip


def params_mismatch(recorded: dict, current: dict) -> list[str]:
    """The dotted params keys (``train.lr``) whose recorded value differs from the current one."""
    return sorted(
        f"{section}.{key}"
        for section in current
        for key in set(current[section]) | set(recorded.get(section, {}))
        if recorded.get(section, {}).get(key) != current[section].get(key)
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="a name from params.yaml's datasets")
    parser.add_argument("--prepared", required=True, type=Path, help="prepare's output folder")
    parser.add_argument("--out", required=True, type=Path, help="folder for the three outputs")
    parser.add_argument("--params", type=Path, default=common.PARAMS_FILE)
    args = parser.parse_args(argv)
    common.check_dataset(args.dataset, DATASETS)
    model_p, train_p = model_params(args.params), train_params(args.params)
    base_p = baseline_params(args.params)
    source, threads = base_p["source"], base_p["threads"]

    if source == "run":
        result = run_twin(args.dataset, args.prepared, model_p, train_p, threads)
    else:
        path = baseline_file(source, args.dataset, args.params)
        result = read_baseline(path, args.dataset)
        current = {"model": model_p, "train": train_p}
        result["params_mismatch"] = params_mismatch(result["params"], current)
    steps = [[i, loss] for i, loss in enumerate(result.get("steps", []), start=1)]
    with common.atomic_dir(args.out) as tmp:
        common.write_json(tmp / "baseline.json", result)
        write_csv(tmp / "history.csv", HISTORY_COLUMNS,
                  [[row[c] for c in HISTORY_COLUMNS] for row in result["history"]])  # fmt: skip
        write_csv(tmp / "steps.csv", ("step", "loss"), steps)
    m = result["metrics"]
    print(
        f"baseline: {args.dataset}: PyTorch test_accuracy {m['test_accuracy']:.4f}, "
        f"{m['epochs']} epochs, {m['train_seconds']:.1f} s -> {args.out}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(run_stage(main))
