"""Stage evaluate@<dataset>: test metrics, confusion matrix and figures of the trained model.

    python pipeline/evaluate.py --dataset mnist --prepared data/prepared/mnist \\
        --model models/mnist --out reports/mnist

Inputs: ``--model``, train's ``model.npz`` and DVCLive folder ``live/``; ``--prepared``,
the ``val`` and ``test`` splits. Params: the dataset's recipe (``model:``, ``train:``
and ``overrides:``): the network to rebuild, ``train.dtype``, and
``train.label_smoothing`` (the test loss is the training criterion's, as the
history's losses). Outputs in ``--out`` (committed to git): ``accuracy.json``
(the stage's DVC metric, the test accuracy under a key of its own,
``{"<dataset>": {"test_accuracy": ...}}``: DVC gives a key that several metrics
files share one column per file in ``dvc exp show``, named ``<path>:<key>``),
``metrics.json`` (a report: test accuracy and loss, validation accuracy, macro F1,
epochs),
``history.csv`` (the DVCLive history as one table, for ``dvc plots``),
``confusion.csv`` (``actual,predicted`` class names, one row per test image, for
DVC's confusion template), ``classification_report.txt`` (scikit-learn: precision,
recall, i.e. the per-class accuracy, and F1 of each class), ``learning_curves.png``
and ``confusion.png``.
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script (by DVC): make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from pipeline.environment import ensure_environment

    ensure_environment()  # the project's .venv if this Python lacks the packages

import numpy as np

import mininn
from mininn.data import DATASETS
from mininn.metrics import confusion_matrix
from mininn.training import evaluate, predict
from pipeline import common, plots
from pipeline.common import StageError, run_stage
from pipeline.recipe import build, build_loss, resolved_params
from pipeline.reports import LIVE_DIR, REPORT_METRICS, classification_metrics, read_history


def accuracy_metric(dataset: str, metrics: dict[str, float]) -> dict[str, dict[str, float]]:
    """The DVC metric of ``evaluate@<dataset>``: the test accuracy, nested under the dataset.

    Example:
        >>> accuracy_metric("mnist", {"test_accuracy": 0.99, "test_loss": 0.03})
        {'mnist': {'test_accuracy': 0.99}}
    """
    return {dataset: {"test_accuracy": float(metrics["test_accuracy"])}}


def main(argv: Sequence[str] | None = None) -> int:
    from sklearn.metrics import classification_report

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="a name from params.yaml's datasets")
    parser.add_argument("--prepared", required=True, type=Path, help="prepare's output folder")
    parser.add_argument("--model", required=True, type=Path, help="train's output folder")
    parser.add_argument("--out", required=True, type=Path, help="report folder to write")
    parser.add_argument("--params", type=Path, default=common.PARAMS_FILE)
    args = parser.parse_args(argv)
    info = common.check_dataset(args.dataset, DATASETS)
    classes = info.classes
    params = resolved_params(args.dataset, args.params)  # checked whole, as train does
    dtype = params["train"]["dtype"]

    model = build(args.dataset, params["model"], dtype)
    model_file = args.model / "model.npz"
    try:
        state = mininn.load(model_file)
        model.load_state_dict(state)
    except (OSError, ValueError, RuntimeError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise StageError(
            f"evaluate@{args.dataset}: cannot load {model_file} into the network "
            f"of params.yaml's model: section ({exc}); run `dvc repro train@{args.dataset}`"
        ) from exc
    if not all(np.all(np.isfinite(v)) for v in state.values() if np.asarray(v).dtype.kind == "f"):
        raise StageError(
            f"evaluate@{args.dataset}: {model_file} holds NaN or infinite weights (a diverged "
            f"training); run `dvc repro train@{args.dataset}`"
        )
    history = read_history(args.model / LIVE_DIR)
    x_test, y_test = common.read_prepared(args.prepared, "test", dtype, info.num_classes)
    x_val, y_val = common.read_prepared(args.prepared, "val", dtype, info.num_classes)

    loss_fn = build_loss(params["train"])
    logits = predict(model, x_test)
    y_pred = logits.argmax(axis=1)
    val = evaluate(model, loss_fn, x_val, y_val, metric="accuracy")  # after early stopping
    matrix = confusion_matrix(y_test, y_pred, num_classes=len(classes))
    metrics = classification_metrics(y_test, y_pred, classes)
    metrics.update(test_loss=float(loss_fn(logits, y_test)), val_accuracy=val["accuracy"],
                   epochs=len(history))  # fmt: skip
    metrics = {key: metrics[key] for key in REPORT_METRICS}  # per class: the report
    report = classification_report(
        y_test, y_pred, labels=range(len(classes)), target_names=classes, digits=4,
        zero_division=0,
    )  # fmt: skip
    confusion_rows = [f"{classes[a]},{classes[p]}" for a, p in zip(y_test, y_pred, strict=True)]

    writes = {  # everything computed first: a failure leaves no half-written report
        "history.csv": history.to_csv(index=False, lineterminator="\n").encode(),
        "confusion.csv": "\n".join(["actual,predicted", *confusion_rows, ""]).encode(),
        "classification_report.txt": report.encode(),
        "learning_curves.png": plots.learning_curves_png({"mininn": history}, args.dataset),
        "confusion.png": plots.confusion_png(matrix, classes, f"{args.dataset}: test set"),
    }
    common.write_json(args.out / "metrics.json", metrics)
    common.write_json(args.out / "accuracy.json", accuracy_metric(args.dataset, metrics))
    for name, data in writes.items():
        with common.atomic_file(args.out / name) as tmp:
            tmp.write_bytes(data)
    print(
        f"evaluate: {args.dataset}: test_accuracy {metrics['test_accuracy']:.4f}, "
        f"macro_f1 {metrics['macro_f1']:.4f} -> {args.out}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(run_stage(main))
