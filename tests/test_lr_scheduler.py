"""Tests of mininn.optim.lr_scheduler: the learning rates (and OneCycleLR's momentum
and betas) seen by the optimizer at every step against torch.optim.lr_scheduler on the
same construction, the parameters they lead to, state_dict round trips, and every error."""

from collections import Counter

import numpy as np
import pytest

import mininn
from mininn.module import Parameter
from mininn.optim import SGD, lr_scheduler
from mininn.optim.lr_scheduler import (
    CosineAnnealingLR,
    ExponentialLR,
    LinearLR,
    LRScheduler,
    MultiStepLR,
    OneCycleLR,
    ReduceLROnPlateau,
    SequentialLR,
    StepLR,
)

STEPS = 30
SHAPES = [(3, 2), (2,)]
RTOL = 1e-9
# torch warns when its scheduler steps without an optimizer step in between.
TORCH_ORDER_WARNING = "ignore:Detected call of:UserWarning"


def _problem(steps=STEPS, seed=0):
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(shape) for shape in SHAPES]
    grads = [[rng.standard_normal(shape) for shape in SHAPES] for _ in range(steps)]
    return init, grads


def _groups(params):
    # Two groups with their own learning rates: every schedule is per group.
    return [{"params": params[:1]}, {"params": params[1:], "lr": 0.05}]


# Optimizers, built the same way from mininn.optim or torch.optim.
OPTIMIZERS = {
    "SGD-momentum": lambda optim, groups: optim.SGD(groups, lr=0.1, momentum=0.9),
    "Adam": lambda optim, groups: optim.Adam(groups, lr=0.1),
    "AdamW": lambda optim, groups: optim.AdamW(groups, lr=0.1, weight_decay=0.1),
    "RMSprop-momentum": lambda optim, groups: optim.RMSprop(groups, lr=0.1, momentum=0.5),
}

# Schedulers, built the same way from mininn's or torch's lr_scheduler module.
SCHEDULERS = {
    "StepLR": lambda m, opt: m.StepLR(opt, step_size=3, gamma=0.5),
    "StepLR-size1-default-gamma": lambda m, opt: m.StepLR(opt, step_size=1),
    "MultiStepLR": lambda m, opt: m.MultiStepLR(opt, milestones=[2, 5, 9], gamma=0.3),
    "MultiStepLR-milestone0": lambda m, opt: m.MultiStepLR(opt, milestones=[0, 4]),
    "ExponentialLR": lambda m, opt: m.ExponentialLR(opt, gamma=0.9),
    "CosineAnnealingLR": lambda m, opt: m.CosineAnnealingLR(opt, T_max=10),
    "CosineAnnealingLR-eta_min": lambda m, opt: m.CosineAnnealingLR(opt, T_max=7, eta_min=0.01),
    "CosineAnnealingLR-T_max1": lambda m, opt: m.CosineAnnealingLR(opt, T_max=1, eta_min=0.001),
    "LinearLR": lambda m, opt: m.LinearLR(opt),
    "LinearLR-factors": lambda m, opt: m.LinearLR(
        opt, start_factor=0.1, end_factor=0.5, total_iters=4
    ),
    "LinearLR-decay": lambda m, opt: m.LinearLR(
        opt, start_factor=1.0, end_factor=0.2, total_iters=12
    ),
    "SequentialLR-warmup-cosine": lambda m, opt: m.SequentialLR(
        opt,
        [m.LinearLR(opt, start_factor=0.2, total_iters=5), m.CosineAnnealingLR(opt, T_max=20)],
        milestones=[5],
    ),
    "SequentialLR-three": lambda m, opt: m.SequentialLR(
        opt,
        [
            m.StepLR(opt, step_size=2, gamma=0.5),
            m.ExponentialLR(opt, gamma=0.8),
            m.MultiStepLR(opt, milestones=[3, 6], gamma=0.5),
        ],
        milestones=[4, 10],
    ),
    "SequentialLR-one": lambda m, opt: m.SequentialLR(
        opt, [m.ExponentialLR(opt, gamma=0.7)], milestones=[]
    ),
    "OneCycleLR": lambda m, opt: m.OneCycleLR(opt, max_lr=1.0, total_steps=STEPS),
    "OneCycleLR-linear": lambda m, opt: m.OneCycleLR(
        opt, max_lr=0.5, total_steps=STEPS, anneal_strategy="linear"
    ),
    "OneCycleLR-three_phase": lambda m, opt: m.OneCycleLR(
        opt, max_lr=0.5, total_steps=STEPS, three_phase=True, pct_start=0.25
    ),
    "OneCycleLR-epochs-factors": lambda m, opt: m.OneCycleLR(
        opt,
        max_lr=[0.4, 0.8],
        epochs=5,
        steps_per_epoch=6,
        div_factor=10.0,
        final_div_factor=100.0,
        base_momentum=[0.8, 0.7],
        max_momentum=0.9,
    ),
    "OneCycleLR-no-momentum": lambda m, opt: m.OneCycleLR(
        opt, max_lr=0.5, total_steps=STEPS + 5, cycle_momentum=False, three_phase=True
    ),
}
# Every scheduler on SGD and Adam; OneCycleLR on all four (momentum vs betas).
CASES = [
    pytest.param(sched, opt, id=f"{sched}-{opt}")
    for sched in SCHEDULERS
    for opt in (OPTIMIZERS if sched.startswith("OneCycleLR") else ["SGD-momentum", "Adam"])
]


def _hyperparameters(optimizer):
    """lr and momentum (or β1) of each group, as the optimizer will use them."""
    lrs = [float(group["lr"]) for group in optimizer.param_groups]
    momenta = [
        float(group["betas"][0] if "betas" in group else group["momentum"])
        for group in optimizer.param_groups
    ]
    return lrs, momenta


def _train(optimizer, scheduler, params, grads, set_grad, metrics=None):
    """Step the optimizer and then the scheduler; returns the hyperparameters seen by
    every optimizer step and get_last_lr() after every scheduler step."""
    seen, last = [], []
    for step, step_grads in enumerate(grads):
        seen.append(_hyperparameters(optimizer))
        for p, g in zip(params, step_grads, strict=True):
            set_grad(p, g)
        optimizer.step()
        if metrics is None:
            scheduler.step()
        else:
            scheduler.step(metrics[step])
        last.append([float(lr) for lr in scheduler.get_last_lr()])
    return seen, last


def _set_ours(p, g):
    p.grad[...] = g


def _run_ours(make_opt, make_sched, init, grads, metrics=None):
    params = [Parameter(a) for a in init]
    optimizer = make_opt(mininn.optim, _groups(params))
    scheduler = make_sched(lr_scheduler, optimizer)
    seen, last = _train(optimizer, scheduler, params, grads, _set_ours, metrics)
    return seen, last, [p.data for p in params], scheduler


def _run_torch(torch, make_opt, make_sched, init, grads, metrics=None):
    params = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in init]
    optimizer = make_opt(torch.optim, _groups(params))
    scheduler = make_sched(torch.optim.lr_scheduler, optimizer)

    def set_grad(p, g):
        p.grad = torch.from_numpy(g.copy())

    seen, last = _train(optimizer, scheduler, params, grads, set_grad, metrics)
    return seen, last, [p.detach().numpy() for p in params], scheduler


def _assert_same_run(ours, theirs):
    (seen, last, params, _), (tseen, tlast, tparams, _) = ours, theirs
    np.testing.assert_allclose(np.array(seen), np.array(tseen), rtol=RTOL, atol=0)
    np.testing.assert_allclose(np.array(last), np.array(tlast), rtol=RTOL, atol=0)
    for p, q in zip(params, tparams, strict=True):  # the optimizer used those values
        np.testing.assert_allclose(p, q, rtol=1e-10, atol=1e-14)


# -- against PyTorch ----------------------------------------------------------------------


@pytest.mark.parametrize(("scheduler", "optimizer"), CASES)
def test_schedule_and_training_match_torch(scheduler, optimizer):
    torch = pytest.importorskip("torch")
    init, grads = _problem()
    make_opt, make_sched = OPTIMIZERS[optimizer], SCHEDULERS[scheduler]
    ours = _run_ours(make_opt, make_sched, init, grads)
    theirs = _run_torch(torch, make_opt, make_sched, init, grads)
    _assert_same_run(ours, theirs)
    lrs = np.array(ours[0])[:, 0, 0]  # (step, lr or momentum, group)
    assert len(set(lrs.round(12))) > 1, "the schedule should change the learning rate"


@pytest.mark.parametrize(
    "kind", ["SGD-momentum", "Adam", "RMSprop-momentum", "AdamW"], ids=lambda k: k
)
def test_one_cycle_cycles_momentum_or_beta1(kind):
    init, grads = _problem()
    seen, *_ = _run_ours(OPTIMIZERS[kind], SCHEDULERS["OneCycleLR"], init, grads)
    momenta = np.array([momentum for _, momentum in seen])[:, 0]
    assert momenta[0] == pytest.approx(0.95) and momenta.min() == pytest.approx(0.85)
    lrs = np.array([lr for lr, _ in seen])[:, 0]
    assert np.argmax(lrs) == np.argmin(momenta) == 8  # the peak at pct_start · 30 − 1


PLATEAU = {
    "default": {},
    "patience2-cooldown2": {"patience": 2, "cooldown": 2, "factor": 0.5},
    "abs-threshold": {"patience": 1, "threshold": 0.02, "threshold_mode": "abs"},
    "rel-threshold-large": {"patience": 0, "threshold": 0.1},
    "max-mode": {"mode": "max", "patience": 1, "factor": 0.3},
    "max-abs": {"mode": "max", "threshold_mode": "abs", "threshold": 0.01, "patience": 1},
    "min_lr": {"patience": 0, "factor": 0.5, "min_lr": 0.02},
    "min_lr-per-group": {"patience": 0, "factor": 0.5, "min_lr": [0.03, 0.001]},
    "eps": {"patience": 0, "factor": 0.9, "eps": 0.006},
}


def _metrics(mode, steps=STEPS):
    """Improving, then flat, then improving a little, then flat (with small noise)."""
    rng = np.random.default_rng(7)
    curve = np.concatenate(
        [
            np.linspace(1.0, 0.5, 6),
            np.full(8, 0.5),
            0.5 - 0.005 * np.arange(1, 7),
            np.full(10, 0.47),
        ]
    )[:steps] + rng.uniform(0, 1e-3, steps)
    return list(-curve if mode == "max" else curve)


@pytest.mark.parametrize("kwargs", PLATEAU.values(), ids=PLATEAU.keys())
@pytest.mark.parametrize("optimizer", ["SGD-momentum", "Adam"])
def test_reduce_on_plateau_matches_torch(kwargs, optimizer):
    torch = pytest.importorskip("torch")
    init, grads = _problem()
    metrics = _metrics(kwargs.get("mode", "min"))
    metrics[3] = np.float64(metrics[3])  # a NumPy scalar is a metric too

    def make_sched(m, opt):
        return m.ReduceLROnPlateau(opt, **kwargs)

    ours = _run_ours(OPTIMIZERS[optimizer], make_sched, init, grads, metrics)
    theirs = _run_torch(torch, OPTIMIZERS[optimizer], make_sched, init, grads, metrics)
    _assert_same_run(ours, theirs)
    if kwargs != {}:
        assert len({lrs[0] for lrs in ours[1]}) > 1, "the lr should have been reduced"
    for key in ("best", "num_bad_epochs", "cooldown_counter", "last_epoch"):
        assert getattr(ours[3], key) == getattr(theirs[3], key)


CLOSED_FORMS = {
    name: SCHEDULERS[name]
    for name in ["StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR-eta_min",
                 "LinearLR-factors"]
}  # fmt: skip


@pytest.mark.filterwarnings("ignore:The epoch parameter")
@pytest.mark.filterwarnings(TORCH_ORDER_WARNING)
@pytest.mark.parametrize("make_sched", CLOSED_FORMS.values(), ids=CLOSED_FORMS.keys())
def test_step_with_epoch_uses_the_closed_form_as_torch(make_sched):
    torch = pytest.importorskip("torch")
    ours = make_sched(lr_scheduler, SGD(_groups([Parameter(np.ones(s)) for s in SHAPES]), lr=0.1))
    tparams = [torch.nn.Parameter(torch.ones(s, dtype=torch.float64)) for s in SHAPES]
    theirs = make_sched(torch.optim.lr_scheduler, torch.optim.SGD(_groups(tparams), lr=0.1))
    for epoch in [3, 4, 9, 2, 15, 5, 6]:
        ours.step(epoch)
        theirs.step(epoch)
        np.testing.assert_allclose(ours.get_last_lr(), theirs.get_last_lr(), rtol=RTOL)
        ours.step()  # chainable again from there
        theirs.step()
        np.testing.assert_allclose(ours.get_last_lr(), theirs.get_last_lr(), rtol=RTOL)


RESUMABLE = {name: SCHEDULERS[name] for name in [
    "StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR", "LinearLR-factors"]}  # fmt: skip


@pytest.mark.filterwarnings(TORCH_ORDER_WARNING)
@pytest.mark.parametrize("make_sched", RESUMABLE.values(), ids=RESUMABLE.keys())
def test_construction_with_last_epoch_matches_torch(make_sched):
    torch = pytest.importorskip("torch")

    def build(optim, sched_module, params):
        optimizer = optim.SGD(_groups(params), lr=0.1)
        for group, initial in zip(optimizer.param_groups, [0.4, 0.2], strict=True):
            group["initial_lr"] = initial
        return make_sched(sched_module, optimizer)

    init, _ = _problem()
    # The same construction with last_epoch=6, as when resuming from epoch 6.
    ours = build(mininn.optim, _LastEpoch(lr_scheduler, 6), [Parameter(a) for a in init])
    theirs = build(
        torch.optim,
        _LastEpoch(torch.optim.lr_scheduler, 6),
        [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in init],
    )
    for _ in range(12):
        np.testing.assert_allclose(ours.get_last_lr(), theirs.get_last_lr(), rtol=RTOL)
        ours.step()
        theirs.step()
    assert ours.last_epoch == theirs.last_epoch == 6 + 1 + 12  # construction is a step


class _LastEpoch:
    """A scheduler module whose classes are built with ``last_epoch`` set."""

    def __init__(self, module, last_epoch):
        self._module, self._last_epoch = module, last_epoch

    def __getattr__(self, name):
        cls = getattr(self._module, name)
        return lambda *args, **kwargs: cls(*args, last_epoch=self._last_epoch, **kwargs)


# -- state_dict -------------------------------------------------------------------------


def _is_plain(value):
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_is_plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


def _assert_state_matches_torch(state, tstate):
    # torch keeps one more flag, for a warning mininn does not give.
    assert set(tstate) - set(state) <= {"_get_lr_called_within_step"}
    assert set(state) <= set(tstate)
    for key, value in state.items():
        expected = tstate[key]
        if key == "_schedulers":
            for child, tchild in zip(value, expected, strict=True):
                _assert_state_matches_torch(child, tchild)
        elif isinstance(expected, Counter):  # MultiStepLR's milestones
            assert value == sorted(expected.elements())
        elif isinstance(expected, (list, tuple)) and expected and isinstance(expected[0], float):
            np.testing.assert_allclose(value, expected, rtol=RTOL, err_msg=key)
        elif isinstance(expected, float):
            assert value == pytest.approx(expected, rel=RTOL), key
        else:
            assert value == expected, key


@pytest.mark.parametrize(("scheduler", "optimizer"), CASES)
def test_state_dict_is_plain_and_matches_torch(scheduler, optimizer):
    torch = pytest.importorskip("torch")
    init, grads = _problem(steps=12)
    ours = _run_ours(OPTIMIZERS[optimizer], SCHEDULERS[scheduler], init, grads)[3]
    theirs = _run_torch(torch, OPTIMIZERS[optimizer], SCHEDULERS[scheduler], init, grads)[3]
    state = ours.state_dict()
    assert _is_plain(state), state
    _assert_state_matches_torch(state, theirs.state_dict())


def test_plateau_state_dict_is_plain_and_matches_torch():
    torch = pytest.importorskip("torch")
    init, grads = _problem(steps=12)
    metrics = _metrics("min", steps=12)

    def make(m, opt):
        return m.ReduceLROnPlateau(opt, patience=1, cooldown=1, min_lr=[0.01, 0.0])

    ours = _run_ours(OPTIMIZERS["Adam"], make, init, grads, metrics)[3]
    theirs = _run_torch(torch, OPTIMIZERS["Adam"], make, init, grads, metrics)[3]
    assert _is_plain(ours.state_dict())
    _assert_state_matches_torch(ours.state_dict(), theirs.state_dict())


ROUND_TRIP_CASES = [(name, "SGD-momentum") for name in SCHEDULERS] + [
    ("OneCycleLR", "Adam"),
    ("OneCycleLR-three_phase", "RMSprop-momentum"),
    ("ReduceLROnPlateau", "Adam"),
]
ROUND_TRIP = [pytest.param(s, o, id=f"{s}-{o}") for s, o in ROUND_TRIP_CASES]


@pytest.mark.parametrize(("scheduler", "optimizer"), ROUND_TRIP)
def test_state_dict_round_trip_mid_schedule_continues_identically(scheduler, optimizer, tmp_path):
    init, grads = _problem()
    make_opt = OPTIMIZERS[optimizer]
    plateau = scheduler == "ReduceLROnPlateau"
    metrics = _metrics("min") if plateau else None
    if plateau:

        def make_sched(m, opt):
            return m.ReduceLROnPlateau(opt, patience=1, cooldown=1, factor=0.5)
    else:
        make_sched = SCHEDULERS[scheduler]
    whole = _run_ours(make_opt, make_sched, init, grads, metrics)

    split = 13
    params = [Parameter(a) for a in init]
    optimizer_ = make_opt(mininn.optim, _groups(params))
    scheduler_ = make_sched(lr_scheduler, optimizer_)
    first = _train(optimizer_, scheduler_, params, grads[:split], _set_ours, metrics)
    checkpoint = {
        "params": [p.data.copy() for p in params],
        "optimizer": optimizer_.state_dict(),
        "scheduler": scheduler_.state_dict(),
    }
    assert _is_plain(checkpoint["scheduler"])
    mininn.save(checkpoint, tmp_path / "checkpoint.npz")  # as a checkpoint file holds it
    checkpoint = mininn.load(tmp_path / "checkpoint.npz")

    # Fresh objects, as a resumed program builds them: scheduler first (it writes
    # into the groups), then the optimizer's state, then the scheduler's.
    params = [Parameter(a) for a in checkpoint["params"]]
    optimizer_ = make_opt(mininn.optim, _groups(params))
    scheduler_ = make_sched(lr_scheduler, optimizer_)
    optimizer_.load_state_dict(checkpoint["optimizer"])
    scheduler_.load_state_dict(checkpoint["scheduler"])
    second = _train(
        optimizer_, scheduler_, params, grads[split:], _set_ours,
        metrics[split:] if plateau else None,
    )  # fmt: skip
    assert first[0] + second[0] == whole[0]
    assert first[1] + second[1] == whole[1]
    for p, q in zip(params, whole[2], strict=True):
        np.testing.assert_array_equal(p.data, q)


def test_state_dict_is_a_copy():
    optimizer = SGD([Parameter(np.ones(2))], lr=1.0)
    scheduler = MultiStepLR(optimizer, milestones=[2, 4])
    state = scheduler.state_dict()
    state["milestones"].append(9)
    state["base_lrs"][0] = 7.0
    assert scheduler.milestones == [2, 4] and scheduler.base_lrs == [1.0]
    scheduler.load_state_dict(state)
    state["milestones"].append(10)
    assert scheduler.milestones == [2, 4, 9]


# -- API --------------------------------------------------------------------------------


def test_per_batch_tells_one_cycle_from_per_epoch_schedules():
    optimizer = SGD([Parameter(np.ones(2))], lr=1.0, momentum=0.9)
    assert LRScheduler.per_batch is False
    assert OneCycleLR.per_batch is True
    for cls in (StepLR, MultiStepLR, ExponentialLR, CosineAnnealingLR, LinearLR,
                ReduceLROnPlateau):  # fmt: skip
        assert cls.per_batch is False, cls
    epochs = SequentialLR(optimizer, [LinearLR(optimizer), ExponentialLR(optimizer, 0.9)], [3])
    assert epochs.per_batch is False
    batches = SequentialLR(
        optimizer, [LinearLR(optimizer), OneCycleLR(optimizer, 1.0, total_steps=9)], [3]
    )
    assert batches.per_batch is True


def test_construction_sets_initial_lr_and_base_lrs():
    optimizer = SGD(_groups([Parameter(np.ones(s)) for s in SHAPES]), lr=0.1)
    scheduler = StepLR(optimizer, step_size=2)
    assert [g["initial_lr"] for g in optimizer.param_groups] == [0.1, 0.05]
    assert scheduler.base_lrs == [0.1, 0.05] and scheduler.last_epoch == 0
    assert scheduler.get_last_lr() == [0.1, 0.05]


def test_importable_as_in_torch():
    from mininn.optim.lr_scheduler import OneCycleLR as Imported

    assert mininn.optim.lr_scheduler.OneCycleLR is Imported is lr_scheduler.OneCycleLR
    assert set(lr_scheduler.__all__) == {
        "LRScheduler", "StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR",
        "LinearLR", "SequentialLR", "OneCycleLR", "ReduceLROnPlateau",
    }  # fmt: skip


# -- errors -----------------------------------------------------------------------------


def _sgd(groups=1):
    params = [Parameter(np.ones(2)) for _ in range(groups)]
    return SGD([{"params": [p]} for p in params], lr=0.1, momentum=0.9)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda o: StepLR(o, step_size=0),
         "StepLR: expected step_size to be an integer >= 1, got 0"),
        (lambda o: StepLR(o, step_size=2.5), "step_size to be an integer >= 1, got 2.5"),
        (lambda o: StepLR(o, step_size=2, gamma=-0.1), r"StepLR: expected gamma > 0, got -0.1"),
        (lambda o: MultiStepLR(o, milestones=[5, 3]),
         r"MultiStepLR: expected strictly increasing milestones, got \[5, 3\]"),
        (lambda o: MultiStepLR(o, milestones=[2, 2]), "strictly increasing milestones"),
        (lambda o: MultiStepLR(o, milestones=[-1]), "each milestone to be an integer >= 0, got -1"),
        (lambda o: ExponentialLR(o, gamma=0), r"ExponentialLR: expected gamma > 0, got 0"),
        (lambda o: ExponentialLR(o, gamma="0.9"), r"expected gamma > 0, got '0.9'"),
        (lambda o: CosineAnnealingLR(o, T_max=0),
         "CosineAnnealingLR: expected T_max to be an integer >= 1, got 0"),
        (lambda o: CosineAnnealingLR(o, T_max=5, eta_min=-1.0), "eta_min >= 0, got -1.0"),
        (lambda o: LinearLR(o, start_factor=0),
         r"LinearLR: expected start_factor in \(0, 1\], got 0"),
        (lambda o: LinearLR(o, start_factor=1.5), r"start_factor in \(0, 1\], got 1.5"),
        (lambda o: LinearLR(o, end_factor=-0.1), r"end_factor in \[0, 1\], got -0.1"),
        (lambda o: LinearLR(o, total_iters=0), "total_iters to be an integer >= 1, got 0"),
        (lambda o: OneCycleLR(o, max_lr=1.0),
         "OneCycleLR: give total_steps, or both epochs and steps_per_epoch"),
        (lambda o: OneCycleLR(o, max_lr=1.0, epochs=3),
         "got total_steps=None, epochs=3, steps_per_epoch=None"),
        (lambda o: OneCycleLR(o, max_lr=1.0, total_steps=0),
         "OneCycleLR: expected total_steps to be an integer >= 1, got 0"),
        (lambda o: OneCycleLR(o, max_lr=1.0, epochs=2, steps_per_epoch=0),
         "steps_per_epoch to be an integer >= 1, got 0"),
        (lambda o: OneCycleLR(o, max_lr=1.0, total_steps=9, pct_start=1.5),
         r"pct_start in \[0, 1\], got 1.5"),
        (lambda o: OneCycleLR(o, max_lr=1.0, total_steps=9, anneal_strategy="exp"),
         "anneal_strategy must be 'cos' or 'linear', got 'exp'"),
        (lambda o: OneCycleLR(o, max_lr=[1.0, 2.0], total_steps=9),
         "OneCycleLR: max_lr has 2 values, but the optimizer has 1 param groups"),
        (lambda o: OneCycleLR(o, max_lr=0.0, total_steps=9), "max_lr > 0, got 0.0"),
        (lambda o: OneCycleLR(o, max_lr=1.0, total_steps=9, div_factor=0), "div_factor > 0"),
        (lambda o: ReduceLROnPlateau(o, factor=1.0),
         r"ReduceLROnPlateau: expected factor in \[0, 1\) \(new_lr = lr \* factor\), got 1.0"),
        (lambda o: ReduceLROnPlateau(o, factor=2), r"factor in \[0, 1\).*got 2"),
        (lambda o: ReduceLROnPlateau(o, mode="avg"), "mode must be 'min' or 'max', got 'avg'"),
        (lambda o: ReduceLROnPlateau(o, threshold_mode="pct"),
         "threshold_mode must be 'rel' or 'abs', got 'pct'"),
        (lambda o: ReduceLROnPlateau(o, threshold=-1e-4), "threshold >= 0, got -0.0001"),
        (lambda o: ReduceLROnPlateau(o, patience=-1), "patience to be an integer >= 0, got -1"),
        (lambda o: ReduceLROnPlateau(o, cooldown=1.5), "cooldown to be an integer >= 0"),
        (lambda o: ReduceLROnPlateau(o, min_lr=[0.1, 0.2]), "min_lr has 2 values"),
        (lambda o: ReduceLROnPlateau(o, min_lr=-0.1), "min_lr >= 0, got -0.1"),
        (lambda o: ReduceLROnPlateau(o, eps=-1.0), "eps >= 0, got -1.0"),
        (lambda o: StepLR(o, step_size=2, last_epoch=3),
         r"StepLR: last_epoch=3 resumes a schedule, but param_groups\[0\] has no 'initial_lr'"),
        (lambda o: StepLR(o, step_size=2, last_epoch=-2),
         "last_epoch to be an integer >= -1, got -2"),
        (lambda o: SequentialLR(o, [], milestones=[]),
         "SequentialLR: expected at least one scheduler, got none"),
        (lambda o: SequentialLR(o, [StepLR(o, 2), StepLR(o, 3)], milestones=[]),
         r"expected 1 milestone\(s\) for 2 schedulers \(one fewer\), got 0"),
        (lambda o: SequentialLR(o, [StepLR(o, 2)] * 3, milestones=[4, 4]),
         r"SequentialLR: expected strictly increasing milestones, got \[4, 4\]"),
        (lambda o: SequentialLR(o, [StepLR(o, 2)] * 2, milestones=[0]),
         "each milestone to be an integer >= 1, got 0"),
        (lambda o: SequentialLR(o, [ReduceLROnPlateau(o)], milestones=[]),
         r"schedulers\[0\] is a ReduceLROnPlateau, which needs a metric"),
        (lambda o: SequentialLR(o, [StepLR(_sgd(), 2)], milestones=[]),
         r"schedulers\[0\] \(StepLR\) belongs to another optimizer"),
    ],
    ids=lambda value: None if callable(value) else value[:40],
)  # fmt: skip
def test_invalid_arguments(build, match):
    with pytest.raises(ValueError, match=match):
        build(_sgd())


def test_wrong_types():
    with pytest.raises(TypeError, match=r"StepLR: expected a mininn\.optim optimizer, got list"):
        StepLR([Parameter(np.ones(2))], step_size=2)
    with pytest.raises(TypeError, match=r"schedulers\[0\] is a str"):
        SequentialLR(_sgd(), ["StepLR"], milestones=[])


def test_one_cycle_stepped_past_total_steps():
    scheduler = OneCycleLR(_sgd(), max_lr=1.0, total_steps=3)
    for _ in range(3):  # PyTorch allows reaching total_steps itself
        scheduler.step()
    with pytest.raises(ValueError, match="OneCycleLR: stepped 4 times, past total_steps=3"):
        scheduler.step()


def test_one_cycle_needs_momentum_unless_cycle_momentum_is_off():
    class Plain(mininn.optim.Optimizer):
        def __init__(self, params, lr=0.1):
            super().__init__(params, {"lr": lr})

    optimizer = Plain([Parameter(np.ones(2))])
    with pytest.raises(ValueError, match="cycle_momentum=True needs an optimizer with momentum"):
        OneCycleLR(optimizer, max_lr=1.0, total_steps=9)
    OneCycleLR(optimizer, max_lr=1.0, total_steps=9, cycle_momentum=False)


def test_load_state_dict_errors():
    optimizer = _sgd()
    with pytest.raises(ValueError, match=r"ExponentialLR.load_state_dict: .*lacks \['gamma'\]"):
        ExponentialLR(optimizer, 0.9).load_state_dict(
            {k: v for k, v in ExponentialLR(optimizer, 0.5).state_dict().items() if k != "gamma"}
        )
    with pytest.raises(
        ValueError, match=r"has unknown \['step_size'\].*saved from a ExponentialLR"
    ):
        ExponentialLR(optimizer, 0.9).load_state_dict(StepLR(optimizer, 2, 0.9).state_dict())
    two_groups = StepLR(_sgd(groups=2), 2).state_dict()
    with pytest.raises(ValueError, match="'base_lrs' has 2 values, the optimizer 1 param groups"):
        StepLR(optimizer, 2).load_state_dict(two_groups)
    sequential = SequentialLR(optimizer, [StepLR(optimizer, 2)], milestones=[])
    state = sequential.state_dict()
    state["_schedulers"].append(state["_schedulers"][0])
    with pytest.raises(ValueError, match="holds 2 schedulers, this SequentialLR has 1"):
        sequential.load_state_dict(state)
    with pytest.raises(ValueError, match=r"expected a dict from StepLR\.state_dict"):
        StepLR(optimizer, 2).load_state_dict([1, 2])
    plateau = ReduceLROnPlateau(optimizer)
    with pytest.raises(ValueError, match="mode must be 'min' or 'max', got 'up'"):
        plateau.load_state_dict({**plateau.state_dict(), "mode": "up"})


# -- interop: the PyTorch twins built mid-run ---------------------------------------------

# One param group (optimizer_to_torch's contract); OneCycleLR's per-group lists need two.
INTEROP = [
    pytest.param(sched, opt, id=f"{sched}-{opt}")
    for sched in SCHEDULERS
    if sched != "OneCycleLR-epochs-factors"
    for opt in (OPTIMIZERS if sched.startswith("OneCycleLR") else ["SGD-momentum", "Adam"])
] + [pytest.param("ReduceLROnPlateau", opt, id=f"ReduceLROnPlateau-{opt}") for opt in OPTIMIZERS]


@pytest.mark.parametrize(("scheduler", "optimizer"), INTEROP)
def test_twins_built_mid_run_continue_with_the_same_lrs_and_parameters(scheduler, optimizer):
    torch = pytest.importorskip("torch")
    from mininn.interop import optimizer_to_torch, scheduler_to_torch

    init, grads = _problem()
    plateau = scheduler == "ReduceLROnPlateau"
    metrics = _metrics("min") if plateau else None
    if plateau:

        def make_sched(m, opt):
            return m.ReduceLROnPlateau(opt, patience=1, cooldown=1, factor=0.5)
    else:
        make_sched = SCHEDULERS[scheduler]
    params = [Parameter(a) for a in init]
    ours_opt = OPTIMIZERS[optimizer](mininn.optim, [{"params": params}])
    ours = make_sched(lr_scheduler, ours_opt)
    split = 11
    _train(ours_opt, ours, params, grads[:split], _set_ours, metrics)

    tparams = [torch.nn.Parameter(torch.from_numpy(p.data.copy())) for p in params]
    torch_opt = optimizer_to_torch(ours_opt, tparams)
    theirs = scheduler_to_torch(ours, torch_opt)
    assert type(theirs) is getattr(torch.optim.lr_scheduler, type(ours).__name__)
    assert theirs.get_last_lr() == ours.get_last_lr()
    _assert_state_matches_torch(ours.state_dict(), theirs.state_dict())

    def set_grad(p, g):
        p.grad = torch.from_numpy(g.copy())

    rest = metrics[split:] if plateau else None
    ours_run = _train(ours_opt, ours, params, grads[split:], _set_ours, rest)
    theirs_run = _train(torch_opt, theirs, tparams, grads[split:], set_grad, rest)
    _assert_same_run(
        (*ours_run, [p.data for p in params], ours),
        (*theirs_run, [p.detach().numpy() for p in tparams], theirs),
    )


def test_scheduler_to_torch_errors():
    torch = pytest.importorskip("torch")
    from mininn.interop import scheduler_to_torch

    optimizer = _sgd(groups=2)
    tparams = [torch.nn.Parameter(torch.ones(2, dtype=torch.float64))]
    torch_opt = torch.optim.SGD(tparams, lr=0.1)
    with pytest.raises(ValueError, match="the PyTorch optimizer has 1 param groups, the sche"):
        scheduler_to_torch(StepLR(optimizer, 2), torch_opt)
    with pytest.raises(TypeError, match=r"expected a scheduler of mininn\.optim\.lr_scheduler"):
        scheduler_to_torch(torch.optim.lr_scheduler.StepLR(torch_opt, 2), torch_opt)
