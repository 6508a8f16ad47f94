"""Elementwise activations and Softmax, each forward next to its backward.

All are stable for inputs of any magnitude (no overflow at |x| = 1000), keep
the input's dtype, and have no parameters. Each caches what its derivative
needs: a boolean mask (ReLU, LeakyReLU) or the output (Sigmoid, Tanh, Softmax),
whose derivatives are cheapest written in terms of y.
"""

from __future__ import annotations

import numpy as np

from mininn import functional as F
from mininn.module import Module, _check_grad_output

__all__ = ["LeakyReLU", "ReLU", "Sigmoid", "Softmax", "Tanh"]


def _backward_before_forward(module: Module) -> RuntimeError:
    return RuntimeError(f"{type(module).__name__}.backward() called before forward()")


class ReLU(Module):
    """Apply the rectified linear unit: y = max(x, 0).

    The derivative is 1 for x > 0 and 0 for x ≤ 0 (0 at x = 0, as PyTorch).

    Shape:
        - Input: any shape, float32 or float64.  - Output: same shape and dtype.
    Caches: _mask (x > 0, as 1.0/0.0 in x's dtype).
    Example:
        >>> relu = ReLU()
        >>> relu(np.array([-1.0, 0.0, 2.0])).tolist(), relu.backward(np.ones(3)).tolist()
        ([0.0, 0.0, 2.0], [0.0, 0.0, 1.0])
    """

    def __init__(self) -> None:
        super().__init__()
        self._mask: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        # A float mask: multiplying by a boolean one casts each element (2x slower).
        self._mask = (x > 0).astype(x.dtype)
        # Against a row of zeros NumPy takes its contiguous SIMD loop; against the
        # scalar 0 a slower one (2x here).
        return np.maximum(x, np.zeros(x.shape[-1:], dtype=x.dtype))

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        if self._mask is None:
            raise _backward_before_forward(self)
        _check_grad_output(self, grad_output, self._mask.shape)
        return np.multiply(grad_output, self._mask)


class LeakyReLU(Module):
    """Apply y = x for x > 0 and y = negative_slope * x otherwise.

    Args:
        negative_slope: the slope for x ≤ 0 (any real; usually in [0, 1)). Default: 0.01.
    Shape:
        - Input: any shape, float32 or float64.  - Output: same shape and dtype.
    Caches: _mask (x > 0, boolean); the derivative at x = 0 is negative_slope, as PyTorch.
    Raises:
        TypeError: ``negative_slope`` is not a real number.
    References: Maas et al. (2013), "Rectifier Nonlinearities Improve Neural Network
        Acoustic Models", ICML Workshop on Deep Learning for Audio, Speech and Language.
    Example:
        >>> act = LeakyReLU(0.1)
        >>> act(np.array([-2.0, 3.0])).tolist(), act.backward(np.ones(2)).tolist()
        ([-0.2, 3.0], [0.1, 1.0])
    """

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        if isinstance(negative_slope, bool) or not isinstance(
            negative_slope, (int, float, np.floating, np.integer)
        ):
            raise TypeError(
                f"LeakyReLU: negative_slope must be a real number, got {negative_slope!r}"
            )
        self.negative_slope = negative_slope
        self._mask: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._mask = x > 0
        y = x * self.negative_slope
        np.copyto(y, x, where=self._mask)
        return y

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        if self._mask is None:
            raise _backward_before_forward(self)
        _check_grad_output(self, grad_output, self._mask.shape)
        grad_input = grad_output * self.negative_slope
        np.copyto(grad_input, grad_output, where=self._mask)
        return grad_input

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class Sigmoid(Module):
    """Apply the logistic function: y = 1 / (1 + exp(-x)); dy/dx = y (1 - y).

    Computed split by sign (:func:`mininn.functional.sigmoid`), so |x| = 1000 is fine.

    Shape:
        - Input: any shape, float32 or float64.  - Output: same shape and dtype, in [0, 1].
    Caches: _y (the output).
    Example:
        >>> act = Sigmoid()
        >>> act(np.array([0.0])).tolist(), act.backward(np.ones(1)).tolist()
        ([0.5], [0.25])
    """

    def __init__(self) -> None:
        super().__init__()
        self._y: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._y = F.sigmoid(x)
        return self._y.copy()  # _y is cached: the caller may modify what it gets

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        if self._y is None:
            raise _backward_before_forward(self)
        _check_grad_output(self, grad_output, self._y.shape)
        grad_input = 1 - self._y
        grad_input *= self._y
        grad_input *= grad_output
        return grad_input


class Tanh(Module):
    """Apply the hyperbolic tangent: y = tanh(x); dy/dx = 1 - y².

    Shape:
        - Input: any shape, float32 or float64.  - Output: same shape and dtype, in [-1, 1].
    Caches: _y (the output).
    Example:
        >>> act = Tanh()
        >>> act(np.array([0.0])).tolist(), act.backward(np.ones(1)).tolist()
        ([0.0], [1.0])
    """

    def __init__(self) -> None:
        super().__init__()
        self._y: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._y = np.tanh(x)
        return self._y.copy()

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        if self._y is None:
            raise _backward_before_forward(self)
        _check_grad_output(self, grad_output, self._y.shape)
        grad_input = self._y * self._y
        np.subtract(1, grad_input, out=grad_input)
        grad_input *= grad_output
        return grad_input


class Softmax(Module):
    """Rescale along ``dim`` to probabilities: y_i = exp(x_i) / sum_j exp(x_j).

    Computed after shifting by the maximum, so |x| = 1000 is fine. The backward
    pass is the Jacobian-vector product y * (g - sum(g * y, dim)). To train a
    classifier, give logits to :class:`~mininn.losses.CrossEntropyLoss` instead:
    it fuses log-softmax with the loss.

    Args:
        dim: the dimension that sums to 1. Default: -1.
    Shape:
        - Input: any shape with ``dim`` in range, float32 or float64.
        - Output: same shape and dtype.
    Caches: _y (the output).
    Raises:
        TypeError: ``dim`` is not an int.
        ValueError: ``dim`` is out of range for the input.
    Example:
        >>> act = Softmax(dim=1)
        >>> act(np.zeros((1, 4))).tolist()
        [[0.25, 0.25, 0.25, 0.25]]
    """

    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
            raise TypeError(f"Softmax: dim must be an int, got {dim!r}")
        self.dim = int(dim)
        self._y: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not -x.ndim <= self.dim < x.ndim:
            raise ValueError(
                f"Softmax: dim={self.dim} is out of range for an input of shape {x.shape} "
                f"(expected dim in [{-x.ndim}, {x.ndim - 1}])"
            )
        self._y = F.softmax(x, self.dim)
        return self._y.copy()

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        if self._y is None:
            raise _backward_before_forward(self)
        _check_grad_output(self, grad_output, self._y.shape)
        y = self._y
        # J^T g for J = diag(y) - y y^T, along dim
        grad_input = grad_output - np.sum(grad_output * y, axis=self.dim, keepdims=True)
        grad_input *= y
        return grad_input

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
