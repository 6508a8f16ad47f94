"""The same network, weights, optimizer and training loop in PyTorch, and back.

PyTorch is imported only when one of these functions is called, so the library
itself needs only NumPy. The state-dict keys of a mininn model and of its
PyTorch twin are identical (``0.weight``, ``1.running_mean``, ...), which is what
makes the copy a plain ``load_state_dict`` in each direction.

:func:`fit_torch` is :func:`mininn.training.fit` step for step, written with
``torch.autograd``: given the twin of a model, the twin of its optimizer and the
same :class:`~mininn.DataLoader`, it sees the same batches in the same order and
returns the same :class:`~mininn.training.History`. Built with
``to_torch(model, dropout="mininn")``, the twin's Dropout layers draw their masks
from NumPy exactly as mininn's Dropout does (the same generator stream, in the same
order), so even with Dropout the two runs differ by floating-point rounding only.
"""

from __future__ import annotations

import collections
import functools
import inspect
import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from mininn import activations, layers, losses
from mininn._checkpoint import checkpoint_of_run, module_generators
from mininn._rng import default_rng
from mininn.dataloader import DataLoader
from mininn.module import Module, Sequential
from mininn.training import (
    History,
    Metric,
    _check_fit_options,
    _resolve_metric,
    run_epochs,
    scheduler_interval_of,
    steps_on_metric,
)
from mininn.transforms import _generator_state, _set_generator_state

__all__ = [
    "fit_torch",
    "from_torch",
    "loss_to_torch",
    "optimizer_to_torch",
    "predict_torch",
    "scheduler_to_torch",
    "to_torch",
]

_INSTALL_HINT = (
    "PyTorch is needed for this: pip install torch==2.13.0 (the CPU build), "
    "or pip install -e '.[torch]'"
)


def _torch():
    try:
        import torch
    except ImportError as error:
        raise ImportError(_INSTALL_HINT) from error
    return torch


# Both libraries name these layers, and their constructor attributes, alike: a layer
# is rebuilt in the other library from its class name and these arguments.
_LAYER_ARGUMENTS: dict[str, Callable[[Any], tuple[tuple, dict]]] = {
    "Linear": lambda m: ((m.in_features, m.out_features), {"bias": m.bias is not None}),
    "BatchNorm1d": lambda m: ((m.num_features,), {
        "eps": m.eps, "momentum": m.momentum, "affine": m.affine,
        "track_running_stats": m.track_running_stats}),
    "Dropout": lambda m: ((m.p,), {}),
    "LeakyReLU": lambda m: ((m.negative_slope,), {}),
    "Softmax": lambda m: ((), {"dim": -1 if m.dim is None else m.dim}),
    "Identity": lambda m: ((), {}),
    "ReLU": lambda m: ((), {}),
    "Sigmoid": lambda m: ((), {}),
    "Tanh": lambda m: ((), {}),
}  # fmt: skip
_MININN_LAYERS: dict[str, type[Module]] = {
    name: getattr(layers, name, None) or getattr(activations, name) for name in _LAYER_ARGUMENTS
}


def _rebuild(layer: Any, classes: Callable[[str], Any], sequential: Callable[[list], Any],
             where: str, library: str) -> Any:  # fmt: skip
    """The same architecture in the other library: ``classes(name)`` gives its layer class."""
    name = type(layer).__name__
    if name == "Sequential":
        return sequential([_rebuild(child, classes, sequential, where, library) for child in layer])
    if name not in _LAYER_ARGUMENTS:
        raise TypeError(
            f"{where}: no {library} equivalent known for {name}; supported: Sequential, "
            f"{', '.join(_LAYER_ARGUMENTS)}"
        )
    args, kwargs = _LAYER_ARGUMENTS[name](layer)
    return classes(name)(*args, **kwargs)


def _copy_generator(rng: np.random.Generator) -> np.random.Generator:
    """An independent generator in the same state: it draws what ``rng`` would draw next."""
    bit_generator = type(rng.bit_generator)()
    bit_generator.state = rng.bit_generator.state
    return np.random.Generator(bit_generator)


@functools.cache
def _twin_dropout_class(torch: Any) -> type:
    class TwinDropout(torch.nn.Dropout):
        """``torch.nn.Dropout`` whose masks come from a NumPy generator, drawn as
        :class:`mininn.Dropout` draws them: keep = U[0, 1) >= p, in the input's dtype,
        scaled by 1 / (1 - p). Autograd gives the backward, grad_input = grad * mask."""

        def __init__(self, p: float, rng: np.random.Generator) -> None:
            super().__init__(p)
            self.rng = rng

        def forward(self, x: Any) -> Any:
            if not self.training or self.p == 0:
                return x
            if self.p == 1:
                return torch.zeros_like(x)
            dtype = np.float64 if x.dtype == torch.float64 else np.float32
            mask = (self.rng.random(tuple(x.shape), dtype=dtype) >= self.p).astype(dtype)
            mask *= 1.0 / (1.0 - self.p)  # the same float operation as mininn.Dropout
            return x * torch.from_numpy(mask)

    return TwinDropout


def _torch_layer(layer: Module, torch: Any, dropout: str) -> Any:
    def sequential(children: list) -> Any:
        return torch.nn.Sequential(*children)

    twin = _rebuild(layer, lambda name: getattr(torch.nn, name), sequential, "to_torch", "PyTorch")
    if dropout == "mininn":
        package = None  # one copy of the package generator, shared in draw order
        for name, mine in layer.named_modules():
            if not isinstance(mine, layers.Dropout):
                continue
            if mine._rng is None:
                if package is None:
                    package = _copy_generator(default_rng())
                rng = package
            else:
                rng = _copy_generator(mine._rng)
            replacement = _twin_dropout_class(torch)(mine.p, rng)
            if name:
                parent_name, _, child = name.rpartition(".")
                twin.get_submodule(parent_name).register_module(child, replacement)
            else:
                twin = replacement
    return twin


def to_torch(model: Module, *, dropout: str = "torch") -> Any:
    """Build the PyTorch twin of ``model``, with a copy of its weights and buffers.

    The twin owns its tensors: training one does not change the other.

    Args:
        model: a Sequential (possibly nested) of Linear, BatchNorm1d, Dropout,
            Identity, ReLU, LeakyReLU, Sigmoid, Tanh, Softmax; or one such layer.
        dropout: where the twin's Dropout masks come from. ``"torch"``:
            ``torch.nn.Dropout`` and PyTorch's generator. ``"mininn"``: a
            ``torch.nn.Dropout`` subclass that draws each mask from NumPy exactly
            as :class:`mininn.Dropout` does, from a copy, taken now, of the
            generator the mininn layer uses (its own ``rng``, or the package
            generator of :func:`mininn.manual_seed`, one copy shared by all such
            layers in call order). Trained on the same batches, the twin then
            applies the same masks, step by step, as ``model`` would from here on.
            Default: ``"torch"``.
    Returns:
        A ``torch.nn.Module`` of the same structure, state-dict keys, dtype
        (float32 → torch.float32, float64 → torch.float64) and training mode.
    Raises:
        ImportError: PyTorch is not installed (the message says how to install it).
        TypeError: a layer has no PyTorch equivalent.
        ValueError: ``dropout`` is not ``"torch"`` or ``"mininn"``.
    Example:
        >>> import pytest; torch = pytest.importorskip("torch")
        >>> from mininn.models import make_mlp
        >>> model = make_mlp(4, [8], 3, batch_norm=True, dtype="float64")
        >>> twin = to_torch(model)
        >>> list(twin.state_dict()) == list(model.state_dict()), twin[0].weight.dtype
        (True, torch.float64)
    """
    if dropout not in ("torch", "mininn"):
        raise ValueError(
            f"to_torch: dropout must be 'torch' or 'mininn', got {dropout!r}; 'mininn' "
            "makes the twin draw the same Dropout masks as the mininn model"
        )
    torch = _torch()
    twin = _torch_layer(model, torch, dropout)
    state = model.state_dict()
    dtype = next((v.dtype for v in state.values() if v.dtype.kind == "f"), np.float32)
    twin = twin.to(torch.float64 if dtype == np.float64 else torch.float32)
    twin.load_state_dict({key: torch.from_numpy(np.array(value)) for key, value in state.items()})
    twin.train(model.training)
    return twin


def _append_all(children: list[Module]) -> Sequential:
    converted = Sequential()  # append() keeps the copied weights (no default init)
    for child in children:
        converted.append(child)
    return converted


def _mininn_layer(layer: Any, torch: Any) -> Module:
    return _rebuild(layer, _MININN_LAYERS.__getitem__, _append_all, "from_torch", "mininn")


def from_torch(model: Any) -> Module:
    """Build the mininn twin of a PyTorch model, with a copy of its weights and buffers.

    The inverse of :func:`to_torch`, for the same layer types. The package
    generator is left as it was (the throw-away initialisation of the new layers
    does not advance it), so converting a model does not change later draws.

    Args:
        model: a ``torch.nn.Sequential`` (possibly nested) of the layer types
            :func:`to_torch` produces, or one such layer, on the CPU.
    Returns:
        A mininn Module of the same structure, state-dict keys, dtype and training mode.
    Raises:
        ImportError: PyTorch is not installed.
        TypeError: a layer has no mininn equivalent.
    Example:
        >>> import pytest; torch = pytest.importorskip("torch")
        >>> twin = torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.Tanh())
        >>> model = from_torch(twin)
        >>> model[0].weight.shape, model[0].weight.data.dtype
        ((2, 4), dtype('float32'))
    """
    torch = _torch()
    generator = default_rng()
    saved = generator.bit_generator.state
    try:
        twin = _mininn_layer(model, torch)
    finally:  # the layers' own initialisation is overwritten below: undo its draws
        generator.bit_generator.state = saved
    state = {key: value.detach().cpu().numpy() for key, value in model.state_dict().items()}
    dtype = next((v.dtype for v in state.values() if v.dtype.kind == "f"), np.float32)
    twin.to(dtype)
    twin.load_state_dict(state)  # copies into mininn's own arrays
    twin.train(model.training)
    return twin


def optimizer_to_torch(optimizer: Any, params: Any) -> Any:
    """Build the ``torch.optim`` optimizer with the same class, hyperparameters and state.

    The state (``step``, ``exp_avg``, ``momentum_buffer``, ...) is copied through
    :meth:`~mininn.optim.Optimizer.state_dict`, so the twin can be built at any
    point of a training and continues as the mininn optimizer would; so are the
    keys a learning-rate scheduler keeps in the group (``initial_lr``, ...).

    Args:
        optimizer: a ``mininn.optim`` optimizer (SGD, Adam, AdamW, RMSprop) with
            one parameter group.
        params: the PyTorch parameters in the same order and shapes as the group's,
            holding the same values (e.g. ``to_torch(model).parameters()``).
    Returns:
        The ``torch.optim`` optimizer.
    Raises:
        ImportError: PyTorch is not installed.
        TypeError: ``torch.optim`` has no optimizer of that class name.
        ValueError: more than one parameter group; a hyperparameter that the torch
            class does not take; ``params`` differ in number or shape from the group's.
    Example:
        >>> import pytest; torch = pytest.importorskip("torch")
        >>> from mininn.layers import Linear
        >>> from mininn.optim import SGD
        >>> layer = Linear(3, 2)
        >>> opt = SGD(layer.parameters(), lr=0.1, momentum=0.9)
        >>> layer.weight.grad[...] = 1.0
        >>> opt.step()
        >>> twin = optimizer_to_torch(opt, to_torch(layer).parameters())
        >>> type(twin).__name__, twin.param_groups[0]["momentum"]
        ('SGD', 0.9)
        >>> twin.state_dict()["state"][0]["momentum_buffer"][0].tolist()
        [1.0, 1.0, 1.0]
    """
    torch = _torch()
    name = type(optimizer).__name__
    if len(optimizer.param_groups) != 1:
        raise ValueError(
            f"optimizer_to_torch: expected an optimizer with one parameter group, got "
            f"{len(optimizer.param_groups)}; build one optimizer per group"
        )
    torch_class = getattr(torch.optim, name, None)
    if not (inspect.isclass(torch_class) and issubclass(torch_class, torch.optim.Optimizer)):
        raise TypeError(f"optimizer_to_torch: torch.optim has no optimizer named {name}")
    group = optimizer.param_groups[0]
    accepted = inspect.signature(torch_class).parameters
    unknown = sorted(key for key in optimizer.defaults if key not in accepted)
    if unknown:
        raise ValueError(
            f"optimizer_to_torch: torch.optim.{name} takes no hyperparameter {unknown}"
        )
    params = list(params)
    shapes = [tuple(p.shape) for p in group["params"]]
    torch_shapes = [tuple(p.shape) for p in params]
    if shapes != torch_shapes:
        raise ValueError(
            f"optimizer_to_torch: expected PyTorch parameters of shapes {shapes} (the "
            f"optimizer's, in order), got {torch_shapes}; pass to_torch(model).parameters()"
        )
    twin = torch_class(params, **{key: group[key] for key in optimizer.defaults})
    state = optimizer.state_dict()
    twin.load_state_dict(
        {
            # PyTorch keeps `step` as a float tensor, and its own flags in the group.
            "state": {
                index: {
                    key: torch.tensor(float(value)) if key == "step" else torch.from_numpy(value)
                    for key, value in per_param.items()
                }
                for index, per_param in state["state"].items()
            },
            "param_groups": [{**twin.state_dict()["param_groups"][0], **state["param_groups"][0]}],
        }
    )
    return twin


# The constructor arguments of each scheduler's PyTorch twin, from the mininn one;
# what construction does not set (the position in the schedule) is loaded after.
_SCHEDULER_ARGUMENTS: dict[str, Callable[[Any, Callable[[Any], Any]], dict[str, Any]]] = {
    "StepLR": lambda s, twin: {"step_size": s.step_size, "gamma": s.gamma},
    "MultiStepLR": lambda s, twin: {"milestones": s.milestones, "gamma": s.gamma},
    "ExponentialLR": lambda s, twin: {"gamma": s.gamma},
    "CosineAnnealingLR": lambda s, twin: {"T_max": s.T_max, "eta_min": s.eta_min},
    "LinearLR": lambda s, twin: {
        "start_factor": s.start_factor, "end_factor": s.end_factor,
        "total_iters": s.total_iters},
    "SequentialLR": lambda s, twin: {
        "schedulers": [twin(child) for child in s._schedulers], "milestones": s._milestones},
    # pct_start, div_factor, ... live in the phases and the groups, copied after.
    "OneCycleLR": lambda s, twin: {
        "max_lr": [group["max_lr"] for group in s.optimizer.param_groups],
        "total_steps": s.total_steps, "anneal_strategy": s._anneal_func_type,
        "cycle_momentum": s.cycle_momentum, "three_phase": len(s._schedule_phases) == 3},
    "ReduceLROnPlateau": lambda s, twin: {
        "mode": s.mode, "factor": s.factor, "patience": s.patience, "threshold": s.threshold,
        "threshold_mode": s.threshold_mode, "cooldown": s.cooldown, "min_lr": s.min_lrs,
        "eps": s.eps},
}  # fmt: skip
# The param-group keys that schedulers set.
_SCHEDULED_KEYS = (
    "lr", "initial_lr", "max_lr", "min_lr", "max_momentum", "base_momentum", "momentum", "betas"
)  # fmt: skip


def scheduler_to_torch(scheduler: Any, torch_optimizer: Any) -> Any:
    """Build the ``torch.optim.lr_scheduler`` twin of a mininn scheduler, in the same state.

    The twin has the same class and arguments, is at the same point of its
    schedule (``last_epoch``, ``ReduceLROnPlateau``'s ``best`` and counters, ...),
    and leaves ``torch_optimizer``'s groups with the mininn optimizer's learning
    rates and momentum (construction would reset them): convert the optimizer
    first, with :func:`optimizer_to_torch`, then its scheduler.

    Args:
        scheduler: a ``mininn.optim.lr_scheduler`` scheduler (StepLR, MultiStepLR,
            ExponentialLR, CosineAnnealingLR, LinearLR, SequentialLR, OneCycleLR,
            ReduceLROnPlateau).
        torch_optimizer: the PyTorch twin of ``scheduler.optimizer``.
    Returns:
        The ``torch.optim.lr_scheduler`` scheduler.
    Raises:
        ImportError: PyTorch is not installed.
        TypeError: ``scheduler`` is not one of those classes.
        ValueError: ``torch_optimizer`` has another number of param groups.
    Example:
        >>> import pytest; torch = pytest.importorskip("torch")
        >>> from mininn.layers import Linear
        >>> from mininn.optim import SGD
        >>> from mininn.optim.lr_scheduler import StepLR
        >>> layer = Linear(3, 2)
        >>> opt = SGD(layer.parameters(), lr=1.0)
        >>> scheduler = StepLR(opt, step_size=2, gamma=0.5)
        >>> for epoch in range(3):
        ...     scheduler.step()
        >>> twin_opt = optimizer_to_torch(opt, to_torch(layer).parameters())
        >>> twin = scheduler_to_torch(scheduler, twin_opt)
        >>> type(twin).__name__, twin.last_epoch, twin.get_last_lr()
        ('StepLR', 3, [0.5])
        >>> twin_opt.step(); twin.step(); scheduler.step()
        >>> twin.get_last_lr() == scheduler.get_last_lr() == [0.25]
        True
    """
    torch = _torch()
    from mininn.optim.lr_scheduler import LRScheduler, MultiStepLR, SequentialLR

    name = type(scheduler).__name__
    if not isinstance(scheduler, LRScheduler) or name not in _SCHEDULER_ARGUMENTS:
        raise TypeError(
            f"scheduler_to_torch: expected a scheduler of mininn.optim.lr_scheduler "
            f"({', '.join(_SCHEDULER_ARGUMENTS)}), got {name}"
        )
    groups, torch_groups = scheduler.optimizer.param_groups, torch_optimizer.param_groups
    if len(torch_groups) != len(groups):
        raise ValueError(
            f"scheduler_to_torch: the PyTorch optimizer has {len(torch_groups)} param groups, "
            f"the scheduler's optimizer {len(groups)}; pass optimizer_to_torch(optimizer, ...)"
        )

    def twin(ours: Any) -> Any:
        torch_class = getattr(torch.optim.lr_scheduler, type(ours).__name__)
        return torch_class(torch_optimizer, **_SCHEDULER_ARGUMENTS[type(ours).__name__](ours, twin))

    def state(ours: Any) -> dict[str, Any]:
        values = ours.state_dict()
        if isinstance(ours, MultiStepLR):  # PyTorch counts milestones in a Counter
            values["milestones"] = collections.Counter(values["milestones"])
        if isinstance(ours, SequentialLR):
            values["_schedulers"] = [state(child) for child in ours._schedulers]
        return values

    torch_scheduler = twin(scheduler)
    torch_scheduler.load_state_dict(state(scheduler))
    for group, torch_group in zip(groups, torch_groups, strict=True):
        torch_group.update({key: group[key] for key in _SCHEDULED_KEYS if key in group})
    return torch_scheduler


def loss_to_torch(loss_fn: Module) -> Any:
    """Build the ``torch.nn`` loss of the same class and reduction.

    Args:
        loss_fn: a ``mininn.losses`` loss (CrossEntropyLoss, MSELoss, L1Loss,
            BCELoss, BCEWithLogitsLoss).
    Returns:
        The ``torch.nn`` loss module.
    Raises:
        ImportError: PyTorch is not installed.
        TypeError: ``loss_fn`` is not one of mininn's losses.
    Example:
        >>> import pytest; torch = pytest.importorskip("torch")
        >>> from mininn.losses import MSELoss
        >>> loss_to_torch(MSELoss(reduction="sum"))
        MSELoss()
    """
    torch = _torch()
    name = type(loss_fn).__name__
    if getattr(losses, name, None) is not type(loss_fn) or not hasattr(torch.nn, name):
        raise TypeError(f"loss_to_torch: expected one of mininn.losses' classes, got {name}")
    return getattr(torch.nn, name)(reduction=loss_fn.reduction)


def predict_torch(model: Any, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Run a PyTorch ``model`` on ``x`` in evaluation mode, without gradients, in batches.

    The twin of :func:`mininn.training.predict`; the mode is restored after.

    Args:
        model: a ``torch.nn.Module`` on the CPU.
        x: inputs of the model's dtype.
        batch_size: samples per forward pass (memory, not results). Default: 1024.
    Shape:
        - x: (N, in_features), float32 or float64 (the model's dtype).
        - Returns: (N, out_features), a new NumPy array of the same dtype.
    Raises:
        ImportError: PyTorch is not installed.
    Example:
        >>> import pytest; torch = pytest.importorskip("torch")
        >>> predict_torch(torch.nn.Linear(3, 2), np.zeros((5, 3), np.float32)).shape
        (5, 2)
    """
    torch = _torch()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            outputs = [
                model(torch.from_numpy(x[start : start + batch_size])).numpy()
                for start in range(0, len(x), batch_size)
            ]
    finally:
        model.train(was_training)
    return np.concatenate(outputs) if outputs else np.empty((0,))


def _evaluate_torch(model, loss_fn, x, y, metric_name, metric_fn, torch) -> dict[str, float]:
    output = predict_torch(model, x)
    with torch.no_grad():
        result = {"loss": loss_fn(torch.from_numpy(output), torch.from_numpy(y)).item()}
    if metric_fn is not None:
        result[metric_name] = float(metric_fn(y, output))
    return result


def _train_epoch_torch(model, loss_fn, optimizer, loader, metric_fn, epoch, history, bar, torch,
                       clip_grad_norm=None, scheduler=None):  # fmt: skip
    model.train()
    total_loss = total_metric = 0.0
    seen = 0
    for batch, (x_batch, y_batch) in enumerate(loader, start=1):
        optimizer.zero_grad()
        output = model(torch.from_numpy(x_batch))
        loss = loss_fn(output, torch.from_numpy(y_batch))
        value = loss.item()
        if not math.isfinite(value):
            lr = optimizer.param_groups[0].get("lr")
            raise FloatingPointError(
                f"fit_torch: loss became {value} at epoch {epoch}, batch {batch}; lower the "
                f"learning rate (lr={lr}) or standardise the inputs"
            )
        loss.backward()
        if clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        n = len(x_batch)
        seen += n
        total_loss += value * n
        if metric_fn is not None:
            total_metric += metric_fn(y_batch, output.detach().numpy()) * n
        history.step_losses.append(value)
        if bar is not None:
            bar.update(1)
    if seen == 0:
        raise ValueError("fit_torch: the loader yielded no batch; check batch_size and drop_last")
    return total_loss / seen, total_metric / seen


def _tensors_to_numpy(value: Any, torch: Any) -> Any:
    """A copy of a tree of torch state with every tensor as a NumPy array (mininn.save)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy().copy()
    if isinstance(value, dict):
        return {key: _tensors_to_numpy(item, torch) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_tensors_to_numpy(item, torch) for item in value)
    return value


def _numpy_to_tensors(value: Any, torch: Any) -> Any:
    """The inverse of :func:`_tensors_to_numpy`: torch's state dicts hold no ndarrays."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, dict):
        return {key: _numpy_to_tensors(item, torch) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_numpy_to_tensors(item, torch) for item in value)
    return value


def _torch_checkpoint(path, model, loss_fn, optimizer, scheduler, loader, val_data, torch,
                      **arguments):  # fmt: skip
    """fit_torch's checkpoint: the torch state as NumPy arrays in mininn.save's format."""

    def get_state() -> dict:
        return {
            "model": _tensors_to_numpy(model.state_dict(), torch),
            "optimizer": _tensors_to_numpy(optimizer.state_dict(), torch),
            "scheduler": None if scheduler is None else _tensors_to_numpy(
                scheduler.state_dict(), torch),
            "loader": loader.state_dict(),
            "torch_generator": torch.get_rng_state().numpy().copy(),
            "module_generators": {  # the NumPy generators of to_torch(..., dropout="mininn")
                name: _generator_state(rng) for name, rng in module_generators(model).items()
            },
        }  # fmt: skip

    def set_state(state: dict) -> None:
        model.load_state_dict(_numpy_to_tensors(state["model"], torch))
        optimizer.load_state_dict(_numpy_to_tensors(state["optimizer"], torch))
        if scheduler is not None:
            scheduler.load_state_dict(_numpy_to_tensors(state["scheduler"], torch))
        loader.load_state_dict(state["loader"])
        torch.set_rng_state(torch.from_numpy(state["torch_generator"].copy()))
        generators = module_generators(model)
        for name, rng_state in state["module_generators"].items():
            _set_generator_state(generators[name], rng_state, f"fit_torch: {name}")

    return checkpoint_of_run(
        path, get_state, set_state, model=model, loss_fn=loss_fn, optimizer=optimizer,
        scheduler=scheduler, train_loader=loader, val_data=val_data, **arguments,
    )  # fmt: skip


def fit_torch(
    model: Any,
    loss_fn: Any,
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
    """Train a PyTorch model exactly as :func:`mininn.training.fit` trains a mininn one.

    Each step is ``zero_grad → forward → loss → backward → [clip] → step →
    [per-batch scheduler.step()]`` on the batches of ``train_loader`` (NumPy
    arrays, wrapped with ``torch.from_numpy``, not copied); validation, metrics,
    the per-epoch scheduler step, early stopping, the checkpoint and the history
    rows follow ``fit`` line for line, so the two histories read side by side.

    The scheduler may be a mininn one (built on the mininn twin of ``optimizer``):
    it is converted with :func:`scheduler_to_torch` onto ``optimizer``, and steps
    per batch or per epoch as ``fit`` would step it (see :func:`mininn.training.fit`);
    a ``torch.optim.lr_scheduler`` scheduler is used as it is (``OneCycleLR`` and
    ``CyclicLR`` per batch, the others per epoch, unless ``scheduler_interval``
    says otherwise). Clipping is PyTorch's ``torch.nn.utils.clip_grad_norm_``.

    The checkpoint is the same file format as ``fit``'s (:func:`mininn.save`, no
    pickle): the model's, optimizer's and scheduler's ``state_dict()`` with every
    tensor as a NumPy array, the loader's random state, PyTorch's generator state
    (``torch.get_rng_state()``), the history, early stopping's state and the
    setup's fingerprint; it continues a ``fit_torch`` run, not a ``fit`` one.

    Args:
        model: a ``torch.nn.Module`` on the CPU, e.g. ``to_torch(mininn_model)``.
        loss_fn: a ``torch.nn`` loss, e.g. ``loss_to_torch(mininn_loss)``.
        optimizer: a ``torch.optim`` optimizer over ``model.parameters()``.
        train_loader: a :class:`~mininn.DataLoader` over ``(x_train, y_train)`` of
            the model's dtype; the same seed as mininn's gives the same batches.
        epochs: total number of passes over the training data, >= 1.
        val_data: ``(x_val, y_val)`` NumPy arrays, evaluated in eval mode after each
            epoch. Default: None.
        metric: as in ``fit``: ``"accuracy"``, ``"binary_accuracy"``, ``"r2"``, a
            callable ``(y_true, output) -> float`` on NumPy arrays, or None. Default: None.
        patience: stop when the validation loss has not improved by more than
            ``min_delta`` for this many epochs (requires ``val_data``). Default: None.
        min_delta: the improvement that resets the patience counter, >= 0. Default: 0.
        restore_best: with early stopping, load the weights of the best epoch at
            the end. Default: True.
        progress: show a tqdm bar per epoch on stderr (when tqdm is installed). Default: True.
        desc: prefix of the progress bar's label.
        on_epoch_end: called with each epoch's history row.
        scheduler: a ``mininn.optim.lr_scheduler`` or ``torch.optim.lr_scheduler``
            scheduler, or None. Default: None.
        scheduler_interval: ``"epoch"``, ``"batch"`` or None (decided by the
            scheduler). Default: None.
        clip_grad_norm: ``max_norm`` of ``torch.nn.utils.clip_grad_norm_`` before
            every optimizer step, or None. Default: None.
        checkpoint: a file path to continue from and write after every epoch, or
            None. Default: None.
    Returns:
        A :class:`~mininn.training.History` with the same columns as ``fit``'s, and
        ``step_losses`` of every step (``loss.item()``).
    Raises:
        ImportError: PyTorch is not installed.
        ValueError: as :func:`mininn.training.fit`: ``epochs`` < 1, ``patience`` or
            ``ReduceLROnPlateau`` without ``val_data``, a bad ``scheduler_interval``
            or ``clip_grad_norm``, a torch scheduler over another optimizer, a
            checkpoint of another setup.
        FileNotFoundError: the folder of ``checkpoint`` does not exist.
        FloatingPointError: the loss became NaN or infinite (the step is not taken).
    Example:
        >>> import pytest; torch = pytest.importorskip("torch")
        >>> import mininn
        >>> from mininn.models import make_mlp
        >>> _ = mininn.manual_seed(0)
        >>> x = np.random.default_rng(0).normal(size=(64, 2))
        >>> y = (x[:, 0] > 0).astype(np.int64)
        >>> twin = to_torch(make_mlp(2, [8], 2, dtype="float64"))
        >>> opt = torch.optim.Adam(twin.parameters(), lr=0.05)
        >>> loader = mininn.DataLoader(x, y, batch_size=16, shuffle=True, seed=0)
        >>> history = fit_torch(twin, torch.nn.CrossEntropyLoss(), opt, loader, epochs=20,
        ...                     metric="accuracy", progress=False)
        >>> len(history.step_losses), history.epochs[-1]["train_accuracy"] > 0.9
        (80, True)
    """
    torch = _torch()
    name, metric_fn = _resolve_metric(metric)
    path = _check_fit_options(clip_grad_norm, checkpoint, "fit_torch")
    interval = scheduler_interval_of(scheduler, scheduler_interval, "fit_torch",
                                     val_data is not None)  # fmt: skip
    if scheduler is not None and type(scheduler).__module__.startswith("mininn."):
        scheduler = scheduler_to_torch(scheduler, optimizer)
    if scheduler is not None and getattr(scheduler, "optimizer", optimizer) is not optimizer:
        raise ValueError(
            "fit_torch: the scheduler sets the learning rate of another optimizer; build it "
            "on the optimizer passed to fit_torch (or pass a mininn scheduler to convert)"
        )
    batch_scheduler = scheduler if interval == "batch" else None

    def run_epoch(epoch: int, history: History, bar: Any) -> dict[str, float]:
        loss, value = _train_epoch_torch(
            model, loss_fn, optimizer, train_loader, metric_fn, epoch, history, bar, torch,
            clip_grad_norm, batch_scheduler,
        )  # fmt: skip
        return {"loss": loss} if name is None else {"loss": loss, name: value}

    def validate() -> dict[str, float]:
        return _evaluate_torch(model, loss_fn, *val_data, name, metric_fn, torch)

    def step_scheduler(val_loss: float | None) -> None:
        if steps_on_metric(scheduler):  # ReduceLROnPlateau
            scheduler.step(val_loss)
        else:
            scheduler.step()

    resumable = None if path is None else _torch_checkpoint(
        path, model, loss_fn, optimizer, scheduler, train_loader, val_data, torch,
        metric=name, patience=patience, min_delta=min_delta, restore_best=restore_best,
        interval=interval, clip_grad_norm=clip_grad_norm,
    )  # fmt: skip
    return run_epochs(
        run_epoch, validate if val_data is not None else None,
        lambda: _tensors_to_numpy(model.state_dict(), torch),
        lambda state: model.load_state_dict(_numpy_to_tensors(state, torch)), epochs=epochs,
        n_batches=len(train_loader), metric_name=name, patience=patience, min_delta=min_delta,
        restore_best=restore_best, progress=progress, desc=desc, on_epoch_end=on_epoch_end,
        where="fit_torch", lr=lambda: optimizer.param_groups[0]["lr"],
        step_scheduler=step_scheduler if scheduler is not None and interval == "epoch" else None,
        checkpoint=resumable,
    )  # fmt: skip
