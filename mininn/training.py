"""The training loop: one epoch, evaluation, and ``fit`` with history and early stopping.

One optimisation step is the five lines every PyTorch user knows, with the
backward pass called explicitly because there is no autograd::

    optimizer.zero_grad()
    output = model(x_batch)
    loss = loss_fn(output, y_batch)
    model.backward(loss_fn.backward())
    optimizer.step()

``train_epoch`` passes ``input_grad=False`` to the backward pass of a model that
takes it (a Sequential): the input is data, so its gradient is skipped, as
PyTorch skips it for an input tensor with ``requires_grad=False``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mininn import config, metrics
from mininn.dataloader import DataLoader
from mininn.module import Module, _takes_input_grad

__all__ = ["History", "evaluate", "fit", "predict", "run_epochs", "train_epoch"]

Metric = Callable[[np.ndarray, np.ndarray], float]
_log = config.get_logger("mininn.training")


def _accuracy_from_scores(y_true: np.ndarray, output: np.ndarray) -> float:
    return metrics.accuracy(y_true, output.argmax(axis=1))


def _binary_accuracy_from_probabilities(y_true: np.ndarray, output: np.ndarray) -> float:
    return metrics.binary_accuracy(y_true, output)


#: Metrics known by name: each takes ``(y_true, model_output)``.
METRICS: dict[str, Metric] = {
    "accuracy": _accuracy_from_scores,
    "binary_accuracy": _binary_accuracy_from_probabilities,
    "r2": lambda y_true, output: metrics.r2_score(y_true, output),
}


def _resolve_metric(metric: str | Metric | None) -> tuple[str | None, Metric | None]:
    if metric is None:
        return None, None
    if isinstance(metric, str):
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; expected one of {sorted(METRICS)}")
        return metric, METRICS[metric]
    if callable(metric):
        return getattr(metric, "__name__", "metric"), metric
    raise TypeError(f"metric must be a name, a callable or None, got {type(metric).__name__}")


@dataclass
class History:
    """What :func:`fit` records.

    Attributes:
        epochs: one dict per epoch with ``epoch`` (1-based), ``train_loss``,
            ``val_loss`` (when validation data is given), ``train_<metric>`` and
            ``val_<metric>`` (when a metric is given) and ``seconds`` (wall-clock
            time of the epoch's training, excluding validation).
        step_losses: the loss of every optimisation step, in order.
        best_epoch: the epoch with the lowest validation loss (None without
            validation data).
        stopped_early: True when early stopping ended training.
    """

    epochs: list[dict[str, float]] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False

    def column(self, name: str) -> list[float]:
        """The values of one history column, e.g. ``history.column("val_loss")``."""
        return [row[name] for row in self.epochs]


def predict(model: Module, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Run ``model`` on ``x`` in evaluation mode, in batches; the mode is restored after.

    Args:
        x: inputs, shape (N, in_features).
        batch_size: samples per forward pass (memory, not results). Default: 1024.
    Returns:
        The outputs, shape (N, out_features), the model's dtype.
    """
    was_training = model.training
    model.eval()
    try:
        outputs = [model(x[start : start + batch_size]) for start in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return np.concatenate(outputs) if outputs else np.empty((0,))


def evaluate(
    model: Module,
    loss_fn: Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    metric: str | Metric | None = None,
    batch_size: int = 1024,
) -> dict[str, float]:
    """Loss (and metric) of ``model`` on ``(x, y)`` in evaluation mode.

    The loss is averaged over samples, batch by batch weighted by batch size,
    so it equals the mean-reduced loss on the whole set.

    Returns:
        ``{"loss": float}`` plus ``{<metric name>: float}`` when a metric is given.
    """
    name, metric_fn = _resolve_metric(metric)
    output = predict(model, x, batch_size)
    result = {"loss": float(loss_fn(output, y))}
    if metric_fn is not None:
        result[name] = float(metric_fn(y, output))
    return result


def train_epoch(
    model: Module,
    loss_fn: Module,
    optimizer: Any,
    loader: DataLoader,
    *,
    metric: str | Metric | None = None,
    epoch: int = 1,
    step_losses: list[float] | None = None,
    progress: Any = None,
) -> dict[str, float]:
    """Train ``model`` for one pass over ``loader`` (training mode).

    Args:
        loader: yields ``(x_batch, y_batch)``.
        metric: computed on each batch's training-mode output and averaged,
            weighted by batch size (as Keras reports training accuracy).
        epoch: used in error messages only.
        step_losses: when a list is given, each step's loss is appended to it.
        progress: a tqdm bar to advance (optional).
    Returns:
        ``{"loss": mean loss over samples}`` plus the metric when given.
    Raises:
        FloatingPointError: the loss became NaN or infinite; the message names the
            epoch and batch and how to fix it. The optimizer step of that batch is
            not taken.
    """
    name, metric_fn = _resolve_metric(metric)
    model.train()
    # The input is data: skip its gradient where the model can (PyTorch does too).
    skip_input_grad = _takes_input_grad(type(model))
    total_loss = total_metric = 0.0
    seen = 0
    for batch, (x_batch, y_batch) in enumerate(loader, start=1):
        optimizer.zero_grad()
        output = model(x_batch)
        loss = loss_fn(output, y_batch)
        if not math.isfinite(loss):
            lr = optimizer.param_groups[0].get("lr")
            raise FloatingPointError(
                f"loss became {loss} at epoch {epoch}, batch {batch}; lower the learning rate "
                f"(lr={lr}) or standardise the inputs"
            )
        if skip_input_grad:
            model.backward(loss_fn.backward(), input_grad=False)
        else:
            model.backward(loss_fn.backward())
        optimizer.step()
        n = len(x_batch)
        seen += n
        total_loss += loss * n
        if metric_fn is not None:
            total_metric += metric_fn(y_batch, output) * n
        if step_losses is not None:
            step_losses.append(float(loss))
        if progress is not None:
            progress.update(1)
            if batch % 25 == 0:
                progress.set_postfix(loss=f"{total_loss / seen:.4f}", refresh=False)
    if seen == 0:
        raise ValueError("train_epoch: the loader yielded no batch; check batch_size and drop_last")
    result = {"loss": total_loss / seen}
    if metric_fn is not None:
        result[name] = total_metric / seen
    return result


def _progress_bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm  # optional: the library needs only numpy
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="batch", leave=False, mininterval=0.5)


def fit(
    model: Module,
    loss_fn: Module,
    optimizer: Any,
    train_loader: DataLoader,
    *,
    epochs: int,
    val_data: tuple[np.ndarray, np.ndarray] | None = None,
    metric: str | Metric | None = None,
    patience: int | None = None,
    min_delta: float = 0.0,
    restore_best: bool = True,
    progress: bool = True,
    desc: str = "",
    on_epoch_end: Callable[[dict[str, float]], None] | None = None,
) -> History:
    """Train for ``epochs`` epochs, validating after each; optionally stop early.

    Args:
        model, loss_fn, optimizer: a Module, a loss (``CrossEntropyLoss``, ...) and an
            optimizer built on ``model.parameters()``.
        train_loader: a :class:`~mininn.DataLoader` over ``(x_train, y_train)``.
        epochs: maximum number of passes over the training data, >= 1.
        val_data: ``(x_val, y_val)`` evaluated in eval mode after each epoch. Default: None.
        metric: ``"accuracy"`` (argmax of the outputs), ``"binary_accuracy"``
            (outputs are probabilities), ``"r2"``, a callable ``(y_true, output) ->
            float``, or None. Default: None.
        patience: stop when the validation loss has not improved by more than
            ``min_delta`` for this many epochs (requires ``val_data``). Default:
            None (no early stopping).
        restore_best: with early stopping, load the weights of the best epoch at
            the end. Default: True.
        progress: show a tqdm bar per epoch on stderr (when tqdm is installed). Default: True.
        desc: prefix of the progress bar's label, e.g. the dataset name.
        on_epoch_end: called with each epoch's history row.
    Returns:
        A :class:`History`.
    Raises:
        ValueError: ``epochs`` < 1, or ``patience`` without ``val_data``.
        FloatingPointError: the loss became NaN or infinite (see :func:`train_epoch`).
    Example:
        >>> import numpy as np, mininn
        >>> from mininn.models import make_mlp
        >>> _ = mininn.manual_seed(0)
        >>> x = np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32)
        >>> y = (x[:, 0] > 0).astype(np.int64)
        >>> model = make_mlp(2, [8], 2)
        >>> opt = mininn.optim.Adam(model.parameters(), lr=0.05)
        >>> loader = mininn.DataLoader(x, y, batch_size=16, shuffle=True, seed=0)
        >>> history = fit(model, mininn.CrossEntropyLoss(), opt, loader, epochs=20,
        ...               metric="accuracy", progress=False)
        >>> history.epochs[-1]["train_accuracy"] > 0.9
        True
    """
    name, _ = _resolve_metric(metric)

    def run_epoch(epoch: int, history: History, bar: Any) -> dict[str, float]:
        return train_epoch(
            model, loss_fn, optimizer, train_loader, metric=metric, epoch=epoch,
            step_losses=history.step_losses, progress=bar,
        )  # fmt: skip

    def validate() -> dict[str, float]:
        return evaluate(model, loss_fn, *val_data, metric=metric)

    return run_epochs(
        run_epoch, validate if val_data is not None else None, model.state_dict,
        model.load_state_dict, epochs=epochs, n_batches=len(train_loader), metric_name=name,
        patience=patience, min_delta=min_delta, restore_best=restore_best, progress=progress,
        desc=desc, on_epoch_end=on_epoch_end, where="fit",
    )  # fmt: skip


def run_epochs(
    run_epoch: Callable[[int, History, Any], dict[str, float]],
    validate: Callable[[], dict[str, float]] | None,
    snapshot: Callable[[], Any],
    restore: Callable[[Any], Any],
    *,
    epochs: int,
    n_batches: int,
    metric_name: str | None = None,
    patience: int | None = None,
    min_delta: float = 0.0,
    restore_best: bool = True,
    progress: bool = True,
    desc: str = "",
    on_epoch_end: Callable[[dict[str, float]], None] | None = None,
    where: str = "fit",
) -> History:
    """The epoch loop of :func:`fit`, for any framework: history rows, timing, early stopping.

    :func:`fit` and :func:`mininn.interop.fit_torch` differ only in the callables
    they pass, so the two histories are built by the same lines.

    Args:
        run_epoch: ``(epoch, history, progress_bar) -> {"loss", <metric_name>}``; trains
            one epoch and appends each step's loss to ``history.step_losses``.
        validate: ``() -> {"loss", <metric_name>}`` in eval mode, or None.
        snapshot, restore: take and put back the model's weights (early stopping).
        n_batches: batches per epoch (the progress bar's length).
        where: the caller's name, for error messages.
        The other arguments are :func:`fit`'s.
    Raises:
        ValueError: ``epochs`` < 1, or ``patience`` without validation.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"{where}: epochs must be a positive integer, got {epochs!r}")
    if patience is not None and validate is None:
        raise ValueError(f"{where}: early stopping (patience) needs val_data to watch the val_loss")
    name = metric_name
    history = History()
    best_loss, best_state, waited = math.inf, None, 0
    for epoch in range(1, epochs + 1):
        label = f"{desc} epoch {epoch}/{epochs}".strip()
        bar = _progress_bar(n_batches, label, progress)
        start = time.perf_counter()
        try:
            train = run_epoch(epoch, history, bar)
        finally:
            if bar is not None:
                bar.close()
        row: dict[str, float] = {"epoch": epoch, "train_loss": train["loss"]}
        if name is not None:
            row[f"train_{name}"] = train[name]
        row["seconds"] = time.perf_counter() - start
        if validate is not None:
            val = validate()
            row["val_loss"] = val["loss"]
            if name is not None:
                row[f"val_{name}"] = val[name]
        history.epochs.append(row)
        _log.info("%s epoch %d/%d: %s", desc or where, epoch, epochs,
                  ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch"))  # fmt: skip
        if on_epoch_end is not None:
            on_epoch_end(row)
        if validate is None:
            continue
        if row["val_loss"] < best_loss - min_delta:
            best_loss, waited, history.best_epoch = row["val_loss"], 0, epoch
            if patience is not None and restore_best:
                best_state = snapshot()
        else:
            waited += 1
            if patience is not None and waited >= patience:
                history.stopped_early = True
                break
    if best_state is not None and history.stopped_early:
        restore(best_state)
    return history
