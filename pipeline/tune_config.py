"""The ``tune:`` section of params.yaml: the sweep's search space and settings, checked.

Read by the sweep stage, ``pipeline/tune.py``. Every value is checked where it is read,
and a bad one stops with a :class:`~pipeline.common.StageError` naming its key (for
example ``tune.space.train.scheduler.args.max_lr.loguniform[0]``), the value and what
is allowed. The swept values are checked by ``pipeline/recipe.py`` itself, set one at a
time into the recipe of ``tune.dataset``. Also here: the best configuration in the
shape of params.yaml, and the ``dvc exp run -S`` arguments that apply it.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from mininn.data import DATASETS
from pipeline import common, recipe
from pipeline.common import StageError

KEYS = (
    "dataset",
    "num_samples",
    "max_concurrent_trials",
    "num_cpus",
    "cpus_per_trial",
    "epochs",
    "metric",
    "mode",
    "asha",
    "max_failures",
    "seed",
    "space",
)
ASHA_KEYS = ("grace_period", "reduction_factor")
METRICS = {"val_accuracy": "max", "val_loss": "min"}

# What a sweep may set: the dotted keys of model:/train: and the kind of distribution
# that fits each (real, integer or categorical). The values are checked by recipe.py.
SWEEPABLE: dict[str, str] = {
    "model.hidden_sizes": "categorical",
    "model.activation": "categorical",
    "model.batch_norm": "categorical",
    "model.dropout": "real",
    "train.optimizer": "categorical",
    "train.lr": "real",
    "train.weight_decay": "real",
    "train.momentum": "real",
    "train.betas": "categorical",
    "train.label_smoothing": "real",
    "train.clip_grad_norm": "real",
    "train.augment.crop_padding": "integer",
    "train.augment.hflip": "real",
    "train.batch_size": "integer",
    "train.seed": "integer",
}
SCHEDULER_ARGS = "train.scheduler.args"
"""``train.scheduler.args.<name>``: any keyword argument of tune.dataset's scheduler."""
NESTING = ("train.scheduler", SCHEDULER_ARGS, "train.augment")
"""The mappings a space descends into to reach a sweepable key."""
KIND_DISTRIBUTIONS = {
    "real": ("choice", "grid", "uniform", "loguniform"),
    "integer": ("choice", "grid", "randint"),
    "categorical": ("choice", "grid"),
    "any": ("choice", "grid", "uniform", "loguniform", "randint"),
}
BUDGET_ARGS = {"OneCycleLR": ("epochs", "steps_per_epoch", "total_steps"),
               "CosineAnnealingLR": ("T_max",)}  # fmt: skip
"""Scheduler arguments ``recipe.scheduler_kwargs`` fills from the epochs when omitted:
a trial's schedule spans its budget, tune.epochs."""
USES_KEYS = ("train.optimizer", f"{SCHEDULER_ARGS}.cycle_momentum")
"""The keys whose values decide whether others do anything (:class:`Uses`)."""
NOT_SWEEPABLE = {
    "train.epochs": "a trial's epoch budget is tune.epochs",
    "train.patience": "ASHA stops the weak trials (tune.asha)",
    "train.dtype": "the data reach the workers in one dtype; set train.dtype",
    "train.scheduler": "the scheduler is the recipe's; sweep its arguments, "
    "train.scheduler.args.<name>",
    "train.scheduler.name": "the scheduler is the recipe's; sweep its arguments, "
    "train.scheduler.args.<name>",
    "train.augment": "sweep train.augment.crop_padding and train.augment.hflip",
}


def _check_mapping(value: Any, key: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise StageError(f"{key}: expected a mapping, got {value!r}")
    return value


def _check_keys(section: Mapping[str, Any], key: str, allowed: Sequence[str]) -> None:
    unknown = [k for k in section if k not in allowed]
    if unknown:
        raise StageError(f"{key}.{unknown[0]}: unknown key; expected the keys {list(allowed)}")
    missing = [k for k in allowed if k not in section]
    if missing:
        raise StageError(f"{key}: missing key(s) {', '.join(f'{key}.{k}' for k in missing)}")


# ------------------------------------------------------------------ dotted keys


def get_dotted(tree: Mapping[str, Any], name: str) -> Any:
    """The value at the dotted key ``name`` of nested mappings, e.g. ``train.augment.hflip``."""
    node: Any = tree
    for part in name.split("."):
        node = node[part]
    return node


def set_dotted(tree: dict[str, Any], name: str, value: Any) -> None:
    """Set the dotted key ``name`` of nested dicts to ``value`` (the parents must exist)."""
    *parents, key = name.split(".")
    node = tree
    for part in parents:
        node = node[part]
    node[key] = value


def _has_dotted(tree: Any, name: str) -> bool:
    node = tree
    for part in name.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def set_by_override(name: str, override: Mapping[str, Any], base: Mapping[str, Any]) -> bool:
    """Whether ``overrides.<dataset>`` decides the value of ``name`` for that dataset.

    True when the override sets the key, or a key above it to a value that is not a
    mapping (it replaces the key), or ``train.scheduler`` to another scheduler (whose
    ``args`` replace the base's): recipe.py's deep merge.

    Args:
        name: a dotted key of ``model:``/``train:``, e.g. ``train.scheduler.args.max_lr``.
        override: the dataset's ``{section: keys}`` (``recipe.overrides_params``).
        base: params.yaml's ``model:`` and ``train:`` sections as written.
    """
    base_scheduler = base["train"].get("scheduler")
    base_name = base_scheduler.get("name") if isinstance(base_scheduler, Mapping) else None
    node: Any = override
    walked: list[str] = []
    for part in name.split("."):
        if not isinstance(node, Mapping):
            return True  # a value above the key replaced it
        if walked == ["train", "scheduler"] and node.get("name", base_name) != base_name:
            return True  # another scheduler: the base's args are not merged
        if part not in node:
            return False
        node = node[part]
        walked.append(part)
    return True


# ------------------------------------------------------------------ the space


def _scheduler_argument_kind(scheduler: str, arg: str) -> str:
    """A flag or a word (its default is a bool or str): categorical; else numbers or any
    value the constructor accepts."""
    default = inspect.signature(recipe.SCHEDULERS[scheduler]).parameters[arg].default
    return "categorical" if isinstance(default, (bool, str)) else "any"


def _allowed(base: Mapping[str, Any]) -> str:
    """The sweepable keys, in one line."""
    scheduler = base["train"]["scheduler"]
    names = list(SWEEPABLE)
    if scheduler is not None:
        budget = BUDGET_ARGS.get(scheduler["name"], ())
        args = [a for a in recipe.scheduler_arguments(scheduler["name"]) if a not in budget]
        names.append(f"{SCHEDULER_ARGS}.<{'|'.join(args)}> ({scheduler['name']}'s)")
    return ", ".join(names)


class Uses(NamedTuple):
    """What the trials of a sweep may use, from the recipe and the swept values: the
    optimizers, and whether OneCycleLR cycles the momentum (``cycle_momentum``; an
    empty set without OneCycleLR)."""

    optimizers: frozenset[str]
    cycle_momentum: frozenset[bool]


def uses_of(values: Mapping[str, Sequence[Any]], base: Mapping[str, Any]) -> Uses:
    """:class:`Uses` of trials that start from ``base`` and may set each dotted key of
    ``values`` to any of its values (those the key does not take are left out: the key's
    own check refuses them)."""
    optimizers = values.get("train.optimizer", [base["train"]["optimizer"]])
    scheduler = base["train"]["scheduler"]
    cycle: list[Any] = []
    if scheduler is not None and scheduler["name"] == "OneCycleLR":
        default = inspect.signature(recipe.SCHEDULERS["OneCycleLR"]).parameters
        written = scheduler["args"].get("cycle_momentum", default["cycle_momentum"].default)
        cycle = values.get(f"{SCHEDULER_ARGS}.cycle_momentum", [written])
    return Uses(
        frozenset(o for o in optimizers if o in recipe.OPTIMIZERS),
        frozenset(c for c in cycle if isinstance(c, bool)),
    )


def _does_nothing(name: str, base: Mapping[str, Any], dataset: str, uses: Uses) -> str | None:
    """Why setting ``name`` changes no trial (recipe.build_optimizer and OneCycleLR's
    rules), with what to sweep instead; None when it does something."""
    cycling = uses.cycle_momentum == {True}  # OneCycleLR sets the momentum in every trial
    cycle_args = f"{SCHEDULER_ARGS}.max_momentum or {SCHEDULER_ARGS}.base_momentum"
    optimizers = "/".join(sorted(uses.optimizers))
    takes_momentum = uses.optimizers & set(recipe.MOMENTUM_OPTIMIZERS)
    if name == "train.momentum" and not takes_momentum:
        return (
            f"train.momentum does nothing with {dataset}'s optimizer {optimizers}: only "
            f"{' and '.join(recipe.MOMENTUM_OPTIMIZERS)} take it; sweep "
            f"{cycle_args if cycling else 'train.betas'} instead"
        )
    if name == "train.momentum" and cycling:
        return (
            f"train.momentum does nothing under {dataset}'s OneCycleLR with "
            "cycle_momentum, which moves the momentum between max_momentum and "
            f"base_momentum; sweep {cycle_args} instead"
        )
    if name == "train.betas" and not uses.optimizers - takes_momentum:
        return (
            f"train.betas does nothing with {dataset}'s optimizer {optimizers}: only the "
            "other optimizers take it; sweep "
            f"{cycle_args if cycling else 'train.momentum'} instead"
        )
    if name in (f"{SCHEDULER_ARGS}.max_momentum", f"{SCHEDULER_ARGS}.base_momentum") and (
        uses.cycle_momentum == {False}
    ):
        return (
            f"{name.rpartition('.')[2]} does nothing under {dataset}'s OneCycleLR with "
            f"cycle_momentum: false; sweep {SCHEDULER_ARGS}.cycle_momentum too, or "
            "train.momentum (sgd, rmsprop) or train.betas (adam, adamw)"
        )
    return None


def _check_beta2_varies(where: str, values: Sequence[Any], dataset: str, uses: Uses) -> None:
    """Under OneCycleLR with cycle_momentum, β1 of train.betas is the cycle's: refuse a
    sweep of train.betas whose values differ in β1 alone."""
    if uses.cycle_momentum != {True} or len({tuple(v)[1:] for v in values}) != 1:
        return
    raise StageError(
        f"{where}: only β2 of train.betas counts under {dataset}'s OneCycleLR with "
        "cycle_momentum, which moves β1 between max_momentum and base_momentum, and every "
        f"value has β2 {values[0][1]!r}; sweep {SCHEDULER_ARGS}.max_momentum or "
        f"{SCHEDULER_ARGS}.base_momentum instead"
    )


def _kind(
    name: str, where: str, base: Mapping[str, Any], dataset: str, uses: Uses | None = None
) -> str:
    """The kind of the sweepable key ``name``, or a StageError saying why it is not one:
    not a key of ``base``'s recipe, or one that changes no trial (:class:`Uses`; default:
    ``base``'s own)."""
    scheduler = base["train"]["scheduler"]
    if name == "train.lr" and scheduler is not None and scheduler["name"] == "OneCycleLR":
        raise StageError(
            f"{where}: train.lr does nothing under {dataset}'s OneCycleLR, which sets the "
            "learning rate from max_lr; sweep train.scheduler.args.max_lr instead"
        )
    why = _does_nothing(name, base, dataset, uses or uses_of({}, base))
    if why is not None:
        raise StageError(f"{where}: {why}")
    if name in SWEEPABLE:
        return SWEEPABLE[name]
    if name.startswith(SCHEDULER_ARGS + "."):
        arg = name[len(SCHEDULER_ARGS) + 1 :]
        if scheduler is None:
            raise StageError(
                f"{where}: {dataset}'s recipe has no scheduler (train.scheduler: null); "
                "set one, or sweep train.lr"
            )
        if arg in BUDGET_ARGS.get(scheduler["name"], ()):
            raise StageError(
                f"{where}: {scheduler['name']}'s {arg} is filled from a trial's budget, "
                "tune.epochs; sweep another argument"
            )
        if arg in recipe.scheduler_arguments(scheduler["name"]):
            return _scheduler_argument_kind(scheduler["name"], arg)
    why = NOT_SWEEPABLE.get(name, f"the sweepable keys are {_allowed(base)}")
    raise StageError(f"{where}: unknown parameter {name!r}; {why}")


def _leaves(name: str, spec: Any) -> Iterator[tuple[str, Any]]:
    """``(dotted key, distribution)`` of every key a space names, descending into NESTING."""
    distribution = isinstance(spec, Mapping) and any(d in spec for d in KIND_DISTRIBUTIONS["any"])
    if name in NESTING and isinstance(spec, Mapping) and spec and not distribution:
        for key, inner in spec.items():
            yield from _leaves(f"{name}.{key}", inner)
    else:
        yield name, spec


def check_space(
    space: Any, base: Mapping[str, Any], dataset: str = "tune.dataset"
) -> dict[str, tuple[str, Any]]:
    """Validate ``tune.space``; return ``{"dotted.key": (distribution, arguments)}``.

    The space has the shape of params.yaml: under ``model:`` and ``train:``, the keys
    to sweep (nested ones too), each with one distribution::

        space:
          train:
            scheduler:
              args:
                max_lr:
                  loguniform: [0.001, 0.01]  # log-uniform between the bounds
            weight_decay:
              loguniform: [0.001, 0.1]
            batch_size:
              choice: [64, 128, 256]         # one of the values, drawn per trial
          model:
            dropout:
              uniform: [0.1, 0.5]

    ``grid: [...]`` tries every value (times ``num_samples``), ``randint: [low, high]``
    draws an integer with both bounds included. The keys are those of ``SWEEPABLE``
    and ``train.scheduler.args.<name>``, any keyword argument of the scheduler of
    ``base`` except those filled from the epochs (``BUDGET_ARGS``). Each value of a
    choice or grid and each bound is set into ``base`` alone and checked by
    ``recipe.check_model``/``check_train``, the rules every stage applies (the
    scheduler built on a stand-in optimizer); values drawn between two accepted
    bounds, and combinations of values, are the trial's to refuse.

    Args:
        space: ``tune.space`` as written.
        base: the recipe the trials start from, ``recipe.resolved_params(dataset)``.
        dataset: its name, for the messages.
    Raises:
        StageError: the space is empty, names an unknown section or parameter (the
            message lists the sweepable ones), a parameter no trial would use (the
            message says what to sweep instead): ``train.lr`` under OneCycleLR, which
            sets the lr from max_lr; ``train.momentum`` with adam/adamw, or under
            OneCycleLR with cycle_momentum (which sets it); ``train.betas`` with
            sgd/rmsprop, or differing in β1 alone under OneCycleLR with cycle_momentum
            (which sets β1); OneCycleLR's ``max_momentum``/``base_momentum`` with
            ``cycle_momentum: false``; or a distribution or value that does not fit its
            parameter. The message names the key, e.g.
            ``tune.space.model.dropout.uniform[1]``.
    Example:
        >>> base = recipe.resolved_params("mnist")
        >>> check_space({"model": {"dropout": {"uniform": [0.1, 0.5]}}}, base)
        {'model.dropout': ('uniform', [0.1, 0.5])}
        >>> check_space({"train": {"label_smoothing": {"choice": [0.1, 1.5]}}}, base)
        Traceback (most recent call last):
        ...
        pipeline.common.StageError: tune.space.train.label_smoothing.choice[1]: expected a value in [0, 1], got 1.5
    """  # noqa: E501
    example = "e.g. model: {dropout: {uniform: [0.1, 0.5]}}"
    if space is None or (isinstance(space, Mapping) and not space):
        raise StageError(f"tune.space: empty; name at least one parameter to sweep, {example}")
    _check_mapping(space, "tune.space")
    leaves: dict[str, Any] = {}
    for section, keys in space.items():
        where = f"tune.space.{section}"
        if section not in ("model", "train"):
            raise StageError(f"{where}: unknown section; the sweep sets keys of model: and train:")
        if not keys:
            raise StageError(f"{where}: empty; name a parameter to sweep, {example}")
        for key, spec in _check_mapping(keys, where).items():
            leaves.update(_leaves(f"{section}.{key}", spec))
    # First the keys that decide what the others do (the optimizer, OneCycleLR's cycling).
    checked: dict[str, tuple[str, Any]] = {}
    for name in (n for n in USES_KEYS if n in leaves):
        checked[name] = _check_distribution(name, leaves[name], base, dataset)
    uses = uses_of({name: args for name, (_, args) in checked.items()}, base)
    for name in (n for n in leaves if n not in checked):
        checked[name] = _check_distribution(name, leaves[name], base, dataset, uses)
    if "train.betas" in checked and uses.optimizers - set(recipe.MOMENTUM_OPTIMIZERS):
        distribution, values = checked["train.betas"]
        _check_beta2_varies(f"tune.space.train.betas.{distribution}", values, dataset, uses)
    return {name: checked[name] for name in leaves}


def _check_distribution(
    name: str, spec: Any, base: Mapping[str, Any], dataset: str, uses: Uses | None = None
) -> tuple[str, Any]:
    where = f"tune.space.{name}"
    kind = _kind(name, where, base, dataset, uses)
    allowed = KIND_DISTRIBUTIONS[kind]
    if not isinstance(spec, Mapping) or len(spec) != 1 or next(iter(spec)) not in allowed:
        raise StageError(
            f"{where}: expected one distribution of {list(allowed)}, e.g. "
            f"{{{allowed[0]}: [...]}}, got {spec!r}"
        )
    distribution, args = next(iter(spec.items()))
    where = f"{where}.{distribution}"
    if not isinstance(args, list) or not args:
        raise StageError(f"{where}: expected a non-empty list, got {args!r}")
    if distribution in ("choice", "grid"):
        return distribution, [
            _check_value(name, v, f"{where}[{i}]", base) for i, v in enumerate(args)
        ]
    if len(args) != 2:
        raise StageError(f"{where}: expected [low, high], got {args!r}")
    number = common.check_int if distribution == "randint" else common.check_number
    for i, v in enumerate(args):
        number(v, f"{where}[{i}]")  # a number before the recipe's rule
    low, high = (_check_value(name, v, f"{where}[{i}]", base) for i, v in enumerate(args))
    if not low < high:
        raise StageError(f"{where}: expected low < high, got {args!r}")
    if distribution == "loguniform" and low <= 0:
        raise StageError(f"{where}: expected a positive lower bound (a log scale), got {low!r}")
    return distribution, [low, high]


def _check_value(name: str, value: Any, where: str, base: Mapping[str, Any]) -> Any:
    """``value`` set at ``name`` in ``base`` and checked by recipe.py, as it returns it;
    its message re-addressed to ``where``."""
    trial = copy.deepcopy(dict(base))
    set_dotted(trial, name, value)
    try:
        checked = {"model": recipe.check_model(trial["model"]),
                   "train": recipe.check_train(trial["train"])}  # fmt: skip
    except StageError as exc:
        message = str(exc)
        if message.startswith(name) and message[len(name) : len(name) + 1] in (":", "[", "."):
            raise StageError(f"{where}{message[len(name) :]}") from None
        raise StageError(f"{where}: {message}") from None  # e.g. the scheduler refused it
    return get_dotted(checked, name)


def tune_params(path: str | Path | None = None, *, local: bool | None = None) -> dict[str, Any]:
    """The ``tune:`` section of params.yaml, every value checked (StageError naming the key).

    Args:
        path: the params file. Default: the project's params.yaml.
        local: whether Ray will start on this machine (``RAY_ADDRESS`` unset), in which
            case ``num_cpus`` is resolved and the concurrency checked against it.
            Default: decided from ``RAY_ADDRESS``.
    Returns:
        The section, with ``space`` as :func:`check_space` returns it (checked against
        the recipe of ``tune.dataset``) and ``num_cpus`` resolved (None on a cluster:
        the cluster's own CPUs are checked on connecting).
    Raises:
        StageError: a missing or unknown key, or a bad value; more trials at once than
            CPUs (``max_concurrent_trials * cpus_per_trial > num_cpus``); a recipe
            (``model:``, ``train:``, ``overrides:``) that recipe.py refuses, or whose
            scheduler fixes an argument a trial fills from its budget.
    """
    p = common.load_params("tune", KEYS, path)
    _check_keys(p, "tune", KEYS)
    asha = _check_mapping(p["asha"], "tune.asha")
    _check_keys(asha, "tune.asha", ASHA_KEYS)
    epochs = common.check_int(p["epochs"], "tune.epochs", minimum=1)
    metric = common.check_choice(p["metric"], "tune.metric", METRICS)
    mode = common.check_choice(p["mode"], "tune.mode", ["max", "min"])
    if mode != METRICS[metric]:
        raise StageError(
            f"tune.mode: {metric} is better when "
            f"{'higher' if METRICS[metric] == 'max' else 'lower'}: expected "
            f"{METRICS[metric]!r}, got {mode!r}"
        )
    grace = common.check_int(asha["grace_period"], "tune.asha.grace_period", minimum=1)
    if grace > epochs:
        raise StageError(
            f"tune.asha.grace_period: {grace} is more than tune.epochs ({epochs}): "
            f"no trial could be stopped early; use 1 to {epochs}"
        )
    dataset = tune_dataset(p["dataset"], path)
    base = recipe.resolved_params(dataset, path)
    _check_budget_args(dataset, base, path)
    result = {
        "dataset": dataset,
        "num_samples": common.check_int(p["num_samples"], "tune.num_samples", minimum=1),
        "max_concurrent_trials": common.check_int(
            p["max_concurrent_trials"], "tune.max_concurrent_trials", minimum=1
        ),
        "num_cpus": None
        if p["num_cpus"] is None
        else common.check_int(p["num_cpus"], "tune.num_cpus", minimum=1),
        "cpus_per_trial": common.check_int(p["cpus_per_trial"], "tune.cpus_per_trial", minimum=1),
        "epochs": epochs,
        "metric": metric,
        "mode": mode,
        "asha": {
            "grace_period": grace,
            "reduction_factor": common.check_number(
                asha["reduction_factor"],
                "tune.asha.reduction_factor",
                minimum=1,
                min_inclusive=False,
            ),
        },
        "max_failures": common.check_int(p["max_failures"], "tune.max_failures", minimum=0),
        "seed": common.check_int(p["seed"], "tune.seed", minimum=0, maximum=2**32 - 1),
        "space": check_space(p["space"], base, dataset),
    }
    if local is None:
        local = not os.environ.get("RAY_ADDRESS")
    if local:
        machine = os.cpu_count() or 1
        if result["num_cpus"] is not None and result["num_cpus"] > machine:
            raise StageError(
                f"tune.num_cpus: {result['num_cpus']} is more than this machine's "
                f"{machine} CPUs; use null (all of them) or at most {machine}"
            )
        result["num_cpus"] = result["num_cpus"] or machine
        more = f"raise tune.num_cpus, up to {machine}" if result["num_cpus"] < machine else ""
        check_concurrency(result, result["num_cpus"], "this machine's Ray (tune.num_cpus)", more)
    else:
        result["num_cpus"] = None
    return result


def tune_dataset(value: Any, path: str | Path | None = None) -> str:
    """``tune.dataset`` checked: a known dataset, and one of params.yaml's ``datasets:``,
    whose data ``prepare`` makes (and remakes when its params change).

    Raises:
        StageError: an unknown dataset, or one ``datasets:`` does not list.
    """
    dataset = common.check_choice(value, "tune.dataset", sorted(DATASETS))
    datasets = common.load_params("datasets", path=path)
    if not isinstance(datasets, list) or dataset not in datasets:
        raise StageError(
            f"tune.dataset: {dataset!r} is not in datasets: {datasets!r}, so prepare does "
            "not make (or update) its data; set tune.dataset to one of datasets:, or add "
            f"{dataset} to datasets:"
        )
    return dataset


def _check_budget_args(dataset: str, base: Mapping[str, Any], path: str | Path | None) -> None:
    """Refuse a recipe whose scheduler fixes the length a trial takes from tune.epochs."""
    scheduler = base["train"]["scheduler"]
    if scheduler is None:
        return
    fixed = [a for a in BUDGET_ARGS.get(scheduler["name"], ()) if a in scheduler["args"]]
    if not fixed:
        return
    name = f"{SCHEDULER_ARGS}.{fixed[0]}"
    written = {"model": common.load_params("model", path=path),
               "train": common.load_params("train", path=path)}  # fmt: skip
    override = recipe.overrides_params(path).get(dataset, {})
    where = f"overrides.{dataset}.{name}" if set_by_override(name, override, written) else name
    raise StageError(
        f"{where}: {scheduler['name']}'s {fixed[0]} is fixed at {scheduler['args'][fixed[0]]!r}, "
        f"but a trial trains tune.epochs epochs; remove it (the stage fills it from the "
        "epochs) to sweep this recipe"
    )


def check_concurrency(p: Mapping[str, Any], cpus: float, where: str, more: str = "") -> None:
    """Refuse more trials at once than ``cpus`` can run side by side.

    Args:
        p: the ``tune:`` section (``max_concurrent_trials``, ``cpus_per_trial``).
        cpus: the CPUs Ray has.
        where: that Ray, for the message, e.g. ``"the cluster at 10.0.0.1:6379"``.
        more: how to give it more CPUs, added to the message when one trial alone needs
            more than it has, e.g. ``"raise tune.num_cpus"``.
    Raises:
        StageError: one trial needs more CPUs than ``cpus`` (lower tune.cpus_per_trial),
            or ``max_concurrent_trials`` of them do (lower tune.max_concurrent_trials).
    """
    per_trial, at_once = p["cpus_per_trial"], p["max_concurrent_trials"]
    if per_trial > cpus:
        raise StageError(
            f"tune.cpus_per_trial: one trial needs {per_trial} CPUs, but {where} has "
            f"{cpus:g}; lower tune.cpus_per_trial to {max(int(cpus), 1)}"
            + (f" (or {more})" if more else "")
        )
    need = at_once * per_trial
    if need > cpus:
        raise StageError(
            f"tune.max_concurrent_trials: {at_once} trials at once x tune.cpus_per_trial "
            f"{per_trial} need {need} CPUs, but {where} has {cpus:g}; lower "
            f"tune.max_concurrent_trials to {int(cpus) // per_trial}"
        )


def sweep_name(dataset: str, sections: Mapping[str, Any]) -> str:
    """The Tune experiment's name: the dataset and a digest of the params that define it.

    A sweep is resumed only by a run with the same name, so changed params start over.
    """
    text = json.dumps(sections, sort_keys=True, default=str)
    return f"{dataset}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


# ------------------------------------------------------------------ the best configuration


def best_params(config: Mapping[str, Any]) -> dict[str, Any]:
    """Nest a trial's ``{"dotted.key": value}`` in the shape of params.yaml.

    Example:
        >>> best_params({"train.scheduler.args.max_lr": 0.002, "model.hidden_sizes": [256, 128]})
        {'train': {'scheduler': {'args': {'max_lr': 0.002}}}, 'model': {'hidden_sizes': [256, 128]}}
    """
    nested: dict[str, Any] = {}
    for name, value in config.items():
        *parents, key = name.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[key] = value
    return nested


def check_best(best: Any, base: Mapping[str, Any], dataset: str) -> dict[str, Any]:
    """Check a best configuration (``best_params.json``) against the recipe it applies to;
    return it as ``{"dotted.key": value}``.

    It must be what :func:`best_params` writes: a non-empty mapping in the shape of
    params.yaml, under ``model:`` and ``train:``, whose every key is one a sweep of
    ``dataset`` may set (:func:`check_space`'s rules) with a value recipe.py accepts,
    alone and all together.

    Args:
        best: the file's contents.
        base: the recipe the values go into, ``recipe.resolved_params(dataset)``.
        dataset: its name, for the messages.
    Raises:
        StageError: ``<dotted key>: <why>``, or the whole file's shape.
    Example:
        >>> base = recipe.resolved_params("fashion-mnist")
        >>> check_best({"model": {"dropout": 0.2}}, base, "fashion-mnist")
        {'model.dropout': 0.2}
        >>> check_best({"train": {"weight_decay": "abc"}}, base, "fashion-mnist")
        Traceback (most recent call last):
        ...
        pipeline.common.StageError: train.weight_decay: expected a number, got the string 'abc'
    """
    example = '{"model": {"dropout": 0.2}}'
    if not isinstance(best, Mapping) or not best:
        raise StageError(
            f"expected a non-empty mapping in the shape of params.yaml, e.g. {example}, "
            f"got {best!r}"[:300]
        )
    values: dict[str, Any] = {}
    for section, keys in best.items():
        if section not in ("model", "train"):
            raise StageError(f"{section}: unknown section; expected keys of model: and train:")
        if not isinstance(keys, Mapping) or not keys:
            raise StageError(f"{section}: expected a non-empty mapping of its keys, got {keys!r}")
        for key, value in keys.items():
            values.update(_value_leaves(f"{section}.{key}", value))
    uses = uses_of({name: [value] for name, value in values.items()}, base)
    for name in sorted(values, key=lambda n: n not in USES_KEYS):  # those that decide first
        _kind(name, name, base, dataset, uses)
        _check_value(name, values[name], name, base)
    trial = copy.deepcopy(dict(base))
    for name, value in values.items():
        set_dotted(trial, name, value)
    try:  # the values together, as a trial of them would be checked
        recipe.check_model(trial["model"])
        recipe.check_train(trial["train"])
    except StageError as exc:
        raise StageError(f"the values together: {exc}") from None
    return values


def _value_leaves(name: str, value: Any) -> Iterator[tuple[str, Any]]:
    """``(dotted key, value)`` of every key ``best_params`` nests, descending into NESTING."""
    if name in NESTING and isinstance(value, Mapping):
        if not value:
            raise StageError(f"{name}: empty; expected the keys under it, or no {name} at all")
        for key, inner in value.items():
            yield from _value_leaves(f"{name}.{key}", inner)
    else:
        yield name, value


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in sorted(tree.items()):
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _flatten(value, name + ".")
        else:
            yield name, value


def _yaml_text(value: Any) -> str:
    """``value`` as DVC's ``-S`` reads it (YAML): ``[256,128]``, ``true``, ``null``, full-precision floats."""  # noqa: E501
    if isinstance(value, list):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    return value if isinstance(value, str) else repr(value)


def exp_args(best: Mapping[str, Any], dataset: str, path: str | Path | None = None) -> list[str]:
    """The ``dvc exp run`` arguments that give ``dataset`` the values of ``best``.

    A key goes to ``model:``/``train:`` (``-S train.weight_decay=0.02``), unless
    ``overrides.<dataset>`` decides its value (:func:`set_by_override`): then to the
    override (``-S overrides.mnist.train.augment.crop_padding=2``), as a base value
    would not reach the dataset. A key params.yaml does not hold yet is added with
    Hydra's ``+`` (``-S +train.scheduler.args.pct_start=0.25``), which DVC requires.

    Args:
        best: ``best_params.json``, in the shape of params.yaml.
        dataset: the dataset swept, ``tune.dataset``.
        path: the params file the arguments apply to. Default: the project's.
    """
    written = {"model": common.load_params("model", path=path),
               "train": common.load_params("train", path=path)}  # fmt: skip
    override = recipe.overrides_params(path).get(dataset, {})
    doc = {**written, "overrides": {dataset: override}}
    args = []
    for name, value in _flatten(best):
        key = f"overrides.{dataset}.{name}" if set_by_override(name, override, written) else name
        plus = "" if _has_dotted(doc, key) else "+"
        args += ["-S", f"{plus}{key}={_yaml_text(value)}"]
    return args
