"""The Ray Tune sweep (pipeline/tune.py, tune_config.py, tune_report.py): params, errors, sweeps.

The fast tests need no Ray. The slow one starts a local Ray with 2 CPUs and runs
4 trials x 3 epochs, 2 at a time, on tiny data, with one worker made to die.
"""

from __future__ import annotations

import copy
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline import common, recipe, tune, tune_config, tune_report
from pipeline.common import StageError
from tests._idx import write_prepared

PARAMS = common.PARAMS_FILE


def write_params(path: Path, train: dict | None = None, overrides=None, **tune_changes) -> Path:
    """The project's params.yaml with a small model, ``train`` over its train:,
    ``overrides`` (if given) as its overrides: and ``tune_changes`` over its tune:."""
    with open(PARAMS, encoding="utf-8") as f:
        params = yaml.safe_load(f)
    params["model"].update(hidden_sizes=[16], batch_norm=False, dropout=0.0, activation="relu")
    params["train"].update(optimizer="adam", lr=0.01, batch_size=16, seed=0, dtype="float32")
    params["train"].update(train or {})
    if overrides is not None:
        params["overrides"] = overrides
    params["tune"].update(tune_changes)
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def onecycle():
    """The committed recipe of fashion-mnist (OneCycleLR, max_lr 0.003)."""
    return recipe.resolved_params("fashion-mnist", PARAMS)


@pytest.fixture(scope="module")
def constant(onecycle):
    """The same recipe with a constant learning rate (train.scheduler: null)."""
    params = copy.deepcopy(onecycle)
    params["train"]["scheduler"] = None
    return params


@pytest.fixture
def local(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


def with_train(params: dict, **changes) -> dict:
    """A copy of the recipe ``params`` with ``changes`` over its train:."""
    params = copy.deepcopy(params)
    params["train"].update(changes)
    return params


def params_with(path: Path, **sections) -> Path:
    """Rewrite the params file ``path`` with ``sections`` replaced, e.g. ``datasets=[...]``."""
    params = yaml.safe_load(path.read_text(encoding="utf-8"))
    params.update(sections)
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return path


# ------------------------------------------------------------------ params


def test_committed_params_are_valid(local):
    p = tune_config.tune_params(PARAMS)
    assert p["space"] and p["epochs"] >= p["asha"]["grace_period"]
    assert p["max_concurrent_trials"] * p["cpus_per_trial"] <= p["num_cpus"]
    # under the recipe's OneCycleLR the peak lr is swept, not train.lr (which it ignores)
    assert (
        recipe.resolved_params(p["dataset"], PARAMS)["train"]["scheduler"]["name"] == "OneCycleLR"
    )
    assert "train.scheduler.args.max_lr" in p["space"] and "train.lr" not in p["space"]


def test_space_becomes_tune_distributions(constant):
    space = tune_config.check_space({"train": {"lr": {"loguniform": [0.001, 0.1]},
                                               "batch_size": {"randint": [16, 64]}},
                                     "model": {"hidden_sizes": {"grid": [[8], [16, 8]]}}},
                                    constant)  # fmt: skip
    assert space == {
        "train.lr": ("loguniform", [0.001, 0.1]),
        "train.batch_size": ("randint", [16, 64]),
        "model.hidden_sizes": ("grid", [[8], [16, 8]]),
    }


def test_recipe_keys_become_tune_distributions(onecycle):
    """The recipe's keys, nested as in params.yaml; values as recipe.py returns them."""
    space = tune_config.check_space(
        {"train": {"scheduler": {"args": {"max_lr": {"loguniform": [0.001, 0.01]},
                                          "pct_start": {"uniform": [0.1, 0.5]},
                                          "anneal_strategy": {"choice": ["cos", "linear"]},
                                          "div_factor": {"choice": [10, 25.0]}}},
                   "label_smoothing": {"uniform": [0, 0.2]},
                   "clip_grad_norm": {"choice": [None, 1]},
                   "augment": {"crop_padding": {"randint": [0, 2]}, "hflip": {"grid": [0, 0.5]}},
                   "weight_decay": {"loguniform": [0.001, 0.1]},
                   "batch_size": {"choice": [64, 128]},
                   "betas": {"choice": [[0.9, 0.999], [0.95, 0.99]]}},
         "model": {"dropout": {"uniform": [0.1, 0.5]}}},
        onecycle,
    )  # fmt: skip
    assert space == {
        "train.scheduler.args.max_lr": ("loguniform", [0.001, 0.01]),
        "train.scheduler.args.pct_start": ("uniform", [0.1, 0.5]),
        "train.scheduler.args.anneal_strategy": ("choice", ["cos", "linear"]),
        "train.scheduler.args.div_factor": ("choice", [10, 25.0]),
        "train.label_smoothing": ("uniform", [0.0, 0.2]),
        "train.clip_grad_norm": ("choice", [None, 1.0]),
        "train.augment.crop_padding": ("randint", [0, 2]),
        "train.augment.hflip": ("grid", [0.0, 0.5]),
        "train.weight_decay": ("loguniform", [0.001, 0.1]),
        "train.batch_size": ("choice", [64, 128]),
        "train.betas": ("choice", [[0.9, 0.999], [0.95, 0.99]]),
        "model.dropout": ("uniform", [0.1, 0.5]),
    }
    assert all(type(v) is float for v in space["train.label_smoothing"][1])


@pytest.mark.parametrize(
    ("space", "match"),
    [
        ({}, r"tune\.space: empty"),
        (None, r"tune\.space: empty"),
        ({"train": {}}, r"tune\.space\.train: empty"),
        ({"optim": {"lr": {"choice": [0.1]}}}, r"tune\.space\.optim: unknown section"),
        (
            {"train": {"lr_max": {"choice": [0.1]}}},
            r"tune\.space\.train\.lr_max: unknown parameter",
        ),
        ({"train": {"epochs": {"choice": [3]}}}, r"train\.epochs.*tune\.epochs"),
        (
            {"train": {"lr": {"normal": [0, 1]}}},
            r"tune\.space\.train\.lr: expected one distribution",
        ),
        (
            {"train": {"lr": {"choice": []}}},
            r"tune\.space\.train\.lr\.choice: expected a non-empty",
        ),
        ({"train": {"lr": {"choice": [0.1, -1]}}}, r"tune\.space\.train\.lr\.choice\[1\]: .*-1"),
        ({"train": {"lr": {"uniform": [0.1]}}}, r"tune\.space\.train\.lr\.uniform: expected \[low"),
        ({"train": {"lr": {"uniform": [0.1, 0.01]}}}, r"expected low < high"),
        ({"train": {"lr": {"uniform": ["1e-3", 0.1]}}}, r"uniform\[0\]: .*string '1e-3'"),
        ({"model": {"dropout": {"uniform": [0.0, 1.0]}}}, r"model\.dropout\.uniform\[1\]"),
        ({"train": {"weight_decay": {"loguniform": [0.0, 0.1]}}}, r"positive lower bound"),
        (
            {"train": {"batch_size": {"uniform": [16, 64]}}},
            r"batch_size: expected one dis.*randint",
        ),
        ({"train": {"batch_size": {"randint": [16, 64.5]}}}, r"randint\[1\]: expected an integer"),
        ({"model": {"activation": {"choice": ["gelu"]}}}, r"activation\.choice\[0\]: .*'gelu'"),
        ({"model": {"hidden_sizes": {"choice": [[8], [0]]}}}, r"hidden_sizes\.choice\[1\]\[0\]"),
        ({"train": {"optimizer": {"choice": ["lbfgs"]}}}, r"optimizer\.choice\[0\]: .*'lbfgs'"),
        ({"train": {"scheduler": {"args": {"max_lr": {"choice": [0.01]}}}}},
         r"^tune\.space\.train\.scheduler\.args\.max_lr: fashion-mnist's recipe has no scheduler "
         r"\(train\.scheduler: null\); set one, or sweep train\.lr$"),
    ],
)  # fmt: skip
def test_bad_space_names_the_key(constant, space, match):
    with pytest.raises(StageError, match=match):
        tune_config.check_space(space, constant, "fashion-mnist")


@pytest.mark.parametrize(
    ("space", "match"),
    [
        ({"train": {"lr": {"loguniform": [0.001, 0.01]}}},
         r"^tune\.space\.train\.lr: train\.lr does nothing under fashion-mnist's OneCycleLR, "
         r"which sets the learning rate from max_lr; sweep train\.scheduler\.args\.max_lr "
         r"instead$"),
        ({"train": {"scheduler": {"args": {"maxlr": {"choice": [0.01]}}}}},
         r"^tune\.space\.train\.scheduler\.args\.maxlr: unknown parameter "
         r"'train\.scheduler\.args\.maxlr'; the sweepable keys are model\.hidden_sizes, .*"
         r"train\.label_smoothing, train\.clip_grad_norm, train\.augment\.crop_padding, "
         r"train\.augment\.hflip, .*train\.scheduler\.args\.<max_lr\|pct_start\|.*"
         r"final_div_factor\|three_phase> \(OneCycleLR's\)$"),
        ({"train": {"scheduler": {"args": {"epochs": {"choice": [3]}}}}},
         r"args\.epochs: OneCycleLR's epochs is filled from a trial's budget, tune\.epochs"),
        ({"train": {"scheduler": {"args": {"total_steps": {"choice": [30]}}}}},
         r"args\.total_steps: OneCycleLR's total_steps is filled from a trial's budget"),
        ({"train": {"scheduler": {"choice": [None]}}},
         r"tune\.space\.train\.scheduler: unknown parameter .*the scheduler is the recipe's"),
        ({"train": {"scheduler": {"name": {"choice": ["StepLR"]}}}},
         r"tune\.space\.train\.scheduler\.name: unknown parameter .*sweep its arguments"),
        ({"train": {"augment": {"choice": [{"crop_padding": 1, "hflip": 0.5}]}}},
         r"tune\.space\.train\.augment: unknown .*sweep train\.augment\.crop_padding and"),
        ({"train": {"augment": {"rotate": {"choice": [10]}}}},
         r"tune\.space\.train\.augment\.rotate: unknown parameter"),
        # the scheduler's constructor refuses a value, named where it was written
        ({"train": {"scheduler": {"args": {"max_lr": {"loguniform": [0.0, 0.01]}}}}},
         r"^tune\.space\.train\.scheduler\.args\.max_lr\.loguniform\[0\]: expected a value in "
         r"\(0, inf\], got 0\.0$"),
        ({"train": {"scheduler": {"args": {"pct_start": {"uniform": [0.1, 1.5]}}}}},
         r"^tune\.space\.train\.scheduler\.args\.pct_start\.uniform\[1\]: .*OneCycleLR refuses"),
        ({"train": {"scheduler": {"args": {"max_lr": {"choice": ["1e-3"]}}}}},
         r"max_lr\.choice\[0\]: expected a number, got the string '1e-3'; write it without quotes"),
        ({"train": {"scheduler": {"args": {"max_lr": {"uniform": ["1e-3", 0.01]}}}}},
         r"max_lr\.uniform\[0\]: expected a number, got the string '1e-3'"),
        ({"train": {"scheduler": {"args": {"anneal_strategy": {"uniform": [0, 1]}}}}},
         r"anneal_strategy: expected one distribution of \['choice', 'grid'\]"),
        ({"train": {"scheduler": {"args": {"anneal_strategy": {"choice": ["cosine"]}}}}},
         r"anneal_strategy\.choice\[0\]: .*OneCycleLR refuses"),
        ({"train": {"label_smoothing": {"uniform": [0.0, 1.5]}}},
         r"^tune\.space\.train\.label_smoothing\.uniform\[1\]: expected a value in \[0, 1\], "
         r"got 1\.5$"),
        ({"train": {"clip_grad_norm": {"choice": [None, 0.0]}}},
         r"^tune\.space\.train\.clip_grad_norm\.choice\[1\]: expected a value in \(0, inf\]"),
        ({"train": {"clip_grad_norm": {"uniform": [None, 1.0]}}},
         r"clip_grad_norm\.uniform\[0\]: expected a number, got None"),
        ({"train": {"augment": {"crop_padding": {"uniform": [0, 2]}}}},
         r"crop_padding: expected one distribution of \['choice', 'grid', 'randint'\]"),
        ({"train": {"augment": {"crop_padding": {"randint": [0, 29]}}}},
         r"^tune\.space\.train\.augment\.crop_padding\.randint\[1\]: expected a value in "
         r"\[0, 28\], got 29$"),
        ({"train": {"augment": {"crop_padding": {"choice": [1.5]}}}},
         r"crop_padding\.choice\[0\]: expected an integer"),
        ({"train": {"augment": {"hflip": {"uniform": [0.0, 1.5]}}}},
         r"augment\.hflip\.uniform\[1\]: expected a value in \[0, 1\]"),
        ({"train": {"weight_decay": {"choice": [-0.1]}}},
         r"weight_decay\.choice\[0\]: expected a value in \[0, inf\], got -0\.1"),
        ({"model": {"dropout": {"uniform": [0.1, 1.0]}}},
         r"^tune\.space\.model\.dropout\.uniform\[1\]: expected a value in \[0, 1\), got 1\.0$"),
        ({"train": {"batch_size": {"choice": [0]}}},
         r"batch_size\.choice\[0\]: expected a value in \[1, "),
        ({"train": {"betas": {"choice": [[0.9, 1.0]]}}}, r"betas\.choice\[0\]\[1\]: expected"),
    ],
)  # fmt: skip
def test_bad_recipe_space_names_the_key(onecycle, space, match):
    with pytest.raises(StageError, match=match):
        tune_config.check_space(space, onecycle, "fashion-mnist")


MOMENTUM_INSTEAD = (r"sweep train\.scheduler\.args\.max_momentum or "
                    r"train\.scheduler\.args\.base_momentum instead$")  # fmt: skip


@pytest.mark.parametrize(
    ("recipe_name", "optimizer", "space", "match"),
    [
        # recipe.build_optimizer gives momentum to sgd/rmsprop only, betas to adam/adamw only
        ("constant", "adamw", {"train": {"momentum": {"uniform": [0.5, 0.9]}}},
         r"^tune\.space\.train\.momentum: train\.momentum does nothing with fashion-mnist's "
         r"optimizer adamw: only sgd and rmsprop take it; sweep train\.betas instead$"),
        ("constant", "adam", {"train": {"momentum": {"choice": [0.9]}}}, r"optimizer adam: only"),
        ("constant", "sgd", {"train": {"betas": {"choice": [[0.9, 0.999], [0.8, 0.99]]}}},
         r"^tune\.space\.train\.betas: train\.betas does nothing with fashion-mnist's "
         r"optimizer sgd: only the other optimizers take it; sweep train\.momentum instead$"),
        ("constant", "sgd", {"train": {"optimizer": {"choice": ["sgd", "rmsprop"]},
                                       "betas": {"choice": [[0.9, 0.999]]}}},
         r"optimizer rmsprop/sgd: only the other"),
        # OneCycleLR's cycle_momentum sets the momentum (sgd, rmsprop) or β1 (adam, adamw)
        ("onecycle", "adamw", {"train": {"momentum": {"uniform": [0.5, 0.9]}}},
         r"^tune\.space\.train\.momentum: train\.momentum does nothing with fashion-mnist's "
         r"optimizer adamw: only sgd and rmsprop take it; " + MOMENTUM_INSTEAD),
        ("onecycle", "sgd", {"train": {"momentum": {"uniform": [0.5, 0.9]}}},
         r"^tune\.space\.train\.momentum: train\.momentum does nothing under fashion-mnist's "
         r"OneCycleLR with cycle_momentum, which moves the momentum between max_momentum and "
         r"base_momentum; " + MOMENTUM_INSTEAD),
        ("onecycle", "adamw", {"train": {"betas": {"grid": [[0.9, 0.999], [0.95, 0.999]]}}},
         r"^tune\.space\.train\.betas\.grid: only β2 of train\.betas counts under "
         r"fashion-mnist's OneCycleLR with cycle_momentum, which moves β1 between max_momentum "
         r"and base_momentum, and every value has β2 0\.999; " + MOMENTUM_INSTEAD),
        ("onecycle", "adamw",
         {"train": {"scheduler": {"args": {"cycle_momentum": {"choice": [False]},
                                           "max_momentum": {"uniform": [0.9, 0.99]}}}}},
         r"^tune\.space\.train\.scheduler\.args\.max_momentum: max_momentum does nothing "
         r"under fashion-mnist's OneCycleLR with cycle_momentum: false"),
    ],
)  # fmt: skip
def test_keys_no_trial_uses_are_refused(onecycle, constant, recipe_name, optimizer, space,
                                        match):  # fmt: skip
    """A swept key that changes no trial is refused with what to sweep instead."""
    base = with_train(onecycle if recipe_name == "onecycle" else constant, optimizer=optimizer)
    with pytest.raises(StageError, match=match):
        tune_config.check_space(space, base, "fashion-mnist")


@pytest.mark.parametrize(
    ("recipe_name", "optimizer", "space"),
    [
        ("constant", "sgd", {"train": {"momentum": {"uniform": [0.5, 0.9]}}}),
        ("constant", "rmsprop", {"train": {"momentum": {"choice": [0.0, 0.9]}}}),
        ("constant", "adamw", {"train": {"betas": {"choice": [[0.9, 0.999], [0.8, 0.999]]}}}),
        # some trials take the key: the swept optimizer or cycle_momentum decides
        ("constant", "adamw", {"train": {"optimizer": {"choice": ["sgd", "adam"]},
                                         "momentum": {"uniform": [0.5, 0.9]}}}),
        ("onecycle", "sgd",
         {"train": {"momentum": {"uniform": [0.5, 0.9]},
                    "scheduler": {"args": {"cycle_momentum": {"choice": [True, False]}}}}}),
        ("onecycle", "sgd",
         {"train": {"scheduler": {"args": {"max_momentum": {"uniform": [0.9, 0.99]}}}}}),
        # β2 is Adam's own under the cycle too
        ("onecycle", "adamw", {"train": {"betas": {"grid": [[0.9, 0.999], [0.9, 0.99]]}}}),
    ],
)  # fmt: skip
def test_keys_some_trial_uses_are_accepted(onecycle, constant, recipe_name, optimizer, space):
    base = with_train(onecycle if recipe_name == "onecycle" else constant, optimizer=optimizer)
    assert set(tune_config.check_space(space, base, "fashion-mnist")) == {
        name for name, _ in _space_leaves(space)
    }


def test_keys_no_trial_uses_match_what_the_optimizer_reads(onecycle, constant):
    """The rule is recipe.py's behaviour: a key refused above leaves the optimizer's
    settings after a OneCycleLR step (or without a scheduler) as they were."""
    import mininn

    def group_after_a_step(params: dict, **changes) -> dict:
        train_p = {**params["train"], **changes, "epochs": 2}
        optimizer = recipe.build_optimizer([mininn.Parameter(np.zeros(1))], train_p)
        scheduler = recipe.build_scheduler(optimizer, train_p, 3)
        if scheduler is not None:
            scheduler.step()
        group = optimizer.param_groups[0]
        return {k: group.get(k) for k in ("momentum", "betas")}

    for base, optimizer, key, a, b in [
        (constant, "adamw", "momentum", 0.5, 0.9),  # refused: adamw has no momentum
        (constant, "sgd", "betas", [0.9, 0.999], [0.8, 0.99]),  # refused: sgd has no betas
        (onecycle, "sgd", "momentum", 0.5, 0.9),  # refused: the cycle sets it
    ]:
        params = with_train(base, optimizer=optimizer)
        assert group_after_a_step(params, **{key: a}) == group_after_a_step(params, **{key: b})
    params = with_train(onecycle, optimizer="adamw")  # β1 refused, β2 kept
    first = group_after_a_step(params, betas=[0.5, 0.999])["betas"]
    assert first == group_after_a_step(params, betas=[0.9, 0.999])["betas"]
    assert first != group_after_a_step(params, betas=[0.9, 0.99])["betas"]


def _space_leaves(space: dict) -> list:
    return [leaf for section, keys in space.items() for key, spec in keys.items()
            for leaf in tune_config._leaves(f"{section}.{key}", spec)]  # fmt: skip


@pytest.mark.parametrize(
    ("train", "overrides", "match"),
    [
        ({"scheduler": {"name": "OneCycleLR", "args": {"max_lr": 0.003, "epochs": 40}}}, None,
         r"^train\.scheduler\.args\.epochs: OneCycleLR's epochs is fixed at 40, but a trial "
         r"trains tune\.epochs epochs; remove it \(the stage fills it from the epochs\)"),
        ({}, {"mnist": {"train": {"scheduler": {"name": "CosineAnnealingLR",
                                                "args": {"T_max": 40}}}}},
         r"^overrides\.mnist\.train\.scheduler\.args\.T_max: CosineAnnealingLR's T_max is fixed"),
    ],
)  # fmt: skip
def test_recipe_that_fixes_the_cycle_length_is_refused(tmp_path, local, train, overrides, match):
    """A trial's schedule spans its budget: an explicit length would not."""
    space = {"model": {"dropout": {"uniform": [0.1, 0.5]}}}
    path = write_params(tmp_path / "params.yaml", train=train, overrides=overrides,
                        dataset="mnist", space=space)  # fmt: skip
    with pytest.raises(StageError, match=match):
        tune_config.tune_params(path)


def test_space_is_checked_against_the_recipe_of_tune_dataset(tmp_path, local):
    """mnist's override replaces its scheduler: its arguments, not the base's, are sweepable."""
    overrides = {"mnist": {"train": {"scheduler": {"name": "StepLR", "args": {"step_size": 2}}}}}
    space = {"train": {"scheduler": {"args": {"gamma": {"uniform": [0.1, 0.9]}}}}}
    path = write_params(tmp_path / "params.yaml", overrides=overrides, dataset="mnist",
                        space=space)  # fmt: skip
    assert tune_config.tune_params(path)["space"] == {
        "train.scheduler.args.gamma": ("uniform", [0.1, 0.9])
    }
    path = write_params(tmp_path / "params.yaml", overrides=overrides, dataset="fashion-mnist",
                        space=space)  # fmt: skip
    with pytest.raises(StageError, match=r"args\.gamma: unknown parameter.*\(OneCycleLR's\)"):
        tune_config.tune_params(path)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"max_concurrent_trials": 3, "num_cpus": 2}, r"tune\.max_concurrent_trials: 3 trials at "
         r"once x tune\.cpus_per_trial 1 need 3 CPUs, but this machine's Ray.* has 2; lower "
         r"tune\.max_concurrent_trials to 2"),
        ({"max_concurrent_trials": 2, "cpus_per_trial": 2, "num_cpus": 2}, r"need 4 CPUs.* to 1"),
        ({"num_cpus": 10_000}, r"tune\.num_cpus: 10000 is more than this machine's"),
        ({"num_samples": 0}, r"tune\.num_samples: expected a value in \[1, inf\], got 0"),
        ({"epochs": 2.5}, r"tune\.epochs: expected an integer"),
        ({"metric": "accuracy"}, r"tune\.metric: expected one of"),
        ({"metric": "val_loss", "mode": "max"}, r"tune\.mode: val_loss is better when lower: "
         r"expected 'min', got 'max'"),
        ({"asha": {"grace_period": 5, "reduction_factor": 2}, "epochs": 4},
         r"tune\.asha\.grace_period: 5 is more than tune\.epochs \(4\)"),
        ({"asha": {"grace_period": 1, "reduction_factor": 1}}, r"tune\.asha\.reduction_factor: "
         r"expected a value in \(1, inf\]"),
        ({"asha": {"grace_period": 1}}, r"tune\.asha: missing key\(s\) tune\.asha\.reduction_f"),
        ({"asha": {"grace_period": 1, "reduction_factor": 2, "brackets": 3}},
         r"tune\.asha\.brackets: unknown key"),
        ({"max_failures": -1}, r"tune\.max_failures: expected a value in \[0, inf\]"),
        ({"dataset": "cifar10"}, r"tune\.dataset: expected one of"),
        ({"space": {}}, r"tune\.space: empty"),
    ],
)  # fmt: skip
def test_bad_tune_params_name_the_key(tmp_path, local, changes, match):
    path = write_params(tmp_path / "params.yaml", **changes)
    with pytest.raises(StageError, match=match):
        tune_config.tune_params(path)


def test_unknown_tune_key_is_named(tmp_path, local):
    path = write_params(tmp_path / "params.yaml", trials=4)
    with pytest.raises(StageError, match=r"tune\.trials|trials"):
        tune_config.tune_params(path)


def test_concurrency_is_checked_against_the_cluster_not_this_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    path = write_params(tmp_path / "params.yaml", max_concurrent_trials=64, num_cpus=2)
    assert tune_config.tune_params(path)["num_cpus"] is None  # checked on connecting instead
    with pytest.raises(StageError, match=r"64 trials at once .* the cluster at x has 8"):
        tune_config.check_concurrency(tune_config.tune_params(path), 8, "the cluster at x")


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        # one trial alone needs more CPUs than there are: max_concurrent_trials is not it
        ({"max_concurrent_trials": 1, "cpus_per_trial": 3, "num_cpus": 2},
         r"^tune\.cpus_per_trial: one trial needs 3 CPUs, but this machine's Ray "
         r"\(tune\.num_cpus\) has 2; lower tune\.cpus_per_trial to 2"),
        ({"max_concurrent_trials": 1, "cpus_per_trial": 2, "num_cpus": 1},
         r"has 1; lower tune\.cpus_per_trial to 1 \(or raise tune\.num_cpus, up to \d+\)$"),
    ],
)  # fmt: skip
def test_a_trial_larger_than_the_machine_names_cpus_per_trial(tmp_path, local, changes, match):
    path = write_params(tmp_path / "params.yaml", **changes)
    with pytest.raises(StageError, match=match):
        tune_config.tune_params(path)


def test_a_trial_larger_than_the_cluster_names_cpus_per_trial():
    p = {"max_concurrent_trials": 1, "cpus_per_trial": 4}
    with pytest.raises(StageError, match=r"^tune\.cpus_per_trial: one trial needs 4 CPUs, but "
                       r"the cluster at x has 2; lower tune\.cpus_per_trial to 2 \(or add "
                       r"nodes with more CPUs\)$"):  # fmt: skip
        tune_config.check_concurrency(p, 2, "the cluster at x", "add nodes with more CPUs")
    tune_config.check_concurrency(p, 4, "the cluster at x")  # fits


def test_tune_dataset_must_be_one_of_datasets(tmp_path, local, capsys):
    """prepare makes (and remakes) only the data of datasets:; the sweep would read stale
    data of another."""
    path = params_with(write_params(tmp_path / "params.yaml", dataset="fashion-mnist"),
                       datasets=["mnist"])  # fmt: skip
    match = (r"^tune\.dataset: 'fashion-mnist' is not in datasets: \['mnist'\], so prepare "
             r"does not make \(or update\) its data; set tune\.dataset to one of datasets:, or "
             r"add fashion-mnist to datasets:$")  # fmt: skip
    with pytest.raises(StageError, match=match):
        tune_config.tune_params(path)
    best = tmp_path / "best_params.json"
    best.write_text(json.dumps({"model": {"dropout": 0.2}}))
    assert common.run_stage(tune.main, ["--exp-args", str(best), "--params", str(path)]) == 1
    assert capsys.readouterr().err.startswith("error: tune.dataset: 'fashion-mnist' is not in")
    params_with(path, datasets=["mnist", "fashion-mnist"])
    assert tune_config.tune_params(path)["dataset"] == "fashion-mnist"


@pytest.mark.parametrize("option", ["--out", "--storage"])
def test_out_and_storage_are_checked_before_ray_starts(tmp_path, local, monkeypatch, capsys,
                                                       option):  # fmt: skip
    """A folder that cannot be made stops the stage before the sweep, not after it."""
    monkeypatch.setattr(tune, "import_ray", lambda: pytest.fail("Ray started"))
    afile = tmp_path / "README.md"
    afile.write_text("a file")
    params = write_params(tmp_path / "params.yaml", dataset="mnist")
    argv = ["--prepared", str(tmp_path / "prepared"), "--out", str(tmp_path / "out"),
            "--params", str(params), "--storage", str(tmp_path / "storage")]  # fmt: skip
    argv[argv.index(option) + 1] = str(afile / "x")
    assert common.run_stage(tune.main, argv) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [f"error: {option} {afile / 'x'}: {afile} is a file, not a folder; choose "
                   f"another {option}"]  # fmt: skip
    assert not (tmp_path / "out").exists() and not (tmp_path / "storage").exists()


def test_check_folder_accepts_new_and_existing_folders(tmp_path):
    tune.check_folder(tmp_path / "a" / "b" / "c", "--out")  # made later, parents too
    tune.check_folder(tmp_path, "--out")
    assert list(tmp_path.iterdir()) == []  # nothing made by the check


# ------------------------------------------------------------------ best configuration


def test_best_params_have_the_shape_of_params_yaml():
    best = tune_config.best_params({"train.scheduler.args.max_lr": 0.0025,
                                    "model.hidden_sizes": [64, 32], "model.batch_norm": False,
                                    "train.batch_size": 64,
                                    "train.clip_grad_norm": None})  # fmt: skip
    assert best == {"train": {"scheduler": {"args": {"max_lr": 0.0025}}, "batch_size": 64,
                              "clip_grad_norm": None},
                    "model": {"hidden_sizes": [64, 32], "batch_norm": False}}  # fmt: skip
    assert tune_config.exp_args(best, "fashion-mnist", PARAMS) == [
        "-S", "model.batch_norm=false", "-S", "model.hidden_sizes=[64,32]",
        "-S", "train.batch_size=64", "-S", "train.clip_grad_norm=null",
        "-S", "train.scheduler.args.max_lr=0.0025",
    ]  # fmt: skip


REPLACED_SCHEDULER = {"mnist": {"train": {"scheduler": {"name": "StepLR",
                                                        "args": {"step_size": 2}}}}}  # fmt: skip


@pytest.mark.parametrize(
    ("dataset", "overrides", "best", "expected"),
    [
        # the committed overrides: mnist's crop padding is its own
        ("mnist", None,
         {"train": {"augment": {"crop_padding": 2, "hflip": 0.5},
                    "scheduler": {"args": {"max_lr": 0.004, "pct_start": 0.25}}},
          "model": {"dropout": 0.2}},
         ["model.dropout=0.2", "overrides.mnist.train.augment.crop_padding=2",
          "train.augment.hflip=0.5", "train.scheduler.args.max_lr=0.004",
          "+train.scheduler.args.pct_start=0.25"]),
        ("fashion-mnist", None, {"train": {"augment": {"crop_padding": 2}}},
         ["train.augment.crop_padding=2"]),
        # an override that replaces the scheduler holds all of its arguments
        ("mnist", REPLACED_SCHEDULER, {"train": {"scheduler": {"args": {"gamma": 0.5,
                                                                         "step_size": 3}}}},
         ["+overrides.mnist.train.scheduler.args.gamma=0.5",
          "overrides.mnist.train.scheduler.args.step_size=3"]),
        ("fashion-mnist", REPLACED_SCHEDULER,
         {"train": {"scheduler": {"args": {"max_lr": 0.004}}}},
         ["train.scheduler.args.max_lr=0.004"]),
        ("mnist", {"mnist": {"train": {"clip_grad_norm": 1.0}}},
         {"train": {"clip_grad_norm": None}},
         ["overrides.mnist.train.clip_grad_norm=null"]),
    ],
)  # fmt: skip
def test_exp_args_give_the_swept_dataset_the_best_values(tmp_path, dataset, overrides, best,
                                                        expected):  # fmt: skip
    """Applied by DVC's own ``-S`` parser, the arguments give ``dataset``'s recipe the
    best values; a value the dataset overrides leaves the other dataset as it was."""
    from dvc.utils.hydra import apply_overrides

    path = write_params(tmp_path / "params.yaml", overrides=overrides)
    args = tune_config.exp_args(best, dataset, path)
    assert args[::2] == ["-S"] * len(expected) and args[1::2] == expected
    other = "mnist" if dataset == "fashion-mnist" else "fashion-mnist"
    before = recipe.resolved_params(other, path)
    apply_overrides(path, args[1::2])
    after = recipe.resolved_params(dataset, path)
    other_after = recipe.resolved_params(other, path)
    for (name, value), arg in zip(tune_config._flatten(best), args[1::2], strict=True):
        assert tune_config.get_dotted(after, name) == value, name
        if arg.lstrip("+").startswith("overrides."):
            assert _lookup(other_after, name) == _lookup(before, name), name


def _lookup(tree: dict, name: str):
    try:
        return tune_config.get_dotted(tree, name)
    except KeyError:
        return "absent"


def test_exp_args_prints_the_dvc_command(tmp_path, capsys):
    best = tmp_path / "best_params.json"
    best.write_text(json.dumps({"train": {"scheduler": {"args": {"max_lr": 0.001}}},
                                "model": {"hidden_sizes": [8]}}))  # fmt: skip
    assert tune.main(["--exp-args", str(best)]) == 0
    assert capsys.readouterr().out.strip() == (
        "-S 'model.hidden_sizes=[8]' -S train.scheduler.args.max_lr=0.001"
    )
    best.write_text(json.dumps({"train": {"augment": {"crop_padding": 3}}}))
    params = write_params(tmp_path / "params.yaml", dataset="mnist")
    assert tune.main(["--exp-args", str(best), "--params", str(params)]) == 0
    assert capsys.readouterr().out.strip() == "-S overrides.mnist.train.augment.crop_padding=3"


@pytest.mark.parametrize(
    ("content", "key", "why"),
    [
        ("[1, 2]", None, r"expected a non-empty mapping in the shape of params\.yaml, "
         r"e\.g\. \{\"model\": \{\"dropout\": 0\.2\}\}, got \[1, 2\]"),
        ("{}", None, r"expected a non-empty mapping .*got \{\}"),
        ('{"foo": {"bar": 1}}', "foo", r"unknown section; expected keys of model: and train:"),
        ('{"train": 5}', "train", r"expected a non-empty mapping of its keys, got 5"),
        ('{"train": {}}', "train", r"expected a non-empty mapping of its keys, got \{\}"),
        ('{"train": {"weight_decay": "abc"}}', "train.weight_decay",
         r"expected a number, got the string 'abc'"),
        ('{"train": {"weight_decay": NaN}}', "train.weight_decay", r"expected a finite number"),
        ('{"train": {"lr": 0.01}}', "train.lr", r"train\.lr does nothing under fashion-mnist's "
         r"OneCycleLR"),
        ('{"train": {"momentum": 0.9}}', "train.momentum", r"train\.momentum does nothing"),
        ('{"train": {"epochs": 3}}', "train.epochs", r"unknown parameter 'train\.epochs'"),
        ('{"train": {"scheduler": {}}}', "train.scheduler", r"empty"),
        ('{"train": {"scheduler": {"args": {"maxlr": 0.01}}}}', "train.scheduler.args.maxlr",
         r"unknown parameter"),
        ('{"model": {"hidden_sizes": [0]}}', r"model.hidden_sizes[0]", r"expected a value in"),
        ('{"train": {"optimizer": "sgd", "betas": [0.9, 0.99]}}', "train.betas",
         r"train\.betas does nothing with fashion-mnist's optimizer sgd"),
    ],
)  # fmt: skip
def test_exp_args_refuses_a_file_that_is_not_a_best_configuration(tmp_path, capsys, content,
                                                                  key, why):  # fmt: skip
    """One line naming the file, the key and the fix; nothing on stdout for `dvc exp run`."""
    best = tmp_path / "best_params.json"
    best.write_text(content)
    assert common.run_stage(tune.main, ["--exp-args", str(best)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1, err
    where = re.escape(f"{best}: ") + (re.escape(f"{key}: ") if key else "")
    assert re.match(rf"^error: {where}{why}.*; not a best configuration for fashion-mnist "
                    r"\(tune\.dataset\); run `make tune` to write it again$", err), err  # fmt: skip


@pytest.mark.parametrize("kind", ["directory", "unreadable", "missing", "not json"])
def test_exp_args_refuses_a_file_it_cannot_read(tmp_path, capsys, kind):
    best = tmp_path / "best_params.json"
    if kind == "directory":
        best.mkdir()
    elif kind == "unreadable":
        best.write_text('{"model": {"dropout": 0.2}}')
        best.chmod(0)
        if os.access(best, os.R_OK):  # root reads anything
            pytest.skip("this user can read a file without permissions")
    elif kind == "not json":
        best.write_text("{'model': 1}")
    assert common.run_stage(tune.main, ["--exp-args", str(best)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1, err
    assert err.startswith(f"error: {best}") and "run" in err, err


class FakeResult:
    """What collect reads of a Tune Result: the trial's config and its reported rows."""

    error = None
    path = "fake"

    def __init__(self, trial_id: str, config: dict, val_accuracy: list[float]):
        import pandas as pd

        self.config = config
        epochs = range(1, len(val_accuracy) + 1)
        self.metrics_dataframe = pd.DataFrame({
            "trial_id": trial_id, "epoch": list(epochs), "val_accuracy": val_accuracy,
            "val_loss": [1.0 - a for a in val_accuracy], "train_loss": 0.5,
            "train_accuracy": 0.8, "diverged": False, "restored_from": 0, "seconds": 1.0,
            "pid": 7, "node_id": "n1",
        })  # fmt: skip


class FakeResultGrid(list):
    @property
    def num_terminated(self) -> int:
        return len(self)


def test_a_swept_null_is_written_as_null(tmp_path, constant, capsys):
    """The best trial's None stays None: JSON null in best_params.json, `null` in the
    `dvc exp run` arguments (pandas would have made it NaN); an empty cell in trials.csv."""
    import pandas as pd

    space = tune_config.check_space({"train": {"clip_grad_norm": {"grid": [None, 1.0]},
                                               "batch_size": {"choice": [16, 32]}}},
                                    constant)  # fmt: skip
    p = {"space": space, "metric": "val_accuracy", "mode": "max", "epochs": 2,
         "asha": {"grace_period": 1, "reduction_factor": 2}}  # fmt: skip
    results = FakeResultGrid([
        FakeResult("b", {"train.clip_grad_norm": 1.0, "train.batch_size": np.int64(16)},
                   [0.5, 0.6]),
        FakeResult("a", {"train.clip_grad_norm": None, "train.batch_size": 32}, [0.6, 0.7]),
    ])  # fmt: skip
    trials, history, configs = tune_report.collect(results, p)
    assert configs == {"a": {"train.clip_grad_norm": None, "train.batch_size": 32},
                       "b": {"train.clip_grad_norm": 1.0, "train.batch_size": 16}}  # fmt: skip
    assert type(configs["b"]["train.batch_size"]) is int
    best = tune_report.choose_best(trials, p)
    assert trials.loc[best, "trial_id"] == "a"
    tune_report.write_outputs(tmp_path, trials, history, p, best, "t", configs["a"])

    def no_nan(text):
        raise AssertionError(f"not JSON: {text}")

    text = (tmp_path / "best_params.json").read_text()
    best_values = json.loads(text, parse_constant=no_nan)
    assert best_values == {"train": {"batch_size": 32, "clip_grad_norm": None}}
    table = pd.read_csv(tmp_path / "trials.csv", dtype=str, keep_default_na=False)
    assert table.set_index("trial_id")["train.clip_grad_norm"].to_dict() == {"a": "", "b": "1.0"}
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert common.run_stage(tune.main, ["--exp-args", str(tmp_path / "best_params.json")]) == 0
    assert capsys.readouterr().out.split() == [
        "-S", "train.batch_size=32", "-S", "train.clip_grad_norm=null"
    ]  # fmt: skip


def test_exp_args_line_runs_through_the_shell(tmp_path):
    """The README's `a=$(... --exp-args F) && eval "dvc exp run $a"` passes each argument
    whole (quoted ones too), and a refused file stops before `dvc exp run`."""
    best = tmp_path / "best_params.json"
    best.write_text(json.dumps({"model": {"hidden_sizes": [64, 32], "dropout": 0.2}}))
    script = ('a=$("$PY" pipeline/tune.py --exp-args "$F") && eval "printf \'<%s>\\n\' $a"'
              " || echo refused")  # fmt: skip
    env = {**os.environ, "PY": sys.executable, "F": str(best)}
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env,
                          cwd=common.PROJECT_ROOT, check=True)  # fmt: skip
    assert done.stdout.splitlines() == ["<-S>", "<model.dropout=0.2>", "<-S>",
                                        "<model.hidden_sizes=[64,32]>"]  # fmt: skip
    best.write_text("{}")
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env,
                          cwd=common.PROJECT_ROOT, check=True)  # fmt: skip
    assert done.stdout == "refused\n" and done.stderr.startswith(f"error: {best}: ")


def test_sweep_name_changes_with_the_params():
    a = tune_config.sweep_name("mnist", {"tune": {"epochs": 3}, "train": {"lr": 0.1}})
    assert a == tune_config.sweep_name("mnist", {"train": {"lr": 0.1}, "tune": {"epochs": 3}})
    assert a != tune_config.sweep_name("mnist", {"tune": {"epochs": 4}, "train": {"lr": 0.1}})


# ------------------------------------------------------------------ errors before any trial


def test_ray_not_installed_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(StageError, match=r'Ray Tune is not installed.*pip install -e "\.\[tune\]"'):
        tune.import_ray()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_address_that_is_not_ray_stops_in_one_line(tmp_path):
    """A port that accepts connections but never speaks Ray (a web server, the dashboard's
    8265): one line naming the address and the fix after CONNECT_TIMEOUT_S (3 s here),
    not minutes of retries. In a process of its own: the abandoned ray.init thread ends
    with it, and the process must end promptly too."""
    pytest.importorskip("ray")
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    accepted = []

    def accept_and_stay_silent():
        while True:
            try:
                accepted.append(server.accept()[0])
            except OSError:  # closed
                return

    threading.Thread(target=accept_and_stay_silent, daemon=True).start()
    prepared = write_prepared(tmp_path / "prepared" / "mnist", 40, 20, 10)
    params = write_params(tmp_path / "params.yaml", dataset="mnist")
    argv = ["--prepared", str(prepared.parent), "--out", str(tmp_path / "out"),
            "--params", str(params), "--storage", str(tmp_path / "storage")]  # fmt: skip
    code = ("import sys; from pipeline import common, tune; tune.CONNECT_TIMEOUT_S = 3.0; "
            "sys.exit(common.run_stage(tune.main, sys.argv[1:]))")  # fmt: skip
    env = {**os.environ, "RAY_ADDRESS": f"127.0.0.1:{port}", "RAY_USAGE_STATS_ENABLED": "0"}
    try:
        done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True,
                              text=True, cwd=common.PROJECT_ROOT, env=env,
                              timeout=120)  # fmt: skip
    finally:
        server.close()
        for connection in accepted:
            connection.close()
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: RAY_ADDRESS=127.0.0.1:{port}: no Ray cluster answered within 3 s; something "
        "listens there, but not Ray: check the address is the head node's GCS port (usually "
        f"6379; `ray status --address 127.0.0.1:{port}`), or unset RAY_ADDRESS to run on "
        "this machine"
    ], done.stderr
    assert accepted  # Ray did connect, and got no answer
    assert not (tmp_path / "out").exists()


def test_unreachable_ray_address_names_it_and_the_fix(tmp_path, monkeypatch, capsys):
    port = _free_port()
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    prepared = write_prepared(tmp_path / "prepared" / "mnist", 40, 20, 10)
    params = write_params(tmp_path / "params.yaml", dataset="mnist")
    argv = ["--prepared", str(prepared.parent), "--out", str(tmp_path / "out"),
            "--params", str(params), "--storage", str(tmp_path / "storage")]  # fmt: skip
    assert common.run_stage(tune.main, argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"error: RAY_ADDRESS=127.0.0.1:{port}: no Ray cluster answers there")
    assert f"ray start --head --port={port}" in err[0] and "unset RAY_ADDRESS" in err[0]
    assert not (tmp_path / "out").exists()


def test_tune_dvc_yaml_keeps_the_committed_reports_on_failure():
    """DVC deletes a stage's outputs before running it unless they persist: the sweep's
    reports (cache: false, committed to git) must survive a failed run."""
    stage = yaml.safe_load((common.PROJECT_ROOT / "tune" / "dvc.yaml").read_text())
    flagged = []
    for kind in ("outs", "metrics", "plots"):
        for out in stage["stages"]["tune"].get(kind, []):
            ((path, flags),) = out.items()
            flagged.append(path)
            if flags.get("cache") is False:
                assert flags.get("persist") is True, path
    assert sorted(Path(path).name for path in flagged) == sorted(tune_report.OUTPUTS)


def test_library_and_stage_import_without_ray():
    code = "import sys, mininn, pipeline.tune, pipeline.tune_report; print('ray' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=common.PROJECT_ROOT, check=True)  # fmt: skip
    assert done.stdout.strip() == "False"


def test_failed_trial_is_named_by_its_exception():
    class ActorDiedError(Exception):
        pass

    worker = RuntimeError("Traceback (most recent call last):\n  File x\nKeyError: 'lr'\n")
    assert tune_report._error_line(worker) == "KeyError: 'lr'"
    died = ActorDiedError("The actor died unexpectedly.\n\tpid: 3\nThe actor is dead because")
    assert tune_report._error_line(died) == "ActorDiedError: The actor died unexpectedly."


@pytest.mark.parametrize("address", ["localhost", "10.0.0.1:port", "ray://host"])
def test_malformed_ray_address(address):
    with pytest.raises(StageError, match=r"RAY_ADDRESS=.*expected host:port"):
        tune.check_address(address)


# ------------------------------------------------------------------ the trial's training

TRIAL_VALUES = {
    "train.scheduler.args.max_lr": 0.02,
    "train.scheduler.args.pct_start": 0.4,
    "train.weight_decay": 0.05,
    "train.label_smoothing": 0.05,
    "train.clip_grad_norm": 0.5,
    "train.augment.crop_padding": 2,
    "train.augment.hflip": 0.5,
    "train.batch_size": 32,
    "model.dropout": 0.25,
}


def test_a_trial_trains_the_train_stage_recipe(tmp_path, local):
    """float64, exact: a trial's epochs and final weights are the train stage's on
    params.yaml with the trial's values applied by ``--exp-args``' arguments (through
    DVC's own ``-S`` parser) and train.epochs set to the budget: the same OneCycleLR
    over the same cycle, label smoothing, clipping, augmentation (mnist's own crop
    padding, from its override), Dropout masks and batches."""
    from dvc.utils.hydra import apply_overrides
    from threadpoolctl import threadpool_limits

    import mininn
    from pipeline import train
    from pipeline.reports import read_history

    prepared = write_prepared(tmp_path / "prepared" / "mnist", 96, 40, 10)
    space = tune_config.best_params({k: {"choice": [v]} for k, v in TRIAL_VALUES.items()})
    params = write_params(tmp_path / "params.yaml", train={"dtype": "float64", "epochs": 40},
                          dataset="mnist", epochs=3, space=space)  # fmt: skip
    p = tune_config.tune_params(params)
    setup, data = tune.trial_inputs(p, recipe.resolved_params("mnist", params), prepared)
    trial_recipe = tune.trial_params(setup, TRIAL_VALUES)
    rows = []
    tune.fit_trial(TRIAL_VALUES, data, setup, tmp_path / "trial.npz", rows.append)
    assert [r["epoch"] for r in rows] == [1, 2, 3] and not any(r["diverged"] for r in rows)

    args = tune_config.exp_args(tune_config.best_params(TRIAL_VALUES), "mnist", params)
    apply_overrides(params, [*args[1::2], "train.epochs=3"])
    assert recipe.resolved_params("mnist", params) == trial_recipe
    out = tmp_path / "train"
    argv = ["--dataset", "mnist", "--prepared", str(prepared), "--out", str(out),
            "--params", str(params), "--checkpoints", str(tmp_path / "checkpoints")]  # fmt: skip
    with threadpool_limits(1):  # as in the trial: tune.cpus_per_trial BLAS threads
        assert train.main(argv) == 0
    history = read_history(out / "live")
    assert rows[0]["train_loss"] == history["train_loss"][0]  # the first epoch's loss
    for column in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"):
        assert [r[column] for r in rows] == history[column].tolist(), column
    weights, trial = (
        mininn.load(out / "model.npz"),
        mininn.load(tmp_path / "trial.npz")["state"]["model"],
    )
    assert sorted(weights) == sorted(trial)
    for name, array in weights.items():
        assert array.dtype == np.float64 and np.array_equal(array, trial[name]), name


def test_a_trial_schedule_spans_its_budget(tmp_path, local):
    """OneCycleLR's cycle is the budget's (tune.epochs x batches), not train.epochs'."""
    import mininn

    prepared = write_prepared(tmp_path / "prepared" / "mnist", 64, 20, 10)
    params = write_params(tmp_path / "params.yaml", train={"epochs": 40}, dataset="mnist",
                          epochs=2, space={"model": {"dropout": {"choice": [0.1]}}})  # fmt: skip
    p = tune_config.tune_params(params)
    setup, data = tune.trial_inputs(p, recipe.resolved_params("mnist", params), prepared)
    rows = []
    tune.fit_trial({"model.dropout": 0.1}, data, setup, tmp_path / "trial.npz", rows.append)
    scheduler = mininn.load(tmp_path / "trial.npz")["state"]["scheduler"]
    assert scheduler["total_steps"] == 2 * 4  # 2 epochs x ceil(64 / 16) batches
    max_lr = recipe.resolved_params("mnist", params)["train"]["scheduler"]["args"]["max_lr"]
    assert rows[0]["lr"] == pytest.approx(max_lr / 25, rel=1e-12)  # div_factor 25 at the start


# ------------------------------------------------------------------ a real sweep


MAX_LR = "train.scheduler.args.max_lr"


def uninterrupted_val_losses(
    prepared: Path, params: Path, max_lr: float, epochs: int
) -> list[float]:
    """The validation loss per epoch of one trial's training, run here in one go through
    the train stage's builders (recipe.build_run) and fit."""
    from threadpoolctl import threadpool_limits

    from mininn.training import fit

    recipe_p = recipe.resolved_params("mnist", params)
    recipe_p["train"]["scheduler"]["args"]["max_lr"] = max_lr
    recipe_p["train"]["epochs"] = epochs
    train_p = recipe_p["train"]
    x, y, x_val, y_val = tune.read_data(prepared, train_p["dtype"])
    with threadpool_limits(1):  # as in a trial: BLAS threads change float32 roundings
        run = recipe.build_run("mnist", recipe_p, x, y, common.read_stats(prepared))
        history = fit(run.model, run.loss_fn, run.optimizer, run.loader, epochs=epochs,
                      val_data=(x_val, y_val), metric="accuracy", progress=False,
                      scheduler=run.scheduler,
                      clip_grad_norm=train_p["clip_grad_norm"])  # fmt: skip
    return history.column("val_loss")


@pytest.mark.slow
def test_sweep_on_local_ray(tmp_path, monkeypatch, capsys):
    """4 trials x 3 epochs, 2 at a time, on a local Ray with 2 CPUs; one worker dies once."""
    pytest.importorskip("ray.tune")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    marker = tmp_path / "crashed"
    monkeypatch.setenv(tune.CRASH_EPOCH_ENV, "2")
    monkeypatch.setenv(tune.CRASH_MARKER_ENV, str(marker))
    prepared = write_prepared(tmp_path / "prepared" / "mnist", 300, 100, 10)
    # Two peak learning rates that learn, then two that cannot: the weak pair starts
    # after the strong pair has reported epoch 1, so ASHA's first rung stops them.
    space = {"train": {"scheduler": {"args": {"max_lr": {"grid": [0.02, 0.01, 1.0e-6, 2.0e-6]}}}}}
    params = write_params(
        tmp_path / "params.yaml", dataset="mnist", num_samples=1, max_concurrent_trials=2,
        num_cpus=2, cpus_per_trial=1, epochs=3, asha={"grace_period": 1, "reduction_factor": 2},
        max_failures=1, space=space,
    )  # fmt: skip
    out = tmp_path / "out"
    argv = ["--prepared", str(prepared.parent), "--out", str(out), "--params", str(params),
            "--storage", str(tmp_path / "storage")]  # fmt: skip
    assert common.run_stage(tune.main, argv) == 0, capsys.readouterr().err

    import pandas as pd

    trials = pd.read_csv(out / "trials.csv")
    history = pd.read_csv(out / "history.csv")
    assert len(trials) == 4 and set(trials[MAX_LR]) == {0.02, 0.01, 1e-6, 2e-6}
    # every trial reported, each epoch once
    for _, trial in trials.iterrows():
        epochs = history.loc[history["trial_id"] == trial["trial_id"], "epoch"].tolist()
        assert epochs == list(range(1, trial["epochs"] + 1))
    # ASHA stopped the weak ones early
    assert trials["stopped_early"].sum() >= 1
    assert set(trials.loc[trials[MAX_LR] < 1e-4, "epochs"]) == {1}
    # trials ran in at least two worker processes
    pids = {pid for text in trials["pids"] for pid in str(text).split(";")}
    assert len(pids) >= 2
    # the one crash: retried from its epoch-2 checkpoint, in a new process, to the end
    assert marker.exists()
    restored = trials[trials["restored_from"] > 0]
    assert len(restored) == 1
    assert restored["restored_from"].item() == 2 and restored["epochs"].item() == 3
    assert len(str(restored["pids"].item()).split(";")) == 2
    # ... and its epochs are those of an uninterrupted run, bit for bit (same machine)
    max_lr = restored[MAX_LR].item()
    resumed = history[history["trial_id"] == restored["trial_id"].item()]
    assert resumed["val_loss"].tolist() == uninterrupted_val_losses(prepared, params, max_lr, 3)
    # the best configuration written is the trained-to-the-end trial with the best final
    # val_accuracy (a trial stopped by ASHA was judged at an earlier epoch)
    full = trials[trials["epochs"] == 3]
    best_row = full.loc[full["val_accuracy"].idxmax()]
    best = json.loads((out / "best_params.json").read_text())
    assert best == {"train": {"scheduler": {"args": {"max_lr": best_row[MAX_LR]}}}}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == {"val_accuracy": best_row["val_accuracy"]}  # the best trial's, one column
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out.iterdir()) == sorted(tune_report.OUTPUTS)
    assert np.isfinite(history["val_loss"]).all()


@pytest.mark.slow
def test_failed_sweep_resumes_with_tuner_restore(tmp_path, monkeypatch, capsys):
    """A sweep whose trial failed for good writes nothing; the same command again resumes
    the experiment (Tuner.restore): the failed trial continues from its checkpoint and the
    finished one is not trained again."""
    pytest.importorskip("ray.tune")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    marker = tmp_path / "crashed"
    monkeypatch.setenv(tune.CRASH_EPOCH_ENV, "2")
    monkeypatch.setenv(tune.CRASH_MARKER_ENV, str(marker))
    prepared = write_prepared(tmp_path / "prepared" / "mnist", 300, 100, 10)
    params = write_params(
        tmp_path / "params.yaml", dataset="mnist", num_samples=1, max_concurrent_trials=2,
        num_cpus=2, epochs=3, asha={"grace_period": 3, "reduction_factor": 2}, max_failures=0,
        space={"train": {"scheduler": {"args": {"max_lr": {"grid": [0.02, 0.01]}}}}},
    )  # fmt: skip
    out = tmp_path / "out"
    argv = ["--prepared", str(prepared.parent), "--out", str(out), "--params", str(params),
            "--storage", str(tmp_path / "storage")]  # fmt: skip

    assert common.run_stage(tune.main, argv) == 1
    err = capsys.readouterr().err
    assert "error: tune: 1 of 2 trials failed for good" in err and "run again" in err
    assert marker.exists() and not out.exists()

    assert common.run_stage(tune.main, argv) == 0  # the marker keeps the trial alive now
    err = capsys.readouterr().err
    assert "resuming the interrupted sweep" in err

    import pandas as pd

    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 2 and (trials["epochs"] == 3).all()
    assert sorted(trials["restored_from"]) == [0, 2]
    finished = trials[trials["restored_from"] == 0]
    assert len(str(finished["pids"].item()).split(";")) == 1  # trained once, in one process
    history = pd.read_csv(out / "history.csv")
    assert sorted(history.groupby("trial_id")["epoch"].apply(list)) == [[1, 2, 3]] * 2
