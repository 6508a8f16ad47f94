"""Stage train@<dataset>: train the MLP of params.yaml on the prepared training split.

    python pipeline/train.py --dataset mnist --prepared data/prepared/mnist --out models/mnist

Inputs: ``--prepared``, the ``train`` and ``val`` splits from ``prepare``.
Params: ``model.*`` (hidden_sizes, activation, batch_norm, dropout) and ``train.*``
(optimizer, lr, weight_decay, momentum, batch_size, epochs, patience, seed, dtype).
Outputs in ``--out``: ``model.npz`` (the state dict), ``history.csv`` (one row per
epoch) and ``steps.csv`` (the loss of every optimisation step), written only when
training succeeds: a NaN or infinity in a step's loss, or after an epoch in the
validation loss, a parameter or a buffer, stops the stage with nothing written.
Same params, same seed, same machine and BLAS kernel: byte-identical ``model.npz``
and ``steps.csv`` (``history.csv``'s ``seconds`` column is wall-clock time).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script (by DVC): make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from pipeline.environment import ensure_environment

    ensure_environment()  # the project's .venv if this Python lacks the packages

import mininn
from mininn.data import DATASETS
from mininn.training import fit
from pipeline import common
from pipeline.common import StageError, run_stage
from pipeline.recipe import build, build_optimizer, model_params, train_params
from pipeline.reports import HISTORY_COLUMNS, write_csv


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="a name from params.yaml's datasets")
    parser.add_argument("--prepared", required=True, type=Path, help="prepare's output folder")
    parser.add_argument("--out", required=True, type=Path, help="folder for the three outputs")
    parser.add_argument("--params", type=Path, default=common.PARAMS_FILE)
    args = parser.parse_args(argv)
    num_classes = common.check_dataset(args.dataset, DATASETS).num_classes
    model_p, train_p = model_params(args.params), train_params(args.params)

    x_train, y_train = common.read_prepared(args.prepared, "train", train_p["dtype"], num_classes)
    val_data = common.read_prepared(args.prepared, "val", train_p["dtype"], num_classes)
    mininn.manual_seed(train_p["seed"])  # the initial weights depend on params only
    model = build(args.dataset, model_p, train_p["dtype"])
    optimizer = build_optimizer(model, train_p)
    loader = mininn.DataLoader(
        x_train, y_train, batch_size=train_p["batch_size"], shuffle=True, seed=train_p["seed"]
    )
    guard = common.divergence_guard(lambda: model.state_dict().items(), train_p["lr"])
    try:
        history = fit(
            model, mininn.CrossEntropyLoss(), optimizer, loader, epochs=train_p["epochs"],
            val_data=val_data, metric="accuracy", patience=train_p["patience"], desc=args.dataset,
            on_epoch_end=guard,
        )  # fmt: skip
    except FloatingPointError as exc:
        raise StageError(f"train@{args.dataset}: {exc}; nothing was written") from exc

    rows = [[row[c] for c in HISTORY_COLUMNS] for row in history.epochs]
    steps = [[i, loss] for i, loss in enumerate(history.step_losses, start=1)]
    with common.atomic_file(args.out / "model.npz") as tmp:
        mininn.save(model.state_dict(), tmp)
    write_csv(args.out / "history.csv", HISTORY_COLUMNS, rows)
    write_csv(args.out / "steps.csv", ("step", "loss"), steps)
    last = history.epochs[-1]
    print(
        f"train: {args.dataset}: {len(rows)} epochs, val_accuracy {last['val_accuracy']:.4f}, "
        f"{sum(r[-1] for r in rows):.1f} s -> {args.out}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(run_stage(main))
