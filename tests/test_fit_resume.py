"""fit(checkpoint=PATH): a run stopped after 3 of 6 epochs and started again with the same
arguments ends bit-identical to a run that was never stopped (weights, optimizer and
scheduler state, history but its wall-clock ``seconds``), with every source of randomness
on: shuffling, augmentation (RandomCrop + RandomHorizontalFlip through the DataLoader),
Dropout, plus BatchNorm, a scheduler, gradient clipping and early stopping. A checkpoint
of another setup is refused, naming the file, what differs and the fix.

Bit-identity holds within one process on one machine (the same BLAS kernels), which is
where these runs are compared.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import mininn
from mininn.models import make_mlp
from mininn.optim.lr_scheduler import OneCycleLR, ReduceLROnPlateau, StepLR
from mininn.training import fit
from mininn.transforms import Compose, RandomCrop, RandomHorizontalFlip

EPOCHS = 6


def _data():
    """6x6 'images' whose class is where the mass is: learnable, and the val loss moves."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 36)).astype(np.float32)
    y = x.reshape(-1, 6, 6)[:, :, :3].sum(axis=(1, 2)) > x.reshape(-1, 6, 6)[:, :, 3:].sum(
        axis=(1, 2)
    )
    xv = rng.normal(size=(60, 36)).astype(np.float32)
    yv = xv.reshape(-1, 6, 6)[:, :, :3].sum(axis=(1, 2)) > 0
    return x, y.astype(np.int64), xv, yv.astype(np.int64)


SCHEDULERS = {
    "onecycle": lambda opt, n: OneCycleLR(opt, max_lr=0.05, epochs=EPOCHS, steps_per_epoch=n),
    # threshold: a gain under 5 % counts as a plateau, so the rate does drop
    "plateau": lambda opt, n: ReduceLROnPlateau(opt, factor=0.5, patience=0, threshold=0.05),
    "step": lambda opt, n: StepLR(opt, step_size=2, gamma=0.5),
    "none": lambda opt, n: None,
}


def _setup(scheduler="onecycle", *, hidden=16, optimizer="adam", lr=0.01, batch_size=32):
    """Everything built as a user builds it, from one manual_seed: the loader and the
    transforms draw their seeds from the package generator (seed=None)."""
    x, y, xv, yv = _data()
    mininn.manual_seed(0)
    model = make_mlp(36, [hidden], 2, dropout=0.2, batch_norm=True)
    make = {"adam": mininn.optim.Adam, "sgd": mininn.optim.SGD}[optimizer]
    opt = make(model.parameters(), lr=lr)
    augment = Compose([
        RandomCrop(6, padding=1, image_shape=(6, 6)),
        RandomHorizontalFlip(image_shape=(6, 6)),
    ])  # fmt: skip
    loader = mininn.DataLoader(x, y, batch_size=batch_size, shuffle=True, transform=augment)
    return model, opt, loader, SCHEDULERS[scheduler](opt, len(loader)), (xv, yv)


def _fit(path, *, epochs=EPOCHS, stop_after=None, objects=None, scheduler="onecycle",
         patience=3, **setup):  # fmt: skip
    model, opt, loader, sched, val = objects or _setup(scheduler, **setup)

    def interrupt(row):
        if row["epoch"] == stop_after:
            raise KeyboardInterrupt  # as Ctrl-C after the epoch

    history = fit(
        model, mininn.CrossEntropyLoss(), opt, loader, epochs=epochs, val_data=val,
        metric="accuracy", patience=patience, scheduler=sched, clip_grad_norm=0.5,
        checkpoint=path, progress=False, on_epoch_end=interrupt,
    )  # fmt: skip
    return history, (model, opt, loader, sched, val)


def _assert_same_arrays(actual, expected, where):
    """Equal trees, arrays equal bit for bit (bytes, dtype and shape)."""
    if isinstance(expected, dict):
        assert list(actual) == list(expected), where
        for key in expected:
            _assert_same_arrays(actual[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            _assert_same_arrays(a, e, f"{where}[{i}]")
    elif isinstance(expected, np.ndarray):
        assert actual.dtype == expected.dtype and actual.shape == expected.shape, where
        assert actual.tobytes() == expected.tobytes(), where
    else:
        assert actual == expected and type(actual) is type(expected), where


def _assert_same_run(resumed, uninterrupted):
    (history, (model, opt, loader, sched, _)) = resumed
    (expected, (model_0, opt_0, loader_0, sched_0, _)) = uninterrupted
    _assert_same_arrays(model.state_dict(), model_0.state_dict(), "model")
    _assert_same_arrays(opt.state_dict(), opt_0.state_dict(), "optimizer")
    if sched_0 is not None:
        _assert_same_arrays(sched.state_dict(), sched_0.state_dict(), "scheduler")
    _assert_same_arrays(loader.state_dict(), loader_0.state_dict(), "loader")
    _assert_same_arrays(
        mininn.default_rng().bit_generator.state, _STATE_AFTER[id(uninterrupted)], "package rng"
    )

    def rows(h):
        return [{k: v for k, v in row.items() if k != "seconds"} for row in h.epochs]

    assert rows(history) == rows(expected)
    assert history.step_losses == expected.step_losses
    assert (history.best_epoch, history.stopped_early) == (
        expected.best_epoch,
        expected.stopped_early,
    )


_STATE_AFTER: dict[int, dict] = {}


def _uninterrupted(tmp_path, **kwargs):
    result = _fit(tmp_path / "uninterrupted.npz", **kwargs)
    _STATE_AFTER[id(result)] = mininn.default_rng().bit_generator.state
    return result


@pytest.mark.parametrize("scheduler", ["onecycle", "plateau", "step"])
def test_a_run_stopped_after_3_of_6_epochs_resumes_bit_identical(tmp_path, scheduler):
    expected = _uninterrupted(tmp_path, scheduler=scheduler)
    assert len(expected[0].epochs) == EPOCHS  # the comparison covers all six epochs
    path = tmp_path / "run.npz"
    with pytest.raises(KeyboardInterrupt):
        _fit(path, stop_after=3, scheduler=scheduler)
    assert sorted(os.listdir(tmp_path)) == ["run.npz", "uninterrupted.npz"]  # no temporary
    assert mininn.load(path)["epoch"] == 3
    resumed = _fit(path, scheduler=scheduler)  # a fresh setup: a new process would build this
    assert [row["epoch"] for row in resumed[0].epochs] == list(range(1, EPOCHS + 1))
    _assert_same_run(resumed, expected)
    lrs = [row["lr"] for row in resumed[0].epochs]
    assert len(set(lrs)) > 1  # the scheduler did change the learning rate


def test_epochs_3_then_epochs_6_equals_epochs_6(tmp_path):
    expected = _uninterrupted(tmp_path)
    path = tmp_path / "run.npz"
    first, _ = _fit(path, epochs=3)
    assert len(first.epochs) == 3
    _assert_same_run(_fit(path), expected)


def test_the_same_objects_continued_in_one_process_equal_an_uninterrupted_run(tmp_path):
    expected = _uninterrupted(tmp_path)
    path = tmp_path / "run.npz"
    _, objects = _fit(path, epochs=3)
    _assert_same_run(_fit(path, objects=objects), expected)


def test_early_stopping_state_survives_the_interruption(tmp_path):
    # SGD at a high rate overfits: the val loss turns up and, with patience 2, the
    # uninterrupted run stops before epoch 6 and restores its best weights.
    kwargs = {"scheduler": "none", "optimizer": "sgd", "lr": 0.8, "patience": 2}
    expected = _uninterrupted(tmp_path, epochs=12, **kwargs)
    history = expected[0]
    assert history.stopped_early and 3 < len(history.epochs) < 12
    assert history.best_epoch < len(history.epochs)  # the weights were restored
    path = tmp_path / "run.npz"
    with pytest.raises(KeyboardInterrupt):
        _fit(path, epochs=12, stop_after=history.best_epoch + 1, **kwargs)  # while waiting
    _assert_same_run(_fit(path, epochs=12, **kwargs), expected)
    # Started once more, the finished run trains nothing and ends the same way.
    _assert_same_run(_fit(path, epochs=12, **kwargs), expected)


def test_a_finished_run_started_again_trains_nothing(tmp_path):
    path = tmp_path / "run.npz"
    expected = _uninterrupted(tmp_path)
    _fit(path)
    before = path.read_bytes()
    _assert_same_run(_fit(path), expected)
    assert path.read_bytes() == before


def test_a_checkpoint_holds_every_source_of_state(tmp_path):
    path = tmp_path / "run.npz"
    _fit(path, epochs=2)
    saved = mininn.load(path)
    assert saved["epoch"] == 2
    state = saved["state"]
    assert set(state) == {"model", "optimizer", "scheduler", "loader", "generators"}
    assert state["optimizer"]["state"][0]["step"] == 2 * 8  # 240 samples, batches of 32
    assert state["scheduler"]["last_epoch"] == 2 * 8
    assert len(state["loader"]["transform"]["transforms"]) == 2
    assert "package_generator" in saved and len(saved["history"]["epochs"]) == 2
    assert set(saved["early_stopping"]) == {"best_loss", "waited", "best_state"}


# -- refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "what"),
    [
        ({"hidden": 17},
         r"model\.state\['0\.weight'\]: '\(16, 36\) float32' in the file, '\(17, 36\) float32"),
        ({"optimizer": "sgd"}, r"optimizer\.class: 'Adam' in the file, 'SGD' now"),
        ({"scheduler": "none", "lr": 0.02},
         r"scheduler: \{'class': 'OneCycleLR'.* in the file, None now; optimizer\.param_groups"
         r"\[0\]\.lr: 0\.0020.* in the file, 0\.02 now"),
        ({"scheduler": "step"}, r"scheduler\.class: 'OneCycleLR' in the file, 'StepLR' now"),
        ({"scheduler": "none"}, r"scheduler: \{'class': 'OneCycleLR'.* in the file, None now"),
        ({"batch_size": 16}, r"data\.batch_size: 32 in the file, 16 now"),
    ],
    ids=["model", "optimizer-class", "no-scheduler-and-lr", "scheduler-class", "no-scheduler",
         "batch-size"],
)  # fmt: skip
def test_a_checkpoint_of_another_setup_is_refused(tmp_path, change, what):
    path = tmp_path / "run.npz"
    _fit(path, epochs=2)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=rf"fit: checkpoint '.*run\.npz' was written by another "
                       rf"setup \(.*{what}.*\).*delete '.*run\.npz' to start over"):  # fmt: skip
        _fit(path, **change)
    assert path.read_bytes() == before  # the refused checkpoint is left as it was


def test_a_scheduler_with_other_hyperparameters_is_refused(tmp_path):
    path = tmp_path / "run.npz"
    _fit(path, epochs=2)
    model, opt, loader, _, val = _setup()
    other = OneCycleLR(opt, max_lr=0.1, epochs=EPOCHS, steps_per_epoch=len(loader))
    with pytest.raises(ValueError, match=r"another setup \(.*max_lr.*\)"):
        _fit(path, objects=(model, opt, loader, other, val))


def test_other_data_and_other_fit_arguments_are_refused(tmp_path):
    path = tmp_path / "run.npz"
    _fit(path, epochs=2)
    model, opt, loader, sched, val = _setup()
    loader.arrays = (loader.arrays[0] + 1, loader.arrays[1])
    with pytest.raises(ValueError, match=r"another setup \(data\.train\[0\]\.sha256"):
        _fit(path, objects=(model, opt, loader, sched, val))
    with pytest.raises(ValueError, match=r"another setup \(fit\.patience: 3 in the file, 4 now"):
        _fit(path, patience=4)


def test_a_checkpoint_with_more_epochs_than_asked_is_refused(tmp_path):
    path = tmp_path / "run.npz"
    _fit(path, epochs=3)
    with pytest.raises(ValueError, match=r"holds 3 epochs, more than epochs=2; pass epochs >= 3"):
        _fit(path, epochs=2)


def test_a_file_that_is_not_a_fit_checkpoint_is_refused(tmp_path):
    path = tmp_path / "model.npz"
    mininn.save(_setup()[0].state_dict(), path)
    with pytest.raises(ValueError, match=r"model\.npz' is not a checkpoint written by fit.*delete"):
        _fit(path)
    path.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"cannot read checkpoint .*not an \.npz archive.*delete"):
        _fit(path)


def test_a_missing_checkpoint_folder_is_refused_before_training(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"folder .*missing.* of checkpoint .* create it"):
        _fit(tmp_path / "missing" / "run.npz")


def test_another_learning_rate_is_refused(tmp_path):
    path = tmp_path / "run.npz"
    _fit(path, epochs=2, scheduler="none")
    with pytest.raises(ValueError, match=r"another setup \(optimizer\.param_groups\[0\]\.lr: "
                       r"0\.01 in the file, 0\.02 now\)"):  # fmt: skip
        _fit(path, scheduler="none", lr=0.02)


def test_a_plain_function_as_transform_resumes(tmp_path):
    # A function's repr holds its address, which differs in a new process (here: a new
    # function object); the fingerprint must not depend on it.
    def run(path, **kwargs):
        model, opt, loader, sched, val = _setup("step")
        loader.transform = lambda batch: batch[:, ::-1].copy()
        return _fit(path, objects=(model, opt, loader, sched, val), **kwargs)

    expected = run(tmp_path / "uninterrupted.npz")
    _STATE_AFTER[id(expected)] = mininn.default_rng().bit_generator.state
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "run.npz", stop_after=3)
    _assert_same_run(run(tmp_path / "run.npz"), expected)
