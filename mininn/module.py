"""Parameter and Module: the contract every layer follows.

A layer is a :class:`Module`. ``forward(x)`` computes the output and keeps on
private attributes exactly what the backward pass needs; ``backward(grad_output)``
returns dL/dx (same shape as ``x``) and *accumulates* (``+=``) dL/dparameter into
each parameter's ``.grad``. There is no autograd: the calculus of each layer is
written next to its forward pass.

Parameters, buffers and sub-modules are found by registration, as in
``torch.nn.Module``: assigning a :class:`Parameter` or a :class:`Module` to an
attribute registers it under that name, in insertion order.
"""

from __future__ import annotations

import functools
import inspect
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

DEFAULT_DTYPE = np.float32


def _float_dtype(dtype: Any) -> np.dtype:
    """Resolve a dtype argument (None means the default, float32); only float32/64."""
    resolved = np.dtype(DEFAULT_DTYPE if dtype is None else dtype)
    if resolved not in (np.float32, np.float64):
        raise TypeError(f"expected dtype float32 or float64, got {resolved}")
    return resolved


class Parameter:
    """A trainable array and its gradient, as ``torch.nn.Parameter``.

    Args:
        data: the initial values; copied. A floating ndarray keeps its dtype
            (float32 or float64); anything else becomes ``dtype``.
        requires_grad: optimizers skip a parameter with ``requires_grad=False``
            (that is how a layer is frozen). Default: True.
        dtype: float32 or float64 when ``data`` is not a floating ndarray.
            Default: None (float32).
    Attributes:
        data: ndarray, the values. Layers read it at every call and update it in
            place, so views taken by an optimizer stay valid.
        grad: ndarray of ``data``'s shape and dtype: dL/ddata, summed over the
            backward passes since the last :meth:`zero_grad` (zeros at first).
    Raises:
        TypeError: ``grad`` is assigned something that is not an ndarray (e.g. None:
            call :meth:`zero_grad` instead).
        ValueError: ``grad`` is assigned an ndarray of another shape.
    Note:
        Hashing is by identity (there is no ``__eq__``): optimizers key their
        per-parameter state by the object.
    Example:
        >>> p = Parameter(np.ones((2, 3)))
        >>> p.shape, p.data.dtype, float(p.grad.sum())
        ((2, 3), dtype('float64'), 0.0)
    """

    def __init__(self, data: Any, requires_grad: bool = True, dtype: Any = None) -> None:
        if (
            isinstance(data, np.ndarray)
            and data.dtype in (np.float32, np.float64)
            and dtype is None
        ):
            array = np.array(data, copy=True)
        else:
            array = np.array(data, dtype=_float_dtype(dtype), copy=True)
        self.data: np.ndarray = array
        self._grad: np.ndarray = np.zeros_like(array)
        self.requires_grad = bool(requires_grad)
        # Set by mininn.init when a user initialises this array explicitly, so that
        # Sequential's activation-aware default leaves it alone.
        self._explicit_init = False

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def size(self) -> int:
        return self.data.size

    @property
    def grad(self) -> np.ndarray:
        return self._grad

    @grad.setter
    def grad(self, value: np.ndarray) -> None:
        if not isinstance(value, np.ndarray) or value.shape != self.data.shape:
            got = f"shape {value.shape}" if isinstance(value, np.ndarray) else type(value).__name__
            error = ValueError if isinstance(value, np.ndarray) else TypeError
            raise error(
                f"Parameter.grad must be an ndarray of the parameter's shape {self.data.shape}, "
                f"got {got}; to clear the gradient call zero_grad(), to set it write in place "
                "(p.grad[...] = g)"
            )
        self._grad = value

    def zero_grad(self) -> None:
        """Fill ``grad`` with zeros, in place (``grad`` stays the same array)."""
        self._grad.fill(0)

    def __setstate__(self, state: dict) -> None:
        # Older pickles stored the gradient as "grad", and may carry "_grad_zeroed",
        # a mark that the stored values stood for zeros.
        if "grad" in state:
            state["_grad"] = state.pop("grad")
        if state.pop("_grad_zeroed", False):
            state["_grad"].fill(0)
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return (
            f"Parameter(shape={self.shape}, dtype={self.dtype}, requires_grad={self.requires_grad})"
        )


class Module:
    """Base class of every layer, activation, loss and container.

    Subclasses call ``super().__init__()`` first, then assign their parameters
    (:class:`Parameter`), buffers (:meth:`register_buffer`) and sub-modules.
    They implement ``forward`` and ``backward``; ``__call__`` is ``forward``.

    Attributes:
        training: True in training mode (the default), False after ``eval()``.
            Only Dropout and BatchNorm1d read it.
    Raises:
        AttributeError: a Parameter or Module is assigned before
            ``Module.__init__()`` has run.
    """

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # -- registration -------------------------------------------------------------------

    def __setattr__(self, name: str, value: Any) -> None:
        # Fast path for the caches a layer sets at every call (self._x = x): a name
        # already in __dict__ is in no registry.
        if name in self.__dict__ and not isinstance(value, (Parameter, Module)):
            object.__setattr__(self, name, value)
            return
        registries = self.__dict__.get("_parameters"), self.__dict__.get("_modules")
        if isinstance(value, (Parameter, Module)) and None in registries:
            kind = "parameters" if isinstance(value, Parameter) else "submodules"
            raise AttributeError(f"cannot assign {kind} before Module.__init__() call")
        params = self.__dict__.get("_parameters")
        buffers = self.__dict__.get("_buffers")
        modules = self.__dict__.get("_modules")
        if isinstance(value, Parameter):
            self._discard(name)
            params[name] = value
        elif isinstance(value, Module):
            self._discard(name)
            modules[name] = value
        elif params is not None and name in params:
            if value is not None:
                raise TypeError(
                    f"cannot assign {type(value).__name__} as parameter '{name}' "
                    "(mininn.Parameter or None expected)"
                )
            params[name] = None
        elif buffers is not None and name in buffers:
            buffers[name] = value
        elif modules is not None and name in modules:
            if value is not None:
                raise TypeError(
                    f"cannot assign {type(value).__name__} as child module '{name}' "
                    "(mininn.Module or None expected)"
                )
            modules[name] = None
        else:
            object.__setattr__(self, name, value)

    def _discard(self, name: str) -> None:
        self.__dict__.pop(name, None)
        for registry in (self._parameters, self._buffers, self._modules):
            registry.pop(name, None)

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails: registered names live in the registries.
        for registry in ("_parameters", "_buffers", "_modules"):
            values = self.__dict__.get(registry)
            if values is not None and name in values:
                return values[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        for registry in (self._parameters, self._buffers, self._modules):
            if name in registry:
                del registry[name]
                return
        object.__delattr__(self, name)

    def register_buffer(self, name: str, array: np.ndarray | None) -> None:
        """Register ``array`` as a buffer: saved in ``state_dict()``, never returned by
        ``parameters()`` (e.g. BatchNorm1d's running statistics).

        Raises:
            AttributeError: called before ``Module.__init__()``.
            KeyError: ``name`` is empty, contains ".", or is already an attribute.
        """
        if "_buffers" not in self.__dict__:
            raise AttributeError("cannot assign buffer before Module.__init__() call")
        if not name or "." in name:
            raise KeyError(f"buffer name must be a non-empty string without '.', got {name!r}")
        if name in self.__dict__ or name in self._parameters or name in self._modules:
            raise KeyError(f"attribute '{name}' already exists")
        self._buffers[name] = array

    # -- the computation ------------------------------------------------------------------

    def forward(self, *args: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} is missing the required 'forward' method")

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        raise NotImplementedError(
            f"{type(self).__name__} is missing the required 'backward' method"
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    # -- discovery ------------------------------------------------------------------------

    def named_modules(
        self, prefix: str = "", memo: set | None = None
    ) -> Iterator[tuple[str, Module]]:
        """Yield ``(dotted_name, module)`` for this module and every descendant, once each."""
        memo = set() if memo is None else memo
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            if child is not None:
                yield from child.named_modules(f"{prefix}.{name}" if prefix else name, memo)

    def modules(self) -> Iterator[Module]:
        for _, module in self.named_modules():
            yield module

    def named_children(self) -> Iterator[tuple[str, Module]]:
        for name, child in self._modules.items():
            if child is not None:
                yield name, child

    def children(self) -> Iterator[Module]:
        for _, child in self.named_children():
            yield child

    def _named_members(self, registry: str, prefix: str, recurse: bool):
        seen: set[int] = set()
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        for module_prefix, module in modules:
            for name, value in getattr(module, registry).items():
                if value is None or id(value) in seen:
                    continue
                seen.add(id(value))
                yield (f"{module_prefix}.{name}" if module_prefix else name), value

    def named_parameters(
        self, prefix: str = "", recurse: bool = True
    ) -> Iterator[tuple[str, Parameter]]:
        """Yield ``(dotted_name, Parameter)``, e.g. ``("0.weight", ...)``; a Parameter
        shared by two modules is yielded once."""
        yield from self._named_members("_parameters", prefix, recurse)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_buffers(
        self, prefix: str = "", recurse: bool = True
    ) -> Iterator[tuple[str, np.ndarray]]:
        yield from self._named_members("_buffers", prefix, recurse)

    def buffers(self, recurse: bool = True) -> Iterator[np.ndarray]:
        for _, buffer in self.named_buffers(recurse=recurse):
            yield buffer

    def zero_grad(self) -> None:
        """Fill the gradient of every parameter with zeros, in place."""
        for param in self.parameters():
            param.zero_grad()

    # -- mode and dtype ---------------------------------------------------------------------

    def train(self, mode: bool = True) -> Module:
        """Set training mode on this module and every descendant; returns ``self``."""
        if not isinstance(mode, bool):
            raise ValueError(f"training mode is expected to be boolean, got {mode!r}")
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> Module:
        """Set evaluation mode (``train(False)``); returns ``self``."""
        return self.train(False)

    def to(self, dtype: Any) -> Module:
        """Cast every parameter, its gradient and every floating buffer to ``dtype``
        (float32 or float64), in this module and its descendants; returns ``self``.

        Call it before creating an optimizer: the arrays are replaced.
        """
        dtype = _float_dtype(dtype)
        for module in self.modules():
            for param in module._parameters.values():
                if param is not None and param.data.dtype != dtype:
                    param.data = param.data.astype(dtype)
                    param.grad = param.grad.astype(dtype)
            for name, buffer in module._buffers.items():
                if isinstance(buffer, np.ndarray) and buffer.dtype.kind == "f":
                    module._buffers[name] = buffer.astype(dtype)
        return self

    def double(self) -> Module:
        """Cast to float64 (``to(np.float64)``), as ``torch.nn.Module.double``."""
        return self.to(np.float64)

    def float(self) -> Module:
        """Cast to float32 (``to(np.float32)``), as ``torch.nn.Module.float``."""
        return self.to(np.float32)

    # -- state ------------------------------------------------------------------------------

    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """Return ``{dotted_name: copy}`` of every parameter and buffer, in PyTorch's order
        (each module's parameters, then its buffers, then its children's).

        Values are copies: later training does not change a saved snapshot.
        """
        state: OrderedDict[str, np.ndarray] = OrderedDict()
        for prefix, module in self.named_modules():
            dot = f"{prefix}." if prefix else ""
            for name, param in module._parameters.items():
                if param is not None:
                    state[dot + name] = param.data.copy()
            for name, buffer in module._buffers.items():
                if buffer is not None:
                    state[dot + name] = np.array(buffer, copy=True)
        return state

    def load_state_dict(
        self, state_dict: dict[str, Any], strict: bool = True
    ) -> tuple[list[str], list[str]]:
        """Copy values from ``state_dict`` into this module's parameters and buffers.

        Every key and shape is checked first; only when all agree are values
        copied, in place (``param.data[...] = value``), so optimizers holding the
        Parameters stay valid.

        Args:
            state_dict: ``{dotted_name: array}``, e.g. from :meth:`state_dict` or
                :func:`mininn.load`.
            strict: when True, missing and unexpected keys are errors. Default: True.
        Returns:
            ``(missing_keys, unexpected_keys)``, as PyTorch's ``_IncompatibleKeys``.
        Raises:
            TypeError: ``state_dict`` is not a mapping (e.g. a file name).
            RuntimeError: one error listing every problem: missing or unexpected
                keys (when ``strict``), and shape mismatches (always).
        """
        if not isinstance(state_dict, Mapping):
            hint = "; to read a file, pass mininn.load(path)" if isinstance(state_dict, str) else ""
            raise TypeError(
                f"{type(self).__name__}.load_state_dict: expected a mapping of names to arrays, "
                f"got {type(state_dict).__name__}{hint}"
            )
        targets: dict[str, tuple[Module, str, bool]] = {}
        for prefix, module in self.named_modules():
            dot = f"{prefix}." if prefix else ""
            for name, param in module._parameters.items():
                if param is not None:
                    targets[dot + name] = (module, name, True)
            for name, buffer in module._buffers.items():
                if buffer is not None:
                    targets[dot + name] = (module, name, False)
        missing = [key for key in targets if key not in state_dict]
        unexpected = [key for key in state_dict if key not in targets]
        problems = []
        if strict and missing:
            problems.append("Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing))
        if strict and unexpected:
            problems.append(
                "Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected)
            )
        for key, (module, name, is_param) in targets.items():
            if key not in state_dict:
                continue
            current = module._parameters[name].data if is_param else module._buffers[name]
            value = np.asarray(state_dict[key])
            if value.shape != np.shape(current):
                problems.append(
                    f"size mismatch for {key}: copying a param with shape {value.shape} from "
                    f"checkpoint, the shape in current model is {np.shape(current)}"
                )
        if problems:
            raise RuntimeError(
                f"Error(s) in loading state_dict for {type(self).__name__}:\n\t"
                + "\n\t".join(problems)
            )
        for key, (module, name, is_param) in targets.items():
            if key not in state_dict:
                continue
            if is_param:
                module._parameters[name].data[...] = state_dict[key]
            else:
                module._buffers[name][...] = state_dict[key]
        return missing, unexpected

    # -- printing ---------------------------------------------------------------------------

    def extra_repr(self) -> str:
        """The arguments shown inside ``ClassName(...)``; subclasses override."""
        return ""

    def __repr__(self) -> str:
        lines = []
        for name, child in self._modules.items():
            child_repr = repr(child).replace("\n", "\n  ")
            lines.append(f"({name}): {child_repr}")
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n  " + "\n  ".join(lines) + "\n)"


def _check_grad_output(module: Module, grad_output: Any, shape: tuple[int, ...]) -> None:
    """Raise ValueError unless ``grad_output`` has ``shape``, the last forward's output
    shape (NumPy would broadcast a wrong one silently, or fail deep inside)."""
    got = getattr(grad_output, "shape", None)
    if got != shape:
        shown = f"has shape {got}" if got is not None else f"is a {type(grad_output).__name__}"
        raise ValueError(
            f"{type(module).__name__}.backward: grad_output {shown}, but the last forward "
            f"returned shape {shape}; pass dL/dy for that output, as an ndarray"
        )


@functools.cache
def _takes_input_grad(cls: type) -> bool:
    """Whether ``cls.backward`` accepts the ``input_grad`` keyword (looked up once per class)."""
    return "input_grad" in inspect.signature(cls.backward).parameters


def __getattr__(name: str) -> Any:
    # Sequential lives in mininn.container, above the layers whose initialisation it
    # chooses; resolving it here on first use keeps `from mininn.module import
    # Sequential` working without module.py importing anything above itself.
    if name == "Sequential":
        from mininn.container import Sequential

        return Sequential
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
