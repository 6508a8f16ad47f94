"""mininn.interop: the PyTorch twin of a model, its optimizer, its loss and its training loop.

The reference is PyTorch itself: a twin built by ``to_torch`` must compute the
same outputs, and, trained on the same batches, the same loss at every step.
"""

from __future__ import annotations

import itertools
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import mininn  # noqa: E402
from mininn import optim  # noqa: E402
from mininn.activations import ReLU, Softmax, Tanh  # noqa: E402
from mininn.dataloader import DataLoader  # noqa: E402
from mininn.interop import (  # noqa: E402
    fit_torch,
    from_torch,
    loss_to_torch,
    optimizer_to_torch,
    predict_torch,
    to_torch,
)
from mininn.layers import BatchNorm1d, Dropout, Linear  # noqa: E402
from mininn.losses import CrossEntropyLoss, MSELoss  # noqa: E402
from mininn.models import make_mlp  # noqa: E402
from mininn.module import Module, Sequential  # noqa: E402
from mininn.optim.lr_scheduler import OneCycleLR, ReduceLROnPlateau, StepLR  # noqa: E402
from mininn.training import fit  # noqa: E402

DTYPES = [pytest.param(np.float64, id="float64"), pytest.param(np.float32, id="float32")]
EPS32 = float(np.finfo(np.float32).eps)  # 2**-23
# Per-step loss agreement of the twins. A step's loss carries the rounding of every
# step before it: each step rounds sums of at most 32 terms (the batch, in dL/dW; the
# layers are narrower), off by <~ 32 eps relative, and these add up over the <= 30
# steps compared: in float32 30 * 32 * eps32 = 1.1e-4. float64 is held to 1e-9, the
# bound for an exact twin (its budget, 30 * 32 * 2**-52 = 2e-13, is far below).
STEP_RTOL = {np.float64: 1e-9, np.float32: 30 * 32 * EPS32}


def acceptance_net(dtype) -> Sequential:
    """The issue-2 network: Linear, BatchNorm1d, ReLU, Linear, Tanh, Linear."""
    net = Sequential(Linear(5, 8), BatchNorm1d(8), ReLU(), Linear(8, 6), Tanh(), Linear(6, 3))
    return net.to(dtype)


def torch_acceptance_net(dtype) -> torch.nn.Module:
    nn = torch.nn
    net = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 6), nn.Tanh(),
                        nn.Linear(6, 3))  # fmt: skip
    return net.to(torch.float64 if dtype == np.float64 else torch.float32)


def classification_data(n=96, features=5, classes=3, dtype=np.float64, seed=7):
    """Learnable data: the class is the argmax of the first ``classes`` features."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype(dtype)
    y = x[:, :classes].argmax(axis=1).astype(np.int64)
    return x, y


# ------------------------------------------------------------------ to_torch / from_torch


@pytest.mark.parametrize("dtype", DTYPES)
def test_to_torch_copies_keys_shapes_values_and_dtype(dtype):
    model = acceptance_net(dtype)
    twin = to_torch(model)
    ours, theirs = model.state_dict(), twin.state_dict()
    assert list(ours) == list(theirs)
    for key, value in ours.items():
        copied = theirs[key].numpy()
        assert copied.shape == value.shape, key
        assert copied.dtype == value.dtype, key
        np.testing.assert_array_equal(copied, value, err_msg=key)


@pytest.mark.parametrize("dtype", DTYPES)
def test_state_dict_keys_and_shapes_equal_a_native_torch_model(dtype):
    ours = acceptance_net(dtype).state_dict()
    native = torch_acceptance_net(dtype).state_dict()
    assert list(ours) == list(native)
    assert [v.shape for v in ours.values()] == [tuple(v.shape) for v in native.values()]


def test_twin_owns_its_weights():
    model = acceptance_net(np.float64)
    twin = to_torch(model)
    with torch.no_grad():
        twin[0].weight.add_(1.0)
    assert not np.allclose(model[0].weight.data, twin[0].weight.detach().numpy())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_to_torch_outputs_equal(dtype, training, assert_close):
    model = Sequential(Linear(5, 8), BatchNorm1d(8), ReLU(), Linear(8, 4), Softmax()).to(dtype)
    model.train(training)
    twin = to_torch(model)
    assert twin.training is training
    x = np.random.default_rng(3).normal(size=(6, 5)).astype(dtype)
    with torch.no_grad():
        expected = twin(torch.from_numpy(x)).numpy()
    assert_close(model(x), expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_from_torch_round_trip(dtype, assert_close):
    native = torch_acceptance_net(dtype)
    with torch.no_grad():  # non-trivial running statistics
        native(torch.randn(16, 5, dtype=native[0].weight.dtype) * 3)
    native.eval()
    model = from_torch(native)
    assert model.training is False
    theirs = native.state_dict()
    ours = model.state_dict()
    assert list(ours) == list(theirs)
    for key, value in ours.items():
        assert value.dtype == theirs[key].numpy().dtype, key
        np.testing.assert_array_equal(value, theirs[key].numpy(), err_msg=key)
    back = to_torch(model).state_dict()
    assert all(torch.equal(back[key], theirs[key]) for key in theirs)
    x = np.random.default_rng(4).normal(size=(5, 5)).astype(dtype)
    assert_close(model(x), native(torch.from_numpy(x)).detach().numpy())


def test_from_torch_draws_nothing_from_the_package_generator():
    native = torch_acceptance_net(np.float32)
    mininn.manual_seed(5)
    from_torch(native)
    after = mininn.default_rng().random()
    mininn.manual_seed(5)
    assert mininn.default_rng().random() == after


def test_to_torch_maps_dropout_p():
    twin = to_torch(Sequential(Linear(2, 2), Dropout(0.3)))
    assert isinstance(twin[1], torch.nn.Dropout) and twin[1].p == 0.3


class Custom(Module):
    def forward(self, x):
        return x


def test_to_torch_unknown_layer_raises():
    with pytest.raises(TypeError, match="to_torch: no PyTorch equivalent known for Custom"):
        to_torch(Sequential(Linear(2, 2), Custom()))


def test_from_torch_unknown_layer_raises():
    with pytest.raises(TypeError, match="from_torch: no mininn equivalent known for GELU"):
        from_torch(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.GELU()))


def test_missing_torch_gives_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    with pytest.raises(ImportError, match=r"pip install torch==2\.13\.0"):
        to_torch(Linear(2, 2))


# ------------------------------------------------------------------ optimizer and loss twins


def train_both(model, make_optimizer, steps, dtype, batch=16):
    """Train ``model`` and its twin on the same batches; return both per-step losses."""
    twin = to_torch(model)
    opt = make_optimizer(model.parameters())
    twin_opt = optimizer_to_torch(opt, twin.parameters())
    loss_fn = CrossEntropyLoss()
    twin_loss_fn = loss_to_torch(loss_fn)
    x, y = classification_data(n=batch * steps, dtype=dtype)
    ours, theirs = [], []
    for start in range(0, len(x), batch):
        xb, yb = x[start : start + batch], y[start : start + batch]
        opt.zero_grad()
        loss = loss_fn(model(xb), yb)
        model.backward(loss_fn.backward())
        opt.step()
        ours.append(loss)
        twin_opt.zero_grad()
        twin_loss = twin_loss_fn(twin(torch.from_numpy(xb)), torch.from_numpy(yb))
        twin_loss.backward()
        twin_opt.step()
        theirs.append(twin_loss.item())
    return np.array(ours), np.array(theirs), model, twin


@pytest.mark.parametrize("dtype", DTYPES)
def test_acceptance_adam_30_steps_equal_to_pytorch(dtype):
    model = acceptance_net(dtype)
    ours, theirs, model, twin = train_both(
        model, lambda p: optim.Adam(p, lr=0.01, weight_decay=0.001), 30, dtype
    )
    np.testing.assert_allclose(ours, theirs, rtol=STEP_RTOL[dtype], atol=0)
    assert ours[-1] < ours[0]  # it trained
    # The bias of a Linear followed by BatchNorm1d gets a gradient of pure rounding
    # noise (BatchNorm subtracts it again), which Adam scales up to steps of O(lr):
    # that bias, and the running mean that contains it, differ between any two
    # implementations. Everything else is the same network.
    noise = {"0.bias", "1.running_mean"}
    # The weights are O(1), so their rounding is absolute as well as relative: in
    # float32 both tolerances are the loss's budget; float64 keeps 1e-7 relative.
    rtol, atol = {np.float64: (1e-7, 1e-11), np.float32: (STEP_RTOL[dtype],) * 2}[dtype]
    final = twin.state_dict()
    for key, value in model.state_dict().items():
        if key not in noise:
            np.testing.assert_allclose(value, final[key].numpy(), rtol=rtol, atol=atol,
                                       err_msg=key)  # fmt: skip


OPTIMIZERS = {
    "sgd-nesterov": lambda p: optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
    "sgd-dampening": lambda p: optim.SGD(p, lr=0.05, momentum=0.5, dampening=0.3),
    "rmsprop": lambda p: optim.RMSprop(p, lr=0.005, momentum=0.5, weight_decay=0.01),
    "rmsprop-centered": lambda p: optim.RMSprop(p, lr=0.005, centered=True),
    "adamw-amsgrad": lambda p: optim.AdamW(p, lr=0.01, amsgrad=True),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("make_optimizer", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_optimizer_twins_give_equal_losses(make_optimizer, dtype):
    ours, theirs, _, _ = train_both(acceptance_net(dtype), make_optimizer, 8, dtype)
    np.testing.assert_allclose(ours, theirs, rtol=STEP_RTOL[dtype], atol=0)


def test_optimizer_to_torch_copies_hyperparameters():
    layer = Linear(3, 2)
    opt = optim.RMSprop(layer.parameters(), lr=0.02, alpha=0.9, eps=1e-6, momentum=0.3)
    group = optimizer_to_torch(opt, to_torch(layer).parameters()).param_groups[0]
    assert (group["lr"], group["alpha"], group["eps"], group["momentum"]) == (0.02, 0.9, 1e-6, 0.3)


def test_optimizer_to_torch_two_groups_raises():
    layer = Linear(3, 2)
    opt = optim.SGD([{"params": [layer.weight]}, {"params": [layer.bias]}], lr=0.1)
    with pytest.raises(ValueError, match="one parameter group, got 2"):
        optimizer_to_torch(opt, to_torch(layer).parameters())


def test_optimizer_to_torch_wrong_parameters_raises():
    opt = optim.SGD(Linear(3, 2).parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"shapes \[\(2, 3\), \(2,\)\].*got \[\(4, 3\), \(4,\)\]"):
        optimizer_to_torch(opt, torch.nn.Linear(3, 4).parameters())


def test_loss_to_torch_keeps_the_reduction():
    twin = loss_to_torch(MSELoss(reduction="sum"))
    assert isinstance(twin, torch.nn.MSELoss) and twin.reduction == "sum"


def test_loss_to_torch_rejects_a_non_loss():
    with pytest.raises(
        TypeError, match=r"loss_to_torch: expected one of mininn\.losses' classes, got ReLU"
    ):
        loss_to_torch(ReLU())


# ------------------------------------------------------------------ predict_torch / fit_torch


def test_predict_torch_evaluates_in_eval_mode_and_restores_it(assert_close):
    model = acceptance_net(np.float64)
    model(np.random.default_rng(0).normal(size=(8, 5)))  # move the running statistics
    twin = to_torch(model)
    x = classification_data(n=2500)[0]
    out = predict_torch(twin, x, batch_size=1000)
    assert twin.training is True
    assert_close(out, mininn.training.predict(model, x))


def pre_batchnorm_biases(model: Sequential) -> list[str]:
    """The state_dict keys of the biases of Linear layers that feed a BatchNorm1d."""
    return [f"{i}.bias" for i, (layer, after) in enumerate(itertools.pairwise(model))
            if isinstance(layer, Linear) and isinstance(after, BatchNorm1d)]  # fmt: skip


def fit_both(dtype, *, dropout=0.0, patience=None, epochs=3, optimizer="adam",
             freeze_pre_batchnorm_biases=False):  # fmt: skip
    x, y = classification_data(n=120, features=6, classes=4, dtype=dtype)
    val = classification_data(n=40, features=6, classes=4, dtype=dtype, seed=8)
    mininn.manual_seed(11)
    model = make_mlp(6, [10, 8], 4, batch_norm=True, dropout=dropout, dtype=dtype)
    twin = to_torch(model)
    if freeze_pre_batchnorm_biases:  # in both: the optimizers skip them
        frozen = pre_batchnorm_biases(model)
        for (name, param), twin_param in zip(model.named_parameters(), twin.parameters(),
                                             strict=True):  # fmt: skip
            if name in frozen:
                param.requires_grad = False
                twin_param.requires_grad_(False)
    make = {"adam": lambda p: optim.Adam(p, lr=0.01), "sgd": lambda p: optim.SGD(p, lr=0.5)}
    opt = make[optimizer](model.parameters())
    twin_opt = optimizer_to_torch(opt, twin.parameters())
    kwargs = dict(epochs=epochs, val_data=val, metric="accuracy", patience=patience,
                  progress=False)  # fmt: skip
    ours = fit(model, CrossEntropyLoss(), opt, DataLoader(x, y, batch_size=32, shuffle=True,
               seed=3), **kwargs)  # fmt: skip
    theirs = fit_torch(twin, torch.nn.CrossEntropyLoss(), twin_opt,
                       DataLoader(x, y, batch_size=32, shuffle=True, seed=3), **kwargs)  # fmt: skip
    return ours, theirs, model, twin


@pytest.mark.parametrize("dtype", DTYPES)
def test_fit_torch_history_equals_fit(dtype):
    # A bias that feeds BatchNorm1d trains on rounding noise only (see the acceptance
    # test) and, through BatchNorm's running mean, moves the eval-mode outputs by O(lr),
    # which no rounding bound covers; frozen here (as bias=False would), every
    # difference left between the twins is rounding.
    ours, theirs, _, _ = fit_both(dtype, freeze_pre_batchnorm_biases=True)
    rtol = STEP_RTOL[dtype]
    assert len(ours.step_losses) == len(theirs.step_losses) == 3 * 4
    np.testing.assert_allclose(ours.step_losses, theirs.step_losses, rtol=rtol, atol=0)
    assert [list(row) for row in ours.epochs] == [list(row) for row in theirs.epochs]
    for column in ("train_loss", "val_loss"):
        np.testing.assert_allclose(ours.column(column), theirs.column(column), rtol=rtol)
    # Accuracies are counts of argmax hits. float32 rounding differs by framework and by
    # BLAS kernel (CPU), so a prediction near a tie may flip: allow one flip per epoch
    # (1/120 of the train accuracy, 1/40 of the val accuracy), compared as counts since
    # 0.625 - 0.6 > 1/40 in floating point. float64 has no ties that close: equal.
    flips = {np.float64: 0, np.float32: 1}[dtype]
    for column, n in (("train_accuracy", 120), ("val_accuracy", 40)):
        ours_hits = np.rint(np.multiply(ours.column(column), n)).astype(int)
        theirs_hits = np.rint(np.multiply(theirs.column(column), n)).astype(int)
        assert np.abs(ours_hits - theirs_hits).max() <= flips, (column, ours_hits, theirs_hits)
    # The best epoch is an argmin over val losses that float32 rounding can reorder.
    if dtype == np.float64:
        assert ours.best_epoch == theirs.best_epoch


def test_fit_torch_early_stopping_matches_fit():
    # lr=0.5 SGD overfits 120 random labels: the val loss rises and both stop early.
    ours, theirs, model, twin = fit_both(np.float64, patience=1, epochs=30, optimizer="sgd")
    assert ours.stopped_early and theirs.stopped_early
    assert len(ours.epochs) == len(theirs.epochs) < 30
    assert ours.best_epoch == theirs.best_epoch
    final = twin.state_dict()
    for key, value in model.state_dict().items():  # both restored the best epoch
        np.testing.assert_allclose(value, final[key].numpy(), rtol=1e-9, atol=1e-12, err_msg=key)


def test_fit_torch_with_torch_dropout_differs_only_statistically():
    ours, theirs, _, _ = fit_both(np.float64, dropout=0.3)
    # Different masks: the first step already differs, but the losses stay comparable.
    assert ours.step_losses[0] != theirs.step_losses[0]
    np.testing.assert_allclose(ours.step_losses, theirs.step_losses, rtol=0.5)


def _recipe_runs(dropout_source, dtype=np.float64, epochs=4):
    """The pipeline's default recipe on both frameworks: BatchNorm, Dropout, AdamW,
    OneCycleLR (PyTorch's own class on the twin), label smoothing, clipping, RandomCrop
    and RandomHorizontalFlip through the DataLoader. 25 batches an epoch."""
    from mininn.transforms import Compose, RandomCrop, RandomHorizontalFlip

    x, y = classification_data(n=400, features=64, classes=10, dtype=dtype)
    val = classification_data(n=60, features=64, classes=10, dtype=dtype, seed=8)
    mininn.manual_seed(5)
    model = make_mlp(64, [32, 16], 10, batch_norm=True, dropout=0.3, dtype=dtype)
    twin = to_torch(model, dropout=dropout_source)

    def loader():
        augment = Compose([RandomCrop(8, padding=1, image_shape=(8, 8), seed=21),
                           RandomHorizontalFlip(0.5, image_shape=(8, 8), seed=22)])  # fmt: skip
        return DataLoader(x, y, batch_size=16, shuffle=True, seed=3, transform=augment)

    opt = optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    twin_opt = torch.optim.AdamW(twin.parameters(), lr=3e-3, weight_decay=0.01)
    scheduler = OneCycleLR(opt, max_lr=3e-3, epochs=epochs, steps_per_epoch=25)
    twin_scheduler = torch.optim.lr_scheduler.OneCycleLR(twin_opt, max_lr=3e-3, epochs=epochs,
                                                         steps_per_epoch=25)  # fmt: skip
    kwargs = dict(epochs=epochs, val_data=val, metric="accuracy", clip_grad_norm=1.0,
                  progress=False)  # fmt: skip
    theirs = fit_torch(twin, torch.nn.CrossEntropyLoss(label_smoothing=0.1), twin_opt, loader(),
                       scheduler=twin_scheduler, **kwargs)  # fmt: skip
    ours = fit(model, CrossEntropyLoss(label_smoothing=0.1), opt, loader(), scheduler=scheduler,
               **kwargs)  # fmt: skip
    return ours, theirs, model, twin


def test_exact_twin_with_dropout_and_the_whole_recipe_float64():
    ours, theirs, model, twin = _recipe_runs("mininn")
    assert len(ours.step_losses) == len(theirs.step_losses) == 100
    np.testing.assert_allclose(ours.step_losses, theirs.step_losses, rtol=1e-9, atol=0)
    np.testing.assert_allclose(ours.column("val_loss"), theirs.column("val_loss"), rtol=1e-9)
    final = twin.state_dict()
    for key, value in model.state_dict().items():
        np.testing.assert_allclose(value, final[key].numpy(), rtol=1e-7, atol=1e-9, err_msg=key)


def test_exact_twin_needs_the_shared_masks():
    # The same recipe with PyTorch's own Dropout: the losses part at the first step.
    ours, theirs, _, _ = _recipe_runs("torch", epochs=1)
    assert abs(ours.step_losses[0] - theirs.step_losses[0]) > 1e-6 * abs(ours.step_losses[0])


def test_twin_dropout_masks_equal_mininn_masks():
    x = np.random.default_rng(0).normal(size=(50, 12))
    mininn.manual_seed(3)
    model = Sequential(Linear(12, 12, dtype="float64"), Dropout(0.4),
                       Linear(12, 12, dtype="float64"), Dropout(0.2, rng=7))  # fmt: skip
    twin = to_torch(model, dropout="mininn")
    for _ in range(3):  # the stream continues in the same order, call after call
        ours, theirs = model(x), twin(torch.from_numpy(x)).detach().numpy()
        np.testing.assert_array_equal(ours == 0, theirs == 0)  # the same zeros
        np.testing.assert_allclose(theirs, ours, rtol=1e-12, atol=1e-15)
    twin.eval()
    np.testing.assert_allclose(twin(torch.from_numpy(x)).detach().numpy(), model.eval()(x),
                               rtol=1e-12, atol=1e-15)  # fmt: skip


def test_to_torch_bad_dropout_source_raises():
    with pytest.raises(ValueError, match="dropout must be 'torch' or 'mininn'"):
        to_torch(Dropout(0.5), dropout="numpy")


def test_fit_torch_nan_loss_raises():
    x, y = classification_data(n=32)
    x[3, 0] = np.nan
    twin = torch.nn.Linear(5, 3).double()
    opt = torch.optim.SGD(twin.parameters(), lr=0.1)
    loader = DataLoader(x, y, batch_size=16)
    with pytest.raises(FloatingPointError, match="loss became nan at epoch 1, batch 1"):
        fit_torch(twin, torch.nn.CrossEntropyLoss(), opt, loader, epochs=1, progress=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"epochs": 0}, "epochs must be a positive integer, got 0", id="epochs"),
        pytest.param({"epochs": 2, "patience": 1}, "patience.*needs val_data", id="patience"),
        pytest.param({"epochs": 1, "clip_grad_norm": 0}, "fit_torch: clip_grad_norm must be a "
                     "positive finite number.*got 0", id="clip"),
        pytest.param({"epochs": 1, "scheduler_interval": "epoch"}, "fit_torch: scheduler_interval"
                     "='epoch' was given without a scheduler", id="interval"),
        pytest.param({"epochs": 1, "scheduler": "plateau"}, "fit_torch: ReduceLROnPlateau steps "
                     r"on the validation loss; pass val_data=\(x_val, y_val\)", id="plateau"),
        pytest.param({"epochs": 1, "scheduler": "other-optimizer"}, "fit_torch: the scheduler "
                     "sets the learning rate of another optimizer", id="other-optimizer"),
    ],
)  # fmt: skip
def test_fit_torch_bad_arguments_raise(kwargs, message):
    x, y = classification_data(n=16)
    twin = torch.nn.Linear(5, 3).double()
    opt = torch.optim.SGD(twin.parameters(), lr=0.1)
    schedulers = {
        "plateau": lambda: torch.optim.lr_scheduler.ReduceLROnPlateau(opt),
        "other-optimizer": lambda: torch.optim.lr_scheduler.StepLR(
            torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.1), step_size=1),
    }  # fmt: skip
    if "scheduler" in kwargs:
        kwargs["scheduler"] = schedulers[kwargs["scheduler"]]()
    with pytest.raises(ValueError, match=message):
        fit_torch(twin, torch.nn.CrossEntropyLoss(), opt, DataLoader(x, y), **kwargs)


# ------------------------------------------------------- fit_torch: schedulers, clipping, resume

SCHEDULES = {
    "onecycle": lambda opt, steps: OneCycleLR(opt, max_lr=0.05, total_steps=steps),
    "plateau": lambda opt, steps: ReduceLROnPlateau(opt, factor=0.5, patience=0, threshold=0.5),
    "step": lambda opt, steps: StepLR(opt, step_size=1, gamma=0.7),
}


def scheduled_setup(schedule, dtype=np.float64, epochs=3):
    """A mininn model, optimizer and scheduler, and their PyTorch twins (the optimizer
    converted before training; fit_torch converts the scheduler itself)."""
    mininn.manual_seed(11)
    model = make_mlp(6, [10, 8], 4, batch_norm=True, dtype=dtype)
    twin = to_torch(model)
    opt = optim.Adam(model.parameters(), lr=0.01)
    twin_opt = optimizer_to_torch(opt, twin.parameters())
    scheduler = SCHEDULES[schedule](opt, epochs * 4)  # 120 samples, batches of 32
    return model, opt, scheduler, twin, twin_opt


@pytest.mark.parametrize("schedule", [*SCHEDULES, "torch-onecycle"])
def test_fit_torch_equals_fit_with_a_scheduler_clipping_and_label_smoothing(schedule):
    x, y = classification_data(n=120, features=6, classes=4)
    val = classification_data(n=40, features=6, classes=4, seed=8)
    model, opt, scheduler, twin, twin_opt = scheduled_setup(schedule.removeprefix("torch-"))
    twin_scheduler = scheduler  # a mininn scheduler: fit_torch converts it
    if schedule == "torch-onecycle":  # or PyTorch's own, stepped per batch by its name
        twin_scheduler = torch.optim.lr_scheduler.OneCycleLR(twin_opt, max_lr=0.05,
                                                             total_steps=12)  # fmt: skip
    kwargs = dict(epochs=3, val_data=val, metric="accuracy", clip_grad_norm=0.5, progress=False)
    # PyTorch first: fit_torch converts the scheduler as it stands, before fit steps it.
    theirs = fit_torch(twin, torch.nn.CrossEntropyLoss(label_smoothing=0.1), twin_opt,
                       DataLoader(x, y, batch_size=32, shuffle=True, seed=3),
                       scheduler=twin_scheduler, **kwargs)  # fmt: skip
    ours = fit(model, CrossEntropyLoss(label_smoothing=0.1), opt,
               DataLoader(x, y, batch_size=32, shuffle=True, seed=3), scheduler=scheduler,
               **kwargs)  # fmt: skip
    assert len(ours.step_losses) == len(theirs.step_losses) == 3 * 4
    np.testing.assert_allclose(ours.step_losses, theirs.step_losses, rtol=1e-9, atol=0)
    assert [list(row) for row in ours.epochs] == [list(row) for row in theirs.epochs]
    np.testing.assert_allclose(ours.column("lr"), theirs.column("lr"), rtol=1e-12)
    np.testing.assert_allclose(ours.column("val_loss"), theirs.column("val_loss"), rtol=1e-9)
    assert len(set(ours.column("lr"))) > 1 or opt.param_groups[0]["lr"] != 0.01  # it moved
    np.testing.assert_allclose(opt.param_groups[0]["lr"], twin_opt.param_groups[0]["lr"],
                               rtol=1e-12)  # fmt: skip
    # A bias that feeds BatchNorm1d has a zero gradient plus rounding noise (<~ 32 terms
    # x 2**-52 x O(1) < 1e-14), which Adam divides by its eps (1e-8): after 12 steps at
    # lr <= 0.05 it holds noise below 12 * 0.05 * 1e-14 / 1e-8 = 6e-7, with no common
    # digits in the two runs. The rest must agree.
    noise = pre_batchnorm_biases(model)
    final = twin.state_dict()
    for key, value in model.state_dict().items():
        if key in noise:
            assert max(np.abs(value).max(), final[key].abs().max().item()) < 6e-7, key
        else:
            np.testing.assert_allclose(value, final[key].numpy(), rtol=1e-8, atol=1e-9,
                                       err_msg=key)  # fmt: skip


def _fit_torch_run(path, *, stop_after=None, weight_decay=0, epochs=4):
    x, y = classification_data(n=120, features=6, classes=4)
    val = classification_data(n=40, features=6, classes=4, seed=8)
    _, _, scheduler, twin, twin_opt = scheduled_setup("onecycle", epochs=4)
    twin_opt.param_groups[0]["weight_decay"] = weight_decay  # another setup, to be refused

    def interrupt(row):
        if row["epoch"] == stop_after:
            raise KeyboardInterrupt

    history = fit_torch(
        twin, torch.nn.CrossEntropyLoss(label_smoothing=0.1), twin_opt,
        DataLoader(x, y, batch_size=32, shuffle=True, seed=3), epochs=epochs, val_data=val,
        patience=3, scheduler=scheduler, clip_grad_norm=0.5, checkpoint=path, progress=False,
        on_epoch_end=interrupt,
    )  # fmt: skip
    return history, twin, twin_opt


def test_fit_torch_resumes_bit_identical(tmp_path):
    expected, twin, twin_opt = _fit_torch_run(tmp_path / "uninterrupted.npz")
    path = tmp_path / "run.npz"
    with pytest.raises(KeyboardInterrupt):
        _fit_torch_run(path, stop_after=2)
    history, resumed, resumed_opt = _fit_torch_run(path)

    def rows(h):
        return [{k: v for k, v in row.items() if k != "seconds"} for row in h.epochs]

    assert rows(history) == rows(expected) and history.step_losses == expected.step_losses
    for key, value in twin.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
    saved, ours = twin_opt.state_dict(), resumed_opt.state_dict()
    assert ours["param_groups"] == saved["param_groups"]
    for index, state in saved["state"].items():
        for name, value in state.items():
            assert torch.equal(ours["state"][index][name], value), (index, name)


def test_fit_torch_refuses_a_checkpoint_of_another_setup(tmp_path):
    path = tmp_path / "run.npz"
    _fit_torch_run(path, epochs=2)
    with pytest.raises(
        ValueError,
        match=r"fit_torch: checkpoint '.*run\.npz' was written by "
        r"another setup \(.*weight_decay: 0 in the file, 0\.01 now.*delete",
    ):
        _fit_torch_run(path, weight_decay=0.01)  # fmt: skip


def test_fit_torch_refuses_a_checkpoint_written_by_fit(tmp_path):
    path = tmp_path / "run.npz"
    x, y = classification_data(n=120, features=6, classes=4)
    model, opt, _, _, _ = scheduled_setup("step")
    fit(model, CrossEntropyLoss(), opt, DataLoader(x, y, batch_size=32), epochs=1,
        checkpoint=path, progress=False)  # fmt: skip
    with pytest.raises(ValueError, match=r"fit_torch: checkpoint .*run\.npz' was written by fit, "
                       r"which trains another framework's model; delete"):  # fmt: skip
        _fit_torch_run(path)
