"""Pure NumPy math shared by the activations and the losses.

Every function here is stateless, keeps its input's dtype (float32 stays
float32) and never modifies its input: each returns a fresh array. They are
written to be stable for inputs of any magnitude: no overflow at |x| = 1000.
"""

from __future__ import annotations

import numpy as np

__all__ = ["log_softmax", "sigmoid", "softmax", "softplus"]


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Return the logistic function σ(x) = 1 / (1 + exp(-x)), elementwise and stable.

    Split by sign so that ``exp`` only ever sees non-positive numbers:
    σ(x) = 1 / (1 + e) for x ≥ 0 and e / (1 + e) for x < 0, with e = exp(-|x|).

    Args:
        x: any shape, float32 or float64.
    Returns:
        σ(x), same shape and dtype as ``x``, in [0, 1].
    Example:
        >>> sigmoid(np.array([-1000.0, 0.0, 1000.0]))
        array([0. , 0.5, 1. ])
    """
    e = np.abs(x)
    np.negative(e, out=e)
    np.exp(e, out=e)  # e = exp(-|x|) in (0, 1]: cannot overflow
    numerator = np.where(x >= 0, np.ones((), dtype=e.dtype), e)
    e += 1
    np.divide(numerator, e, out=numerator)
    return numerator


def softplus(x: np.ndarray) -> np.ndarray:
    """Return log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)), elementwise and stable.

    Args:
        x: any shape, float32 or float64.
    Returns:
        Same shape and dtype as ``x``, non-negative.
    Example:
        >>> [round(float(v), 6) for v in softplus(np.array([-1000.0, 0.0, 1000.0]))]
        [0.0, 0.693147, 1000.0]
    """
    e = np.abs(x)
    np.negative(e, out=e)
    np.exp(e, out=e)
    np.log1p(e, out=e)
    e += np.maximum(x, 0)
    return e


def softmax(x: np.ndarray, dim: int = -1) -> np.ndarray:
    """Return softmax(x)_i = exp(x_i - max(x)) / sum_j exp(x_j - max(x)) along ``dim``.

    Shifting by the maximum makes the largest exponent 0, so nothing overflows.

    Args:
        x: any shape with at least one dimension, float32 or float64.
        dim: the dimension that sums to 1. Default: -1.
    Returns:
        Same shape and dtype as ``x``.
    Example:
        >>> softmax(np.array([[1000.0, 1000.0], [0.0, -1000.0]]))
        array([[0.5, 0.5],
               [1. , 0. ]])
    """
    y = x - x.max(axis=dim, keepdims=True)
    np.exp(y, out=y)
    y /= y.sum(axis=dim, keepdims=True)
    return y


def log_softmax(x: np.ndarray, dim: int = -1) -> np.ndarray:
    """Return log softmax(x) = x - max(x) - log(sum exp(x - max(x))) along ``dim``.

    The log-sum-exp form stays finite where ``log(softmax(x))`` would give -inf.

    Args:
        x: any shape with at least one dimension, float32 or float64.
        dim: the dimension to normalise over. Default: -1.
    Returns:
        Same shape and dtype as ``x``, all values ≤ 0.
    Example:
        >>> log_softmax(np.array([[0.0, -1000.0]]))
        array([[    0., -1000.]])
    """
    shifted = x - x.max(axis=dim, keepdims=True)
    shifted -= np.log(np.exp(shifted).sum(axis=dim, keepdims=True))
    return shifted
