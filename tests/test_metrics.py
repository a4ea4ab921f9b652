"""Clustering metrics: exact values on small hand-checked cases, and clear errors."""

import numpy as np
import pytest
import torch

from serket.errors import DataError
from serket.metrics import (
    adjusted_rand_index,
    clustering_accuracy,
    clustering_report,
    confusion_matrix,
    match_clusters,
    normalized_mutual_info,
)


def test_a_permutation_of_the_labels_scores_one():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, size=500)
    permutation = rng.permutation(10)
    predictions = permutation[labels]
    assert clustering_accuracy(labels, predictions) == 1.0
    assert match_clusters(labels, predictions) == {int(permutation[c]): c for c in range(10)}
    report = clustering_report(labels, predictions)
    assert report == pytest.approx(dict(accuracy=1.0, ari=1.0, nmi=1.0))


def test_hand_computed_six_items():
    # Contingency (rows = labels 0, 1; columns = clusters 0, 1, 2):
    #   label 0: [1, 2, 0]
    #   label 1: [2, 0, 1]
    # Best matching: cluster 1 -> label 0 (2 items), cluster 0 -> label 1 (2 items): 4 of 6.
    labels = [0, 0, 0, 1, 1, 1]
    predictions = [1, 1, 0, 0, 0, 2]
    assert clustering_accuracy(labels, predictions) == pytest.approx(4 / 6)
    assert match_clusters(labels, predictions) == {0: 1, 1: 0}
    np.testing.assert_array_equal(
        confusion_matrix(labels, predictions, mapped=False), [[1, 2, 0], [2, 0, 1]]
    )
    # Mapped: columns = labels 0, 1, then the items of the unmatched cluster 2.
    mapped = confusion_matrix(labels, predictions)
    np.testing.assert_array_equal(mapped, [[2, 1, 0], [0, 2, 1]])
    assert np.trace(mapped) / 6 == pytest.approx(clustering_accuracy(labels, predictions))


def _greedy_accuracy(labels, predictions):
    """Match the largest remaining cell first: the shortcut the Hungarian algorithm replaces."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    counts = np.zeros((predictions.max() + 1, labels.max() + 1), dtype=int)
    np.add.at(counts, (predictions, labels), 1)
    counts_left = counts.astype(float)
    total = 0
    for _ in range(min(counts.shape)):
        cluster, label = np.unravel_index(np.argmax(counts_left), counts_left.shape)
        total += counts[cluster, label]
        counts_left[cluster, :] = -1
        counts_left[:, label] = -1
    return total / len(labels)


def test_hungarian_beats_greedy_matching():
    # Cluster 0 holds 3 items of label 0 and 2 of label 1; cluster 1 holds 2 items of label 0.
    # Greedy takes the largest cell (cluster 0 -> label 0, 3 items) and is left with
    # cluster 1 -> label 1 (0 items): 3/7. The optimum swaps them: 2 + 2 = 4/7.
    predictions = [0, 0, 0, 0, 0, 1, 1]
    labels = [0, 0, 0, 1, 1, 0, 0]
    assert _greedy_accuracy(labels, predictions) == pytest.approx(3 / 7)
    assert clustering_accuracy(labels, predictions) == pytest.approx(4 / 7)
    assert match_clusters(labels, predictions) == {0: 1, 1: 0}


def test_more_clusters_than_classes_and_fewer():
    labels = [0, 0, 1, 1, 1, 1]
    predictions = [5, 5, 7, 7, 9, 9]  # class 1 split over two clusters: one must lose
    assert clustering_accuracy(labels, predictions) == pytest.approx(4 / 6)
    assert len(match_clusters(labels, predictions)) == 2
    # Fewer clusters than classes: everything in one cluster scores the largest class.
    assert clustering_accuracy([0, 1, 1, 2, 2, 2], [3, 3, 3, 3, 3, 3]) == pytest.approx(3 / 6)
    np.testing.assert_array_equal(
        confusion_matrix([0, 1, 1, 2, 2, 2], [3, 3, 3, 3, 3, 3]), [[0, 0, 1], [0, 0, 2], [0, 0, 3]]
    )


def test_accepts_tensors_arrays_and_lists_alike():
    labels = [2, 2, 0, 0, 1, 1, 1]
    predictions = [0, 0, 1, 1, 1, 2, 2]
    expected = clustering_accuracy(labels, predictions)
    assert clustering_accuracy(torch.tensor(labels), torch.tensor(predictions)) == expected
    assert clustering_accuracy(np.array(labels, dtype=np.int32), np.array(predictions)) == expected
    # Whole-number floats are labels too (e.g. labels stored as float).
    assert clustering_accuracy(torch.tensor(labels, dtype=torch.float32), predictions) == expected
    if torch.cuda.is_available():
        on_gpu = torch.tensor(labels).cuda(), torch.tensor(predictions).cuda()
        assert clustering_accuracy(*on_gpu) == expected


def test_ari_and_nmi_match_their_definitions_on_a_small_case():
    labels = [0, 0, 0, 1, 1, 1]
    predictions = [0, 0, 1, 1, 2, 2]
    assert adjusted_rand_index(labels, predictions) == pytest.approx(0.24242424242424246)
    assert 0.0 < normalized_mutual_info(labels, predictions) < 1.0
    assert adjusted_rand_index(labels, labels) == 1.0


@pytest.mark.parametrize(
    "labels, predictions, message",
    [
        ([0, 1, 1], [0, 1], "differ in length"),
        ([], [], "empty"),
        ([0.0, 0.5, 1.0], [0, 1, 1], "integer labels"),
        ([0, 1, 1], [0, float("nan"), 1], "integer labels"),
        ([[0, 1], [1, 0]], [[0, 1], [1, 0]], "one-dimensional"),
        (["a", "b"], [0, 1], "integer labels"),
        ([True, False], [0, 1], "integer labels"),
    ],
)
def test_bad_inputs_raise_data_error(labels, predictions, message):
    for metric in (clustering_accuracy, match_clusters, confusion_matrix, clustering_report):
        with pytest.raises(DataError, match=message):
            metric(labels, predictions)
