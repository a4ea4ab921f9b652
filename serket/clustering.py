"""Small clustering helpers shared by the modules."""

from __future__ import annotations

import torch

__all__ = ["kmeans_pp_labels", "kmeans_pp_start"]


def kmeans_pp_labels(points: torch.Tensor, n_clusters: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding: ``n_clusters`` centres drawn by D^2 sampling, each point labelled by
    its nearest centre, (N,) long."""
    n = points.shape[0]
    first = torch.randint(n, (1,), generator=generator, device=points.device)
    centres = [points[first[0]]]
    nearest = (points - centres[0]).square().sum(1)
    for _ in range(1, n_clusters):
        # D^2 sampling; duplicates everywhere (all distances 0) fall back to uniform
        weights = torch.where(nearest.sum() > 0, nearest, torch.ones_like(nearest))
        pick = torch.multinomial(weights, 1, generator=generator)
        centres.append(points[pick[0]])
        nearest = torch.minimum(nearest, (points - centres[-1]).square().sum(1))
    return torch.cdist(points, torch.stack(centres)).argmin(1)


def kmeans_pp_start(points: torch.Tensor, n_clusters: int, generator: torch.Generator) -> torch.Tensor:
    """:func:`kmeans_pp_labels` as hard responsibilities: (N, n_clusters) float64 one-hot."""
    labels = kmeans_pp_labels(points, n_clusters, generator)
    return (labels[:, None] == torch.arange(n_clusters, device=points.device)).to(torch.float64)
