"""Stage tune (tune/dvc.yaml): a hyperparameter sweep of the pipeline's MLP on Ray Tune.

    python pipeline/tune.py --prepared data/prepared --out reports/tune

Not part of the default pipeline: run it with ``dvc repro tune/dvc.yaml`` (or ``make
tune``). Needs the optional extra ``pip install -e ".[tune]"``.

Inputs: ``--prepared``/<tune.dataset>, the ``train`` and ``val`` splits from ``prepare``.
Params: ``tune.*`` (the search space, number of trials, concurrency, ASHA settings,
the per-trial epoch budget) and, as every trial's starting point, ``model.*`` and
``train.*`` (``train.epochs`` and ``train.patience`` are replaced by the budget and ASHA).

Each trial trains the pipeline's network (:func:`pipeline.train.build`) through
:func:`mininn.training.fit` on the training split and reports the validation loss
and accuracy after every epoch; ASHA (Li et al. 2020, "A System for Massively
Parallel Hyperparameter Tuning", https://arxiv.org/abs/1810.05934) stops the weak
trials early. Every trial checkpoints after each epoch; a trial whose worker dies
is retried from its last checkpoint (``tune.max_failures`` times), so at most the
epoch in progress is lost. The arrays reach the workers through Ray's object store
(``tune.with_parameters``), never through a path only this machine has.

Where it runs: with ``RAY_ADDRESS`` unset, on a Ray started here with ``tune.num_cpus``
CPUs (null: all of this machine's) and no dashboard; with ``RAY_ADDRESS=host:port``
set, on that cluster, which receives the ``mininn`` and ``pipeline`` packages with the
job. The Tune experiment (trial checkpoints and results) lives in ``--storage``
(default ``models/tune/``, which every node must reach); a sweep interrupted there
(Ctrl-C, a killed driver) resumes from it (``Tuner.restore``) when the same command
runs again with the same params; ``--fresh`` starts over.

Outputs in ``--out``, written only when the whole sweep has finished, each atomically:
``trials.csv`` (one row per trial: the swept values, final and best metrics, epochs
trained, whether ASHA stopped it early, the worker processes and Ray nodes it ran
on), ``history.csv`` (every trial's epochs), ``best_params.json`` (the best trial's
values in the shape of params.yaml, for ``dvc exp run -S``; see ``--exp-args``),
``metrics.json`` (the best validation accuracy, a DVC metric) and ``sweep.png``.

Fault injection, for tests: with ``MININN_TUNE_CRASH_EPOCH=k`` and
``MININN_TUNE_CRASH_MARKER=<path>`` in the workers' environment, the first trial to
finish epoch k creates the marker file and its worker process dies at once
(``os._exit``), as a machine that goes away would; the marker keeps it to one crash.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import socket
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (by DVC): make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

import mininn
from mininn.data import DATASETS
from mininn.models import ACTIVATIONS
from mininn.training import fit
from pipeline import common, train
from pipeline.common import StageError, run_stage

INSTALL_HINT = 'pip install -e ".[tune]" (or `make setup`)'
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
DISTRIBUTIONS = ("choice", "grid", "uniform", "loguniform", "randint")
CHECKPOINT_FILE = "fit.npz"
DONE_MARKER = "SWEEP_DONE"
CRASH_EPOCH_ENV, CRASH_MARKER_ENV = "MININN_TUNE_CRASH_EPOCH", "MININN_TUNE_CRASH_MARKER"
OUTPUTS = ("trials.csv", "history.csv", "best_params.json", "metrics.json", "sweep.png")


# ------------------------------------------------------------------ params


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
    "train.optimizer": ("categorical", lambda v, k: common.check_choice(v, k, train.OPTIMIZERS)),
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
    the rule ``pipeline/train.py`` applies to that key.

    Raises:
        StageError: the space is empty, names an unknown section or parameter, or a
            distribution or value that does not fit its parameter; the message names
            the key, e.g. ``tune.space.train.lr.loguniform``.
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
    """``{"train.lr": 0.001}`` -> ``{"train": {"lr": 0.001}}``, the shape of params.yaml."""
    nested: dict[str, dict[str, Any]] = {}
    for name, value in config.items():
        section, key = name.split(".", 1)
        nested.setdefault(section, {})[key] = value
    return nested


def exp_args(best: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The ``dvc exp run`` arguments that apply ``best``: ``["-S", "train.lr=0.001", ...]``."""
    args = []
    for section, values in sorted(best.items()):
        for key, value in sorted(values.items()):
            text = (
                json.dumps(value, separators=(",", ":"))
                if isinstance(value, list)
                else (str(value).lower() if isinstance(value, bool) else repr(value))
            )
            args += ["-S", f"{section}.{key}={text}"]
    return args


# ------------------------------------------------------------------ the trial (runs on a worker)


def _trial_params(setup: Mapping[str, Any], config: Mapping[str, Any]):
    sections = {"model": dict(setup["model"]), "train": dict(setup["train"])}
    for name, value in config.items():
        section, key = name.split(".", 1)
        sections[section][key] = value
    return sections["model"], sections["train"]


def _maybe_crash(epoch: int) -> None:
    """Fault injection for tests (see the module docstring): die once, hard."""
    crash_epoch, marker = os.environ.get(CRASH_EPOCH_ENV), os.environ.get(CRASH_MARKER_ENV)
    if not crash_epoch or not marker or int(crash_epoch) != epoch:
        return
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    os._exit(1)


def train_trial(config: dict[str, Any], *, data: tuple[np.ndarray, ...], setup: dict) -> None:
    """One trial: train with ``config`` over the base params, reporting every epoch to Tune.

    Args:
        config: the sampled values, ``{"train.lr": ..., "model.dropout": ...}``.
        data: ``(x_train, y_train, x_val, y_val)``, read-only arrays from the object store.
        setup: ``{"dataset", "model", "train", "epochs", "threads"}`` from the driver.

    Each epoch reports ``epoch``, the training and validation loss and accuracy,
    ``seconds``, ``pid``, ``node_id`` and ``restored_from`` (the epoch of the
    checkpoint this attempt started from, 0 for none) with a checkpoint holding
    everything needed to continue. A loss that becomes NaN or infinite ends the trial
    with ``diverged`` set and NaN metrics, instead of failing it.
    """
    import ray
    import ray.tune
    from threadpoolctl import threadpool_limits

    model_p, train_p = _trial_params(setup, config)
    x_train, y_train, x_val, y_val = data
    common_metrics = {"pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id()}
    workdir = Path(tempfile.mkdtemp(prefix="mininn-trial-"))
    restored_from = 0
    try:
        with threadpool_limits(setup["threads"]):
            mininn.manual_seed(train_p["seed"])  # the initial weights depend on params only
            model = train.build(setup["dataset"], model_p, train_p["dtype"])
            optimizer = train.build_optimizer(model, train_p)
            loader = mininn.DataLoader(
                x_train,
                y_train,
                batch_size=train_p["batch_size"],
                shuffle=True,
                seed=train_p["seed"],
            )
            # fit writes its checkpoint after every epoch and continues from it; Tune
            # keeps a copy of each in the sweep's storage and hands the last one back
            # to a retried trial, on whichever node it lands.
            fit_file = workdir / CHECKPOINT_FILE
            checkpoint = ray.tune.get_checkpoint()
            if checkpoint is not None:
                with checkpoint.as_directory() as folder:
                    shutil.copyfile(Path(folder) / CHECKPOINT_FILE, fit_file)
                restored_from = int(mininn.load(fit_file)["epoch"])
            last = {"epoch": restored_from}

            def report(row: dict[str, float]) -> None:
                epoch = last["epoch"] = int(row["epoch"])
                folder = workdir / f"epoch-{epoch}"
                folder.mkdir()
                shutil.copyfile(fit_file, folder / CHECKPOINT_FILE)  # this epoch's, fit wrote it
                metrics = {**row, "restored_from": restored_from, "diverged": False}
                # report() copies the folder to the sweep's storage before it returns
                ray.tune.report(
                    {**metrics, **common_metrics},
                    checkpoint=ray.tune.Checkpoint.from_directory(folder),
                )
                shutil.rmtree(folder, ignore_errors=True)
                _maybe_crash(epoch)

            try:
                fit(
                    model,
                    mininn.CrossEntropyLoss(),
                    optimizer,
                    loader,
                    epochs=setup["epochs"],
                    val_data=(x_val, y_val),
                    metric="accuracy",
                    progress=False,
                    on_epoch_end=report,
                    checkpoint=fit_file,
                )
            except FloatingPointError:
                nan = float("nan")
                ray.tune.report(
                    {
                        "epoch": last["epoch"] + 1,
                        "val_loss": nan,
                        "val_accuracy": nan,
                        "restored_from": restored_from,
                        "diverged": True,
                        **common_metrics,
                    }
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# ------------------------------------------------------------------ the driver


def import_ray():
    """Import Ray Tune, or stop with one line naming the extra that installs it."""
    try:
        import ray
        import ray.tune
    except ImportError as exc:
        raise StageError(
            f"tune: Ray Tune is not installed ({exc}); install the extra: {INSTALL_HINT}"
        ) from None
    return ray


def check_address(address: str, timeout: float = 3.0) -> None:
    """Refuse a ``RAY_ADDRESS`` of the form ``[ray://]host:port`` where nothing listens.

    ``ray.init`` would otherwise retry for a long while and then fail deep inside Ray.

    Raises:
        StageError: nothing accepts a connection there within ``timeout`` seconds.
    """
    if address in ("auto", "local"):
        return
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise StageError(
            f"RAY_ADDRESS={address!r}: expected host:port (e.g. 127.0.0.1:6379), "
            "ray://host:port or auto; unset it to run on this machine"
        )
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise StageError(
            f"RAY_ADDRESS={address}: no Ray cluster answers there ({reason}); start one with "
            f"`ray start --head --port={port}` on {host}, or unset RAY_ADDRESS to run on "
            "this machine"
        ) from None


def connect(ray, p: dict[str, Any], data_bytes: int) -> str:
    """Start Ray here, or join the cluster of ``RAY_ADDRESS``; return where trials will run.

    Raises:
        StageError: the cluster cannot be reached, or has too few CPUs for
            ``tune.max_concurrent_trials``.
    """
    address = os.environ.get("RAY_ADDRESS", "")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no network needed, none used
    if not address:
        # Workers start as children of this process: they import the project from here.
        root = str(common.PROJECT_ROOT)
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [root] + [x for x in os.environ.get("PYTHONPATH", "").split(os.pathsep) if x]
        )
        ray.init(
            num_cpus=p["num_cpus"],
            include_dashboard=False,
            log_to_driver=False,
            object_store_memory=max(2 * data_bytes + (256 << 20), 100 << 20),
            logging_level="WARNING",
        )
        return f"a local Ray with {p['num_cpus']} CPUs"
    check_address(address)
    # The cluster receives the two packages the trial imports with the job itself.
    root = common.PROJECT_ROOT
    runtime_env = {
        "py_modules": [str(root / "mininn"), str(root / "pipeline")],
        "excludes": ["__pycache__", "*.pyc"],
    }
    try:
        ray.init(
            address=address, runtime_env=runtime_env, log_to_driver=False, logging_level="WARNING"
        )
    except (ConnectionError, RuntimeError, TimeoutError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StageError(
            f"RAY_ADDRESS={address}: cannot join the Ray cluster ({first}); check "
            "`ray status` there, or unset RAY_ADDRESS to run on this "
            "machine"
        ) from None
    cpus = ray.cluster_resources().get("CPU", 0)
    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    check_concurrency(p, cpus, f"the cluster at {address}")
    return f"the Ray cluster at {address} ({nodes} nodes, {cpus:g} CPUs)"


def search_space(space: Mapping[str, tuple[str, Any]]) -> dict[str, Any]:
    """Tune's ``param_space`` for a space checked by :func:`check_space`."""
    from ray import tune

    make = {
        "choice": tune.choice,
        "grid": tune.grid_search,
        "uniform": lambda a: tune.uniform(*a),
        "loguniform": lambda a: tune.loguniform(*a),
        "randint": lambda a: tune.randint(a[0], a[1] + 1),  # Tune's upper bound is excluded
    }
    return {name: make[distribution](args) for name, (distribution, args) in space.items()}


def _progress(total_hint: int, budget: int):
    """A Tune callback that prints one line per trial event on stderr."""
    from ray import tune

    def describe(trial) -> str:
        values = ", ".join(f"{k}={_short(v)}" for k, v in sorted(trial.config.items()))
        return f"tune: trial {trial.trial_id} ({values})"

    class Progress(tune.Callback):
        def on_trial_complete(self, iteration, trials, trial, **info):
            r = trial.last_result or {}
            epochs = int(r.get("epoch", 0))
            how = (
                "diverged"
                if r.get("diverged")
                else "stopped early by ASHA"
                if epochs < budget
                else "done"
            )
            print(
                f"{describe(trial)}: val_accuracy {r.get('val_accuracy', float('nan')):.4f} "
                f"after {epochs}/{budget} epochs, {how}",
                file=sys.stderr,
                flush=True,
            )

        def on_trial_recover(self, iteration, trials, trial, **info):
            print(
                f"{describe(trial)}: failed, retrying from its last checkpoint",
                file=sys.stderr,
                flush=True,
            )

        def on_trial_error(self, iteration, trials, trial, **info):
            print(
                f"{describe(trial)}: failed for good (tune.max_failures reached); see {trial.path}",
                file=sys.stderr,
                flush=True,
            )

    return Progress()


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def run_sweep(
    ray,
    p: dict[str, Any],
    setup: dict[str, Any],
    data: tuple[np.ndarray, ...],
    storage: Path,
    name: str,
    fresh: bool,
):
    """Run (or resume) the sweep named ``name`` in ``storage``; return Tune's ResultGrid."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator

    # Keeping one checkpoint per trial forces a state snapshot per epoch: wanted here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    path = storage / name
    if fresh or (path / DONE_MARKER).exists():
        shutil.rmtree(path, ignore_errors=True)
    trainable = tune.with_resources(
        tune.with_parameters(train_trial, data=data, setup=setup), {"cpu": p["cpus_per_trial"]}
    )
    if tune.Tuner.can_restore(str(path)):
        print(f"tune: resuming the interrupted sweep in {path}", file=sys.stderr)
        tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_errored=True)
    else:
        shutil.rmtree(path, ignore_errors=True)  # a start that never saved its state
        scheduler = ASHAScheduler(time_attr="epoch", max_t=p["epochs"], **p["asha"])
        tuner = tune.Tuner(
            trainable,
            param_space=search_space(p["space"]),
            tune_config=tune.TuneConfig(
                metric=p["metric"],
                mode=p["mode"],
                num_samples=p["num_samples"],
                scheduler=scheduler,
                search_alg=BasicVariantGenerator(
                    max_concurrent=p["max_concurrent_trials"], random_state=p["seed"]
                ),
                reuse_actors=True,  # a finished trial's worker process takes the next one
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=str(storage),
                verbose=0,
                failure_config=tune.FailureConfig(max_failures=p["max_failures"]),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                callbacks=[_progress(p["num_samples"], p["epochs"])],
            ),
        )
    return tuner.fit()


# ------------------------------------------------------------------ outputs


def collect(results, p: Mapping[str, Any]):
    """Turn Tune's ResultGrid into the trial table and the per-epoch history (DataFrames).

    ``stopped_early`` is true for a trial that ended before ``tune.epochs`` without
    diverging: the trial itself always trains the whole budget, so only ASHA stops it.

    Raises:
        StageError: the sweep was interrupted, or a trial failed for good.
    """
    import pandas as pd

    names = list(p["space"])
    rows, history = [], []
    for result in results:
        df = result.metrics_dataframe
        if result.error is not None or df is None or df.empty or "epoch" not in df:
            continue
        df = df.sort_values("epoch")
        trial_id = str(df["trial_id"].iloc[-1])
        last = df.iloc[-1]
        metric = df[p["metric"]]
        best_i = metric.idxmax() if p["mode"] == "max" else metric.idxmin()
        diverged = bool(last["diverged"])
        epochs = int(last["epoch"])
        row = {"trial_id": trial_id}
        row.update({name: _plain(result.config[name]) for name in names})
        row.update(
            {
                "epochs": epochs,
                "stopped_early": not diverged and epochs < p["epochs"],
                "diverged": diverged,
                "val_accuracy": float(last["val_accuracy"]),
                "val_loss": float(last["val_loss"]),
                f"best_{p['metric']}": float(metric.loc[best_i])
                if not metric.isna().all()
                else float("nan"),
                "best_epoch": int(df.loc[best_i, "epoch"]) if not metric.isna().all() else 0,
                "restored_from": int(df["restored_from"].max()),
                "train_seconds": float(df["seconds"].sum()) if "seconds" in df else 0.0,
                "pids": ";".join(str(int(x)) for x in sorted(df["pid"].unique())),
                "node_ids": ";".join(sorted(str(x) for x in df["node_id"].unique())),
            }
        )
        rows.append(row)
        for _, r in df.iterrows():
            if not r["diverged"]:
                history.append(
                    {
                        "trial_id": trial_id,
                        "epoch": int(r["epoch"]),
                        **{
                            c: float(r[c])
                            for c in ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
                        },
                    }
                )
    errors = [r for r in results if r.error is not None]
    if errors:
        raise StageError(
            f"tune: {len(errors)} of {len(results)} trials failed for good "
            f"({_error_line(errors[0].error)}); see "
            f"{errors[0].path}; run again to retry them from their checkpoints"
        )
    if len(rows) != len(results) or results.num_terminated != len(results):
        raise StageError(
            f"tune: the sweep stopped after {results.num_terminated} of {len(results)} trials; "
            "nothing was written; run the same command again to resume it"
        )
    trials = pd.DataFrame(rows).sort_values("trial_id", ignore_index=True)
    return trials, pd.DataFrame(history)


def _error_line(error: BaseException) -> str:
    """The line of a worker's traceback that names the exception, e.g. ``KeyError: 'x'``."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    named = [line for line in lines if re.match(r"^[\w.]+(Error|Exception|Exit): ", line)]
    if named:
        return named[-1][:300]
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:300]


def _plain(value: Any) -> Any:
    """NumPy scalars and tuples from Tune's config as plain Python values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def choose_best(trials, p: Mapping[str, Any]) -> int:
    """Index of the best trial: the best final ``tune.metric`` among the trials trained
    to the whole budget (ties: the earlier trial).

    A trial ASHA stopped was judged at an earlier epoch than the survivors, so it
    competes only when no trial reached the budget.

    Raises:
        StageError: every trial diverged.
    """
    final = trials[p["metric"]]
    if final.isna().all():
        raise StageError(
            "tune: every trial diverged (the loss became NaN or infinite); "
            "narrow tune.space, e.g. lower the largest train.lr"
        )
    full = trials["epochs"] == p["epochs"]
    candidates = final[full & final.notna()] if (full & final.notna()).any() else final
    return int(candidates.idxmax() if p["mode"] == "max" else candidates.idxmin())


def sweep_png(trials, history, p: Mapping[str, Any], best: int, title: str) -> bytes:
    """The sweep in one figure: every trial's validation accuracy per epoch, and the final
    validation accuracy against each swept value; trials ASHA stopped early drawn hollow,
    the best one as a star."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(p["space"])
    fig = Figure(figsize=(4.2 * (len(names) + 1), 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(names) + 1, squeeze=False)[0]
    curves = axes[0]
    best_id = trials.loc[best, "trial_id"]
    for _, trial in trials.iterrows():
        h = history[history["trial_id"] == trial["trial_id"]]
        is_best = trial["trial_id"] == best_id
        curves.plot(
            h["epoch"],
            h["val_accuracy"],
            lw=2.2 if is_best else 1,
            ls=":" if trial["stopped_early"] else "-",
            color="C3" if is_best else "C0" if not trial["stopped_early"] else "0.55",
        )
    curves.axvline(p["asha"]["grace_period"], color="0.8", lw=0.8, zorder=0)
    curves.set(
        xlabel="epoch", ylabel="validation accuracy", title="every trial (dotted: stopped by ASHA)"
    )
    curves.xaxis.get_major_locator().set_params(integer=True)
    done = ~trials["stopped_early"] & ~trials["diverged"]
    for ax, name in zip(axes[1:], names, strict=True):
        distribution = p["space"][name][0]
        values = trials[name]
        if distribution in ("uniform", "loguniform", "randint") or (
            all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        ):
            x = values.astype(float)
            if distribution == "loguniform":
                ax.set_xscale("log")
        else:  # categorical: one position per value, in the space's order
            labels = [str(v) for v in p["space"][name][1]]
            x = values.map(lambda v, labels=labels: labels.index(str(v)))
            ax.set_xticks(range(len(labels)), labels)
        y = trials["val_accuracy"]
        ax.scatter(x[done], y[done], color="C0", label="trained to the budget")
        ax.scatter(x[~done], y[~done], facecolors="none", edgecolors="0.45", label="stopped early")
        ax.scatter([x[best]], [y[best]], marker="*", s=220, color="C3", label="best", zorder=3)
        ax.set(xlabel=name, ylabel="final validation accuracy")
    axes[-1].legend(loc="best", fontsize="small")
    fig.suptitle(title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


def write_outputs(out: Path, trials, history, p: Mapping[str, Any], best: int, title: str) -> None:
    """Write the five outputs, all built first, then each renamed into place."""
    row = trials.loc[best]
    best_values = best_params({name: _plain(row[name]) for name in p["space"]})
    texts = {
        "trials.csv": trials.to_csv(index=False),
        "history.csv": history.to_csv(index=False),
        "best_params.json": json.dumps(best_values, indent=2, sort_keys=True) + "\n",
        "metrics.json": json.dumps(
            {
                "best_val_accuracy": float(row["val_accuracy"]),
                "best_val_loss": float(row["val_loss"]),
                "trials": len(trials),
                "stopped_early": int(trials["stopped_early"].sum()),
                "diverged": int(trials["diverged"].sum()),
            },
            indent=2,
            sort_keys=True,
        )
        + "\n",
    }
    png = sweep_png(trials, history, p, best, title)
    with tempfile.TemporaryDirectory(dir=_existing_parent(out)) as tmp:
        for file, text in texts.items():
            (Path(tmp) / file).write_text(text, encoding="utf-8")
        (Path(tmp) / "sweep.png").write_bytes(png)
        out.mkdir(parents=True, exist_ok=True)
        for file in OUTPUTS:
            os.replace(Path(tmp) / file, out / file)


def _existing_parent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.parent


def read_data(prepared: Path, dtype: str) -> tuple[np.ndarray, ...]:
    """The training and validation splits as ``(x_train, y_train, x_val, y_val)``."""
    return (
        *common.read_prepared(prepared, "train", dtype),
        *common.read_prepared(prepared, "val", dtype),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--prepared",
        type=Path,
        default=Path("data/prepared"),
        help="prepare's output folder of every dataset (tune.dataset picks one)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("reports/tune"), help="folder for the five outputs"
    )
    parser.add_argument("--params", type=Path, default=common.PARAMS_FILE)
    parser.add_argument(
        "--storage",
        type=Path,
        default=common.PROJECT_ROOT / "models" / "tune",
        help="the Tune experiments (checkpoints); every node must reach it",
    )
    parser.add_argument(
        "--fresh", action="store_true", help="start over instead of resuming an interrupted sweep"
    )
    parser.add_argument(
        "--exp-args",
        type=Path,
        metavar="BEST_PARAMS_JSON",
        help="print the `dvc exp run` arguments that apply this file, and exit",
    )
    args = parser.parse_args(argv)
    if args.exp_args is not None:
        print(shlex.join(exp_args(common.read_json(args.exp_args))))
        return 0

    p = tune_params(args.params)
    model_p, train_p = train.model_params(args.params), train.train_params(args.params)
    ray = import_ray()
    data = read_data(args.prepared / p["dataset"], train_p["dtype"])
    setup = {
        "dataset": p["dataset"],
        "model": model_p,
        "train": train_p,
        "epochs": p["epochs"],
        "threads": p["cpus_per_trial"],
    }
    name = sweep_name(p["dataset"], {"tune": p, "model": model_p, "train": train_p})
    storage = args.storage.resolve()
    try:
        where = connect(ray, p, sum(a.nbytes for a in data))
        print(
            f"tune: {p['dataset']}: {p['num_samples']} sample(s) of {list(p['space'])}, "
            f"{p['max_concurrent_trials']} at a time, up to {p['epochs']} epochs each, on "
            f"{where}",
            file=sys.stderr,
            flush=True,
        )
        results = run_sweep(ray, p, setup, data, storage, name, args.fresh)
    finally:
        ray.shutdown()
    trials, history = collect(results, p)
    best = choose_best(trials, p)
    stopped = int(trials["stopped_early"].sum())
    title = (
        f"Ray Tune sweep on {p['dataset']}: {len(trials)} trials, {stopped} stopped early "
        f"by ASHA, budget {p['epochs']} epochs"
    )
    write_outputs(args.out, trials, history, p, best, title)
    (storage / name / DONE_MARKER).touch()
    best_file = args.out / "best_params.json"
    print(
        f"tune: best {p['metric']} {trials.loc[best, p['metric']]:.4f} "
        f"(trial {trials.loc[best, 'trial_id']}) -> {args.out}; apply it with:\n"
        f"  dvc exp run {shlex.join(exp_args(common.read_json(best_file)))}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    # Run as a script, this file is __main__: import it under its package name, so that
    # the workers unpickle the trial function by reference, as `pipeline.tune.train_trial`.
    from pipeline import tune as _stage

    raise SystemExit(run_stage(_stage.main))
