"""How long a Ray Tune sweep takes with 1 and 2 trials at a time, and what Ray itself costs.

    .venv/bin/python benchmarks/tune_bench.py            # about 2 minutes on 2 cores
    .venv/bin/python benchmarks/tune_bench.py --quick    # smoke test, 2,000 samples

The same N trials (fashion-mnist's recipe from params.yaml, OneCycleLR's peak learning
rate ``train.scheduler.args.max_lr`` swept over a grid, every trial trained to the whole
epoch budget: ASHA's grace period is the budget, so no trial stops early and every run
does the same work) are run three ways:

- **in-process**: one after another in this process, no Ray: the trial's own training,
  ``pipeline.tune.fit_trial`` (its per-epoch checkpoint file, 1 BLAS thread);
- **Ray, 1 at a time** and **Ray, 2 at a time**: ``pipeline/tune.py``'s own functions
  (``connect``, ``run_sweep``, ``collect``) on a local Ray with 2 CPUs.

Reported: Ray's start (``ray.init``) and stop, the sweep's wall time (``Tuner.fit``),
the speed-up of 2 at a time over 1, and Ray's overhead per trial, (sweep with 1 at a
time − in-process) / N: starting a worker process, fetching the data from the object
store, Tune's scheduling and bookkeeping, and copying each epoch's checkpoint to the
sweep's storage.
The training data is Fashion-MNIST's training split (see benchmarks/README.md): the
first ``--samples`` images train, the next ``--val`` validate.

Writes ``reports/benchmarks/tune.json`` and ``tune.md`` (``--out``).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import load_training_split
from pipeline import common, recipe, tune

MAX_LR = "train.scheduler.args.max_lr"


def sweep_params(trials: int, epochs: int, concurrent: int) -> dict:
    """The ``tune:`` section of the benchmark: a grid of peak learning rates, no early stop."""
    return {
        "dataset": "fashion-mnist",
        "num_samples": 1,
        "max_concurrent_trials": concurrent,
        "num_cpus": 2,
        "cpus_per_trial": 1,
        "epochs": epochs,
        "metric": "val_accuracy",
        "mode": "max",
        "asha": {"grace_period": epochs, "reduction_factor": 2.0},
        "max_failures": 0,
        "seed": 0,
        "space": {MAX_LR: ("grid", [float(v) for v in np.geomspace(1e-3, 1e-2, trials)])},
    }


def in_process(setup: dict, data: tuple, max_lrs: list[float], workdir: Path) -> float:
    """Seconds to train every trial one after another here, as a trial does (no Ray)."""
    start = time.perf_counter()
    for i, max_lr in enumerate(max_lrs):
        tune.fit_trial({MAX_LR: max_lr}, data, setup, workdir / f"trial-{i}.npz", lambda row: None)
    return time.perf_counter() - start


_GEMM_LOOP = """
import time
from threadpoolctl import threadpool_limits
import numpy as np
a = np.random.default_rng(0).random((512, 784), dtype=np.float32)
b = np.random.default_rng(1).random((784, 512), dtype=np.float32)
with threadpool_limits(1):
    start = time.perf_counter()
    for _ in range(300):
        a @ b
    print(time.perf_counter() - start)
"""


def core_scaling() -> float:
    """What two processes get from this machine's cores right now: the throughput of two
    1-thread GEMM loops run side by side over that of one alone (2.0 on two free, full
    cores; less where other work shares them)."""
    import subprocess

    def run(n: int) -> list[float]:
        procs = [subprocess.Popen([sys.executable, "-c", _GEMM_LOOP], stdout=subprocess.PIPE,
                                  text=True) for _ in range(n)]  # fmt: skip
        return [float(p.communicate()[0]) for p in procs]

    alone = run(1)[0]
    together = max(run(2))
    return 2 * alone / together


def with_ray(p: dict, setup: dict, data: tuple, storage: Path) -> dict:
    """Start a local Ray, run the sweep, stop Ray; the seconds of each part."""
    ray = tune.import_ray()
    start = time.perf_counter()
    tune.connect(ray, p, sum(a.nbytes for a in data))
    started = time.perf_counter()
    try:
        name = f"bench-{p['max_concurrent_trials']}"
        results = tune.run_sweep(ray, p, setup, data, storage, name, fresh=True)
        swept = time.perf_counter()
    finally:
        ray.shutdown()
    stopped = time.perf_counter()
    trials, _ = tune.collect(results, p)
    return {
        "ray_start_s": started - start,
        "sweep_s": swept - started,
        "ray_stop_s": stopped - swept,
        "trial_train_s": float(trials["train_seconds"].sum()),
        "pids": len({pid for text in trials["pids"] for pid in str(text).split(";")}),
        "trials": len(trials),
    }


def describe(model_p: dict, train_p: dict) -> str:
    sizes = "-".join(str(n) for n in (784, *model_p["hidden_sizes"], 10))
    return (
        f"{sizes} {model_p['activation']}, batch_norm={model_p['batch_norm']}, "
        f"dropout={model_p['dropout']}, {train_p['optimizer']}, batch {train_p['batch_size']}, "
        f"{(train_p['scheduler'] or {'name': 'constant lr'})['name']}, "
        f"label_smoothing={train_p['label_smoothing']}"
    )


def markdown(r: dict) -> str:
    c = r["config"]
    one, two = r["ray"]["1"], r["ray"]["2"]
    rows = [
        ("in-process, one after another (no Ray)", f"{r['in_process_load']:.1f}", "–",
         f"{r['in_process_s']:.1f}", "–", "–"),
        *[(f"Ray, {k} at a time", f"{v['load']:.1f}", f"{v['ray_start_s']:.1f}",
           f"{v['sweep_s']:.1f}", f"{v['ray_stop_s']:.1f}", f"{v['pids']}")
          for k, v in (("1", one), ("2", two))],
    ]  # fmt: skip
    lines = [
        "# Ray Tune sweep: 1 and 2 trials at a time",
        "",
        f"{c['trials']} trials x {c['epochs']} epochs of the pipeline's network "
        f"({c['model']}), OneCycleLR's max_lr on a grid, no early stopping (every run does "
        f"the same work); Fashion-MNIST, {c['samples']:,} training and {c['val']:,} "
        f"validation images; 1 CPU (1 BLAS thread) per trial, a local Ray with 2 CPUs. "
        f"`benchmarks/tune_bench.py`{' --quick' if c['quick'] else ''}.",
        "",
        f"- Machine: {r['machine']}; Python {r['python']}; Ray {r['ray_version']}; "
        f"commit {r['commit']}",
        f"- Host load average (1 min) at the start and the end: {r['load'][0]:.1f}, "
        f"{r['load'][1]:.1f} on {os.cpu_count()} cores, shared with other work: the times "
        "are single runs, not medians",
        "",
        "| run | load at start | Ray start s | sweep s | Ray stop s | worker processes |",
        "|---|---:|---:|---:|---:|---:|",
        *[f"| {' | '.join(row)} |" for row in rows],
        "",
        f"- **Speed-up of 2 at a time over 1**: {r['speedup']:.2f}x on the sweep, "
        f"{r['speedup_total']:.2f}x with Ray's start and stop.",
        f"- **What the host gave two processes**: just before the run with 2 at a time, two "
        f"1-thread GEMM loops side by side ran {r['core_scaling']:.2f}x the throughput of one "
        "alone (2.00 on two free, full cores). The other users' load changes from minute to "
        "minute: this gauges the host around that run, it does not bound the speed-up.",
        f"- **Ray's overhead per trial**: {r['overhead_per_trial_s']:.2f} s "
        "((sweep with 1 at a time − in-process) / trials): the worker processes (one per "
        "trial running at a time, reused by the next trial), the data from the object "
        "store, Tune's scheduling and bookkeeping, each epoch's checkpoint copied to the "
        "sweep's storage. Ray's start and stop come once per sweep, "
        f"{one['ray_start_s'] + one['ray_stop_s']:.1f} s here.",
        f"- Training time measured inside the trials (the epochs' own seconds, summed): "
        f"{one['trial_train_s']:.1f} s at 1 at a time, {two['trial_train_s']:.1f} s at 2 "
        "at a time (two trials share 2 cores with the rest of the machine).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--val", type=int, default=2_000)
    parser.add_argument("--quick", action="store_true", help="4 trials x 2 epochs, 2,000 samples")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results folder (default reports/benchmarks; --quick: a temp folder)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.trials, args.epochs, args.samples, args.val = 4, 2, 2_000, 500
    if args.out is None:
        args.out = (
            Path(tempfile.mkdtemp(prefix="tune-bench-"))
            if args.quick
            else common.PROJECT_ROOT / "reports" / "benchmarks"
        )
    os.environ.pop("RAY_ADDRESS", None)  # this machine's cores are what is measured

    load_start = os.getloadavg()[0]
    x, y = load_training_split("fashion-mnist", args.samples + args.val)
    data = (x[: args.samples], y[: args.samples], x[args.samples :], y[args.samples :])
    params = recipe.resolved_params("fashion-mnist")
    model_p, train_p = params["model"], params["train"]
    # The crop's black fill: the standardised values of the black (0) and white (255)
    # pixels give back the mean and std, to float32's rounding.
    std = 1 / float(x.max() - x.min())
    setup = {"dataset": "fashion-mnist", "params": params,
             "stats": {"mean": -float(x.min()) * std, "std": std},
             "epochs": args.epochs, "threads": 1}  # fmt: skip
    max_lrs = sweep_params(args.trials, args.epochs, 1)["space"][MAX_LR][1]
    ray_runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        print(f"tune_bench: in-process, {args.trials} trials x {args.epochs} epochs",
              file=sys.stderr)  # fmt: skip
        load_plain = os.getloadavg()[0]
        plain = in_process(setup, data, max_lrs, Path(tmp))
        for concurrent in (1, 2):
            if concurrent == 2:  # measured just before the run it bounds
                print("tune_bench: the cores' scaling (two GEMM loops at once)", file=sys.stderr)
                scaling = core_scaling()
            print(f"tune_bench: Ray, {concurrent} at a time", file=sys.stderr)
            p = sweep_params(args.trials, args.epochs, concurrent)
            load = os.getloadavg()[0]
            ray_runs[str(concurrent)] = with_ray(p, setup, data, Path(tmp) / "storage")
            ray_runs[str(concurrent)]["load"] = load
    one, two = ray_runs["1"], ray_runs["2"]
    import ray

    results = {
        "config": {"trials": args.trials, "epochs": args.epochs, "samples": args.samples,
                   "val": args.val, "quick": args.quick, "model": describe(model_p, train_p)},
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "ray_version": ray.__version__,
        "commit": os.popen("git rev-parse --short HEAD 2>/dev/null").read().strip() or "?",
        "load": [load_start, os.getloadavg()[0]],
        "core_scaling": scaling,
        "in_process_s": plain,
        "in_process_load": load_plain,
        "ray": ray_runs,
        "speedup": one["sweep_s"] / two["sweep_s"],
        "speedup_total": sum(one[k] for k in ("ray_start_s", "sweep_s", "ray_stop_s"))
        / sum(two[k] for k in ("ray_start_s", "sweep_s", "ray_stop_s")),
        "overhead_per_trial_s": (one["sweep_s"] - plain) / args.trials,
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    text = markdown(results)
    common.write_json(args.out / "tune.json", results)
    with common.atomic_file(args.out / "tune.md") as tmp:
        tmp.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
