"""fit / run_epochs / evaluate: the loop's bookkeeping, early stopping and its guards."""

from __future__ import annotations

import numpy as np
import pytest

import mininn
from mininn.models import make_mlp
from mininn.optim.lr_scheduler import CosineAnnealingLR, OneCycleLR, ReduceLROnPlateau, StepLR
from mininn.training import evaluate, fit, predict, run_epochs


def _blobs(n=96, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    x = (rng.normal(size=(n, 2)) + 3.0 * y[:, None]).astype(np.float32)
    return x, y.astype(np.int64)


def _setup(lr=0.05):
    mininn.manual_seed(0)
    model = make_mlp(2, [8], 2)
    return model, mininn.CrossEntropyLoss(), mininn.optim.Adam(model.parameters(), lr=lr)


def test_fit_history_rows_and_step_losses():
    x, y = _blobs()
    model, loss_fn, optimizer = _setup()
    loader = mininn.DataLoader(x, y, batch_size=32, shuffle=True, seed=0)
    history = fit(model, loss_fn, optimizer, loader, epochs=10, val_data=(x, y),
                  metric="accuracy", progress=False)  # fmt: skip
    assert [row["epoch"] for row in history.epochs] == list(range(1, 11))
    assert set(history.epochs[0]) == {
        "epoch", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds"
    }  # fmt: skip
    assert len(history.step_losses) == 10 * len(loader)
    # the epoch's train_loss is the sample-weighted mean of its steps (equal batches here)
    assert history.epochs[0]["train_loss"] == pytest.approx(np.mean(history.step_losses[:3]))
    # the reported val_loss is the loss of the model as it stands after the last epoch
    assert history.epochs[-1]["val_loss"] == pytest.approx(loss_fn(predict(model, x), y))
    assert history.epochs[-1]["val_accuracy"] > 0.9  # it learned (chance: 0.5)


def test_evaluate_does_not_depend_on_batch_size():
    # float64: other batch shapes may take other BLAS paths, and in float32 a prediction
    # near a tie could flip. The mean over 101 samples in two orders: <~ 101 * 2**-52.
    x, y = _blobs(n=101)
    mininn.manual_seed(0)
    model, loss_fn = make_mlp(2, [8], 2, dtype="float64"), mininn.CrossEntropyLoss()
    x = x.astype(np.float64)
    small = evaluate(model, loss_fn, x, y, metric="accuracy", batch_size=7)
    whole = evaluate(model, loss_fn, x, y, metric="accuracy", batch_size=1000)
    assert small["loss"] == pytest.approx(whole["loss"], rel=1e-12)
    assert small["accuracy"] == whole["accuracy"]


def test_evaluate_restores_training_mode():
    x, y = _blobs()
    model, loss_fn, _ = _setup()
    model.train()
    evaluate(model, loss_fn, x, y)
    assert model.training


def test_run_epochs_early_stopping_restores_the_best_snapshot():
    val_losses = iter([1.0, 0.5, 0.6, 0.7, 0.8, 0.9])
    weights = {"value": 0}
    restored = []

    def run_epoch(epoch, history, bar):
        weights["value"] = epoch  # the "model" after this epoch
        history.step_losses.append(float(epoch))
        return {"loss": 1.0 / epoch}

    history = run_epochs(
        run_epoch, lambda: {"loss": next(val_losses)}, lambda: dict(weights), restored.append,
        epochs=6, n_batches=1, patience=2, progress=False,
    )  # fmt: skip
    # best at epoch 2, no improvement at 3 and 4: stop after 4, restore epoch 2's weights
    assert [row["epoch"] for row in history.epochs] == [1, 2, 3, 4]
    assert history.best_epoch == 2 and history.stopped_early
    assert restored == [{"value": 2}]


def test_run_epochs_min_delta_counts_small_gains_as_no_improvement():
    val_losses = iter([1.0, 0.99, 0.98, 0.97])
    history = run_epochs(
        lambda e, h, b: {"loss": 1.0}, lambda: {"loss": next(val_losses)}, dict, print,
        epochs=4, n_batches=1, patience=2, min_delta=0.05, restore_best=False, progress=False,
    )  # fmt: skip
    assert len(history.epochs) == 3 and history.best_epoch == 1


def test_fit_stops_on_a_non_finite_loss_before_stepping():
    x, y = _blobs()
    x[40] = np.nan  # in the second batch of 32
    model, loss_fn, optimizer = _setup()
    before = model.state_dict()
    loader = mininn.DataLoader(x, y, batch_size=32)
    with pytest.raises(FloatingPointError, match=r"loss became nan at epoch 1, batch 2; lower"):
        fit(model, loss_fn, optimizer, loader, epochs=2, progress=False)
    after = model.state_dict()
    assert any(not np.array_equal(before[k], after[k]) for k in before)  # batch 1 stepped
    assert all(np.isfinite(v).all() for v in after.values())  # batch 2 did not


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epochs": 0}, "epochs must be a positive integer, got 0"),
        ({"epochs": 2, "patience": 1}, "patience.*needs val_data"),
        ({"epochs": 1, "metric": "top5"}, "unknown metric 'top5'"),
    ],
    ids=["zero-epochs", "patience-without-val", "unknown-metric"],
)
def test_fit_errors(kwargs, match):
    x, y = _blobs()
    model, loss_fn, optimizer = _setup()
    with pytest.raises(ValueError, match=match):
        fit(model, loss_fn, optimizer, mininn.DataLoader(x, y, batch_size=32), progress=False,
            **kwargs)  # fmt: skip


# -- schedulers, clipping ----------------------------------------------------------------


def _float64_setup(seed=0):
    mininn.manual_seed(seed)
    model = make_mlp(2, [8], 2, batch_norm=True, dtype="float64")
    return model, mininn.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def _hand_written_loop(model, optimizer, scheduler, loader, *, epochs, clip, interval, val):
    """The PyTorch user's loop, written out: clip between backward and step, a per-batch
    scheduler after each optimizer step, a per-epoch one after validation."""
    loss_fn, losses = mininn.CrossEntropyLoss(), []
    for _ in range(epochs):
        model.train()
        for x_batch, y_batch in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(x_batch), y_batch)
            model.backward(loss_fn.backward())
            if clip is not None:
                mininn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            if interval == "batch":
                scheduler.step()
            losses.append(float(loss))
        val_loss = evaluate(model, loss_fn, *val)["loss"]
        if interval == "epoch" and isinstance(scheduler, ReduceLROnPlateau):
            scheduler.step(val_loss)
        elif interval == "epoch":
            scheduler.step()
    return losses


SCHEDULES = {
    "onecycle": (lambda opt: OneCycleLR(opt, max_lr=0.5, total_steps=4 * 3), "batch"),
    "step": (lambda opt: StepLR(opt, step_size=1, gamma=0.5), "epoch"),
    # a gain under 90 % counts as a plateau, so that the rate does drop
    "plateau": (lambda opt: ReduceLROnPlateau(opt, factor=0.5, patience=0, threshold=0.9),
                "epoch"),
    "cosine-per-batch": (lambda opt: CosineAnnealingLR(opt, T_max=12), "batch"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_fit_equals_the_hand_written_pytorch_loop(name):
    x, y = _blobs()
    x = x.astype(np.float64)
    make, interval = SCHEDULES[name]
    runs = []
    for by_hand in (False, True):
        model, optimizer = _float64_setup()
        scheduler = make(optimizer)
        loader = mininn.DataLoader(x, y, batch_size=32, shuffle=True, seed=0)
        if by_hand:
            losses = _hand_written_loop(model, optimizer, scheduler, loader, epochs=4, clip=0.5,
                                        interval=interval, val=(x, y))  # fmt: skip
        else:
            history = fit(model, mininn.CrossEntropyLoss(), optimizer, loader, epochs=4,
                          val_data=(x, y), scheduler=scheduler, clip_grad_norm=0.5,
                          scheduler_interval="batch" if name == "cosine-per-batch" else None,
                          progress=False)  # fmt: skip
            losses = history.step_losses
        runs.append((losses, model.state_dict(), scheduler.get_last_lr()))
    (fit_losses, fit_state, fit_lr), (hand_losses, hand_state, hand_lr) = runs
    assert fit_losses == hand_losses
    assert fit_lr == hand_lr != [0.1]  # the schedule moved the rate
    for key in fit_state:
        np.testing.assert_array_equal(fit_state[key], hand_state[key], err_msg=key)


def test_clipping_changes_the_run():
    x, y = _blobs()
    results = []
    for clip in (None, 0.05):
        model, optimizer = _float64_setup()
        history = fit(model, mininn.CrossEntropyLoss(), optimizer,
                      mininn.DataLoader(x.astype(np.float64), y, batch_size=32), epochs=2,
                      clip_grad_norm=clip, progress=False)  # fmt: skip
        results.append(history.step_losses)
    assert results[0][0] == results[1][0] and results[0][1:] != results[1][1:]


def test_history_lr_is_the_rate_of_each_epochs_first_step():
    x, y = _blobs()
    model, optimizer = _float64_setup()
    history = fit(model, mininn.CrossEntropyLoss(), optimizer,
                  mininn.DataLoader(x.astype(np.float64), y, batch_size=32), epochs=3,
                  scheduler=StepLR(optimizer, step_size=1, gamma=0.5), progress=False)  # fmt: skip
    assert history.column("lr") == [0.1, 0.05, 0.025]


class _Spy:
    """A scheduler that records its steps; ``per_batch`` as given (absent when None)."""

    def __init__(self, per_batch=None):
        if per_batch is not None:
            self.per_batch = per_batch
        self.steps = []

    def step(self):
        self.steps.append(None)


class _PlateauSpy(_Spy):
    def step(self, metrics):
        self.steps.append(metrics)


# PyTorch's OneCycleLR has no per_batch attribute: fit knows it by its name.
_TorchOneCycleSpy = type("OneCycleLR", (_Spy,), {})


@pytest.mark.parametrize(
    ("scheduler", "interval", "steps"),
    [
        (lambda: _Spy(per_batch=True), None, 3 * 3),
        (lambda: _Spy(per_batch=False), None, 3),
        (lambda: _Spy(), None, 3),
        (lambda: _TorchOneCycleSpy(), None, 3 * 3),
        (lambda: _Spy(per_batch=True), "epoch", 3),
        (lambda: _Spy(per_batch=False), "batch", 3 * 3),
    ],
    ids=["per-batch", "per-epoch", "no-attribute", "torch-onecycle-by-name", "override-epoch",
         "override-batch"],
)  # fmt: skip
def test_fit_decides_when_the_scheduler_steps(scheduler, interval, steps):
    x, y = _blobs()
    model, loss_fn, optimizer = _setup()
    spy = scheduler()
    fit(model, loss_fn, optimizer, mininn.DataLoader(x, y, batch_size=32), epochs=3,
        scheduler=spy, scheduler_interval=interval, progress=False)  # fmt: skip
    assert len(spy.steps) == steps


def test_a_plateau_scheduler_steps_on_each_epochs_val_loss():
    x, y = _blobs()
    model, loss_fn, optimizer = _setup()
    spy = _PlateauSpy()
    history = fit(model, loss_fn, optimizer, mininn.DataLoader(x, y, batch_size=32), epochs=3,
                  val_data=(x, y), scheduler=spy, progress=False)  # fmt: skip
    assert spy.steps == history.column("val_loss")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"scheduler_interval": "step", "scheduler": _Spy()}, ValueError,
         "scheduler_interval must be 'epoch', 'batch' or None.*got 'step'"),
        ({"scheduler_interval": "epoch"}, ValueError,
         "scheduler_interval='epoch' was given without a scheduler"),
        ({"scheduler": _PlateauSpy()}, ValueError,
         r"_PlateauSpy steps on the validation loss; pass val_data=\(x_val, y_val\)"),
        ({"scheduler": _PlateauSpy(), "scheduler_interval": "batch", "val_data": (None, None)},
         ValueError, "cannot step per batch"),
        ({"clip_grad_norm": 0}, ValueError, "clip_grad_norm must be a positive finite.*got 0"),
        ({"clip_grad_norm": -1.0}, ValueError, "got -1.0"),
        ({"clip_grad_norm": float("inf")}, ValueError, "got inf"),
        ({"clip_grad_norm": float("nan")}, ValueError, "got nan"),
        ({"clip_grad_norm": "1"}, ValueError, "got '1'"),
        ({"clip_grad_norm": True}, ValueError, "got True"),
        ({"checkpoint": 3}, TypeError, "checkpoint must be a file path.*got int"),
    ],
    ids=["interval-name", "interval-without-scheduler", "plateau-without-val",
         "plateau-per-batch", "clip-0", "clip-negative", "clip-inf", "clip-nan", "clip-str",
         "clip-bool", "checkpoint-type"],
)  # fmt: skip
def test_fit_scheduler_clip_and_checkpoint_errors(kwargs, error, match):
    x, y = _blobs()
    model, loss_fn, optimizer = _setup()
    with pytest.raises(error, match=match):
        fit(model, loss_fn, optimizer, mininn.DataLoader(x, y, batch_size=32), epochs=1,
            progress=False, **kwargs)  # fmt: skip


def test_a_scheduler_of_another_optimizer_is_refused():
    x, y = _blobs()
    model, loss_fn, optimizer = _setup()
    other = mininn.optim.SGD(make_mlp(2, [8], 2).parameters(), lr=0.1)
    with pytest.raises(ValueError, match="scheduler sets the learning rate of another optimizer"):
        fit(model, loss_fn, optimizer, mininn.DataLoader(x, y, batch_size=32), epochs=1,
            scheduler=StepLR(other, step_size=1), progress=False)  # fmt: skip
