"""The same network, weights and optimizer in PyTorch, and back.

PyTorch is imported only when one of these functions is called, so the library
itself needs only NumPy. The state-dict keys of a mininn model and of its
PyTorch twin are identical (``0.weight``, ``1.running_mean``, ...), which is what
makes the copy a plain ``load_state_dict`` in each direction.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from mininn import activations, layers, losses
from mininn.module import Module, Sequential

__all__ = ["from_torch", "loss_to_torch", "optimizer_to_torch", "to_torch"]

_INSTALL_HINT = (
    "PyTorch is needed for this: pip install torch==2.13.0 (the CPU build), "
    "or pip install -e '.[torch]'"
)


def _torch():
    try:
        import torch
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(_INSTALL_HINT) from error
    return torch


def _torch_layer(layer: Module, torch: Any) -> Any:
    nn = torch.nn
    if isinstance(layer, layers.Linear):
        return nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
    if isinstance(layer, layers.BatchNorm1d):
        return nn.BatchNorm1d(
            layer.num_features, eps=layer.eps, momentum=layer.momentum, affine=layer.affine,
            track_running_stats=layer.track_running_stats,
        )  # fmt: skip
    if isinstance(layer, layers.Dropout):
        return nn.Dropout(layer.p)
    if isinstance(layer, activations.LeakyReLU):
        return nn.LeakyReLU(layer.negative_slope)
    if isinstance(layer, activations.Softmax):
        return nn.Softmax(dim=layer.dim)
    simple = {layers.Identity: nn.Identity, activations.ReLU: nn.ReLU,
              activations.Sigmoid: nn.Sigmoid, activations.Tanh: nn.Tanh}  # fmt: skip
    for mininn_type, torch_type in simple.items():
        if isinstance(layer, mininn_type):
            return torch_type()
    if isinstance(layer, Sequential):
        return nn.Sequential(*(_torch_layer(child, torch) for child in layer))
    raise TypeError(f"to_torch: no PyTorch equivalent known for {type(layer).__name__}")


def to_torch(model: Module) -> Any:
    """Build the PyTorch twin of ``model``, with a copy of its weights and buffers.

    Args:
        model: a Sequential (possibly nested) of Linear, BatchNorm1d, Dropout,
            Identity, ReLU, LeakyReLU, Sigmoid, Tanh, Softmax; or one such layer.
    Returns:
        A ``torch.nn.Module`` of the same structure, dtype (float32 → torch.float32,
        float64 → torch.float64) and training mode.
    Raises:
        ImportError: PyTorch is not installed (the message says how to install it).
        TypeError: a layer has no PyTorch equivalent.
    """
    torch = _torch()
    twin = _torch_layer(model, torch)
    state = model.state_dict()
    dtype = next((v.dtype for v in state.values() if v.dtype.kind == "f"), np.float32)
    twin = twin.to(torch.float64 if dtype == np.float64 else torch.float32)
    twin.load_state_dict({key: torch.from_numpy(np.array(value)) for key, value in state.items()})
    twin.train(model.training)
    return twin


def _mininn_layer(layer: Any, torch: Any) -> Module:
    nn = torch.nn
    if isinstance(layer, nn.Linear):
        return layers.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
    if isinstance(layer, nn.BatchNorm1d):
        return layers.BatchNorm1d(
            layer.num_features, eps=layer.eps, momentum=layer.momentum, affine=layer.affine,
            track_running_stats=layer.track_running_stats,
        )  # fmt: skip
    if isinstance(layer, nn.Dropout):
        return layers.Dropout(layer.p)
    if isinstance(layer, nn.LeakyReLU):
        return activations.LeakyReLU(layer.negative_slope)
    if isinstance(layer, nn.Softmax):
        return activations.Softmax(dim=layer.dim if layer.dim is not None else -1)
    simple = {nn.Identity: layers.Identity, nn.ReLU: activations.ReLU,
              nn.Sigmoid: activations.Sigmoid, nn.Tanh: activations.Tanh}  # fmt: skip
    for torch_type, mininn_type in simple.items():
        if isinstance(layer, torch_type):
            return mininn_type()
    if isinstance(layer, nn.Sequential):
        converted = Sequential()  # append() keeps the copied weights (no default init)
        for child in layer:
            converted.append(_mininn_layer(child, torch))
        return converted
    raise TypeError(f"from_torch: no mininn equivalent known for {type(layer).__name__}")


def from_torch(model: Any) -> Module:
    """Build the mininn twin of a PyTorch model, with a copy of its weights and buffers.

    The inverse of :func:`to_torch`, for the same layer types.

    Returns:
        A mininn Module of the same structure, dtype and training mode.
    Raises:
        TypeError: a layer has no mininn equivalent.
    """
    torch = _torch()
    twin = _mininn_layer(model, torch)
    state = {key: value.detach().cpu().numpy() for key, value in model.state_dict().items()}
    dtype = next((v.dtype for v in state.values() if v.dtype.kind == "f"), np.float32)
    twin.to(dtype)
    twin.load_state_dict(state)
    twin.train(model.training)
    return twin


def optimizer_to_torch(optimizer: Any, params: Any) -> Any:
    """Build the ``torch.optim`` optimizer with the same class and hyperparameters.

    Args:
        optimizer: a ``mininn.optim`` optimizer with one parameter group.
        params: the PyTorch parameters, in the same order (e.g. ``twin.parameters()``).
    Raises:
        ValueError: the optimizer has more than one parameter group.
    """
    torch = _torch()
    if len(optimizer.param_groups) != 1:
        raise ValueError("optimizer_to_torch: only one parameter group is supported")
    torch_class = getattr(torch.optim, type(optimizer).__name__)
    accepted = inspect.signature(torch_class).parameters
    group = optimizer.param_groups[0]
    arguments = {key: value for key, value in group.items() if key != "params" and key in accepted}
    return torch_class(params, **arguments)


def loss_to_torch(loss_fn: Module) -> Any:
    """Build the ``torch.nn`` loss of the same class and reduction."""
    torch = _torch()
    if not isinstance(loss_fn, losses.__dict__.get(type(loss_fn).__name__, ())):
        raise TypeError(f"loss_to_torch: {type(loss_fn).__name__} is not a mininn loss")
    return getattr(torch.nn, type(loss_fn).__name__)(reduction=loss_fn.reduction)
