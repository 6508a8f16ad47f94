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

With ``clip_grad_norm=`` the gradients are clipped between the backward pass and
``optimizer.step()``; a per-batch scheduler steps right after ``optimizer.step()``,
a per-epoch one after validation; with ``checkpoint=PATH``, ``fit`` saves
everything needed to continue after every epoch and continues from PATH when it
exists (see :func:`fit`).
"""

from __future__ import annotations

import inspect
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mininn import config, metrics
from mininn._checkpoint import Checkpoint, checkpoint_of_run, module_generators
from mininn.dataloader import DataLoader
from mininn.module import Module, _takes_input_grad
from mininn.transforms import _generator_state, _set_generator_state
from mininn.utils import clip_grad_norm_

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
        epochs: one dict per epoch with ``epoch`` (1-based), ``lr`` (the learning
            rate of param group 0 at the epoch's first step), ``train_loss``,
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
    clip_grad_norm: float | None = None,
    scheduler: Any = None,
) -> dict[str, float]:
    """Train ``model`` for one pass over ``loader`` (training mode).

    Args:
        loader: yields ``(x_batch, y_batch)``.
        metric: computed on each batch's training-mode output and averaged,
            weighted by batch size (as Keras reports training accuracy).
        epoch: used in error messages only.
        step_losses: when a list is given, each step's loss is appended to it.
        progress: a tqdm bar to advance (optional).
        clip_grad_norm: when given, ``mininn.utils.clip_grad_norm_(model.parameters(),
            clip_grad_norm)`` runs between the backward pass and ``optimizer.step()``.
            Default: None.
        scheduler: a per-batch scheduler (e.g. ``OneCycleLR``), stepped after every
            ``optimizer.step()``; per-epoch schedulers are stepped by :func:`fit`.
            Default: None.
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
        if clip_grad_norm is not None:
            clip_grad_norm_(model.parameters(), clip_grad_norm)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
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


def scheduler_interval_of(
    scheduler: Any, scheduler_interval: str | None, where: str, has_val_data: bool = True
) -> str:
    """When a scheduler steps in :func:`fit`: ``"batch"`` or ``"epoch"``.

    ``scheduler_interval`` wins when given. Otherwise a scheduler's ``per_batch``
    attribute decides (True on mininn's ``OneCycleLR``); a scheduler without one
    (PyTorch's) is per batch when it is a ``OneCycleLR`` or ``CyclicLR``, as in
    their documentation, and per epoch otherwise.

    Raises:
        ValueError: ``scheduler_interval`` is not None, ``"epoch"`` or ``"batch"``,
            is given without a scheduler, or asks a scheduler that steps on a
            metric (``ReduceLROnPlateau``) to step per batch; such a scheduler
            without validation data (``has_val_data`` False).
    """
    if scheduler_interval not in (None, "epoch", "batch"):
        raise ValueError(
            f"{where}: scheduler_interval must be 'epoch', 'batch' or None (decided by the "
            f"scheduler), got {scheduler_interval!r}"
        )
    if scheduler is None:
        if scheduler_interval is not None:
            raise ValueError(
                f"{where}: scheduler_interval={scheduler_interval!r} was given without a "
                "scheduler; pass scheduler= too, or drop scheduler_interval"
            )
        return "epoch"
    interval = scheduler_interval
    if interval is None:
        per_batch = getattr(scheduler, "per_batch", None)
        if per_batch is None:
            per_batch = type(scheduler).__name__ in ("OneCycleLR", "CyclicLR")
        interval = "batch" if per_batch else "epoch"
    if steps_on_metric(scheduler):
        if interval == "batch":
            raise ValueError(
                f"{where}: {type(scheduler).__name__} steps on the validation loss, once per "
                "epoch; it cannot step per batch (drop scheduler_interval='batch')"
            )
        if not has_val_data:
            raise ValueError(
                f"{where}: {type(scheduler).__name__} steps on the validation loss; pass "
                "val_data=(x_val, y_val)"
            )
    return interval


def steps_on_metric(scheduler: Any) -> bool:
    """True when ``scheduler.step`` needs a value (``ReduceLROnPlateau.step(metrics)``)."""
    try:
        signature = inspect.signature(scheduler.step)
    except (TypeError, ValueError):
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return any(
        p.default is inspect.Parameter.empty and p.kind in positional
        for p in signature.parameters.values()
    )


def _check_fit_options(clip_grad_norm: Any, checkpoint: Any, where: str) -> str | None:
    """Validate ``clip_grad_norm`` and ``checkpoint``; return the checkpoint path."""
    if clip_grad_norm is not None and (
        isinstance(clip_grad_norm, bool)
        or not isinstance(clip_grad_norm, (int, float, np.integer, np.floating))
        or not 0 < clip_grad_norm < math.inf
    ):
        raise ValueError(
            f"{where}: clip_grad_norm must be a positive finite number (the max_norm of the "
            f"gradients' joint 2-norm), got {clip_grad_norm!r}"
        )
    if checkpoint is None:
        return None
    if not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(
            f"{where}: checkpoint must be a file path (str or os.PathLike), got "
            f"{type(checkpoint).__name__}"
        )
    path = os.fspath(checkpoint)
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"{where}: the folder {folder!r} of checkpoint {path!r} does not exist; create it"
        )
    return path


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
    scheduler: Any = None,
    scheduler_interval: str | None = None,
    clip_grad_norm: float | None = None,
    checkpoint: str | os.PathLike | None = None,
) -> History:
    """Train for ``epochs`` epochs, validating after each; optionally stop early,
    schedule the learning rate, clip the gradients and checkpoint every epoch.

    Each step is ``zero_grad → forward → loss → backward → [clip] → step →
    [per-batch scheduler.step()]``; after each epoch come validation, then the
    per-epoch ``scheduler.step()`` (``scheduler.step(val_loss)`` for
    ``ReduceLROnPlateau``), then the checkpoint: the order PyTorch users write.

    **Schedulers.** fit steps a scheduler per batch when ``scheduler.per_batch`` is
    True (mininn's ``OneCycleLR``), per epoch otherwise (``StepLR``,
    ``CosineAnnealingLR``, ``ReduceLROnPlateau``, ...); ``scheduler_interval``
    overrides it (e.g. a ``CosineAnnealingLR`` with ``T_max`` in steps,
    ``scheduler_interval="batch"``).

    **Checkpoints.** With ``checkpoint=PATH``, after every epoch fit writes to PATH
    (atomically, with :func:`mininn.save`) the model's, optimizer's, scheduler's
    and loader's state (the loader's shuffling and augmentation generators), the
    package generator's state (Dropout's masks) and that of every generator a
    module holds, the history, early stopping's state, and a fingerprint of the
    setup. When PATH exists at the start, fit checks the fingerprint and continues
    after the saved epoch: ``epochs`` is the total, so a run stopped after 3 of 6
    epochs and started again with the same arguments trains epochs 4 to 6 and ends
    with the same weights and history, bit for bit (the ``seconds`` column aside),
    as a run that was never stopped. A finished run (all epochs, or stopped
    early) returns its history without training. Delete PATH to start over.

    Args:
        model, loss_fn, optimizer: a Module, a loss (``CrossEntropyLoss``, ...) and an
            optimizer built on ``model.parameters()``.
        train_loader: a :class:`~mininn.DataLoader` over ``(x_train, y_train)``.
        epochs: total number of passes over the training data, >= 1.
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
        on_epoch_end: called with each epoch's history row (after the checkpoint of
            that epoch is written).
        scheduler: a ``mininn.optim.lr_scheduler`` scheduler over ``optimizer``, or
            None. Default: None.
        scheduler_interval: ``"epoch"``, ``"batch"`` or None (decided by
            ``scheduler.per_batch``, see above). Default: None.
        clip_grad_norm: ``max_norm`` of ``mininn.utils.clip_grad_norm_`` (joint
            2-norm of all gradients), applied before every optimizer step, or None.
            Default: None.
        checkpoint: a file path, or None for no checkpoint. Default: None.
    Returns:
        A :class:`History`.
    Raises:
        ValueError: ``epochs`` < 1; ``patience``, or a scheduler that steps on the
            validation loss, without ``val_data``; a bad ``scheduler_interval`` or
            ``clip_grad_norm``; a scheduler over another optimizer; the checkpoint
            was written by another setup (model, optimizer, scheduler, loss, data or
            fit arguments) or holds more epochs than ``epochs``: the message names
            the file, what differs, and the fix.
        FileNotFoundError: the folder of ``checkpoint`` does not exist.
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
    path = _check_fit_options(clip_grad_norm, checkpoint, "fit")
    interval = scheduler_interval_of(scheduler, scheduler_interval, "fit", val_data is not None)
    if scheduler is not None and getattr(scheduler, "optimizer", optimizer) is not optimizer:
        raise ValueError(
            "fit: the scheduler sets the learning rate of another optimizer; build it on the "
            "optimizer passed to fit"
        )
    batch_scheduler = scheduler if interval == "batch" else None

    def run_epoch(epoch: int, history: History, bar: Any) -> dict[str, float]:
        return train_epoch(
            model, loss_fn, optimizer, train_loader, metric=metric, epoch=epoch,
            step_losses=history.step_losses, progress=bar, clip_grad_norm=clip_grad_norm,
            scheduler=batch_scheduler,
        )  # fmt: skip

    def validate() -> dict[str, float]:
        return evaluate(model, loss_fn, *val_data, metric=metric)

    resumable = None
    if path is not None:
        generators = module_generators(model)

        def get_state() -> dict:
            return {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": None if scheduler is None else scheduler.state_dict(),
                "loader": train_loader.state_dict(),
                "generators": {key: _generator_state(g) for key, g in generators.items()},
            }

        def set_state(state: dict) -> None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(state["scheduler"])
            train_loader.load_state_dict(state["loader"])
            for key, generator in generators.items():
                _set_generator_state(generator, state["generators"][key], f"fit: {key}")

        resumable = checkpoint_of_run(
            path, get_state, set_state, model=model, loss_fn=loss_fn, optimizer=optimizer,
            scheduler=scheduler, train_loader=train_loader, val_data=val_data,
            generators=sorted(generators), metric=name, patience=patience,
            min_delta=min_delta, restore_best=restore_best, interval=interval,
            clip_grad_norm=clip_grad_norm,
        )  # fmt: skip

    return run_epochs(
        run_epoch, validate if val_data is not None else None, model.state_dict,
        model.load_state_dict, epochs=epochs, n_batches=len(train_loader), metric_name=name,
        patience=patience, min_delta=min_delta, restore_best=restore_best, progress=progress,
        desc=desc, on_epoch_end=on_epoch_end, where="fit",
        lr=lambda: optimizer.param_groups[0]["lr"],
        step_scheduler=_epoch_step(scheduler) if interval == "epoch" else None,
        checkpoint=resumable,
    )  # fmt: skip


def _epoch_step(scheduler: Any) -> Callable[[float | None], None] | None:
    """The per-epoch step of ``scheduler``: ``step(val_loss)`` or ``step()``."""
    if scheduler is None:
        return None
    if steps_on_metric(scheduler):
        return scheduler.step  # run_epochs passes the validation loss
    return lambda val_loss: scheduler.step()


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
    lr: Callable[[], float] | None = None,
    step_scheduler: Callable[[float | None], None] | None = None,
    checkpoint: Checkpoint | None = None,
) -> History:
    """The epoch loop of :func:`fit`, for any framework: history rows, timing, early
    stopping, the per-epoch scheduler step and the checkpoint.

    :func:`fit` and :func:`mininn.interop.fit_torch` differ only in the callables
    they pass, so the two histories are built by the same lines.

    Args:
        run_epoch: ``(epoch, history, progress_bar) -> {"loss", <metric_name>}``; trains
            one epoch and appends each step's loss to ``history.step_losses``.
        validate: ``() -> {"loss", <metric_name>}`` in eval mode, or None.
        snapshot, restore: take and put back the model's weights (early stopping);
            with a checkpoint, the snapshot must be savable by :func:`mininn.save`.
        n_batches: batches per epoch (the progress bar's length).
        where: the caller's name, for error messages.
        lr: ``() -> float``, the current learning rate, recorded as the row's ``lr``.
        step_scheduler: ``(val_loss or None) -> None``, called after validation.
        checkpoint: the file to continue from and write after every epoch (built
            by ``fit`` / ``fit_torch``), or None.
        The other arguments are :func:`fit`'s.
    Raises:
        ValueError: ``epochs`` < 1; ``patience`` without validation; a checkpoint
            that does not fit.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"{where}: epochs must be a positive integer, got {epochs!r}")
    if patience is not None and validate is None:
        raise ValueError(f"{where}: early stopping (patience) needs val_data to watch the val_loss")
    name = metric_name
    history = History()
    best_loss, best_state, waited = math.inf, None, 0
    first = 1
    saved = None if checkpoint is None else checkpoint.read(epochs, where)
    if saved is not None:
        past = saved["history"]
        history = History(
            epochs=past["epochs"], step_losses=past["step_losses"].tolist(),
            best_epoch=past["best_epoch"], stopped_early=past["stopped_early"],
        )  # fmt: skip
        stopping = saved["early_stopping"]
        best_loss, waited, best_state = (
            stopping["best_loss"],
            stopping["waited"],
            stopping["best_state"],
        )
        first = epochs + 1 if history.stopped_early else saved["epoch"] + 1
        _log.info("%s: continuing from %s after epoch %d", desc or where, checkpoint.path,
                  saved["epoch"])  # fmt: skip
    for epoch in range(first, epochs + 1):
        label = f"{desc} epoch {epoch}/{epochs}".strip()
        bar = _progress_bar(n_batches, label, progress)
        row: dict[str, float] = {"epoch": epoch}
        if lr is not None:
            row["lr"] = float(lr())
        start = time.perf_counter()
        try:
            train = run_epoch(epoch, history, bar)
        finally:
            if bar is not None:
                bar.close()
        row["train_loss"] = train["loss"]
        if name is not None:
            row[f"train_{name}"] = train[name]
        row["seconds"] = time.perf_counter() - start
        if validate is not None:
            val = validate()
            row["val_loss"] = val["loss"]
            if name is not None:
                row[f"val_{name}"] = val[name]
        history.epochs.append(row)
        if validate is not None:
            if row["val_loss"] < best_loss - min_delta:
                best_loss, waited, history.best_epoch = row["val_loss"], 0, epoch
                if patience is not None and restore_best:
                    best_state = snapshot()
            else:
                waited += 1
                history.stopped_early = patience is not None and waited >= patience
        if step_scheduler is not None:
            step_scheduler(row.get("val_loss"))
        if checkpoint is not None:
            stopping = {"best_loss": best_loss, "waited": waited, "best_state": best_state}
            checkpoint.write(epoch, history, stopping, where)
        _log.info("%s epoch %d/%d: %s", desc or where, epoch, epochs,
                  ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch"))  # fmt: skip
        if on_epoch_end is not None:
            on_epoch_end(row)
        if history.stopped_early:
            break
    if best_state is not None and history.stopped_early:
        restore(best_state)
    return history
