"""The checkpoint of a training run: what :func:`mininn.training.fit` and
:func:`mininn.interop.fit_torch` save after every epoch to continue later.

The file (written with :func:`mininn.save`, so ``.npz`` without pickle) holds::

    {"format", "written_by": "fit" | "fit_torch", "epoch": epochs done,
     "state": {"model", "optimizer", "scheduler", "loader", ...},  # each state_dict()
     "package_generator": the state of mininn's generator (Dropout's masks),
     "history": {...}, "early_stopping": {"best_loss", "waited", "best_state"},
     "fingerprint": the setup that started the run, "fingerprint_now": the same after
     this epoch}

A *fingerprint* describes a setup as plain data: the model's module classes and
state shapes and dtypes, the optimizer's class and hyperparameters, the
scheduler's class and state, the loss's settings, the data (shapes, dtypes and
SHA-256 of the arrays), the loader's settings and the fit arguments that change
the result. A checkpoint is continued only when the new call's setup equals the
one that started the run (the same objects built afresh, e.g. in a new process)
or the one saved with the last epoch (the same objects, continued in the same
process); anything else is refused with the list of differences, so two runs are
never mixed.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mininn._rng import default_rng
from mininn.serialization import load, save
from mininn.transforms import _generator_state

_FORMAT = "mininn training checkpoint"


def module_generators(model: Any) -> dict[str, np.random.Generator]:
    """The generators modules hold (e.g. ``Dropout(rng=0)``), by ``<module>.<attribute>``."""
    found = {}
    for module_name, module in model.named_modules():
        for attribute, value in vars(module).items():
            if isinstance(value, np.random.Generator):
                found[f"{module_name}.{attribute}".lstrip(".")] = value
    return found


def _canonical(value: Any) -> Any:
    """``value`` as plain data for a fingerprint: arrays (and tensors) by shape, dtype
    and SHA-256, tuples as lists, NumPy scalars as Python numbers, objects by type."""
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch.Tensor
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        data = np.ascontiguousarray(value)
        digest = hashlib.sha256(data.reshape(-1).view(np.uint8)).hexdigest()
        return {"shape": list(value.shape), "dtype": str(value.dtype), "sha256": digest}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {k if isinstance(k, (str, int)) else repr(k): _canonical(v) for k, v in
                value.items()}  # fmt: skip
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return f"<{type(value).__name__}>"


def _describe(transform: Any) -> str | None:
    """``repr(transform)`` without memory addresses (a function's differs in each process)."""
    return None if transform is None else re.sub(r" at 0x[0-9a-fA-F]+", "", repr(transform))


def _model_fingerprint(named_modules: Any, state: Mapping[str, Any]) -> dict:
    """The architecture: module classes by name, and each state entry's shape and dtype."""
    return {
        "modules": [[name, type(module).__name__] for name, module in named_modules],
        "state": {key: f"{tuple(np.shape(v))} {getattr(v, 'dtype', '')}"
                  for key, v in state.items()},
    }  # fmt: skip


def _fingerprint(setup: dict, optimizer: Any, scheduler: Any) -> dict:
    """The setup, with the optimizer's and scheduler's settings as they are now (they
    change while training); in the order a mismatch is best explained."""
    groups = optimizer.state_dict()["param_groups"]
    return {
        "model": setup["model"],
        "scheduler": None if scheduler is None else {
            "class": type(scheduler).__name__, "state": _canonical(scheduler.state_dict())},
        "optimizer": {"class": type(optimizer).__name__, "param_groups": _canonical(groups)},
        **{key: value for key, value in setup.items() if key != "model"},
    }  # fmt: skip


def checkpoint_of_run(
    path: str,
    get_state: Callable[[], dict],
    set_state: Callable[[dict], None],
    *,
    model: Any,
    loss_fn: Any,
    optimizer: Any,
    scheduler: Any,
    train_loader: Any,
    val_data: Any,
    **arguments: Any,
) -> Checkpoint:
    """The checkpoint of a fit or fit_torch run (a torch or mininn model, loss, optimizer
    and scheduler); ``arguments`` are the fit arguments a continuation must repeat."""
    setup = _setup_fingerprint(
        model=_model_fingerprint(model.named_modules(), model.state_dict()), loss_fn=loss_fn,
        train_loader=train_loader, val_data=val_data, **arguments,
    )  # fmt: skip
    return Checkpoint(path, lambda: _fingerprint(setup, optimizer, scheduler), get_state,
                       set_state)  # fmt: skip


def _setup_fingerprint(*, model: dict, loss_fn: Any, train_loader: Any, val_data: Any,
                       **arguments: Any) -> dict:  # fmt: skip
    """What must not change between a run and its continuation, but the optimizer's
    and scheduler's (computed separately, as they change while training)."""
    loss_settings = {
        key: value for key, value in vars(loss_fn).items()
        if not key.startswith("_") and key != "training"
    }  # fmt: skip
    if hasattr(loss_fn, "named_buffers"):  # e.g. the class weights of torch's losses
        loss_settings.update(loss_fn.named_buffers())
    return {
        "model": model,
        "loss": {"class": type(loss_fn).__name__, "settings": _canonical(loss_settings)},
        "data": {
            "train": [_canonical(a) for a in train_loader.arrays],
            "val": None if val_data is None else [_canonical(np.asarray(a)) for a in val_data],
            "batch_size": train_loader.batch_size,
            "shuffle": train_loader.shuffle,
            "drop_last": train_loader.drop_last,
            "transform": _describe(train_loader.transform),
        },
        "fit": _canonical(arguments),
    }


def _differences(saved: Any, current: Any, where: str = "") -> list[str]:
    """Where two canonical fingerprints differ, e.g. ``optimizer.param_groups[0].lr: 0.1
    in the file, 0.01 now``."""
    if isinstance(saved, dict) and isinstance(current, dict):
        if "class" in saved and saved.get("class") != current.get("class"):
            where = f"{where}.class" if where else "class"  # the rest follows from it
            return [f"{where}: {saved.get('class')!r} in the file, {current.get('class')!r} now"]
        found = []
        for key in list(saved) + [k for k in current if k not in saved]:
            name = key if isinstance(key, str) and key.isidentifier() else f"[{key!r}]"
            inner = f"{where}.{name}" if where and name[0] != "[" else f"{where}{name}"
            if key not in current or key not in saved:
                side = "the file" if key in saved else "this run"
                found.append(f"{inner}: only in {side}")
            else:
                found += _differences(saved[key], current[key], inner)
        return found
    if isinstance(saved, list) and isinstance(current, list) and len(saved) == len(current):
        found = []
        for i, (a, b) in enumerate(zip(saved, current, strict=True)):
            found += _differences(a, b, f"{where}[{i}]")
        return found
    same = saved == current or (
        isinstance(saved, float) and isinstance(current, float)
        and math.isnan(saved) and math.isnan(current)
    )  # fmt: skip
    return [] if same else [f"{where}: {saved!r:.60} in the file, {current!r:.60} now"]


@dataclass
class Checkpoint:
    """A run's checkpoint file, and how to take and restore the framework's state.

    ``fingerprint()`` describes the setup from the live objects. A checkpoint is
    continued when the setup at the start of the call equals the one that started
    the run (fresh objects built the same way, e.g. in a new process) or the one
    saved with its last epoch (the same objects, continued in the same process).
    """

    path: str
    fingerprint: Callable[[], dict]
    get_state: Callable[[], dict]
    set_state: Callable[[dict], None]
    origin: dict | None = None

    def read(self, epochs: int, where: str) -> dict | None:
        """The saved run, after checking it fits; None when there is no file yet."""
        current = self.fingerprint()
        self.origin = current
        if not os.path.exists(self.path):
            return None
        fix = f"delete {self.path!r} to start over, or pass the setup that wrote it"
        try:
            saved = load(self.path)
        except ValueError as error:
            raise ValueError(
                f"{where}: cannot read checkpoint {self.path!r} ({error}); {fix}"
            ) from error
        if not isinstance(saved, dict) or saved.get("format") != _FORMAT:
            raise ValueError(
                f"{where}: {self.path!r} is not a checkpoint written by {where} (no "
                f"{_FORMAT!r} entry); {fix}"
            )
        if saved["written_by"] != where:
            raise ValueError(
                f"{where}: checkpoint {self.path!r} was written by {saved['written_by']}, which "
                f"trains another framework's model; {fix}"
            )
        differences = _differences(saved["fingerprint"], current)
        if differences and _differences(saved["fingerprint_now"], current):
            shown = "; ".join(differences[:5]) + (
                f"; and {len(differences) - 5} more" if len(differences) > 5 else ""
            )
            raise ValueError(
                f"{where}: checkpoint {self.path!r} was written by another setup ({shown}); "
                f"it is not continued, to avoid mixing two runs: {fix}"
            )
        if saved["epoch"] > epochs:
            raise ValueError(
                f"{where}: checkpoint {self.path!r} holds {saved['epoch']} epochs, more than "
                f"epochs={epochs}; pass epochs >= {saved['epoch']}, or delete the file to "
                "start over"
            )
        self.origin = saved["fingerprint"]
        self.set_state(saved["state"])
        default_rng().bit_generator.state = saved["package_generator"]
        return saved

    def write(self, epoch: int, history: Any, early_stopping: dict, where: str) -> None:
        """Save the state after ``epoch`` (a :class:`~mininn.training.History` so far)."""
        save(
            {
                "format": _FORMAT,
                "written_by": where,
                "fingerprint": self.origin,
                "fingerprint_now": self.fingerprint(),
                "epoch": epoch,
                "state": self.get_state(),
                "package_generator": _generator_state(default_rng()),
                "history": {
                    "epochs": history.epochs,
                    "step_losses": np.asarray(history.step_losses, dtype=np.float64),
                    "best_epoch": history.best_epoch,
                    "stopped_early": history.stopped_early,
                },
                "early_stopping": early_stopping,
            },
            self.path,
        )
