"""Benchmark mininn against PyTorch and scikit-learn, and against the GEMM lower bound.

    python benchmarks/run.py            # the full run (make bench)
    python benchmarks/run.py --quick    # a smoke test: well under a minute

Trains the 784-256-128-10 ReLU MLP (and, except in scikit-learn, a variant with
BatchNorm1d and Dropout(0.2)) with Adam on the first 50,000 Fashion-MNIST
training images, float32, for each thread count and batch size. Each framework
trains in its own long-lived process (worker.py), and the frameworks take turns
epoch by epoch (the order rotating each round), so that the host's drift falls
on all of them alike; ratios are computed pair by pair within a round, and the
median of those is reported. The GEMM lower bound takes its turn too, measured
anew each round by a worker of its own (gemm.py's functions); gemm.py also runs
once per thread count to break the bound down by product. The figures are
taken with the environment as it is and, when OPENBLAS_CORETYPE or
OPENBLAS_L2_SIZE is set, a second time with both unset for the worker processes
only.

Writes ``results.json`` and ``results.md`` to ``--out`` (default
``reports/benchmarks``; with ``--quick``, a temporary folder) and, for a full
run into the default folder, the table into ``benchmarks/README.md``. Progress
goes to stderr, a line per measurement.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import selectors
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # the sibling module, found through the path above
import report

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
DEFAULT_OUT = REPO_ROOT / "reports" / "benchmarks"
FRAMEWORKS = ("mininn", "torch", "sklearn")
VARIANTS = ("plain", "bn_dropout")
#: The options recorded with the results.
SETTINGS = ("quick", "threads", "batch_sizes", "variants", "frameworks", "epochs", "warmup")
SETTINGS += ("samples", "dataset")
#: The configuration whose mininn epoch is profiled: (threads, batch size, variant).
PROFILED = (1, 128, "plain")
#: How long one answer from a worker may take before it is given up on.
WORKER_TIMEOUT_S = 600.0


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def worker_env(threads: int, blas_env: str) -> dict[str, str]:
    """The environment of a worker: thread caps set, kernel variables unset if asked."""
    env = dict(os.environ)
    for name in _common.THREAD_ENV_VARS:
        env[name] = str(threads)
    if blas_env == "unset":
        for name in _common.KERNEL_ENV_VARS:
            env.pop(name, None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


class WorkerError(RuntimeError):
    """A worker failed to start, answered with an error, or timed out.

    ``str(error)`` is the message, which may span lines (e.g. the places searched
    for the data and the fix); ``error.detail`` is the worker's stderr tail.
    """

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


class Worker:
    """A worker.py process and its one-JSON-line-per-command conversation."""

    def __init__(self, framework: str, threads: int, blas_env: str, args: list[str]) -> None:
        self.framework = framework
        self.stderr = tempfile.TemporaryFile(mode="w+")
        command = [sys.executable, str(HERE / "worker.py"), "--framework", framework]
        command += ["--threads", str(threads), *args]
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=worker_env(threads, blas_env),
            text=True,
            bufsize=1,
        )
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.process.stdout, selectors.EVENT_READ)
        self.ready: dict | None = None

    def _stderr_tail(self, lines: int = 15) -> str:
        self.stderr.seek(0)
        return "".join(self.stderr.readlines()[-lines:])

    def read(self, timeout: float = WORKER_TIMEOUT_S) -> dict:
        """The worker's next answer; raises WorkerError on error, exit or timeout."""
        if not self.selector.select(timeout):
            self.close()
            raise WorkerError(f"{self.framework}: no answer within {timeout:.0f} s")
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            raise WorkerError(
                f"{self.framework}: worker exited with status {self.process.returncode}",
                self._stderr_tail(),
            )
        answer = json.loads(line)
        if answer.get("event") == "error":
            raise WorkerError(f"{self.framework}: {answer['message']}", self._stderr_tail())
        return answer

    def wait_ready(self) -> dict:
        self.ready = self.read()
        return self.ready

    def ask(self, command: str) -> dict:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.stderr.close()


def summarise(seconds: list[float], samples: int) -> dict:
    median = statistics.median(seconds)
    return {
        "epochs_seconds": seconds,
        "median_s": median,
        "min_s": min(seconds),
        "max_s": max(seconds),
        "samples_per_s": samples / median,
    }


def paired_ratio(a: list[float], b: list[float]) -> dict:
    """Median (and range) of a[i] / b[i] over the rounds both ran."""
    ratios = [x / y for x, y in zip(a, b, strict=True)]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


def alternate(
    frameworks: Sequence[str],
    threads: int,
    blas_env: str,
    batch_size: int,
    variant: str,
    opts: argparse.Namespace,
    profile_path: Path | None,
) -> dict:
    """Train every framework, one epoch each in turn; return per-framework figures and ratios."""
    tag = f"[{blas_env} t={threads} b={batch_size} {variant}]"
    worker_args = ["--batch-size", str(batch_size), "--variant", variant]
    worker_args += ["--samples", str(opts.samples), "--dataset", opts.dataset]
    workers: dict[str, Worker] = {}
    result: dict = {
        "frameworks": {},
        "errors": {},
        "worker_stderr": {},
        "load_average": [os.getloadavg()[0]],
    }
    for name in [*frameworks, "gemm"]:
        workers[name] = Worker(name, threads, blas_env, worker_args)
    try:
        for name in list(workers):
            try:
                ready = workers[name].wait_ready()
                log(f"{tag} {name} ready ({ready['setup_seconds']:.1f} s setup)")
            except WorkerError as exc:
                log(f"{tag} {name} unavailable: {exc}")
                result["errors"][name] = str(exc)
                result["worker_stderr"][name] = exc.detail
                workers.pop(name).close()
        times: dict[str, list[float]] = {name: [] for name in workers}
        bounds: dict[str, list[float]] = {"8": [], "9": []}
        last: dict[str, dict] = {}
        order = list(workers)
        for round_ in range(-opts.warmup, opts.epochs):
            shift = round_ % len(order) if order else 0
            for name in order[shift:] + order[:shift]:
                try:
                    answer = workers[name].ask("epoch")
                except WorkerError as exc:  # drop the framework, keep the others going
                    log(f"{tag} {name} failed: {exc}")
                    result["errors"][name] = str(exc)
                    result["worker_stderr"][name] = exc.detail
                    order.remove(name)
                    times.pop(name)
                    workers.pop(name).close()
                    continue
                label = "warm-up" if round_ < 0 else f"round {round_ + 1}/{opts.epochs}"
                if name == "gemm":
                    b = answer["bounds"]
                    log(
                        f"{tag} {label} GEMM bound: {b['8']:.3f} s (8 products), {b['9']:.3f} s (9)"
                    )
                else:
                    log(
                        f"{tag} {label} {name}: {answer['seconds']:.3f} s "
                        f"(loss {answer['loss']:.4f})"
                    )
                if round_ >= 0:
                    times[name].append(answer["seconds"])
                    last[name] = answer
                    if name == "gemm":
                        for products, seconds in answer["bounds"].items():
                            bounds[products].append(seconds)
        if profile_path is not None and "mininn" in workers:
            answer = workers["mininn"].ask(f"profile {profile_path}")
            log(f"{tag} mininn under cProfile: {answer['seconds']:.3f} s -> {profile_path}")
            result["profile"] = {"path": profile_path.name, "seconds": answer["seconds"]}
    finally:
        for worker in workers.values():
            worker.close()
    result["load_average"].append(os.getloadavg()[0])
    for name, worker in workers.items():
        if name == "gemm" or not times[name]:
            continue
        info = {k: v for k, v in worker.ready.items() if k != "event"}
        result["frameworks"][name] = {
            **summarise(times[name], opts.samples),
            "final_loss": last[name]["loss"],
            "peak_rss_mib": last[name]["peak_rss_mib"],
            "info": info,
        }
    if "mininn" in times:
        result["ratios"] = {
            other: paired_ratio(times["mininn"], times[other])
            for other in ("torch", "sklearn")
            if other in times
        }
    if bounds["8"] and len(bounds["8"]) == opts.epochs:
        result["bound"] = paired_bounds(result["frameworks"], times, bounds)
    return result


def paired_bounds(
    frameworks: dict, times: dict[str, list[float]], bounds: dict[str, list[float]]
) -> dict:
    """The GEMM bound of each round, and each framework's epoch time as a multiple of it.

    mininn's bound has the products mininn does (8 or 9 a step, as its worker
    found); PyTorch's autograd and scikit-learn compute no input gradient (8).
    """
    result: dict = {f"products_{k}": summarise(v, 1) for k, v in bounds.items()}
    for name, fw in frameworks.items():
        products = str(fw["info"].get("products_per_step", 8))
        if len(times[name]) != len(bounds[products]):
            continue  # a framework that failed part-way has no pairs
        multiple = paired_ratio(times[name], bounds[products])
        result[name] = {
            "products_per_step": int(products),
            "seconds": statistics.median(bounds[products]),
            "multiple": multiple,
            "outside_gemm_share": max(0.0, 1 - 1 / multiple["median"]),
            # against the 8 products a step needs, whatever this framework does
            "multiple_of_8": paired_ratio(times[name], bounds["8"]),
        }
    return result


def run_gemm(threads: int, blas_env: str, opts: argparse.Namespace) -> dict:
    command = [sys.executable, str(HERE / "gemm.py"), "--threads", str(threads)]
    command += ["--batch-sizes", *map(str, opts.batch_sizes), "--samples", str(opts.samples)]
    if opts.quick:
        command += ["--repeats", "3"]
    done = subprocess.run(
        command, env=worker_env(threads, blas_env), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise WorkerError(f"gemm.py failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)


def time_command(command: list[str], repeats: int, cwd: Path) -> dict:
    """Wall-clock seconds of a command (a fresh process each time), median of ``repeats``."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
        seconds.append(time.perf_counter() - start)
        if done.returncode != 0:
            return {
                "status": "failed",
                "returncode": done.returncode,
                "stderr_tail": done.stderr[-2000:],
                "command": command,
            }
    return {
        "status": "ok",
        "median_s": statistics.median(seconds),
        "min_s": min(seconds),
        "max_s": max(seconds),
        "runs": repeats,
        "command": command,
    }


def raw_folder(dataset: str, scratch: Path) -> Path:
    """``data/raw/<dataset>`` if the pipeline fetched it, else a verified copy in ``scratch``."""
    fetched = REPO_ROOT / "data" / "raw" / dataset
    if fetched.is_dir() and any(fetched.iterdir()):
        return fetched
    from mininn.data import fetch

    return fetch(dataset, scratch / "raw" / dataset, progress=False)


def time_prepare(datasets: Sequence[str], repeats: int) -> dict:
    """Time pipeline/prepare.py (IDX to Parquet) on each dataset, if the stage exists."""
    script = REPO_ROOT / "pipeline" / "prepare.py"
    if not script.is_file():
        return {
            name: {"status": "not available", "reason": f"{script} missing"} for name in datasets
        }
    results = {}
    with tempfile.TemporaryDirectory(prefix="mininn-bench-") as scratch:
        for name in datasets:
            try:
                raw = raw_folder(name, Path(scratch))
            except Exception as exc:  # no data: record why, time the rest
                results[name] = {"status": "not available", "reason": str(exc)}
                continue
            out = Path(scratch) / "prepared" / name
            command = [sys.executable, str(script), "--dataset", name, "--raw", str(raw)]
            command += ["--out", str(out), "--report", str(out / "data_report.json")]
            results[name] = time_command(command, repeats, REPO_ROOT)
            results[name]["command"] = ["python", "pipeline/prepare.py", *command[2:4]]
            if results[name]["status"] == "ok":
                results[name]["in_process"] = time_prepare_in_process(command[2:], repeats)
            log(f"prepare {name}: {results[name].get('median_s', results[name]['status'])}")
    return results


# prepare.main() timed after its imports (lazy ones included), in a fresh process:
# the stage's own work, apart from Python's start and the imports.
_PREPARE_IN_PROCESS = """
import sys, time
sys.path.insert(0, ".")
import matplotlib.backends.backend_agg, matplotlib.figure, pyarrow.parquet
import sklearn.model_selection
from pipeline import prepare
start = time.perf_counter()
prepare.main(sys.argv[1:])
print(time.perf_counter() - start)
"""


def time_prepare_in_process(argv: list[str], repeats: int) -> dict:
    """Seconds of ``prepare.main(argv)`` alone (imports done first), median of ``repeats``."""
    seconds = []
    for _ in range(repeats):
        command = [sys.executable, "-c", _PREPARE_IN_PROCESS, *argv]
        done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            return {"status": "failed", "stderr_tail": done.stderr[-2000:]}
        seconds.append(float(done.stdout.strip().splitlines()[-1]))
    return {"status": "ok", "median_s": statistics.median(seconds), "min_s": min(seconds),
            "max_s": max(seconds), "runs": repeats}  # fmt: skip


def time_repro() -> dict:
    """Time ``dvc repro -f`` of the whole pipeline, in the repository itself."""
    dvc = Path(sys.executable).with_name("dvc")
    log("dvc repro -f (minutes) ...")
    result = time_command([str(dvc) if dvc.exists() else "dvc", "repro", "-f"], 1, REPO_ROOT)
    log(f"dvc repro -f: {result.get('median_s', result['status'])}")
    return result


def machine_info() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        memory_gib = None
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=REPO_ROOT, capture_output=True, text=True
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": memory_gib,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "commit": commit or None,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 1 epoch, 10,000 samples, batch 128, 1 thread",
    )
    parser.add_argument("--threads", type=int, nargs="+", default=None, help="default: 1 2")
    parser.add_argument(
        "--batch-sizes", type=int, nargs="+", default=None, help="default: 64 128 256"
    )
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--frameworks", nargs="+", choices=FRAMEWORKS, default=list(FRAMEWORKS))
    parser.add_argument("--epochs", type=int, default=None, help="timed epochs; default 5")
    parser.add_argument("--warmup", type=int, default=None, help="untimed epochs; default 1")
    parser.add_argument("--samples", type=int, default=None, help="default 50000")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument(
        "--blas-env",
        choices=("auto", "as-set", "unset", "both"),
        default="auto",
        help="auto: as set, plus unset when OPENBLAS_CORETYPE or OPENBLAS_L2_SIZE is set (default)",
    )
    parser.add_argument("--no-prepare", action="store_true", help="skip timing prepare.py")
    parser.add_argument(
        "--with-repro",
        action="store_true",
        help="also time `dvc repro -f` in the repository (minutes)",
    )
    parser.add_argument(
        "--no-profile",
        action="store_true",
        help="skip the cProfile epoch of mininn (batch 128, 1 thread)",
    )
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    opts = parser.parse_args(argv)
    quick = opts.quick
    defaults = {
        "threads": [1] if quick else [1, 2],
        "batch_sizes": [128] if quick else [64, 128, 256],
        "epochs": 1 if quick else 5,
        "warmup": 1,
        "samples": 10_000 if quick else 50_000,
    }
    for key, value in defaults.items():
        if getattr(opts, key) is None:
            setattr(opts, key, value)
    if opts.epochs < 1 or opts.warmup < 0 or opts.samples < max(opts.batch_sizes):
        parser.error("need --epochs >= 1, --warmup >= 0 and --samples >= the largest batch size")
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    start = time.perf_counter()
    out = opts.out or (
        Path(tempfile.mkdtemp(prefix="mininn-bench-")) if opts.quick else DEFAULT_OUT
    )
    out.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    if load > 0.5:
        log(
            f"warning: the host is busy (load average {load:.1f} on {os.cpu_count()} cores); "
            "timings will be noisy, 2-thread ones most"
        )
    kernel_vars_set = any(os.environ.get(name) for name in _common.KERNEL_ENV_VARS)
    opts.columns = columns = {
        "auto": ["as-set", "unset"] if kernel_vars_set else ["as-set"],
        "as-set": ["as-set"],
        "unset": ["unset"],
        "both": ["as-set", "unset"],
    }[opts.blas_env]
    results: dict = {
        "machine": machine_info(),
        "settings": {key: getattr(opts, key) for key in SETTINGS},
        "blas_env_host": _common.blas_env(),
        "blas_columns": columns,
        "gemm": {},
        "runs": [],
        "complete": False,
    }
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # save what we have, as on ^C
    try:
        for column in columns:
            for threads in opts.threads:
                log(f"[{column} t={threads}] GEMM products, one by one ...")
                results["gemm"][f"{column}/{threads}"] = run_gemm(threads, column, opts)
                for batch in opts.batch_sizes:
                    for variant in opts.variants:
                        run = run_config(opts, column, threads, batch, variant, out)
                        results["runs"].append(run)
                        save(results, out, start)  # an interrupted run keeps what it measured
        if not opts.no_prepare:
            datasets = [opts.dataset] if opts.quick else ["fashion-mnist", "mnist"]
            results["prepare"] = time_prepare(datasets, 1 if opts.quick else 3)
        if opts.with_repro:
            results["repro"] = time_repro()
        results["complete"] = True
    except KeyboardInterrupt:
        log("interrupted: the results so far are kept")
    table = save(results, out, start)
    if out.resolve() == DEFAULT_OUT.resolve() and not opts.quick:
        report.update_readme(HERE / "README.md", table)
    print(table)
    log(f"wrote {out / 'results.json'} and results.md in {results['wall_seconds']:.0f} s")
    if not any(run["frameworks"] for run in results["runs"]):
        log("error: no framework trained: see the messages above (and errors in results.json)")
        return 1
    return 0 if results["complete"] else 130


def save(results: dict, out: Path, start: float) -> str:
    """Write results.json and results.md; return the Markdown."""
    results["wall_seconds"] = time.perf_counter() - start
    (out / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    table = report.markdown(results)
    (out / "results.md").write_text(table)
    return table


def run_config(
    opts: argparse.Namespace, column: str, threads: int, batch: int, variant: str, out: Path
) -> dict:
    """Measure one configuration: every framework that has the variant, and the bound."""
    # scikit-learn's MLP has no BatchNorm or Dropout.
    frameworks = [f for f in opts.frameworks if variant == "plain" or f != "sklearn"]
    profile = None
    first_column = column == opts.columns[0]
    if (threads, batch, variant) == PROFILED and first_column and not opts.quick:
        profile = None if opts.no_profile else out / "profile-mininn-b128-t1.txt"
    run = alternate(frameworks, threads, column, batch, variant, opts, profile)
    run.update(blas_env=column, threads=threads, batch_size=batch, variant=variant)
    return run


if __name__ == "__main__":
    raise SystemExit(main())
