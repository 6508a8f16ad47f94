"""Stage tune (tune/dvc.yaml): a hyperparameter sweep of the pipeline's MLP on Ray Tune.

    python pipeline/tune.py --prepared data/prepared --out reports/tune

Not part of the default pipeline: run it with ``dvc repro tune/dvc.yaml`` (or ``make
tune``). Needs the optional extra ``pip install -e ".[tune]"``.

Inputs: ``--prepared``/<tune.dataset>, the ``train`` and ``val`` splits (and
``stats.json``) from ``prepare``. Params: ``tune.*`` (the search space, number of trials,
concurrency, ASHA settings, the per-trial epoch budget) and, as every trial's starting
point, the recipe of ``tune.dataset``: ``model:`` and ``train:`` with
``overrides.<dataset>`` merged over them (``pipeline/recipe.py``).

Each trial trains exactly what the train stage would train with its sampled values
set in that recipe and ``train.epochs`` set to the budget, ``tune.epochs``: the
network, optimizer, learning-rate scheduler (OneCycleLR's cycle spans the budget),
augmentation, loader and label-smoothed loss built by ``recipe.build_run``, trained
by :func:`mininn.training.fit` with gradient clipping, on the training split. It
reports the validation loss and accuracy after every epoch; ASHA (Li et al. 2020,
"A System for Massively Parallel Hyperparameter Tuning",
https://arxiv.org/abs/1810.05934) stops the weak trials early, in place of
``train.patience``. Every trial checkpoints after each epoch; a trial whose worker
dies is retried from its last checkpoint (``tune.max_failures`` times), so at most
the epoch in progress is lost. The arrays reach the workers through Ray's object
store (``tune.with_parameters``), never through a path only this machine has.

Where it runs: with ``RAY_ADDRESS`` unset, on a Ray started here with ``tune.num_cpus``
CPUs (null: all of this machine's) and no dashboard; with ``RAY_ADDRESS=host:port``
set, on that cluster, which receives the ``mininn`` and ``pipeline`` packages with the
job (an address where nothing answers as Ray within ``CONNECT_TIMEOUT_S`` stops the
stage, naming it). The Tune experiment (trial checkpoints and results) lives in ``--storage``
(default ``models/tune/``, which every node must reach); a sweep interrupted there
(Ctrl-C, a killed driver) resumes from it (``Tuner.restore``) when the same command
runs again with the same params; ``--fresh`` starts over.

Outputs in ``--out``, written only when the whole sweep has finished, each atomically:
``trials.csv`` (one row per trial: the swept values, final and best metrics, epochs
trained, whether ASHA stopped it early, the worker processes and Ray nodes it ran
on), ``history.csv`` (every trial's epochs), ``best_params.json`` (the best trial's
values in the shape of params.yaml, for ``dvc exp run -S``; see ``--exp-args``),
``metrics.json`` (``val_accuracy``: the best trial's, a DVC metric) and ``sweep.png``.
``--out`` and ``--storage`` are checked before Ray starts. ``--exp-args FILE`` checks
that FILE is a best configuration for ``tune.dataset``'s recipe (the keys a sweep may
set, values recipe.py accepts) before it prints anything::

    a=$(python pipeline/tune.py --exp-args reports/tune/best_params.json) && dvc exp run $a

Fault injection, for tests: with ``MININN_TUNE_CRASH_EPOCH=k`` and
``MININN_TUNE_CRASH_MARKER=<path>`` in the workers' environment, the first trial to
finish epoch k creates the marker file and its worker process dies at once
(``os._exit``), as a machine that goes away would; the marker keeps it to one crash.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (by DVC): make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from pipeline.environment import ensure_environment

    ensure_environment()  # the project's .venv if this Python lacks the packages

import numpy as np

import mininn
from mininn.data import DATASETS
from mininn.training import fit
from pipeline import common, recipe
from pipeline.common import StageError, run_stage
from pipeline.tune_config import (
    KEYS,
    check_best,
    check_concurrency,
    exp_args,
    set_dotted,
    sweep_name,
    tune_dataset,
    tune_params,
)
from pipeline.tune_report import choose_best, collect, write_outputs

INSTALL_HINT = 'pip install -e ".[tune]" (or `make setup`)'
CHECKPOINT_FILE = "fit.npz"
DONE_MARKER = "SWEEP_DONE"
CRASH_EPOCH_ENV, CRASH_MARKER_ENV = "MININN_TUNE_CRASH_EPOCH", "MININN_TUNE_CRASH_MARKER"
CONNECT_TIMEOUT_S = 30.0
"""How long joining the cluster of ``RAY_ADDRESS`` may take (a live one answers in seconds)."""


# ------------------------------------------------------------------ the trial (runs on a worker)


def trial_params(setup: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, dict]:
    """The recipe one trial trains: the resolved recipe of ``tune.dataset``
    (``setup["params"]``, overrides merged), the trial's sampled values set at their
    dotted keys, and ``train.epochs`` set to the budget, so that the schedule (e.g.
    OneCycleLR's cycle, filled from ``train.epochs``) spans the trial's epochs; checked
    by recipe.py again (a combination of values its constructor refuses stops here).

    Args:
        setup: :func:`trial_inputs`' setup.
        config: the sampled values, ``{"train.scheduler.args.max_lr": ..., ...}``.
    Raises:
        StageError: recipe.py refuses the combination.
    """
    params = copy.deepcopy(dict(setup["params"]))
    for name, value in config.items():
        set_dotted(params, name, _plain(value))
    params["train"]["epochs"] = setup["epochs"]
    return {"model": recipe.check_model(params["model"]),
            "train": recipe.check_train(params["train"])}  # fmt: skip


def _plain(value: Any) -> Any:
    """NumPy scalars that Tune's samplers return, as Python numbers."""
    return value.item() if isinstance(value, np.generic) else value


def fit_trial(
    config: Mapping[str, Any],
    data: tuple[np.ndarray, ...],
    setup: Mapping[str, Any],
    checkpoint: Path,
    report: Callable[[dict[str, Any]], None],
) -> None:
    """Train one trial as the train stage trains the recipe, reporting every epoch.

    The run is :func:`trial_params`' recipe built by ``recipe.build_run`` (network,
    optimizer, scheduler, augmentation, loader and loss, in the train stage's order)
    and trained by :func:`mininn.training.fit` with the scheduler and gradient
    clipping, ``setup["threads"]`` BLAS threads, and no early stopping of its own
    (ASHA's). ``fit`` continues from ``checkpoint`` when it exists and rewrites it
    after every epoch, before ``report`` is called.

    Args:
        config: the sampled values, ``{"train.scheduler.args.max_lr": ..., ...}``.
        data: ``(x_train, y_train, x_val, y_val)``, as :func:`read_data` returns them.
        setup: :func:`trial_inputs`' setup.
        checkpoint: fit's checkpoint file.
        report: called with each epoch's history row plus ``restored_from`` (the
            epoch the checkpoint held at the start, 0 for none) and ``diverged``
            (False); after a NaN or infinite loss, parameter or buffer (the train
            stage's check), once with ``diverged`` True and NaN metrics, and the
            trial ends.
    """
    from threadpoolctl import threadpool_limits

    params = trial_params(setup, config)
    train_p = params["train"]
    x_train, y_train, x_val, y_val = data
    restored_from = int(mininn.load(checkpoint)["epoch"]) if Path(checkpoint).exists() else 0
    last = {"epoch": restored_from}
    with threadpool_limits(setup["threads"]):
        run = recipe.build_run(setup["dataset"], params, x_train, y_train, setup["stats"])
        guard = recipe.divergence_guard_of(lambda: run.model.state_dict().items(), train_p)

        def on_epoch_end(row: dict[str, float]) -> None:
            guard(row)
            last["epoch"] = int(row["epoch"])
            report({**row, "restored_from": restored_from, "diverged": False})

        try:
            fit(
                run.model, run.loss_fn, run.optimizer, run.loader, epochs=train_p["epochs"],
                val_data=(x_val, y_val), metric="accuracy", progress=False,
                on_epoch_end=on_epoch_end, scheduler=run.scheduler,
                clip_grad_norm=train_p["clip_grad_norm"], checkpoint=checkpoint,
            )  # fmt: skip
        except FloatingPointError:
            nan = float("nan")
            report({"epoch": last["epoch"] + 1, "val_loss": nan, "val_accuracy": nan,
                    "restored_from": restored_from, "diverged": True})  # fmt: skip


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
    """Tune's trainable: :func:`fit_trial`, its epochs reported to Tune with checkpoints.

    Args:
        config: the sampled values, ``{"train.scheduler.args.max_lr": ..., ...}``.
        data: ``(x_train, y_train, x_val, y_val)``, read-only arrays from the object store.
        setup: :func:`trial_inputs`' setup, from the driver.

    Each epoch reports ``epoch``, the training and validation loss and accuracy,
    ``lr``, ``seconds``, ``restored_from``, ``diverged``, ``pid`` and ``node_id``, with
    a checkpoint holding fit's file (everything needed to continue). A retried trial
    gets the last one back from Tune, on whichever node it lands, and continues after
    that epoch.
    """
    import ray
    import ray.tune

    where = {"pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id()}
    workdir = Path(tempfile.mkdtemp(prefix="mininn-trial-"))
    fit_file = workdir / CHECKPOINT_FILE
    try:
        checkpoint = ray.tune.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as folder:
                shutil.copyfile(Path(folder) / CHECKPOINT_FILE, fit_file)

        def report(metrics: dict[str, Any]) -> None:
            if metrics["diverged"]:
                ray.tune.report({**metrics, **where})
                return
            epoch = int(metrics["epoch"])
            folder = workdir / f"epoch-{epoch}"
            folder.mkdir()
            shutil.copyfile(fit_file, folder / CHECKPOINT_FILE)  # this epoch's, fit wrote it
            # report() copies the folder to the sweep's storage before it returns
            ray.tune.report(
                {**metrics, **where}, checkpoint=ray.tune.Checkpoint.from_directory(folder)
            )
            shutil.rmtree(folder, ignore_errors=True)
            _maybe_crash(epoch)

        fit_trial(config, data, setup, fit_file, report)
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


def _init_within(ray, timeout: float, **kwargs: Any) -> None:
    """``ray.init(**kwargs)``, given up after ``timeout`` seconds.

    Ray retries a port that accepts connections but never answers as its GCS (a web
    server, the dashboard's 8265) for many minutes; the attempt runs in a daemon
    thread, left behind on a timeout (it ends with the process).

    Raises:
        _InitTimeout: ``ray.init`` has not returned after ``timeout`` seconds.
        Exception: whatever ``ray.init`` raised.
    """
    outcome: dict[str, BaseException] = {}

    def init() -> None:
        try:
            ray.init(**kwargs)
        except BaseException as exc:  # re-raised in the caller's thread
            outcome["error"] = exc

    if threading.current_thread() is threading.main_thread():
        # What ray.init sets from the main thread only: a SIGTERM ends the driver
        # through sys.exit, so that its atexit handler stops Ray.
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))
    quiet = _DropMessage("SIGTERM handler is not set")  # set just above
    logger = logging.getLogger("ray._private.worker")
    logger.addFilter(quiet)
    try:
        thread = threading.Thread(target=init, name="ray.init", daemon=True)
        thread.start()
        thread.join(timeout)
    finally:
        logger.removeFilter(quiet)
    if thread.is_alive():
        raise _InitTimeout(f"ray.init did not return within {timeout:g} s")
    if "error" in outcome:
        raise outcome["error"]


class _InitTimeout(Exception):
    """ray.init did not return in time (not Ray's own TimeoutError)."""


class _DropMessage(logging.Filter):
    """Drops the log records whose message starts with ``prefix``."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


def connect(ray, p: dict[str, Any], data_bytes: int) -> str:
    """Start Ray here, or join the cluster of ``RAY_ADDRESS``; return where trials will run.

    Raises:
        StageError: the cluster cannot be reached, does not answer as Ray within
            ``CONNECT_TIMEOUT_S``, refuses this driver, or has too few CPUs for
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
        _init_within(
            ray,
            CONNECT_TIMEOUT_S,
            address=address,
            runtime_env=runtime_env,
            log_to_driver=False,
            logging_level="WARNING",
        )
    except _InitTimeout:
        if address.startswith("ray://"):
            port = "the Ray Client server's port (usually 10001; `ray status` on the head node)"
        else:
            port = f"the head node's GCS port (usually 6379; `ray status --address {address}`)"
        raise StageError(
            f"RAY_ADDRESS={address}: no Ray cluster answered within {CONNECT_TIMEOUT_S:g} s; "
            f"something listens there, but not Ray: check the address is {port}, or unset "
            "RAY_ADDRESS to run on this machine"
        ) from None
    except (ConnectionError, RuntimeError, TimeoutError, ray.exceptions.RayError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        token = isinstance(exc, ray.exceptions.AuthenticationError)
        fix = ("give this machine the cluster's token (RAY_AUTH_TOKEN or ~/.ray/auth_token)"
               if token else "check `ray status` there")  # fmt: skip
        raise StageError(
            f"RAY_ADDRESS={address}: cannot join the Ray cluster ({first[:200]}); {fix}, or "
            "unset RAY_ADDRESS to run on this machine"
        ) from None
    cpus = ray.cluster_resources().get("CPU", 0)
    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    check_concurrency(p, cpus, f"the cluster at {address}", "add nodes with more CPUs")
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


def _progress(budget: int):
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
                callbacks=[_progress(p["epochs"])],
            ),
        )
    return tuner.fit()


def read_data(prepared: Path, dtype: str, num_classes: int | None = None) -> tuple[np.ndarray, ...]:
    """The training and validation splits as ``(x_train, y_train, x_val, y_val)``."""
    return (
        *common.read_prepared(prepared, "train", dtype, num_classes),
        *common.read_prepared(prepared, "val", dtype, num_classes),
    )


def trial_inputs(
    p: Mapping[str, Any], params: Mapping[str, Any], prepared: Path
) -> tuple[dict[str, Any], tuple[np.ndarray, ...]]:
    """What every trial receives: ``(setup, data)``.

    Args:
        p: :func:`~pipeline.tune_config.tune_params`' result.
        params: ``recipe.resolved_params(tune.dataset)``, the trials' starting point.
        prepared: prepare's folder of that dataset.
    Returns:
        ``setup``: ``{"dataset", "params", "stats", "epochs", "threads"}`` (the
        prepared split's mean and std give the crop's black fill), and ``data``:
        :func:`read_data`'s arrays, in ``train.dtype``.
    """
    dataset = p["dataset"]
    num_classes = common.check_dataset(dataset, DATASETS).num_classes
    data = read_data(prepared, params["train"]["dtype"], num_classes)
    setup = {
        "dataset": dataset,
        "params": params,
        "stats": common.read_stats(prepared),
        "epochs": p["epochs"],
        "threads": p["cpus_per_trial"],
    }
    return setup, data


def exp_args_of(path: Path, params: Path) -> list[str]:
    """The ``dvc exp run`` arguments that apply the best configuration in ``path``
    (``best_params.json``) to params.yaml's ``tune.dataset``.

    Raises:
        StageError: the file cannot be read, is not JSON, or does not hold what
            :func:`~pipeline.tune_config.check_best` accepts for that dataset's recipe;
            one line naming the file and the key.
    """
    dataset = tune_dataset(common.load_params("tune", KEYS, params)["dataset"], params)
    regenerate = "run `make tune` to write it again"
    try:
        best = common.read_json(path)
    except OSError as exc:
        raise StageError(
            f"{path}: cannot read it ({exc.strerror or type(exc).__name__}); pass the "
            f"best_params.json a sweep writes (reports/tune/), or {regenerate}"
        ) from None
    try:
        check_best(best, recipe.resolved_params(dataset, params), dataset)
    except StageError as exc:
        raise StageError(
            f"{path}: {exc}; not a best configuration for {dataset} (tune.dataset); {regenerate}"
        ) from None
    return exp_args(best, dataset, params)


def check_folder(path: Path, option: str) -> None:
    """Refuse a folder that cannot be made or written, before any trial runs.

    Raises:
        StageError: ``path`` or a folder above it is a file, or the nearest existing
            one is not writable.
    """
    for folder in (path, *path.parents):
        if not folder.exists():
            continue
        if not folder.is_dir():
            raise StageError(
                f"{option} {path}: {folder} is a file, not a folder; choose another {option}"
            )
        if not os.access(folder, os.W_OK | os.X_OK):
            raise StageError(f"{option} {path}: {folder} is not writable; choose another {option}")
        return


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
        help="check this best_params.json, print the `dvc exp run` arguments that apply "
        "it, and exit",
    )
    args = parser.parse_args(argv)
    if args.exp_args is not None:
        print(shlex.join(exp_args_of(args.exp_args, args.params)))
        return 0

    p = tune_params(args.params)
    check_folder(args.out, "--out")
    check_folder(args.storage, "--storage")
    params = recipe.resolved_params(p["dataset"], args.params)
    ray = import_ray()
    setup, data = trial_inputs(p, params, args.prepared / p["dataset"])
    name = sweep_name(p["dataset"], {"tune": p, "recipe": params})
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
    trials, history, configs = collect(results, p)
    best = choose_best(trials, p)
    stopped = int(trials["stopped_early"].sum())
    title = (
        f"Ray Tune sweep on {p['dataset']}: {len(trials)} trials, {stopped} stopped early "
        f"by ASHA, budget {p['epochs']} epochs"
    )
    write_outputs(args.out, trials, history, p, best, title, configs[trials.loc[best, "trial_id"]])
    (storage / name / DONE_MARKER).touch()
    apply = exp_args(common.read_json(args.out / "best_params.json"), p["dataset"], args.params)
    print(
        f"tune: best {p['metric']} {trials.loc[best, p['metric']]:.4f} "
        f"(trial {trials.loc[best, 'trial_id']}) -> {args.out}; apply it with:\n"
        f"  dvc exp run {shlex.join(apply)}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    # Run as a script, this file is __main__: import it under its package name, so that
    # the workers unpickle the trial function by reference, as `pipeline.tune.train_trial`.
    from pipeline import tune as _stage

    raise SystemExit(run_stage(_stage.main))
