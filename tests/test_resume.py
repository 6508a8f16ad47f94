"""Resuming train and baseline after an interruption, on tiny data.

A stage script runs as a subprocess, as DVC runs it; the test kills it with
SIGKILL (or interrupts it with SIGINT, as Ctrl-C does) once its checkpoint exists,
runs it again, and checks that the outputs are the bytes of an uninterrupted run:
``model.npz``, ``steps.csv`` and DVCLive's files (the ``seconds`` column aside,
which is wall-clock time). A kill between the checkpoint and DVCLive's log of the
same epoch is made exact by a stage run whose logger kills its own process there.
A change of params, data or code starts over.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from _idx import write_prepared

import mininn
from pipeline import recipe, reports
from pipeline.common import PROJECT_ROOT

DATASET = "mnist"
EPOCHS = 5
PARAMS = {
    "datasets": [DATASET],
    "model": {"hidden_sizes": [96, 48], "activation": "relu", "batch_norm": True,
              "dropout": 0.2},
    "train": {
        "optimizer": "adamw", "lr": 0.001, "weight_decay": 0.01, "momentum": 0.0,
        "betas": [0.9, 0.999], "scheduler": {"name": "OneCycleLR", "args": {"max_lr": 0.005}},
        "label_smoothing": 0.1, "clip_grad_norm": 1.0,
        "augment": {"crop_padding": 1, "hflip": 0.5}, "batch_size": 8, "epochs": EPOCHS,
        "patience": None, "seed": 1, "dtype": "float32",
    },
    "overrides": {},
    "baseline": {"source": "run", "threads": 1},
}  # fmt: skip
SAME_BYTES = [
    "steps.csv",
    "live/params.yaml",
    *(f"live/plots/metrics/{m}.tsv" for m in reports.LIVE_METRICS if m != "seconds"),
]
"""Outputs that an interrupted and an uninterrupted run write byte for byte."""


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """1,200 training images: enough steps per epoch (150) to stop a run in the middle."""
    return write_prepared(tmp_path_factory.mktemp("prepared"), 1200, 100, 50)


def write_params(path: Path, **train_changes) -> Path:
    params = {**PARAMS, "train": {**PARAMS["train"], **train_changes}}
    path.write_text(yaml.safe_dump(params), encoding="utf-8")
    return path


def command(stage: str, prepared: Path, params: Path, out: Path) -> list[str]:
    return [sys.executable, f"pipeline/{stage}.py", "--dataset", DATASET, "--prepared",
            str(prepared), "--out", str(out), "--params", str(params)]  # fmt: skip


def run(stage: str, prepared: Path, params: Path, out: Path) -> str:
    """Run a stage to the end; its stderr."""
    result = subprocess.run(command(stage, prepared, params, out), cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


def checkpoints(params: Path, stage: str) -> list[Path]:
    return sorted((params.parent / "checkpoints" / DATASET).glob(f"{stage}-*.npz"))


def default_sigint() -> None:
    """Ctrl-C's default in the child: a test run started in the background (``make test
    &``) inherits SIGINT ignored, and Python then leaves it ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt(stage: str, prepared: Path, params: Path, out: Path, how=signal.SIGKILL) -> int:
    """Start the stage, and send it ``how`` as soon as its first checkpoint exists (after
    epoch 1 of 5); return its exit status and the epochs the checkpoint holds."""
    process = subprocess.Popen(command(stage, prepared, params, out), cwd=PROJECT_ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               preexec_fn=default_sigint)  # fmt: skip
    try:
        while not checkpoints(params, stage) and process.poll() is None:
            time.sleep(0.005)
        process.send_signal(how)
        _, stderr = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
    (checkpoint,) = checkpoints(params, stage)
    epochs = mininn.load(checkpoint)["epoch"]
    assert 1 <= epochs < EPOCHS, "the run ended before it was interrupted: slow it down"
    return process.returncode, stderr.decode()


def assert_same_outputs(a: Path, b: Path, names=SAME_BYTES) -> None:
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    ours, theirs = (json.loads((p / "live" / "metrics.json").read_text()) for p in (a, b))
    assert ours == theirs and ours["step"] == EPOCHS  # the summary holds no wall-clock time


@pytest.fixture(scope="module")
def uninterrupted(prepared, tmp_path_factory):
    """train and baseline run once without interruption: (params file, train's out, baseline's)."""
    root = tmp_path_factory.mktemp("reference")
    params = write_params(root / "params.yaml")
    run("train", prepared, params, root / "train")
    if _has_torch():
        run("baseline", prepared, params, root / "baseline")
    assert not checkpoints(params, "train") and not checkpoints(params, "baseline")
    return params, root / "train", root / "baseline"


def _has_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------ train


def test_train_killed_then_rerun_gives_the_same_bytes(prepared, uninterrupted, tmp_path):
    _, reference, _ = uninterrupted
    params = write_params(tmp_path / "params.yaml")
    out = tmp_path / "models"
    status, _ = interrupt("train", prepared, params, out)
    assert status == -signal.SIGKILL
    assert not (out / "model.npz").exists()
    stderr = run("train", prepared, params, out)
    assert "continuing from" in stderr and "after epoch" in stderr
    assert_same_outputs(out, reference, ["model.npz", *SAME_BYTES])
    assert not checkpoints(params, "train")  # a finished run removes its checkpoint


def test_train_killed_between_checkpoint_and_log_rebuilds_the_log(prepared, uninterrupted,
                                                                  tmp_path):  # fmt: skip
    """The checkpoint of epoch 2 is written, DVCLive has not logged epoch 2 yet: the
    rerun logs it from the checkpoint."""
    _, reference, _ = uninterrupted
    params = write_params(tmp_path / "params.yaml")
    out = tmp_path / "models"
    script = (
        "import os, signal, sys; from pipeline import reports, train\n"
        "log = reports.LiveHistory.log\n"
        "def dying_log(self, row):\n"
        "    if row['epoch'] == 2: os.kill(os.getpid(), signal.SIGKILL)\n"
        "    log(self, row)\n"
        "reports.LiveHistory.log = dying_log\n"
        "sys.exit(train.main(sys.argv[1:]))\n"
    )
    argv = command("train", prepared, params, out)[2:]
    result = subprocess.run([sys.executable, "-c", script, *argv], cwd=PROJECT_ROOT,
                            capture_output=True, timeout=600)  # fmt: skip
    assert result.returncode == -signal.SIGKILL
    (checkpoint,) = checkpoints(params, "train")
    assert mininn.load(checkpoint)["epoch"] == 2
    assert len((out / "live/plots/metrics/val_loss.tsv").read_text().splitlines()) == 1 + 1
    run("train", prepared, params, out)
    assert_same_outputs(out, reference, ["model.npz", *SAME_BYTES])


def test_ctrl_c_keeps_the_checkpoint_and_writes_nothing(prepared, uninterrupted, tmp_path):
    _, reference, _ = uninterrupted
    params = write_params(tmp_path / "params.yaml")
    out = tmp_path / "models"
    status, stderr = interrupt("train", prepared, params, out, how=signal.SIGINT)
    assert status == 130 and "interrupted (Ctrl-C)" in stderr
    assert checkpoints(params, "train") and not out.exists()
    assert "continuing from" in run("train", prepared, params, out)
    assert_same_outputs(out, reference, ["model.npz", *SAME_BYTES])


def test_a_params_change_starts_over(prepared, tmp_path):
    params = write_params(tmp_path / "params.yaml")
    out = tmp_path / "models"
    interrupt("train", prepared, params, out)
    (old,) = checkpoints(params, "train")
    write_params(params, lr=0.002)  # the OneCycleLR ignores lr; the fingerprint does not
    stderr = run("train", prepared, params, out)
    assert "continuing from" not in stderr
    assert not old.exists() and not checkpoints(params, "train")
    steps = reports.read_steps(out / "steps.csv")
    assert len(steps) == EPOCHS * 150


def test_the_fingerprint_covers_params_data_and_code(prepared, tmp_path):
    """Another value of any of them names another file, and removes the older one."""
    params = recipe.resolved_params(DATASET, write_params(tmp_path / "params.yaml"))
    folder, code = tmp_path / "checkpoints", ["pipeline/train.py"]

    def path(**changes):
        args = {"params": params, "prepared": prepared, "code": code, **changes}
        return recipe.checkpoint_file(folder, "train", DATASET, **args)

    first = path()
    first.write_bytes(b"a checkpoint")
    assert path() == first and first.exists()  # the same inputs: the same file, kept
    other_data = tmp_path / "other"
    write_prepared(other_data, 1200, 100, 50, seed=6)
    changed = {
        "params": path(params={**params, "train": {**params["train"], "seed": 2}}),
        "data": path(prepared=other_data),
        "code": path(code=["pipeline/baseline.py"]),
        "extra": path(extra={"torch": "2.0"}),
    }
    assert len({first, *changed.values()}) == 5
    assert not first.exists()  # removed when another fingerprint came


# ------------------------------------------------------------------ baseline


def test_baseline_killed_then_rerun_gives_the_same_bytes(prepared, uninterrupted, tmp_path):
    pytest.importorskip("torch")
    _, _, reference = uninterrupted
    params = write_params(tmp_path / "params.yaml")
    out = tmp_path / "torch"
    status, _ = interrupt("baseline", prepared, params, out)
    assert status == -signal.SIGKILL
    assert "continuing from" in run("baseline", prepared, params, out)
    assert_same_outputs(out, reference)
    ours, theirs = (json.loads((p / "baseline.json").read_text()) for p in (out, reference))
    for result in (ours, theirs):
        result["environment"].pop("wall_seconds")
        result["metrics"].pop("train_seconds")
        for row in result["history"]:
            row.pop("seconds")
    assert ours == theirs
    assert not checkpoints(params, "baseline")
