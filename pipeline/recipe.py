"""The pipeline's recipe in one place: params.yaml's model:, train: and baseline:
sections, each value checked, and the builders every stage shares (network,
optimizer), so that no stage imports another.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mininn
from mininn.data import DATASETS
from mininn.models import ACTIVATIONS, make_mlp
from pipeline import common
from pipeline.common import StageError

OPTIMIZERS = {
    "sgd": mininn.optim.SGD,
    "adam": mininn.optim.Adam,
    "adamw": mininn.optim.AdamW,
    "rmsprop": mininn.optim.RMSprop,
}


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
