"""The sweep's outputs: the trial table, the history, the best configuration, the figure.

Built by the sweep stage, ``pipeline/tune.py``, from Tune's results once every trial
has finished, and written all at once: each file is built in a temporary folder
first, then renamed into place, so a failure leaves the previous outputs as they were.
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.common import StageError
from pipeline.tune_config import best_params

OUTPUTS = ("trials.csv", "history.csv", "best_params.json", "metrics.json", "sweep.png")


def collect(results, p: Mapping[str, Any]):
    """Turn Tune's ResultGrid into the trial table, the per-epoch history (DataFrames)
    and each trial's sampled values.

    ``stopped_early`` is true for a trial that ended before ``tune.epochs`` without
    diverging: the trial itself always trains the whole budget, so only ASHA stops it.
    A swept column that holds None (``choice: [null, 1.0]``) keeps None (object
    dtype; an empty cell in trials.csv), not NaN.

    Returns:
        ``(trials, history, configs)``; ``configs[trial_id]`` is the trial's own
        ``{"dotted.key": value}`` (Tune's ``result.config``, as plain Python values),
        the values :func:`write_outputs` writes for the best trial.

    Raises:
        StageError: the sweep was interrupted, or a trial failed for good.
    """
    import pandas as pd

    names = list(p["space"])
    rows, history, configs = [], [], {}
    for result in results:
        df = result.metrics_dataframe
        if result.error is not None or df is None or df.empty or "epoch" not in df:
            continue
        df = df.sort_values("epoch")
        trial_id = str(df["trial_id"].iloc[-1])
        last = df.iloc[-1]
        metric = df[p["metric"]]
        best_i = metric.idxmax() if p["mode"] == "max" else metric.idxmin()
        diverged = bool(last["diverged"])
        epochs = int(last["epoch"])
        configs[trial_id] = {name: _plain(result.config[name]) for name in names}
        row = {"trial_id": trial_id, **configs[trial_id]}
        row.update(
            {
                "epochs": epochs,
                "stopped_early": not diverged and epochs < p["epochs"],
                "diverged": diverged,
                "val_accuracy": float(last["val_accuracy"]),
                "val_loss": float(last["val_loss"]),
                f"best_{p['metric']}": float(metric.loc[best_i])
                if not metric.isna().all()
                else float("nan"),
                "best_epoch": int(df.loc[best_i, "epoch"]) if not metric.isna().all() else 0,
                "restored_from": int(df["restored_from"].max()),
                "train_seconds": float(df["seconds"].sum()) if "seconds" in df else 0.0,
                "pids": ";".join(str(int(x)) for x in sorted(df["pid"].unique())),
                "node_ids": ";".join(sorted(str(x) for x in df["node_id"].unique())),
            }
        )
        rows.append(row)
        for _, r in df.iterrows():
            if not r["diverged"]:
                history.append(
                    {
                        "trial_id": trial_id,
                        "epoch": int(r["epoch"]),
                        **{
                            c: float(r[c])
                            for c in ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
                        },
                    }
                )
    errors = [r for r in results if r.error is not None]
    if errors:
        raise StageError(
            f"tune: {len(errors)} of {len(results)} trials failed for good "
            f"({_error_line(errors[0].error)}); see "
            f"{errors[0].path}; run again to retry them from their checkpoints"
        )
    if len(rows) != len(results) or results.num_terminated != len(results):
        raise StageError(
            f"tune: the sweep stopped after {results.num_terminated} of {len(results)} trials; "
            "nothing was written; run the same command again to resume it"
        )
    rows.sort(key=lambda row: row["trial_id"])
    trials = pd.DataFrame(rows)
    for name in names:
        if any(row[name] is None for row in rows):  # pandas would make it NaN
            trials[name] = pd.Series([row[name] for row in rows], dtype=object)
    return trials, pd.DataFrame(history), configs


def _error_line(error: BaseException) -> str:
    """The line of a worker's traceback that names the exception, e.g. ``KeyError: 'x'``."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    named = [line for line in lines if re.match(r"^[\w.]+(Error|Exception|Exit): ", line)]
    if named:
        return named[-1][:300]
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:300]


def _plain(value: Any) -> Any:
    """NumPy scalars and tuples from Tune's config as plain Python values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def choose_best(trials, p: Mapping[str, Any]) -> int:
    """Index of the best trial: the best final ``tune.metric`` among the trials trained
    to the whole budget (ties: the earlier trial).

    A trial ASHA stopped was judged at an earlier epoch than the survivors, so it
    competes only when no trial reached the budget.

    Raises:
        StageError: every trial diverged.
    """
    final = trials[p["metric"]]
    if final.isna().all():
        raise StageError(
            "tune: every trial diverged (the loss became NaN or infinite); "
            "narrow tune.space, e.g. lower the largest learning rate "
            "(train.scheduler.args.max_lr, or train.lr without a scheduler)"
        )
    full = trials["epochs"] == p["epochs"]
    candidates = final[full & final.notna()] if (full & final.notna()).any() else final
    return int(candidates.idxmax() if p["mode"] == "max" else candidates.idxmin())


def sweep_png(trials, history, p: Mapping[str, Any], best: int, title: str) -> bytes:
    """The sweep in one figure: every trial's validation accuracy per epoch, and the final
    validation accuracy against each swept value; trials ASHA stopped early drawn hollow,
    the best one as a star."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import LogFormatterSciNotation, LogLocator

    names = list(p["space"])
    fig = Figure(figsize=(4.2 * (len(names) + 1), 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(names) + 1, squeeze=False)[0]
    curves = axes[0]
    best_id = trials.loc[best, "trial_id"]
    for _, trial in trials.iterrows():
        h = history[history["trial_id"] == trial["trial_id"]]
        is_best = trial["trial_id"] == best_id
        curves.plot(
            h["epoch"],
            h["val_accuracy"],
            lw=2.2 if is_best else 1,
            ls=":" if trial["stopped_early"] else "-",
            marker="o",
            ms=3,
            color="C3" if is_best else "C0" if not trial["stopped_early"] else "0.55",
        )
    curves.axvline(p["asha"]["grace_period"], color="0.8", lw=0.8, zorder=0)
    curves.set(
        xlabel="epoch", ylabel="validation accuracy", title="every trial (dotted: stopped by ASHA)"
    )
    curves.xaxis.get_major_locator().set_params(integer=True)
    done = ~trials["stopped_early"] & ~trials["diverged"]
    for ax, name in zip(axes[1:], names, strict=True):
        distribution = p["space"][name][0]
        values = trials[name]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            x = values.astype(float)
            spread = (x > 0).all() and x.max() >= 10 * x.min()  # e.g. a grid of learning rates
            if distribution == "loguniform" or (spread and distribution != "uniform"):
                ax.set_xscale("log")
                ax.xaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))  # labels that fit
                ax.xaxis.set_minor_formatter(
                    LogFormatterSciNotation(labelOnlyBase=False, minor_thresholds=(3, 3))
                )
        else:  # categorical: one position per value, in the space's order
            labels = [str(v) for v in p["space"][name][1]]
            x = values.map(lambda v, labels=labels: labels.index(str(v)))
            ax.set_xticks(range(len(labels)), labels)
        y = trials["val_accuracy"]
        ax.scatter(x[done], y[done], color="C0", label="trained to the budget")
        ax.scatter(x[~done], y[~done], facecolors="none", edgecolors="0.45", label="stopped early")
        ax.scatter([x[best]], [y[best]], marker="*", s=220, color="C3", label="best", zorder=3)
        ax.set(xlabel=name, ylabel="final validation accuracy")
    axes[-1].legend(loc="best", fontsize="small")
    fig.suptitle(title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


def write_outputs(
    out: Path,
    trials,
    history,
    p: Mapping[str, Any],
    best: int,
    title: str,
    best_config: Mapping[str, Any],
) -> None:
    """Write the five outputs, all built first, then each renamed into place.

    Args:
        best: the best trial's row in ``trials`` (:func:`choose_best`).
        best_config: its sampled values (:func:`collect`'s ``configs``), which
            ``best_params.json`` holds, in the shape of params.yaml.
    """
    row = trials.loc[best]
    best_values = best_params({name: best_config[name] for name in p["space"]})
    texts = {
        "trials.csv": trials.to_csv(index=False),
        "history.csv": history.to_csv(index=False),
        "best_params.json": json.dumps(best_values, indent=2, sort_keys=True) + "\n",
        # The best trial's; the key of DVCLive's metrics files, so that `dvc metrics show`,
        # which lists this file with the pipeline's, has no column more.
        "metrics.json": json.dumps({"val_accuracy": float(row["val_accuracy"])}, indent=2) + "\n",
    }
    png = sweep_png(trials, history, p, best, title)
    with tempfile.TemporaryDirectory(dir=_existing_parent(out)) as tmp:
        for file, text in texts.items():
            (Path(tmp) / file).write_text(text, encoding="utf-8")
        (Path(tmp) / "sweep.png").write_bytes(png)
        out.mkdir(parents=True, exist_ok=True)
        for file in OUTPUTS:
            os.replace(Path(tmp) / file, out / file)


def _existing_parent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.parent
