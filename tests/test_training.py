"""fit / run_epochs / evaluate: the loop's bookkeeping, early stopping and its guards."""

from __future__ import annotations

import numpy as np
import pytest

import mininn
from mininn.models import make_mlp
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
        "epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds"
    }  # fmt: skip
    assert len(history.step_losses) == 10 * len(loader)
    # the epoch's train_loss is the sample-weighted mean of its steps (equal batches here)
    assert history.epochs[0]["train_loss"] == pytest.approx(np.mean(history.step_losses[:3]))
    # the reported val_loss is the loss of the model as it stands after the last epoch
    assert history.epochs[-1]["val_loss"] == pytest.approx(loss_fn(predict(model, x), y))
    assert history.epochs[-1]["val_accuracy"] > 0.9  # it learned (chance: 0.5)


def test_evaluate_does_not_depend_on_batch_size():
    x, y = _blobs(n=101)
    model, loss_fn, _ = _setup()
    small = evaluate(model, loss_fn, x, y, metric="accuracy", batch_size=7)
    whole = evaluate(model, loss_fn, x, y, metric="accuracy", batch_size=1000)
    assert small["loss"] == pytest.approx(whole["loss"], rel=1e-6)
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
