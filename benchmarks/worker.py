"""One framework's training process, which run.py asks for one epoch at a time.

    python benchmarks/worker.py --framework torch --threads 1 --batch-size 128

loads the data, builds the 784-256-128-10 network (``--variant bn_dropout``
adds BatchNorm1d and Dropout(0.2) after each hidden Linear) with Adam(lr=1e-3)
and cross-entropy, prints one JSON line ``{"event": "ready", ...}``, then reads
commands from stdin, one a line, and answers each with one JSON line:

    epoch           train one epoch: {"event": "epoch", "seconds", "loss", "peak_rss_mib"}
                    (--framework gemm: measure the GEMM bound of an epoch, adding "bounds")
    profile PATH    the same under cProfile, the 30 costliest functions written to PATH
    (end of input)  exit

A long-lived process per framework lets run.py alternate frameworks epoch by
epoch, so that the host's drift affects all of them alike. Only the epoch is
timed: imports, data loading and model construction are not. Errors are
answered with ``{"event": "error", "message"}`` and exit status 1.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # the sibling module, found through the path above

sys.path.insert(1, str(_common.REPO_ROOT))  # benchmark this checkout's mininn

HIDDEN = (256, 128)
CLASSES = 10
LR = 1e-3
DROPOUT = 0.2


class MininnTrainer:
    """mininn through its real loop, mininn.training.train_epoch."""

    def __init__(self, x: np.ndarray, y: np.ndarray, args: argparse.Namespace) -> None:
        from mininn import manual_seed
        from mininn.dataloader import DataLoader
        from mininn.losses import CrossEntropyLoss
        from mininn.models import make_mlp
        from mininn.optim import Adam
        from mininn.training import train_epoch

        manual_seed(args.seed)
        bn = args.variant == "bn_dropout"
        self.model = make_mlp(
            x.shape[1],
            list(HIDDEN),
            CLASSES,
            dropout=DROPOUT if bn else 0.0,
            batch_norm=bn,
            dtype=np.float32,
        )
        self.optimizer = Adam(self.model.parameters(), lr=LR)
        self.loss_fn = CrossEntropyLoss()
        self.loader = DataLoader(x, y, batch_size=args.batch_size, shuffle=True, seed=args.seed)
        self._train_epoch = train_epoch
        self.products_per_step = self._count_products(x[: args.batch_size], y[: args.batch_size])

    def _count_products(self, x: np.ndarray, y: np.ndarray) -> int:
        """Run one step's backward as train_epoch does: 9 products a step (3 forward, 6
        backward) if dL/dx comes back, else 8 (no input gradient for the first layer)."""
        self.model.train()
        self.loss_fn(self.model(x), y)
        grad_input = self.model.backward(self.loss_fn.backward(), input_grad=False)
        self.model.zero_grad()
        return 9 if grad_input is not None else 8

    def info(self) -> dict:
        import mininn

        return {
            "mininn": getattr(mininn, "__version__", None),
            "products_per_step": self.products_per_step,
        }

    def epoch(self) -> float:
        return self._train_epoch(self.model, self.loss_fn, self.optimizer, self.loader)["loss"]


class TorchTrainer:
    """PyTorch as its users write it: nn.Sequential, torch.optim.Adam, a loop over tensors."""

    def __init__(self, x: np.ndarray, y: np.ndarray, args: argparse.Namespace) -> None:
        import torch
        from torch import nn

        torch.set_num_threads(args.threads)
        torch.manual_seed(args.seed)
        layers: list[nn.Module] = []
        width = x.shape[1]
        for size in HIDDEN:
            layers.append(nn.Linear(width, size))
            if args.variant == "bn_dropout":
                layers.append(nn.BatchNorm1d(size))
            layers.append(nn.ReLU())
            if args.variant == "bn_dropout":
                layers.append(nn.Dropout(DROPOUT))
            width = size
        layers.append(nn.Linear(width, CLASSES))
        self.torch = torch
        self.model = nn.Sequential(*layers)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=LR)
        self.loss_fn = nn.CrossEntropyLoss()
        self.x = torch.from_numpy(x)  # shares the array's memory
        self.y = torch.from_numpy(y)
        self.batch_size = args.batch_size
        self.rng = np.random.default_rng(args.seed)

    def info(self) -> dict:
        return {
            "torch": self.torch.__version__,
            "torch_threads": self.torch.get_num_threads(),
            "torch_parallel_info": self.torch.__config__.parallel_info().splitlines()[:8],
        }

    def epoch(self) -> float:
        self.model.train()
        order = self.torch.from_numpy(self.rng.permutation(len(self.x)))
        total = 0.0
        for start in range(0, len(order), self.batch_size):
            index = order[start : start + self.batch_size]
            x_batch, y_batch = self.x[index], self.y[index]
            self.optimizer.zero_grad()
            loss = self.loss_fn(self.model(x_batch), y_batch)
            loss.backward()
            self.optimizer.step()
            total += loss.item() * len(index)
        return total / len(order)


class SklearnTrainer:
    """scikit-learn's MLPClassifier, one epoch per partial_fit call (no L2 penalty)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, args: argparse.Namespace) -> None:
        import sklearn
        from sklearn.neural_network import MLPClassifier

        if args.variant != "plain":
            raise ValueError("sklearn: MLPClassifier has no BatchNorm/Dropout; use --variant plain")
        self.sklearn = sklearn
        self.model = MLPClassifier(
            hidden_layer_sizes=HIDDEN,
            activation="relu",
            solver="adam",
            alpha=0.0,
            batch_size=args.batch_size,
            learning_rate_init=LR,
            shuffle=True,
            random_state=args.seed,
        )
        self.x, self.y = x, y
        self.classes = np.arange(CLASSES)

    def info(self) -> dict:
        return {"sklearn": self.sklearn.__version__}

    def epoch(self) -> float:
        self.model.partial_fit(self.x, self.y, classes=self.classes)
        return float(self.model.loss_)


class GemmBound:
    """Not a framework: each "epoch" measures the GEMM lower bound of an epoch anew.

    Taking its turn among the frameworks, it sees the same host load as they do,
    so that mininn's epoch time can be divided by it round by round. It needs no
    data (``x`` and ``y`` are None), and answers ``bounds``: the bound in seconds
    with 8 and with 9 products a step (see gemm.py).
    """

    def __init__(self, x: None, y: None, args: argparse.Namespace) -> None:
        import gemm

        self.gemm = gemm
        self.batch_size, self.samples = args.batch_size, args.samples
        self.sizes = sorted({args.batch_size, args.samples % args.batch_size} - {0})
        self.bounds: dict[str, float] = {}

    def info(self) -> dict:
        return {}

    def epoch(self) -> float:
        timings = {
            size: self.gemm.measure(size, repeats=3, min_seconds=0.005) for size in self.sizes
        }
        self.bounds = {
            str(products): self.gemm.epoch_bound(
                timings, self.batch_size, self.samples, skip_first_grad_input=products == 8
            )["seconds"]
            for products in (8, 9)
        }
        return float("nan")


TRAINERS = {
    "mininn": MininnTrainer,
    "torch": TorchTrainer,
    "sklearn": SklearnTrainer,
    "gemm": GemmBound,
}


def profile_epoch(trainer, path: str) -> tuple[float, float]:
    """One epoch under cProfile; the 30 costliest functions (own time) go to ``path``."""
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    loss = trainer.epoch()
    profiler.disable()
    seconds = time.perf_counter() - start
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(30)
    Path(path).write_text(f"# one epoch under cProfile: {seconds:.3f} s\n{text.getvalue()}")
    return seconds, loss


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--framework", choices=sorted(TRAINERS), required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--variant", choices=("plain", "bn_dropout"), default="plain")
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    # Answers go to the original stdout; anything a library prints goes to stderr.
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def answer(**fields) -> None:
        answers.write(json.dumps(fields) + "\n")

    args = parse_args(argv)
    try:
        limits = _common.limit_threads(args.threads)  # noqa: F841  (must stay alive)
        start = time.perf_counter()
        if args.framework == "gemm":
            x = y = None
        else:
            x, y = _common.load_training_split(args.dataset, args.samples)
        trainer = TRAINERS[args.framework](x, y, args)
        answer(
            event="ready",
            framework=args.framework,
            setup_seconds=time.perf_counter() - start,
            rss_after_setup_mib=_common.peak_rss_mib(),
            numpy=np.__version__,
            blas=_common.blas_info(),
            env=_common.blas_env(),
            **trainer.info(),
        )
        for line in sys.stdin:
            command = line.split()
            if not command:
                continue
            if command[0] == "epoch":
                start = time.perf_counter()
                loss = trainer.epoch()
                seconds = time.perf_counter() - start
            elif command[0] == "profile" and len(command) == 2:
                seconds, loss = profile_epoch(trainer, command[1])
            else:
                raise ValueError(f"worker: unknown command {line.strip()!r}")
            extra = {"bounds": trainer.bounds} if isinstance(trainer, GemmBound) else {}
            answer(
                event="epoch",
                seconds=seconds,
                loss=loss,
                peak_rss_mib=_common.peak_rss_mib(),
                **extra,
            )
    except Exception as exc:  # report any failure to run.py, which carries on without us
        traceback.print_exc()
        answer(event="error", message=f"{type(exc).__name__}: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
