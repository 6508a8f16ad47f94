"""Linear, BatchNorm1d, Dropout, Identity: gradients, PyTorch agreement, errors."""

from __future__ import annotations

import functools
import math
import re

import numpy as np
import pytest

from mininn import init
from mininn._rng import manual_seed
from mininn.activations import ReLU
from mininn.gradcheck import gradcheck
from mininn.layers import BatchNorm1d, Dropout, Identity, Linear
from mininn.module import Sequential

DTYPES = [pytest.param(np.float32, id="float32"), pytest.param(np.float64, id="float64")]


def _torch_tensor(torch, array, requires_grad=False):
    return torch.tensor(array, requires_grad=requires_grad)


# -- Linear ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_linear_gradcheck_input_and_parameters(bias, rng):
    layer = Linear(4, 3, bias=bias, dtype=np.float64)
    result = gradcheck(layer, rng.normal(size=(5, 4)))
    assert result.checked == (("input", "weight", "bias") if bias else ("input", "weight"))


def test_linear_backward_accumulates(rng):
    layer = Linear(4, 3, dtype=np.float64)
    x, g = rng.normal(size=(5, 4)), rng.normal(size=(5, 3))
    layer(x)
    layer.backward(g)
    once = layer.weight.grad.copy(), layer.bias.grad.copy()
    layer(x)
    layer.backward(g)
    np.testing.assert_allclose(layer.weight.grad, 2 * once[0], rtol=1e-12)
    np.testing.assert_allclose(layer.bias.grad, 2 * once[1], rtol=1e-12)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_linear_backward_without_input_grad_gives_same_parameter_grads(bias, rng):
    layer = Linear(4, 3, bias=bias, dtype=np.float64)
    x, g = rng.normal(size=(5, 4)), rng.normal(size=(5, 3))
    layer(x)
    grad_input = layer.backward(g)
    with_input = [p.grad.copy() for p in layer.parameters()]
    layer.zero_grad()
    assert layer.backward(g, input_grad=False) is None
    for param, expected in zip(layer.parameters(), with_input, strict=True):
        np.testing.assert_array_equal(param.grad, expected)
    np.testing.assert_allclose(grad_input, g @ layer.weight.data, rtol=1e-14)


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_matches_torch(dtype, rng, assert_close):
    torch = pytest.importorskip("torch")
    layer = Linear(6, 4, dtype=dtype)
    x, g = rng.normal(size=(8, 6)).astype(dtype), rng.normal(size=(8, 4)).astype(dtype)
    ref = torch.nn.Linear(6, 4).to(torch.float64 if dtype == np.float64 else torch.float32)
    with torch.no_grad():  # same layout: no transposes
        ref.weight.copy_(torch.from_numpy(layer.weight.data))
        ref.bias.copy_(torch.from_numpy(layer.bias.data))
    x_t = _torch_tensor(torch, x, requires_grad=True)
    y_t = ref(x_t)
    y_t.backward(torch.from_numpy(g))
    y = layer(x)
    grad_input = layer.backward(g)
    assert y.dtype == grad_input.dtype == layer.weight.grad.dtype == dtype
    assert_close(y, y_t.detach().numpy())
    assert_close(grad_input, x_t.grad.numpy())
    assert_close(layer.weight.grad, ref.weight.grad.numpy())
    assert_close(layer.bias.grad, ref.bias.grad.numpy())


def test_linear_default_init_is_torch_bound_and_not_explicit():
    layer = Linear(400, 30)
    bound = 1 / math.sqrt(400)
    assert np.abs(layer.weight.data).max() <= bound
    assert np.abs(layer.weight.data).max() > 0.9 * bound  # fills the range
    assert np.abs(layer.bias.data).max() <= bound
    assert layer.weight._explicit_init is False
    assert layer.weight.dtype == np.float32


def test_linear_default_init_follows_manual_seed():
    manual_seed(3)
    first = Linear(5, 4).weight.data.copy()
    manual_seed(3)
    np.testing.assert_array_equal(Linear(5, 4).weight.data, first)


@pytest.mark.parametrize(
    "init_arg, expected",
    [
        pytest.param("kaiming_normal", init.kaiming_normal_, id="name"),
        pytest.param(functools.partial(init.xavier_uniform_), init.xavier_uniform_, id="callable"),
    ],
)
def test_linear_explicit_init_marks_weight_and_zeros_bias(init_arg, expected):
    manual_seed(7)
    layer = Linear(50, 40, init=init_arg, dtype=np.float64)
    manual_seed(7)
    reference = Linear(50, 40, dtype=np.float64)  # same draws for reset_parameters
    expected(reference.weight)  # then the initialiser, from the same generator state
    np.testing.assert_array_equal(layer.weight.data, reference.weight.data)
    assert layer.weight._explicit_init is True
    np.testing.assert_array_equal(layer.bias.data, 0)


def test_linear_explicit_init_is_kept_by_sequential():
    layer = Linear(20, 10, init=lambda weight: weight.data.fill(0.5))
    Sequential(layer, ReLU())  # would apply Kaiming to a non-explicit weight
    np.testing.assert_array_equal(layer.weight.data, 0.5)


def test_linear_repr_matches_torch():
    torch = pytest.importorskip("torch")
    assert repr(Linear(4, 8)) == repr(torch.nn.Linear(4, 8))
    assert repr(Linear(4, 8, bias=False)) == repr(torch.nn.Linear(4, 8, bias=False))


@pytest.mark.parametrize(
    "shape, match",
    [
        pytest.param(
            (32, 5), r"Linear: expected input of shape \(N, 4\), got \(32, 5\)", id="features"
        ),
        pytest.param((4,), r"Linear: expected input of shape \(N, 4\), got \(4,\)", id="1d"),
        pytest.param((2, 3, 4), r"got \(2, 3, 4\)", id="3d"),
    ],
)
def test_linear_rejects_wrong_input_shape(shape, match):
    with pytest.raises(ValueError, match=match):
        Linear(4, 2)(np.zeros(shape, dtype=np.float32))


def test_linear_rejects_dtype_mismatch():
    with pytest.raises(TypeError, match=r"Linear: input dtype float64 differs .* float32"):
        Linear(4, 2)(np.zeros((3, 4)))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        pytest.param({"in_features": 0}, ValueError, "in_features must be a positive", id="in0"),
        pytest.param({"out_features": 2.5}, ValueError, "out_features", id="out_float"),
        pytest.param({"init": "he"}, ValueError, "unknown init 'he'", id="init_name"),
        pytest.param({"init": 3}, TypeError, "init must be a name or a callable", id="init_type"),
        pytest.param({"dtype": np.int32}, TypeError, "float32 or float64", id="dtype"),
    ],
)
def test_linear_rejects_bad_arguments(kwargs, error, match):
    arguments = {"in_features": 3, "out_features": 2, **kwargs}
    with pytest.raises(error, match=match):
        Linear(**arguments)


# -- BatchNorm1d -----------------------------------------------------------------------------


def _randomised_bn(dtype=np.float64, **kwargs):
    bn = BatchNorm1d(3, dtype=dtype, **kwargs)
    values = np.random.default_rng(5)
    if bn.weight is not None:
        bn.weight.data[...] = values.uniform(0.5, 2.0, size=3)
        bn.bias.data[...] = values.normal(size=3)
    if bn.running_mean is not None:
        bn.running_mean[...] = values.normal(size=3)
        bn.running_var[...] = values.uniform(0.5, 2.0, size=3)
    return bn


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
def test_batchnorm_gradcheck(training, affine, rng):
    bn = _randomised_bn(affine=affine).train(training)
    x = rng.normal(2.0, 3.0, size=(6, 3))
    result = gradcheck(bn, x)
    assert result.checked == (("input", "weight", "bias") if affine else ("input",))


def test_batchnorm_backward_accumulates(rng):
    bn = _randomised_bn()
    x, g = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    bn(x)
    bn.backward(g)
    once = bn.weight.grad.copy()
    bn(x)
    bn.backward(g)
    np.testing.assert_allclose(bn.weight.grad, 2 * once, rtol=1e-12)


def _torch_bn(torch, bn, dtype):
    ref = torch.nn.BatchNorm1d(
        3, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
        track_running_stats=bn.track_running_stats,
    ).to(torch.float64 if dtype == np.float64 else torch.float32)  # fmt: skip
    ref.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in bn.state_dict().items()})
    return ref


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum", [0.1, 0.5, None], ids=["m0.1", "m0.5", "cumulative"])
def test_batchnorm_training_matches_torch_for_k_steps(dtype, momentum, rng, assert_close):
    torch = pytest.importorskip("torch")
    bn = _randomised_bn(dtype, momentum=momentum)
    ref = _torch_bn(torch, bn, dtype)
    for _ in range(4):
        x = rng.normal(1.0, 2.0, size=(7, 3)).astype(dtype)
        g = rng.normal(size=(7, 3)).astype(dtype)
        x_t = _torch_tensor(torch, x, requires_grad=True)
        y_t = ref(x_t)
        y_t.backward(torch.from_numpy(g))
        y = bn(x)
        assert_close(y, y_t.detach().numpy())
        assert_close(bn.backward(g), x_t.grad.numpy())
    assert_close(bn.weight.grad, ref.weight.grad.numpy())
    assert_close(bn.bias.grad, ref.bias.grad.numpy())
    assert_close(bn.running_mean, ref.running_mean.numpy())
    assert_close(bn.running_var, ref.running_var.numpy())
    assert bn.num_batches_tracked.dtype == np.int64
    assert int(bn.num_batches_tracked) == int(ref.num_batches_tracked) == 4


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("track", [True, False], ids=["running", "untracked"])
def test_batchnorm_eval_matches_torch(dtype, track, rng, assert_close):
    torch = pytest.importorskip("torch")
    bn = _randomised_bn(dtype, track_running_stats=track).eval()
    ref = _torch_bn(torch, bn, dtype).eval()
    x = rng.normal(size=(5, 3)).astype(dtype)
    g = rng.normal(size=(5, 3)).astype(dtype)
    x_t = _torch_tensor(torch, x, requires_grad=True)
    y_t = ref(x_t)
    y_t.backward(torch.from_numpy(g))
    assert_close(bn(x), y_t.detach().numpy())
    assert_close(bn.backward(g), x_t.grad.numpy())
    assert_close(bn.weight.grad, ref.weight.grad.numpy())


def test_batchnorm_eval_does_not_touch_running_stats(rng):
    bn = _randomised_bn().eval()
    before = bn.state_dict()
    bn(rng.normal(size=(4, 3)))
    for key, value in bn.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


def test_batchnorm_buffers_are_in_state_dict_not_parameters():
    torch = pytest.importorskip("torch")
    bn = BatchNorm1d(3)
    assert [name for name, _ in bn.named_parameters()] == ["weight", "bias"]
    assert list(bn.state_dict()) == list(torch.nn.BatchNorm1d(3).state_dict())


def test_batchnorm_repr_matches_torch():
    torch = pytest.importorskip("torch")
    assert repr(BatchNorm1d(3)) == repr(torch.nn.BatchNorm1d(3))
    other = {"eps": 1e-3, "momentum": None, "affine": False, "track_running_stats": False}
    assert repr(BatchNorm1d(5, **other)) == repr(torch.nn.BatchNorm1d(5, **other))


def test_batchnorm_rejects_single_sample_in_training():
    with pytest.raises(
        ValueError,
        match=r"Expected more than 1 value per channel when training, got input size \(1, 3\)",
    ):
        BatchNorm1d(3)(np.zeros((1, 3), dtype=np.float32))
    BatchNorm1d(3).eval()(np.zeros((1, 3), dtype=np.float32))  # fine with running stats


@pytest.mark.parametrize(
    "shape", [pytest.param((4, 2), id="features"), pytest.param((4, 3, 2), id="3d")]
)
def test_batchnorm_rejects_wrong_input_shape(shape):
    with pytest.raises(ValueError, match=r"BatchNorm1d: expected input of shape \(N, 3\)"):
        BatchNorm1d(3)(np.zeros(shape, dtype=np.float32))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        pytest.param({"num_features": 0}, "num_features must be a positive", id="features"),
        pytest.param({"eps": 0.0}, "eps must be > 0, got 0.0", id="eps"),
        pytest.param({"momentum": 1.5}, "momentum must be in", id="momentum"),
    ],
)
def test_batchnorm_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BatchNorm1d(**{"num_features": 3, **kwargs})


# -- Dropout ----------------------------------------------------------------------------------


def test_dropout_gradcheck_with_seeded_mask(rng):
    result = gradcheck(Dropout(0.3, rng=11), rng.normal(size=(6, 5)))
    assert result.checked == ("input",)


def test_dropout_gradcheck_with_package_generator(rng):
    gradcheck(Dropout(0.5), rng.normal(size=(6, 5)))


@pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
def test_dropout_mask_statistics_and_scale(p):
    drop = Dropout(p, rng=0)
    y = drop(np.ones((200, 500), dtype=np.float32))
    kept = y != 0
    assert y.dtype == np.float32
    # 1 / (1 - p) rounded once to float32
    np.testing.assert_allclose(y[kept], 1 / (1 - p), rtol=np.finfo(np.float32).eps / 2)
    # 100 000 Bernoulli draws: the standard error of the kept fraction is < 0.0016
    assert abs(kept.mean() - (1 - p)) < 0.01
    assert abs(y.mean() - 1) < 0.03  # inverted dropout keeps the expectation


def test_dropout_backward_uses_the_forward_mask(rng):
    drop = Dropout(0.5, rng=3)
    y = drop(np.ones((4, 6)))
    g = rng.normal(size=(4, 6))
    np.testing.assert_array_equal(drop.backward(g), g * y)  # y is the scaled mask


@pytest.mark.parametrize(
    "p, training", [pytest.param(0.5, False, id="eval"), pytest.param(0.0, True, id="p0")]
)
def test_dropout_identity(p, training, rng):
    drop = Dropout(p).train(training)
    x, g = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    np.testing.assert_array_equal(drop(x), x)
    np.testing.assert_array_equal(drop.backward(g), g)


def test_dropout_p1_gives_zeros(rng):
    drop = Dropout(1.0)
    np.testing.assert_array_equal(drop(rng.normal(size=(3, 4))), 0)
    np.testing.assert_array_equal(drop.backward(np.ones((3, 4))), 0)


def test_dropout_masks_repeat_with_manual_seed():
    x = np.ones((10, 10), dtype=np.float32)
    manual_seed(42)
    first = Dropout(0.5)(x)
    manual_seed(42)
    np.testing.assert_array_equal(Dropout(0.5)(x), first)
    assert not np.array_equal(Dropout(0.5)(x), first)  # the generator moved on


def test_dropout_does_not_modify_input(rng):
    x = rng.normal(size=(5, 5))
    original = x.copy()
    Dropout(0.5)(x)
    np.testing.assert_array_equal(x, original)


def test_dropout_repr_matches_torch():
    torch = pytest.importorskip("torch")
    assert repr(Dropout(0.25)) == repr(torch.nn.Dropout(0.25))


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_dropout_rejects_bad_probability(p):
    with pytest.raises(
        ValueError, match=f"dropout probability has to be between 0 and 1, but got {p}"
    ):
        Dropout(p)


def test_dropout_rejects_bad_types():
    with pytest.raises(TypeError, match="Dropout: p must be a number"):
        Dropout("0.5")
    with pytest.raises(TypeError, match=r"expected a numpy\.random\.Generator"):
        Dropout(0.5, rng="seed")


# -- Identity and shared behaviour -------------------------------------------------------------


def test_identity_passes_through(rng):
    x = rng.normal(size=(2, 3))
    layer = Identity()
    assert layer(x) is x
    assert layer.backward(x) is x
    assert repr(layer) == "Identity()"


@pytest.mark.parametrize(
    "layer",
    [
        pytest.param(Linear(3, 2), id="Linear"),
        pytest.param(BatchNorm1d(3), id="BatchNorm1d"),
        pytest.param(Dropout(), id="Dropout"),
        pytest.param(Identity(), id="Identity"),
    ],
)
def test_backward_before_forward_raises(layer):
    name = type(layer).__name__
    with pytest.raises(RuntimeError, match=rf"{name}\.backward\(\) called before forward\(\)"):
        layer.backward(np.ones((2, 2), dtype=np.float32))


@pytest.mark.parametrize(
    "layer",
    [
        pytest.param(Linear(3, 3), id="Linear"),
        pytest.param(BatchNorm1d(3), id="BatchNorm1d"),
        pytest.param(Dropout(0.5), id="Dropout"),
    ],
)
def test_float32_stays_float32_and_input_is_untouched(layer, rng):
    x = rng.normal(size=(4, 3)).astype(np.float32)
    original = x.copy()
    y = layer(x)
    grad_input = layer.backward(np.ones_like(y))
    assert y.dtype == grad_input.dtype == np.float32
    assert all(p.grad.dtype == np.float32 for p in layer.parameters())
    np.testing.assert_array_equal(x, original)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Linear(4, 3, dtype=np.float64),
        lambda: BatchNorm1d(4, dtype=np.float64),
        lambda: Dropout(0.5),
    ],
    ids=["linear", "batchnorm", "dropout"],
)
def test_backward_names_a_wrongly_shaped_grad_output(make, rng):
    layer = make()
    y = layer(rng.normal(size=(5, 4)))
    bad = np.ones((y.shape[0], 1))  # would broadcast, or fail inside NumPy
    expected = re.escape(f"shape (5, 1), but the last forward returned shape {y.shape}")
    with pytest.raises(ValueError, match=expected):
        layer.backward(bad)


def test_backward_names_a_grad_output_that_is_not_an_array(rng):
    layer = Linear(2, 2, dtype=np.float64)
    layer(rng.normal(size=(1, 2)))
    with pytest.raises(ValueError, match=r"Linear.backward: grad_output is a list, but"):
        layer.backward([[1.0, 2.0]])
