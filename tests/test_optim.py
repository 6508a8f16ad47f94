"""Tests of mininn.optim: against torch.optim step by step, hand-worked steps,
parameter groups, frozen parameters, the flat-buffer layout and every error."""

import numpy as np
import pytest

from mininn.module import Parameter
from mininn.optim import SGD, Adam, AdamW, Optimizer, RMSprop

SHAPES = [(4, 3), (4,), (2, 3, 2), ()]
STEPS = 10

# (class, kwargs) for every option combination, at a normal learning rate; each is
# also run at a high one. The ids read as the options they turn on.
CONFIGS = {
    "SGD": (SGD, {}),
    "SGD-momentum": (SGD, {"momentum": 0.9}),
    "SGD-momentum-dampening": (SGD, {"momentum": 0.9, "dampening": 0.3}),
    "SGD-nesterov": (SGD, {"momentum": 0.9, "nesterov": True}),
    "SGD-weight_decay": (SGD, {"weight_decay": 0.1}),
    "SGD-maximize": (SGD, {"maximize": True}),
    "SGD-all": (SGD, {"momentum": 0.8, "nesterov": True, "weight_decay": 0.1, "maximize": True}),
    "Adam": (Adam, {}),
    "Adam-betas": (Adam, {"betas": (0.3, 0.5), "eps": 1e-6}),
    "Adam-weight_decay": (Adam, {"weight_decay": 0.1}),
    "Adam-amsgrad": (Adam, {"amsgrad": True}),
    "Adam-maximize": (Adam, {"maximize": True}),
    "Adam-all": (Adam, {"weight_decay": 0.1, "amsgrad": True, "maximize": True}),
    "AdamW": (AdamW, {}),
    "AdamW-weight_decay": (AdamW, {"weight_decay": 0.3}),
    "AdamW-amsgrad": (AdamW, {"amsgrad": True}),
    "AdamW-all": (AdamW, {"weight_decay": 0.3, "amsgrad": True, "maximize": True}),
    "RMSprop": (RMSprop, {}),
    "RMSprop-alpha": (RMSprop, {"alpha": 0.3}),
    "RMSprop-centered": (RMSprop, {"centered": True}),
    "RMSprop-momentum": (RMSprop, {"momentum": 0.9}),
    "RMSprop-weight_decay": (RMSprop, {"weight_decay": 0.1}),
    "RMSprop-maximize": (RMSprop, {"maximize": True}),
    "RMSprop-all": (
        RMSprop,
        {"centered": True, "momentum": 0.5, "weight_decay": 0.1, "maximize": True},
    ),
}
LRS = {"normal-lr": 1e-2, "high-lr": 1.0}
# (rtol, atol). The gradients are given, so rounding feeds back only through weight
# decay: each of the 10 steps rounds an element <~ 8 times (decay, moments, sqrt,
# division, update) on each of the 2 sides: 160 eps32 (1.9e-5) in float32. The
# parameters are O(1), and a value that crosses zero (a high-lr step from -1 to -0.04)
# keeps that error as an absolute one: atol the same.
EPS32 = float(np.finfo(np.float32).eps)  # 2**-23
TOLERANCES = {np.float64: (1e-10, 0.0), np.float32: (160 * EPS32, 160 * EPS32)}


def _random_problem(dtype, seed=0):
    """Initial values and STEPS gradients per parameter, drawn once (float64)."""
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(shape) for shape in SHAPES]
    grads = [[rng.standard_normal(shape) for shape in SHAPES] for _ in range(STEPS)]
    return [a.astype(dtype) for a in init], [[g.astype(dtype) for g in gs] for gs in grads]


def _run_mininn(cls, kwargs, init, grads, on_step=None):
    params = [Parameter(a) for a in init]
    opt = cls(params, **kwargs)
    for step, step_grads in enumerate(grads):
        if on_step is not None:
            on_step(step, opt, params)
        opt.zero_grad()
        for p, g in zip(params, step_grads, strict=True):
            p.grad += g  # as a layer's backward accumulates
        opt.step()
    return params, opt


def _run_torch(torch, cls_name, kwargs, init, grads, on_step=None):
    params = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in init]
    opt = getattr(torch.optim, cls_name)(params, **kwargs)
    for step, step_grads in enumerate(grads):
        if on_step is not None:
            on_step(step, opt, params)
        opt.zero_grad()
        for p, g in zip(params, step_grads, strict=True):
            if p.requires_grad:
                p.grad = torch.from_numpy(g.copy())
        opt.step()
    return params, opt


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("lr", LRS.values(), ids=LRS.keys())
@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_matches_torch_over_ten_steps(config, lr, dtype):
    torch = pytest.importorskip("torch")
    cls, kwargs = config
    kwargs = {**kwargs, "lr": lr}
    init, grads = _random_problem(dtype)
    ours, _ = _run_mininn(cls, kwargs, init, grads)
    theirs, _ = _run_torch(torch, cls.__name__, kwargs, init, grads)
    for p, q in zip(ours, theirs, strict=True):
        assert p.data.dtype == dtype
        rtol, atol = TOLERANCES[dtype]
        np.testing.assert_allclose(p.data, q.detach().numpy(), rtol=rtol, atol=atol)


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_state_matches_torch_state(config):
    torch = pytest.importorskip("torch")
    cls, kwargs = config
    init, grads = _random_problem(np.float64)
    ours, opt = _run_mininn(cls, kwargs, init, grads)
    theirs, topt = _run_torch(torch, cls.__name__, kwargs, init, grads)
    for p, q in zip(ours, theirs, strict=True):
        state, tstate = opt.state[p], topt.state[q]
        assert list(state) == list(tstate)
        for key, value in tstate.items():
            expected = value.numpy() if torch.is_tensor(value) else value
            np.testing.assert_allclose(state[key], expected, rtol=1e-10, atol=0, err_msg=key)


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_lr_changed_through_param_groups_matches_torch(config):
    torch = pytest.importorskip("torch")
    cls, kwargs = config
    init, grads = _random_problem(np.float64, seed=1)

    def halve_lr_at_step_4(step, opt, params):
        if step == 4:
            for group in opt.param_groups:
                group["lr"] = group["lr"] * 0.5

    ours, _ = _run_mininn(cls, kwargs, init, grads, halve_lr_at_step_4)
    theirs, _ = _run_torch(torch, cls.__name__, kwargs, init, grads, halve_lr_at_step_4)
    for p, q in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(p.data, q.detach().numpy(), rtol=1e-10, atol=0)


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_frozen_parameters_skipped_and_unfrozen_later_matches_torch(config):
    torch = pytest.importorskip("torch")
    cls, kwargs = config
    init, grads = _random_problem(np.float64, seed=2)

    def freeze_second_until_step_5(step, opt, params):
        # Parameter 1 sits between trainable ones: the flat buffer is split in runs,
        # and after unfreezing it has a smaller step count than its neighbours.
        params[1].requires_grad = step >= 5

    ours, _ = _run_mininn(cls, kwargs, init, grads, freeze_second_until_step_5)
    theirs, _ = _run_torch(torch, cls.__name__, kwargs, init, grads, freeze_second_until_step_5)
    for p, q in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(p.data, q.detach().numpy(), rtol=1e-10, atol=0)


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_frozen_parameter_is_not_changed(config):
    cls, kwargs = config
    init, grads = _random_problem(np.float64, seed=3)
    params = [Parameter(a) for a in init]
    params[0].requires_grad = False
    opt = cls(params, lr=0.1, **kwargs)
    for p, g in zip(params, grads[0], strict=True):
        p.grad[...] = g
    opt.step()
    np.testing.assert_array_equal(params[0].data, init[0])
    assert params[0] not in opt.state
    assert not np.array_equal(params[1].data, init[1])


def test_param_groups_with_own_hyperparameters_match_torch():
    torch = pytest.importorskip("torch")
    init, grads = _random_problem(np.float64, seed=4)
    groups = lambda ps: [{"params": ps[:2], "lr": 0.5}, {"params": ps[2:], "betas": (0.5, 0.9)}]  # noqa: E731
    params = [Parameter(a) for a in init]
    tparams = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in init]
    opt, topt = Adam(groups(params), lr=0.01), torch.optim.Adam(groups(tparams), lr=0.01)
    assert [g["lr"] for g in opt.param_groups] == [0.5, 0.01]
    assert opt.param_groups[1]["betas"] == (0.5, 0.9)
    for step_grads in grads:
        for p, tp, g in zip(params, tparams, step_grads, strict=True):
            p.grad[...] = g
            tp.grad = torch.from_numpy(g.copy())
        opt.step()
        topt.step()
    for p, q in zip(params, tparams, strict=True):
        np.testing.assert_allclose(p.data, q.detach().numpy(), rtol=1e-10, atol=0)


def test_training_real_layers_matches_torch():
    torch = pytest.importorskip("torch")
    from mininn.activations import ReLU
    from mininn.layers import Linear
    from mininn.module import Sequential

    rng = np.random.default_rng(5)
    x, target = rng.standard_normal((16, 6)), rng.standard_normal((16, 3))
    model = Sequential(Linear(6, 8, dtype=np.float64), ReLU(), Linear(8, 3, dtype=np.float64))
    tmodel = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    tmodel = tmodel.double()
    with torch.no_grad():
        for p, q in zip(model.parameters(), tmodel.parameters(), strict=True):
            q.copy_(torch.from_numpy(p.data))
    opt = Adam(model.parameters(), lr=0.05, weight_decay=0.01, amsgrad=True)
    topt = torch.optim.Adam(tmodel.parameters(), lr=0.05, weight_decay=0.01, amsgrad=True)
    for _ in range(STEPS):
        opt.zero_grad()
        model.backward(2 * (model(x) - target) / target.size)  # d mean((y - t)²) / dy
        opt.step()
        topt.zero_grad()
        torch.nn.functional.mse_loss(
            tmodel(torch.from_numpy(x)), torch.from_numpy(target)
        ).backward()
        topt.step()
    for p, q in zip(model.parameters(), tmodel.parameters(), strict=True):
        np.testing.assert_allclose(p.data, q.detach().numpy(), rtol=1e-10, atol=1e-14)


# -- hand-worked single steps ---------------------------------------------------------


def test_sgd_momentum_two_steps_by_hand():
    p = Parameter(np.array([1.0]))
    opt = SGD([p], lr=0.1, momentum=0.9, dampening=0.5)
    p.grad[...] = 2.0
    opt.step()  # b = g = 2 (first step, no dampening); θ = 1 − 0.1·2 = 0.8
    np.testing.assert_allclose(p.data, [0.8], rtol=1e-15)
    opt.step()  # b = 0.9·2 + 0.5·2 = 2.8; θ = 0.8 − 0.28 = 0.52
    np.testing.assert_allclose(p.data, [0.52], rtol=1e-15)
    np.testing.assert_allclose(opt.state[p]["momentum_buffer"], [2.8], rtol=1e-15)


def test_sgd_nesterov_weight_decay_by_hand():
    p = Parameter(np.array([2.0]))
    opt = SGD([p], lr=0.1, momentum=0.5, nesterov=True, weight_decay=0.25)
    p.grad[...] = 1.0
    opt.step()  # g = 1 + 0.25·2 = 1.5; b = 1.5; g = 1.5 + 0.5·1.5 = 2.25; θ = 2 − 0.225
    np.testing.assert_allclose(p.data, [1.775], rtol=1e-15)
    np.testing.assert_array_equal(p.grad, [1.0])  # the gradient itself is not modified


def test_adam_two_steps_by_hand():
    p = Parameter(np.array([1.0]))
    opt = Adam([p], lr=0.1, betas=(0.5, 0.75), eps=0.0)
    p.grad[...] = 2.0
    opt.step()
    # m = 0.5·2 = 1, v = 0.25·4 = 1; m̂ = 1/0.5 = 2, v̂ = 1/0.25 = 4; θ = 1 − 0.1·2/2 = 0.9
    np.testing.assert_allclose(p.data, [0.9], rtol=1e-15)
    p.grad[...] = -2.0
    opt.step()
    # m = 0.5·1 − 0.5·2 = −0.5, m̂ = −0.5/(1 − 0.25) = −2/3
    # v = 0.75·1 + 0.25·4 = 1.75, v̂ = 1.75/(1 − 0.5625) = 4; θ = 0.9 + 0.1·(2/3)/2 = 0.9 + 1/30
    np.testing.assert_allclose(p.data, [0.9 + 1 / 30], rtol=1e-15)
    assert opt.state[p]["step"] == 2
    np.testing.assert_allclose(opt.state[p]["exp_avg_sq"], [1.75], rtol=1e-15)


def test_adam_amsgrad_keeps_the_largest_second_moment_by_hand():
    p = Parameter(np.array([0.0]))
    opt = Adam([p], lr=1.0, betas=(0.0, 0.5), eps=0.0, amsgrad=True)
    p.grad[...] = 4.0
    opt.step()  # v = 0.5·16 = 8 = v_max; θ = 0 − 4/(sqrt(8)/sqrt(0.5)) = −1
    np.testing.assert_allclose(p.data, [-1.0], rtol=1e-15)
    p.grad[...] = 1.0
    opt.step()  # v = 4 + 0.5 = 4.5 < v_max = 8; θ = −1 − 1/(sqrt(8)/sqrt(0.75))
    np.testing.assert_allclose(p.data, [-1.0 - np.sqrt(0.75 / 8)], rtol=1e-15)
    np.testing.assert_allclose(opt.state[p]["max_exp_avg_sq"], [8.0], rtol=1e-15)


def test_adamw_decay_is_decoupled_by_hand():
    p = Parameter(np.array([10.0]))
    opt = AdamW([p], lr=0.1, weight_decay=0.5, eps=0.0)
    p.grad[...] = 3.0
    opt.step()  # θ = 10·(1 − 0.05) = 9.5, then the Adam step −0.1·sign(3): 9.4
    np.testing.assert_allclose(p.data, [9.4], rtol=1e-15)
    # The decay stays out of the moments: m = 0.1·3, not 0.1·(3 + 0.5·10).
    np.testing.assert_allclose(opt.state[p]["exp_avg"], [0.3], rtol=1e-15)


def test_rmsprop_centered_momentum_by_hand():
    p = Parameter(np.array([1.0]))
    opt = RMSprop([p], lr=0.1, alpha=0.5, eps=0.0, centered=True, momentum=0.5)
    p.grad[...] = 2.0
    opt.step()
    # v = 0.5·4 = 2; ḡ = 0.5·2 = 1; d = sqrt(2 − 1) = 1; b = 2/1 = 2; θ = 1 − 0.2 = 0.8
    np.testing.assert_allclose(p.data, [0.8], rtol=1e-15)
    opt.step()
    # v = 1 + 2 = 3; ḡ = 0.5 + 1 = 1.5; d = sqrt(3 − 2.25) = sqrt(0.75)
    # b = 0.5·2 + 2/sqrt(0.75); θ = 0.8 − 0.1·b
    np.testing.assert_allclose(p.data, [0.8 - 0.1 * (1 + 2 / np.sqrt(0.75))], rtol=1e-15)


# -- layout, state and API ------------------------------------------------------------


def test_flat_buffer_preserves_values_shapes_and_reads_per_parameter_state():
    init, grads = _random_problem(np.float64)
    params = [Parameter(a) for a in init]
    for p, g in zip(params, grads[0], strict=True):
        p.grad[...] = g
    opt = Adam(params)
    for p, a, g in zip(params, init, grads[0], strict=True):
        np.testing.assert_array_equal(p.data, a)
        np.testing.assert_array_equal(p.grad, g)
        assert p.data.shape == a.shape and p.grad.shape == a.shape
    assert len(opt.state) == 0  # lazy
    opt.step()
    assert set(opt.state[params[0]]) == {"step", "exp_avg", "exp_avg_sq"}
    assert opt.state[params[2]]["exp_avg"].shape == SHAPES[2]
    # exp_avg after one step is (1 − β1) g for each parameter separately.
    for p, g in zip(params, grads[0], strict=True):
        np.testing.assert_allclose(opt.state[p]["exp_avg"], 0.1 * g, rtol=1e-12)


def test_mixed_dtypes_get_their_own_buffers_and_keep_their_dtype():
    p32 = Parameter(np.ones(3, dtype=np.float32))
    p64 = Parameter(np.ones(2, dtype=np.float64))
    opt = SGD([p32, p64], lr=0.5, momentum=0.9)
    p32.grad[...] = 1.0
    p64.grad[...] = 1.0
    opt.step()
    assert p32.data.dtype == np.float32 and p64.data.dtype == np.float64
    assert opt.state[p32]["momentum_buffer"].dtype == np.float32
    np.testing.assert_array_equal(p32.data, np.full(3, 0.5, dtype=np.float32))
    np.testing.assert_array_equal(p64.data, [0.5, 0.5])


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_float32_step_does_not_upcast(config):
    cls, kwargs = config
    p = Parameter(np.ones((3, 2), dtype=np.float32))
    opt = cls([p], **kwargs)
    p.grad[...] = 0.5
    opt.step()
    assert p.data.dtype == np.float32
    for value in opt.state[p].values():
        if isinstance(value, np.ndarray):
            assert value.dtype == np.float32


def test_parameter_listed_twice_is_updated_once():
    p = Parameter(np.array([1.0]))
    opt = SGD([p, p], lr=0.1)
    p.grad[...] = 1.0
    opt.step()
    np.testing.assert_allclose(p.data, [0.9], rtol=1e-15)
    assert len(opt.param_groups[0]["params"]) == 1


def test_zero_grad_zeroes_every_gradient_in_place():
    params = [Parameter(np.ones((2, 2))), Parameter(np.ones(3), requires_grad=False)]
    opt = SGD(params)
    grads = [p.grad for p in params]
    for p in params:
        p.grad += 5.0
    opt.zero_grad()
    for p, g in zip(params, grads, strict=True):
        assert p.grad is g
        np.testing.assert_array_equal(p.grad, 0.0)


def test_step_after_zero_grad_treats_an_unwritten_gradient_as_zero():
    # A parameter that no backward wrote since zero_grad() must step with a zero
    # gradient, not with its stale values.
    used, unused = Parameter(np.ones(2)), Parameter(np.ones(3))
    opt = SGD([used, unused], lr=0.5)
    used.grad[...] = 7.0
    unused.grad[...] = 9.0
    opt.zero_grad()
    used.grad += 2.0  # as a layer's backward accumulates
    opt.step()
    np.testing.assert_array_equal(used.data, [0.0, 0.0])  # 1 - 0.5 * 2
    np.testing.assert_array_equal(unused.data, [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(unused.grad, 0.0)


def test_load_state_dict_after_optimizer_creation_keeps_the_parameters_attached():
    from mininn.module import Module

    class Tiny(Module):
        def __init__(self):
            super().__init__()
            self.weight = Parameter(np.zeros((2, 2)))

    model = Tiny()
    opt = SGD(model.parameters(), lr=1.0)
    model.load_state_dict({"weight": np.full((2, 2), 3.0)})
    model.weight.grad[...] = 1.0
    opt.step()
    np.testing.assert_array_equal(model.weight.data, np.full((2, 2), 2.0))


def test_step_returns_the_closure_value():
    p = Parameter(np.array([1.0]))
    assert SGD([p]).step(lambda: 1.5) == 1.5
    assert SGD([Parameter(np.array([1.0]))]).step() is None


def test_repr_lists_the_groups():
    text = repr(Adam([Parameter(np.ones(1))], lr=0.5))
    assert text.startswith("Adam (") and "Parameter Group 0" in text and "lr: 0.5" in text


# -- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (SGD, {"lr": -0.1}, "Invalid learning rate: -0.1"),
        (SGD, {"momentum": -1}, "Invalid momentum value: -1"),
        (SGD, {"weight_decay": -1}, "Invalid weight_decay value: -1"),
        (SGD, {"nesterov": True}, "Nesterov momentum requires a momentum and zero dampening"),
        (SGD, {"nesterov": True, "momentum": 0.9, "dampening": 0.1}, "dampening=0.1"),
        (Adam, {"lr": -1e-3}, "Invalid learning rate: -0.001"),
        (Adam, {"eps": -1}, "Invalid epsilon value: -1"),
        (Adam, {"betas": (1.0, 0.999)}, "Invalid beta parameter at index 0: 1.0"),
        (Adam, {"betas": (0.9, -0.1)}, "Invalid beta parameter at index 1: -0.1"),
        (Adam, {"betas": (0.9,)}, "betas must be a pair"),
        (Adam, {"weight_decay": -1}, "Invalid weight_decay value: -1"),
        (AdamW, {"weight_decay": -0.5}, "Invalid weight_decay value: -0.5"),
        (AdamW, {"betas": (0.9, 1.5)}, "Invalid beta parameter at index 1: 1.5"),
        (RMSprop, {"lr": -1}, "Invalid learning rate: -1"),
        (RMSprop, {"alpha": -0.5}, "Invalid alpha value: -0.5"),
        (RMSprop, {"eps": -1}, "Invalid epsilon value: -1"),
        (RMSprop, {"momentum": -1}, "Invalid momentum value: -1"),
        (RMSprop, {"weight_decay": -1}, "Invalid weight_decay value: -1"),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else None,
)
def test_invalid_hyperparameters(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls([Parameter(np.ones(2))], **kwargs)


def test_invalid_hyperparameter_in_a_param_group():
    with pytest.raises(ValueError, match="Invalid learning rate: -2"):
        Adam([{"params": [Parameter(np.ones(2))], "lr": -2}])


def test_empty_parameter_list():
    with pytest.raises(ValueError, match="optimizer got an empty parameter list"):
        SGD([])
    with pytest.raises(ValueError, match="optimizer got an empty parameter list"):
        Adam(iter([]))


def test_parameter_in_two_groups():
    p = Parameter(np.ones(2))
    with pytest.raises(ValueError, match="some parameters appear in more than one parameter"):
        SGD([{"params": [p]}, {"params": [p]}])


def test_params_of_the_wrong_type():
    with pytest.raises(TypeError, match="iterable of Parameters or dicts"):
        SGD(Parameter(np.ones(2)))
    with pytest.raises(TypeError, match=r"SGD can only optimize Parameters.*ndarray"):
        SGD([np.ones(2)])


@pytest.mark.parametrize("what", ["data", "grad"])
def test_replaced_array_is_detected(what):
    p = Parameter(np.ones(2))
    opt = SGD([p])
    setattr(p, what, np.zeros(2))
    with pytest.raises(RuntimeError, match=r"SGD: .*shape \[\(2,\)\].*Module.to\(\)"):
        opt.step()
    with pytest.raises(RuntimeError, match="no longer share memory"):
        opt.zero_grad()


def test_base_class_step_is_abstract():
    opt = Optimizer([Parameter(np.ones(1))], {})
    with pytest.raises(NotImplementedError, match="Optimizer is missing"):
        opt.step()


# -- interop: the PyTorch twin built mid-run ------------------------------------------


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_optimizer_to_torch_mid_run_carries_the_state(config):
    torch = pytest.importorskip("torch")
    from mininn.interop import optimizer_to_torch

    cls, kwargs = config
    init, grads = _random_problem(np.float64, seed=6)
    params = [Parameter(a) for a in init]
    opt = cls(params, **kwargs)
    for step_grads in grads[:4]:
        for p, g in zip(params, step_grads, strict=True):
            p.grad[...] = g
        opt.step()
    tparams = [torch.nn.Parameter(torch.from_numpy(p.data.copy())) for p in params]
    topt = optimizer_to_torch(opt, tparams)
    assert type(topt) is getattr(torch.optim, cls.__name__)
    tstate = topt.state_dict()["state"]
    for index, state in opt.state_dict()["state"].items():
        assert list(tstate[index]) == list(state)
        for key, value in state.items():
            np.testing.assert_array_equal(tstate[index][key].numpy(), value)
    for step_grads in grads[4:]:
        for p, tp, g in zip(params, tparams, step_grads, strict=True):
            p.grad[...] = g
            tp.grad = torch.from_numpy(g.copy())
        opt.step()
        topt.step()
    for p, q in zip(params, tparams, strict=True):
        np.testing.assert_allclose(p.data, q.detach().numpy(), rtol=1e-10, atol=0)
