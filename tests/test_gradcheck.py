"""mininn.gradcheck: it finds wrong gradients, names them, and leaves no side effects."""

from __future__ import annotations

import numpy as np
import pytest

from mininn._rng import default_rng
from mininn.gradcheck import GradcheckError, gradcheck, gradcheck_loss, numerical_grad
from mininn.layers import BatchNorm1d, Dropout, Linear
from mininn.losses import MSELoss
from mininn.module import Sequential


class _WrongInputGrad(Linear):
    def backward(self, grad_output):
        return 1.01 * super().backward(grad_output)


class _WrongBiasGrad(Linear):
    def backward(self, grad_output):
        grad_input = super().backward(grad_output)
        self.bias.grad[1] += 0.5
        return grad_input


class _WrongMSE(MSELoss):
    def _unreduced_grad(self):
        return self._diff  # forgot the factor 2


def test_numerical_grad_matches_known_derivative(rng):
    x = rng.normal(size=(3, 4))
    original = x.copy()
    grad = numerical_grad(lambda v: float(np.sum(np.sin(v))), x)
    np.testing.assert_allclose(grad, np.cos(x), rtol=1e-8, atol=1e-10)
    np.testing.assert_array_equal(x, original)


def test_numerical_grad_rejects_float32_and_bad_eps():
    with pytest.raises(TypeError, match=r"numerical_grad: x must be a float64 ndarray.*astype"):
        numerical_grad(np.sum, np.zeros(3, dtype=np.float32))
    with pytest.raises(ValueError, match="numerical_grad: eps must be > 0, got 0"):
        numerical_grad(np.sum, np.zeros(3), eps=0)


def test_gradcheck_finds_wrong_input_gradient(rng):
    with pytest.raises(
        GradcheckError, match=r"gradcheck\(_WrongInputGrad\): gradient mismatch; worst at input"
    ):
        gradcheck(_WrongInputGrad(3, 2, dtype=np.float64), rng.normal(size=(4, 3)))


def test_gradcheck_names_the_parameter_and_index(rng):
    result = gradcheck(
        _WrongBiasGrad(3, 2, dtype=np.float64), rng.normal(size=(4, 3)), raise_exception=False
    )
    assert not result
    assert (result.name, result.index) == ("bias", (1,))
    assert result.analytic == pytest.approx(result.numeric + 0.5)


def test_gradcheck_names_parameters_of_nested_modules(rng):
    model = Sequential(Linear(3, 4, dtype=np.float64), _WrongBiasGrad(4, 2, dtype=np.float64))
    result = gradcheck(model, rng.normal(size=(5, 3)), raise_exception=False)
    assert result.name == "1.bias"
    assert result.checked == ("input", "0.weight", "0.bias", "1.weight", "1.bias")


def test_gradcheck_loss_finds_wrong_gradient(rng):
    with pytest.raises(GradcheckError, match=r"gradcheck_loss\(_WrongMSE\).*input"):
        gradcheck_loss(_WrongMSE(), rng.normal(size=(3, 2)), rng.normal(size=(3, 2)))


def test_gradcheck_has_no_side_effects(rng):
    model = Sequential(
        Linear(3, 4, dtype=np.float64), BatchNorm1d(4, dtype=np.float64), Dropout(0.5)
    )
    model[0].weight.grad[...] = 7.0
    state = model.state_dict()
    rng_state = default_rng().bit_generator.state
    gradcheck(model, rng.normal(size=(6, 3)))
    np.testing.assert_array_equal(model[0].weight.grad, 7.0)
    for key, value in model.state_dict().items():  # running stats and weights restored
        np.testing.assert_array_equal(value, state[key])
    assert default_rng().bit_generator.state == rng_state


def test_gradcheck_skips_frozen_parameters(rng):
    layer = Linear(3, 2, dtype=np.float64)
    layer.weight.requires_grad = False
    assert gradcheck(layer, rng.normal(size=(4, 3))).checked == ("input", "bias")


def test_gradcheck_uses_given_grad_output(rng):
    layer = Linear(3, 2, dtype=np.float64)
    assert gradcheck(layer, rng.normal(size=(4, 3)), grad_output=rng.normal(size=(4, 2)))
    with pytest.raises(
        ValueError, match=r"gradcheck: grad_output has shape \(2, 2\), the output has \(4, 2\)"
    ):
        gradcheck(layer, rng.normal(size=(4, 3)), grad_output=np.ones((2, 2)))


@pytest.mark.parametrize(
    "layer, x, match",
    [
        pytest.param(
            Linear(3, 2, dtype=np.float64),
            np.ones((2, 3), np.float32),
            "x must be a float64",
            id="input",
        ),
        pytest.param(
            Linear(3, 2), np.ones((2, 3)), "parameter 'weight' must be a float64", id="param"
        ),
    ],
)
def test_gradcheck_requires_float64(layer, x, match):
    with pytest.raises(TypeError, match=match):
        gradcheck(layer, x)


def test_gradcheck_rejects_bad_tolerances(rng):
    with pytest.raises(ValueError, match="gradcheck: expected eps > 0"):
        gradcheck(Linear(3, 2, dtype=np.float64), rng.normal(size=(2, 3)), eps=-1.0)


def test_result_report_is_readable(rng):
    result = gradcheck(Linear(3, 2, dtype=np.float64), rng.normal(size=(2, 3)))
    assert result.report().startswith("gradients agree; worst at ")
