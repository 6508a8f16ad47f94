"""Learning-rate schedules with the names, arguments and numbers of ``torch.optim.lr_scheduler``.

A scheduler changes ``optimizer.param_groups[i]["lr"]`` (and, for
:class:`OneCycleLR`, ``"momentum"`` or ``"betas"``) in place; the optimizer reads
the group's hyperparameters at every ``step()``, so the new values take effect
from the next optimizer step. Use it as in PyTorch::

    for epoch in range(epochs):
        for x, y in loader:
            ...
            optimizer.step()
            # scheduler.step() here for a per-batch schedule (OneCycleLR)
        scheduler.step()          # a per-epoch schedule; ReduceLROnPlateau: step(val_loss)

``scheduler.per_batch`` tells the two kinds apart (True for :class:`OneCycleLR`).

Each class computes its learning rates operation by operation as PyTorch 2.13
does: most schedules are *chainable* (each step multiplies the current
``group["lr"]``, so they compose with other changes to it), and have a closed
form in ``base_lrs`` and ``last_epoch``, used by :class:`SequentialLR` at its
milestones and by ``step(epoch)``. Counting as PyTorch: constructing a scheduler
is its first step (``last_epoch`` becomes 0), and ``group["initial_lr"]`` keeps
the learning rate the schedule starts from (``base_lrs``).

``state_dict()`` returns plain dicts of numbers, strings and lists (PyTorch's
attribute names), so a scheduler can be checkpointed with :func:`mininn.save`.
"""

from __future__ import annotations

import itertools
import math
from bisect import bisect_right
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mininn.optim import Optimizer

__all__ = [
    "CosineAnnealingLR",
    "ExponentialLR",
    "LRScheduler",
    "LinearLR",
    "MultiStepLR",
    "OneCycleLR",
    "ReduceLROnPlateau",
    "SequentialLR",
    "StepLR",
]


def _check_optimizer(name: str, optimizer: Any) -> None:
    if not isinstance(optimizer, Optimizer):
        raise TypeError(
            f"{name}: expected a mininn.optim optimizer, got {type(optimizer).__name__}; "
            "pass the optimizer whose learning rate it schedules"
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _check_int(name: str, what: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}: expected {what} to be an integer >= {minimum}, got {value!r}")


def _check_in(name: str, what: str, value: Any, interval: str, inside: Callable) -> None:
    """Raise ValueError unless ``value`` is a number for which ``inside(value)`` holds."""
    if not _is_number(value) or not inside(value):
        raise ValueError(f"{name}: expected {what} {interval}, got {value!r}")


def _increasing(values: list) -> bool:
    return all(earlier < later for earlier, later in itertools.pairwise(values))


def _per_group(name: str, what: str, value: Any, optimizer: Optimizer) -> list:
    """``value`` for each param group: a list of that length, or one value repeated."""
    if isinstance(value, (list, tuple)):
        if len(value) != len(optimizer.param_groups):
            raise ValueError(
                f"{name}: {what} has {len(value)} values, but the optimizer has "
                f"{len(optimizer.param_groups)} param groups; give one per group or a single number"
            )
        return list(value)
    return [value] * len(optimizer.param_groups)


def _copy(value: Any) -> Any:
    """A copy of a state value (nested lists and dicts of plain values)."""
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_copy(item) for item in value]
    return value


class LRScheduler:
    """Base class of the learning-rate schedulers, as ``torch.optim.lr_scheduler.LRScheduler``.

    A subclass implements :meth:`get_lr`, the chainable rule that turns the
    current ``group["lr"]`` into the next, and optionally ``_get_closed_form_lr``,
    the learning rate at ``last_epoch`` from ``base_lrs``.

    Args:
        optimizer: the :class:`~mininn.optim.Optimizer` whose learning rates it sets.
        last_epoch: the index of the last epoch (or batch) seen; -1 starts the
            schedule, and sets ``group["initial_lr"] = group["lr"]`` where missing.
            A value >= 0 resumes, and needs ``"initial_lr"`` in every group (load
            the optimizer's state first). Default: -1.
    Attributes:
        optimizer: the optimizer.
        base_lrs: the learning rate each group's schedule starts from (its ``initial_lr``).
        last_epoch: the number of ``step()`` calls since the start (0 after construction).
        per_batch: False: step it once per epoch. True for schedules meant to be
            stepped after every optimizer step (:class:`OneCycleLR`). Training loops
            (``mininn.training.fit``) read it to decide when to call ``step()``.
    Raises:
        TypeError: ``optimizer`` is not a mininn optimizer.
        ValueError: ``last_epoch`` is below -1, or >= 0 with a group lacking ``initial_lr``.
    """

    per_batch = False

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        name = type(self).__name__
        _check_optimizer(name, optimizer)
        _check_int(name, "last_epoch", last_epoch, -1)
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for index, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise ValueError(
                        f"{name}: last_epoch={last_epoch} resumes a schedule, but "
                        f"param_groups[{index}] has no 'initial_lr'; load the optimizer's "
                        "state_dict first, or pass last_epoch=-1 to start afresh"
                    )
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._initial_step()

    def _initial_step(self) -> None:
        """The step taken at construction (``last_epoch`` -1 → 0)."""
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def get_lr(self) -> list[float]:
        """The next learning rate of each group (chainable form); called by :meth:`step`."""
        raise NotImplementedError(f"{type(self).__name__} is missing the required 'get_lr' method")

    def get_last_lr(self) -> list[float]:
        """The learning rate of each param group set by the last :meth:`step`."""
        return list(self._last_lr)

    def step(self, epoch: int | None = None) -> None:
        """Advance the schedule by one epoch (or batch) and set each group's ``lr``.

        Call it after ``optimizer.step()``.

        Args:
            epoch: deprecated in PyTorch, kept for its semantics: jump to
                ``last_epoch = epoch`` and use the closed form where the class has
                one. Default: None (the next epoch, chainable form).
        """
        self._step_count += 1
        self._update_lr(epoch)

    def _update_lr(self, epoch: int | None = None) -> None:
        if epoch is None:
            self.last_epoch += 1
            values = self.get_lr()
        else:
            self.last_epoch = epoch
            closed_form = getattr(self, "_get_closed_form_lr", None)
            values = closed_form() if closed_form is not None else self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, values, strict=True):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def _current_lrs(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state: every attribute but the optimizer, with PyTorch's
        names, as plain numbers, strings and lists (copies).

        Example:
            >>> from mininn.module import Parameter
            >>> from mininn.optim import SGD
            >>> scheduler = StepLR(SGD([Parameter([1.0])], lr=0.1), step_size=2)
            >>> scheduler.state_dict()["last_epoch"], scheduler.state_dict()["base_lrs"]
            (0, [0.1])
        """
        return {key: _copy(value) for key, value in vars(self).items() if key != "optimizer"}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state returned by :meth:`state_dict` of the same class (copied in).

        Raises:
            ValueError: ``state_dict`` lacks one of this scheduler's keys or has an
                unknown one (a state of another scheduler class), or its per-group
                lists do not have one value per param group.
        """
        self._check_state(state_dict)
        for key, value in state_dict.items():
            setattr(self, key, _copy(value))

    def _check_state(self, state_dict: Any) -> None:
        name = type(self).__name__
        if not isinstance(state_dict, dict):
            raise ValueError(
                f"{name}.load_state_dict: expected a dict from {name}.state_dict(), got "
                f"{type(state_dict).__name__}"
            )
        expected = set(self.state_dict())
        missing, unknown = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
        groups = len(self.optimizer.param_groups)
        wrong = [
            f"{key!r} has {len(state_dict[key])} values, the optimizer {groups} param groups"
            for key in ("base_lrs", "_last_lr", "min_lrs")
            if key in state_dict and len(state_dict[key]) != groups
        ]
        if missing or unknown or wrong:
            problems = [f"lacks {missing}"] * bool(missing) + [f"has unknown {unknown}"] * bool(
                unknown
            )
            raise ValueError(
                f"{name}.load_state_dict: the state dict does not fit this scheduler: "
                + "; ".join(problems + wrong)
                + f". Load a state saved from a {name} over the same optimizer"
            )


class StepLR(LRScheduler):
    """Decay the learning rate by γ every step_size epochs: lr_t = base_lr · γ^⌊t / step_size⌋.

    Chainable form (what :meth:`step` computes, as PyTorch):
    lr_t = lr_{t−1} · γ when t > 0 and t is a multiple of step_size, else lr_{t−1}.

    Args:
        optimizer: the optimizer.
        step_size: the period of the decay, in epochs, an integer >= 1.
        gamma: γ > 0, the factor applied at each decay. Default: 0.1.
        last_epoch: see :class:`LRScheduler`. Default: -1.
    Raises:
        ValueError: ``step_size`` is not an integer >= 1; ``gamma`` is not > 0.
    Example:
        >>> from mininn.module import Parameter
        >>> from mininn.optim import SGD
        >>> optimizer = SGD([Parameter([1.0])], lr=0.1)
        >>> scheduler = StepLR(optimizer, step_size=2, gamma=0.5)
        >>> lrs = []
        >>> for epoch in range(5):
        ...     lrs.append(optimizer.param_groups[0]["lr"])  # train one epoch with it
        ...     scheduler.step()
        >>> lrs
        [0.1, 0.1, 0.05, 0.05, 0.025]
    """

    def __init__(
        self, optimizer: Optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1
    ) -> None:
        _check_int("StepLR", "step_size", step_size, 1)
        _check_in("StepLR", "gamma", gamma, "> 0", lambda g: g > 0)
        self.step_size = step_size
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self._current_lrs()
        return [group["lr"] * self.gamma for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[float]:
        return [
            base_lr * self.gamma ** (self.last_epoch // self.step_size) for base_lr in self.base_lrs
        ]


class MultiStepLR(LRScheduler):
    """Decay the learning rate by γ at each milestone: lr_t = base_lr · γ^(milestones ≤ t).

    The exponent is the number of milestones reached by epoch t.

    Chainable form (what :meth:`step` computes, as PyTorch):
    lr_t = lr_{t−1} · γ when t is a milestone, else lr_{t−1}.

    Args:
        optimizer: the optimizer.
        milestones: the epochs at which to decay, strictly increasing integers >= 0.
        gamma: γ > 0, the factor applied at each milestone. Default: 0.1.
        last_epoch: see :class:`LRScheduler`. Default: -1.
    Raises:
        ValueError: a milestone is not an integer >= 0, or the milestones do not
            increase; ``gamma`` is not > 0.
    Example:
        >>> from mininn.module import Parameter
        >>> from mininn.optim import SGD
        >>> optimizer = SGD([Parameter([1.0])], lr=1.0)
        >>> scheduler = MultiStepLR(optimizer, milestones=[1, 3], gamma=0.5)
        >>> lrs = []
        >>> for epoch in range(4):
        ...     lrs.append(scheduler.get_last_lr()[0])
        ...     scheduler.step()
        >>> lrs
        [1.0, 0.5, 0.5, 0.25]
    """

    def __init__(
        self,
        optimizer: Optimizer,
        milestones: Sequence[int],
        gamma: float = 0.1,
        last_epoch: int = -1,
    ) -> None:
        milestones = list(milestones)
        for milestone in milestones:
            _check_int("MultiStepLR", "each milestone", milestone, 0)
        if not _increasing(milestones):
            raise ValueError(
                f"MultiStepLR: expected strictly increasing milestones, got {milestones}; "
                "sort them and list each epoch once"
            )
        _check_in("MultiStepLR", "gamma", gamma, "> 0", lambda g: g > 0)
        self.milestones = [int(milestone) for milestone in milestones]
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self.last_epoch not in self.milestones:
            return self._current_lrs()
        return [group["lr"] * self.gamma for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[float]:
        decays = bisect_right(self.milestones, self.last_epoch)
        return [base_lr * self.gamma**decays for base_lr in self.base_lrs]


class ExponentialLR(LRScheduler):
    """Decay the learning rate by ``gamma`` every epoch: lr_t = base_lr · γ^t.

    Chainable form (what :meth:`step` computes, as PyTorch): lr_t = lr_{t−1} · γ.

    Args:
        optimizer: the optimizer.
        gamma: γ > 0, the factor per epoch.
        last_epoch: see :class:`LRScheduler`. Default: -1.
    Raises:
        ValueError: ``gamma`` is not > 0.
    Example:
        >>> from mininn.module import Parameter
        >>> from mininn.optim import SGD
        >>> optimizer = SGD([Parameter([1.0])], lr=1.0)
        >>> scheduler = ExponentialLR(optimizer, gamma=0.5)
        >>> scheduler.step(); scheduler.step()
        >>> optimizer.param_groups[0]["lr"]
        0.25
    """

    def __init__(self, optimizer: Optimizer, gamma: float, last_epoch: int = -1) -> None:
        _check_in("ExponentialLR", "gamma", gamma, "> 0", lambda g: g > 0)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        # A resumed scheduler (last_epoch >= 0) keeps the loaded lr at construction.
        if self._is_initial:
            return self._current_lrs()
        return [group["lr"] * self.gamma for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[float]:
        return [base_lr * self.gamma**self.last_epoch for base_lr in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    r"""Anneal the learning rate along a half cosine from base_lr to eta_min over T_max epochs.

    Closed form (SGDR without restarts):
    η_t = η_min + (base_lr − η_min) · (1 + cos(π t / T_max)) / 2.

    :meth:`step` computes it recursively, as PyTorch, so that it composes with
    other changes to the lr::

        η_t = η_min + (η_{t−1} − η_min) · (1 + cos(π t / T)) / (1 + cos(π (t − 1) / T))
        η_t = η_{t−1} + (base_lr − η_min) · (1 − cos(π / T)) / 2   if (t − 1 − T) % (2 T) = 0

    with T = T_max

    (the second line steps out of the minimum, where the ratio would be 0 / 0).
    Past T_max the learning rate rises again along the cosine, period 2 T_max.

    Args:
        optimizer: the optimizer.
        T_max: the number of epochs from base_lr to eta_min, an integer >= 1.
        eta_min: η_min >= 0, the minimum learning rate. Default: 0.0.
        last_epoch: see :class:`LRScheduler`. Default: -1.
    Raises:
        ValueError: ``T_max`` is not an integer >= 1; ``eta_min`` < 0.
    References:
        Loshchilov & Hutter (2017), "SGDR: Stochastic Gradient Descent with Warm
        Restarts", ICLR, https://arxiv.org/abs/1608.03983
    Example:
        >>> from mininn.module import Parameter
        >>> from mininn.optim import SGD
        >>> optimizer = SGD([Parameter([1.0])], lr=1.0)
        >>> scheduler = CosineAnnealingLR(optimizer, T_max=4)
        >>> lrs = []
        >>> for epoch in range(5):
        ...     lrs.append(round(scheduler.get_last_lr()[0], 6))
        ...     scheduler.step()
        >>> lrs
        [1.0, 0.853553, 0.5, 0.146447, 0.0]
    """

    def __init__(
        self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1
    ) -> None:
        _check_int("CosineAnnealingLR", "T_max", T_max, 1)
        _check_in("CosineAnnealingLR", "eta_min", eta_min, ">= 0", lambda e: e >= 0)
        self.T_max = T_max
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        t, T, eta_min = self.last_epoch, self.T_max, self.eta_min
        if self._is_initial:
            return self._current_lrs()
        if self._step_count == 1 and t > 0:
            return [
                eta_min + (base_lr - eta_min) * (1 + math.cos((t) * math.pi / T)) / 2
                for base_lr in self.base_lrs
            ]
        if (t - 1 - T) % (2 * T) == 0:
            return [
                group["lr"] + (base_lr - eta_min) * (1 - math.cos(math.pi / T)) / 2
                for base_lr, group in zip(self.base_lrs, self.optimizer.param_groups, strict=True)
            ]
        return [
            (1 + math.cos(math.pi * t / T))
            / (1 + math.cos(math.pi * (t - 1) / T))
            * (group["lr"] - eta_min)
            + eta_min
            for group in self.optimizer.param_groups
        ]

    def _get_closed_form_lr(self) -> list[float]:
        return [
            self.eta_min
            + (base_lr - self.eta_min) * (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
            for base_lr in self.base_lrs
        ]


class LinearLR(LRScheduler):
    """Scale the learning rate by a factor that moves linearly from start_factor to end_factor.

    Closed form: lr_t = base_lr · (s + (e − s) · min(t, T) / T), with s the start
    factor, e the end factor and T ``total_iters``; constant after T.

    :meth:`step` computes it recursively, as PyTorch:
    lr_t = lr_{t−1} · (1 + (e − s) / (T s + (t − 1)(e − s))) for 0 < t ≤ T.

    Args:
        optimizer: the optimizer.
        start_factor: s in (0, 1], the factor at epoch 0. Default: 1/3.
        end_factor: e in [0, 1], the factor from epoch T on. Default: 1.0.
        total_iters: T, the number of epochs of the ramp, an integer >= 1. Default: 5.
        last_epoch: see :class:`LRScheduler`. Default: -1.
    Raises:
        ValueError: a factor outside its range; ``total_iters`` not an integer >= 1.
    Example:
        >>> from mininn.module import Parameter
        >>> from mininn.optim import SGD
        >>> optimizer = SGD([Parameter([1.0])], lr=1.0)
        >>> scheduler = LinearLR(optimizer, start_factor=0.25, total_iters=3)
        >>> lrs = []
        >>> for epoch in range(5):
        ...     lrs.append(scheduler.get_last_lr()[0])
        ...     scheduler.step()
        >>> lrs
        [0.25, 0.5, 0.75, 1.0, 1.0]
    """

    def __init__(
        self,
        optimizer: Optimizer,
        start_factor: float = 1.0 / 3,
        end_factor: float = 1.0,
        total_iters: int = 5,
        last_epoch: int = -1,
    ) -> None:
        _check_in("LinearLR", "start_factor", start_factor, "in (0, 1]", lambda s: 0 < s <= 1)
        _check_in("LinearLR", "end_factor", end_factor, "in [0, 1]", lambda e: 0 <= e <= 1)
        _check_int("LinearLR", "total_iters", total_iters, 1)
        self.start_factor = start_factor
        self.end_factor = end_factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        t, s, e, T = self.last_epoch, self.start_factor, self.end_factor, self.total_iters
        if t == 0:
            return [group["lr"] * s for group in self.optimizer.param_groups]
        if self._is_initial or t > T:
            return self._current_lrs()
        return [
            group["lr"] * (1.0 + (e - s) / (T * s + (t - 1) * (e - s)))
            for group in self.optimizer.param_groups
        ]

    def _get_closed_form_lr(self) -> list[float]:
        t, s, e, T = self.last_epoch, self.start_factor, self.end_factor, self.total_iters
        return [base_lr * (s + (e - s) * min(T, t) / T) for base_lr in self.base_lrs]


class SequentialLR(LRScheduler):
    """Run schedulers one after another, switching at the milestones.

    At epoch t it steps ``schedulers[i]``, with i the number of milestones <= t;
    at a milestone m_i the next scheduler restarts from its own epoch 0 (its closed
    form: usually its base_lr), as PyTorch does.

    Args:
        optimizer: the optimizer, the same as every scheduler's.
        schedulers: the schedulers, in order, built on ``optimizer`` (not
            :class:`ReduceLROnPlateau`).
        milestones: the epochs at which to switch, ``len(schedulers) − 1``
            strictly increasing integers >= 1.
        last_epoch: see :class:`LRScheduler`. Default: -1.
    Attributes:
        per_batch: True when any of the schedulers is a per-batch one.
    Raises:
        TypeError: ``optimizer`` or a scheduler is of the wrong type.
        ValueError: no schedulers; a :class:`ReduceLROnPlateau`; a scheduler of
            another optimizer; the wrong number of milestones, or milestones that
            are not increasing integers >= 1.
    Example:
        >>> from mininn.module import Parameter
        >>> from mininn.optim import SGD
        >>> optimizer = SGD([Parameter([1.0])], lr=1.0)
        >>> warmup = LinearLR(optimizer, start_factor=0.5, total_iters=2)
        >>> decay = ExponentialLR(optimizer, gamma=0.5)
        >>> scheduler = SequentialLR(optimizer, [warmup, decay], milestones=[2])
        >>> lrs = []
        >>> for epoch in range(5):
        ...     lrs.append(scheduler.get_last_lr()[0])
        ...     scheduler.step()
        >>> lrs
        [0.5, 0.75, 1.0, 0.5, 0.25]
    """

    def __init__(
        self,
        optimizer: Optimizer,
        schedulers: Sequence[LRScheduler],
        milestones: Sequence[int],
        last_epoch: int = -1,
    ) -> None:
        _check_optimizer("SequentialLR", optimizer)
        _check_int("SequentialLR", "last_epoch", last_epoch, -1)
        schedulers, milestones = list(schedulers), list(milestones)
        if not schedulers:
            raise ValueError("SequentialLR: expected at least one scheduler, got none")
        for index, scheduler in enumerate(schedulers):
            if isinstance(scheduler, ReduceLROnPlateau):
                raise ValueError(
                    f"SequentialLR: schedulers[{index}] is a ReduceLROnPlateau, which needs a "
                    "metric at each step; step it separately"
                )
            if not isinstance(scheduler, LRScheduler):
                raise TypeError(
                    f"SequentialLR: schedulers[{index}] is a {type(scheduler).__name__}, "
                    "expected a scheduler of mininn.optim.lr_scheduler"
                )
            if scheduler.optimizer is not optimizer:
                raise ValueError(
                    f"SequentialLR: schedulers[{index}] ({type(scheduler).__name__}) belongs "
                    "to another optimizer; build every scheduler on the same optimizer"
                )
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(
                f"SequentialLR: expected {len(schedulers) - 1} milestone(s) for "
                f"{len(schedulers)} schedulers (one fewer), got {len(milestones)}: {milestones}"
            )
        for milestone in milestones:
            _check_int("SequentialLR", "each milestone", milestone, 1)
        if not _increasing(milestones):
            raise ValueError(
                f"SequentialLR: expected strictly increasing milestones, got {milestones}"
            )
        self._schedulers = schedulers
        self._milestones = [int(milestone) for milestone in milestones]
        self.last_epoch = last_epoch + 1
        self.optimizer = optimizer
        # Undo the construction step of every scheduler, then take it again for the
        # first one only.
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"]
        self._undo_initial_steps(self)
        index = bisect_right(self._milestones, 0)
        self._schedulers[index]._initial_step()
        self._last_lr = self._schedulers[index].get_last_lr()

    @property
    def per_batch(self) -> bool:  # type: ignore[override]
        return any(scheduler.per_batch for scheduler in self._schedulers)

    @staticmethod
    def _undo_initial_steps(scheduler: LRScheduler) -> None:
        if isinstance(scheduler, SequentialLR):
            for child in scheduler._schedulers:
                SequentialLR._undo_initial_steps(child)
        else:
            scheduler.last_epoch -= 1

    def step(self) -> None:  # type: ignore[override]
        """Advance the schedule by one epoch: step the scheduler in charge, or
        restart the next one at its milestone."""
        self.last_epoch += 1
        index = bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[index]
        if index > 0 and self._milestones[index - 1] == self.last_epoch:
            scheduler._update_lr(0)
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()

    def state_dict(self) -> dict[str, Any]:
        """The state, with each scheduler's own state under ``"_schedulers"``."""
        state = {
            key: _copy(value)
            for key, value in vars(self).items()
            if key not in ("optimizer", "_schedulers")
        }
        state["_schedulers"] = [scheduler.state_dict() for scheduler in self._schedulers]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state returned by :meth:`state_dict`, the schedulers' included.

        Raises:
            ValueError: the state does not fit (see :meth:`LRScheduler.load_state_dict`),
                or holds another number of schedulers.
        """
        self._check_state(state_dict)
        children = list(state_dict["_schedulers"])
        if len(children) != len(self._schedulers):
            raise ValueError(
                f"SequentialLR.load_state_dict: the state holds {len(children)} schedulers, "
                f"this SequentialLR has {len(self._schedulers)}"
            )
        for scheduler, child in zip(self._schedulers, children, strict=True):
            scheduler._check_state(child)
        for key, value in state_dict.items():
            if key != "_schedulers":
                setattr(self, key, _copy(value))
        for scheduler, child in zip(self._schedulers, children, strict=True):
            scheduler.load_state_dict(child)


class OneCycleLR(LRScheduler):
    """The 1cycle policy: warm the learning rate up to max_lr, then anneal it far below the start.

    Per batch (``per_batch = True``: call :meth:`step` after every optimizer step).
    With lr_0 = max_lr / div_factor and lr_min = lr_0 / final_div_factor, the
    learning rate at step t moves, by cosine or linear annealing
    anneal(a, b, p) = b + (a − b)(1 + cos(π p)) / 2   or   a + (b − a) p, through
    the phases (each phase ends at the step shown; p is the fraction of the phase done)::

        two phases:   lr_0 → max_lr    until pct_start · total_steps − 1
                      max_lr → lr_min  until total_steps − 1
        three_phase:  lr_0 → max_lr    until pct_start · total_steps − 1
                      max_lr → lr_0    until 2 · pct_start · total_steps − 2
                      lr_0 → lr_min    until total_steps − 1

    With ``cycle_momentum`` the momentum moves the opposite way, between
    max_momentum (at lr_0) and base_momentum (at max_lr): ``group["momentum"]``
    for SGD and RMSprop, β1 in ``group["betas"]`` for Adam and AdamW.

    At construction each param group gets ``initial_lr`` (lr_0), ``max_lr``,
    ``min_lr`` (and ``max_momentum``, ``base_momentum``), as in PyTorch.

    Args:
        optimizer: the optimizer.
        max_lr: the peak learning rate > 0, one number or one per param group.
        total_steps: the number of steps of the cycle, an integer >= 1. Default:
            None, then ``epochs * steps_per_epoch``.
        epochs: the number of epochs, used with steps_per_epoch. Default: None.
        steps_per_epoch: the number of batches per epoch. Default: None.
        pct_start: the fraction of the cycle spent raising the lr, in [0, 1]. Default: 0.3.
        anneal_strategy: ``'cos'`` or ``'linear'``. Default: ``'cos'``.
        cycle_momentum: cycle the momentum (or β1) inversely to the lr. Default: True.
        base_momentum: the momentum at max_lr, one number or one per group. Default: 0.85.
        max_momentum: the momentum at lr_0, one number or one per group. Default: 0.95.
        div_factor: lr_0 = max_lr / div_factor, > 0. Default: 25.0.
        final_div_factor: lr_min = lr_0 / final_div_factor, > 0. Default: 1e4.
        three_phase: use the three-phase schedule of the paper instead of fastai's
            two phases. Default: False.
        last_epoch: the index of the last *batch*; see :class:`LRScheduler`. Default: -1.
    Raises:
        ValueError: neither ``total_steps`` nor both ``epochs`` and
            ``steps_per_epoch``; one of them not an integer >= 1; ``pct_start``
            outside [0, 1]; an unknown ``anneal_strategy``; a list of per-group
            values of the wrong length; a non-positive ``max_lr``, ``div_factor``
            or ``final_div_factor``; and, at :meth:`step`, stepping past total_steps.
    References:
        Smith & Topin (2017), "Super-Convergence: Very Fast Training of Neural
        Networks Using Large Learning Rates", https://arxiv.org/abs/1708.07120
    Example:
        >>> from mininn.module import Parameter
        >>> from mininn.optim import SGD
        >>> optimizer = SGD([Parameter([1.0])], lr=0.1, momentum=0.9)
        >>> scheduler = OneCycleLR(optimizer, max_lr=1.0, total_steps=5, pct_start=0.4,
        ...                        anneal_strategy="linear", div_factor=4.0, final_div_factor=10.0)
        >>> lrs, momentums = [], []
        >>> for batch in range(5):
        ...     lrs.append(round(optimizer.param_groups[0]["lr"], 6))
        ...     momentums.append(round(optimizer.param_groups[0]["momentum"], 6))
        ...     scheduler.step()
        >>> lrs
        [0.25, 1.0, 0.675, 0.35, 0.025]
        >>> momentums
        [0.95, 0.85, 0.883333, 0.916667, 0.95]
    """

    per_batch = True

    def __init__(
        self,
        optimizer: Optimizer,
        max_lr: float | list[float],
        total_steps: int | None = None,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        pct_start: float = 0.3,
        anneal_strategy: str = "cos",
        cycle_momentum: bool = True,
        base_momentum: float | list[float] = 0.85,
        max_momentum: float | list[float] = 0.95,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
        last_epoch: int = -1,
    ) -> None:
        name = "OneCycleLR"
        _check_optimizer(name, optimizer)
        if total_steps is not None:
            _check_int(name, "total_steps", total_steps, 1)
        elif epochs is not None and steps_per_epoch is not None:
            _check_int(name, "epochs", epochs, 1)
            _check_int(name, "steps_per_epoch", steps_per_epoch, 1)
            total_steps = epochs * steps_per_epoch
        else:
            raise ValueError(
                "OneCycleLR: give total_steps, or both epochs and steps_per_epoch "
                f"(total_steps = epochs * steps_per_epoch); got total_steps={total_steps}, "
                f"epochs={epochs}, steps_per_epoch={steps_per_epoch}"
            )
        _check_in(name, "pct_start", pct_start, "in [0, 1]", lambda p: 0 <= p <= 1)
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(
                f"OneCycleLR: anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}"
            )
        _check_in(name, "div_factor", div_factor, "> 0", lambda d: d > 0)
        _check_in(name, "final_div_factor", final_div_factor, "> 0", lambda d: d > 0)
        max_lrs = _per_group(name, "max_lr", max_lr, optimizer)
        for value in max_lrs:
            _check_in(name, "max_lr", value, "> 0", lambda lr: lr > 0)
        if cycle_momentum and not {"momentum", "betas"} & set(optimizer.defaults):
            raise ValueError(
                f"OneCycleLR: cycle_momentum=True needs an optimizer with momentum or betas, "
                f"got {type(optimizer).__name__}; pass cycle_momentum=False"
            )
        max_momentums = _per_group(name, "max_momentum", max_momentum, optimizer)
        base_momentums = _per_group(name, "base_momentum", base_momentum, optimizer)

        self.total_steps = int(total_steps)
        warmup_end = float(pct_start * self.total_steps) - 1
        if three_phase:
            self._schedule_phases = [
                _phase(warmup_end, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                _phase(float(2 * pct_start * self.total_steps) - 2,
                       "max_lr", "initial_lr", "base_momentum", "max_momentum"),
                _phase(self.total_steps - 1,
                       "initial_lr", "min_lr", "max_momentum", "max_momentum"),
            ]  # fmt: skip
        else:
            self._schedule_phases = [
                _phase(warmup_end, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                _phase(self.total_steps - 1, "max_lr", "min_lr", "base_momentum", "max_momentum"),
            ]
        self._anneal_func_type = anneal_strategy
        if last_epoch == -1:
            for group, peak in zip(optimizer.param_groups, max_lrs, strict=True):
                group["initial_lr"] = peak / div_factor
                group["max_lr"] = peak
                group["min_lr"] = group["initial_lr"] / final_div_factor
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            self.use_beta1 = "betas" in optimizer.defaults
            if last_epoch == -1:
                for group, high, low in zip(
                    optimizer.param_groups, max_momentums, base_momentums, strict=True
                ):
                    self._set_momentum(group, high)
                    group["max_momentum"] = high
                    group["base_momentum"] = low
        super().__init__(optimizer, last_epoch)

    def _set_momentum(self, group: dict, momentum: float) -> None:
        if self.use_beta1:
            group["betas"] = (momentum, *group["betas"][1:])
        else:
            group["momentum"] = momentum

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self._anneal_func_type == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def get_lr(self) -> list[float]:
        step = self.last_epoch
        if step > self.total_steps:
            raise ValueError(
                f"OneCycleLR: stepped {step} times, past total_steps={self.total_steps}; "
                "step it once per batch, with total_steps (or epochs * steps_per_epoch) "
                "covering the whole training"
            )
        lrs = []
        for group in self.optimizer.param_groups:
            start_step = 0.0
            for index, phase in enumerate(self._schedule_phases):
                end_step = phase["end_step"]
                if step <= end_step or index == len(self._schedule_phases) - 1:
                    pct = (step - start_step) / (end_step - start_step)
                    lr = self._anneal(group[phase["start_lr"]], group[phase["end_lr"]], pct)
                    if self.cycle_momentum:
                        momentum = self._anneal(
                            group[phase["start_momentum"]], group[phase["end_momentum"]], pct
                        )
                    break
                start_step = phase["end_step"]
            lrs.append(lr)
            if self.cycle_momentum:
                self._set_momentum(group, momentum)
        return lrs


def _phase(end_step: float, start_lr: str, end_lr: str, start_momentum: str,
           end_momentum: str) -> dict[str, Any]:  # fmt: skip
    """A phase of :class:`OneCycleLR`: where it ends, and the group keys it anneals between."""
    return {"end_step": end_step, "start_lr": start_lr, "end_lr": end_lr,
            "start_momentum": start_momentum, "end_momentum": end_momentum}  # fmt: skip


class ReduceLROnPlateau(LRScheduler):
    """Multiply the lr by ``factor`` when a metric has not improved for ``patience`` epochs.

    At each :meth:`step(metric) <step>` (once per epoch, after validation), as PyTorch:

    - the metric *improves* when it is below best · (1 − threshold) (mode 'min',
      threshold_mode 'rel'), below best − threshold ('min', 'abs'), above
      best · (1 + threshold) ('max', 'rel') or above best + threshold ('max', 'abs');
      then best ← metric and the count of bad epochs is reset, else it grows by 1;
    - during the ``cooldown`` epochs after a reduction bad epochs are not counted;
    - when more than ``patience`` bad epochs have been counted, each group's
      lr ← max(lr · factor, min_lr), unless that changes it by no more than ``eps``;
      then the cooldown starts and the count is reset.

    Args:
        optimizer: the optimizer.
        mode: ``'min'`` (a loss) or ``'max'`` (an accuracy). Default: ``'min'``.
        factor: the factor of each reduction, in [0, 1). Default: 0.1.
        patience: the number of bad epochs tolerated, an integer >= 0. Default: 10.
        threshold: the least change that counts as an improvement, >= 0. Default: 1e-4.
        threshold_mode: ``'rel'`` or ``'abs'``. Default: ``'rel'``.
        cooldown: the epochs to wait after a reduction, an integer >= 0. Default: 0.
        min_lr: the lower bound of the lr, >= 0, one number or one per param group.
            Default: 0.
        eps: reductions smaller than this are skipped, >= 0. Default: 1e-8.
    Attributes:
        best: the best metric so far; num_bad_epochs, cooldown_counter: the counters.
    Raises:
        ValueError: ``factor`` >= 1 or < 0; an unknown mode or threshold_mode; a
            negative patience, cooldown, threshold, min_lr or eps; a list of min_lr
            of the wrong length.
    Example:
        >>> from mininn.module import Parameter
        >>> from mininn.optim import SGD
        >>> optimizer = SGD([Parameter([1.0])], lr=1.0)
        >>> scheduler = ReduceLROnPlateau(optimizer, factor=0.5, patience=1)
        >>> for val_loss in [1.0, 0.9, 0.95, 0.95, 0.95, 0.95]:
        ...     scheduler.step(val_loss)
        >>> scheduler.get_last_lr()  # halved after two bad epochs, and again after two more
        [0.25]
    """

    def __init__(
        self,
        optimizer: Optimizer,
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: float | list[float] = 0,
        eps: float = 1e-8,
    ) -> None:
        name = "ReduceLROnPlateau"
        _check_in(name, "factor", factor, "in [0, 1) (new_lr = lr * factor)", lambda f: 0 <= f < 1)
        _check_optimizer(name, optimizer)
        min_lrs = _per_group(name, "min_lr", min_lr, optimizer)
        for value in min_lrs:
            _check_in(name, "min_lr", value, ">= 0", lambda lr: lr >= 0)
        _check_int(name, "patience", patience, 0)
        _check_int(name, "cooldown", cooldown, 0)
        _check_in(name, "eps", eps, ">= 0", lambda e: e >= 0)
        self.factor = factor
        self.optimizer = optimizer
        self.default_min_lr = None if isinstance(min_lr, (list, tuple)) else min_lr
        self.min_lrs = min_lrs
        self.patience = patience
        self.cooldown = cooldown
        self.eps = eps
        self.last_epoch = 0
        self._last_lr = self._current_lrs()
        self._init_is_better(mode, threshold, threshold_mode)
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    def _init_is_better(self, mode: str, threshold: float, threshold_mode: str) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"ReduceLROnPlateau: mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(
                f"ReduceLROnPlateau: threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}"
            )
        _check_in("ReduceLROnPlateau", "threshold", threshold, ">= 0", lambda t: t >= 0)
        self.mode_worse = math.inf if mode == "min" else -math.inf
        self.mode = mode
        self.threshold = threshold
        self.threshold_mode = threshold_mode

    @property
    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def _is_better(self, a: float, best: float) -> bool:
        if self.mode == "min" and self.threshold_mode == "rel":
            return a < best * (1.0 - self.threshold)
        if self.mode == "min":
            return a < best - self.threshold
        if self.threshold_mode == "rel":
            return a > best * (self.threshold + 1.0)
        return a > best + self.threshold

    def step(self, metrics: float, epoch: int | None = None) -> None:  # type: ignore[override]
        """Count the epoch as good or bad from ``metrics``, and reduce the lr when due.

        Args:
            metrics: the monitored value of this epoch (e.g. the validation loss),
                a number or a 0-d array.
            epoch: deprecated in PyTorch: sets ``last_epoch``. Default: None (the next).
        """
        current = float(metrics)
        self.last_epoch = self.last_epoch + 1 if epoch is None else epoch
        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad epochs in the cooldown do not count
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = self._current_lrs()

    def _reduce_lr(self) -> None:
        if len(self.min_lrs) != len(self.optimizer.param_groups):
            if self.default_min_lr is None:
                raise RuntimeError(
                    f"ReduceLROnPlateau: the optimizer has {len(self.optimizer.param_groups)} "
                    f"param groups, but min_lr was given for {len(self.min_lrs)}; set "
                    "scheduler.min_lrs to one value per group"
                )
            self.min_lrs = [self.default_min_lr] * len(self.optimizer.param_groups)
        for group, min_lr in zip(self.optimizer.param_groups, self.min_lrs, strict=True):
            old_lr = float(group["lr"])
            new_lr = max(old_lr * self.factor, min_lr)
            if old_lr - new_lr > self.eps:
                group["lr"] = new_lr

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state returned by :meth:`state_dict` (see :meth:`LRScheduler.load_state_dict`).

        Raises:
            ValueError: the state does not fit, or holds an unknown mode.
        """
        self._check_state(state_dict)
        self._init_is_better(
            state_dict["mode"], state_dict["threshold"], state_dict["threshold_mode"]
        )
        for key, value in state_dict.items():
            setattr(self, key, _copy(value))
