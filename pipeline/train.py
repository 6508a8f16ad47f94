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
from typing import Any

if __package__ in (None, ""):  # run as a script (by DVC): make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from pipeline.environment import ensure_environment

    ensure_environment()  # the project's .venv if this Python lacks the packages

import mininn
from mininn.data import DATASETS
from mininn.models import ACTIVATIONS, make_mlp
from mininn.training import fit
from pipeline import common
from pipeline.common import StageError, run_stage

OPTIMIZERS = {
    "sgd": mininn.optim.SGD,
    "adam": mininn.optim.Adam,
    "adamw": mininn.optim.AdamW,
    "rmsprop": mininn.optim.RMSprop,
}
HISTORY_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds")


def model_params(path: str | Path | None = None) -> dict[str, Any]:
    """The ``model:`` section of params.yaml, every value checked (StageError naming the key)."""
    p = common.load_params("model", ["hidden_sizes", "activation", "batch_norm", "dropout"], path)
    sizes = p["hidden_sizes"]
    if not isinstance(sizes, list):
        raise StageError(
            f"model.hidden_sizes: expected a list of ints, e.g. [512, 256], got {sizes!r}"
        )
    if not isinstance(p["batch_norm"], bool):
        raise StageError(f"model.batch_norm: expected true or false, got {p['batch_norm']!r}")
    dropout = common.check_number(p["dropout"], "model.dropout", minimum=0, maximum=1,
                                  max_inclusive=False)  # fmt: skip
    return {
        "hidden_sizes": [
            common.check_int(s, f"model.hidden_sizes[{i}]", minimum=1) for i, s in enumerate(sizes)
        ],
        "activation": common.check_choice(p["activation"], "model.activation", ACTIVATIONS),
        "batch_norm": p["batch_norm"],
        "dropout": dropout,
    }


def train_params(path: str | Path | None = None) -> dict[str, Any]:
    """The ``train:`` section of params.yaml, every value checked (StageError naming the key)."""
    keys = ["optimizer", "lr", "weight_decay", "momentum", "batch_size", "epochs", "patience",
            "seed", "dtype"]  # fmt: skip
    p = common.load_params("train", keys, path)
    return {
        "optimizer": common.check_choice(p["optimizer"], "train.optimizer", OPTIMIZERS),
        "lr": common.check_number(p["lr"], "train.lr", minimum=0, min_inclusive=False),
        "weight_decay": common.check_number(p["weight_decay"], "train.weight_decay", minimum=0),
        "momentum": common.check_number(p["momentum"], "train.momentum", minimum=0, maximum=1),
        "batch_size": common.check_int(p["batch_size"], "train.batch_size", minimum=1),
        "epochs": common.check_int(p["epochs"], "train.epochs", minimum=1),
        "patience": None if p["patience"] is None
        else common.check_int(p["patience"], "train.patience", minimum=1),
        "seed": common.check_int(p["seed"], "train.seed", minimum=0, maximum=2**32 - 1),
        "dtype": common.check_choice(p["dtype"], "train.dtype", ["float32", "float64"]),
    }  # fmt: skip


def build(dataset: str, model_p: dict[str, Any], dtype: str) -> mininn.Sequential:
    """The network of ``model_p`` for ``dataset`` (784 inputs, one output per class)."""
    return make_mlp(
        common.NUM_FEATURES, model_p["hidden_sizes"], DATASETS[dataset].num_classes,
        activation=model_p["activation"], dropout=model_p["dropout"],
        batch_norm=model_p["batch_norm"], dtype=dtype,
    )  # fmt: skip


def build_optimizer(model: mininn.Module, train_p: dict[str, Any]) -> mininn.optim.Optimizer:
    """The optimizer of ``train_p`` over ``model``'s parameters (momentum: sgd/rmsprop only)."""
    extra = {"momentum": train_p["momentum"]} if train_p["optimizer"] in ("sgd", "rmsprop") else {}
    return OPTIMIZERS[train_p["optimizer"]](
        model.parameters(), lr=train_p["lr"], weight_decay=train_p["weight_decay"], **extra
    )


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


def write_csv(path: Path, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Write a CSV atomically, floats at full precision (``repr``), ints as ints."""
    lines = [",".join(columns)]
    lines += [",".join(repr(float(v)) if isinstance(v, float) else str(v) for v in r) for r in rows]
    with common.atomic_file(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(run_stage(main))
