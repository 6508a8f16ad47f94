"""Evaluation metrics with scikit-learn's names and argument order.

Every function takes ``(y_true, y_pred)``, as ``sklearn.metrics`` does, so tests
compare with scikit-learn directly. Note that this is the **reverse** of a loss's
``(input, target)`` order. Results are Python floats; accuracies are fractions
in [0, 1], not percentages.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "accuracy",
    "binary_accuracy",
    "confusion_matrix",
    "f1_score",
    "mean_absolute_error",
    "mean_squared_error",
    "r2_score",
]


def _labels(y: Any, where: str, name: str) -> np.ndarray:
    """A non-empty 1-D array of integer class labels >= 0."""
    array = np.asarray(y)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{where}: expected {name} of shape (N,) with N > 0, got {array.shape}")
    if array.dtype.kind not in "iub":
        raise TypeError(
            f"{where}: expected integer class labels in {name}, got dtype {array.dtype}; "
            "convert with .astype(np.int64)"
        )
    if array.min() < 0:
        raise ValueError(f"{where}: class labels must be >= 0, {name} has {array.min()}")
    return array


def _same_length(y_true: np.ndarray, y_pred: np.ndarray, where: str) -> None:
    if len(y_pred) != len(y_true):
        raise ValueError(
            f"{where}: y_true and y_pred have different numbers of samples, "
            f"shapes {y_true.shape} and {y_pred.shape}"
        )


def _same_shape(y_true: Any, y_pred: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Float arrays of the same, non-empty shape: (N,) vs (N, 1) is an error, not a
    broadcast (the bug it would hide gives an (N, N) result)."""
    # float64 as scikit-learn: metrics are off the hot path, and sums stay accurate.
    y_true, y_pred = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"{where}: y_true and y_pred must have the same shape, got {y_true.shape} and "
            f"{y_pred.shape}; reshape one (e.g. y_pred.reshape(-1))"
        )
    if y_true.ndim not in (1, 2) or y_true.size == 0:
        raise ValueError(
            f"{where}: expected non-empty arrays of shape (N,) or (N, k), got {y_true.shape}"
        )
    return y_true, y_pred


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Return the fraction of correct predictions: mean(y_true == y_pred).

    Args:
        y_true: the true class labels.
        y_pred: predicted labels, or scores (logits or probabilities) per class, in
            which case the prediction is their argmax over axis 1.
    Shape:
        - y_true: (N,), integer.
        - y_pred: (N,) integer labels, or (N, C) float scores.
    Returns:
        The accuracy, a float in [0, 1] (as ``sklearn.metrics.accuracy_score``).
    Raises:
        ValueError: y_true is not (N,) with N > 0; y_pred is not (N,) or (N, C).
        TypeError: y_true is not integer.
    Example:
        >>> accuracy([0, 1, 2, 1], [0, 2, 2, 1])
        0.75
        >>> accuracy([1, 0], np.array([[0.2, 0.8], [0.9, 0.1]]))
        1.0
    """
    y_true = _labels(y_true, "accuracy", "y_true")
    y_pred = np.asarray(y_pred)
    if y_pred.ndim == 2:
        _same_length(y_true, y_pred, "accuracy")
        y_pred = y_pred.argmax(axis=1)
    elif y_pred.ndim != 1:
        raise ValueError(
            f"accuracy: expected y_pred of shape (N,) labels or (N, C) scores, got {y_pred.shape}"
        )
    _same_length(y_true, y_pred, "accuracy")
    return float(np.mean(y_true == y_pred))


def binary_accuracy(y_true: Any, y_prob: Any, threshold: float = 0.5) -> float:
    """Return the accuracy of thresholded probabilities: mean(y_true == (y_prob > threshold)).

    Args:
        y_true: the true labels, 0 or 1.
        y_prob: predicted probabilities of class 1, in [0, 1] (a Sigmoid's output;
            apply one to logits first).
        threshold: predict 1 where ``y_prob > threshold`` (strictly, as Keras and
            torchmetrics do). Default: 0.5.
    Shape:
        - y_true: (N,) or (N, 1), integer, float or bool.
        - y_prob: exactly y_true's shape, float.
    Returns:
        The accuracy, a float in [0, 1].
    Raises:
        ValueError: shapes differ or are empty; y_true holds a value other than 0/1;
            y_prob is outside [0, 1]; threshold is outside [0, 1].
    Example:
        >>> binary_accuracy([0, 1, 1, 0], [0.1, 0.7, 0.4, 0.5])
        0.75
    """
    y_true, y_prob = _same_shape(y_true, y_prob, "binary_accuracy")
    if y_true.ndim == 2 and y_true.shape[1] != 1:
        raise ValueError(f"binary_accuracy: expected shape (N,) or (N, 1), got {y_true.shape}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"binary_accuracy: expected threshold in [0, 1], got {threshold}")
    if not np.all((y_true == 0) | (y_true == 1)):
        raise ValueError(
            f"binary_accuracy: y_true must hold only 0 and 1, got values {np.unique(y_true)[:5]}"
        )
    low, high = float(np.min(y_prob)), float(np.max(y_prob))
    if not (0.0 <= low and high <= 1.0):
        raise ValueError(
            f"binary_accuracy: y_prob must be probabilities in [0, 1], got values in "
            f"[{low}, {high}]; apply a Sigmoid to logits first"
        )
    return float(np.mean((y_prob > threshold) == (y_true == 1)))


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int | None = None) -> np.ndarray:
    """Return the counts C[i, j] of samples of true class i predicted as class j.

    Rows are true classes and columns predicted ones, as
    ``sklearn.metrics.confusion_matrix(y_true, y_pred, labels=range(num_classes))``.
    Unlike scikit-learn without ``labels``, classes are always 0 .. num_classes − 1,
    so a class absent from both arrays keeps its (zero) row and column.

    Args:
        y_true: the true class labels, integers >= 0.
        y_pred: the predicted class labels, integers >= 0.
        num_classes: C; None means max(y_true.max(), y_pred.max()) + 1. Default: None.
    Shape:
        - y_true, y_pred: (N,), integer.
        - Returns: (C, C), int64.
    Raises:
        ValueError: shapes are not (N,) with the same N > 0; a negative label; a label
            >= num_classes; num_classes < 1.
        TypeError: labels are not integers.
    Example:
        >>> confusion_matrix([0, 1, 1, 2], [0, 1, 2, 2])
        array([[1, 0, 0],
               [0, 1, 1],
               [0, 0, 1]])
    """
    y_true = _labels(y_true, "confusion_matrix", "y_true")
    y_pred = _labels(y_pred, "confusion_matrix", "y_pred")
    _same_length(y_true, y_pred, "confusion_matrix")
    largest = int(max(y_true.max(), y_pred.max()))
    if num_classes is None:
        num_classes = largest + 1
    elif num_classes < 1:
        raise ValueError(f"confusion_matrix: expected num_classes >= 1, got {num_classes}")
    elif largest >= num_classes:
        raise ValueError(
            f"confusion_matrix: found class label {largest} but num_classes={num_classes}; "
            "labels must be in [0, num_classes)"
        )
    flat = y_true.astype(np.int64) * num_classes + y_pred
    counts = np.bincount(flat, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64, copy=False)


def f1_score(y_true: Any, y_pred: Any, average: str = "macro") -> float:
    """Return the F1 score, the harmonic mean of precision and recall: 2·TP / (2·TP + FP + FN).

    Per class, F1 is computed one-vs-rest over the classes present in ``y_true`` or
    ``y_pred``, then averaged as ``sklearn.metrics.f1_score`` does (whose own
    default is ``average='binary'``).

    Args:
        y_true: the true class labels.
        y_pred: the predicted class labels.
        average: ``"macro"`` (unweighted mean over classes), ``"weighted"`` (mean
            weighted by each class's number of true samples) or ``"micro"``
            (global counts; equal to the accuracy for single-label data).
            Default: ``"macro"``.
    Shape:
        - y_true, y_pred: (N,), integer.
    Returns:
        The score, a float in [0, 1].
    Raises:
        ValueError: an unknown ``average``; shapes are not (N,) with the same N > 0.
        TypeError: labels are not integers.
    Example:
        >>> round(f1_score([0, 0, 1, 1], [0, 1, 1, 1]), 4)  # F1 = 2/3 and 4/5
        0.7333
    """
    if average not in ("macro", "weighted", "micro"):
        raise ValueError(
            f"f1_score: average must be one of 'macro', 'weighted', 'micro', got {average!r}"
        )
    matrix = confusion_matrix(y_true, y_pred)
    tp = np.diag(matrix).astype(np.float64)
    support = matrix.sum(axis=1)  # true samples per class
    predicted = matrix.sum(axis=0)
    if average == "micro":
        return float(tp.sum() / matrix.sum())
    present = (support + predicted) > 0  # sklearn's labels: classes seen in either array
    f1 = 2 * tp[present] / (support[present] + predicted[present])  # 2TP / (2TP + FP + FN)
    if average == "macro":
        return float(f1.mean())
    return float(np.average(f1, weights=support[present]))


def mean_squared_error(y_true: Any, y_pred: Any) -> float:
    """Return the mean of the squared errors: mean((y_true − y_pred)²), over all elements.

    Shape:
        - y_true, y_pred: (N,) or (N, k), the same shape, float.
    Raises:
        ValueError: the shapes differ (no broadcasting of (N,) against (N, 1)) or are empty.
    Example:
        >>> mean_squared_error([1.0, 2.0, 3.0], [1.0, 2.0, 5.0])
        1.3333333333333333
    """
    y_true, y_pred = _same_shape(y_true, y_pred, "mean_squared_error")
    return float(np.mean(np.square(y_true - y_pred)))


def mean_absolute_error(y_true: Any, y_pred: Any) -> float:
    """Return the mean of the absolute errors: mean(|y_true − y_pred|), over all elements.

    Shape:
        - y_true, y_pred: (N,) or (N, k), the same shape, float.
    Raises:
        ValueError: the shapes differ or are empty.
    Example:
        >>> mean_absolute_error([1.0, 2.0, 3.0], [1.5, 2.0, 2.0])
        0.5
    """
    y_true, y_pred = _same_shape(y_true, y_pred, "mean_absolute_error")
    return float(np.mean(np.abs(y_true - y_pred)))


def r2_score(y_true: Any, y_pred: Any) -> float:
    """Return the coefficient of determination: 1 − Σ(y − ŷ)² / Σ(y − mean(y))².

    For (N, k) targets the score of each column is averaged (scikit-learn's
    ``multioutput='uniform_average'``). A constant target column scores 1.0 when
    predicted exactly and 0.0 otherwise, as scikit-learn's ``force_finite=True``.

    Shape:
        - y_true, y_pred: (N,) or (N, k), the same shape, float, with N >= 2.
    Returns:
        The score, a float <= 1 (negative when worse than predicting the mean).
    Raises:
        ValueError: the shapes differ; N < 2.
    Example:
        >>> r2_score([1.0, 2.0, 3.0], [1.0, 2.0, 4.0])  # 1 − 1/2
        0.5
    """
    y_true, y_pred = _same_shape(y_true, y_pred, "r2_score")
    if y_true.shape[0] < 2:
        raise ValueError(f"r2_score: needs at least 2 samples, got shape {y_true.shape}")
    residual = np.atleast_1d(np.sum(np.square(y_true - y_pred), axis=0))
    total = np.atleast_1d(np.sum(np.square(y_true - y_true.mean(axis=0)), axis=0))
    constant = total == 0
    scores = 1.0 - np.divide(residual, total, out=np.zeros_like(residual), where=~constant)
    scores[constant] = np.where(residual[constant] == 0, 1.0, 0.0)  # sklearn's force_finite
    return float(np.mean(scores))
