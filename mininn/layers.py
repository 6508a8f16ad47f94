"""Layers with (or around) parameters: Linear, BatchNorm1d, Dropout, Identity.

Each class keeps its forward pass and its backward pass side by side.
``forward(x)`` caches what the backward pass needs (listed under "Caches:");
``backward(grad_output)`` returns dL/dx and *adds* dL/dparameter to each
parameter's ``.grad``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from mininn import init as _init
from mininn._rng import as_generator, default_rng
from mininn.module import Module, Parameter, _check_grad_output, _float_dtype

__all__ = ["BatchNorm1d", "Dropout", "Identity", "Linear"]

# Names accepted by Linear(init=...): each calls the mininn.init function with its defaults.
_INIT_BY_NAME: dict[str, Callable[..., Any]] = {
    "kaiming_uniform": _init.kaiming_uniform_,
    "kaiming_normal": _init.kaiming_normal_,
    "xavier_uniform": _init.xavier_uniform_,
    "xavier_normal": _init.xavier_normal_,
}


def _check_positive_int(value: Any, name: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{where}: {name} must be a positive integer, got {value!r}")
    return int(value)


def _check_2d(x: Any, features: int, where: str) -> None:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{where}: expected a numpy.ndarray input, got {type(x).__name__}")
    if x.ndim != 2 or x.shape[1] != features:
        raise ValueError(
            f"{where}: expected input of shape (N, {features}), got {x.shape}; "
            "flatten each sample first, e.g. x.reshape(len(x), -1)"
        )


def _check_dtype(x: np.ndarray, reference: np.ndarray | None, where: str) -> None:
    # A float64 input to float32 weights would silently upcast the whole network.
    if reference is not None and x.dtype != reference.dtype:
        raise TypeError(
            f"{where}: input dtype {x.dtype} differs from the layer's dtype {reference.dtype}; "
            f"cast the input with x.astype(np.{reference.dtype}) or the model with .to(...)"
        )


def _backward_before_forward(module: Module) -> RuntimeError:
    return RuntimeError(f"{type(module).__name__}.backward() called before forward()")


class Linear(Module):
    """Apply an affine map: y = x @ weight.T + bias.

    Args:
        in_features: size of each input sample, ≥ 1.
        out_features: size of each output sample, ≥ 1.
        bias: learn an additive bias. Default: True.
        init: how to initialise ``weight`` explicitly. Default: None, PyTorch's
            default (see :meth:`reset_parameters`), which a
            :class:`~mininn.Sequential` may then replace by its activation-aware
            choice. Either a name, ``"kaiming_uniform"``, ``"kaiming_normal"``
            (gain sqrt(2), for ReLU), ``"xavier_uniform"``, ``"xavier_normal"``
            (gain 1), which calls the :mod:`mininn.init` function of that name
            with its defaults; or a callable applied to the weight Parameter, e.g.
            ``functools.partial(mininn.init.kaiming_normal_, nonlinearity="relu")``.
            Either way the weight is marked as explicitly initialised, so
            Sequential leaves it alone, and the bias is set to 0 (as the
            activation-aware default does).
        dtype: float32 or float64. Default: None (float32).
    Shape:
        - Input: (N, in_features), float32 or float64, the weight's dtype.
        - Output: (N, out_features), same dtype.
    Attributes:
        weight: Parameter (out_features, in_features).
        bias: Parameter (out_features,), or None when ``bias=False``.
    Caches: _x (the input, for weight.grad).
    Raises:
        ValueError: a size is not a positive integer; an unknown ``init`` name;
            the input is not (N, in_features).
        TypeError: ``init`` is neither a name nor a callable; the input is not an
            ndarray of the weight's dtype.
    Example:
        >>> layer = Linear(4, 3, dtype=np.float64)
        >>> y = layer(np.ones((2, 4)))
        >>> y.shape, layer.backward(np.ones_like(y)).shape, layer.weight.grad.shape
        ((2, 3), (2, 4), (3, 4))
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        init: str | Callable[[Parameter], Any] | None = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        self.in_features = _check_positive_int(in_features, "in_features", "Linear")
        self.out_features = _check_positive_int(out_features, "out_features", "Linear")
        dtype = _float_dtype(dtype)
        self.weight = Parameter(np.empty((self.out_features, self.in_features), dtype=dtype))
        self.bias = Parameter(np.empty(self.out_features, dtype=dtype)) if bias else None
        self._x: np.ndarray | None = None
        self.reset_parameters()
        if init is not None:
            self._apply_init(init)

    def _apply_init(self, init: str | Callable[[Parameter], Any]) -> None:
        if isinstance(init, str):
            if init not in _INIT_BY_NAME:
                raise ValueError(
                    f"Linear: unknown init {init!r}; expected one of {sorted(_INIT_BY_NAME)} "
                    "or a callable such as functools.partial(mininn.init.kaiming_normal_, ...)"
                )
            init = _INIT_BY_NAME[init]
        elif not callable(init):
            raise TypeError(
                f"Linear: init must be a name or a callable taking the weight Parameter, "
                f"got {type(init).__name__}"
            )
        init(self.weight)
        self.weight._explicit_init = True  # also when the callable is not from mininn.init
        if self.bias is not None:
            self.bias.data.fill(0)

    def reset_parameters(self) -> None:
        """Draw weight and bias from U(-1/sqrt(in_features), 1/sqrt(in_features)).

        This is PyTorch's default (``kaiming_uniform_(weight, a=sqrt(5))`` gives the
        same bound). Draws come from the package generator
        (:func:`mininn.manual_seed`); the weight is *not* marked explicitly
        initialised, so a Sequential may still apply its activation-aware default.
        """
        bound = 1.0 / math.sqrt(self.in_features)
        rng = default_rng()
        self.weight.data[...] = rng.uniform(-bound, bound, size=self.weight.shape)
        if self.bias is not None:
            self.bias.data[...] = rng.uniform(-bound, bound, size=self.bias.shape)

    def forward(self, x: np.ndarray) -> np.ndarray:
        _check_2d(x, self.in_features, "Linear")
        weight, bias = self.weight, self.bias  # one registry lookup each
        _check_dtype(x, weight.data, "Linear")
        y = x @ weight.data.T
        if bias is not None:
            y += bias.data  # in place on the fresh matmul output
        self._x = x
        return y

    def backward(self, grad_output: np.ndarray, *, input_grad: bool = True) -> np.ndarray | None:
        """Add dL/dweight = grad_output.T @ x and dL/dbias = sum_n grad_output to the
        parameters' ``.grad``; return dL/dx = grad_output @ weight.

        Args:
            grad_output: dL/dy, shape (N, out_features), the layer's dtype.
            input_grad: compute and return dL/dx. Default: True. False skips that
                product (a third of the layer's backward work) and returns None: for
                a first layer, whose input is data (PyTorch skips it too, because the
                input tensor has ``requires_grad=False``).
        Returns:
            dL/dx, shape (N, in_features); None when ``input_grad`` is False.
        Raises:
            RuntimeError: called before forward().
            ValueError: grad_output's shape is not the last output's, (N, out_features).
        """
        # dL/dW = g^T x, dL/db = sum_n g, dL/dx = g W
        x, weight, bias = self._x, self.weight, self.bias
        if x is None:
            raise _backward_before_forward(self)
        _check_grad_output(self, grad_output, (x.shape[0], self.out_features))
        if weight.requires_grad:
            weight.grad += grad_output.T @ x
        if bias is not None and bias.requires_grad:
            bias.grad += grad_output.sum(axis=0)
        if not input_grad:
            return None
        return grad_output @ weight.data

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )


class BatchNorm1d(Module):
    """Normalise each feature over the batch, then scale and shift:
    y = (x - E[x]) / sqrt(Var[x] + eps) * weight + bias.

    In training mode E[x] and Var[x] are the batch mean and the *biased* batch
    variance, and the running estimates are updated with the *unbiased* one:
    running = (1 - momentum) * running + momentum * batch. In eval mode the
    running estimates are used (when ``track_running_stats``; otherwise the
    batch statistics are used in both modes, as PyTorch does).

    Args:
        num_features: C, the number of features per sample, ≥ 1.
        eps: added to the variance for numerical stability, > 0. Default: 1e-5.
        momentum: weight of the current batch in the running estimates, in
            [0, 1]; None gives the cumulative moving average (weight
            1 / num_batches_tracked). Default: 0.1.
        affine: learn ``weight`` and ``bias``. Default: True.
        track_running_stats: keep running estimates (buffers). Default: True.
        bias: with ``affine``, learn ``bias`` too (PyTorch 2.x's keyword).
            Default: True.
        dtype: float32 or float64. Default: None (float32).
    Shape:
        - Input: (N, C), float32 or float64, with N > 1 when batch statistics are used.
        - Output: (N, C), same dtype as the input.
    Attributes:
        weight: Parameter (C,), initialised to 1 (None without ``affine``).
        bias: Parameter (C,), initialised to 0 (None without ``affine``/``bias``).
        running_mean, running_var: buffers (C,), initialised to 0 and 1.
        num_batches_tracked: buffer, an int64 0-d array, batches seen in training.
    Caches: _x_hat (normalised input), _inv_std (1 / sqrt(var + eps)), _batch_stats
        (whether the batch statistics were used, which selects the backward formula).
    Raises:
        ValueError: a bad hyperparameter; input not (N, C); N == 1 with batch statistics.
        TypeError: the input is not an ndarray of the layer's dtype.
    References: Ioffe & Szegedy (2015), "Batch Normalization: Accelerating Deep
        Network Training by Reducing Internal Covariate Shift",
        https://arxiv.org/abs/1502.03167
    Example:
        >>> bn = BatchNorm1d(3, dtype=np.float64)
        >>> y = bn(np.arange(12.0).reshape(4, 3))
        >>> y.mean(axis=0).round(6).tolist(), bn.running_mean.tolist()
        ([0.0, 0.0, 0.0], [0.45, 0.55, 0.65])
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        *,
        bias: bool = True,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        self.num_features = _check_positive_int(num_features, "num_features", "BatchNorm1d")
        if not eps > 0:
            raise ValueError(f"BatchNorm1d: eps must be > 0, got {eps!r}")
        if momentum is not None and not 0 <= momentum <= 1:
            raise ValueError(
                f"BatchNorm1d: momentum must be in [0, 1] or None (cumulative average), "
                f"got {momentum!r}"
            )
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        dtype = _float_dtype(dtype)
        C = self.num_features
        self.weight = Parameter(np.ones(C, dtype=dtype)) if affine else None
        self.bias = Parameter(np.zeros(C, dtype=dtype)) if affine and bias else None
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(C, dtype=dtype))
            self.register_buffer("running_var", np.ones(C, dtype=dtype))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        else:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(name, None)
        self._x_hat: np.ndarray | None = None
        self._inv_std: np.ndarray | None = None
        self._batch_stats = True

    def forward(self, x: np.ndarray) -> np.ndarray:
        _check_2d(x, self.num_features, "BatchNorm1d")
        weight, bias = self.weight, self.bias  # one registry lookup each
        _check_dtype(x, self.running_mean if weight is None else weight.data, "BatchNorm1d")
        use_batch_stats = self.training or not self.track_running_stats
        N = x.shape[0]
        if use_batch_stats:
            if N <= 1:
                raise ValueError(
                    "BatchNorm1d: Expected more than 1 value per channel when training, "
                    f"got input size {x.shape}; use a batch of 2 or more, or call .eval()"
                )
            mean = x.sum(axis=0) / N  # x.mean's arithmetic, without its overhead
            x_hat = x - mean
            var = np.einsum("nc,nc->c", x_hat, x_hat) / N  # biased, normalises the batch
            if self.training and self.track_running_stats:
                self._update_running_stats(mean, var, N)
        else:
            mean, var = self.running_mean, self.running_var
            x_hat = x - mean
        inv_std = var + self.eps
        np.sqrt(inv_std, out=inv_std)
        np.reciprocal(inv_std, out=inv_std)
        x_hat *= inv_std
        self._x_hat, self._inv_std, self._batch_stats = x_hat, inv_std, use_batch_stats
        if weight is None:
            return x_hat.copy()  # x_hat is cached for backward: do not hand it out
        y = x_hat * weight.data
        if bias is not None:
            y += bias.data
        return y

    def _update_running_stats(self, mean: np.ndarray, var: np.ndarray, N: int) -> None:
        # The buffers are read from the registry once: each attribute access of a
        # buffer goes through Module.__getattr__.
        buffers = self._buffers
        running_mean, running_var = buffers["running_mean"], buffers["running_var"]
        buffers["num_batches_tracked"] += 1  # in place on the 0-d buffer
        if self.momentum is None:
            factor = 1.0 / float(buffers["num_batches_tracked"])
        else:
            factor = self.momentum
        running_mean *= 1 - factor
        running_mean += factor * mean
        running_var *= 1 - factor
        running_var += (factor * N / (N - 1)) * var  # unbiased, as PyTorch

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        if self._x_hat is None:
            raise _backward_before_forward(self)
        _check_grad_output(self, grad_output, self._x_hat.shape)
        g, x_hat, weight, bias = grad_output, self._x_hat, self.weight, self.bias
        sum_g = g.sum(axis=0)
        sum_g_x_hat = np.einsum("nc,nc->c", g, x_hat)
        if weight is not None and weight.requires_grad:
            weight.grad += sum_g_x_hat
        if bias is not None and bias.requires_grad:
            bias.grad += sum_g
        scale = self._inv_std if weight is None else self._inv_std * weight.data
        if not self._batch_stats:
            return g * scale  # eval mode: a fixed affine map of x
        # Batch statistics depend on x too:
        # dx = weight * inv_std * (g - mean(g) - x_hat * mean(g * x_hat))
        N = g.shape[0]
        grad_input = x_hat * (sum_g_x_hat / N)
        np.subtract(g, grad_input, out=grad_input)
        grad_input -= sum_g / N
        grad_input *= scale
        return grad_input

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, bias={self.bias is not None}, "
            f"track_running_stats={self.track_running_stats}"
        )


class Dropout(Module):
    """Zero each element with probability p in training and scale the rest:
    y = x * mask / (1 - p), mask ~ Bernoulli(1 - p).

    Inverted dropout: the scaling happens at training time, so eval mode is
    the identity. ``p == 0`` is the identity, ``p == 1`` gives zeros.

    Args:
        p: probability of zeroing an element, in [0, 1]. Default: 0.5.
        rng: where the masks come from: a ``numpy.random.Generator``, an int seed
            (a Generator is made from it once, here), or None for the package
            generator that :func:`mininn.manual_seed` seeds, looked up at each call.
            Default: None.
    Shape:
        - Input: any shape, float32 or float64.
        - Output: same shape and dtype as the input.
    Caches: _mask (the mask already scaled by 1 / (1 - p); None when the layer is
        the identity).
    Raises:
        TypeError: ``p`` is not a number; ``rng`` is not a Generator, int or None.
        ValueError: ``p`` outside [0, 1].
    References: Srivastava et al. (2014), "Dropout: A Simple Way to Prevent Neural
        Networks from Overfitting", JMLR 15(56).
    Example:
        >>> drop = Dropout(0.5, rng=0)
        >>> y = drop(np.ones((2, 4)))
        >>> sorted(set(y.ravel().tolist())) == [0.0, 2.0], drop.eval()(np.ones(2)).tolist()
        (True, [1.0, 1.0])
    """

    def __init__(self, p: float = 0.5, *, rng: np.random.Generator | int | None = None) -> None:
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float, np.floating, np.integer)):
            raise TypeError(f"Dropout: p must be a number in [0, 1], got {type(p).__name__}")
        if not 0 <= p <= 1:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p = p
        self._rng = None if rng is None else as_generator(rng)
        self._mask: np.ndarray | None = None
        self._called = False

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._called = True
        if not self.training or self.p == 0:
            self._mask = None
            return x  # as PyTorch: the identity hands back its input
        if self.p == 1:
            self._mask = np.zeros_like(x)
            return np.zeros_like(x)
        rng = self._rng if self._rng is not None else default_rng()
        draw_dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float64
        keep = rng.random(x.shape, dtype=draw_dtype) >= self.p
        self._mask = keep.astype(x.dtype)  # one cast, then a plain float loop
        self._mask *= 1.0 / (1.0 - self.p)
        return x * self._mask

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        if not self._called:
            raise _backward_before_forward(self)
        if self._mask is None:
            return grad_output
        _check_grad_output(self, grad_output, self._mask.shape)
        return grad_output * self._mask

    def extra_repr(self) -> str:
        # PyTorch prints inplace; mininn's Dropout never works in place.
        return f"p={self.p}, inplace=False"


class Identity(Module):
    """Return the input unchanged: y = x (a placeholder, as ``torch.nn.Identity``).

    Shape:
        - Input: any shape and dtype.  - Output: the same array.
    Example:
        >>> Identity()(np.arange(3)).tolist()
        [0, 1, 2]
    """

    def __init__(self) -> None:
        super().__init__()
        self._called = False

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._called = True
        return x

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        if not self._called:
            raise _backward_before_forward(self)
        return grad_output
