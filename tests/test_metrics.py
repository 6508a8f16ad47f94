"""Tests of mininn.metrics: against scikit-learn, hand-worked values, and errors."""

import numpy as np
import pytest

from mininn.metrics import (
    accuracy,
    binary_accuracy,
    confusion_matrix,
    f1_score,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
)


@pytest.fixture
def labels():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 5, size=200)
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, 5, size=200))
    return y_true, y_pred


@pytest.fixture
def regression():
    rng = np.random.default_rng(1)
    y_true = rng.standard_normal((50, 3))
    return y_true, y_true + 0.5 * rng.standard_normal((50, 3))


# -- against scikit-learn -------------------------------------------------------------


def test_accuracy_matches_sklearn(labels):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    y_true, y_pred = labels
    expected = sklearn_metrics.accuracy_score(y_true, y_pred)
    assert accuracy(y_true, y_pred) == pytest.approx(expected, rel=1e-12)
    assert isinstance(accuracy(y_true, y_pred), float)


def test_accuracy_of_scores_is_that_of_their_argmax(labels):
    y_true, y_pred = labels
    scores = np.random.default_rng(2).random((len(y_pred), 5))
    scores[np.arange(len(y_pred)), y_pred] += 1.0  # argmax is y_pred
    assert accuracy(y_true, scores) == accuracy(y_true, y_pred)


def test_confusion_matrix_matches_sklearn(labels):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    y_true, y_pred = labels
    ours = confusion_matrix(y_true, y_pred, num_classes=7)
    np.testing.assert_array_equal(
        ours, sklearn_metrics.confusion_matrix(y_true, y_pred, labels=range(7))
    )
    assert ours.dtype == np.int64 and ours.shape == (7, 7)
    np.testing.assert_array_equal(
        confusion_matrix(y_true, y_pred), sklearn_metrics.confusion_matrix(y_true, y_pred)
    )


@pytest.mark.parametrize("average", ["macro", "weighted", "micro"])
def test_f1_score_matches_sklearn(labels, average):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    y_true, y_pred = labels
    y_pred = np.where(y_pred == 4, 6, y_pred)  # class 6 only predicted, class 4 only true
    expected = sklearn_metrics.f1_score(y_true, y_pred, average=average)
    assert f1_score(y_true, y_pred, average=average) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("shape", ["1d", "2d"])
def test_regression_metrics_match_sklearn(regression, shape):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    y_true, y_pred = regression
    if shape == "1d":
        y_true, y_pred = y_true[:, 0], y_pred[:, 0]
    for ours, theirs in [
        (mean_squared_error, sklearn_metrics.mean_squared_error),
        (mean_absolute_error, sklearn_metrics.mean_absolute_error),
        (r2_score, sklearn_metrics.r2_score),
    ]:
        assert ours(y_true, y_pred) == pytest.approx(theirs(y_true, y_pred), rel=1e-12)


def test_r2_score_with_a_constant_column_matches_sklearn(regression):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    y_true, y_pred = regression
    y_true = y_true.copy()
    y_true[:, 1] = 2.0
    y_pred = y_pred.copy()
    y_true[:, 2] = 3.0
    y_pred[:, 2] = 3.0  # constant and exact: 1.0; column 1 constant and missed: 0.0
    expected = sklearn_metrics.r2_score(y_true, y_pred)
    assert r2_score(y_true, y_pred) == pytest.approx(expected, rel=1e-12)


# -- hand-worked ----------------------------------------------------------------------


def test_hand_worked_values():
    assert accuracy([0, 1, 2, 2], [0, 1, 1, 2]) == 0.75  # 3 of 4
    # probabilities > 0.5: [F, T, F, T] against [0, 1, 1, 1]: 3 of 4 (0.5 is not > 0.5)
    assert binary_accuracy(np.array([0, 1, 1, 1]), np.array([0.2, 0.9, 0.5, 0.51])) == 0.75
    assert binary_accuracy([[1], [0]], [[0.4], [0.3]], threshold=0.45) == 0.5  # 0.4 → 0: wrong
    # errors 0, 0, 2 → MSE 4/3, MAE 2/3; SS_tot = 2 (mean 2), R² = 1 − 4/2 = −1
    assert mean_squared_error([1.0, 2.0, 3.0], [1.0, 2.0, 5.0]) == pytest.approx(4 / 3)
    assert mean_absolute_error([1.0, 2.0, 3.0], [1.0, 2.0, 5.0]) == pytest.approx(2 / 3)
    assert r2_score([1.0, 2.0, 3.0], [1.0, 2.0, 5.0]) == pytest.approx(-1.0)
    assert r2_score([2.0, 2.0], [2.0, 2.0]) == 1.0  # constant target, exact
    assert r2_score([2.0, 2.0], [2.0, 2.5]) == 0.0  # constant target, missed
    # class 0: TP 1, FP 0, FN 1 → F1 2/3; class 1: TP 2, FP 1, FN 0 → F1 4/5
    assert f1_score([0, 0, 1, 1], [0, 1, 1, 1]) == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert f1_score([0, 0, 1, 1], [0, 1, 1, 1], average="weighted") == pytest.approx(
        (2 / 3 + 4 / 5) / 2
    )
    assert f1_score([0, 0, 0, 1], [0, 1, 1, 1], average="micro") == 0.5
    np.testing.assert_array_equal(
        confusion_matrix([0, 0, 2], [0, 2, 2], num_classes=4),
        [[1, 0, 1, 0], [0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]],
    )


# -- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: accuracy([0, 1], [0, 1, 1]), ValueError, r"different .* \(2,\) and \(3,\)"),
        (lambda: accuracy([0, 1], np.zeros((3, 2))), ValueError, r"\(2,\) and \(3, 2\)"),
        (lambda: accuracy([[0, 1]], [0, 1]), ValueError, r"y_true of shape \(N,\).*\(1, 2\)"),
        (lambda: accuracy([], []), ValueError, r"N > 0, got \(0,\)"),
        (lambda: accuracy([0.0, 1.0], [0, 1]), TypeError, "integer class labels.*astype"),
        (lambda: accuracy([0, 1], np.zeros((2, 2, 2))), ValueError, r"\(N, C\) scores"),
        (lambda: binary_accuracy([0, 1], [[0.1], [0.9]]), ValueError, r"same shape.*\(2, 1\)"),
        (lambda: binary_accuracy([0, 2], [0.1, 0.9]), ValueError, "only 0 and 1"),
        (lambda: binary_accuracy([0, 1], [-0.5, 3.0]), ValueError, r"\[-0.5, 3.0\].*Sigmoid"),
        (lambda: binary_accuracy([0, 1], [0.1, 0.9], 2), ValueError, "threshold in"),
        (lambda: binary_accuracy(np.zeros((2, 2)), np.zeros((2, 2))), ValueError, r"\(N, 1\)"),
        (lambda: confusion_matrix([0, 3], [0, 1], 3), ValueError, "label 3 but num_classes=3"),
        (lambda: confusion_matrix([0, -1], [0, 1]), ValueError, "y_true has -1"),
        (lambda: confusion_matrix([0, 1], [0, 1], 0), ValueError, "num_classes >= 1, got 0"),
        (lambda: f1_score([0, 1], [0, 1], "binary"), ValueError, "average must be .* 'binary'"),
        (lambda: mean_squared_error([1.0, 2.0], [[1.0], [2.0]]), ValueError, "reshape"),
        (lambda: mean_absolute_error([], []), ValueError, r"non-empty.*\(0,\)"),
        (lambda: r2_score([1.0], [1.0]), ValueError, "at least 2 samples"),
    ],
    ids=[
        "accuracy-length",
        "accuracy-scores-length",
        "accuracy-2d-true",
        "accuracy-empty",
        "accuracy-float-labels",
        "accuracy-3d",
        "binary-shape",
        "binary-labels",
        "binary-probabilities",
        "binary-threshold",
        "binary-2-columns",
        "confusion-label",
        "confusion-negative",
        "confusion-num-classes",
        "f1-average",
        "mse-broadcast",
        "mae-empty",
        "r2-one-sample",
    ],
)
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
