"""Loss functions: parameter-free Modules at the root of the backward pass.

``loss_fn(input, target)`` returns the loss (a Python float for
``reduction='mean'`` or ``'sum'``, an ndarray of per-element losses for
``'none'``) and caches what the gradient needs; ``loss_fn.backward()`` then
returns dL/dinput, with ``input``'s shape and dtype. A target is cast to the
input's dtype, so a float32 run stays float32.

For ``reduction='none'`` there is no single L: ``backward()`` returns the
gradient of the *sum* of the per-element losses (an upstream of ones), and
``backward(grad_output)`` takes an upstream of the per-element shape.

    >>> import numpy as np
    >>> loss_fn = MSELoss()
    >>> loss_fn(np.array([1.0, 3.0]), np.array([0.0, 0.0]))  # (1 + 9) / 2
    5.0
    >>> loss_fn.backward().tolist()  # 2 (input - target) / 2
    [1.0, 3.0]
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mininn import functional as F
from mininn.module import Module

__all__ = ["BCELoss", "BCEWithLogitsLoss", "CrossEntropyLoss", "L1Loss", "MSELoss"]

_REDUCTIONS = ("mean", "sum", "none")
# PyTorch's floor for p (1 - p) in BCELoss's gradient: 1e-12 as a C float.
_BCE_EPSILON = float(np.float32(1e-12))


class _Loss(Module):
    """Shared reduction handling: subclasses implement ``forward`` (which calls
    :meth:`_reduce`) and ``_unreduced_grad`` (d sum(losses) / d input, a fresh array)."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(
                f"{type(self).__name__}: reduction must be one of 'mean', 'sum', 'none', "
                f"got {reduction!r}"
            )
        self.reduction = reduction
        self._loss_shape: tuple[int, ...] | None = None
        self._divisor: Any = None

    def _reduce(self, losses: np.ndarray, divisor: Any = None) -> float | np.ndarray:
        """Reduce ``losses``; ``'mean'`` divides their sum by ``divisor`` (None: their
        number; 0 gives nan, 0/0, as PyTorch's weighted mean)."""
        self._loss_shape = losses.shape
        self._divisor = divisor
        if self.reduction == "mean":
            if divisor is None:
                return float(losses.mean())
            return float(losses.sum() / divisor) if divisor != 0 else math.nan
        if self.reduction == "sum":
            return float(losses.sum())
        return losses

    def _unreduced_grad(self) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} is missing '_unreduced_grad'")

    def backward(self, grad_output: Any = None) -> np.ndarray:
        """Return dL/dinput for the last ``forward``.

        Args:
            grad_output: upstream gradient. None means 1 (for ``'none'``: ones,
                i.e. the gradient of the sum of the per-element losses). With
                ``'mean'``/``'sum'`` a scalar; with ``'none'`` an array of the
                per-element loss shape.
        Returns:
            dL/dinput, the shape and dtype of the last ``input``.
        Raises:
            RuntimeError: called before ``forward``.
            ValueError: ``grad_output`` has the wrong shape.
        """
        if self._loss_shape is None:
            raise RuntimeError(f"{type(self).__name__}.backward() called before forward()")
        grad_input = self._unreduced_grad()
        if self.reduction == "mean":
            divisor = self._divisor
            if divisor is None:
                grad_input *= 1.0 / max(int(np.prod(self._loss_shape)), 1)
            else:
                grad_input *= 1.0 / divisor if divisor != 0 else math.nan
        if grad_output is None:
            return grad_input
        upstream = np.asarray(grad_output, dtype=grad_input.dtype)
        expected = () if self.reduction != "none" else self._loss_shape
        if upstream.shape != expected:
            raise ValueError(
                f"{type(self).__name__}.backward: expected grad_output of shape {expected} "
                f"for reduction={self.reduction!r}, got {upstream.shape}"
            )
        # CrossEntropyLoss: losses (N,), input (N, C): broadcast over the classes.
        grad_input *= upstream.reshape(upstream.shape + (1,) * (grad_input.ndim - upstream.ndim))
        return grad_input

    def _check_pair(self, input: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
        """Validate an elementwise loss's arguments; return the target in input's dtype."""
        name = type(self).__name__
        if not isinstance(input, np.ndarray) or input.dtype not in (np.float32, np.float64):
            kind = input.dtype if isinstance(input, np.ndarray) else type(input).__name__
            raise TypeError(f"{name}: expected input as a float32/float64 ndarray, got {kind}")
        target = np.asarray(target)
        if target.shape != input.shape:
            hint = (
                f"; reshape one to match, e.g. target.reshape{input.shape}"
                if target.size == input.size
                else ""
            )
            raise ValueError(
                f"{name}: input shape {input.shape} and target shape {target.shape} differ; "
                f"they must be equal (broadcasting would pair every input with every target)" + hint
            )
        return input, target.astype(input.dtype, copy=False)


class CrossEntropyLoss(_Loss):
    r"""Measure the cross-entropy of logits against class indices, with optional class
    weights and label smoothing:
    loss_n = -sum_c q_{n,c} log softmax(input_n)_c, q_{n,c} = w_c ((1 - ε) 1[c = y_n] + ε / C).

    q_n is the target distribution: the one-hot label mixed with the uniform
    distribution by the smoothing ε (Szegedy et al. 2016), each class c then
    scaled by its weight w_c. Written out, as PyTorch computes it:
    loss_n = (1 - ε) w_{y_n} (-log p_{n,y_n}) + (ε / C) sum_c w_c (-log p_{n,c}),
    so the smoothing term weighs every class c by w_c, not by the target's weight.
    Without weight (w = 1) and smoothing this is -log p_{n,y_n}.

    ``'mean'`` divides the sum of the losses by sum_n w_{y_n}, the summed weights of
    the target classes (N without weight), as PyTorch does; when that sum is 0 the
    result is 0/0, nan, as in PyTorch.

    The gradient is dloss_n/dinput_{n,c} = p_{n,c} sum_k q_{n,k} - q_{n,c}, i.e.
    softmax(input) - onehot(target) without weight and smoothing. The
    log-softmax is fused into the loss (log-sum-exp after shifting by the row
    maximum, finite for logits of magnitude 1000). Give it raw scores: do **not**
    put Softmax before this loss.

    Args:
        weight: w, one rescaling weight per class, shape (C,), finite and ≥ 0.
            Default: None (all 1). Kept as a buffer (in ``state_dict()``, as PyTorch).
        reduction: ``'mean'`` (the weighted mean above), ``'sum'`` or ``'none'``
            (per-sample losses, shape (N,)). Default: ``'mean'``.
        label_smoothing: ε, the share of the target mass spread uniformly over the
            C classes, in [0, 1]; 0 is no smoothing. Default: 0.0.
    Shape:
        - input: (N, C) logits, float32 or float64.
        - target: (N,) integer class indices in [0, C).
        - weight: (C,), cast to input's dtype.
        - Output: a Python float, or (N,) in input's dtype for ``'none'``.
    Caches: _probs (softmax of the input), _target_dist (q).
    Raises:
        TypeError: input is not a float ndarray; target is not integer (class
            probabilities are not supported); weight is not numeric.
        ValueError: an unknown reduction; label_smoothing outside [0, 1]; weight not
            1-D, negative or not finite; input not 2-D; target shape is not (N,); a
            class index outside [0, C); weight's length is not C.
    References: Szegedy et al. (2016), "Rethinking the Inception Architecture for
        Computer Vision", https://arxiv.org/abs/1512.00567 (label smoothing);
        ``torch.nn.CrossEntropyLoss`` (how weight, smoothing and 'mean' combine).
    Example:
        >>> loss_fn = CrossEntropyLoss()
        >>> round(loss_fn(np.zeros((2, 4)), np.array([0, 3])), 6)  # log 4
        1.386294
        >>> loss_fn.backward()[0].tolist()  # (softmax - onehot) / N
        [-0.375, 0.125, 0.125, 0.125]
        >>> smooth = CrossEntropyLoss(weight=np.array([1.0, 3.0]), label_smoothing=0.5)
        >>> # q = [1 (0.5 + 0.25), 3 (0 + 0.25)]: loss = -0.75 log 0.5 - 0.75 log 0.5,
        >>> # divided by w_0 = 1; gradient p sum(q) - q = 0.5 * 1.5 - 0.75
        >>> round(smooth(np.zeros((1, 2)), np.array([0])), 6)  # 1.5 log 2
        1.039721
        >>> smooth.backward().tolist()
        [[0.0, 0.0]]
    """

    def __init__(
        self, weight: Any = None, *, reduction: str = "mean", label_smoothing: float = 0.0
    ) -> None:
        super().__init__(reduction)
        if (
            isinstance(label_smoothing, bool)
            or not isinstance(label_smoothing, (int, float, np.integer, np.floating))
            or not 0 <= label_smoothing <= 1
        ):
            raise ValueError(
                f"CrossEntropyLoss: label_smoothing must be a number in [0, 1], got "
                f"{label_smoothing!r}; 0 is no smoothing, 0.1 a common choice"
            )
        self.label_smoothing = float(label_smoothing)
        self.register_buffer("weight", None if weight is None else _class_weight(weight))
        self._probs: np.ndarray | None = None
        self._target_dist: np.ndarray | None = None

    def forward(self, input: np.ndarray, target: np.ndarray) -> float | np.ndarray:
        if not isinstance(input, np.ndarray) or input.dtype not in (np.float32, np.float64):
            kind = input.dtype if isinstance(input, np.ndarray) else type(input).__name__
            raise TypeError(
                f"CrossEntropyLoss: expected input logits as a float ndarray, got {kind}"
            )
        if input.ndim != 2:
            raise ValueError(
                f"CrossEntropyLoss: expected input logits of shape (N, C), got {input.shape}"
            )
        N, C = input.shape
        target = np.asarray(target)
        if target.dtype.kind not in "iu":
            raise TypeError(
                f"CrossEntropyLoss: expected target of integer class indices, got dtype "
                f"{target.dtype}; if these are labels, pass target.astype(np.int64); "
                "if they are one-hot rows, pass target.argmax(axis=1)"
            )
        if target.shape != (N,):
            raise ValueError(
                f"CrossEntropyLoss: expected target of shape ({N},) for input {input.shape}, "
                f"got {target.shape}"
            )
        bad = (target < 0) | (target >= C)
        if bad.any():
            raise ValueError(
                f"CrossEntropyLoss: target has class index {target[bad][0]} but input has "
                f"{C} classes; indices must be in [0, {C - 1}]"
            )
        weight = self.weight
        if weight is not None and weight.shape != (C,):
            raise ValueError(
                f"CrossEntropyLoss: weight has shape {weight.shape} but input has {C} classes; "
                f"give one weight per class, shape ({C},)"
            )
        # log p = x - max - log sum exp(x - max): no overflow for large logits
        shifted = input - input.max(axis=1, keepdims=True)
        probs = np.exp(shifted)
        sum_exp = probs.sum(axis=1, keepdims=True)
        log_probs = shifted - np.log(sum_exp)
        probs /= sum_exp
        # q = w * ((1 - ε) onehot(y) + ε / C), the weighted, smoothed target
        eps = self.label_smoothing
        target_dist = np.zeros_like(input)
        target_dist[np.arange(N), target] = 1 - eps
        if eps:
            target_dist += eps / C
        divisor = None  # 'mean' over N
        if weight is not None:
            weight = weight.astype(input.dtype, copy=False)
            target_dist *= weight
            divisor = weight[target].sum()  # 'mean' over sum_n w_{y_n}
        losses = -(target_dist * log_probs).sum(axis=1)
        self._probs, self._target_dist = probs, target_dist
        return self._reduce(losses, divisor)

    def _unreduced_grad(self) -> np.ndarray:
        # d/dx_c sum_k q_k (-log p_k) = p_c sum_k q_k - q_c (= p - onehot without w, ε)
        grad_input = self._probs * self._target_dist.sum(axis=1, keepdims=True)
        grad_input -= self._target_dist
        return grad_input


def _class_weight(weight: Any) -> np.ndarray:
    """Validate CrossEntropyLoss's ``weight``: a finite, non-negative (C,) float array."""
    try:
        array = np.array(weight, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"CrossEntropyLoss: weight must be an array of C numbers, got {weight!r}"
        ) from error
    if array.ndim != 1:
        raise ValueError(
            f"CrossEntropyLoss: weight must be 1-D, one weight per class, shape (C,), got "
            f"shape {array.shape}"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"CrossEntropyLoss: weight must be finite, got {array.tolist()}")
    if np.any(array < 0):
        raise ValueError(
            f"CrossEntropyLoss: weight must be >= 0, got {array.tolist()}; a class weight "
            "rescales that class's losses"
        )
    return array


class MSELoss(_Loss):
    """Measure the squared error: loss_i = (input_i - target_i)².

    Args:
        reduction: ``'mean'`` (average over all elements), ``'sum'`` or ``'none'``.
            Default: ``'mean'``.
    Shape:
        - input: any shape, float32 or float64.  - target: exactly input's shape.
        - Output: a Python float, or input's shape and dtype for ``'none'``.
    Caches: _diff (input - target).
    Raises:
        TypeError: input is not a float ndarray.
        ValueError: an unknown reduction; target.shape != input.shape (e.g. (N, 1)
            against (N,), which would otherwise broadcast to (N, N)).
    Example:
        >>> MSELoss(reduction="sum")(np.array([1.0, 2.0]), np.array([0.0, 0.0]))
        5.0
    """

    def __init__(self, *, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self._diff: np.ndarray | None = None

    def forward(self, input: np.ndarray, target: np.ndarray) -> float | np.ndarray:
        input, target = self._check_pair(input, target)
        self._diff = input - target
        return self._reduce(self._diff * self._diff)

    def _unreduced_grad(self) -> np.ndarray:
        return self._diff * 2


class L1Loss(_Loss):
    """Measure the absolute error (MAE when averaged): loss_i = |input_i - target_i|.

    The derivative is sign(input - target), 0 where they are equal (as PyTorch).

    Args:
        reduction: ``'mean'`` (average over all elements), ``'sum'`` or ``'none'``.
            Default: ``'mean'``.
    Shape:
        - input: any shape, float32 or float64.  - target: exactly input's shape.
        - Output: a Python float, or input's shape and dtype for ``'none'``.
    Caches: _diff (input - target).
    Raises:
        TypeError: input is not a float ndarray.
        ValueError: an unknown reduction; target.shape != input.shape.
    Example:
        >>> loss_fn = L1Loss()
        >>> loss_fn(np.array([1.0, 2.0]), np.array([2.0, 2.0]))
        0.5
        >>> loss_fn.backward().tolist()
        [-0.5, 0.0]
    """

    def __init__(self, *, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self._diff: np.ndarray | None = None

    def forward(self, input: np.ndarray, target: np.ndarray) -> float | np.ndarray:
        input, target = self._check_pair(input, target)
        self._diff = input - target
        return self._reduce(np.abs(self._diff))

    def _unreduced_grad(self) -> np.ndarray:
        return np.sign(self._diff)


class BCELoss(_Loss):
    """Measure the binary cross-entropy of probabilities:
    loss_i = -[y_i log(x_i) + (1 - y_i) log(1 - x_i)], each log clamped at -100.

    The clamp (PyTorch's) keeps the loss finite at x = 0 or 1. The gradient is
    PyTorch's (x - y) / max(x (1 - x), 1e-12). For logits, prefer
    :class:`BCEWithLogitsLoss`, which is stable and does not need a Sigmoid.

    Args:
        reduction: ``'mean'`` (average over all elements), ``'sum'`` or ``'none'``.
            Default: ``'mean'``.
    Shape:
        - input: any shape, probabilities in [0, 1], float32 or float64.
        - target: exactly input's shape, values in [0, 1].
        - Output: a Python float, or input's shape and dtype for ``'none'``.
    Caches: _input, _target.
    Raises:
        TypeError: input is not a float ndarray.
        ValueError: an unknown reduction; target.shape != input.shape; an input value
            outside [0, 1] (or NaN).
    Example:
        >>> round(BCELoss()(np.array([0.5, 1.0]), np.array([1.0, 0.0])), 6)  # (log 2 + 100) / 2
        50.346574
    """

    def __init__(self, *, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self._input: np.ndarray | None = None
        self._target: np.ndarray | None = None

    def forward(self, input: np.ndarray, target: np.ndarray) -> float | np.ndarray:
        input, target = self._check_pair(input, target)
        outside = ~((input >= 0) & (input <= 1))
        if outside.any():
            raise ValueError(
                f"BCELoss: expected input probabilities in [0, 1], got {input[outside][0]}; "
                "apply Sigmoid first, or give logits to BCEWithLogitsLoss"
            )
        with np.errstate(divide="ignore"):  # log(0) = -inf, clamped just below
            log_p = np.log(input)
            log_1mp = np.log1p(-input)
        np.maximum(log_p, -100, out=log_p)
        np.maximum(log_1mp, -100, out=log_1mp)
        # -(y log p + (1 - y) log(1 - p)) = -(y (log p - log(1 - p)) + log(1 - p))
        losses = log_p
        losses -= log_1mp
        losses *= target
        losses += log_1mp
        np.negative(losses, out=losses)
        self._input, self._target = input, target
        return self._reduce(losses)

    def _unreduced_grad(self) -> np.ndarray:
        x = self._input
        denominator = 1 - x
        denominator *= x
        np.maximum(denominator, _BCE_EPSILON, out=denominator)
        grad_input = x - self._target
        grad_input /= denominator
        return grad_input


class BCEWithLogitsLoss(_Loss):
    """Measure the binary cross-entropy of logits, stably:
    loss_i = max(x_i, 0) - x_i y_i + log(1 + exp(-|x_i|)), i.e. BCE(sigmoid(x), y).

    With ``pos_weight`` (w), positive targets weigh w times more:
    loss_i = (1 - y_i) x_i + (1 + (w - 1) y_i) · log(1 + exp(-x_i)).
    The gradient is sigmoid(x) - y, or sigmoid(x) (1 + (w - 1) y) - w y.

    Args:
        reduction: ``'mean'`` (average over all elements), ``'sum'`` or ``'none'``.
            Default: ``'mean'``.
        pos_weight: weight of positive examples, broadcast against the input's
            last dimensions, e.g. shape (C,) for C labels; ≥ 0. Default: None (1).
    Shape:
        - input: any shape, logits, float32 or float64.
        - target: exactly input's shape, values in [0, 1].
        - Output: a Python float, or input's shape and dtype for ``'none'``.
    Caches: _input, _target, _pos_weight (cast to the input's dtype).
    Raises:
        TypeError: input is not a float ndarray.
        ValueError: an unknown reduction; a negative pos_weight; target.shape !=
            input.shape; pos_weight does not broadcast to the input's shape.
    Example:
        >>> loss_fn = BCEWithLogitsLoss()
        >>> round(loss_fn(np.array([0.0, 1000.0]), np.array([1.0, 0.0])), 6)  # (log 2 + 1000) / 2
        500.346574
        >>> loss_fn.backward().tolist()  # (sigmoid(x) - y) / 2
        [-0.25, 0.5]
    """

    def __init__(self, *, reduction: str = "mean", pos_weight: Any = None) -> None:
        super().__init__(reduction)
        if pos_weight is not None:
            pos_weight = np.array(pos_weight, dtype=np.float64)
            if np.any(pos_weight < 0):
                raise ValueError(
                    f"BCEWithLogitsLoss: pos_weight must be >= 0, got {pos_weight.tolist()}"
                )
        self.pos_weight = pos_weight
        self._input: np.ndarray | None = None
        self._target: np.ndarray | None = None
        self._pos_weight: np.ndarray | None = None

    def forward(self, input: np.ndarray, target: np.ndarray) -> float | np.ndarray:
        input, target = self._check_pair(input, target)
        losses = F.softplus(-input)  # log(1 + exp(-x))
        pos_weight = None
        if self.pos_weight is not None:
            pos_weight = self.pos_weight.astype(input.dtype)
            try:
                broadcast = np.broadcast_shapes(pos_weight.shape, input.shape)
            except ValueError:
                broadcast = None
            if broadcast != input.shape:
                raise ValueError(
                    f"BCEWithLogitsLoss: pos_weight of shape {pos_weight.shape} does not "
                    f"broadcast to the input shape {input.shape}; give one weight per "
                    f"label, shape ({input.shape[-1]},)"
                )
            losses *= 1 + (pos_weight - 1) * target
        one_minus_y = 1 - target
        one_minus_y *= input
        losses += one_minus_y  # + (1 - y) x
        self._input, self._target, self._pos_weight = input, target, pos_weight
        return self._reduce(losses)

    def _unreduced_grad(self) -> np.ndarray:
        grad_input = F.sigmoid(self._input)
        if self._pos_weight is None:
            grad_input -= self._target
            return grad_input
        weighted_y = self._pos_weight * self._target
        grad_input *= weighted_y + 1 - self._target
        grad_input -= weighted_y
        return grad_input
