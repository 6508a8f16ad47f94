"""The pipeline's recipe in one place: params.yaml's model:, train:, overrides: and
baseline: sections, each value checked, and the builders every stage shares (network,
optimizer, scheduler, loss, augmentation, loader, checkpoint file), so that no stage
imports another and train and baseline build the same run in the same order.

The recipe of one dataset is ``resolved_params(dataset)``: the ``model:`` and
``train:`` sections with ``overrides.<dataset>`` deep-merged over them (a mapping
merges key by key, any other value replaces). A wrong value stops with a one-line
:class:`~pipeline.common.StageError` naming the dotted key where it was written
(``train.lr`` or ``overrides.mnist.train.augment.crop_padding``), the value and
what is allowed.

Randomness, all derived from ``train.seed``: ``mininn.manual_seed(seed)`` before the
network is built (its initial weights, then Dropout's masks, in call order), the
DataLoader's shuffling from ``seed``, ``RandomCrop`` from
``numpy.random.default_rng([seed, 1])`` and ``RandomHorizontalFlip`` from
``default_rng([seed, 2])``: streams independent of each other and of the
shuffling, the same in train and baseline.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import mininn
from mininn.data import DATASETS
from mininn.models import ACTIVATIONS, make_mlp
from mininn.optim import lr_scheduler
from mininn.transforms import Compose, RandomCrop, RandomHorizontalFlip
from pipeline import common
from pipeline.common import StageError

OPTIMIZERS = {
    "sgd": mininn.optim.SGD,
    "adam": mininn.optim.Adam,
    "adamw": mininn.optim.AdamW,
    "rmsprop": mininn.optim.RMSprop,
}
MOMENTUM_OPTIMIZERS = ("sgd", "rmsprop")
"""The optimizers that take ``train.momentum``; ``train.betas`` goes to the others."""
SCHEDULERS = {
    name: getattr(lr_scheduler, name)
    for name in lr_scheduler.__all__
    if name not in ("LRScheduler", "SequentialLR")  # a base class; one that takes schedulers
}
NOT_ARGUMENTS = ("optimizer", "last_epoch")
"""Constructor arguments the stage passes itself (``last_epoch``: resuming is fit's job)."""

MODEL_KEYS = ("hidden_sizes", "activation", "batch_norm", "dropout")
TRAIN_KEYS = ("optimizer", "lr", "weight_decay", "momentum", "betas", "scheduler",
              "label_smoothing", "clip_grad_norm", "augment", "batch_size", "epochs",
              "patience", "seed", "dtype")  # fmt: skip
SCHEDULER_KEYS = ("name", "args")
AUGMENT_KEYS = ("crop_padding", "hflip")
SECTIONS = {"model": MODEL_KEYS, "train": TRAIN_KEYS}
NESTED = {("train", "scheduler"): SCHEDULER_KEYS, ("train", "augment"): AUGMENT_KEYS}
CROP_SEED, FLIP_SEED = 1, 2
"""``RandomCrop`` draws from ``default_rng([train.seed, CROP_SEED])``, the flip likewise."""


# ------------------------------------------------------------------ naming keys


@dataclass(frozen=True)
class _Names:
    """Dotted names of a section's keys: where the user wrote each value.

    A key that ``override`` sets is named ``overrides.<dataset>.<section>.<key>``;
    any other ``<section>.<key>``.
    """

    section: str
    dataset: str | None = None
    override: Mapping[str, Any] | None = None

    def __call__(self, *path: str | int) -> str:
        written = self._by_override(path)
        name = f"overrides.{self.dataset}.{self.section}" if written else self.section
        for part in path:
            name += f"[{part}]" if isinstance(part, int) else f".{part}"
        return name

    def _by_override(self, path: tuple[str | int, ...]) -> bool:
        node: Any = self.override
        if not isinstance(node, Mapping):
            return False
        scheduler = node.get("scheduler")
        if path[:1] == ("scheduler",) and isinstance(scheduler, Mapping) and "name" in scheduler:
            return True  # the override names a scheduler: it owns its arguments
        for part in path:
            if isinstance(part, int):
                break  # an element of a list: the list was written as a whole
            if not isinstance(node, Mapping) or part not in node:
                return False
            node = node[part]
        return True


def _keys(section: Any, allowed: Iterable[str], name: str, *, exact: bool = True) -> dict:
    """``section`` as a dict with exactly (or, not exact, at most) the keys ``allowed``."""
    allowed = list(allowed)
    if not isinstance(section, Mapping):
        raise StageError(f"{name}: expected a mapping with the keys {', '.join(allowed)}, "
                         f"got {section!r}")  # fmt: skip
    unknown = [str(k) for k in section if k not in allowed]
    if unknown:
        raise StageError(
            f"{name}: unknown key(s) {', '.join(f'{name}.{k}' for k in unknown)}; the keys of "
            f"{name} are {', '.join(sorted(allowed))} (a misspelling?)"
        )
    missing = [k for k in allowed if k not in section]
    if exact and missing:
        raise StageError(f"{name}: missing key(s) {', '.join(f'{name}.{k}' for k in missing)}; "
                         f"add them under {name}")  # fmt: skip
    return dict(section)


# ------------------------------------------------------------------ model:


def check_model(p: Mapping[str, Any], names: _Names | None = None) -> dict[str, Any]:
    """The ``model:`` values checked; ``names`` says where each was written."""
    key = names or _Names("model")
    p = _keys(p, MODEL_KEYS, key.section)
    sizes = p["hidden_sizes"]
    if not isinstance(sizes, list):
        raise StageError(
            f"{key('hidden_sizes')}: expected a list of ints, e.g. [512, 256], got {sizes!r}"
        )
    if not isinstance(p["batch_norm"], bool):
        raise StageError(f"{key('batch_norm')}: expected true or false, got {p['batch_norm']!r}")
    return {
        "hidden_sizes": [common.check_int(s, key("hidden_sizes", i), minimum=1)
                         for i, s in enumerate(sizes)],
        "activation": common.check_choice(p["activation"], key("activation"), ACTIVATIONS),
        "batch_norm": p["batch_norm"],
        "dropout": common.check_number(p["dropout"], key("dropout"), minimum=0, maximum=1,
                                       max_inclusive=False),
    }  # fmt: skip


# ------------------------------------------------------------------ train:


def _betas(value: Any, key: _Names) -> list[float]:
    if not isinstance(value, list) or len(value) != 2:
        raise StageError(f"{key('betas')}: expected a list of two numbers in [0, 1), e.g. "
                         f"[0.9, 0.999], got {value!r}")  # fmt: skip
    return [common.check_number(b, key("betas", i), minimum=0, maximum=1, max_inclusive=False)
            for i, b in enumerate(value)]  # fmt: skip


def _augment(value: Any, key: _Names) -> dict[str, Any]:
    name = key("augment")
    value = _keys(value, AUGMENT_KEYS, name)
    return {
        "crop_padding": common.check_int(value["crop_padding"], key("augment", "crop_padding"),
                                         minimum=0, maximum=common.IMAGE_SIZE),
        "hflip": common.check_number(value["hflip"], key("augment", "hflip"), minimum=0,
                                     maximum=1),
    }  # fmt: skip


def scheduler_arguments(name: str) -> list[str]:
    """The keyword arguments ``train.scheduler.args`` may give scheduler ``name``."""
    parameters = inspect.signature(SCHEDULERS[name]).parameters
    return [p for p in parameters if p not in NOT_ARGUMENTS]


def _scheduler(value: Any, key: _Names) -> dict[str, Any] | None:
    if value is None:
        return None
    value = _keys(value, SCHEDULER_KEYS, key("scheduler"))
    name = value["name"]
    if name not in SCHEDULERS:
        raise StageError(f"{key('scheduler', 'name')}: expected null (a constant lr) or one of "
                         f"{', '.join(SCHEDULERS)}, got {name!r}")  # fmt: skip
    args = {} if value["args"] is None else value["args"]
    where = key("scheduler", "args")
    if not isinstance(args, Mapping):
        raise StageError(f"{where}: expected a mapping of {name}'s keyword arguments, e.g. "
                         f"{{max_lr: 0.003}}, got {args!r}")  # fmt: skip
    accepted = scheduler_arguments(name)
    for arg, item in args.items():
        if arg not in accepted:
            raise StageError(f"{key('scheduler', 'args', arg)}: unknown argument of {name}; its "
                             f"arguments are {', '.join(accepted)}")  # fmt: skip
        where_arg = key("scheduler", "args", arg)
        if isinstance(item, str) and _is_float_text(item):
            common.check_number(item, where_arg)  # the quoted-number hint
        if isinstance(item, float):
            common.check_number(item, where_arg)  # finite
        if arg in MOMENTUM_ARGS:
            common.check_number(item, where_arg, minimum=0, maximum=1)
        if arg == "max_lr":
            common.check_number(item, where_arg, minimum=0, min_inclusive=False)
    return {"name": name, "args": dict(args)}


MOMENTUM_ARGS = ("base_momentum", "max_momentum")
"""OneCycleLR's momenta: they become SGD's momentum or Adam's beta1, in [0, 1]."""


def _is_float_text(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def check_train(p: Mapping[str, Any], names: _Names | None = None) -> dict[str, Any]:
    """The ``train:`` values checked (the scheduler built once on a stand-in optimizer,
    so that arguments its constructor refuses stop here); ``names`` says where each
    value was written."""
    key = names or _Names("train")
    p = _keys(p, TRAIN_KEYS, key.section)
    clip = p["clip_grad_norm"]
    train = {
        "optimizer": common.check_choice(p["optimizer"], key("optimizer"), OPTIMIZERS),
        "lr": common.check_number(p["lr"], key("lr"), minimum=0, min_inclusive=False),
        "weight_decay": common.check_number(p["weight_decay"], key("weight_decay"), minimum=0),
        "momentum": common.check_number(p["momentum"], key("momentum"), minimum=0, maximum=1),
        "betas": _betas(p["betas"], key),
        "scheduler": _scheduler(p["scheduler"], key),
        "label_smoothing": common.check_number(p["label_smoothing"], key("label_smoothing"),
                                               minimum=0, maximum=1),
        "clip_grad_norm": None if clip is None else common.check_number(
            clip, key("clip_grad_norm"), minimum=0, min_inclusive=False),
        "augment": _augment(p["augment"], key),
        "batch_size": common.check_int(p["batch_size"], key("batch_size"), minimum=1),
        "epochs": common.check_int(p["epochs"], key("epochs"), minimum=1),
        "patience": None if p["patience"] is None
        else common.check_int(p["patience"], key("patience"), minimum=1),
        "seed": common.check_int(p["seed"], key("seed"), minimum=0, maximum=2**32 - 1),
        "dtype": common.check_choice(p["dtype"], key("dtype"), ["float32", "float64"]),
    }  # fmt: skip
    if train["scheduler"] is not None:  # arguments the constructor refuses, named here
        stand_in = [mininn.Parameter(np.zeros(1))]
        build_scheduler(build_optimizer(stand_in, train), train, 1, key("scheduler", "args"))
    return train


# ------------------------------------------------------------------ overrides:


def _merge(base: Any, override: Any, path: tuple[str, ...] = ()) -> Any:
    """``override`` deep-merged over ``base``: mappings key by key, other values replace.

    A scheduler override that names another scheduler replaces the base's (its
    ``args`` would not fit the new class); one without ``name`` merges into it.
    """
    if not isinstance(override, Mapping) or not isinstance(base, Mapping):
        return override
    if path == ("train", "scheduler") and override.get("name", base.get("name")) != base.get(
        "name"
    ):
        return {"args": {}, **override}
    merged = dict(base)
    for k, v in override.items():
        merged[k] = _merge(base[k], v, (*path, k)) if k in base else v
    return merged


def _check_override_keys(dataset: str, override: Any) -> dict:
    """The keys of ``overrides.<dataset>``: sections and keys that exist (values later)."""
    where = f"overrides.{dataset}"
    override = {} if override is None else override
    if not isinstance(override, Mapping):
        raise StageError(f"{where}: expected a mapping of sections (model:, train:) holding the "
                         f"keys that differ for {dataset}, got {override!r}")  # fmt: skip
    for section, values in override.items():
        if section not in SECTIONS:
            raise StageError(f"{where}.{section}: unknown section; overrides set keys of "
                             f"{' and '.join(f'{s}:' for s in SECTIONS)}")  # fmt: skip
        if values is None:
            continue
        _keys(values, SECTIONS[section], f"{where}.{section}", exact=False)
        for (outer, inner), allowed in NESTED.items():
            nested = values.get(inner) if outer == section else None
            if isinstance(nested, Mapping):
                _keys(nested, allowed, f"{where}.{section}.{inner}", exact=False)
    return {section: values or {} for section, values in override.items()}


def overrides_params(path: str | Path | None = None) -> dict[str, dict]:
    """``overrides:`` checked: dataset -> {section: keys}; absent or null is no override.

    Raises:
        StageError: not a mapping; a dataset not in ``datasets:``; an unknown section
            or key (values are checked once merged, by :func:`resolved_params`).
    """
    try:
        overrides = common.load_params("overrides", path=path)
    except StageError as exc:
        if "missing section 'overrides:'" not in str(exc):
            raise
        return {}
    if overrides is None:
        return {}
    if not isinstance(overrides, Mapping):
        raise StageError(f"overrides: expected a mapping of dataset names to the keys that "
                         f"differ for them, got {overrides!r}")  # fmt: skip
    if overrides:
        datasets = common.load_params("datasets", path=path)
        datasets = datasets if isinstance(datasets, list) else []
        for dataset in overrides:
            if dataset not in datasets:
                raise StageError(
                    f"overrides.{dataset}: not a dataset of datasets: ({', '.join(datasets)}); "
                    "remove it or add the dataset"
                )
    return {dataset: _check_override_keys(dataset, o) for dataset, o in overrides.items()}


# ------------------------------------------------------------------ the sections


def model_params(path: str | Path | None = None) -> dict[str, Any]:
    """The ``model:`` section of params.yaml, without overrides, every value checked."""
    return check_model(common.load_params("model", path=path))


def train_params(path: str | Path | None = None) -> dict[str, Any]:
    """The ``train:`` section of params.yaml, without overrides, every value checked."""
    return check_train(common.load_params("train", path=path))


def resolved_params(dataset: str, path: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """The recipe of ``dataset``: ``{"model": ..., "train": ...}`` with
    ``overrides.<dataset>`` applied, every value checked (the base sections and the
    override structure of every dataset too, so that one bad key stops every stage).

    Raises:
        StageError: a missing or unknown key or a bad value, named where it was
            written, e.g. ``overrides.mnist.train.augment.crop_padding``.
    """
    base = {"model": common.load_params("model", path=path),
            "train": common.load_params("train", path=path)}  # fmt: skip
    checked = {"model": check_model(base["model"]), "train": check_train(base["train"])}
    overrides = overrides_params(path)
    override = overrides.get(dataset)
    if not override:
        return checked
    merged = {
        section: _merge(base[section], override.get(section, {}), (section,))
        for section in SECTIONS
    }
    return {
        "model": check_model(merged["model"], _Names("model", dataset, override.get("model"))),
        "train": check_train(merged["train"], _Names("train", dataset, override.get("train"))),
    }


def baseline_params(path: str | Path | None = None) -> dict[str, Any]:
    """The ``baseline:`` section of params.yaml, every value checked (StageError naming the key)."""
    p = common.load_params("baseline", ["source", "threads"], path)
    source = p["source"]
    if not isinstance(source, str) or (source != "run" and "{dataset}" not in source):
        raise StageError(
            f"baseline.source: expected 'run' or a path template containing {{dataset}}, "
            f"e.g. baselines/{{dataset}}.json, got {source!r}"
        )
    return {"source": source, "threads": common.check_int(p["threads"], "baseline.threads",
                                                          minimum=0)}  # fmt: skip


# ------------------------------------------------------------------ builders


def build(dataset: str, model_p: dict[str, Any], dtype: str) -> mininn.Sequential:
    """The network of ``model_p`` for ``dataset`` (784 inputs, one output per class)."""
    return make_mlp(
        common.NUM_FEATURES, model_p["hidden_sizes"], DATASETS[dataset].num_classes,
        activation=model_p["activation"], dropout=model_p["dropout"],
        batch_norm=model_p["batch_norm"], dtype=dtype,
    )  # fmt: skip


def build_optimizer(model: Any, train_p: dict[str, Any]) -> mininn.optim.Optimizer:
    """The optimizer of ``train_p`` over ``model``'s parameters (a Module or a list of
    Parameters): momentum for sgd/rmsprop, betas for adam/adamw."""
    params = model.parameters() if hasattr(model, "parameters") else model
    if train_p["optimizer"] in MOMENTUM_OPTIMIZERS:
        extra = {"momentum": train_p["momentum"]}
    else:
        extra = {"betas": tuple(train_p["betas"])}
    return OPTIMIZERS[train_p["optimizer"]](
        params, lr=train_p["lr"], weight_decay=train_p["weight_decay"], **extra
    )


def scheduler_kwargs(train_p: dict[str, Any], steps_per_epoch: int) -> dict[str, Any]:
    """``train.scheduler.args`` with what the stage fills in when omitted: OneCycleLR's
    ``epochs`` (train.epochs) and ``steps_per_epoch`` (batches per epoch) unless
    ``total_steps`` is given, CosineAnnealingLR's ``T_max`` (train.epochs)."""
    name, args = train_p["scheduler"]["name"], dict(train_p["scheduler"]["args"])
    if name == "OneCycleLR" and "total_steps" not in args:
        args.setdefault("epochs", train_p["epochs"])
        args.setdefault("steps_per_epoch", steps_per_epoch)
    if name == "CosineAnnealingLR":
        args.setdefault("T_max", train_p["epochs"])
    return args


def build_scheduler(
    optimizer: mininn.optim.Optimizer,
    train_p: dict[str, Any],
    steps_per_epoch: int,
    where: str = "train.scheduler.args",
) -> lr_scheduler.LRScheduler | None:
    """The scheduler of ``train.scheduler`` over ``optimizer``, or None (constant lr).

    Raises:
        StageError: the constructor refuses the arguments (its message, in one line,
            naming ``where``); a OneCycleLR cycle shorter than the training.
    """
    if train_p["scheduler"] is None:
        return None
    name = train_p["scheduler"]["name"]
    args = scheduler_kwargs(train_p, steps_per_epoch)
    try:
        scheduler = SCHEDULERS[name](optimizer, **args)
    except (ValueError, TypeError) as exc:
        reason = " ".join(str(exc).split())
        raise StageError(f"{where}: {name} refuses {args}: {reason}") from None
    if name == "OneCycleLR":
        total = args.get("total_steps") or args["epochs"] * args["steps_per_epoch"]
        needed = train_p["epochs"] * steps_per_epoch
        if total < needed:
            raise StageError(
                f"{where}: OneCycleLR's cycle has {total} steps, fewer than the {needed} of "
                f"train.epochs={train_p['epochs']} x {steps_per_epoch} batches; drop "
                "total_steps/epochs/steps_per_epoch from the args to fit the training"
            )
    return scheduler


def build_loss(train_p: dict[str, Any]) -> mininn.CrossEntropyLoss:
    """The training criterion: cross-entropy with ``train.label_smoothing``."""
    return mininn.CrossEntropyLoss(label_smoothing=train_p["label_smoothing"])


def build_transform(train_p: dict[str, Any], fill: float) -> Compose | None:
    """``train.augment`` as a transform of flattened 28x28 batches, or None.

    ``RandomCrop(28, padding)`` first, then ``RandomHorizontalFlip(p)``, each seeded
    from ``train.seed`` (module docstring). ``fill`` is the normalised value of a
    black pixel, ``-mean / std``: the padding is black, as torchvision's padding of
    the raw image before ``Normalize``.
    """
    augment, seed = train_p["augment"], train_p["seed"]
    shape = (common.IMAGE_SIZE, common.IMAGE_SIZE)
    steps = []
    if augment["crop_padding"]:
        crop_rng = np.random.default_rng([seed, CROP_SEED])
        steps.append(RandomCrop(common.IMAGE_SIZE, padding=augment["crop_padding"], fill=fill,
                                image_shape=shape, seed=crop_rng))  # fmt: skip
    if augment["hflip"]:
        flip_rng = np.random.default_rng([seed, FLIP_SEED])
        steps.append(RandomHorizontalFlip(augment["hflip"], image_shape=shape, seed=flip_rng))
    return Compose(steps) if steps else None


@dataclass
class Run:
    """What train and baseline build, in this order, from the same params and data."""

    model: mininn.Sequential
    optimizer: mininn.optim.Optimizer
    scheduler: lr_scheduler.LRScheduler | None
    loader: mininn.DataLoader
    loss_fn: mininn.CrossEntropyLoss


def build_run(
    dataset: str,
    params: dict[str, dict[str, Any]],
    x_train: np.ndarray,
    y_train: np.ndarray,
    stats: Mapping[str, float],
) -> Run:
    """The whole recipe, built in one order (the package generator's draws depend on it):
    ``manual_seed(train.seed)``, the network, the optimizer, the scheduler, the
    augmentation and the shuffling DataLoader, the loss.

    Args:
        params: :func:`resolved_params`' result.
        x_train, y_train: the normalised training split.
        stats: the prepared split's ``{"mean", "std"}`` (the crop's black fill).
    """
    model_p, train_p = params["model"], params["train"]
    mininn.manual_seed(train_p["seed"])  # the initial weights depend on params only
    model = build(dataset, model_p, train_p["dtype"])
    optimizer = build_optimizer(model, train_p)
    steps_per_epoch = math.ceil(len(x_train) / train_p["batch_size"])
    scheduler = build_scheduler(optimizer, train_p, steps_per_epoch)
    fill = float(np.dtype(train_p["dtype"]).type(-stats["mean"] / stats["std"]))
    loader = mininn.DataLoader(
        x_train, y_train, batch_size=train_p["batch_size"], shuffle=True, seed=train_p["seed"],
        transform=build_transform(train_p, fill),
    )  # fmt: skip
    return Run(model, optimizer, scheduler, loader, build_loss(train_p))


# ------------------------------------------------------------------ checkpoints


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_file(
    folder: Path,
    stage: str,
    dataset: str,
    params: Mapping[str, Any],
    prepared: Path,
    code: Iterable[str],
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """``folder/<dataset>/<stage>-<fingerprint>.npz``, for ``fit(checkpoint=...)``.

    The fingerprint (16 hex digits of a SHA-256) covers the params, the SHA-256 of
    every file in ``prepared``, of ``code`` (paths relative to the project root,
    ``mininn/**/*.py`` added) and ``extra`` (e.g. the torch version): a change of
    any of them gives another file, so a run never continues another's checkpoint.
    Checkpoints of the same stage and dataset under other fingerprints are removed.
    The folder is created.
    """
    root = common.PROJECT_ROOT
    files = sorted({*code, *(p.relative_to(root).as_posix() for p in
                             (root / "mininn").rglob("*.py"))})  # fmt: skip
    described = {
        "stage": stage, "dataset": dataset, "params": params,
        "data": {p.name: _sha256(p) for p in sorted(Path(prepared).iterdir()) if p.is_file()},
        "code": {name: _sha256(root / name) for name in files},
        "extra": dict(extra or {}),
    }  # fmt: skip
    text = json.dumps(described, sort_keys=True, default=str)
    fingerprint = hashlib.sha256(text.encode()).hexdigest()[:16]
    folder = Path(folder) / dataset
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stage}-{fingerprint}.npz"
    for old in folder.glob(f"{stage}-*.npz"):
        if old != path:
            old.unlink(missing_ok=True)
    return path


def remove_checkpoint(path: Path) -> None:
    """Remove a finished (or diverged) run's checkpoint, and its folder when empty."""
    Path(path).unlink(missing_ok=True)
    for folder in (Path(path).parent, Path(path).parent.parent):
        try:
            folder.rmdir()
        except OSError:
            break


def saved_history(checkpoint: Path, where: str) -> list[dict]:
    """The history rows of a checkpoint, [] when there is none; an unreadable one
    (it cannot be continued) is removed, and the run starts over."""
    if not Path(checkpoint).exists():
        return []
    try:
        return list(mininn.load(checkpoint)["history"]["epochs"])
    except (ValueError, KeyError, TypeError, OSError) as exc:
        print(f"{where}: cannot read {checkpoint} ({exc}); starting over", file=sys.stderr)
        remove_checkpoint(checkpoint)
        return []


def divergence_guard_of(model_state: Callable[[], Iterable], train_p: dict) -> Any:
    """``common.divergence_guard`` naming the learning rate the recipe peaks at."""
    peak = train_p["lr"]
    if train_p["scheduler"] is not None and "max_lr" in train_p["scheduler"]["args"]:
        peak = train_p["scheduler"]["args"]["max_lr"]
    return common.divergence_guard(model_state, peak)
