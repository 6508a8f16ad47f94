"""Parameter, Module and Sequential (mininn.module): registration, discovery, mode, state."""

from __future__ import annotations

import numpy as np
import pytest

from mininn.activations import ReLU
from mininn.layers import BatchNorm1d, Dropout, Linear
from mininn.module import Module, Parameter, Sequential


class _Block(Module):
    """A hand-made module with a parameter, a buffer and a child."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = Parameter(np.ones(2))
        self.register_buffer("count", np.zeros(1))
        self.inner = Linear(2, 2)


def _mlp() -> Sequential:
    return Sequential(Linear(4, 3), BatchNorm1d(3), ReLU(), Dropout(0.1), Linear(3, 2))


def test_parameters_buffers_and_children_are_registered_in_order():
    block = _Block()
    assert [name for name, _ in block.named_parameters()] == ["scale", "inner.weight", "inner.bias"]
    assert [name for name, _ in block.named_buffers()] == ["count"]
    assert [name for name, _ in block.named_children()] == ["inner"]
    assert [name for name, _ in block.named_modules()] == ["", "inner"]
    assert [name for name, _ in block.named_parameters(recurse=False)] == ["scale"]


def test_sequential_names_are_dotted_indices():
    names = [name for name, _ in _mlp().named_parameters()]
    assert names == ["0.weight", "0.bias", "1.weight", "1.bias", "4.weight", "4.bias"]


def test_shared_parameter_is_yielded_once():
    first, second = Linear(3, 3), Linear(3, 3)
    second.weight = first.weight
    model = Sequential(first, second)
    assert [name for name, _ in model.named_parameters()] == ["0.weight", "0.bias", "1.bias"]
    assert len(list(model.parameters())) == 3


def test_buffers_are_in_state_dict_not_parameters():
    model = _mlp()
    parameters = {name for name, _ in model.named_parameters()}
    assert "1.running_mean" not in parameters
    assert {"1.running_mean", "1.running_var", "1.num_batches_tracked"} <= set(model.state_dict())


def test_zero_grad_clears_every_parameter():
    model = _mlp()
    for param in model.parameters():
        param.grad += 1.0
    model.zero_grad()
    assert all(not param.grad.any() for param in model.parameters())


def test_zero_grad_fills_zeros_in_the_same_array():
    param = Parameter(np.ones((3, 2)))
    buffer = param.grad
    buffer[...] = 5.0
    param.zero_grad()
    assert param.grad is buffer  # in place: an optimizer's view of it stays valid
    np.testing.assert_array_equal(buffer, 0.0)  # zeros at once, through any reference


def test_backward_adds_to_an_assigned_gradient(rng):
    layer = Linear(3, 2, dtype=np.float64)
    x, g = rng.normal(size=(4, 3)), rng.normal(size=(4, 2))
    layer.weight.grad = np.full((2, 3), 2.0)
    layer(x)
    layer.backward(g)
    np.testing.assert_allclose(layer.weight.grad, 2.0 + g.T @ x, rtol=1e-15)


def test_gradient_after_zero_grad_equals_a_fresh_one_bit_for_bit(rng):
    layer = Linear(5, 3)
    x, g = rng.normal(size=(8, 5)).astype(np.float32), rng.normal(size=(8, 3)).astype(np.float32)
    layer(x)
    layer.backward(g)
    layer.backward(g)  # a stale, accumulated gradient
    layer.zero_grad()
    layer(x)
    layer.backward(g)
    np.testing.assert_array_equal(layer.weight.grad, g.T @ x)
    np.testing.assert_array_equal(layer.bias.grad, g.sum(axis=0))


def test_train_and_eval_recurse_and_return_self():
    model = Sequential(_mlp(), Dropout())
    assert model.eval() is model
    assert not any(module.training for module in model.modules())
    assert model.train() is model
    assert all(module.training for module in model.modules())


def test_state_dict_returns_copies():
    model = _mlp()
    state = model.state_dict()
    snapshot = {key: value.copy() for key, value in state.items()}
    model[0].weight.data += 1.0
    model[1].running_mean += 1.0
    for key, value in state.items():
        np.testing.assert_array_equal(value, snapshot[key])


def test_state_dict_keys_and_order_match_torch():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    reference = nn.Sequential(
        nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Dropout(0.1), nn.Linear(3, 2)
    )
    assert list(_mlp().state_dict()) == list(reference.state_dict())


def test_load_state_dict_copies_in_place_and_keeps_identity():
    source, target = _mlp(), _mlp()
    source[1].running_var += 2.0
    weight = target[0].weight  # as an optimizer holds it
    weight_array = weight.data
    missing, unexpected = target.load_state_dict(source.state_dict())
    assert (missing, unexpected) == ([], [])
    assert target[0].weight is weight and weight.data is weight_array
    for key, value in source.state_dict().items():
        np.testing.assert_array_equal(target.state_dict()[key], value)


def test_load_state_dict_collects_all_problems_and_changes_nothing():
    model = _mlp()
    before = model.state_dict()
    state = model.state_dict()
    del state["0.bias"]
    state["extra"] = np.zeros(1)
    state["4.weight"] = np.zeros((5, 5))
    with pytest.raises(RuntimeError) as error:
        model.load_state_dict(state)
    message = str(error.value)
    assert 'Missing key(s) in state_dict: "0.bias"' in message
    assert 'Unexpected key(s) in state_dict: "extra"' in message
    assert "size mismatch for 4.weight" in message
    for key, value in model.state_dict().items():  # checked first, so nothing was copied
        np.testing.assert_array_equal(value, before[key])


def test_load_state_dict_not_strict_reports_keys():
    model = _mlp()
    state = model.state_dict()
    del state["0.bias"]
    state["extra"] = np.zeros(1)
    assert model.load_state_dict(state, strict=False) == (["0.bias"], ["extra"])


def test_repr_is_torch_style_tree():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    reference = nn.Sequential(
        nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Dropout(0.1), nn.Linear(3, 2)
    )
    assert repr(_mlp()) == repr(reference)


@pytest.mark.parametrize(
    "value, kind",
    [
        pytest.param(Parameter(np.ones(1)), "parameters", id="parameter"),
        pytest.param(ReLU(), "submodules", id="module"),
    ],
)
def test_assignment_before_init_raises(value, kind):
    class Broken(Module):
        def __init__(self) -> None:
            self.thing = value  # before super().__init__()

    with pytest.raises(
        AttributeError, match=rf"cannot assign {kind} before Module\.__init__\(\) call"
    ):
        Broken()


def test_base_forward_and_backward_name_the_class():
    with pytest.raises(
        NotImplementedError, match="Module is missing the required 'forward' method"
    ):
        Module()(np.ones(1))
    with pytest.raises(
        NotImplementedError, match="Module is missing the required 'backward' method"
    ):
        Module().backward(np.ones(1))


def test_sequential_backward_runs_in_reverse(rng):
    model = Sequential(Linear(4, 3, dtype=np.float64), ReLU(), Linear(3, 2, dtype=np.float64))
    x, g = rng.normal(size=(5, 4)), rng.normal(size=(5, 2))
    model(x)
    grad_input = model.backward(g)
    by_hand = model[0].backward(model[1].backward(model[2].backward(g)))
    np.testing.assert_allclose(grad_input, by_hand, rtol=1e-14)


def _param_grads(model: Module) -> list[np.ndarray]:
    return [p.grad.copy() for p in model.parameters()]


@pytest.mark.parametrize(
    "make_model",
    [
        lambda: Sequential(Linear(4, 3, dtype=np.float64), ReLU(), Linear(3, 2, dtype=np.float64)),
        lambda: Sequential(
            Sequential(Linear(4, 3, dtype=np.float64), ReLU()), Linear(3, 2, dtype=np.float64)
        ),
        lambda: Sequential(Dropout(0.0), Linear(4, 2, dtype=np.float64)),
        lambda: Sequential(BatchNorm1d(4, dtype=np.float64), Linear(4, 2, dtype=np.float64)),
    ],
    ids=["linear_first", "nested_sequential_first", "dropout_first", "batchnorm_first"],
)
def test_sequential_backward_without_input_grad(make_model, rng):
    model = make_model()
    x, g = rng.normal(size=(5, 4)), rng.normal(size=(5, 2))
    model(x)
    grad_input = model.backward(g)
    assert grad_input.shape == x.shape
    with_input = _param_grads(model)
    model.zero_grad()
    assert model.backward(g, input_grad=False) is None
    for actual, expected in zip(_param_grads(model), with_input, strict=True):
        np.testing.assert_array_equal(actual, expected)


def test_sequential_backward_without_input_grad_skips_first_linear_product(rng, monkeypatch):
    model = Sequential(Linear(4, 3, dtype=np.float64), ReLU(), Linear(3, 2, dtype=np.float64))
    model(rng.normal(size=(5, 4)))
    calls = []
    original = Linear.backward

    def spy(self, grad_output, *, input_grad=True):
        calls.append(input_grad)
        return original(self, grad_output, input_grad=input_grad)

    monkeypatch.setattr(Linear, "backward", spy)
    model.backward(rng.normal(size=(5, 2)), input_grad=False)
    assert calls == [True, False]  # the last layer still passes dL/dx on; the first skips it


def test_empty_sequential_backward_without_input_grad():
    g = np.ones((2, 3))
    assert Sequential().backward(g) is g
    assert Sequential().backward(g, input_grad=False) is None


def test_a_failed_backward_after_zero_grad_leaves_the_next_one_right(rng):
    layer = Linear(3, 2, dtype=np.float64)
    x, g = rng.normal(size=(4, 3)), rng.normal(size=(4, 2))
    layer(x)
    layer.backward(g)  # a first step's gradient, left in the buffer
    layer.zero_grad()
    layer(x)
    with pytest.raises(ValueError, match=r"grad_output has shape \(4, 5\)"):
        layer.backward(rng.normal(size=(4, 5)))
    layer.backward(g)
    np.testing.assert_allclose(layer.weight.grad, g.T @ x, rtol=1e-15)
    np.testing.assert_allclose(layer.bias.grad, g.sum(axis=0), rtol=1e-15)


@pytest.mark.parametrize(
    "value, error, got",
    [(None, TypeError, "got NoneType"), (np.zeros(4), ValueError, r"got shape \(4,\)")],
    ids=["none", "wrong_shape"],
)
def test_grad_assignment_must_be_an_array_of_the_parameter_shape(value, error, got):
    param = Parameter(np.zeros(3))
    with pytest.raises(error, match=rf"parameter's shape \(3,\), {got}; .*zero_grad\(\)"):
        param.grad = value


def test_a_parameter_pickled_with_a_plain_grad_attribute_still_loads():
    import pickle

    param = Parameter(np.ones(2))
    state = dict(param.__dict__)
    state["grad"] = state.pop("_grad")  # the layout before .grad became a property

    class Old:  # pickles the old layout by hand: __reduce__ with the raw state
        def __reduce__(self):
            return (Parameter.__new__, (Parameter,), state)

    restored = pickle.loads(pickle.dumps(Old()))
    restored.grad[...] = 5.0
    restored.zero_grad()
    np.testing.assert_array_equal(restored.grad, 0.0)
    assert restored.data is not None


def test_a_parameter_pickled_with_a_zero_grad_mark_loads_with_zeros():
    import pickle

    param = Parameter(np.ones(2))
    state = dict(param.__dict__)
    state["_grad"] = np.full(2, 7.0)  # stale values ...
    state["_grad_zeroed"] = True  # ... that an older zero_grad marked as standing for zeros

    class Old:
        def __reduce__(self):
            return (Parameter.__new__, (Parameter,), state)

    restored = pickle.loads(pickle.dumps(Old()))
    np.testing.assert_array_equal(restored.grad, 0.0)
    assert "_grad_zeroed" not in restored.__dict__


def test_sequential_is_one_class_under_every_public_path():
    import mininn
    import mininn.container
    import mininn.module

    assert mininn.module.Sequential is mininn.container.Sequential is mininn.Sequential
    assert Sequential is mininn.Sequential


def test_module_resolves_no_other_name_lazily():
    import mininn.module

    with pytest.raises(AttributeError, match=r"module 'mininn\.module' has no attribute 'Linear'"):
        mininn.module.Linear  # noqa: B018
