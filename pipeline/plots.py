"""Figures for the reports, as PNG bytes: learning curves and confusion matrices.

The PNGs are listed under ``plots:`` in dvc.yaml; unlike DVC's Vega charts they
render offline. Each function returns the PNG's bytes (write them with
``common.atomic_file``) and draws on a bare ``Figure`` with the Agg canvas, so no
display and no global pyplot state is involved. PNGs carry no timestamp or
software version: the same data gives the same bytes.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def learning_curves_png(
    histories: Mapping[str, Mapping[str, Sequence[float]]], title: str = ""
) -> bytes:
    """Two panels, loss and accuracy against epoch, train (dashed) and val (solid).

    Args:
        histories: label -> history columns (a DataFrame of
            :func:`pipeline.reports.read_history`, or a dict of lists), e.g.
            ``{"mininn": h}`` or ``{"mininn": h, "PyTorch": h_torch}`` to overlay runs.
        title: the figure's title, e.g. the dataset name.
    Returns:
        The PNG's bytes.
    """
    fig = _figure(10, 4)
    axes = fig.subplots(1, 2)
    for k, (label, h) in enumerate(histories.items()):
        colour = f"C{k}"
        for ax, quantity in zip(axes, ("loss", "accuracy"), strict=True):
            ax.plot(h["epoch"], h[f"train_{quantity}"], "--", color=colour, label=f"{label} train")
            ax.plot(h["epoch"], h[f"val_{quantity}"], "-", color=colour, label=f"{label} val")
    from matplotlib.ticker import MaxNLocator

    for ax, quantity in zip(axes, ("loss", "accuracy"), strict=True):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"cross-entropy {quantity}" if quantity == "loss" else quantity)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    return _png(fig)


def confusion_png(matrix: np.ndarray, classes: Sequence[str], title: str = "") -> bytes:
    """A heatmap of confusion counts, rows the actual class and columns the predicted one.

    Args:
        matrix: ``(K, K)`` integer counts, ``matrix[i, j]`` = samples of class i
            predicted as class j (``mininn.metrics.confusion_matrix``).
        classes: the K class names, in label order.
        title: the figure's title.
    Returns:
        The PNG's bytes.
    """
    import seaborn as sns

    fig = _figure(8, 7)
    ax = fig.subplots()
    sns.heatmap(
        matrix, annot=True, fmt="d", cmap="Blues", cbar=False, square=True, ax=ax,
        xticklabels=classes, yticklabels=classes, annot_kws={"fontsize": 8},
    )  # fmt: skip
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.tick_params(axis="x", labelrotation=45)
    ax.tick_params(axis="y", labelrotation=0)
    ax.set_title(title)
    return _png(fig)
