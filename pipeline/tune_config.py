"""The ``tune:`` section of params.yaml: the sweep's search space and settings, checked.

Read by the sweep stage, ``pipeline/tune.py``. Every value is checked where it is read,
and a bad one stops with a :class:`~pipeline.common.StageError` naming its key (for
example ``tune.space.train.lr.loguniform[0]``), the value and what is allowed. Also
here: the best configuration in the shape of params.yaml, and the ``dvc exp run``
arguments that apply it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mininn.data import DATASETS
from mininn.models import ACTIVATIONS
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


def _hidden_sizes(value: Any, key: str) -> list[int]:
    if not isinstance(value, list):
        raise StageError(f"{key}: expected a list of ints, e.g. [512, 256], got {value!r}")
    return [common.check_int(s, f"{key}[{i}]", minimum=1) for i, s in enumerate(value)]


def _boolean(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise StageError(f"{key}: expected true or false, got {value!r}")
    return value


# What a sweep may set: each key of model:/train: with train.py's rule for its
# values and the kind of distribution that fits it (real, integer or categorical).
SWEEPABLE: dict[str, tuple[str, Any]] = {
    "model.hidden_sizes": ("categorical", _hidden_sizes),
    "model.activation": ("categorical", lambda v, k: common.check_choice(v, k, ACTIVATIONS)),
    "model.batch_norm": ("categorical", _boolean),
    "model.dropout": (
        "real",
        lambda v, k: common.check_number(v, k, minimum=0, maximum=1, max_inclusive=False),
    ),
    "train.optimizer": ("categorical", lambda v, k: common.check_choice(v, k, recipe.OPTIMIZERS)),
    "train.lr": ("real", lambda v, k: common.check_number(v, k, minimum=0, min_inclusive=False)),
    "train.weight_decay": ("real", lambda v, k: common.check_number(v, k, minimum=0)),
    "train.momentum": ("real", lambda v, k: common.check_number(v, k, minimum=0, maximum=1)),
    "train.batch_size": ("integer", lambda v, k: common.check_int(v, k, minimum=1)),
    "train.seed": ("integer", lambda v, k: common.check_int(v, k, minimum=0, maximum=2**32 - 1)),
}
KIND_DISTRIBUTIONS = {
    "real": ("choice", "grid", "uniform", "loguniform"),
    "integer": ("choice", "grid", "randint"),
    "categorical": ("choice", "grid"),
}
NOT_SWEEPABLE = {
    "train.epochs": "a trial's epoch budget is tune.epochs",
    "train.patience": "ASHA stops the weak trials (tune.asha)",
    "train.dtype": "the data reach the workers in one dtype; set train.dtype",
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


def check_space(space: Any) -> dict[str, tuple[str, Any]]:
    """Validate ``tune.space``; return ``{"section.key": (distribution, arguments)}``.

    The space names, per section (``model`` or ``train``), the keys to sweep and one
    distribution each::

        space:
          train:
            lr:
              loguniform: [0.0001, 0.01]     # log-uniform between the bounds
            batch_size:
              choice: [64, 128, 256]         # one of the values, drawn per trial
          model:
            dropout:
              uniform: [0.0, 0.5]

    ``grid: [...]`` tries every value (times ``num_samples``), ``randint: [low, high]``
    draws an integer with both bounds included. Every value and bound is checked with
    the rule ``pipeline/recipe.py`` applies to that key.

    Raises:
        StageError: the space is empty, names an unknown section or parameter, or a
            distribution or value that does not fit its parameter; the message names
            the key, e.g. ``tune.space.train.lr.loguniform``.
    Example:
        >>> check_space({"train": {"lr": {"loguniform": [0.0001, 0.01]}}})
        {'train.lr': ('loguniform', [0.0001, 0.01])}
        >>> check_space({"train": {"lr": {"choice": []}}})
        Traceback (most recent call last):
        ...
        pipeline.common.StageError: tune.space.train.lr.choice: expected a non-empty list, got []
    """
    example = "e.g. train: {lr: {loguniform: [0.0001, 0.01]}}"
    if space is None or (isinstance(space, Mapping) and not space):
        raise StageError(f"tune.space: empty; name at least one parameter to sweep, {example}")
    _check_mapping(space, "tune.space")
    result: dict[str, tuple[str, Any]] = {}
    for section, keys in space.items():
        where = f"tune.space.{section}"
        if section not in ("model", "train"):
            raise StageError(f"{where}: unknown section; the sweep sets keys of model: and train:")
        if not keys:
            raise StageError(f"{where}: empty; name a parameter to sweep, {example}")
        for key, spec in _check_mapping(keys, where).items():
            name = f"{section}.{key}"
            result[name] = _check_distribution(name, spec)
    return result


def _check_distribution(name: str, spec: Any) -> tuple[str, Any]:
    where = f"tune.space.{name}"
    if name not in SWEEPABLE:
        why = NOT_SWEEPABLE.get(name, f"the sweepable parameters are {list(SWEEPABLE)}")
        raise StageError(f"{where}: unknown parameter {name!r}; {why}")
    kind, check = SWEEPABLE[name]
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
        return distribution, [check(v, f"{where}[{i}]") for i, v in enumerate(args)]
    if len(args) != 2:
        raise StageError(f"{where}: expected [low, high], got {args!r}")
    low, high = (check(v, f"{where}[{i}]") for i, v in enumerate(args))
    if not low < high:
        raise StageError(f"{where}: expected low < high, got {args!r}")
    if distribution == "loguniform" and low <= 0:
        raise StageError(f"{where}: expected a positive lower bound (a log scale), got {low!r}")
    return distribution, [low, high]


def tune_params(path: str | Path | None = None, *, local: bool | None = None) -> dict[str, Any]:
    """The ``tune:`` section of params.yaml, every value checked (StageError naming the key).

    Args:
        path: the params file. Default: the project's params.yaml.
        local: whether Ray will start on this machine (``RAY_ADDRESS`` unset), in which
            case ``num_cpus`` is resolved and the concurrency checked against it.
            Default: decided from ``RAY_ADDRESS``.
    Returns:
        The section, with ``space`` as :func:`check_space` returns it and ``num_cpus``
        resolved (None on a cluster: the cluster's own CPUs are checked on connecting).
    Raises:
        StageError: a missing or unknown key, or a bad value; more trials at once than
            CPUs (``max_concurrent_trials * cpus_per_trial > num_cpus``).
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
    result = {
        "dataset": common.check_choice(p["dataset"], "tune.dataset", sorted(DATASETS)),
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
        "space": check_space(p["space"]),
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
        check_concurrency(result, result["num_cpus"], "this machine's Ray (tune.num_cpus)")
    else:
        result["num_cpus"] = None
    return result


def check_concurrency(p: Mapping[str, Any], cpus: float, where: str) -> None:
    """Refuse more trials at once than ``cpus`` can run side by side."""
    need = p["max_concurrent_trials"] * p["cpus_per_trial"]
    if need > cpus:
        fit_in = max(int(cpus) // p["cpus_per_trial"], 1)
        raise StageError(
            f"tune.max_concurrent_trials: {p['max_concurrent_trials']} trials at once x "
            f"tune.cpus_per_trial {p['cpus_per_trial']} need {need} CPUs, but {where} has "
            f"{cpus:g}; lower tune.max_concurrent_trials to {fit_in}"
        )


def sweep_name(dataset: str, sections: Mapping[str, Any]) -> str:
    """The Tune experiment's name: the dataset and a digest of the params that define it.

    A sweep is resumed only by a run with the same name, so changed params start over.
    """
    text = json.dumps(sections, sort_keys=True, default=str)
    return f"{dataset}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def best_params(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Nest a trial's ``{"section.key": value}`` in the shape of params.yaml.

    Example:
        >>> best_params({"train.lr": 0.002, "model.hidden_sizes": [256, 128]})
        {'train': {'lr': 0.002}, 'model': {'hidden_sizes': [256, 128]}}
    """
    nested: dict[str, dict[str, Any]] = {}
    for name, value in config.items():
        section, key = name.split(".", 1)
        nested.setdefault(section, {})[key] = value
    return nested


def exp_args(best: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The ``dvc exp run`` arguments that set the values of ``best`` in params.yaml.

    DVC reads each value as YAML: lists are written ``[256,128]``, booleans
    ``true``/``false``, numbers at full precision.

    Example:
        >>> exp_args({"train": {"lr": 0.002, "optimizer": "adam"}, "model": {"batch_norm": True}})
        ['-S', 'model.batch_norm=true', '-S', 'train.lr=0.002', '-S', 'train.optimizer=adam']
    """
    args = []
    for section, values in sorted(best.items()):
        for key, value in sorted(values.items()):
            if isinstance(value, list):
                text = json.dumps(value, separators=(",", ":"))
            elif isinstance(value, bool):
                text = str(value).lower()
            else:
                text = value if isinstance(value, str) else repr(value)
            args += ["-S", f"{section}.{key}={text}"]
    return args
