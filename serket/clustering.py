"""Clustering helpers shared by the modules: k-means++ seeding and k-means with restarts.

Every k-means++ start in the library — a GMM's first assignments, the fresh starts of a joint
category fit, the recogniser's acoustic units — is drawn by :func:`kmeans_pp_centres`.
"""

from __future__ import annotations

import torch

from .errors import DataError
from .inference import best_of
from .validation import check_int

__all__ = ["squared_distances", "kmeans_pp_centres", "kmeans_pp_labels", "kmeans_pp_start", "lloyd", "kmeans"]


def squared_distances(points: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """``|x - c|^2`` for every point and centre, (N, D) and (C, D) -> (N, C), expanded as
    ``|x|^2 - 2 x.c + |c|^2`` (one matmul: fast for many points); rounding below 0 is clamped."""
    return (points.pow(2).sum(1, keepdim=True) - 2.0 * points @ centres.T + centres.pow(2).sum(1)).clamp_min(0)


def _difference_distances(points: torch.Tensor, centres: list[torch.Tensor]) -> torch.Tensor:
    return (points - centres[-1]).square().sum(1)


def _expanded_distances(points: torch.Tensor, centres: list[torch.Tensor]) -> torch.Tensor:
    return squared_distances(points, centres[-1][None]).squeeze(1)


def _cdist_to_all(points: torch.Tensor, centres: list[torch.Tensor]) -> torch.Tensor:
    return torch.cdist(points, torch.stack(centres)).pow(2).min(1).values


# how D^2 is computed: to the newest centre ((x - c)^2 summed, or expanded), or to all of them
_DISTANCES = {"difference": _difference_distances, "expanded": _expanded_distances, "cdist": _cdist_to_all}


def kmeans_pp_centres(points: torch.Tensor, n_clusters: int, generator: torch.Generator | None, *,
                      distances: str = "difference", normalise: bool = False,
                      fallback: float | None = None) -> torch.Tensor:
    """k-means++ seeding: ``n_clusters`` centres (n_clusters, D) chosen among the points.

    The first centre is a point drawn uniformly; each next one a point drawn with probability
    proportional to its squared distance D^2 to the nearest centre so far (D^2 sampling;
    uniformly once every distance is 0, as when the points hold fewer distinct values than
    clusters). The draws are one ``randint`` and then one ``multinomial`` per centre.

    Args:
        distances: how D^2 is computed: ``"difference"`` (``(x - c)^2`` summed, kept as a running
            minimum), ``"expanded"`` (:func:`squared_distances`, running minimum) or ``"cdist"``
            (``cdist`` to every centre so far, then the minimum).
        normalise: hand the draw ``D^2 / sum(D^2)`` instead of D^2 itself.
        fallback: the weight of every point once all distances are 0 (default ``1/N`` when
            normalising, else 1).

    Every variant draws from the same distribution; they round differently, so the same stream
    can pick another point. Each caller keeps the arithmetic its figures were drawn with.
    """
    if distances not in _DISTANCES:
        raise ValueError(f"k-means++: distances must be one of {sorted(_DISTANCES)}, got {distances!r}")
    n = points.shape[0]
    distance = _DISTANCES[distances]
    if fallback is None:
        fallback = 1.0 / n if normalise else 1.0
    first = torch.randint(n, (1,), generator=generator, device=points.device)
    centres = [points[first[0]]]
    nearest = distance(points, centres)
    for _ in range(1, n_clusters):
        total = nearest.sum()
        weights = nearest / total if normalise else nearest
        weights = torch.where(total > 0, weights, torch.full_like(nearest, fallback))
        pick = torch.multinomial(weights, 1, generator=generator)
        centres.append(points[pick[0]])
        if distances == "cdist":
            nearest = distance(points, centres)
        else:
            nearest = torch.minimum(nearest, distance(points, centres))
    return torch.stack(centres)


def kmeans_pp_labels(points: torch.Tensor, n_clusters: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (:func:`kmeans_pp_centres`), each point labelled by its nearest centre:
    (N,) long."""
    return torch.cdist(points, kmeans_pp_centres(points, n_clusters, generator)).argmin(1)


def kmeans_pp_start(points: torch.Tensor, n_clusters: int, generator: torch.Generator) -> torch.Tensor:
    """:func:`kmeans_pp_labels` as hard responsibilities: (N, n_clusters) float64 one-hot."""
    labels = kmeans_pp_labels(points, n_clusters, generator)
    return (labels[:, None] == torch.arange(n_clusters, device=points.device)).to(torch.float64)


def lloyd(points: torch.Tensor, centres: torch.Tensor, iterations: int, *, distances: str = "expanded") -> torch.Tensor:
    """``iterations`` Lloyd steps from ``centres``; a centre that loses every point stays where it
    was. ``distances``: nearest centres by :func:`squared_distances` (``"expanded"``) or by
    ``torch.cdist`` (``"cdist"``), the arithmetic each caller's figures were drawn with."""
    k = centres.shape[0]
    for _ in range(iterations):
        if distances == "cdist":
            labels = torch.cdist(points, centres).argmin(1)
        else:
            labels = squared_distances(points, centres).argmin(1)
        counts = torch.bincount(labels, minlength=k).to(points.dtype)
        sums = torch.zeros_like(centres).index_add_(0, labels, points)
        centres = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centres)
    return centres


def kmeans(points: torch.Tensor, k: int, *, iterations: int = 25, restarts: int = 3,
           generator: torch.Generator | None = None, sample: int = 20000, chunk: int = 32768):
    """k-means++ seeding and Lloyd iterations, the best of ``restarts`` by inertia (unsupervised).

    Seeding and iterations run on a random subset of ``sample`` points (all of them when fewer);
    the result labels every point, ``chunk`` points at a time. Returns (centres (k, D),
    labels (M,)).
    """
    k = check_int("k-means", "k", k, minimum=1)
    iterations = check_int("k-means", "iterations", iterations, minimum=0)
    restarts = check_int("k-means", "restarts", restarts, minimum=1)
    sample = check_int("k-means", "sample", sample, minimum=1)
    chunk = check_int("k-means", "chunk", chunk, minimum=1)
    n = points.shape[0]
    if n < k:
        raise DataError(f"k-means: {n} points cannot make {k} clusters")
    subset = points if n <= sample else points[torch.randperm(n, generator=generator, device=points.device)[:sample]]

    def restart():
        centres = kmeans_pp_centres(subset, k, generator, distances="expanded", normalise=True)
        centres = lloyd(subset, centres, iterations)
        return -float(squared_distances(subset, centres).amin(1).sum()), centres  # less inertia wins

    _, centres, _ = best_of(restart for _ in range(restarts))
    labels = torch.cat([squared_distances(points[s:s + chunk], centres).argmin(1) for s in range(0, n, chunk)])
    return centres, labels
