"""Stage train@<dataset>: train the MLP of params.yaml on the prepared training split.

    python pipeline/train.py --dataset mnist --prepared data/prepared/mnist --out models/mnist

Inputs: ``--prepared``, the ``train`` and ``val`` splits (and ``stats.json``) from
``prepare``. Params: the recipe of the dataset, ``model:`` and ``train:`` with
``overrides.<dataset>`` merged over them (pipeline/recipe.py): the network, the
optimizer, the learning-rate scheduler, label smoothing, gradient clipping,
augmentation, batch size, epochs, early stopping, seed and dtype.
Outputs in ``--out``: ``model.npz`` (the state dict), ``steps.csv`` (the loss of every
optimisation step) and ``live/``, the DVCLive folder, written as training goes:
``params.yaml``, ``metrics.json`` (the last epoch, with ``step`` = the epoch) and
``plots/metrics/<name>.tsv`` (one row per epoch of train_loss, train_accuracy,
val_loss, val_accuracy, lr and seconds). A NaN or infinity in a step's loss, or
after an epoch in the validation loss, a parameter or a buffer, stops the stage
with nothing written.

Resuming: after every epoch, ``fit`` saves everything needed to continue to
``<checkpoints>/<dataset>/train-<fingerprint>.npz`` (default ``checkpoints/`` beside
the params file), outside the stage's outputs, which DVC deletes before it reruns
the stage. Run again after an interruption (Ctrl-C, a killed process, a machine
that went away), the stage continues after the last finished epoch and ends with
the same bytes as an uninterrupted run. The fingerprint covers the params, the
prepared files and the code (this script, the modules it imports, ``mininn/``): a
change of any starts over and removes the older checkpoint. A finished or
diverged run removes its checkpoint.
Same params, same seed, same machine and BLAS kernel: byte-identical ``model.npz``,
``steps.csv`` and DVCLive files (``seconds`` aside, which is wall-clock time).
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
from pipeline.recipe import (
    build_run,
    checkpoint_file,
    divergence_guard_of,
    remove_checkpoint,
    resolved_params,
    saved_history,
)
from pipeline.reports import LIVE_DIR, LiveHistory, discard_live, write_steps

CODE = ("pipeline/train.py", "pipeline/recipe.py", "pipeline/reports.py", "pipeline/common.py")
"""The stage's code besides ``mininn/`` (dvc.yaml's deps): part of the checkpoint's fingerprint."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="a name from params.yaml's datasets")
    parser.add_argument("--prepared", required=True, type=Path, help="prepare's output folder")
    parser.add_argument("--out", required=True, type=Path, help="folder for the outputs")
    parser.add_argument("--params", type=Path, default=common.PARAMS_FILE)
    parser.add_argument("--checkpoints", type=Path, default=None,
                        help="folder of the resumable checkpoints (default: checkpoints/ "
                             "beside the params file)")  # fmt: skip
    args = parser.parse_args(argv)
    where = f"train@{args.dataset}"
    num_classes = common.check_dataset(args.dataset, DATASETS).num_classes
    params = resolved_params(args.dataset, args.params)
    train_p = params["train"]

    x_train, y_train = common.read_prepared(args.prepared, "train", train_p["dtype"], num_classes)
    val_data = common.read_prepared(args.prepared, "val", train_p["dtype"], num_classes)
    run = build_run(args.dataset, params, x_train, y_train, common.read_stats(args.prepared))
    folder = args.checkpoints or Path(args.params).resolve().parent / "checkpoints"
    checkpoint = checkpoint_file(folder, "train", args.dataset, params, args.prepared, CODE)

    live_dir = args.out / LIVE_DIR
    guard = divergence_guard_of(lambda: run.model.state_dict().items(), train_p)
    try:
        live = LiveHistory(live_dir, {"dataset": args.dataset, **params})
        done = saved_history(checkpoint, where)
        for row in done:  # DVCLive's files are rebuilt from the checkpoint
            live.log(row)
        if done:
            print(f"{where}: continuing from {checkpoint} after epoch {len(done)}",
                  file=sys.stderr)  # fmt: skip

        def on_epoch_end(row: dict) -> None:
            guard(row)
            live.log(row)

        history = fit(
            run.model, run.loss_fn, run.optimizer, run.loader, epochs=train_p["epochs"],
            val_data=val_data, metric="accuracy", patience=train_p["patience"],
            desc=args.dataset, on_epoch_end=on_epoch_end, scheduler=run.scheduler,
            clip_grad_norm=train_p["clip_grad_norm"], checkpoint=checkpoint,
        )  # fmt: skip
        live.end()
        with common.atomic_file(args.out / "model.npz") as tmp:
            mininn.save(run.model.state_dict(), tmp)
        write_steps(args.out / "steps.csv", history.step_losses)
    except FloatingPointError as exc:
        discard_live(live_dir)
        remove_checkpoint(checkpoint)  # a diverged run would diverge again
        raise StageError(f"{where}: {exc}; nothing was written") from exc
    except BaseException:  # Ctrl-C included: the checkpoint stays, for the next run
        discard_live(live_dir)
        raise
    remove_checkpoint(checkpoint)
    seconds = sum(row["seconds"] for row in history.epochs)
    print(
        f"train: {args.dataset}: {len(history.epochs)} epochs, val_accuracy "
        f"{history.epochs[-1]['val_accuracy']:.4f}, {seconds:.1f} s -> {args.out}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(run_stage(main))
