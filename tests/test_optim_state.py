"""Tests of Optimizer.state_dict() / load_state_dict(): PyTorch's layout and values,
a resumed run bit-identical to an uninterrupted one, copies, and every error."""

import numpy as np
import pytest

import mininn
from mininn.module import Parameter
from mininn.optim import SGD, Adam, AdamW, RMSprop

CONFIGS = {
    "SGD": (SGD, {"lr": 0.1}),
    "SGD-momentum": (SGD, {"lr": 0.1, "momentum": 0.9}),
    "SGD-momentum-dampening": (SGD, {"lr": 0.1, "momentum": 0.9, "dampening": 0.3}),
    "SGD-nesterov-weight_decay": (
        SGD,
        {"lr": 0.1, "momentum": 0.8, "nesterov": True, "weight_decay": 0.1},
    ),
    "Adam": (Adam, {"lr": 0.01}),
    "Adam-weight_decay-amsgrad": (Adam, {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True}),
    "AdamW": (AdamW, {"lr": 0.01, "betas": (0.5, 0.9)}),
    "AdamW-weight_decay-amsgrad": (AdamW, {"lr": 0.01, "weight_decay": 0.3, "amsgrad": True}),
    "RMSprop": (RMSprop, {"lr": 0.01}),
    "RMSprop-momentum-weight_decay": (
        RMSprop,
        {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.1},
    ),
    "RMSprop-centered-momentum": (RMSprop, {"lr": 0.01, "centered": True, "momentum": 0.5}),
}
SHAPES = [(4, 3), (4,), (2, 3, 2), ()]
STEPS = 6
# Implementation flags that torch.optim keeps in its param groups and mininn has not.
TORCH_ONLY = {"foreach", "fused", "capturable", "differentiable", "decoupled_weight_decay"}


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(shape) for shape in SHAPES]
    grads = [[rng.standard_normal(shape) for shape in SHAPES] for _ in range(STEPS)]
    return init, grads


def _steps(opt, params, grads):
    for step_grads in grads:
        opt.zero_grad()
        for p, g in zip(params, step_grads, strict=True):
            p.grad += g
        opt.step()


# -- PyTorch's layout and values --------------------------------------------------------


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_state_dict_equals_torch_state_dict(config):
    torch = pytest.importorskip("torch")
    cls, kwargs = config
    init, grads = _problem()
    params = [Parameter(a) for a in init]
    # Two groups, the second with its own lr, to check the numbering across groups.
    opt = cls([{"params": params[:1]}, {"params": params[1:], "lr": 0.05}], **kwargs)
    tparams = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in init]
    topt = getattr(torch.optim, cls.__name__)(
        [{"params": tparams[:1]}, {"params": tparams[1:], "lr": 0.05}], **kwargs
    )
    _steps(opt, params, grads)
    for step_grads in grads:
        topt.zero_grad()
        for p, g in zip(tparams, step_grads, strict=True):
            p.grad = torch.from_numpy(g.copy())
        topt.step()

    ours, theirs = opt.state_dict(), topt.state_dict()
    assert set(ours) == {"state", "param_groups"}
    assert len(ours["param_groups"]) == len(theirs["param_groups"]) == 2
    for group, tgroup in zip(ours["param_groups"], theirs["param_groups"], strict=True):
        assert set(tgroup) - set(group) <= TORCH_ONLY
        assert group == {key: tgroup[key] for key in group}
    assert ours["param_groups"][1]["params"] == [1, 2, 3]
    assert sorted(ours["state"]) == sorted(theirs["state"])
    for index, tstate in theirs["state"].items():
        state = ours["state"][index]
        assert list(state) == list(tstate)
        for key, value in tstate.items():
            if key == "step":
                assert isinstance(state[key], int) and state[key] == float(value) == STEPS
            else:
                assert isinstance(state[key], np.ndarray) and state[key].shape == value.shape
                np.testing.assert_allclose(state[key], value.numpy(), rtol=1e-10, atol=0)


# -- resumed runs -----------------------------------------------------------------------


def _model(dtype, seed):
    mininn.manual_seed(seed)
    return mininn.models.make_mlp(5, [7, 6], 3, dtype=dtype)


def _train(model, opt, batches):
    loss_fn = mininn.MSELoss()
    for x, target in batches:
        opt.zero_grad()
        loss_fn(model(x), target)
        model.backward(loss_fn.backward())
        opt.step()


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_resumed_run_is_bit_identical_to_uninterrupted(config, dtype, tmp_path):
    cls, kwargs = config
    rng = np.random.default_rng(1)
    batches = [
        (rng.standard_normal((8, 5)).astype(dtype), rng.standard_normal((8, 3)).astype(dtype))
        for _ in range(STEPS)
    ]
    whole = _model(dtype, seed=0)
    _train(whole, cls(whole.parameters(), **kwargs), batches)

    first = _model(dtype, seed=0)
    first_opt = cls(first.parameters(), **kwargs)
    _train(first, first_opt, batches[:3])
    path = tmp_path / "checkpoint.npz"
    mininn.save({"model": first.state_dict(), "optimizer": first_opt.state_dict()}, path)
    del first, first_opt
    checkpoint = mininn.load(path)

    # Another seed and another lr: everything must come from the checkpoint.
    resumed = _model(dtype, seed=99)
    resumed_opt = cls(resumed.parameters(), **{**kwargs, "lr": 1.0})
    resumed.load_state_dict(checkpoint["model"])
    resumed_opt.load_state_dict(checkpoint["optimizer"])
    assert resumed_opt.param_groups[0]["lr"] == kwargs["lr"]
    _train(resumed, resumed_opt, batches[3:])

    for (name, p), q in zip(resumed.named_parameters(), whole.parameters(), strict=True):
        assert p.data.dtype == dtype
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)
    assert resumed_opt.state_dict()["state"].keys() == checkpoint["optimizer"]["state"].keys()


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_load_restarts_parameters_without_saved_state(config):
    # The saved optimizer never stepped parameter 1; the loading one had: after loading,
    # parameter 1 must start afresh (zero state), exactly as in the saved optimizer.
    cls, kwargs = config
    init, grads = _problem(seed=2)
    saved_params = [Parameter(a) for a in init]
    saved_params[1].requires_grad = False
    saved = cls(saved_params, **kwargs)
    _steps(saved, saved_params, grads[:3])
    saved_params[1].requires_grad = True

    params = [Parameter(p.data) for p in saved_params]
    opt = cls(params, **kwargs)
    _steps(opt, params, grads)  # state everywhere, with other values
    for p, q in zip(params, saved_params, strict=True):
        p.data[...] = q.data
    opt.load_state_dict(saved.state_dict())
    assert params[1] not in opt.state or not opt.state[params[1]]

    _steps(saved, saved_params, grads[3:])
    _steps(opt, params, grads[3:])
    for p, q in zip(params, saved_params, strict=True):
        np.testing.assert_array_equal(p.data, q.data)


def test_state_dict_returns_copies_and_load_copies_in():
    p = Parameter(np.array([1.0, 2.0]))
    opt = Adam([p], lr=0.1)
    p.grad[...] = [1.0, -1.0]
    opt.step()
    state = opt.state_dict()
    exp_avg = opt.state[p]["exp_avg"].copy()
    state["state"][0]["exp_avg"][...] = 100.0
    state["param_groups"][0]["lr"] = 5.0
    np.testing.assert_array_equal(opt.state[p]["exp_avg"], exp_avg)
    assert opt.param_groups[0]["lr"] == 0.1

    q = Parameter(np.array([1.0, 2.0]))
    other = Adam([q])
    other.load_state_dict(state)
    state["state"][0]["exp_avg"][...] = -7.0
    np.testing.assert_array_equal(other.state[q]["exp_avg"], [100.0, 100.0])
    assert other.param_groups[0]["lr"] == 5.0


def test_loaded_state_lives_in_the_flat_buffers_that_step_uses():
    params = [Parameter(np.zeros(2)), Parameter(np.zeros(3))]
    opt = SGD(params, lr=1.0, momentum=0.5)
    opt.load_state_dict(
        {
            "state": {1: {"momentum_buffer": np.array([2.0, 4.0, 6.0])}},
            "param_groups": [{**opt.state_dict()["param_groups"][0]}],
        }
    )
    assert opt.state[params[1]]["momentum_buffer"].base is opt._flats[0][0].state_buffer(
        "momentum_buffer"
    )
    opt.step()  # zero gradients: b ← 0.5 b for the loaded one, θ ← θ − b
    np.testing.assert_array_equal(params[1].data, [-1.0, -2.0, -3.0])
    np.testing.assert_array_equal(params[0].data, [0.0, 0.0])


def test_load_accepts_what_a_file_gives_back():
    # String keys, NumPy scalars and 0-d arrays, lists for tuples: as a checkpoint may
    # return them.
    init, grads = _problem(seed=3)
    params = [Parameter(a) for a in init]
    opt = Adam(params, lr=0.01, betas=(0.5, 0.9))
    _steps(opt, params, grads[:2])
    state = opt.state_dict()
    from_file = {
        "state": {
            str(i): {k: np.asarray(v) for k, v in s.items()} for i, s in state["state"].items()
        },
        "param_groups": [
            {
                **{k: np.float64(v) if isinstance(v, float) else v for k, v in g.items()},
                "betas": list(g["betas"]),
                "params": np.array(g["params"]),
            }
            for g in state["param_groups"]
        ],
    }
    fresh_params = [Parameter(p.data) for p in params]
    fresh = Adam(fresh_params)
    fresh.load_state_dict(from_file)
    assert fresh.param_groups[0]["betas"] == (0.5, 0.9)
    assert type(fresh.param_groups[0]["lr"]) is float
    assert fresh.state[fresh_params[0]]["step"] == 2
    _steps(opt, params, grads[2:])
    _steps(fresh, fresh_params, grads[2:])
    for p, q in zip(fresh_params, params, strict=True):
        np.testing.assert_array_equal(p.data, q.data)


def test_load_ignores_torch_implementation_flags():
    torch = pytest.importorskip("torch")
    init, grads = _problem(seed=4)
    tparams = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in init]
    topt = torch.optim.RMSprop(tparams, lr=0.01, momentum=0.5)
    for p, g in zip(tparams, grads[0], strict=True):
        p.grad = torch.from_numpy(g.copy())
    topt.step()
    tstate = topt.state_dict()
    state = {
        "state": {i: {k: v.numpy() for k, v in s.items()} for i, s in tstate["state"].items()},
        "param_groups": tstate["param_groups"],
    }
    params = [Parameter(p.detach().numpy()) for p in tparams]
    opt = RMSprop(params, momentum=0.5)
    opt.load_state_dict(state)
    assert "foreach" not in opt.param_groups[0]
    assert opt.state[params[0]]["step"] == 1


# -- errors -------------------------------------------------------------------------------


def _stepped(cls=Adam, shapes=((2, 3), (3,)), **kwargs):
    params = [Parameter(np.ones(shape)) for shape in shapes]
    opt = cls(params, **kwargs)
    for p in params:
        p.grad[...] = 0.5
    opt.step()
    return opt


def test_load_lists_every_mismatch_in_one_error_and_changes_nothing():
    saved = _stepped(shapes=((2, 3), (4,))).state_dict()
    saved["state"][0]["step"] = -1
    saved["state"][0]["exp_avg_sq"] = np.zeros((3, 2))
    saved["param_groups"][0]["lr"] = -0.5
    opt = _stepped(lr=0.02)
    before = opt.state_dict()
    with pytest.raises(ValueError) as error:
        opt.load_state_dict(saved)
    message = str(error.value)
    assert message.startswith("Adam.load_state_dict: the state dict does not fit this optimizer")
    assert "step -1, expected a count >= 0" in message
    assert (
        "state 'exp_avg_sq' of parameter 0 has shape (3, 2) (float64), the parameter (2, 3)"
        in message
    )
    assert "state 'exp_avg' of parameter 1 has shape (4,)" in message
    assert "Invalid learning rate: -0.5" in message
    assert "Load a state dict saved from a Adam over the same parameters" in message
    after = opt.state_dict()
    assert after["param_groups"] == before["param_groups"]
    for index, state in before["state"].items():
        for key, value in state.items():
            np.testing.assert_array_equal(after["state"][index][key], value)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda s: s["param_groups"].append({**s["param_groups"][0], "params": [2]}),
         r"2 parameter group\(s\) saved, the optimizer has 1"),
        (lambda s: s["param_groups"][0]["params"].append(2),
         r"group 0 has 3 parameter\(s\) saved, the optimizer's has 2"),
        (lambda s: s["state"].update({7: s["state"][0]}),
         "state of parameter 7, which no group lists"),
        (lambda s: s["state"][1].pop("exp_avg_sq"),
         r"state of parameter 1 lacks \['exp_avg_sq'\]"),
        (lambda s: s["state"][1].update(momentum_buffer=np.zeros(3)),
         r"has \['momentum_buffer'\], which Adam does not keep \(it keeps \['step', 'exp_avg'"),
        (lambda s: s["state"][1].update(step=1.5), "step 1.5, expected a count >= 0"),
        (lambda s: s["param_groups"][0].pop("betas"),
         r"group 0 lacks hyperparameter\(s\) \['betas'\]"),
        (lambda s: s["param_groups"][0].update(alpha=0.9),
         r"group 0 has hyperparameter\(s\) \['alpha'\], which Adam does not take"),
        (lambda s: s["param_groups"][0].update(betas=(0.9, 1.0)),
         "group 0: Invalid beta parameter at index 1: 1.0"),
        (lambda s: s["param_groups"][0].update(amsgrad=True),
         r"state of parameter 0 lacks \['max_exp_avg_sq'\]"),
    ],
    ids=["groups", "params", "unknown-index", "missing-state", "unknown-state", "step",
         "missing-hyperparameter", "unknown-hyperparameter", "bad-hyperparameter",
         "amsgrad-without-its-state"],
)  # fmt: skip
def test_load_mismatch(mutate, match):
    saved = _stepped().state_dict()
    mutate(saved)
    with pytest.raises(ValueError, match=match):
        _stepped().load_state_dict(saved)


def test_load_state_of_another_optimizer_class():
    with pytest.raises(ValueError, match=r"SGD.load_state_dict: .*\['betas', 'eps'"):
        _stepped(SGD, momentum=0.9).load_state_dict(_stepped(Adam).state_dict())
    with pytest.raises(ValueError, match="does not keep"):
        _stepped(RMSprop).load_state_dict(_stepped(Adam).state_dict())


def test_load_something_else():
    with pytest.raises(ValueError, match=r"expected a dict with 'state' and 'param_groups'"):
        _stepped().load_state_dict({"weight": np.ones(2)})
    with pytest.raises(ValueError, match=r"from Optimizer.state_dict\(\)\), got list"):
        _stepped().load_state_dict([])
