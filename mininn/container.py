"""Containers: :class:`Sequential`, and the activation-aware default initialisation it applies.

This module sits above the layers and activations it inspects (as PyTorch's
``torch.nn.modules.container``): it imports them and recognises them with
``isinstance``, while :mod:`mininn.init` needs only NumPy and
:mod:`mininn.module` nothing of mininn. ``mininn.Sequential`` and
``mininn.module.Sequential`` are this class.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from mininn import config
from mininn.activations import LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from mininn.init import kaiming_normal_, kaiming_uniform_, xavier_normal_, xavier_uniform_, zeros_
from mininn.layers import BatchNorm1d, Dropout, Identity, Linear
from mininn.module import Module, _takes_input_grad

__all__ = ["INIT_MAPS", "Sequential", "apply_default_init"]

#: The activation-aware default of the original design, by variant
#: (``mininn.config.INIT_MAP``): the initialiser for rectifiers and for the others.
INIT_MAPS: dict[str, dict[str, Any]] = {
    "normal": {"relu": kaiming_normal_, "xavier": xavier_normal_},
    "uniform": {"relu": kaiming_uniform_, "xavier": xavier_uniform_},
}

# Layers that sit between a Linear and its activation without changing which one it is.
_TRANSPARENT = (BatchNorm1d, Dropout, Identity)


class Sequential(Module):
    """Chain modules: ``forward`` runs them in order, ``backward`` in reverse.

    Children are named ``"0"``, ``"1"``, ... so parameters read ``0.weight``,
    ``0.bias``, as in ``torch.nn.Sequential``.

    A :class:`~mininn.layers.Linear` whose weight was not initialised explicitly
    (by ``mininn.init`` or ``Linear(init=...)``) is initialised for the
    activation that follows it (see :func:`apply_default_init`):
    Kaiming for ReLU and LeakyReLU, Xavier for Tanh, Sigmoid and Softmax.

    Args:
        *modules: the layers, in order.
    Raises:
        TypeError: an argument is not a Module.
    """

    def __init__(self, *modules: Module) -> None:
        super().__init__()
        for index, module in enumerate(modules):
            if not isinstance(module, Module):
                raise TypeError(
                    f"Sequential: argument {index} is {type(module).__name__}, not a mininn Module"
                )
            self._modules[str(index)] = module
        apply_default_init(self)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def __getitem__(self, index: int | slice) -> Module:
        layers = list(self._modules.values())
        if isinstance(index, slice):
            # append() does not re-run the default initialisation on trained layers.
            sliced = Sequential()
            for layer in layers[index]:
                sliced.append(layer)
            return sliced
        return layers[index]

    def append(self, module: Module) -> Sequential:
        """Add ``module`` at the end; returns ``self``."""
        if not isinstance(module, Module):
            raise TypeError(f"Sequential.append: expected a Module, got {type(module).__name__}")
        self._modules[str(len(self._modules))] = module
        return self

    def forward(self, x: np.ndarray) -> np.ndarray:
        for module in self._modules.values():
            x = module(x)
        return x

    def backward(self, grad_output: np.ndarray, *, input_grad: bool = True) -> np.ndarray | None:
        """Run the children's backward passes in reverse order; return dL/dx.

        Args:
            grad_output: dL/dy, the gradient of the loss with respect to the output.
            input_grad: compute and return dL/dx. Default: True. With False the first
                child is told so when its ``backward`` takes an ``input_grad`` keyword
                (:class:`~mininn.layers.Linear`, a nested Sequential) and skips that
                product, and None is returned; the parameter gradients are the same.
                Training loops pass False: the input is data, as a PyTorch input
                tensor with ``requires_grad=False``.
        Returns:
            dL/dx, the input's shape; None when ``input_grad`` is False.
        Raises:
            ValueError: ``grad_output``'s shape is not the last forward's output shape
                (raised by the last child, which names itself).
            RuntimeError: called before forward().
        Example:
            >>> from mininn.layers import Linear
            >>> model = Sequential(Linear(3, 2, dtype=np.float64))
            >>> y = model(np.ones((4, 3)))
            >>> model.backward(np.ones_like(y)).shape, model.backward(y, input_grad=False)
            ((4, 3), None)
        """
        modules = list(self._modules.values())
        if not modules:
            return grad_output if input_grad else None
        for module in reversed(modules[1:]):
            grad_output = module.backward(grad_output)
        first = modules[0]
        if input_grad:
            return first.backward(grad_output)
        if _takes_input_grad(type(first)):
            first.backward(grad_output, input_grad=False)
        else:
            first.backward(grad_output)  # e.g. Dropout first: its dL/dx is dropped
        return None


def apply_default_init(sequential: Module, init_map: str | None = None) -> None:
    """Initialise each not-yet-initialised Linear for the activation that follows it.

    For every ``Linear`` among ``sequential``'s children whose weight was never
    initialised explicitly (by a :mod:`mininn.init` function or ``Linear(init=...)``),
    look past BatchNorm1d/Dropout/Identity to the next layer:

    - ReLU: ``kaiming_*(weight, nonlinearity="relu")``;
    - LeakyReLU(s): ``kaiming_*(weight, a=s, nonlinearity="leaky_relu")``;
    - Tanh, Sigmoid, Softmax: ``xavier_*(weight)`` (gain 1, as Glorot & Bengio);
    - anything else, or nothing: PyTorch's default is kept.

    An initialised weight gets a zero bias, and is marked so that it is never
    initialised again (slicing or nesting the Sequential keeps trained weights).

    Args:
        sequential: a Sequential (its direct children are examined).
        init_map: ``"normal"`` or ``"uniform"`` variant. Default: None, the
            configuration value ``mininn.config.INIT_MAP`` (env ``MININN_INIT_MAP``).
    Raises:
        ValueError: an unknown ``init_map``.
    """
    name = config.INIT_MAP if init_map is None else init_map
    if name not in INIT_MAPS:
        raise ValueError(
            f"apply_default_init: init_map {name!r} is not one of {sorted(INIT_MAPS)}; "
            "set MININN_INIT_MAP to 'normal' or 'uniform'"
        )
    initialisers = INIT_MAPS[name]
    layers = list(sequential.children())
    for index, layer in enumerate(layers):
        if not isinstance(layer, Linear) or layer.weight._explicit_init:
            continue
        weight = layer.weight
        following = next(
            (nxt for nxt in layers[index + 1 :] if not isinstance(nxt, _TRANSPARENT)), None
        )
        if isinstance(following, ReLU):
            initialisers["relu"](weight, nonlinearity="relu")
        elif isinstance(following, LeakyReLU):
            initialisers["relu"](weight, a=following.negative_slope, nonlinearity="leaky_relu")
        elif isinstance(following, (Tanh, Sigmoid, Softmax)):
            initialisers["xavier"](weight)
        else:
            continue
        if layer.bias is not None:
            zeros_(layer.bias)
