"""Weight initialisers, as ``torch.nn.init``, and the activation-aware default.

Each function with a trailing underscore fills its argument **in place** (a
:class:`~mininn.Parameter` or a floating ndarray) and returns it. Fans follow
PyTorch's rule for a weight of shape ``(out_features, in_features)``:
``fan_in = in_features``, ``fan_out = out_features``.

Random draws come from ``generator`` (a ``numpy.random.Generator`` or an int
seed) or, when it is None, from the package generator that
:func:`mininn.manual_seed` seeds.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mininn._rng import as_generator
from mininn.module import Module, Parameter

__all__ = [
    "INIT_MAPS",
    "apply_default_init",
    "calculate_gain",
    "constant_",
    "kaiming_normal_",
    "kaiming_uniform_",
    "normal_",
    "ones_",
    "uniform_",
    "xavier_normal_",
    "xavier_uniform_",
    "zeros_",
]

_LINEAR_GAIN = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                "conv_transpose3d", "sigmoid")  # fmt: skip


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """Return the recommended gain for a nonlinearity, PyTorch's table.

    ========================== ===========================================
    nonlinearity               gain
    ========================== ===========================================
    linear, conv*, sigmoid     1
    tanh                       5/3
    relu                       sqrt(2)
    leaky_relu                 sqrt(2 / (1 + negative_slope**2))
    selu                       3/4
    ========================== ===========================================

    Args:
        nonlinearity: the name, as above.
        param: the negative slope for ``leaky_relu``. Default: None (0.01).
    Raises:
        ValueError: an unknown nonlinearity, or a non-numeric slope.
    Example:
        >>> round(calculate_gain("relu"), 6), round(calculate_gain("tanh"), 6)
        (1.414214, 1.666667)
    """
    if nonlinearity in _LINEAR_GAIN:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, (int, float)) and not isinstance(param, bool):
            slope = float(param)
        else:
            raise ValueError(f"negative_slope {param} not a valid number")
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(
        f"Unsupported nonlinearity {nonlinearity!r}; expected one of "
        f"{', '.join(_LINEAR_GAIN)}, tanh, relu, leaky_relu, selu"
    )


def _array(tensor: Parameter | np.ndarray, where: str) -> np.ndarray:
    if isinstance(tensor, Parameter):
        tensor._explicit_init = True
        return tensor.data
    if isinstance(tensor, np.ndarray) and tensor.dtype.kind == "f":
        return tensor
    raise TypeError(f"{where}: expected a Parameter or a floating ndarray, got {type(tensor)}")


def _fans(array: np.ndarray, where: str) -> tuple[int, int]:
    if array.ndim < 2:
        raise ValueError(
            f"{where}: fan in and fan out can not be computed for tensor with fewer than "
            f"2 dimensions, got shape {array.shape}"
        )
    receptive_field = math.prod(array.shape[2:])
    return array.shape[1] * receptive_field, array.shape[0] * receptive_field


def _fill(array: np.ndarray, values: np.ndarray) -> None:
    array[...] = values  # casts float64 draws to the array's dtype


def uniform_(tensor: Any, a: float = 0.0, b: float = 1.0, generator: Any = None) -> Any:
    """Fill with draws from U(a, b).

    Example:
        >>> w = uniform_(np.zeros((2, 3)), -1.0, 1.0, generator=0)
        >>> bool(np.all((w >= -1) & (w < 1)))
        True
    """
    array = _array(tensor, "uniform_")
    if not a <= b:
        raise ValueError(f"uniform_: expected a <= b, got a={a}, b={b}")
    _fill(array, as_generator(generator).uniform(a, b, size=array.shape))
    return tensor


def normal_(tensor: Any, mean: float = 0.0, std: float = 1.0, generator: Any = None) -> Any:
    """Fill with draws from N(mean, std²)."""
    array = _array(tensor, "normal_")
    if std < 0:
        raise ValueError(f"normal_: expected std >= 0, got std={std}")
    _fill(array, as_generator(generator).normal(mean, std, size=array.shape))
    return tensor


def constant_(tensor: Any, val: float) -> Any:
    """Fill with ``val``."""
    _array(tensor, "constant_").fill(val)
    return tensor


def zeros_(tensor: Any) -> Any:
    """Fill with 0."""
    return constant_(tensor, 0.0)


def ones_(tensor: Any) -> Any:
    """Fill with 1."""
    return constant_(tensor, 1.0)


def xavier_uniform_(tensor: Any, gain: float = 1.0, generator: Any = None) -> Any:
    """Fill with U(-a, a), a = gain · sqrt(6 / (fan_in + fan_out)).

    References: Glorot & Bengio (2010), "Understanding the difficulty of training
    deep feedforward neural networks", AISTATS.

    Example:
        >>> w = xavier_uniform_(np.zeros((300, 200)), generator=0)
        >>> bool(np.abs(w).max() <= np.sqrt(6 / 500))
        True
    """
    array = _array(tensor, "xavier_uniform_")
    fan_in, fan_out = _fans(array, "xavier_uniform_")
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    _fill(array, as_generator(generator).uniform(-bound, bound, size=array.shape))
    return tensor


def xavier_normal_(tensor: Any, gain: float = 1.0, generator: Any = None) -> Any:
    """Fill with N(0, std²), std = gain · sqrt(2 / (fan_in + fan_out)).

    References: Glorot & Bengio (2010), AISTATS.
    """
    array = _array(tensor, "xavier_normal_")
    fan_in, fan_out = _fans(array, "xavier_normal_")
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    _fill(array, as_generator(generator).normal(0.0, std, size=array.shape))
    return tensor


def _kaiming_std(array: np.ndarray, a: float, mode: str, nonlinearity: str, where: str) -> float:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"{where}: mode {mode!r} not supported, please use one of fan_in, fan_out")
    fan_in, fan_out = _fans(array, where)
    fan = fan_in if mode == "fan_in" else fan_out
    return calculate_gain(nonlinearity, a) / math.sqrt(fan)


def kaiming_uniform_(
    tensor: Any,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator: Any = None,
) -> Any:
    """Fill with U(-bound, bound), bound = gain · sqrt(3 / fan), gain from
    :func:`calculate_gain(nonlinearity, a) <calculate_gain>`.

    Args:
        a: the negative slope of the rectifier after this layer (leaky_relu only).
            Default: 0.
        mode: ``"fan_in"`` keeps the variance of the forward pass, ``"fan_out"`` that
            of the backward pass. Default: ``"fan_in"``.
        nonlinearity: ``"relu"`` or ``"leaky_relu"`` (recommended). Default: ``"leaky_relu"``.
    Raises:
        ValueError: ``mode`` is not ``fan_in``/``fan_out``; the array has fewer than 2 dims.
    References: He et al. (2015), "Delving Deep into Rectifiers", https://arxiv.org/abs/1502.01852
    """
    array = _array(tensor, "kaiming_uniform_")
    bound = math.sqrt(3.0) * _kaiming_std(array, a, mode, nonlinearity, "kaiming_uniform_")
    _fill(array, as_generator(generator).uniform(-bound, bound, size=array.shape))
    return tensor


def kaiming_normal_(
    tensor: Any,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator: Any = None,
) -> Any:
    """Fill with N(0, std²), std = gain / sqrt(fan); arguments as :func:`kaiming_uniform_`.

    References: He et al. (2015), https://arxiv.org/abs/1502.01852
    """
    array = _array(tensor, "kaiming_normal_")
    std = _kaiming_std(array, a, mode, nonlinearity, "kaiming_normal_")
    _fill(array, as_generator(generator).normal(0.0, std, size=array.shape))
    return tensor


# The activation-aware default of the original design: activation name -> initialiser.
INIT_MAPS: dict[str, dict[str, Any]] = {
    "normal": {"relu": kaiming_normal_, "xavier": xavier_normal_},
    "uniform": {"relu": kaiming_uniform_, "xavier": xavier_uniform_},
}

# Layers that sit between a Linear and its activation without changing which one it is.
_TRANSPARENT = ("BatchNorm1d", "Dropout", "Identity")


def apply_default_init(sequential: Module, init_map: str | None = None) -> None:
    """Initialise each not-yet-initialised Linear for the activation that follows it.

    For every ``Linear`` among ``sequential``'s children whose weight was never
    initialised explicitly (by a function of this module or ``Linear(init=...)``),
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
    from mininn import config  # config reads the environment once, on first use

    name = config.INIT_MAP if init_map is None else init_map
    if name not in INIT_MAPS:
        raise ValueError(
            f"apply_default_init: init_map {name!r} is not one of {sorted(INIT_MAPS)}; "
            "set MININN_INIT_MAP to 'normal' or 'uniform'"
        )
    initialisers = INIT_MAPS[name]
    layers = list(sequential.children())
    for index, layer in enumerate(layers):
        weight = getattr(layer, "weight", None)
        if type(layer).__name__ != "Linear" or weight is None or weight._explicit_init:
            continue
        following = next(
            (nxt for nxt in layers[index + 1 :] if type(nxt).__name__ not in _TRANSPARENT), None
        )
        kind = type(following).__name__ if following is not None else None
        if kind == "ReLU":
            initialisers["relu"](weight, nonlinearity="relu")
        elif kind == "LeakyReLU":
            initialisers["relu"](weight, a=following.negative_slope, nonlinearity="leaky_relu")
        elif kind in ("Tanh", "Sigmoid", "Softmax"):
            initialisers["xavier"](weight)
        else:
            continue
        if layer.bias is not None:
            zeros_(layer.bias)
