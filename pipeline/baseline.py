"""Stage baseline@<dataset>: the same network in PyTorch, from the same weights and batches.

    python pipeline/baseline.py --dataset mnist --prepared data/prepared/mnist \\
        --out models/mnist/torch

Inputs: ``--prepared``, the ``train``, ``val`` and ``test`` splits. Params: the
dataset's recipe (``model:``, ``train:``, ``overrides:``, as train reads them),
``baseline.source`` and ``baseline.threads``. Outputs in ``--out``: ``baseline.json``
(the format of docs/baseline-format.md), ``steps.csv`` (as train's) and ``live/``,
the DVCLive folder (as train's), written as training goes.

With ``baseline.source: run``, the stage builds the run exactly as train does, in
the same order (``pipeline.recipe.build_run``: ``manual_seed(train.seed)``, the
network, the optimizer, the scheduler, the augmentation and the DataLoader), then
``mininn.interop.to_torch(model, dropout="mininn")`` copies the network into
PyTorch with Dropout layers that draw mininn's masks from the same NumPy stream,
``optimizer_to_torch`` the optimizer, and ``fit_torch`` trains the copy with
PyTorch's own ``CrossEntropyLoss(label_smoothing=...)``, gradient clipping and the
scheduler converted to ``torch.optim.lr_scheduler``'s, on the same augmented
batches. The two runs then differ by floating-point rounding only.
Resuming is train's (``checkpoints/<dataset>/baseline-<fingerprint>.npz``; the
fingerprint adds the torch version and thread count).

With a path template (``baselines/{dataset}.json``) the stage ingests a baseline
produced elsewhere, validated against the format, and lists in ``params_mismatch``
the params keys where it differs from params.yaml. The file must lie in the
project's ``baselines/`` folder, which dvc.yaml lists as the stage's dependency:
editing a baseline file reruns the stage.
"""

from __future__ import annotations

import argparse
import math
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

from mininn.data import DATASETS
from pipeline import common
from pipeline.common import StageError, run_stage
from pipeline.recipe import (
    baseline_params,
    build_run,
    checkpoint_file,
    divergence_guard_of,
    remove_checkpoint,
    resolved_params,
    saved_history,
)
from pipeline.reports import (
    FORMAT,
    HISTORY_COLUMNS,
    LIVE_DIR,
    LiveHistory,
    baseline_file,
    classification_metrics,
    discard_live,
    params_mismatch,
    read_baseline,
    write_steps,
)

CODE = ("pipeline/baseline.py", "pipeline/recipe.py", "pipeline/reports.py",
        "pipeline/common.py")  # fmt: skip
"""The stage's code besides ``mininn/`` (dvc.yaml's deps): part of the checkpoint's fingerprint."""
INSTALL_HINT = (
    "pip install torch==2.13.0 (or pip install -e '.[torch]'), or set baseline.source in "
    "params.yaml to a baseline file, e.g. baselines/{dataset}.json"
)


def run_twin(
    dataset: str, prepared: Path, params: dict, threads: int, live: LiveHistory,
    checkpoints: Path,
) -> tuple[dict, Path]:  # fmt: skip
    """Train and evaluate the PyTorch twin of train's run: (the baseline as a dict, the
    checkpoint file to remove once the outputs are written)."""
    try:
        import torch
    except ImportError:
        raise StageError(f"baseline@{dataset}: PyTorch is not installed; {INSTALL_HINT}") from None
    from mininn.interop import fit_torch, optimizer_to_torch, predict_torch, to_torch

    where = f"baseline@{dataset}"
    start = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    train_p = params["train"]
    dtype, num_classes = train_p["dtype"], DATASETS[dataset].num_classes
    x_train, y_train = common.read_prepared(prepared, "train", dtype, num_classes)
    x_val, y_val = common.read_prepared(prepared, "val", dtype, num_classes)
    x_test, y_test = common.read_prepared(prepared, "test", dtype, num_classes)
    run = build_run(dataset, params, x_train, y_train, common.read_stats(prepared))
    twin = to_torch(run.model, dropout="mininn")  # the masks of mininn's Dropout
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=train_p["label_smoothing"])
    optimizer = optimizer_to_torch(run.optimizer, twin.parameters())
    extra = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    checkpoint = checkpoint_file(checkpoints, "baseline", dataset, params, prepared, CODE, extra)

    def state() -> Any:
        return ((name, t.detach().cpu().numpy()) for name, t in twin.state_dict().items())

    guard = divergence_guard_of(state, train_p)
    done = saved_history(checkpoint, where)
    for row in done:  # DVCLive's files are rebuilt from the checkpoint
        live.log(row)
    if done:
        print(f"{where}: continuing from {checkpoint} after epoch {len(done)}", file=sys.stderr)

    def on_epoch_end(row: dict) -> None:
        guard(row)
        live.log(row)

    try:
        history = fit_torch(
            twin, loss_fn, optimizer, run.loader, epochs=train_p["epochs"],
            val_data=(x_val, y_val), metric="accuracy", patience=train_p["patience"],
            desc=f"{dataset} (PyTorch)", on_epoch_end=on_epoch_end, scheduler=run.scheduler,
            clip_grad_norm=train_p["clip_grad_norm"], checkpoint=checkpoint,
        )  # fmt: skip
    except FloatingPointError as exc:
        remove_checkpoint(checkpoint)  # a diverged run would diverge again
        raise StageError(f"{where}: {exc}; nothing was written") from exc

    def loss_of(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
        logits = predict_torch(twin, x)
        with torch.no_grad():
            return logits, loss_fn(torch.from_numpy(logits), torch.from_numpy(y)).item()

    (val_logits, val_loss), (logits, test_loss) = loss_of(x_val, y_val), loss_of(x_test, y_test)
    metrics = classification_metrics(y_test, logits.argmax(axis=1), DATASETS[dataset].classes)
    metrics.update(test_loss=test_loss, val_loss=val_loss,
                   val_accuracy=float(np.mean(val_logits.argmax(axis=1) == y_val)),
                   train_seconds=sum(row["seconds"] for row in history.epochs),
                   epochs=len(history.epochs))  # fmt: skip
    return {
        "format": FORMAT, "framework": "pytorch", "dataset": dataset, "params": params,
        "history": [{c: row[c] for c in HISTORY_COLUMNS} for row in history.epochs],
        "steps": history.step_losses, "metrics": metrics, "params_mismatch": [],
        "environment": {"torch_version": torch.__version__, "threads": torch.get_num_threads(),
                        "device": "cpu", "wall_seconds": time.perf_counter() - start},
    }, checkpoint  # fmt: skip


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
    common.check_dataset(args.dataset, DATASETS)
    params = resolved_params(args.dataset, args.params)
    base_p = baseline_params(args.params)
    source, threads = base_p["source"], base_p["threads"]
    if source != "run":  # checked before anything is written
        result = read_baseline(baseline_file(source, args.dataset, args.params), args.dataset)
        result["params_mismatch"] = params_mismatch(result["params"], params)

    live_dir, checkpoint = args.out / LIVE_DIR, None
    try:
        live = LiveHistory(live_dir, {"dataset": args.dataset, **params})
        if source == "run":
            folder = args.checkpoints or Path(args.params).resolve().parent / "checkpoints"
            result, checkpoint = run_twin(args.dataset, args.prepared, params, threads, live,
                                          folder)  # fmt: skip
        else:
            for row in result["history"]:
                live.log({"lr": math.nan, **row})
        live.end()
        common.write_json(args.out / "baseline.json", result)
        write_steps(args.out / "steps.csv", result.get("steps", []))
    except BaseException:  # Ctrl-C included: a run's checkpoint stays, for the next run
        discard_live(live_dir)
        raise
    if checkpoint is not None:
        remove_checkpoint(checkpoint)
    m = result["metrics"]
    print(
        f"baseline: {args.dataset}: PyTorch test_accuracy {m['test_accuracy']:.4f}, "
        f"{m['epochs']} epochs, {m['train_seconds']:.1f} s -> {args.out}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(run_stage(main))
