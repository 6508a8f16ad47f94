"""Gradient clipping: clip_grad_norm_ and clip_grad_value_ against torch.nn.utils, errors."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import mininn
from mininn.module import Parameter
from mininn.optim import SGD
from mininn.utils import clip_grad_norm_, clip_grad_value_

DTYPES = [pytest.param(np.float32, id="float32"), pytest.param(np.float64, id="float64")]
SHAPES = [(3, 4), (4,), (2, 5)]


def _params(rng, dtype, scale=1.0):
    params = [Parameter(np.zeros(shape, dtype=dtype)) for shape in SHAPES]
    for param in params:
        param.grad[...] = scale * rng.normal(size=param.shape)
    return params


def _torch_params(torch, params):
    twins = []
    for param in params:
        twin = torch.nn.Parameter(torch.from_numpy(param.data.copy()))
        twin.grad = torch.from_numpy(param.grad.copy())
        twins.append(twin)
    return twins


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("max_norm", [0.5, 1e3], ids=["clips", "keeps"])
@pytest.mark.parametrize("norm_type", [1.0, 2.0, 3.5, math.inf, "inf"])
def test_clip_grad_norm_matches_torch(norm_type, max_norm, dtype, rng, assert_close):
    torch = pytest.importorskip("torch")
    params = _params(rng, dtype, scale=3.0)
    twins = _torch_params(torch, params)
    before = [p.grad.copy() for p in params]
    total = clip_grad_norm_(params, max_norm, norm_type=norm_type)
    total_t = torch.nn.utils.clip_grad_norm_(twins, max_norm, norm_type=norm_type)
    assert isinstance(total, np.floating) and total.dtype == dtype
    assert_close(total, total_t.numpy())
    for param, twin in zip(params, twins, strict=True):
        assert param.grad.dtype == dtype
        assert_close(param.grad, twin.grad.numpy())
    if max_norm > total:  # the factor is clamped at 1: gradients unchanged, bit for bit
        for param, grad in zip(params, before, strict=True):
            np.testing.assert_array_equal(param.grad, grad)


@pytest.mark.parametrize("dtype", DTYPES)
def test_clip_grad_norm_scales_to_max_norm(dtype):
    # grads [3, 4] and [12]: total 2-norm sqrt(9 + 16 + 144) = 13; scaled by 1 / (13 + 1e-6)
    a, b = Parameter(np.zeros(2, dtype=dtype)), Parameter(np.zeros(1, dtype=dtype))
    a.grad[...], b.grad[...] = [3.0, 4.0], [12.0]
    eps = float(np.finfo(dtype).eps)
    # exact squares and sums; at most an ulp from each of the two roots (powers 1/2)
    assert float(clip_grad_norm_([a, b], max_norm=1.0)) == pytest.approx(13.0, rel=2 * eps)
    scale = 1 / (13 + 1e-6)
    # three roundings in the dtype: 13 + 1e-6, the quotient, the product
    np.testing.assert_allclose(a.grad, [3 * scale, 4 * scale], rtol=3 * eps)
    np.testing.assert_allclose(b.grad, [12 * scale], rtol=3 * eps)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_clip_grad_norm_error_if_nonfinite_raises_as_torch(bad, rng):
    torch = pytest.importorskip("torch")
    params = _params(rng, np.float64)
    params[1].grad[2] = bad
    before = [p.grad.copy() for p in params]
    message = r"The total norm of order 2\.0 for gradients from `parameters` is non-finite"
    with pytest.raises(RuntimeError, match=message):
        torch.nn.utils.clip_grad_norm_(_torch_params(torch, params), 1.0, error_if_nonfinite=True)
    with pytest.raises(RuntimeError, match=message):
        clip_grad_norm_(params, 1.0, error_if_nonfinite=True)
    for param, grad in zip(params, before, strict=True):
        np.testing.assert_array_equal(param.grad, grad)  # nothing scaled


@pytest.mark.parametrize("norm_type", [2.0, math.inf])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_clip_grad_norm_nonfinite_without_error_matches_torch(bad, norm_type, rng):
    torch = pytest.importorskip("torch")
    params = _params(rng, np.float64)
    params[1].grad[2] = bad
    twins = _torch_params(torch, params)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        total = clip_grad_norm_(params, 1.0, norm_type=norm_type)
    total_t = torch.nn.utils.clip_grad_norm_(twins, 1.0, norm_type=norm_type)
    np.testing.assert_array_equal(total, total_t.numpy())
    for param, twin in zip(params, twins, strict=True):
        np.testing.assert_array_equal(param.grad, twin.grad.numpy())  # nan where torch has nan


def test_clip_grad_norm_skips_frozen_parameters_as_torch(rng, assert_close):
    torch = pytest.importorskip("torch")
    params = _params(rng, np.float64, scale=3.0)
    params[0].requires_grad = False
    frozen = params[0].grad.copy()
    twins = _torch_params(torch, params)
    twins[0].requires_grad_(False)
    twins[0].grad = None  # a frozen torch parameter has no gradient
    assert_close(clip_grad_norm_(params, 0.5), torch.nn.utils.clip_grad_norm_(twins, 0.5).numpy())
    np.testing.assert_array_equal(params[0].grad, frozen)
    assert_close(params[1].grad, twins[1].grad.numpy())


def test_clip_grad_norm_takes_a_single_parameter_and_a_generator(rng):
    model = mininn.Sequential(mininn.Linear(3, 2, dtype=np.float64))
    for param in model.parameters():
        param.grad[...] = rng.normal(size=param.shape)
    expected = math.sqrt(sum(float(np.sum(p.grad**2)) for p in model.parameters()))
    assert float(clip_grad_norm_(model.parameters(), 1e9)) == pytest.approx(expected, rel=1e-12)
    weight = model[0].weight
    assert float(clip_grad_norm_(weight, 1e9)) == pytest.approx(
        float(np.linalg.norm(weight.grad)), rel=1e-12
    )


def test_clip_grad_norm_without_gradients_returns_zero_and_warns_on_an_empty_generator():
    assert clip_grad_norm_([], 1.0) == 0.0
    with pytest.warns(UserWarning, match="`parameters` is an empty generator"):
        total = clip_grad_norm_((p for p in []), 1.0)
    assert total == 0.0 and total.dtype == np.float32  # as torch.tensor(0.0)


def test_clipped_gradients_stay_the_optimizers(rng):
    # The optimizer keeps every .grad as a view of its flat buffer: clipping must
    # write in place, so that step() uses the clipped values.
    param = Parameter(np.zeros(4))
    optimizer = SGD([param], lr=1.0)
    param.grad[...] = [3.0, 0.0, 4.0, 0.0]
    clip_grad_norm_([param], 1.0)
    clip_grad_value_([param], 0.7)
    optimizer.step()
    np.testing.assert_allclose(param.data, [-0.6, 0.0, -0.7, 0.0], rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_clip_grad_value_matches_torch(dtype, rng):
    torch = pytest.importorskip("torch")
    params = _params(rng, dtype, scale=2.0)
    params[0].grad[0, 0] = math.nan
    twins = _torch_params(torch, params)
    assert clip_grad_value_(params, 1.5) is None
    torch.nn.utils.clip_grad_value_(twins, 1.5)
    for param, twin in zip(params, twins, strict=True):
        assert param.grad.dtype == dtype
        np.testing.assert_array_equal(param.grad, twin.grad.numpy())
    assert np.nanmax(np.abs(params[1].grad)) == pytest.approx(1.5)


def test_clip_grad_value_skips_frozen_and_takes_one_parameter():
    frozen, free = Parameter(np.zeros(2)), Parameter(np.zeros(2))
    frozen.requires_grad = False
    frozen.grad[...] = free.grad[...] = [5.0, -5.0]
    clip_grad_value_([frozen, free], 1.0)
    clip_grad_value_(free, 0.5)
    assert frozen.grad.tolist() == [5.0, -5.0] and free.grad.tolist() == [0.5, -0.5]


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("max_norm", [-1.0, math.nan, "1"])
def test_clip_grad_norm_rejects_bad_max_norm(max_norm):
    with pytest.raises(ValueError, match=r"clip_grad_norm_: max_norm must be >= 0, got"):
        clip_grad_norm_([Parameter(np.zeros(2))], max_norm)


@pytest.mark.parametrize(
    "norm_type, match",
    [
        (0, r"must be > 0 or inf, got 0\.0"),
        (-2.0, r"must be > 0 or inf, got -2\.0"),
        (math.nan, "must be > 0 or inf, got nan"),
        ("l2", r"must be a number > 0 or 'inf', got 'l2'"),
    ],
)
def test_clip_grad_norm_rejects_bad_norm_type(norm_type, match):
    with pytest.raises(ValueError, match=f"clip_grad_norm_: norm_type {match}"):
        clip_grad_norm_([Parameter(np.zeros(2))], 1.0, norm_type=norm_type)


@pytest.mark.parametrize("clip_value", [-0.5, math.nan, None])
def test_clip_grad_value_rejects_bad_clip_value(clip_value):
    with pytest.raises(ValueError, match=r"clip_grad_value_: clip_value must be >= 0, got"):
        clip_grad_value_([Parameter(np.zeros(2))], clip_value)


@pytest.mark.parametrize("function", [clip_grad_norm_, clip_grad_value_])
def test_clipping_rejects_what_is_not_a_parameter(function):
    name = function.__name__
    with pytest.raises(TypeError, match=rf"{name}: parameters\[1\] is a ndarray, not a mininn"):
        function([Parameter(np.zeros(2)), np.zeros(2)], 1.0)
    with pytest.raises(TypeError, match=rf"{name}: expected a Parameter or an iterable"):
        function(np.zeros(2), 1.0)


def test_utils_is_exported():
    assert mininn.utils.clip_grad_norm_ is clip_grad_norm_
    assert mininn.utils.clip_grad_value_ is clip_grad_value_
