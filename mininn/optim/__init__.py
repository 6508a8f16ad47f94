"""Optimizers with the arguments and update rules of ``torch.optim``.

Each class writes out its update equations in its docstring and in ``_update``,
following PyTorch's single-tensor (for-loop) implementation operation by
operation, so that float64 results agree with PyTorch to rounding.

An optimizer keeps the parameters of each group in one flat buffer per dtype,
so that a step is a handful of NumPy calls over the whole network (see
:mod:`mininn.optim._flat`). The consequence for users: set gradients in place
(``p.grad[...] = g``) and cast the model (``Module.to()``) *before* creating the
optimizer; ``step()`` and ``zero_grad()`` raise a ``RuntimeError`` otherwise.
``state[param]`` is per parameter, with PyTorch's names; its arrays are views
into the flat state buffers. ``state_dict()`` / ``load_state_dict()`` copy it out
and in, in PyTorch's layout. Learning-rate schedules are in
:mod:`mininn.optim.lr_scheduler`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from mininn.module import Parameter
from mininn.optim._flat import _Flat, _lerp_, _Run

__all__ = ["SGD", "Adam", "AdamW", "Optimizer", "RMSprop", "lr_scheduler"]


class Optimizer:
    """Base class of the optimizers, as ``torch.optim.Optimizer``.

    Args:
        params: an iterable of :class:`~mininn.Parameter` (e.g. ``model.parameters()``),
            or of dicts, each a parameter group with a ``"params"`` list and
            hyperparameters overriding ``defaults``.
        defaults: the hyperparameters of the groups that do not set them.
    Attributes:
        param_groups: list of dicts, each with ``"params"`` and every hyperparameter;
            assigning ``opt.param_groups[0]["lr"] = x`` changes the learning rate
            from the next step (what a scheduler does).
        state: ``{Parameter: dict}``, filled lazily at a parameter's first step
            with PyTorch's names (``step``, ``exp_avg``, ``momentum_buffer``, ...).
        defaults: the hyperparameters given to the constructor.
    Checkpoints: :meth:`state_dict` / :meth:`load_state_dict`, in PyTorch's layout.
    Raises:
        ValueError: the parameter list is empty; a parameter appears in two groups;
            a hyperparameter is out of range.
        TypeError: ``params`` is a single Parameter or holds something else.
    Note:
        The parameters are moved into one flat buffer per group and dtype (see the
        module docstring): set gradients in place (``p.grad[...] = g``), and call
        ``Module.to()`` before creating the optimizer. A parameter listed twice in
        one group is kept once; a parameter frozen with ``requires_grad = False`` is
        skipped by ``step()``.
    """

    def __init__(self, params: Iterable[Parameter] | Iterable[dict], defaults: dict) -> None:
        name = type(self).__name__
        if isinstance(params, Parameter):
            raise TypeError(
                f"{name}: params should be an iterable of Parameters or dicts, but got a "
                "Parameter; pass [param] or model.parameters()"
            )
        self._validate(defaults)
        self.defaults = dict(defaults)
        self.state: defaultdict[Parameter, dict[str, Any]] = defaultdict(dict)
        self.param_groups: list[dict[str, Any]] = []
        self._flats: list[list[_Flat]] = []  # parallel to param_groups
        groups = list(params)
        if len(groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def _validate(self, hyperparameters: dict) -> None:
        """Raise ValueError for an out-of-range hyperparameter; subclasses override."""

    def add_param_group(self, param_group: dict) -> None:
        """Add a group of parameters with its own hyperparameters (missing ones are
        taken from ``defaults``), as ``torch.optim.Optimizer.add_param_group``.

        Raises:
            TypeError: ``param_group`` is not a dict, or holds a non-Parameter.
            ValueError: a parameter is already in another group; a bad hyperparameter.
        """
        name = type(self).__name__
        if not isinstance(param_group, dict):
            raise TypeError(f"{name}: a param group must be a dict, got {type(param_group)}")
        group = dict(param_group)
        params = group["params"]
        params = [params] if isinstance(params, Parameter) else list(params)
        for param in params:
            if not isinstance(param, Parameter):
                raise TypeError(
                    f"{name} can only optimize Parameters, but one of the params is "
                    f"{type(param).__name__}; pass model.parameters()"
                )
        group["params"] = list(dict.fromkeys(params))  # a shared Parameter is updated once
        for key, default in self.defaults.items():
            group.setdefault(key, default)
        self._validate(group)
        existing = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in existing for p in group["params"]):
            raise ValueError("some parameters appear in more than one parameter group")
        dtypes = list(dict.fromkeys(p.data.dtype for p in group["params"]))
        flats = [_Flat([p for p in group["params"] if p.data.dtype == dt], dt) for dt in dtypes]
        self.param_groups.append(group)
        self._flats.append(flats)

    def _check_attached(self) -> None:
        for group_index, flats in enumerate(self._flats):
            for flat in flats:
                detached = flat.detached()
                if detached:
                    shapes = [flat.params[i].shape for i in detached]
                    raise RuntimeError(
                        f"{type(self).__name__}: parameter(s) of shape {shapes} in group "
                        f"{group_index} no longer share memory with the optimizer: their .data "
                        "or .grad was replaced by a new array after the optimizer was created "
                        "(e.g. by Module.to() or `p.grad = g`). Create the optimizer after "
                        "casting the model, and write in place (p.grad[...] = g)."
                    )

    def _runs(self, flat: _Flat) -> list[_Run]:
        """Split ``flat`` into runs of consecutive trainable parameters that share
        their step count (usually one run: the whole buffer)."""
        runs, first = [], None
        keys = [
            (bool(self.state[p]), self.state[p].get("step")) if p.requires_grad else None
            for p in flat.params
        ]
        for index, key in enumerate([*keys, None]):
            if first is not None and key != keys[first]:
                runs.append(_Run(flat, first, index, self.state))
                first = None
            if first is None and key is not None:
                first = index
        return runs

    def zero_grad(self) -> None:
        """Fill the gradient of every parameter with zeros, in place: one pass over each
        flat gradient buffer, of which every ``p.grad`` is a view.

        Raises:
            RuntimeError: a parameter's .data or .grad was replaced by a new array.
        """
        self._check_attached()
        for flats in self._flats:
            for flat in flats:
                flat.grad.fill(0)

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Update every parameter with ``requires_grad=True`` from its ``.grad``.

        Args:
            closure: optional; called first and its value returned (the loss), as in
                PyTorch. Default: None.
        Raises:
            RuntimeError: a parameter's .data or .grad was replaced by a new array.
        """
        loss = closure() if closure is not None else None
        self._check_attached()
        for group, flats in zip(self.param_groups, self._flats, strict=True):
            for flat in flats:
                for run in self._runs(flat):
                    self._update(group, run)
        return loss

    def _update(self, group: dict, run: _Run) -> None:
        raise NotImplementedError(f"{type(self).__name__} is missing the required '_update' method")

    # -- state_dict ---------------------------------------------------------------------

    # The per-parameter state names, in PyTorch's order (subclasses set them).
    _state_names: tuple[str, ...] = ()

    def _required_state(self, group: dict) -> tuple[str, ...]:
        """The state names that a parameter which has stepped holds under ``group``."""
        return ()

    def state_dict(self) -> dict[str, Any]:
        """Return a copy of the optimizer's state, in ``torch.optim.Optimizer``'s layout.

        Parameters are numbered in the order of the groups, from 0, as PyTorch does::

            {"state": {0: {"step": 3, "exp_avg": array, ...}, ...},
             "param_groups": [{"lr": 0.001, ..., "params": [0, 1, 2]}, ...]}

        Only parameters that have stepped have an entry in ``"state"``, with the
        same names as ``optimizer.state[p]`` (PyTorch's); ``"step"`` is an int,
        every array a copy. Nothing in it refers to the optimizer, so it can be
        saved with :func:`mininn.save`.

        Example:
            >>> p = Parameter(np.array([1.0, 2.0]))
            >>> opt = SGD([p], lr=0.1, momentum=0.9)
            >>> p.grad[...] = [1.0, -1.0]
            >>> opt.step()
            >>> state = opt.state_dict()
            >>> state["state"]
            {0: {'momentum_buffer': array([ 1., -1.])}}
            >>> state["param_groups"][0]["params"], state["param_groups"][0]["lr"]
            ([0], 0.1)
        """
        index: dict[int, int] = {}  # id(param) -> its number
        param_groups = []
        for group in self.param_groups:
            packed = {key: value for key, value in group.items() if key != "params"}
            packed["params"] = [index.setdefault(id(p), len(index)) for p in group["params"]]
            param_groups.append(packed)
        state = {}
        for group in self.param_groups:
            for param in group["params"]:
                if self.state.get(param):
                    state[index[id(param)]] = {
                        name: value.copy() if isinstance(value, np.ndarray) else value
                        for name, value in self.state[param].items()
                    }
        return {"state": state, "param_groups": param_groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state returned by :meth:`state_dict` (copied in: the optimizer
        continues exactly where the saved one stopped).

        The hyperparameters of each group are replaced by the saved ones (so a
        learning rate changed by a scheduler is restored), and the per-parameter
        state is copied into the optimizer's buffers; a parameter without saved
        state starts afresh. Everything is checked before anything is changed.
        Integer keys given as strings ("0") and NumPy scalars are accepted (as a
        file may return them); PyTorch's implementation flags (``foreach``,
        ``fused``, ``capturable``, ``differentiable``, ``decoupled_weight_decay``,
        ``param_names``) are ignored, and the keys that a learning-rate scheduler
        adds to a group (``initial_lr``, ``max_lr``, ``min_lr``, ``max_momentum``,
        ``base_momentum``) are restored with it: build the scheduler, then load the
        optimizer's state, then the scheduler's.

        Args:
            state_dict: ``{"state": {...}, "param_groups": [...]}``, as returned
                by :meth:`state_dict` of the same optimizer class over the same
                parameters.
        Raises:
            ValueError: listing, in one message, everything that does not fit: the
                number of groups, the number of parameters in a group, a missing or
                unknown hyperparameter or state name, an out-of-range hyperparameter,
                a state array whose shape differs from its parameter's, a step that
                is not a non-negative integer.
        Example:
            >>> p = Parameter(np.array([1.0]))
            >>> opt = Adam([p], lr=0.1)
            >>> p.grad[...] = [2.0]
            >>> opt.step()
            >>> fresh = Adam([Parameter(p.data)], lr=0.5)
            >>> fresh.load_state_dict(opt.state_dict())
            >>> fresh.param_groups[0]["lr"], fresh.state[fresh.param_groups[0]["params"][0]]["step"]
            (0.1, 1)
        """
        name = type(self).__name__
        if not isinstance(state_dict, dict) or not {"state", "param_groups"} <= set(state_dict):
            got = sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict).__name__
            raise ValueError(
                f"{name}.load_state_dict: expected a dict with 'state' and 'param_groups' "
                f"(from Optimizer.state_dict()), got {got}"
            )
        problems: list[str] = []
        saved_groups = list(state_dict["param_groups"])
        if len(saved_groups) != len(self.param_groups):
            problems.append(
                f"{len(saved_groups)} parameter group(s) saved, the optimizer has "
                f"{len(self.param_groups)}"
            )
        hyperparameters = []  # per group: the saved values, as this optimizer holds them
        owner: dict[int, tuple[int, Parameter]] = {}  # saved number -> (group, param)
        for g, (group, saved) in enumerate(zip(self.param_groups, saved_groups, strict=False)):
            hyperparameters.append(self._saved_hyperparameters(g, group, saved, problems))
            numbers = [int(i) for i in saved.get("params", [])]
            if len(numbers) != len(group["params"]):
                problems.append(
                    f"group {g} has {len(numbers)} parameter(s) saved, the optimizer's has "
                    f"{len(group['params'])}"
                )
            else:
                owner.update(zip(numbers, ((g, p) for p in group["params"]), strict=True))
        state: dict[int, dict[str, Any]] = {}  # id(param) -> saved state
        for key, saved in dict(state_dict["state"]).items():
            number = int(key)
            if number not in owner:
                if len(saved_groups) == len(self.param_groups):
                    problems.append(f"state of parameter {number}, which no group lists")
                continue
            g, param = owner[number]
            required = self._required_state({**self.param_groups[g], **hyperparameters[g]})
            state[id(param)] = self._saved_state(number, param, dict(saved), required, problems)
        if problems:
            raise ValueError(
                f"{name}.load_state_dict: the state dict does not fit this optimizer: "
                + "; ".join(problems)
                + f". Load a state dict saved from a {name} over the same parameters"
            )
        for group, saved in zip(self.param_groups, hyperparameters, strict=True):
            group.update(saved)
        self.state.clear()
        for flats in self._flats:
            for flat in flats:
                flat.reset_state()
                for index, param in enumerate(flat.params):
                    for key, value in state.get(id(param), {}).items():
                        if key == "step":
                            self.state[param]["step"] = int(np.asarray(value).item())
                        else:
                            view = flat.state_view(key, index)
                            view[...] = value
                            self.state[param][key] = view

    def _saved_hyperparameters(
        self, g: int, group: dict, saved: dict, problems: list[str]
    ) -> dict[str, Any]:
        """The hyperparameters of saved group ``g`` that this optimizer takes, as its
        own types (a tuple stays a tuple, a NumPy scalar becomes a number); a missing,
        unknown or out-of-range one is added to ``problems``."""
        given = {key: value for key, value in saved.items() if key not in _NOT_HYPERPARAMETERS}
        missing = [key for key in self.defaults if key not in given]
        unknown = [key for key in given if key not in self.defaults and key not in _SCHEDULER_KEYS]
        if missing:
            problems.append(f"group {g} lacks hyperparameter(s) {missing}")
        if unknown:
            problems.append(
                f"group {g} has hyperparameter(s) {unknown}, which {type(self).__name__} "
                "does not take"
            )
        values = {
            key: _as_python(value, group.get(key))
            for key, value in given.items()
            if key in self.defaults or key in _SCHEDULER_KEYS
        }
        try:
            self._validate({**group, **values})
        except (TypeError, ValueError) as error:
            problems.append(f"group {g}: {error}")
        return values

    def _saved_state(
        self,
        number: int,
        param: Parameter,
        saved: dict,
        required: tuple[str, ...],
        problems: list[str],
    ) -> dict[str, Any]:
        """The saved state of parameter ``number``, checked against ``param``; what
        does not fit is added to ``problems``."""
        if not saved:
            return {}
        missing = [key for key in required if key not in saved]
        unknown = [key for key in saved if key not in self._state_names]
        if missing:
            problems.append(f"state of parameter {number} lacks {missing}")
        if unknown:
            problems.append(
                f"state of parameter {number} has {unknown}, which {type(self).__name__} "
                f"does not keep (it keeps {list(self._state_names)})"
            )
        for key, value in saved.items():
            array = np.asarray(value)
            if key == "step":
                if (
                    array.shape != ()
                    or array.dtype.kind not in "iuf"
                    or not (float(array) >= 0 and float(array).is_integer())
                ):
                    problems.append(
                        f"state of parameter {number} has step {value!r}, expected a count >= 0"
                    )
            elif array.dtype.kind not in "iuf" or array.shape != param.shape:
                problems.append(
                    f"state {key!r} of parameter {number} has shape {array.shape} "
                    f"({array.dtype}), the parameter {param.shape}"
                )
        # PyTorch's order, whatever the saved one.
        return {key: saved[key] for key in self._state_names if key in saved}

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for index, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {index}")
            lines += [f"    {key}: {group[key]}" for key in sorted(group) if key != "params"]
        return "\n".join([*lines, ")"])


# Keys of a saved param group that are not hyperparameters of ours: the parameter
# numbers, and PyTorch's implementation flags (its state dicts carry them).
_NOT_HYPERPARAMETERS = frozenset(
    {"params", "param_names", "foreach", "fused", "capturable", "differentiable",
     "decoupled_weight_decay"}
)  # fmt: skip

# Keys that learning-rate schedulers add to a param group (restored with it).
_SCHEDULER_KEYS = frozenset({"initial_lr", "max_lr", "min_lr", "max_momentum", "base_momentum"})


def _as_python(value: Any, like: Any) -> Any:
    """``value`` as the type of ``like``: a NumPy scalar or 0-d array as a number, a
    list or 1-d array as a tuple where ``like`` is one (``betas``)."""
    if isinstance(like, tuple) and isinstance(value, (list, tuple, np.ndarray)):
        return tuple(_as_python(v, None) for v in value)
    if isinstance(value, (np.generic, np.ndarray)) and np.ndim(value) == 0:
        return value.item()
    return value


def _floats(group: dict, *names: str) -> tuple[float, ...]:
    # Python floats keep float32 arithmetic in float32 (a NumPy float64 scalar selects
    # NumPy's float64 loop, which converts the float32 arrays as it goes).
    return tuple(float(group[name]) for name in names)


def _check_non_negative(name: str, what: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(
            f"Invalid {what}: {value!r} ({type(value).__name__}); {name} expects a number, "
            "e.g. 0.001 (a YAML 1e-3 is read as a string: write 0.001 or 1.0e-3)"
        )
    if not 0.0 <= value:
        raise ValueError(f"Invalid {what}: {value}; {name} expects a value >= 0")


class SGD(Optimizer):
    r"""Stochastic gradient descent, optionally with (Nesterov) momentum: θ ← θ − lr · g.

    With g the gradient, λ the weight decay, μ the momentum, τ the dampening and
    γ the learning rate, each step computes, as ``torch.optim.SGD``::

        g ← −∇θ if maximize else ∇θ
        g ← g + λ θ                                  (if λ ≠ 0)
        b ← g at the first step, else μ b + (1 − τ) g   (if μ ≠ 0)
        g ← g + μ b if nesterov else b               (if μ ≠ 0)
        θ ← θ − γ g

    Args:
        params: the parameters, or parameter groups (dicts), to optimize.
        lr: γ, the learning rate per step, >= 0. Default: 1e-3 (PyTorch's).
        momentum: μ >= 0. Default: 0.
        dampening: τ, the share of the gradient removed from the momentum. Default: 0.
        weight_decay: λ >= 0, an L2 penalty added to the gradient. Default: 0.
        nesterov: use Nesterov momentum (needs μ > 0 and τ = 0). Default: False.
        maximize: maximise the objective instead. Default: False.
    Shape:
        - Parameters: any shape, float32 or float64; state has the same shape and dtype.
    Raises:
        ValueError: a negative lr, momentum or weight_decay; nesterov with μ = 0 or τ ≠ 0.
    References:
        Sutskever et al. (2013), "On the importance of initialization and momentum in
        deep learning", ICML (the momentum and Nesterov forms used here).
    Example:
        >>> p = Parameter(np.array([1.0, 2.0]))
        >>> opt = SGD([p], lr=0.1)
        >>> p.grad[...] = [0.5, -1.0]
        >>> opt.step()
        >>> p.data
        array([0.95, 2.1 ])
    """

    def __init__(
        self,
        params: Iterable[Parameter] | Iterable[dict],
        lr: float = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize)  # fmt: skip
        super().__init__(params, defaults)

    _state_names = ("momentum_buffer",)

    def _required_state(self, group: dict) -> tuple[str, ...]:
        return ("momentum_buffer",) if group["momentum"] != 0 else ()

    def _validate(self, hp: dict) -> None:
        _check_non_negative("SGD", "learning rate", hp["lr"])
        _check_non_negative("SGD", "momentum value", hp["momentum"])
        _check_non_negative("SGD", "weight_decay value", hp["weight_decay"])
        if hp["nesterov"] and (hp["momentum"] <= 0 or hp["dampening"] != 0):
            raise ValueError(
                "Nesterov momentum requires a momentum and zero dampening; SGD got "
                f"momentum={hp['momentum']}, dampening={hp['dampening']}"
            )

    def _update(self, group: dict, run: _Run) -> None:
        lr, momentum, dampening = _floats(group, "lr", "momentum", "dampening")
        g = run.effective_grad(group["maximize"], float(group["weight_decay"]))
        if momentum != 0:
            buf = run.state("momentum_buffer")
            if run.is_first_step:
                buf[...] = g  # b ← g
            else:
                buf *= momentum  # b ← μ b + (1 − τ) g
                if dampening == 0:
                    buf += g
                else:
                    buf += np.multiply(g, 1 - dampening, out=run.scratch("tmp"))
            if group["nesterov"]:
                nesterov_g = run.scratch("grad")  # may already hold g: add in place
                np.multiply(buf, momentum, out=run.scratch("tmp"))
                np.add(g, run.scratch("tmp"), out=nesterov_g)  # g ← g + μ b
                g = nesterov_g
            else:
                g = buf  # g ← b
        run.param += np.multiply(g, -lr, out=run.scratch("tmp"))  # θ ← θ − γ g


def _check_adam(name: str, hp: dict) -> None:
    _check_non_negative(name, "learning rate", hp["lr"])
    _check_non_negative(name, "epsilon value", hp["eps"])
    betas = hp["betas"]
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"{name}: betas must be a pair (beta1, beta2), got {betas!r}")
    for index, beta in enumerate(betas):
        if not 0.0 <= beta < 1.0:
            raise ValueError(
                f"Invalid beta parameter at index {index}: {beta}; {name} expects 0 <= beta < 1"
            )
    _check_non_negative(name, "weight_decay value", hp["weight_decay"])


class Adam(Optimizer):
    r"""Adam: θ ← θ − lr · m̂ / (sqrt(v̂) + eps), with bias-corrected moment estimates.

    With g the gradient, λ the weight decay and γ the learning rate, each step
    computes, as ``torch.optim.Adam``::

        t ← t + 1
        g ← −∇θ if maximize else ∇θ
        g ← g + λ θ                                  (if λ ≠ 0: L2 penalty)
        m ← β1 m + (1 − β1) g                        (exp_avg)
        v ← β2 v + (1 − β2) g²                       (exp_avg_sq)
        v_max ← max(v_max, v); use v_max for v       (if amsgrad: max_exp_avg_sq)
        θ ← θ − γ / (1 − β1^t) · m / (sqrt(v) / sqrt(1 − β2^t) + ε)

    Args:
        params: the parameters, or parameter groups (dicts), to optimize.
        lr: γ, the learning rate per step, >= 0. Default: 1e-3.
        betas: (β1, β2), the decay rates of the moment estimates, each in [0, 1).
            Default: (0.9, 0.999).
        eps: ε >= 0, added to the denominator, outside the square root. Default: 1e-8.
        weight_decay: λ >= 0, an L2 penalty added to the gradient (see
            :class:`AdamW` for decoupled decay). Default: 0.
        amsgrad: use the maximum of past second moments (Reddi et al. 2018). Default: False.
        maximize: maximise the objective instead. Default: False.
    Shape:
        - Parameters: any shape, float32 or float64; state has the same shape and dtype.
    Raises:
        ValueError: a negative lr, eps or weight_decay; a beta outside [0, 1).
    References:
        Kingma & Ba (2014), "Adam: A Method for Stochastic Optimization",
        https://arxiv.org/abs/1412.6980. Reddi et al. (2018), "On the Convergence of
        Adam and Beyond", https://openreview.net/forum?id=ryQu7f-RZ (amsgrad).
    Example:
        >>> p = Parameter(np.array([1.0, -1.0]))
        >>> opt = Adam([p], lr=0.1)
        >>> p.grad[...] = [2.0, -3.0]
        >>> opt.step()  # the first step moves each weight by lr against its gradient's sign
        >>> np.round(p.data, 6)
        array([ 0.9, -0.9])
    """

    _decoupled_weight_decay = False

    def __init__(
        self,
        params: Iterable[Parameter] | Iterable[dict],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        amsgrad=amsgrad, maximize=maximize)  # fmt: skip
        super().__init__(params, defaults)

    _state_names = ("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    def _required_state(self, group: dict) -> tuple[str, ...]:
        return ("step", "exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if group["amsgrad"] else ())

    def _validate(self, hp: dict) -> None:
        _check_adam(type(self).__name__, hp)

    def _update(self, group: dict, run: _Run) -> None:
        lr, eps, weight_decay = _floats(group, "lr", "eps", "weight_decay")
        beta1, beta2 = (float(beta) for beta in group["betas"])
        t = run.increment_step()
        exp_avg, exp_avg_sq = run.state("exp_avg"), run.state("exp_avg_sq")
        tmp, denom = run.scratch("tmp"), run.scratch("denom")
        if self._decoupled_weight_decay:
            if weight_decay != 0:
                run.param *= 1 - lr * weight_decay  # θ ← θ (1 − γ λ)
            g = run.effective_grad(group["maximize"], 0)
        else:
            g = run.effective_grad(group["maximize"], weight_decay)  # g ← g + λ θ
        _lerp_(exp_avg, g, 1 - beta1, tmp)  # m ← β1 m + (1 − β1) g
        exp_avg_sq *= beta2  # v ← β2 v + (1 − β2) g²
        exp_avg_sq += np.multiply(np.multiply(g, 1 - beta2, out=tmp), g, out=tmp)
        bias_correction1 = 1 - beta1**t
        bias_correction2_sqrt = (1 - beta2**t) ** 0.5
        if group["amsgrad"]:
            max_exp_avg_sq = run.state("max_exp_avg_sq")  # v_max ← max(v_max, v)
            np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
            np.sqrt(max_exp_avg_sq, out=denom)
        else:
            np.sqrt(exp_avg_sq, out=denom)
        # θ ← θ − γ / (1 − β1^t) · m / (sqrt(v) / sqrt(1 − β2^t) + ε), with the scalar
        # sqrt(1 − β2^t) moved out of the denominator to save a pass over the buffers:
        # θ ← θ − (γ sqrt(1 − β2^t) / (1 − β1^t)) · m / (sqrt(v) + ε sqrt(1 − β2^t)).
        denom += eps * bias_correction2_sqrt
        np.divide(exp_avg, denom, out=tmp)
        tmp *= -lr * bias_correction2_sqrt / bias_correction1
        run.param += tmp


class AdamW(Adam):
    r"""AdamW: Adam with decoupled weight decay, θ ← θ (1 − lr · λ) before the Adam step.

    Each step computes, as ``torch.optim.AdamW``::

        t ← t + 1
        θ ← θ − γ λ θ                                (decay kept out of m and v)
        g ← −∇θ if maximize else ∇θ
        m ← β1 m + (1 − β1) g
        v ← β2 v + (1 − β2) g²
        v_max ← max(v_max, v); use v_max for v       (if amsgrad)
        θ ← θ − γ / (1 − β1^t) · m / (sqrt(v) / sqrt(1 − β2^t) + ε)

    Args:
        params: the parameters, or parameter groups (dicts), to optimize.
        lr: γ, the learning rate per step, >= 0. Default: 1e-3.
        betas: (β1, β2), each in [0, 1). Default: (0.9, 0.999).
        eps: ε >= 0, added outside the square root. Default: 1e-8.
        weight_decay: λ >= 0, the decoupled decay per unit of lr. Default: 1e-2.
        amsgrad: use the maximum of past second moments. Default: False.
        maximize: maximise the objective instead. Default: False.
    Shape:
        - Parameters: any shape, float32 or float64; state has the same shape and dtype.
    Raises:
        ValueError: a negative lr, eps or weight_decay; a beta outside [0, 1).
    References:
        Loshchilov & Hutter (2019), "Decoupled Weight Decay Regularization", ICLR,
        https://arxiv.org/abs/1711.05101
    Example:
        >>> p = Parameter(np.array([1.0]))
        >>> opt = AdamW([p], lr=0.1, weight_decay=0.5)
        >>> p.grad[...] = [2.0]
        >>> opt.step()  # 1 · (1 − 0.1 · 0.5) − 0.1 = 0.85
        >>> np.round(p.data, 6)
        array([0.85])
    """

    _decoupled_weight_decay = True

    def __init__(
        self,
        params: Iterable[Parameter] | Iterable[dict],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize)


class RMSprop(Optimizer):
    r"""RMSprop: θ ← θ − lr · g / (sqrt(E[g²]) + eps), optionally centred and with momentum.

    With α the smoothing constant, each step computes, as ``torch.optim.RMSprop``::

        t ← t + 1
        g ← −∇θ if maximize else ∇θ
        g ← g + λ θ                                  (if λ ≠ 0)
        v ← α v + (1 − α) g²                         (square_avg)
        ḡ ← α ḡ + (1 − α) g                          (if centered: grad_avg)
        d ← sqrt(v − ḡ²) + ε if centered else sqrt(v) + ε
        b ← μ b + g / d;  θ ← θ − γ b                (if μ > 0: momentum_buffer)
        θ ← θ − γ g / d                              (otherwise)

    ε is added outside the square root, as PyTorch does (TensorFlow adds it inside).

    Args:
        params: the parameters, or parameter groups (dicts), to optimize.
        lr: γ, the learning rate per step, >= 0. Default: 1e-2.
        alpha: α >= 0, the smoothing constant of the running averages. Default: 0.99.
        eps: ε >= 0. Default: 1e-8.
        weight_decay: λ >= 0, an L2 penalty added to the gradient. Default: 0.
        momentum: μ >= 0. Default: 0.
        centered: normalise by an estimate of the gradient's variance. Default: False.
        maximize: maximise the objective instead. Default: False.
    Shape:
        - Parameters: any shape, float32 or float64; state has the same shape and dtype.
    Raises:
        ValueError: a negative lr, alpha, eps, momentum or weight_decay.
    References:
        Hinton, Srivastava & Swersky (2012), Neural Networks for Machine Learning,
        lecture 6e. Graves (2013), "Generating Sequences With Recurrent Neural
        Networks", https://arxiv.org/abs/1308.0850 (the centred form).
    Example:
        >>> p = Parameter(np.array([1.0]))
        >>> opt = RMSprop([p], lr=0.01, alpha=0.75)
        >>> p.grad[...] = [2.0]
        >>> opt.step()  # v = 0.25 · 4 = 1; θ = 1 − 0.01 · 2 / (1 + 1e-8)
        >>> np.round(p.data, 6)
        array([0.98])
    """

    def __init__(
        self,
        params: Iterable[Parameter] | Iterable[dict],
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                        momentum=momentum, centered=centered, maximize=maximize)  # fmt: skip
        super().__init__(params, defaults)

    _state_names = ("step", "square_avg", "momentum_buffer", "grad_avg")

    def _required_state(self, group: dict) -> tuple[str, ...]:
        momentum = ("momentum_buffer",) if group["momentum"] > 0 else ()
        return ("step", "square_avg", *momentum) + (("grad_avg",) if group["centered"] else ())

    def _validate(self, hp: dict) -> None:
        _check_non_negative("RMSprop", "learning rate", hp["lr"])
        _check_non_negative("RMSprop", "epsilon value", hp["eps"])
        _check_non_negative("RMSprop", "momentum value", hp["momentum"])
        _check_non_negative("RMSprop", "weight_decay value", hp["weight_decay"])
        _check_non_negative("RMSprop", "alpha value", hp["alpha"])

    def _update(self, group: dict, run: _Run) -> None:
        lr, alpha, eps, momentum = _floats(group, "lr", "alpha", "eps", "momentum")
        run.increment_step()
        g = run.effective_grad(group["maximize"], float(group["weight_decay"]))
        square_avg = run.state("square_avg")
        if momentum > 0:
            run.state("momentum_buffer")  # PyTorch's order of the state keys
        tmp, denom = run.scratch("tmp"), run.scratch("denom")
        square_avg *= alpha  # v ← α v + (1 − α) g²
        square_avg += np.multiply(np.multiply(g, 1 - alpha, out=tmp), g, out=tmp)
        if group["centered"]:
            grad_avg = run.state("grad_avg")
            _lerp_(grad_avg, g, 1 - alpha, tmp)  # ḡ ← α ḡ + (1 − α) g
            np.multiply(grad_avg, grad_avg, out=denom)  # d ← sqrt(v − ḡ²) + ε
            np.subtract(square_avg, denom, out=denom)
            np.sqrt(denom, out=denom)
        else:
            np.sqrt(square_avg, out=denom)  # d ← sqrt(v) + ε
        denom += eps
        if momentum > 0:
            buf = run.state("momentum_buffer")
            buf *= momentum  # b ← μ b + g / d
            buf += np.divide(g, denom, out=tmp)
            run.param += np.multiply(buf, -lr, out=tmp)  # θ ← θ − γ b
        else:
            np.multiply(g, -lr, out=tmp)  # θ ← θ − γ g / d
            tmp /= denom
            run.param += tmp


# Imported last: the schedulers need Optimizer.
from mininn.optim import lr_scheduler  # noqa: E402
