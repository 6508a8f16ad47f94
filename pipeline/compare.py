"""Stage compare: mininn against its PyTorch twin, for every dataset of params.yaml.

    python pipeline/compare.py --out reports

Inputs, per dataset D: ``reports/D/metrics.json`` and ``reports/D/history.csv``
(evaluate), ``models/D/steps.csv`` (train), ``models/D/torch/baseline.json``,
``history.csv`` and ``steps.csv`` (baseline). Params: ``datasets``.
Outputs in ``--out``: ``comparison.json`` (numeric metrics per dataset: both test
accuracies and their difference, the largest per-epoch train/val loss differences
and per-step relative loss difference, ``|a - b| / max(|a|, |b|)``, both training
times and their ratio, the number of params keys where an ingested baseline
differs; finite numbers only, so any JSON reader takes it), ``comparison.png``,
``comparison.md`` (the README's results table) and, per dataset,
``D/torch_metrics.json`` and ``D/torch_history.csv`` (overlaid with evaluate's files
by dvc.yaml's plots).
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

import numpy as np

from pipeline import common, plots
from pipeline.common import StageError, run_stage
from pipeline.reports import read_baseline

SUMMARY_KEYS = ("test_accuracy", "test_loss", "train_seconds", "epochs")


def _max_abs_diff(a: Sequence[float], b: Sequence[float]) -> float:
    n = min(len(a), len(b))  # early stopping may end the two runs at different epochs
    return float(np.max(np.abs(np.subtract(a[:n], b[:n])))) if n else 0.0


def max_relative_difference(a: Sequence[float], b: Sequence[float]) -> float:
    """max_i |a_i - b_i| / max(|a_i|, |b_i|), a pair of zeros counting as 0.

    Symmetric, in [0, 2], and finite for a loss of exactly 0 (dividing by ``|b_i|``
    alone gives infinity there, which JSON cannot hold).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = np.maximum(np.abs(a), np.abs(b))
    ratio = np.divide(np.abs(a - b), scale, out=np.zeros_like(scale), where=scale > 0)
    return float(ratio.max(initial=0.0))


def summarise(
    metrics: dict, history: dict, steps: list[float], baseline: dict, torch_history: dict
) -> dict[str, Any]:
    """One dataset's comparison: numeric scalars only (``dvc metrics show`` reads them)."""
    torch_metrics = baseline["metrics"]
    n = min(len(steps), len(baseline.get("steps", [])))
    summary = {
        "mininn": {k: metrics[k] for k in SUMMARY_KEYS},
        "pytorch": {k: torch_metrics[k] for k in SUMMARY_KEYS},
        "test_accuracy_diff": metrics["test_accuracy"] - torch_metrics["test_accuracy"],
        "max_train_loss_diff": _max_abs_diff(history["train_loss"], torch_history["train_loss"]),
        "max_val_loss_diff": _max_abs_diff(history["val_loss"], torch_history["val_loss"]),
        # read_baseline checked that PyTorch's train_seconds is positive
        "time_ratio": metrics["train_seconds"] / torch_metrics["train_seconds"],
        "params_mismatch": len(baseline.get("params_mismatch", [])),
    }
    if n:  # an ingested baseline may have no per-step losses
        summary["max_step_loss_rel_diff"] = max_relative_difference(
            steps[:n], baseline["steps"][:n]
        )
    return summary


def figure(histories: dict[str, dict[str, dict]]) -> bytes:
    """Per dataset (rows): loss and accuracy per epoch, mininn and PyTorch, train and val."""
    fig = plots._figure(10, 3.6 * len(histories))
    axes = np.atleast_2d(fig.subplots(len(histories), 2, squeeze=False))
    for row, (dataset, runs) in zip(axes, histories.items(), strict=True):
        for k, (label, h) in enumerate(runs.items()):
            for ax, quantity in zip(row, ("loss", "accuracy"), strict=True):
                ax.plot(
                    h["epoch"], h[f"train_{quantity}"], "--", color=f"C{k}", label=f"{label} train"
                )
                ax.plot(h["epoch"], h[f"val_{quantity}"], "-", color=f"C{k}", label=f"{label} val")
                ax.set(title=f"{dataset}: {quantity}", xlabel="epoch", ylabel=quantity)
                ax.grid(alpha=0.3)
                ax.legend(fontsize="small")
    fig.suptitle("mininn vs PyTorch: same initial weights, same batches")
    return plots._png(fig)


def table(summary: dict[str, dict], notes: list[str]) -> str:
    """The Markdown results table (and notes) that the README quotes."""
    lines = [
        "| dataset | mininn test acc. | PyTorch test acc. | difference | max epoch loss diff. "
        "(train / val) | max step loss rel. diff. | mininn s | PyTorch s | time ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for dataset, s in summary.items():
        m, t = s["mininn"], s["pytorch"]
        lines.append(
            f"| {dataset} | {m['test_accuracy']:.4f} | {t['test_accuracy']:.4f} | "
            f"{s['test_accuracy_diff']:+.4f} | {s['max_train_loss_diff']:.2e} / "
            f"{s['max_val_loss_diff']:.2e} | {s.get('max_step_loss_rel_diff', float('nan')):.2e} | "
            f"{m['train_seconds']:.1f} | {t['train_seconds']:.1f} | {s['time_ratio']:.2f} |"
        )
    return "\n".join([*lines, "", *notes]) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="the reports folder")
    parser.add_argument("--models", type=Path, default=Path("models"), help="train's outputs")
    parser.add_argument("--params", type=Path, default=common.PARAMS_FILE)
    args = parser.parse_args(argv)
    datasets = common.load_params("datasets", path=args.params)
    if not isinstance(datasets, list) or not datasets:
        raise StageError(
            f"params.yaml: datasets: expected a non-empty list of dataset names, got {datasets!r}"
        )
    for dataset in datasets:
        common.check_dataset(dataset)

    summary, histories, notes, copies = {}, {}, [], {}
    for dataset in datasets:
        reports, torch_dir = args.out / dataset, args.models / dataset / "torch"
        baseline = read_baseline(torch_dir / "baseline.json", dataset)
        history, torch_history = (
            plots.read_history(p / "history.csv") for p in (reports, torch_dir)
        )
        steps = plots.read_history(args.models / dataset / "steps.csv")["loss"]
        metrics = common.read_json(reports / "metrics.json")
        missing = [k for k in SUMMARY_KEYS if not isinstance(metrics, dict) or k not in metrics]
        if missing:
            raise StageError(
                f"{reports / 'metrics.json'}: missing {missing}; run `dvc repro evaluate@{dataset}`"
            )
        summary[dataset] = summarise(metrics, history, steps, baseline, torch_history)
        histories[dataset] = {"mininn": history, "PyTorch": torch_history}
        copies[dataset] = (baseline["metrics"], (torch_dir / "history.csv").read_bytes())
        if baseline.get("params_mismatch"):
            notes.append(f"- {dataset}: the PyTorch baseline was ingested from a run with other "
                         f"params: {', '.join(baseline['params_mismatch'])}.")  # fmt: skip
        if baseline["params"]["model"].get("dropout", 0):
            notes.append(f"- {dataset}: with Dropout, each framework draws its own masks: the "
                         "differences are statistical, not only floating point; the per-step "
                         "relative difference then measures the noise of steps whose loss is "
                         "near zero, and is meaningful only without Dropout (floating point: "
                         "below 1e-9 in float64).")  # fmt: skip

    png, markdown = figure(histories), table(summary, notes)  # everything computed first
    common.write_json(args.out / "comparison.json", summary)
    for dataset, (torch_metrics, history_bytes) in copies.items():
        common.write_json(args.out / dataset / "torch_metrics.json", torch_metrics)
        with common.atomic_file(args.out / dataset / "torch_history.csv") as tmp:
            tmp.write_bytes(history_bytes)
    for name, data in (("comparison.png", png), ("comparison.md", markdown.encode())):
        with common.atomic_file(args.out / name) as tmp:
            tmp.write_bytes(data)
    print(markdown, file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_stage(main))
