"""Clustering metrics: how well unsupervised categories agree with the true labels.

Labels are seen only here, never by a module. A clustering is scored after the best one-to-one
matching of its clusters to the classes (the Hungarian algorithm on the contingency table), so
the arbitrary numbering of clusters does not matter. The numbers of clusters and classes may
differ: items of clusters left without a class (or of classes left without a cluster) count as
errors.

Every function takes 1-D integer labels and predictions as torch tensors (on any device),
numpy arrays or sequences, of the same length.

Example::

    >>> clustering_accuracy([0, 0, 1, 1], [1, 1, 0, 0])
    1.0
    >>> match_clusters([0, 0, 1, 1], [1, 1, 0, 0])
    {0: 1, 1: 0}
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn import metrics as _sklearn_metrics

from serket.errors import DataError

__all__ = [
    "clustering_accuracy",
    "match_clusters",
    "confusion_matrix",
    "adjusted_rand_index",
    "normalized_mutual_info",
    "clustering_report",
]


def _as_label_array(values, name: str) -> np.ndarray:
    """A 1-D int64 numpy copy of ``values``; DataError if they are not integer labels."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
        if values.dtype == torch.bfloat16:  # numpy has no bfloat16
            values = values.float()
        values = values.numpy()
    try:
        array = np.asarray(values)
    except Exception as error:  # ragged lists and the like
        raise DataError(f"{name} cannot be read as an array of labels: {error}") from None
    if array.ndim != 1:
        raise DataError(f"{name} must be one-dimensional, got shape {tuple(array.shape)}")
    if array.dtype == np.bool_ or not (
        np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    ):
        raise DataError(f"{name} must hold integer labels, got dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.floating):
        # Float labels are accepted only when every value is a finite whole number (0.0, 1.0,
        # ...) that int64 holds: NaN would otherwise become -2**63 and count as a label.
        finite = np.isfinite(array)
        if not finite.all():
            position = int(np.flatnonzero(~finite)[0])
            raise DataError(f"{name} must hold integer labels, got the non-finite value "
                            f"{float(array[position])!r} at index {position}")
        whole = array == np.round(array)
        if not whole.all():
            position = int(np.flatnonzero(~whole)[0])
            raise DataError(f"{name} must hold integer labels, got the non-integer value "
                            f"{float(array[position])!r} at index {position}")
        wide = np.abs(array) >= 2.0**63
        if wide.any():
            position = int(np.flatnonzero(wide)[0])
            raise DataError(f"{name} must hold integer labels within int64, got "
                            f"{float(array[position])!r} at index {position}")
    elif array.dtype == np.uint64 and len(array) and array.max() > np.iinfo(np.int64).max:
        position = int(np.argmax(array > np.iinfo(np.int64).max))
        raise DataError(f"{name} must hold integer labels within int64, got "
                        f"{int(array[position])} at index {position}")
    return array.astype(np.int64)


def _labels_and_predictions(labels, predictions) -> tuple[np.ndarray, np.ndarray]:
    labels = _as_label_array(labels, "labels")
    predictions = _as_label_array(predictions, "predictions")
    if len(labels) != len(predictions):
        raise DataError(
            f"labels and predictions differ in length: {len(labels)} labels, "
            f"{len(predictions)} predictions"
        )
    if len(labels) == 0:
        raise DataError("labels and predictions are empty: nothing to score")
    return labels, predictions


def _contingency(labels: np.ndarray, predictions: np.ndarray):
    """Counts[i, j] = items of the i-th class (sorted) put in the j-th cluster (sorted)."""
    classes, class_index = np.unique(labels, return_inverse=True)
    clusters, cluster_index = np.unique(predictions, return_inverse=True)
    counts = np.zeros((len(classes), len(clusters)), dtype=np.int64)
    np.add.at(counts, (class_index, cluster_index), 1)
    return counts, classes, clusters


def _best_matching(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row (class) and column (cluster) indices of the matching that covers the most items."""
    return linear_sum_assignment(counts, maximize=True)


def match_clusters(labels, predictions) -> dict[int, int]:
    """The one-to-one mapping of clusters to classes that agrees with the most items.

    Args:
        labels: true classes, shape (N,).
        predictions: cluster indices, shape (N,).

    Returns:
        ``{cluster: label}`` as Python ints. When there are more clusters than classes, the
        clusters left over are absent from the mapping (their items count as errors).

    Example::

        >>> match_clusters([0, 0, 1, 1, 2], [2, 2, 0, 0, 1])
        {0: 1, 1: 2, 2: 0}
    """
    labels, predictions = _labels_and_predictions(labels, predictions)
    counts, classes, clusters = _contingency(labels, predictions)
    class_rows, cluster_columns = _best_matching(counts)
    mapping = {int(clusters[j]): int(classes[i]) for i, j in zip(class_rows, cluster_columns)}
    return dict(sorted(mapping.items()))


def clustering_accuracy(labels, predictions) -> float:
    """Fraction of items whose cluster is matched to their class, under the best matching.

    Args:
        labels: true classes, shape (N,).
        predictions: cluster indices, shape (N,); the numbering is arbitrary.

    Returns:
        A float in [0, 1].

    Example::

        >>> clustering_accuracy([0, 0, 0, 1, 1, 1], [1, 1, 0, 0, 0, 2])
        0.6666666666666666
    """
    labels, predictions = _labels_and_predictions(labels, predictions)
    counts, _, _ = _contingency(labels, predictions)
    class_rows, cluster_columns = _best_matching(counts)
    return float(counts[class_rows, cluster_columns].sum()) / len(labels)


def confusion_matrix(labels, predictions, mapped: bool = True) -> np.ndarray:
    """Counts of items by true class (rows) and predicted cluster or class (columns).

    Rows are the classes found in ``labels``, in sorted order.

    Args:
        labels: true classes, shape (N,).
        predictions: cluster indices, shape (N,).
        mapped: if True, each cluster is first renamed to its matched class
            (:func:`match_clusters`), so the columns are the same classes as the rows and the
            trace divided by N is :func:`clustering_accuracy`; items of clusters left without a
            class go to one extra last column, present only when there are such items. If
            False, the raw contingency table: one column per cluster, in sorted order.

    Returns:
        An int64 numpy array, shape (n_classes, n_classes [+ 1]) or (n_classes, n_clusters).
    """
    labels, predictions = _labels_and_predictions(labels, predictions)
    counts, classes, clusters = _contingency(labels, predictions)
    if not mapped:
        return counts
    class_rows, cluster_columns = _best_matching(counts)
    matched = np.zeros((len(classes), len(classes)), dtype=np.int64)
    matched[:, class_rows] = counts[:, cluster_columns]
    unmatched_columns = np.setdiff1d(np.arange(len(clusters)), cluster_columns)
    if len(unmatched_columns) and counts[:, unmatched_columns].sum() > 0:
        unmatched = counts[:, unmatched_columns].sum(axis=1, keepdims=True)
        matched = np.concatenate([matched, unmatched], axis=1)
    return matched


def adjusted_rand_index(labels, predictions) -> float:
    """Adjusted Rand index (1 for identical partitions, about 0 for chance); see scikit-learn."""
    labels, predictions = _labels_and_predictions(labels, predictions)
    return float(_sklearn_metrics.adjusted_rand_score(labels, predictions))


def normalized_mutual_info(labels, predictions, average_method: str = "arithmetic") -> float:
    """Normalised mutual information in [0, 1] (scikit-learn's ``normalized_mutual_info_score``)."""
    labels, predictions = _labels_and_predictions(labels, predictions)
    return float(
        _sklearn_metrics.normalized_mutual_info_score(
            labels, predictions, average_method=average_method
        )
    )


def clustering_report(labels, predictions) -> dict[str, float]:
    """The three scores the benchmark reports: ``dict(accuracy=, ari=, nmi=)``."""
    labels, predictions = _labels_and_predictions(labels, predictions)
    return dict(
        accuracy=clustering_accuracy(labels, predictions),
        ari=adjusted_rand_index(labels, predictions),
        nmi=normalized_mutual_info(labels, predictions),
    )
