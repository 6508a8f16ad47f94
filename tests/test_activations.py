"""ReLU, LeakyReLU, Sigmoid, Tanh, Softmax: gradients, PyTorch agreement, stability, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from mininn.activations import LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from mininn.gradcheck import gradcheck

DTYPES = [pytest.param(np.float32, id="float32"), pytest.param(np.float64, id="float64")]

# (mininn factory, name of the torch.nn class, its arguments)
ACTIVATIONS = [
    pytest.param(ReLU, "ReLU", (), id="ReLU"),
    pytest.param(lambda: LeakyReLU(0.2), "LeakyReLU", (0.2,), id="LeakyReLU"),
    pytest.param(Sigmoid, "Sigmoid", (), id="Sigmoid"),
    pytest.param(Tanh, "Tanh", (), id="Tanh"),
    pytest.param(lambda: Softmax(dim=1), "Softmax", (1,), id="Softmax1"),
    pytest.param(lambda: Softmax(dim=0), "Softmax", (0,), id="Softmax0"),
    pytest.param(Softmax, "Softmax", (-1,), id="Softmax-1"),
]


def _away_from_zero(rng, shape):
    # ReLU-type kinks: keep |x| > 1e-3 so central differences never straddle 0.
    x = rng.normal(size=shape)
    return np.where(np.abs(x) < 1e-2, 0.5, x)


@pytest.mark.parametrize("make, torch_name, args", ACTIVATIONS)
def test_gradcheck(make, torch_name, args, rng):
    gradcheck(make(), _away_from_zero(rng, (4, 5)))


@pytest.mark.parametrize("make, torch_name, args", ACTIVATIONS)
def test_backward_is_linear_in_grad_output(make, torch_name, args, rng):
    # No parameters to accumulate into: the same forward, twice the upstream, twice the grad.
    act = make()
    act(rng.normal(size=(3, 4)))
    g = rng.normal(size=(3, 4))
    np.testing.assert_allclose(act.backward(2 * g), 2 * act.backward(g), rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("make, torch_name, args", ACTIVATIONS)
def test_matches_torch(make, torch_name, args, dtype, rng, assert_close):
    torch = pytest.importorskip("torch")
    x = rng.normal(0, 3, size=(6, 5)).astype(dtype)
    x[0, :2] = 0.0  # the kink: PyTorch's subgradient at 0
    g = rng.normal(size=(6, 5)).astype(dtype)
    act = make()
    x_t = torch.tensor(x, requires_grad=True)
    y_t = getattr(torch.nn, torch_name)(*args)(x_t)
    y_t.backward(torch.from_numpy(g))
    y = act(x)
    grad_input = act.backward(g)
    assert y.dtype == grad_input.dtype == dtype
    assert_close(y, y_t.detach().numpy())
    assert_close(grad_input, x_t.grad.numpy())


@pytest.mark.parametrize("make, torch_name, args", ACTIVATIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_stable_at_magnitude_1000(make, torch_name, args, dtype):
    x = np.array([[-1000.0, -1.0, 0.5, 1000.0], [1000.0, 1000.0, -1000.0, 3.0]], dtype=dtype)
    act = make()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any overflow or invalid-value warning fails
        y = act(x)
        grad_input = act.backward(np.ones_like(x) + x / 1000)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(grad_input))


def test_saturation_values_at_magnitude_1000():
    x = np.array([-1000.0, 1000.0])
    np.testing.assert_array_equal(Sigmoid()(x), [0.0, 1.0])
    np.testing.assert_array_equal(Tanh()(x), [-1.0, 1.0])
    np.testing.assert_array_equal(Softmax()(np.array([[1000.0, -1000.0]])), [[1.0, 0.0]])


def test_relu_gradient_at_zero_is_zero():
    relu = ReLU()
    relu(np.array([-1.0, 0.0, 1.0]))
    np.testing.assert_array_equal(relu.backward(np.array([5.0, 5.0, 5.0])), [0.0, 0.0, 5.0])


def test_leaky_relu_hand_example():
    act = LeakyReLU(0.1)
    # y = x for x > 0, 0.1 x otherwise; dy/dx = 1 or 0.1 (0.1 at x = 0, as PyTorch)
    np.testing.assert_allclose(act(np.array([-3.0, 0.0, 2.0])), [-0.3, 0.0, 2.0], rtol=1e-15)
    np.testing.assert_allclose(act.backward(np.array([1.0, 1.0, 1.0])), [0.1, 0.1, 1.0])


def test_softmax_backward_is_not_trivial_with_random_upstream(rng):
    # With an all-ones upstream the softmax input gradient is exactly 0; R is not.
    act = Softmax()
    act(rng.normal(size=(3, 4)))
    np.testing.assert_allclose(act.backward(np.ones((3, 4))), 0, atol=1e-15)
    assert np.abs(act.backward(rng.normal(size=(3, 4)))).max() > 1e-3


@pytest.mark.parametrize("make, torch_name, args", ACTIVATIONS)
def test_forward_does_not_modify_input_or_return_the_cache(make, torch_name, args, rng):
    x = rng.normal(size=(3, 4))
    original = x.copy()
    act = make()
    y = act(x)
    g = rng.normal(size=(3, 4))
    expected = act.backward(g)
    y += 100.0  # a caller editing the output must not change the gradient
    np.testing.assert_array_equal(x, original)
    np.testing.assert_array_equal(act.backward(g), expected)


@pytest.mark.parametrize(
    "module, torch_args",
    [
        pytest.param(LeakyReLU(), ("LeakyReLU",), id="LeakyReLU"),
        pytest.param(LeakyReLU(0.2), ("LeakyReLU", 0.2), id="LeakyReLU0.2"),
        pytest.param(Softmax(dim=1), ("Softmax", 1), id="Softmax"),
        pytest.param(ReLU(), ("ReLU",), id="ReLU"),
        pytest.param(Sigmoid(), ("Sigmoid",), id="Sigmoid"),
        pytest.param(Tanh(), ("Tanh",), id="Tanh"),
    ],
)
def test_repr_matches_torch(module, torch_args):
    torch = pytest.importorskip("torch")
    name, *args = torch_args
    assert repr(module) == repr(getattr(torch.nn, name)(*args))


@pytest.mark.parametrize("make, torch_name, args", ACTIVATIONS)
def test_backward_before_forward_raises(make, torch_name, args):
    act = make()
    name = type(act).__name__
    with pytest.raises(RuntimeError, match=rf"{name}\.backward\(\) called before forward\(\)"):
        act.backward(np.ones((2, 2)))


def test_softmax_rejects_dim_out_of_range():
    with pytest.raises(
        ValueError, match=r"Softmax: dim=2 is out of range for an input of shape \(3, 4\)"
    ):
        Softmax(dim=2)(np.zeros((3, 4)))


@pytest.mark.parametrize(
    "make, match",
    [
        pytest.param(lambda: Softmax(dim=1.0), "Softmax: dim must be an int", id="softmax_dim"),
        pytest.param(lambda: LeakyReLU("0.1"), "LeakyReLU: negative_slope must be", id="slope"),
    ],
)
def test_rejects_bad_argument_types(make, match):
    with pytest.raises(TypeError, match=match):
        make()


@pytest.mark.parametrize("make, torch_name, args", ACTIVATIONS)
def test_backward_names_a_wrongly_shaped_grad_output(make, torch_name, args, rng):
    act = make()
    act(rng.normal(size=(5, 4)))
    with pytest.raises(ValueError, match=r"grad_output has shape \(5, 1\).*shape \(5, 4\)"):
        act.backward(np.ones((5, 1)))  # NumPy would broadcast it silently
