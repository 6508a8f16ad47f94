"""Weight initialisers, as ``torch.nn.init``.

Each function with a trailing underscore fills its argument **in place** (a
:class:`~mininn.Parameter` or a floating ndarray) and returns it. A Parameter
it fills is marked as explicitly initialised, so that the activation-aware
default of :class:`mininn.Sequential` (:mod:`mininn.container`) leaves it alone. Fans follow
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

__all__ = [
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


def _array(tensor: Any, where: str) -> np.ndarray:
    """The floating ndarray to fill: ``tensor`` itself, or a Parameter's ``.data``.

    A Parameter is recognised by its floating ``.data`` array (this module needs
    only NumPy), and marked ``_explicit_init``.
    """
    if isinstance(tensor, np.ndarray):
        if tensor.dtype.kind == "f":
            return tensor
    elif isinstance(getattr(tensor, "data", None), np.ndarray) and tensor.data.dtype.kind == "f":
        tensor._explicit_init = True
        return tensor.data
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
