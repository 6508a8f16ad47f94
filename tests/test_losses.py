"""Losses: gradients, PyTorch agreement for every reduction, stability, hand examples, errors."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from mininn.gradcheck import gradcheck_loss
from mininn.losses import BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, L1Loss, MSELoss

DTYPES = [pytest.param(np.float32, id="float32"), pytest.param(np.float64, id="float64")]
REDUCTIONS = ["mean", "sum", "none"]
LOSSES = [
    pytest.param(CrossEntropyLoss, id="CrossEntropyLoss"),
    pytest.param(MSELoss, id="MSELoss"),
    pytest.param(L1Loss, id="L1Loss"),
    pytest.param(BCELoss, id="BCELoss"),
    pytest.param(BCEWithLogitsLoss, id="BCEWithLogitsLoss"),
]


def _inputs(loss_class, rng, dtype=np.float64, scale=1.0):
    """A valid (input, target) pair for each loss, away from L1's kink and BCE's ends."""
    if loss_class is CrossEntropyLoss:
        return (scale * rng.normal(size=(6, 4))).astype(dtype), rng.integers(0, 4, size=6)
    if loss_class is BCELoss:
        return rng.uniform(0.05, 0.95, size=(6, 3)).astype(dtype), rng.uniform(size=(6, 3))
    if loss_class is BCEWithLogitsLoss:
        return (scale * rng.normal(size=(6, 3))).astype(dtype), rng.uniform(size=(6, 3))
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    y = np.where(np.abs(x - y) < 1e-2, y + 0.1, y)
    return (scale * x).astype(dtype), y


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("loss_class", LOSSES)
def test_gradcheck(loss_class, reduction, rng):
    gradcheck_loss(loss_class(reduction=reduction), *_inputs(loss_class, rng))


def test_bce_with_logits_pos_weight_gradcheck(rng):
    x, y = _inputs(BCEWithLogitsLoss, rng)
    gradcheck_loss(BCEWithLogitsLoss(pos_weight=[0.5, 2.0, 3.0]), x, y)


def _torch_loss(torch, loss_class, reduction, **kwargs):
    return getattr(torch.nn, loss_class.__name__)(reduction=reduction, **kwargs)


def _torch_target(torch, loss_class, target, dtype):
    if loss_class is CrossEntropyLoss:
        return torch.from_numpy(target.astype(np.int64))
    return torch.from_numpy(target.astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("loss_class", LOSSES)
def test_matches_torch(loss_class, reduction, dtype, rng, assert_close):
    torch = pytest.importorskip("torch")
    x, target = _inputs(loss_class, rng, dtype, scale=3.0)
    loss_fn = loss_class(reduction=reduction)
    loss = loss_fn(x, target)
    x_t = torch.tensor(x, requires_grad=True)
    loss_t = _torch_loss(torch, loss_class, reduction)(
        x_t, _torch_target(torch, loss_class, target, dtype)
    )
    if reduction == "none":
        upstream = rng.normal(size=loss.shape).astype(dtype)
        loss_t.backward(torch.from_numpy(upstream))
        grad_input = loss_fn.backward(upstream)
        assert loss.dtype == dtype
    else:
        loss_t.backward()
        grad_input = loss_fn.backward()
        assert isinstance(loss, float)
    assert_close(loss, loss_t.detach().numpy(), dtype=dtype)
    assert grad_input.dtype == dtype
    assert_close(grad_input, x_t.grad.numpy())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_with_logits_pos_weight_matches_torch(reduction, dtype, rng, assert_close):
    torch = pytest.importorskip("torch")
    x, target = _inputs(BCEWithLogitsLoss, rng, dtype, scale=3.0)
    pos_weight = np.array([0.5, 2.0, 3.0])
    loss_fn = BCEWithLogitsLoss(reduction=reduction, pos_weight=pos_weight)
    ref = torch.nn.BCEWithLogitsLoss(
        reduction=reduction, pos_weight=torch.from_numpy(pos_weight.astype(dtype))
    )
    x_t = torch.tensor(x, requires_grad=True)
    loss_t = ref(x_t, torch.from_numpy(target.astype(dtype)))
    loss_t.sum().backward()
    assert_close(loss_fn(x, target), loss_t.detach().numpy(), dtype=dtype)
    assert_close(loss_fn.backward(), x_t.grad.numpy())


def test_none_backward_without_upstream_is_gradient_of_the_sum(rng):
    x, target = _inputs(MSELoss, rng)
    summed = MSELoss(reduction="sum")
    summed(x, target)
    per_element = MSELoss(reduction="none")
    per_element(x, target)
    np.testing.assert_allclose(per_element.backward(), summed.backward(), rtol=1e-15)


def test_mean_backward_scales_with_scalar_upstream(rng):
    x, target = _inputs(CrossEntropyLoss, rng)
    loss_fn = CrossEntropyLoss()
    loss_fn(x, target)
    np.testing.assert_allclose(loss_fn.backward(3.0), 3 * loss_fn.backward(), rtol=1e-15)


# -- CrossEntropyLoss: class weights and label smoothing --------------------------------------

CE_WEIGHT = np.array([0.5, 2.0, 1.0, 3.0])  # C = 4, uneven on purpose


def _ce_case(rng, dtype, scale=3.0):
    x = (scale * rng.normal(size=(6, 4))).astype(dtype)
    target = np.array([0, 3, 3, 1, 2, 3])  # class 3, the heaviest, three times
    return x, target


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_options_match_torch(
    reduction, weighted, label_smoothing, dtype, rng, assert_close
):
    torch = pytest.importorskip("torch")
    x, target = _ce_case(rng, dtype)
    weight = CE_WEIGHT if weighted else None
    loss_fn = CrossEntropyLoss(weight, reduction=reduction, label_smoothing=label_smoothing)
    ref = torch.nn.CrossEntropyLoss(
        weight=None if weight is None else torch.from_numpy(weight.astype(dtype)),
        reduction=reduction,
        label_smoothing=label_smoothing,
    )
    x_t = torch.tensor(x, requires_grad=True)
    loss_t = ref(x_t, torch.from_numpy(target.astype(np.int64)))
    loss = loss_fn(x, target)
    if reduction == "none":
        upstream = rng.normal(size=6).astype(dtype)
        loss_t.backward(torch.from_numpy(upstream))
        grad_input = loss_fn.backward(upstream)
        assert loss.dtype == dtype
    else:
        loss_t.backward()
        grad_input = loss_fn.backward()
    assert_close(loss, loss_t.detach().numpy(), dtype=dtype)
    assert grad_input.dtype == dtype
    assert_close(grad_input, x_t.grad.numpy())


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_options_gradcheck(reduction, weighted, label_smoothing, rng):
    loss_fn = CrossEntropyLoss(
        CE_WEIGHT if weighted else None, reduction=reduction, label_smoothing=label_smoothing
    )
    gradcheck_loss(loss_fn, *_ce_case(rng, np.float64, scale=1.0))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("label_smoothing", [0.1, 1.0])
def test_cross_entropy_weighted_smoothed_finite_for_logits_of_magnitude_1000(
    label_smoothing, dtype, assert_close
):
    torch = pytest.importorskip("torch")
    x = np.array([[1000.0, -1000.0, 0.0, 5.0], [-1000.0, 1000.0, 5.0, 0.0]], dtype=dtype)
    target = np.array([1, 1])
    loss_fn = CrossEntropyLoss(CE_WEIGHT, label_smoothing=label_smoothing)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = loss_fn(x, target)
        grad_input = loss_fn.backward()
    assert math.isfinite(loss) and np.all(np.isfinite(grad_input))
    x_t = torch.tensor(x, requires_grad=True)
    loss_t = torch.nn.CrossEntropyLoss(
        weight=torch.from_numpy(CE_WEIGHT.astype(dtype)), label_smoothing=label_smoothing
    )(x_t, torch.from_numpy(target))
    loss_t.backward()
    assert_close(loss, loss_t.detach().numpy(), dtype=dtype)
    assert_close(grad_input, x_t.grad.numpy())


def test_cross_entropy_weighted_smoothed_hand_example():
    # Equal logits, C = 2: p = [1/2, 1/2], -log p = log 2 for both classes.
    # w = [1, 3], ε = 0.5, y = [0, 1]: q_0 = [1 (0.5 + 0.25), 3 (0.25)] = [0.75, 0.75],
    # q_1 = [1 (0.25), 3 (0.5 + 0.25)] = [0.25, 2.25]; losses = sum(q_n) log 2 = [1.5, 2.5] log 2;
    # 'mean' divides their sum, 4 log 2, by w_0 + w_1 = 4: log 2.
    # Gradient p sum(q_n) - q_n: [0, 0] and [1.25 - 0.25, 1.25 - 2.25] = [1, -1], / 4.
    loss_fn = CrossEntropyLoss(np.array([1.0, 3.0]), label_smoothing=0.5)
    assert loss_fn(np.zeros((2, 2)), np.array([0, 1])) == pytest.approx(math.log(2), rel=1e-15)
    np.testing.assert_allclose(loss_fn.backward(), [[0.0, 0.0], [0.25, -0.25]], atol=1e-16)


def test_cross_entropy_without_options_keeps_softmax_minus_onehot(rng):
    x, target = _ce_case(rng, np.float32)
    loss_fn = CrossEntropyLoss(reduction="sum")
    loss_fn(x, target)
    shifted = x - x.max(axis=1, keepdims=True)
    probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    probs[np.arange(6), target] -= 1
    np.testing.assert_array_equal(loss_fn.backward(), probs)  # bit for bit: p * 1 - onehot


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_cross_entropy_mean_is_nan_when_no_target_has_weight_as_torch(label_smoothing):
    torch = pytest.importorskip("torch")
    weight, x, target = np.array([0.0, 0.0, 1.0]), np.zeros((2, 3)), np.array([0, 1])
    loss_fn = CrossEntropyLoss(weight, label_smoothing=label_smoothing)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = loss_fn(x, target)
        grad_input = loss_fn.backward()
    reference = torch.nn.CrossEntropyLoss(
        weight=torch.from_numpy(weight), label_smoothing=label_smoothing
    )(torch.from_numpy(x), torch.from_numpy(target))
    assert math.isnan(loss) and math.isnan(float(reference))
    assert np.all(np.isnan(grad_input))


def test_cross_entropy_weight_is_a_buffer_as_torch():
    torch = pytest.importorskip("torch")
    loss_fn = CrossEntropyLoss([1, 2, 3])
    assert list(loss_fn.state_dict()) == list(
        torch.nn.CrossEntropyLoss(weight=torch.ones(3)).state_dict()
    )
    np.testing.assert_array_equal(loss_fn.weight, [1.0, 2.0, 3.0])
    assert CrossEntropyLoss().weight is None and not CrossEntropyLoss().state_dict()


def test_cross_entropy_float32_input_with_float64_weight_stays_float32(rng):
    x, target = _ce_case(rng, np.float32)
    loss_fn = CrossEntropyLoss(CE_WEIGHT, reduction="none", label_smoothing=0.1)
    assert loss_fn(x, target).dtype == np.float32
    assert loss_fn.backward().dtype == np.float32


# -- hand-worked examples --------------------------------------------------------------------


def test_cross_entropy_hand_example():
    # logits [0, ln 3]: softmax = [1/4, 3/4]; target 1: loss = -ln(3/4)
    loss_fn = CrossEntropyLoss()
    loss = loss_fn(np.array([[0.0, math.log(3.0)]]), np.array([1]))
    assert loss == pytest.approx(-math.log(0.75), rel=1e-15)
    np.testing.assert_allclose(loss_fn.backward(), [[0.25, -0.25]], rtol=1e-15)  # p - onehot


def test_mse_hand_example():
    # diffs [1, -2, 3]: mean square = (1 + 4 + 9) / 3; grad = 2 diff / 3
    loss_fn = MSELoss()
    assert loss_fn(np.array([1.0, 0.0, 3.0]), np.array([0.0, 2.0, 0.0])) == pytest.approx(14 / 3)
    np.testing.assert_allclose(loss_fn.backward(), [2 / 3, -4 / 3, 2.0], rtol=1e-15)


def test_l1_hand_example_and_zero_gradient_at_equality():
    # |diffs| = [1, 0, 2]: mean 1; grad = sign(diff) / 3 with sign(0) = 0, as PyTorch
    loss_fn = L1Loss()
    assert loss_fn(np.array([1.0, 2.0, -2.0]), np.array([0.0, 2.0, 0.0])) == pytest.approx(1.0)
    np.testing.assert_allclose(loss_fn.backward(), [1 / 3, 0.0, -1 / 3], rtol=1e-15)


def test_bce_hand_example():
    # p = 0.8: y = 1 gives -ln 0.8, y = 0 gives -ln 0.2; grad (p - y) / (p (1 - p)) / 2
    loss_fn = BCELoss()
    loss = loss_fn(np.array([0.8, 0.8]), np.array([1.0, 0.0]))
    assert loss == pytest.approx(-(math.log(0.8) + math.log(0.2)) / 2, rel=1e-14)
    np.testing.assert_allclose(loss_fn.backward(), [-0.2 / 0.16 / 2, 0.8 / 0.16 / 2], rtol=1e-14)


def test_bce_with_logits_hand_example():
    # x = 0: sigmoid = 1/2, loss ln 2 whatever y; grad (1/2 - y) / 2
    loss_fn = BCEWithLogitsLoss()
    assert loss_fn(np.zeros(2), np.array([1.0, 0.0])) == pytest.approx(math.log(2), rel=1e-15)
    np.testing.assert_allclose(loss_fn.backward(), [-0.25, 0.25], rtol=1e-15)


# -- stability -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss_class", [CrossEntropyLoss, BCEWithLogitsLoss, MSELoss, L1Loss])
def test_finite_for_logits_of_magnitude_1000(loss_class, dtype, assert_close):
    x = np.array([[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 5.0]], dtype=dtype)
    if loss_class is CrossEntropyLoss:
        target, expected = np.array([1, 1]), (2000.0 + 0.0) / 2  # wrong class by 2000, right
    elif loss_class is BCEWithLogitsLoss:
        target = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
        expected = (1000 + math.log(2) + math.log1p(math.exp(-5))) / 6
    else:
        target = np.zeros((2, 3))
        expected = None
    loss_fn = loss_class()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = loss_fn(x, target)
        grad_input = loss_fn.backward()
    assert math.isfinite(loss) and np.all(np.isfinite(grad_input))
    if expected is not None:
        assert_close(loss, expected, dtype=dtype)


def test_bce_clamps_log_at_minus_100_as_torch(assert_close):
    torch = pytest.importorskip("torch")
    x, target = np.array([0.0, 1.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0, 1.0])
    loss_fn = BCELoss(reduction="none")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        losses = loss_fn(x, target)
        grad_input = loss_fn.backward()
    np.testing.assert_array_equal(losses, [100.0, 100.0, 0.0, 0.0])
    x_t = torch.tensor(x, requires_grad=True)
    torch.nn.BCELoss(reduction="none")(x_t, torch.from_numpy(target)).sum().backward()
    assert_close(grad_input, x_t.grad.numpy())


def test_float32_input_with_float64_target_stays_float32(rng):
    x = rng.normal(size=(4, 2)).astype(np.float32)
    loss_fn = MSELoss(reduction="none")
    assert loss_fn(x, rng.normal(size=(4, 2))).dtype == np.float32
    assert loss_fn.backward().dtype == np.float32


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("loss_class", LOSSES)
def test_rejects_unknown_reduction(loss_class):
    with pytest.raises(
        ValueError, match=rf"{loss_class.__name__}: reduction must be one of .* got 'avg'"
    ):
        loss_class(reduction="avg")


@pytest.mark.parametrize("loss_class", LOSSES)
def test_backward_before_forward_raises(loss_class):
    name = loss_class.__name__
    with pytest.raises(RuntimeError, match=rf"{name}\.backward\(\) called before forward\(\)"):
        loss_class().backward()


@pytest.mark.parametrize("loss_class", [MSELoss, L1Loss, BCELoss, BCEWithLogitsLoss])
def test_rejects_n1_against_n_shapes(loss_class):
    with pytest.raises(
        ValueError, match=r"input shape \(4, 1\) and target shape \(4,\) differ.*reshape"
    ):
        loss_class()(np.full((4, 1), 0.5), np.full(4, 0.5))


@pytest.mark.parametrize("loss_class", [MSELoss, L1Loss, BCELoss, BCEWithLogitsLoss])
def test_rejects_non_float_input(loss_class):
    with pytest.raises(
        TypeError, match=rf"{loss_class.__name__}: expected input as a float32/float64"
    ):
        loss_class()(np.ones(3, dtype=np.int64), np.ones(3))


def test_cross_entropy_rejects_float_targets():
    with pytest.raises(
        TypeError,
        match="CrossEntropyLoss: expected target of integer class indices, got dtype float64",
    ):
        CrossEntropyLoss()(np.zeros((2, 3)), np.array([0.0, 1.0]))


@pytest.mark.parametrize("bad", [7, -1])
def test_cross_entropy_rejects_class_index_out_of_range(bad):
    with pytest.raises(
        ValueError, match=f"CrossEntropyLoss: target has class index {bad} but input has 3 classes"
    ):
        CrossEntropyLoss()(np.zeros((2, 3)), np.array([0, bad]))


@pytest.mark.parametrize(
    "x, target, match",
    [
        pytest.param(
            np.zeros(3), np.array([0]), r"expected input logits of shape \(N, C\)", id="1d"
        ),
        pytest.param(
            np.zeros((2, 3)), np.array([0, 1, 2]), r"expected target of shape \(2,\)", id="target"
        ),
    ],
)
def test_cross_entropy_rejects_bad_shapes(x, target, match):
    with pytest.raises(ValueError, match=match):
        CrossEntropyLoss()(x, target)


@pytest.mark.parametrize("value", [-0.1, 1.5, math.nan, math.inf, "0.1", True])
def test_cross_entropy_rejects_label_smoothing_outside_unit_interval(value):
    with pytest.raises(
        ValueError, match=r"CrossEntropyLoss: label_smoothing must be a number in \[0, 1\], got"
    ):
        CrossEntropyLoss(label_smoothing=value)


@pytest.mark.parametrize(
    "weight, match",
    [
        pytest.param(
            [1.0, -0.5, 1.0], r"weight must be >= 0, got \[1.0, -0.5, 1.0\]", id="negative"
        ),
        pytest.param(
            [1.0, math.nan, 1.0], r"weight must be finite, got \[1.0, nan, 1.0\]", id="nan"
        ),
        pytest.param([1.0, math.inf, 1.0], r"weight must be finite", id="inf"),
        pytest.param(np.ones((1, 3)), r"weight must be 1-D.*got shape \(1, 3\)", id="2d"),
        pytest.param(2.0, r"weight must be 1-D.*got shape \(\)", id="scalar"),
    ],
)
def test_cross_entropy_rejects_bad_weight(weight, match):
    with pytest.raises(ValueError, match=f"CrossEntropyLoss: {match}"):
        CrossEntropyLoss(weight)


def test_cross_entropy_rejects_non_numeric_weight():
    with pytest.raises(TypeError, match="CrossEntropyLoss: weight must be an array of C numbers"):
        CrossEntropyLoss(["a", "b"])


def test_cross_entropy_rejects_weight_of_the_wrong_size_at_forward():
    loss_fn = CrossEntropyLoss([1.0, 2.0, 3.0])
    with pytest.raises(
        ValueError,
        match=r"CrossEntropyLoss: weight has shape \(3,\) but input has 4 classes.*shape \(4,\)",
    ):
        loss_fn(np.zeros((2, 4)), np.array([0, 1]))


@pytest.mark.parametrize("value", [-0.1, 1.2, math.nan])
def test_bce_rejects_values_outside_unit_interval(value):
    with pytest.raises(
        ValueError, match=r"BCELoss: expected input probabilities in \[0, 1\].*BCEWithLogitsLoss"
    ):
        BCELoss()(np.array([0.5, value]), np.array([1.0, 0.0]))


def test_bce_with_logits_rejects_bad_pos_weight():
    with pytest.raises(ValueError, match="pos_weight must be >= 0"):
        BCEWithLogitsLoss(pos_weight=[-1.0])
    with pytest.raises(
        ValueError,
        match=r"pos_weight of shape \(2,\) does not broadcast to the input shape \(4, 3\)",
    ):
        BCEWithLogitsLoss(pos_weight=[1.0, 2.0])(np.zeros((4, 3)), np.zeros((4, 3)))


def test_backward_rejects_wrong_upstream_shape():
    loss_fn = MSELoss(reduction="none")
    loss_fn(np.zeros((2, 3)), np.ones((2, 3)))
    with pytest.raises(
        ValueError, match=r"MSELoss\.backward: expected grad_output of shape \(2, 3\)"
    ):
        loss_fn.backward(np.ones(3))


def test_loss_repr_matches_torch():
    torch = pytest.importorskip("torch")
    assert repr(CrossEntropyLoss()) == repr(torch.nn.CrossEntropyLoss())
    assert repr(MSELoss(reduction="sum")) == repr(torch.nn.MSELoss(reduction="sum"))
