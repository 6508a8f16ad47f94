"""Check hand-written backward passes against central differences.

:func:`gradcheck` compares a Module's ``backward`` (dL/dx and dL/dparameter,
for every parameter) with numeric derivatives of the probe loss
L = sum(module(x) * R), where R is a fixed random array: not ones, because an
all-ones upstream makes the input gradient of Softmax and BatchNorm1d
identically zero and would hide bugs. :func:`gradcheck_loss` does the same for
a loss. Everything runs in float64, where central differences with eps=1e-6
are accurate to about 1e-9 relative.

Repeatable forwards: the module stays in its mode (``train()`` or ``eval()``),
and before each forward the state of the package generator and of every
sub-module's own generator (e.g. ``Dropout(rng=...)``) is restored, so Dropout
draws the same mask every time. Buffers (BatchNorm1d's running statistics)
and the parameters' ``.grad`` are restored afterwards, as is the generator
state: a check has no side effect on later training.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from mininn._rng import default_rng
from mininn.module import Module

__all__ = ["GradcheckError", "GradcheckResult", "gradcheck", "gradcheck_loss", "numerical_grad"]


class GradcheckError(RuntimeError):
    """Raised by :func:`gradcheck`/:func:`gradcheck_loss` when a gradient disagrees."""


@dataclass
class GradcheckResult:
    """The outcome of a gradient check; true when every gradient agrees.

    Attributes:
        ok: every analytic gradient is within ``atol + rtol * |numeric|``.
        name: where the worst mismatch is (``"input"`` or a parameter name such
            as ``"weight"``, ``"0.bias"``).
        index: the element of that array.
        analytic, numeric: the two values there.
        checked: the names of every array checked.
    """

    ok: bool
    name: str
    index: tuple[int, ...]
    analytic: float
    numeric: float
    checked: tuple[str, ...]

    def __bool__(self) -> bool:
        return self.ok

    def report(self) -> str:
        verdict = "gradients agree" if self.ok else "gradient mismatch"
        return (
            f"{verdict}; worst at {self.name}{list(self.index)}: analytic {self.analytic:.10g}, "
            f"numeric {self.numeric:.10g} (checked: {', '.join(self.checked)})"
        )


def _require_float64(array: Any, name: str, where: str) -> None:
    if not isinstance(array, np.ndarray) or array.dtype != np.float64:
        kind = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
        raise TypeError(
            f"{where}: {name} must be a float64 ndarray (central differences need the "
            f"precision), got {kind}; use x.astype(np.float64) and module.double()"
        )


def _numerical_grad_inplace(f: Callable[[], float], array: np.ndarray, eps: float) -> np.ndarray:
    """d f() / d array by central differences, perturbing ``array`` in place (restored)."""
    grad = np.empty_like(array)
    for index in np.ndindex(array.shape):  # indices, not a flat view: any memory layout
        original = array[index]
        array[index] = original + eps
        plus = f()
        array[index] = original - eps
        minus = f()
        array[index] = original
        grad[index] = (plus - minus) / (2 * eps)
    return grad


def numerical_grad(
    f: Callable[[np.ndarray], float], x: np.ndarray, eps: float = 1e-6
) -> np.ndarray:
    """Return df/dx by central differences: (f(x + eps e_i) - f(x - eps e_i)) / (2 eps).

    Args:
        f: a scalar function of an array of ``x``'s shape.
        x: the point, float64 (not modified: ``f`` sees a perturbed copy).
        eps: the step, > 0. Default: 1e-6.
    Returns:
        An array of ``x``'s shape, float64.
    Raises:
        TypeError: ``x`` is not a float64 ndarray.
        ValueError: ``eps`` is not positive.
    Example:
        >>> g = numerical_grad(lambda v: float(np.sum(v**2)), np.array([1.0, -2.0]))
        >>> np.allclose(g, [2.0, -4.0])
        True
    """
    _require_float64(x, "x", "numerical_grad")
    if not eps > 0:
        raise ValueError(f"numerical_grad: eps must be > 0, got {eps!r}")
    point = np.array(x, copy=True, order="C")
    return _numerical_grad_inplace(lambda: float(f(point)), point, eps)


def _generators(module: Module) -> list[np.random.Generator]:
    found = [default_rng()]
    for sub in module.modules():
        rng = sub.__dict__.get("_rng")
        if isinstance(rng, np.random.Generator) and all(rng is not g for g in found):
            found.append(rng)
    return found


def _compare(
    pairs: list[tuple[str, np.ndarray, np.ndarray]], rtol: float, atol: float
) -> GradcheckResult:
    worst = None
    for name, analytic, numeric in pairs:
        excess = np.abs(analytic - numeric) - (atol + rtol * np.abs(numeric))
        index = np.unravel_index(int(np.argmax(excess)), excess.shape) if excess.size else ()
        value = float(excess[index]) if excess.size else -np.inf
        if worst is None or value > worst[0]:
            worst = (value, name, tuple(int(i) for i in index), analytic, numeric)
    value, name, index, analytic, numeric = worst
    return GradcheckResult(
        ok=value <= 0,
        name=name,
        index=index,
        analytic=float(analytic[index]) if analytic.size else 0.0,
        numeric=float(numeric[index]) if numeric.size else 0.0,
        checked=tuple(name for name, _, _ in pairs),
    )


def _check_tolerances(eps: float, rtol: float, atol: float, where: str) -> None:
    if not eps > 0 or rtol < 0 or atol < 0:
        raise ValueError(
            f"{where}: expected eps > 0, rtol >= 0, atol >= 0, got {eps=}, {rtol=}, {atol=}"
        )


def gradcheck(
    module: Module,
    x: np.ndarray,
    *,
    grad_output: np.ndarray | None = None,
    seed: int = 0,
    eps: float = 1e-6,
    rtol: float = 1e-5,
    atol: float = 1e-7,
    raise_exception: bool = True,
) -> GradcheckResult:
    """Check ``module.backward`` for the input and every parameter against central differences.

    The probe loss is L = sum(module(x) * R); ``backward(R)`` must return dL/dx
    and add dL/dp to each ``p.grad``. Parameters with ``requires_grad=False``
    are skipped. See the module docstring for how forwards are made repeatable.

    Args:
        module: the Module to check, in the mode to check it in; float64 parameters.
        x: the input, float64 (not modified).
        grad_output: R, shape of the output. Default: None (standard normal, from ``seed``).
        seed: seeds R when ``grad_output`` is None. Default: 0.
        eps: the finite-difference step. Default: 1e-6.
        rtol, atol: an element passes when |analytic - numeric| ≤ atol + rtol·|numeric|.
            Defaults: 1e-5, 1e-7.
        raise_exception: raise on a mismatch instead of returning a false result.
            Default: True.
    Returns:
        A :class:`GradcheckResult` (truthy when all agree) naming the worst element.
    Raises:
        TypeError: ``x`` or a parameter is not float64.
        ValueError: bad tolerances; ``grad_output`` of the wrong shape.
        GradcheckError: a mismatch, with ``raise_exception``.
    Example:
        >>> from mininn.layers import Linear
        >>> bool(gradcheck(Linear(3, 2, dtype=np.float64), np.ones((4, 3))))
        True
    """
    _check_tolerances(eps, rtol, atol, "gradcheck")
    _require_float64(x, "x", "gradcheck")
    params = [(name, p) for name, p in module.named_parameters() if p.requires_grad]
    for name, param in params:
        _require_float64(param.data, f"parameter {name!r}", "gradcheck")
    generators = _generators(module)
    rng_states = [g.bit_generator.state for g in generators]
    buffers = [(b, np.array(b, copy=True)) for b in module.buffers() if isinstance(b, np.ndarray)]
    saved_grads = [p.grad.copy() for _, p in params]
    point = np.array(x, copy=True, order="C")

    def forward() -> np.ndarray:
        for g, state in zip(generators, rng_states, strict=True):
            g.bit_generator.state = state
        return module(point)

    try:
        y = forward()
        if grad_output is None:
            probe = np.random.default_rng(seed).standard_normal(np.shape(y))
        else:
            probe = np.asarray(grad_output, dtype=np.float64)
            if probe.shape != np.shape(y):
                raise ValueError(
                    f"gradcheck: grad_output has shape {probe.shape}, the output has {np.shape(y)}"
                )
        for _, p in params:
            p.grad.fill(0)
        grad_input = module.backward(probe)
        pairs = [("input", np.asarray(grad_input, dtype=np.float64), None)]
        pairs += [(name, p.grad.copy(), None) for name, p in params]

        def probe_loss() -> float:
            return float(np.sum(forward() * probe))

        arrays = [point] + [p.data for _, p in params]
        pairs = [
            (name, analytic, _numerical_grad_inplace(probe_loss, array, eps))
            for (name, analytic, _), array in zip(pairs, arrays, strict=True)
        ]
        forward()  # leave the caches as they were for the unperturbed input
    finally:
        for (_, p), grad in zip(params, saved_grads, strict=True):
            p.grad[...] = grad
        for buffer, value in buffers:
            buffer[...] = value
        for g, state in zip(generators, rng_states, strict=True):
            g.bit_generator.state = state
    result = _compare(pairs, rtol, atol)
    if not result.ok and raise_exception:
        raise GradcheckError(f"gradcheck({type(module).__name__}): {result.report()}")
    return result


def gradcheck_loss(
    loss_fn: Module,
    input: np.ndarray,
    target: np.ndarray,
    *,
    grad_output: np.ndarray | None = None,
    seed: int = 0,
    eps: float = 1e-6,
    rtol: float = 1e-5,
    atol: float = 1e-7,
    raise_exception: bool = True,
) -> GradcheckResult:
    """Check ``loss_fn.backward()`` against central differences of the loss w.r.t. ``input``.

    For ``reduction='mean'``/``'sum'`` the checked function is the loss itself
    and ``backward()`` is called without an argument; for ``'none'`` it is
    sum(losses * R) with R random (or ``grad_output``), and ``backward(R)``.

    Args:
        loss_fn: a loss from :mod:`mininn.losses`.
        input: float64 (not modified).  target: as the loss expects.
        grad_output, seed, eps, rtol, atol, raise_exception: as :func:`gradcheck`.
    Returns:
        A :class:`GradcheckResult` for ``"input"``.
    Raises:
        TypeError: ``input`` is not float64.
        ValueError: bad tolerances; ``grad_output`` of the wrong shape.
        GradcheckError: a mismatch, with ``raise_exception``.
    Example:
        >>> from mininn.losses import CrossEntropyLoss
        >>> x = np.random.default_rng(0).normal(size=(4, 3))
        >>> bool(gradcheck_loss(CrossEntropyLoss(), x, np.array([0, 2, 1, 2])))
        True
    """
    _check_tolerances(eps, rtol, atol, "gradcheck_loss")
    _require_float64(input, "input", "gradcheck_loss")
    point = np.array(input, copy=True, order="C")
    losses = loss_fn(point, target)
    probe = None
    if np.ndim(losses) > 0:
        if grad_output is None:
            probe = np.random.default_rng(seed).standard_normal(np.shape(losses))
        else:
            probe = np.asarray(grad_output, dtype=np.float64)
    analytic = np.asarray(loss_fn.backward(probe), dtype=np.float64)

    def value() -> float:
        out = loss_fn(point, target)
        return float(out) if probe is None else float(np.sum(out * probe))

    numeric = _numerical_grad_inplace(value, point, eps)
    loss_fn(point, target)  # leave the caches for the unperturbed input
    result = _compare([("input", analytic, numeric)], rtol, atol)
    if not result.ok and raise_exception:
        raise GradcheckError(f"gradcheck_loss({type(loss_fn).__name__}): {result.report()}")
    return result
