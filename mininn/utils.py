"""Gradient clipping, as ``torch.nn.utils``: :func:`clip_grad_norm_` and :func:`clip_grad_value_`.

Both work on the gradients in place (``p.grad *= c``, ``np.clip(p.grad, out=p.grad)``),
so an optimizer's views of them stay valid. Call them between the backward pass
and ``optimizer.step()``:

    >>> import numpy as np
    >>> from mininn.module import Parameter
    >>> p = Parameter(np.zeros(2))
    >>> p.grad[...] = [3.0, 4.0]
    >>> float(clip_grad_norm_([p], max_norm=1.0))  # the norm before clipping
    5.0
    >>> p.grad.round(6).tolist()  # scaled by 1 / (5 + 1e-6)
    [0.6, 0.8]
"""

from __future__ import annotations

import math
import types
import warnings
from collections.abc import Iterable

import numpy as np

from mininn.module import Parameter

__all__ = ["clip_grad_norm_", "clip_grad_value_"]


def _grads(parameters: Parameter | Iterable[Parameter], where: str) -> list[np.ndarray]:
    """The gradients to clip: those of ``parameters`` with ``requires_grad`` (a frozen
    parameter has no gradient in PyTorch, so it is neither counted nor clipped)."""
    if isinstance(parameters, Parameter):
        parameters = [parameters]
    elif isinstance(parameters, np.ndarray) or not isinstance(parameters, Iterable):
        raise TypeError(
            f"{where}: expected a Parameter or an iterable of Parameters (e.g. "
            f"model.parameters()), got {type(parameters).__name__}"
        )
    is_generator = isinstance(parameters, types.GeneratorType)
    parameters = list(parameters)
    if is_generator and not parameters:
        warnings.warn(
            "`parameters` is an empty generator, no gradient clipping will occur.", stacklevel=3
        )
    for index, param in enumerate(parameters):
        if not isinstance(param, Parameter):
            raise TypeError(
                f"{where}: parameters[{index}] is a {type(param).__name__}, not a mininn "
                "Parameter; pass model.parameters()"
            )
    return [p.grad for p in parameters if p.requires_grad and p.grad is not None]


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _vector_norm(x: np.ndarray, norm_type: float) -> np.floating:
    """||x||_p of the flattened array: (sum |x_i|^p)^(1/p), or max |x_i| for p = inf."""
    magnitudes = np.abs(x.ravel())
    if norm_type == math.inf:
        return magnitudes.max(initial=0)
    return np.sum(magnitudes**norm_type) ** (1 / norm_type)


def clip_grad_norm_(
    parameters: Parameter | Iterable[Parameter],
    max_norm: float,
    norm_type: float | str = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> np.floating:
    """Scale the gradients so that their joint norm is at most ``max_norm``:
    g ← g · min(max_norm / (total_norm + 1e-6), 1), the same factor for every gradient.

    total_norm is the p-norm of all gradients viewed as one vector, computed as
    PyTorch does, as the norm of the per-parameter norms:
    total_norm = ||(||g_1||_p, ..., ||g_k||_p)||_p = (sum_i sum_j |g_ij|^p)^(1/p),
    or max_ij |g_ij| for p = inf. The 1e-6 keeps the factor finite for zero
    gradients; the clamp at 1 means gradients are only ever scaled down.

    Args:
        parameters: a :class:`~mininn.Parameter` or an iterable of them (e.g.
            ``model.parameters()``). Those with ``requires_grad=False`` are skipped,
            as PyTorch skips parameters without a gradient.
        max_norm: the largest norm allowed, ≥ 0.
        norm_type: p, > 0, or ``inf`` (``math.inf`` or ``"inf"``) for the largest
            absolute value. Default: 2.0.
        error_if_nonfinite: raise instead of scaling when total_norm is nan or
            ±inf (the gradients are then left unchanged). Default: False (a
            nan/inf norm makes the gradients nan/0, as in PyTorch).
        foreach: accepted for PyTorch compatibility; NumPy has one implementation.
            Default: None.
    Returns:
        total_norm before clipping, a NumPy scalar in the gradients' dtype
        (float32 ``0.0`` when there is no gradient), as PyTorch's 0-d tensor.
    Raises:
        TypeError: ``parameters`` is not a Parameter or an iterable of Parameters.
        ValueError: ``max_norm`` is negative or nan, or ``norm_type`` is not > 0
            (PyTorch accepts these, and a negative ``max_norm`` would flip the
            gradients' sign).
        RuntimeError: ``error_if_nonfinite`` and total_norm is nan or ±inf.
    Warns:
        UserWarning: ``parameters`` is an empty generator (e.g. already consumed).
    References: Pascanu, Mikolov & Bengio (2013), "On the difficulty of training
        recurrent neural networks", https://arxiv.org/abs/1211.5063;
        ``torch.nn.utils.clip_grad_norm_``.
    Example:
        >>> p = Parameter(np.zeros(3))
        >>> p.grad[...] = [1.0, -2.0, 0.5]
        >>> float(clip_grad_norm_(p, max_norm=1.0, norm_type="inf"))
        2.0
        >>> p.grad.round(6).tolist()
        [0.5, -1.0, 0.25]
    """
    try:
        norm_type = float(norm_type)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"clip_grad_norm_: norm_type must be a number > 0 or 'inf', got {norm_type!r}"
        ) from error
    if not norm_type > 0:
        raise ValueError(
            f"clip_grad_norm_: norm_type must be > 0 or inf, got {norm_type}; use 2.0 for "
            "the Euclidean norm"
        )
    if not _is_number(max_norm) or not max_norm >= 0:
        raise ValueError(
            f"clip_grad_norm_: max_norm must be >= 0, got {max_norm!r}; it is the largest "
            "norm the gradients may keep"
        )
    grads = _grads(parameters, "clip_grad_norm_")
    if not grads:
        return np.float32(0.0)
    with np.errstate(over="ignore", invalid="ignore"):  # inf/nan propagate, as in PyTorch
        norms = np.array([_vector_norm(g, norm_type) for g in grads])
        total_norm = _vector_norm(norms, norm_type)
    if error_if_nonfinite and not np.isfinite(total_norm):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from `parameters` is "
            "non-finite, so it cannot be clipped. To disable this error and scale the "
            "gradients by the non-finite norm anyway, set `error_if_nonfinite=False`"
        )
    clip_coef = np.minimum(max_norm / (total_norm + 1e-6), 1.0)  # nan stays nan, as torch
    with np.errstate(invalid="ignore"):  # inf * 0 = nan for an infinite gradient
        for g in grads:
            g *= clip_coef
    return total_norm


def clip_grad_value_(
    parameters: Parameter | Iterable[Parameter], clip_value: float, foreach: bool | None = None
) -> None:
    """Clamp every gradient element into [-clip_value, clip_value], in place:
    g ← min(max(g, -clip_value), clip_value).

    Args:
        parameters: a :class:`~mininn.Parameter` or an iterable of them;
            ``requires_grad=False`` ones are skipped.
        clip_value: the largest absolute value kept, ≥ 0.
        foreach: accepted for PyTorch compatibility. Default: None.
    Raises:
        TypeError: ``parameters`` is not a Parameter or an iterable of Parameters.
        ValueError: ``clip_value`` is negative or nan (PyTorch would then set every
            element to -|clip_value|).
    Warns:
        UserWarning: ``parameters`` is an empty generator.
    Example:
        >>> p = Parameter(np.zeros(3))
        >>> p.grad[...] = [0.5, -3.0, 2.0]
        >>> clip_grad_value_(p, 1.0)
        >>> p.grad.tolist()
        [0.5, -1.0, 1.0]
    """
    if not _is_number(clip_value) or not clip_value >= 0:
        raise ValueError(
            f"clip_grad_value_: clip_value must be >= 0, got {clip_value!r}; gradients are "
            "clamped into [-clip_value, clip_value]"
        )
    clip_value = float(clip_value)
    for g in _grads(parameters, "clip_grad_value_"):
        np.clip(g, -clip_value, clip_value, out=g)
