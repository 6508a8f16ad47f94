"""Measure one code change alone: mininn before and after it, trained side by side in one process.

    python benchmarks/paired.py --baseline REV --patch change.diff
    python benchmarks/paired.py --baseline REV --candidate REV2

Two mininn source trees are imported into this one process, each as ``mininn``
in turn, and build their objects at once (which then keep their version's
modules alive):

- the baseline, ``git archive`` of ``--baseline``;
- the candidate: with ``--patch FILE`` (``git diff`` output), the baseline with
  that patch applied, so that nothing but the change differs; otherwise
  ``--candidate``, a revision, or ``worktree`` (this checkout, the default).

Each builds the benchmark's network (``worker.py``'s: 784-256-128-10 ReLU, and
with ``bn_dropout`` BatchNorm1d and Dropout(0.2) after each hidden Linear),
Adam(lr=1e-3) and cross-entropy in float32, from the same seed, and both train
on the same batches with their own ``mininn.training.train_epoch``. Each epoch
is cut into ``--chunks`` pieces of whole batches, and the two versions take
turns piece by piece, the order alternating; a piece lasts a fraction of a
second, so a change in the host's load falls on both alike. A version's epoch
time is the sum of its pieces, and the result is the median over the epochs
(after ``--warmup``) of the paired ratio candidate / baseline, for wall time
and for this process's CPU time (at 1 thread they measure the same work; CPU
time is less disturbed by other processes). 1 − ratio is the share of an epoch
that the change saves.

At the end the two models' state dicts are compared bit for bit: equal means
the change kept the numbers. Prints a JSON summary and a Markdown table to
stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # the sibling module, found through the path above

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
VERSIONS = ("baseline", "candidate")
HIDDEN, CLASSES, LR, DROPOUT = [256, 128], 10, 1e-3, 0.2  # as worker.py


def log(message: str) -> None:
    print(f"[paired {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def export(revision: str, folder: Path) -> Path:
    """Write ``git archive revision`` into ``folder``; returns it."""
    folder.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", revision], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def build_trees(args: argparse.Namespace, scratch: Path) -> dict[str, Path]:
    """The baseline and candidate source trees."""
    baseline = export(args.baseline, scratch / "baseline")
    if args.patch:
        candidate = export(args.baseline, scratch / "candidate")
        patch = str(Path(args.patch).resolve())
        subprocess.run(["git", "apply", patch], cwd=candidate, check=True)
    elif args.candidate == "worktree":
        candidate = scratch / "candidate"
        shutil.copytree(REPO_ROOT / "mininn", candidate / "mininn")
    else:
        candidate = export(args.candidate, scratch / "candidate")
    return {"baseline": baseline, "candidate": candidate}


def import_mininn(tree: Path) -> types.SimpleNamespace:
    """Import ``tree``'s mininn afresh, as ``mininn``; return the modules the run uses."""
    for name in [name for name in sys.modules if name.split(".")[0] == "mininn"]:
        del sys.modules[name]
    sys.path.insert(0, str(tree))
    try:
        modules = {
            name: importlib.import_module(f"mininn.{name}")
            for name in ("dataloader", "losses", "models", "optim", "training")
        }
        root = importlib.import_module("mininn")
    finally:
        sys.path.remove(str(tree))
    if Path(root.__file__).parent != tree / "mininn":
        raise RuntimeError(f"imported mininn from {root.__file__}, not from {tree}")
    return types.SimpleNamespace(mininn=root, **modules)


class Run:
    """One version's network, optimizer and loss, trained piece by piece."""

    def __init__(self, mn: types.SimpleNamespace, variant: str, seed: int) -> None:
        mn.mininn.manual_seed(seed)
        bn = variant == "bn_dropout"
        self.mn = mn
        self.model = mn.models.make_mlp(
            784, HIDDEN, CLASSES, dropout=DROPOUT if bn else 0.0, batch_norm=bn, dtype=np.float32
        )
        self.optimizer = mn.optim.Adam(self.model.parameters(), lr=LR)
        self.loss_fn = mn.losses.CrossEntropyLoss()

    def train(self, x: np.ndarray, y: np.ndarray, batch_size: int) -> tuple[float, float]:
        """Train on (x, y) in order; return (wall seconds, CPU seconds)."""
        loader = self.mn.dataloader.DataLoader(x, y, batch_size=batch_size)
        wall, cpu = time.perf_counter(), time.process_time()
        self.mn.training.train_epoch(self.model, self.loss_fn, self.optimizer, loader)
        return time.perf_counter() - wall, time.process_time() - cpu


def measure(trees: dict[str, Path], x: np.ndarray, y: np.ndarray, args, variant: str) -> dict:
    # Each version builds its objects right after its import: construction may import
    # lazily (by name, from sys.modules), training does not.
    runs = {name: Run(import_mininn(trees[name]), variant, args.seed) for name in VERSIONS}
    order_rng = np.random.default_rng(args.seed)
    steps = -(-len(x) // args.batch_size)
    bounds = [args.batch_size * (steps * i // args.chunks) for i in range(args.chunks + 1)]
    wall = {name: [] for name in runs}
    cpu = {name: [] for name in runs}
    turn = 0
    for epoch in range(args.warmup + args.epochs):
        permutation = order_rng.permutation(len(x))
        xs, ys = x[permutation], y[permutation]  # one copy, shared, outside the timing
        epoch_wall = dict.fromkeys(runs, 0.0)
        epoch_cpu = dict.fromkeys(runs, 0.0)
        for lo, hi in itertools.pairwise(bounds):
            names = VERSIONS if turn % 2 == 0 else VERSIONS[::-1]
            turn += 1
            for name in names:
                seconds, cpu_seconds = runs[name].train(xs[lo:hi], ys[lo:hi], args.batch_size)
                epoch_wall[name] += seconds
                epoch_cpu[name] += cpu_seconds
        timed = epoch >= args.warmup
        if timed:
            for name in runs:
                wall[name].append(epoch_wall[name])
                cpu[name].append(epoch_cpu[name])
        log(
            f"{variant} epoch {epoch + 1}{'' if timed else ' (warm-up)'}: "
            + ", ".join(f"{n} {epoch_wall[n]:.3f} s (cpu {epoch_cpu[n]:.3f})" for n in runs)
            + f", ratio {epoch_wall['candidate'] / epoch_wall['baseline']:.3f}"
            + f", load {os.getloadavg()[0]:.2f}"
        )
    states = {name: run.model.state_dict() for name, run in runs.items()}
    same = list(states["baseline"]) == list(states["candidate"]) and all(
        states["baseline"][key].tobytes() == states["candidate"][key].tobytes()
        for key in states["baseline"]
    )
    return {"variant": variant, "wall": _paired(wall), "cpu": _paired(cpu), "same_state": same}


def _paired(seconds: dict[str, list[float]]) -> dict:
    """Medians of each side and of the per-epoch ratio candidate / baseline."""
    ratios = [c / b for c, b in zip(seconds["candidate"], seconds["baseline"], strict=True)]
    ratio = statistics.median(ratios)
    return {
        "baseline_median_s": statistics.median(seconds["baseline"]),
        "candidate_median_s": statistics.median(seconds["candidate"]),
        "ratio_median": ratio,
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "saved_percent_of_epoch": 100 * (1 - ratio),
        "seconds": seconds,
    }


def markdown(result: dict, clock: str) -> str:
    figures = result[clock]
    return (
        f"| {result['variant']} | {clock} | {figures['baseline_median_s']:.3f} s | "
        f"{figures['candidate_median_s']:.3f} s | {figures['ratio_median']:.3f} "
        f"({figures['ratio_min']:.3f}–{figures['ratio_max']:.3f}) | "
        f"{figures['saved_percent_of_epoch']:+.1f} % | "
        f"{'yes' if result['same_state'] else 'no'} |"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", required=True, help="git revision before the change")
    parser.add_argument("--candidate", default="worktree", help="revision, or worktree")
    parser.add_argument("--patch", help="a git diff: the candidate is the baseline with it applied")
    parser.add_argument("--variants", nargs="+", default=["plain", "bn_dropout"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=9, help="timed epochs")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--chunks", type=int, default=16, help="turns per epoch and version")
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    limits = _common.limit_threads(args.threads)  # noqa: F841  (must stay alive)
    x, y = _common.load_training_split(args.dataset, args.samples)
    with tempfile.TemporaryDirectory(prefix="mininn-paired-") as scratch:
        trees = build_trees(args, Path(scratch))
        results = [measure(trees, x, y, args, variant) for variant in args.variants]
    print(json.dumps({"settings": vars(args), "results": results}, indent=2))
    print(
        f"\nbatch {args.batch_size}, {args.threads} thread(s), {args.epochs} paired epochs "
        f"(each in {args.chunks} alternating pieces) after {args.warmup} warm-up; medians"
    )
    print("| variant | clock | baseline | candidate | ratio (range) | saved | same state |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for result in results:
        for clock in ("wall", "cpu"):
            print(markdown(result, clock))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
