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
from pipeline.recipe import baseline_params, build, build_optimizer, model_params, train_params
from pipeline.reports import (
    FORMAT,
    HISTORY_COLUMNS,
    baseline_file,
    classification_metrics,
    params_mismatch,
    read_baseline,
    write_csv,
)

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
