"""Stage compare: mininn against its PyTorch twin, for every dataset of params.yaml.

    python pipeline/compare.py --out reports

Inputs, per dataset D: ``reports/D/metrics.json`` and ``reports/D/history.csv``
(evaluate), ``models/D/steps.csv`` (train), ``models/D/torch/baseline.json`` (with
PyTorch's step losses) and its DVCLive folder ``live/`` (baseline). Params: ``datasets``.

The twin starts from the same weights and trains on the same augmented batches
with the same Dropout masks, optimizer, schedule, label smoothing and clipping, so
the two runs differ by floating-point rounding only: the report leads with the
relative difference of every step's loss, ``|a - b| / max(|a|, |b|)`` (0 for two
zero losses), its largest and median value per dataset.

Outputs in ``--out``: ``comparison.md`` (first table: the per-step relative
difference; second: test accuracy and loss, training time of both frameworks; the
README quotes them), ``comparison.json`` (the same numbers per dataset; finite
numbers only, so any JSON reader takes it; a report, not a DVC metric: its
per-dataset keys would widen ``dvc metrics show``), ``comparison.png`` (per dataset: loss
and accuracy per epoch of both frameworks, and the per-step relative difference on
a log scale) and, per dataset, ``D/torch_metrics.json`` (PyTorch's metrics with
the keys of evaluate's ``metrics.json``) and ``D/torch_history.csv`` (PyTorch's history, overlaid
with evaluate's ``history.csv`` by dvc.yaml's plots).
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
from pipeline.reports import (
    LIVE_DIR,
    REPORT_METRICS,
    read_baseline,
    read_history,
    read_steps,
    write_table,
)

SUMMARY_KEYS = ("test_accuracy", "test_loss", "train_seconds", "epochs")
"""Per framework in comparison.json; mininn's train_seconds is its history's sum."""


def relative_differences(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    """|a_i - b_i| / max(|a_i|, |b_i|) per element, a pair of zeros counting as 0.

    Symmetric, in [0, 2], and finite for a loss of exactly 0 (dividing by ``|b_i|``
    alone gives infinity there, which JSON cannot hold).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = np.maximum(np.abs(a), np.abs(b))
    return np.divide(np.abs(a - b), scale, out=np.zeros_like(scale), where=scale > 0)


def max_relative_difference(a: Sequence[float], b: Sequence[float]) -> float:
    """The largest of :func:`relative_differences`, 0 for empty sequences."""
    return float(relative_differences(a, b).max(initial=0.0))


def _max_abs_diff(a: Sequence[float], b: Sequence[float]) -> float:
    n = min(len(a), len(b))  # early stopping may end the two runs at different epochs
    return float(np.max(np.abs(np.subtract(a[:n], b[:n])))) if n else 0.0


def summarise(
    metrics: dict, history: Any, steps: Sequence[float], baseline: dict, torch_history: Any,
    torch_steps: Sequence[float],
) -> dict[str, Any]:  # fmt: skip
    """One dataset's comparison: numeric scalars only (any JSON reader takes it)."""
    torch_metrics = baseline["metrics"]
    n = min(len(steps), len(torch_steps))
    summary: dict[str, Any] = {}
    if n:  # an ingested baseline may have no per-step losses
        rel = relative_differences(steps[:n], torch_steps[:n])
        summary["steps"] = {"compared": n, "max_rel_diff": float(rel.max()),
                            "median_rel_diff": float(np.median(rel)),
                            "max_at_step": int(rel.argmax()) + 1}  # fmt: skip
    summary.update({
        "mininn": {k: metrics[k] for k in SUMMARY_KEYS},
        "pytorch": {k: torch_metrics[k] for k in SUMMARY_KEYS},
        "test_accuracy_diff": metrics["test_accuracy"] - torch_metrics["test_accuracy"],
        "max_train_loss_diff": _max_abs_diff(history["train_loss"], torch_history["train_loss"]),
        "max_val_loss_diff": _max_abs_diff(history["val_loss"], torch_history["val_loss"]),
        # read_baseline checked that PyTorch's train_seconds is positive
        "time_ratio": metrics["train_seconds"] / torch_metrics["train_seconds"],
        "params_mismatch": len(baseline.get("params_mismatch", [])),
    })  # fmt: skip
    return summary


def figure(histories: dict[str, dict[str, Any]], step_diffs: dict[str, np.ndarray]) -> bytes:
    """Per dataset (rows): loss and accuracy per epoch of both frameworks (train dashed,
    val solid), and the per-step relative difference of the losses (log scale)."""
    from matplotlib.ticker import MaxNLocator

    fig = plots._figure(16, 3.8 * len(histories))
    axes = np.atleast_2d(fig.subplots(len(histories), 3, squeeze=False))
    for row, (dataset, runs) in zip(axes, histories.items(), strict=True):
        for k, (label, h) in enumerate(runs.items()):
            for ax, quantity in zip(row, ("loss", "accuracy"), strict=False):
                ax.plot(
                    h["epoch"], h[f"train_{quantity}"], "--", color=f"C{k}", label=f"{label} train"
                )
                ax.plot(h["epoch"], h[f"val_{quantity}"], "-", color=f"C{k}", label=f"{label} val")
                ax.set(title=f"{dataset}: {quantity}", xlabel="epoch", ylabel=quantity)
                ax.grid(alpha=0.3)
                ax.legend(fontsize="small")
        ax = row[2]
        rel = step_diffs.get(dataset, np.zeros(0))
        ax.set_title(f"{dataset}: each step's loss, relative difference")
        if len(rel):
            steps = np.arange(1, len(rel) + 1)
            shown = rel > 0  # a log axis cannot show exact agreement: counted in the legend
            equal = int((~shown).sum())
            label = f"|a - b| / max(|a|, |b|); {equal} steps equal"
            ax.plot(steps[shown], rel[shown], ".", ms=2, color="C2", alpha=0.5, label=label)
            median = float(np.median(rel))
            if median > 0:
                ax.axhline(median, color="C3", lw=1, label=f"median {median:.1e}")
            ax.set_yscale("log")
            ax.legend(fontsize="small")
        else:
            ax.set_title(f"{dataset}: no per-step losses in the baseline")
        ax.set(xlabel="step", ylabel="relative difference, mininn vs PyTorch")
        ax.grid(alpha=0.3, which="both")
        for ax in row[:2]:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle("mininn vs PyTorch: same weights, batches, Dropout masks and recipe")
    return plots._png(fig)


def markdown(table: Any, left: Sequence[str] = ("dataset",)) -> str:
    """A DataFrame as a GitHub Markdown table; the ``left`` columns left-aligned, the
    others (numbers) right-aligned. Cells are written as they are (format them first)."""
    columns = [str(c) for c in table.columns]
    lines = ["| " + " | ".join(columns) + " |",
             "| " + " | ".join("---" if c in left else "---:" for c in columns) + " |"]  # fmt: skip
    for values in table.astype(str).itertuples(index=False):
        lines.append("| " + " | ".join(values) + " |")
    return "\n".join(lines)


def tables(summary: dict[str, dict], notes: list[str]) -> str:
    """comparison.md: the per-step relative difference first, then the results."""
    import pandas as pd

    steps = pd.DataFrame([
        {"dataset": d, "steps": s["steps"]["compared"],
         "largest rel. diff.": f"{s['steps']['max_rel_diff']:.2e}",
         "at step": s["steps"]["max_at_step"],
         "median rel. diff.": f"{s['steps']['median_rel_diff']:.2e}"}
        for d, s in summary.items() if "steps" in s
    ])  # fmt: skip
    results = pd.DataFrame([
        {"dataset": d, "mininn test acc.": f"{s['mininn']['test_accuracy']:.4f}",
         "PyTorch test acc.": f"{s['pytorch']['test_accuracy']:.4f}",
         "difference": f"{s['test_accuracy_diff']:+.4f}",
         "mininn test loss": f"{s['mininn']['test_loss']:.4f}",
         "PyTorch test loss": f"{s['pytorch']['test_loss']:.4f}",
         "epochs": s["mininn"]["epochs"],
         "mininn s": f"{s['mininn']['train_seconds']:.1f}",
         "PyTorch s": f"{s['pytorch']['train_seconds']:.1f}",
         "time ratio": f"{s['time_ratio']:.2f}"}
        for d, s in summary.items()
    ])  # fmt: skip
    parts = []
    if len(steps):
        parts += [
            "Per-step loss, mininn against PyTorch (float rounding only: same weights, "
            "batches, Dropout masks and recipe); relative difference |a - b| / max(|a|, |b|):",
            "",
            markdown(steps),
            "",
        ]  # fmt: skip
    parts += [markdown(results), "", *notes]
    return "\n".join(parts).rstrip("\n") + "\n"


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

    summary, histories, step_diffs, notes, copies = {}, {}, {}, [], {}
    for dataset in datasets:
        reports, torch_dir = args.out / dataset, args.models / dataset / "torch"
        baseline = read_baseline(torch_dir / "baseline.json", dataset)
        history = read_history(reports / "history.csv")
        torch_history = read_history(torch_dir / LIVE_DIR)
        steps = read_steps(args.models / dataset / "steps.csv")
        torch_steps = baseline.get("steps", [])
        metrics = common.read_json(reports / "metrics.json")
        wanted = [k for k in SUMMARY_KEYS if k != "train_seconds"]
        missing = [k for k in wanted if not isinstance(metrics, dict) or k not in metrics]
        if missing:
            raise StageError(
                f"{reports / 'metrics.json'}: missing {missing}; run `dvc repro evaluate@{dataset}`"
            )
        metrics = {**metrics, "train_seconds": float(history["seconds"].sum())}
        if metrics["train_seconds"] <= 0:
            raise StageError(
                f"{reports / 'history.csv'}: the seconds add up to "
                f"{metrics['train_seconds']}; run `dvc repro train@{dataset}`"
            )
        summary[dataset] = summarise(metrics, history, steps, baseline, torch_history,
                                     torch_steps)  # fmt: skip
        n = min(len(steps), len(torch_steps))
        step_diffs[dataset] = relative_differences(steps[:n], torch_steps[:n])
        histories[dataset] = {"mininn": history, "PyTorch": torch_history}
        torch_metrics = {k: baseline["metrics"][k] for k in REPORT_METRICS}
        copies[dataset] = (torch_metrics, torch_history)
        if baseline.get("params_mismatch"):
            notes.append(f"- {dataset}: the PyTorch baseline was ingested from a run with other "
                         f"params: {', '.join(baseline['params_mismatch'])}.")  # fmt: skip

    png, text = figure(histories, step_diffs), tables(summary, notes)  # everything computed first
    common.write_json(args.out / "comparison.json", summary)
    for dataset, (torch_metrics, torch_history) in copies.items():
        common.write_json(args.out / dataset / "torch_metrics.json", torch_metrics)
        write_table(args.out / dataset / "torch_history.csv", torch_history)
    for name, data in (("comparison.png", png), ("comparison.md", text.encode())):
        with common.atomic_file(args.out / name) as tmp:
            tmp.write_bytes(data)
    print(text, file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_stage(main))
