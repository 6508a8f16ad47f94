"""The GEMM lower bound: how fast NumPy's BLAS runs the matrix products of one training step.

    python benchmarks/gemm.py --threads 1 --batch-sizes 64 128 256 --samples 50000

prints one JSON line. For each batch size (and the smaller last batch of an
epoch, when the batch size does not divide the samples) it times each product of
one step of the 784-256-128-10 MLP with ``np.matmul(..., out=)`` in float32,
best of ``--repeats``, with the operands laid out as mininn's Linear has them
(``weight`` is ``(out, in)``, so the forward multiplies by a transposed view):

    forward      x @ W.T            (B, in) x (in, out)
    grad weight  grad_out.T @ x     (out, B) x (B, in)
    grad input   grad_out @ W       (B, out) x (out, in)     (none for the first layer
                                                              if the library skips it)

Each product costs 2·m·n·k FLOPs. The epoch bound is the sum over an epoch's
batches of the step's product times: training cannot be faster than that with
this BLAS, these shapes and this thread count.

It also times one ``mininn.optim.Adam`` step alone on the network's 235,146
float32 parameters (random gradients, best of ``--repeats``): the element-wise
work every step adds to its products, whatever the layers do. Bound plus Adam
is the floor of a NumPy training step with this optimizer.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # the sibling module, found through the path above

LAYERS = ((784, 256), (256, 128), (128, 10))  # (in_features, out_features)


def step_products(batch: int) -> list[dict]:
    """The products of one training step, in the order a step runs them.

    Each entry: ``name``, ``kind`` (forward, grad_weight, grad_input), ``layer``
    (0-based), the operand shapes and ``flops`` = 2·m·n·k.
    """
    products = []
    for layer, (n_in, n_out) in enumerate(LAYERS):
        products.append(
            {
                "name": f"fc{layer + 1} forward",
                "kind": "forward",
                "layer": layer,
                "a": (batch, n_in),
                "b": (n_in, n_out),
            }
        )
    for layer in reversed(range(len(LAYERS))):
        n_in, n_out = LAYERS[layer]
        products.append(
            {
                "name": f"fc{layer + 1} grad weight",
                "kind": "grad_weight",
                "layer": layer,
                "a": (n_out, batch),
                "b": (batch, n_in),
            }
        )
        products.append(
            {
                "name": f"fc{layer + 1} grad input",
                "kind": "grad_input",
                "layer": layer,
                "a": (batch, n_out),
                "b": (n_out, n_in),
            }
        )
    for p in products:
        m, k = p["a"]
        p["flops"] = 2 * m * k * p["b"][1]
    return products


def operands(kind: str, a_shape: tuple, b_shape: tuple, rng: np.random.Generator):
    """Arrays with mininn's layout: C-contiguous, transposed views where Linear uses ``.T``."""

    def rand(*shape):
        return rng.standard_normal(shape, dtype=np.float32)

    if kind == "forward":  # x @ weight.T, weight stored (out, in)
        return rand(*a_shape), rand(b_shape[1], b_shape[0]).T
    if kind == "grad_weight":  # grad_output.T @ x, grad_output stored (B, out)
        return rand(a_shape[1], a_shape[0]).T, rand(*b_shape)
    return rand(*a_shape), rand(*b_shape)  # grad_output @ weight


def time_call(call: Callable[[], object], repeats: int, min_seconds: float) -> float:
    """Best-of-``repeats`` seconds for one ``call()``.

    Each sample times enough calls to last ``min_seconds``, so the clock's
    resolution and the call overhead do not dominate small products.
    """
    call()
    calls = 1
    while True:  # calibrate
        start = time.perf_counter()
        for _ in range(calls):
            call()
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            break
        calls *= 2
    best = elapsed / calls
    for _ in range(repeats - 1):
        start = time.perf_counter()
        for _ in range(calls):
            call()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def time_product(a: np.ndarray, b: np.ndarray, repeats: int, min_seconds: float) -> float:
    """Best-of-``repeats`` seconds for one ``np.matmul(a, b, out=)``."""
    out = np.empty((a.shape[0], b.shape[1]), dtype=np.float32)
    return time_call(lambda: np.matmul(a, b, out=out), repeats, min_seconds)


def time_adam_step(repeats: int, min_seconds: float) -> float:
    """Best-of-``repeats`` seconds for one ``mininn.optim.Adam(lr=1e-3).step()`` on the
    MLP's parameters (float32, random gradients; the gradients are not read back)."""
    sys.path.insert(1, str(_common.REPO_ROOT))  # this checkout's mininn
    from mininn.module import Parameter
    from mininn.optim import Adam

    rng = np.random.default_rng(0)
    shapes = [shape for n_in, n_out in LAYERS for shape in ((n_out, n_in), (n_out,))]
    params = [Parameter(rng.standard_normal(shape).astype(np.float32)) for shape in shapes]
    optimizer = Adam(params, lr=1e-3)
    for param in params:
        param.grad[...] = rng.standard_normal(param.shape)
    return time_call(optimizer.step, repeats, min_seconds)


def measure(batch: int, repeats: int, min_seconds: float) -> list[dict]:
    """Time every product of one step at batch size ``batch``."""
    rng = np.random.default_rng(0)
    results = []
    for p in step_products(batch):
        a, b = operands(p["kind"], p["a"], p["b"], rng)
        seconds = time_product(a, b, repeats, min_seconds)
        results.append({**p, "seconds": seconds, "gflops": p["flops"] / seconds / 1e9})
    return results


def epoch_bound(
    timings: dict[int, list[dict]], batch: int, samples: int, skip_first_grad_input: bool
) -> dict:
    """The sum of product times over an epoch's batches (the last one may be smaller).

    Args:
        timings: :func:`measure` results keyed by batch size; must hold ``batch``
            and, if ``batch`` does not divide ``samples``, the remainder.
        skip_first_grad_input: leave out the first layer's grad input (8 products
            a step instead of 9), as a library that knows its input needs no
            gradient does.
    """
    full, rest = divmod(samples, batch)
    sizes = [(batch, full)] + ([(rest, 1)] if rest else [])
    seconds = flops = 0.0
    for size, count in sizes:
        for p in timings[size]:
            if skip_first_grad_input and p["kind"] == "grad_input" and p["layer"] == 0:
                continue
            seconds += count * p["seconds"]
            flops += count * p["flops"]
    return {"seconds": seconds, "flops": flops, "gflops": flops / seconds / 1e9}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--min-seconds", type=float, default=0.01)
    args = parser.parse_args(argv)
    limits = _common.limit_threads(args.threads)  # noqa: F841  (must stay alive)
    sizes = sorted({b for b in args.batch_sizes} | {args.samples % b for b in args.batch_sizes})
    timings = {size: measure(size, args.repeats, args.min_seconds) for size in sizes if size}
    bounds = {
        str(batch): {
            "products_8": epoch_bound(timings, batch, args.samples, skip_first_grad_input=True),
            "products_9": epoch_bound(timings, batch, args.samples, skip_first_grad_input=False),
        }
        for batch in args.batch_sizes
    }
    print(
        json.dumps(
            {
                "threads": args.threads,
                "samples": args.samples,
                "blas": _common.blas_info(),
                "env": _common.blas_env(),
                "products": {str(size): timings[size] for size in args.batch_sizes},
                "bounds": bounds,
                "adam_step_seconds": time_adam_step(args.repeats, args.min_seconds),
                "steps_per_epoch": {
                    str(batch): -(-args.samples // batch) for batch in args.batch_sizes
                },
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
