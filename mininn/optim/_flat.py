"""The flat buffers behind :mod:`mininn.optim` (private plumbing).

Speed: one flat buffer per parameter group and dtype
----------------------------------------------------
At construction an optimizer copies the parameters of each group into one
contiguous buffer per dtype, and *rebinds* every ``Parameter.data`` and
``Parameter.grad`` to a view (a reshaped slice) of the flat data and gradient
buffers; the values are unchanged. The optimizer state (``exp_avg``, ...) lives
in flat buffers of the same layout, so one step is a handful of in-place NumPy
calls over the whole network rather than a Python loop over parameters, and
allocates nothing.

This works because layers read ``p.data`` at every call and accumulate into
``p.grad`` in place (``+=``), and ``Module.load_state_dict`` copies in place.
The caveat: **replacing** ``p.data`` or ``p.grad`` by a new array after the
optimizer was built (``p.grad = g``, or ``Module.to()`` / ``double()``)
detaches the parameter from the optimizer. ``step()`` and ``zero_grad()``
detect this and raise a ``RuntimeError``; cast the model before creating the
optimizer, and write into the arrays (``p.grad[...] = g``) instead.

``state[param]`` is still per parameter, with PyTorch's names; its arrays are
views into the flat state buffers.
"""

from __future__ import annotations

import numpy as np

from mininn.module import Parameter


class _Flat:
    """The parameters of one group with one dtype, stored in one contiguous buffer.

    ``data`` and ``grad`` are 1-D; each parameter's ``.data``/``.grad`` is a view
    of its slice. ``state_buffer(name)`` and ``scratch(name)`` are lazily allocated
    1-D buffers of the same layout (the optimizer state, and temporaries).
    """

    def __init__(self, params: list[Parameter], dtype: np.dtype) -> None:
        self.params = params
        self.offsets = np.cumsum([0] + [p.size for p in params]).tolist()
        self.data = np.empty(self.offsets[-1], dtype=dtype)
        self.grad = np.empty(self.offsets[-1], dtype=dtype)
        for index, param in enumerate(params):
            lo, hi = self.offsets[index], self.offsets[index + 1]
            self.data[lo:hi] = param.data.ravel()
            self.grad[lo:hi] = param.grad.ravel()
            param.data = self.data[lo:hi].reshape(param.shape)
            param.grad = self.grad[lo:hi].reshape(param.shape)
        self._state: dict[str, np.ndarray] = {}
        self._scratch: dict[str, np.ndarray] = {}

    def state_buffer(self, name: str) -> np.ndarray:
        if name not in self._state:
            self._state[name] = np.zeros_like(self.data)
        return self._state[name]

    def scratch(self, name: str) -> np.ndarray:
        if name not in self._scratch:
            self._scratch[name] = np.empty_like(self.data)
        return self._scratch[name]

    def state_view(self, name: str, index: int) -> np.ndarray:
        """Parameter ``index``'s slice of the state buffer ``name``, in its shape."""
        lo, hi = self.offsets[index], self.offsets[index + 1]
        return self.state_buffer(name)[lo:hi].reshape(self.params[index].shape)

    def reset_state(self) -> None:
        """Zero every state buffer: a parameter's first step expects zeros there."""
        for buffer in self._state.values():
            buffer.fill(0)

    def detached(self) -> list[int]:
        """Indices of the parameters whose .data or .grad is no longer a view of ours."""
        return [
            index
            for index, p in enumerate(self.params)
            if getattr(p.data, "base", None) is not self.data
            or getattr(p._grad, "base", None) is not self.grad
        ]


class _Run:
    """Consecutive trainable parameters of a :class:`_Flat` that share their step
    count, updated together: ``param``, ``grad`` and ``state(name)`` are 1-D views."""

    def __init__(self, flat: _Flat, first: int, stop: int, state: dict) -> None:
        self._flat = flat
        self._state = state
        self.params = flat.params[first:stop]
        self._first = first
        self._lo, self._hi = flat.offsets[first], flat.offsets[stop]
        self.param = flat.data[self._lo : self._hi]
        self.grad = flat.grad[self._lo : self._hi]
        # Empty per-parameter state: this is the parameters' first step.
        self.is_first_step = not state[self.params[0]]

    def state(self, name: str) -> np.ndarray:
        """The state buffer ``name`` (zeros on first use), also exposed per parameter
        as ``optimizer.state[p][name]``."""
        for offset, param in enumerate(self.params):
            per_param = self._state[param]
            if name not in per_param:
                per_param[name] = self._flat.state_view(name, self._first + offset)
        return self._flat.state_buffer(name)[self._lo : self._hi]

    def scratch(self, name: str) -> np.ndarray:
        return self._flat.scratch(name)[self._lo : self._hi]

    def increment_step(self) -> int:
        """t ← t + 1 for every parameter of the run; returns the new t."""
        for param in self.params:
            per_param = self._state[param]
            per_param["step"] = per_param.get("step", 0) + 1
        return self._state[self.params[0]]["step"]

    def effective_grad(self, maximize: bool, weight_decay: float) -> np.ndarray:
        """g ← ±grad + weight_decay · param (L2 penalty), in a scratch buffer when it
        differs from grad: the parameters' .grad is never written."""
        if not maximize and weight_decay == 0:
            return self.grad
        g = self.scratch("grad")
        if weight_decay != 0:
            np.multiply(self.param, weight_decay, out=g)
            if maximize:
                g -= self.grad
            else:
                g += self.grad
        else:
            np.negative(self.grad, out=g)
        return g


def _lerp_(start: np.ndarray, end: np.ndarray, weight: float, tmp: np.ndarray) -> None:
    """start ← start + weight · (end − start), in place, as ``torch.lerp_`` computes it
    (``end − (end − start) · (1 − weight)`` when weight ≥ 0.5)."""
    np.subtract(end, start, out=tmp)
    if abs(weight) < 0.5:
        tmp *= weight
        start += tmp
    else:
        tmp *= 1 - weight
        np.subtract(end, tmp, out=start)
