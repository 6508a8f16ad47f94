"""The Ray Tune sweep (pipeline/tune.py, tune_config.py, tune_report.py): params, errors, sweeps.

The fast tests need no Ray. The slow one starts a local Ray with 2 CPUs and runs
4 trials x 3 epochs, 2 at a time, on tiny data, with one worker made to die.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline import common, tune, tune_config, tune_report
from pipeline.common import StageError
from tests._idx import write_prepared

PARAMS = common.PARAMS_FILE


def write_params(path: Path, **tune_changes) -> Path:
    """The project's params.yaml with a small model and ``tune_changes`` over its tune:."""
    with open(PARAMS, encoding="utf-8") as f:
        params = yaml.safe_load(f)
    params["model"].update(hidden_sizes=[16], batch_norm=False, dropout=0.0, activation="relu")
    params["train"].update(optimizer="adam", lr=0.01, batch_size=16, seed=0, dtype="float32")
    params["tune"].update(tune_changes)
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def local(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


# ------------------------------------------------------------------ params


def test_committed_params_are_valid(local):
    p = tune_config.tune_params(PARAMS)
    assert p["space"] and p["epochs"] >= p["asha"]["grace_period"]
    assert p["max_concurrent_trials"] * p["cpus_per_trial"] <= p["num_cpus"]


def test_space_becomes_tune_distributions():
    space = tune_config.check_space({"train": {"lr": {"loguniform": [0.001, 0.1]},
                                        "batch_size": {"randint": [16, 64]}},
                              "model": {"hidden_sizes": {"grid": [[8], [16, 8]]}}})  # fmt: skip
    assert space == {
        "train.lr": ("loguniform", [0.001, 0.1]),
        "train.batch_size": ("randint", [16, 64]),
        "model.hidden_sizes": ("grid", [[8], [16, 8]]),
    }


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
    ],
)
def test_bad_space_names_the_key(space, match):
    with pytest.raises(StageError, match=match):
        tune_config.check_space(space)


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


# ------------------------------------------------------------------ best configuration


def test_best_params_have_the_shape_of_params_yaml():
    best = tune_config.best_params({"train.lr": 0.0025, "model.hidden_sizes": [64, 32],
                             "model.batch_norm": False, "train.batch_size": 64})  # fmt: skip
    assert best == {"train": {"lr": 0.0025, "batch_size": 64},
                    "model": {"hidden_sizes": [64, 32], "batch_norm": False}}  # fmt: skip
    assert tune_config.exp_args(best) == [
        "-S", "model.batch_norm=false", "-S", "model.hidden_sizes=[64,32]",
        "-S", "train.batch_size=64", "-S", "train.lr=0.0025",
    ]  # fmt: skip


def test_exp_args_prints_the_dvc_command(tmp_path, capsys):
    best = tmp_path / "best_params.json"
    best.write_text(json.dumps({"train": {"lr": 0.001}, "model": {"hidden_sizes": [8]}}))
    assert tune.main(["--exp-args", str(best)]) == 0
    assert capsys.readouterr().out.strip() == "-S 'model.hidden_sizes=[8]' -S train.lr=0.001"


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


# ------------------------------------------------------------------ a real sweep


def uninterrupted_val_losses(prepared: Path, params: Path, lr: float, epochs: int) -> list[float]:
    """The validation loss per epoch of one trial's training, run here in one go."""
    from threadpoolctl import threadpool_limits

    import mininn
    from mininn.training import fit
    from pipeline import recipe

    model_p, train_p = recipe.model_params(params), recipe.train_params(params)
    train_p["lr"] = lr
    x, y, x_val, y_val = tune.read_data(prepared, train_p["dtype"])
    with threadpool_limits(1):  # as in a trial: BLAS threads change float32 roundings
        mininn.manual_seed(train_p["seed"])
        model = recipe.build("mnist", model_p, train_p["dtype"])
        optimizer = recipe.build_optimizer(model, train_p)
        loader = mininn.DataLoader(x, y, batch_size=train_p["batch_size"], shuffle=True,
                                   seed=train_p["seed"])  # fmt: skip
        history = fit(model, mininn.CrossEntropyLoss(), optimizer, loader, epochs=epochs,
                      val_data=(x_val, y_val), metric="accuracy", progress=False)  # fmt: skip
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
    # Two learning rates that learn, then two that cannot: the weak pair starts after
    # the strong pair has reported epoch 1, so ASHA's first rung stops them.
    space = {"train": {"lr": {"grid": [0.02, 0.01, 1.0e-6, 2.0e-6]}}}
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
    assert len(trials) == 4 and set(trials["train.lr"]) == {0.02, 0.01, 1e-6, 2e-6}
    # every trial reported, each epoch once
    for _, trial in trials.iterrows():
        epochs = history.loc[history["trial_id"] == trial["trial_id"], "epoch"].tolist()
        assert epochs == list(range(1, trial["epochs"] + 1))
    # ASHA stopped the weak ones early
    assert trials["stopped_early"].sum() >= 1
    assert set(trials.loc[trials["train.lr"] < 1e-4, "epochs"]) == {1}
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
    lr = restored["train.lr"].item()
    resumed = history[history["trial_id"] == restored["trial_id"].item()]
    assert resumed["val_loss"].tolist() == uninterrupted_val_losses(prepared, params, lr, 3)
    # the best configuration written is the trained-to-the-end trial with the best final
    # val_accuracy (a trial stopped by ASHA was judged at an earlier epoch)
    full = trials[trials["epochs"] == 3]
    best_row = full.loc[full["val_accuracy"].idxmax()]
    best = json.loads((out / "best_params.json").read_text())
    assert best == {"train": {"lr": best_row["train.lr"]}}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["best_val_accuracy"] == best_row["val_accuracy"]
    assert metrics == {**metrics, "trials": 4, "stopped_early": int(trials["stopped_early"].sum())}
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
        space={"train": {"lr": {"grid": [0.02, 0.01]}}},
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
