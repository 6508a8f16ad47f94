"""Multiclass classification: recognise handwritten digits (MNIST).

The images come through ``mininn.data``, from the same sources as the
pipeline's fetch stage, tried in order: the folder named by the
``MININN_DATA_DIR`` environment variable, the team mirror ``../shared/datasets``
beside the repository, ``/usr/share/datasets``, the publishers' addresses.
Each file is checked against its pinned SHA-256 and cached, uncompressed, in
``--data-dir``. The last ``--val-size`` training images are held out for validation.

A 784-256-128-10 ReLU MLP outputs logits; ``CrossEntropyLoss`` applies the
softmax itself (``mininn.Softmax`` turns logits into probabilities when you
need them). ``mininn.training.fit`` runs the training loop.

Run it from the repository root::

    python examples/multiclass_classification.py            # about 30 s on 2 cores
    python examples/multiclass_classification.py --epochs 1 --out /tmp/figs

It prints one line per epoch and the test accuracy (>= 0.97 with the defaults),
and saves ``multiclass_classification.png`` (the training curve) in ``--out``.
Without any data source it prints where it looked and exits with status 1.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

import mininn
from mininn.models import make_mlp

DEFAULT_OUT = Path(__file__).resolve().parent / "output"


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def seed(text: str) -> int:
    """argparse type: an integer in [0, 2**32 - 1], as NumPy's generators take."""
    value = int(text)
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, 2**32 - 1], got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (a learning rate)."""
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


def load_mnist(data_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Return ``{"train": (x, y), "test": (x, y)}``: x (N, 784) float32 in [0, 1], y (N,) int64.

    Reads the cache in ``data_dir``; fills it with :func:`mininn.data.fetch` first
    when it is missing or unreadable.

    Raises:
        mininn.data.DatasetNotFoundError: no source holds the files.
    """
    try:
        raw = {
            split: mininn.data.load_split(data_dir, split, "mnist") for split in ("train", "test")
        }
    except (FileNotFoundError, ValueError):
        mininn.data.fetch("mnist", data_dir)
        raw = {
            split: mininn.data.load_split(data_dir, split, "mnist") for split in ("train", "test")
        }
    return {
        split: (images.reshape(len(images), -1).astype(np.float32) / 255, labels.astype(np.int64))
        for split, (images, labels) in raw.items()
    }


def print_epoch(row: dict[str, float]) -> None:
    """Print one row of the training history."""
    print(
        f"epoch {row['epoch']:2d}  train loss {row['train_loss']:.4f}  "
        f"val loss {row['val_loss']:.4f}  val accuracy {row['val_accuracy']:.4f}  "
        f"({row['seconds']:.1f} s)"
    )


def save_figure(path: Path, history: mininn.training.History) -> None:
    """Plot the losses (left) and the validation accuracy (right) per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = history.column("epoch")
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.5))
    left.plot(epochs, history.column("train_loss"), marker="o", label="training")
    left.plot(epochs, history.column("val_loss"), marker="o", label="validation")
    left.set(xlabel="epoch", ylabel="cross-entropy loss")
    left.legend()
    right.plot(epochs, history.column("val_accuracy"), marker="o", color="C1")
    right.set(xlabel="epoch", ylabel="validation accuracy")
    fig.suptitle("MNIST, mininn 784-256-128-10 MLP")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,  # --help shows the defaults
    )
    parser.add_argument("--epochs", type=positive_int, default=5, help="passes over the data")
    parser.add_argument("--seed", type=seed, default=0, help="weights and batch order")
    parser.add_argument("--lr", type=positive_float, default=3e-3, help="Adam's learning rate")
    parser.add_argument("--batch-size", type=positive_int, default=512, help="samples per step")
    parser.add_argument(
        "--val-size",
        type=positive_int,
        default=5000,
        help="training images held out for validation",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the figure")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="cache of the IDX files; None: <out>/data/mnist",
    )
    args = parser.parse_args(argv)

    try:
        data = load_mnist(args.data_dir or args.out / "data" / "mnist")
    except mininn.data.DatasetNotFoundError as error:
        env = mininn.data.DATA_DIR_ENV
        print(
            f"{error}\n\nmulticlass_classification: MNIST is not available. Set {env} to a "
            "folder holding mnist/train-images-idx3-ubyte.gz and the other three files, then "
            f"rerun:\n    {env}=/path/to/datasets python examples/multiclass_classification.py",
            file=sys.stderr,
        )
        return 1
    x_train, y_train = data["train"]
    if args.val_size >= len(x_train):
        parser.error(f"--val-size must be below the {len(x_train)} training images")
    x_val, y_val = x_train[-args.val_size :], y_train[-args.val_size :]
    x_train, y_train = x_train[: -args.val_size], y_train[: -args.val_size]
    x_test, y_test = data["test"]
    print(f"MNIST: {len(x_train)} training, {len(x_val)} validation, {len(x_test)} test images")

    mininn.manual_seed(args.seed)
    model = make_mlp(784, [256, 128], 10)  # Linear-ReLU-Linear-ReLU-Linear, logits out
    loss_fn = mininn.CrossEntropyLoss()
    optimizer = mininn.optim.Adam(model.parameters(), lr=args.lr)
    loader = mininn.DataLoader(
        x_train, y_train, batch_size=args.batch_size, shuffle=True, seed=args.seed
    )
    history = mininn.training.fit(
        model,
        loss_fn,
        optimizer,
        loader,
        epochs=args.epochs,
        val_data=(x_val, y_val),
        metric="accuracy",
        progress=False,
        on_epoch_end=print_epoch,
    )

    logits = mininn.training.predict(model, x_test)
    accuracy = mininn.metrics.accuracy(y_test, logits.argmax(axis=1))
    print(f"test accuracy: {accuracy:.4f} ({len(x_test)} images)")

    args.out.mkdir(parents=True, exist_ok=True)
    figure = args.out / "multiclass_classification.png"
    save_figure(figure, history)
    print(f"figure: {figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
