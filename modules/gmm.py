"""A Bayesian Gaussian mixture learned by collapsed Gibbs sampling, blocked for the device.

Generative model, for ``K`` clusters in ``D`` dimensions and items ``i = 1..N``::

    pi ~ Dirichlet(alpha/K, ..., alpha/K)
    Lambda_k ~ Wishart(nu0, inverse scale S0)          (E[Lambda_k] = nu0 S0^-1)
    mu_k | Lambda_k ~ N(m0, (kappa0 Lambda_k)^-1)
    c_i ~ Categorical(pi) x prior_i                   (prior_i: optional message on port "c")
    x_i | c_i = k ~ N(mu_k, Lambda_k^-1)

The weights, means and precisions are integrated out; only the assignments ``c`` are sampled.
The per-cluster sufficient statistics (count ``n``, sum, sum of outer products) give the
Normal-Wishart posterior ``kappa = kappa0 + n``, ``nu = nu0 + n``,
``m = (kappa0 m0 + sum x) / kappa``, ``S = S0 + kappa0 m0 m0^T + sum x x^T - kappa m m^T``,
and a new point's predictive under a cluster is a multivariate Student-t::

    log p(x | k) = lgamma((nu+1)/2) - lgamma((nu-D+1)/2) - D/2 log(pi) - D/2 log((kappa+1)/kappa)
                   - 1/2 log det S - (nu+1)/2 log(1 + kappa/(kappa+1) (x-m)^T S^-1 (x-m))

A point's conditional needs its own cluster's statistics *without* it. Removing ``x`` from
``(kappa, m, S)`` gives ``S' = S - c u u^T`` with ``u = x - m``, ``c = kappa/(kappa-1)``; with
``a = u^T S^-1 u``, the matrix determinant lemma and Sherman-Morrison turn the predictive under
the downdated statistics into the closed form::

    log p(x | k without x) = lgamma(nu/2) - lgamma((nu-D)/2) - D/2 log(pi) - D/2 log(c)
                             - 1/2 log det S + (nu-1)/2 log(1 - c a)

so one batched Cholesky of the K scatter matrices gives every (point, cluster) term of a block,
leave-one-out included. Each item's monomials ``[1, x, vec(x x^T)]`` make both the
Mahalanobis terms (against ``[m^T P m, -2 P m, vec P]``, ``P = S^-1``) and the update of the
statistics a single matmul per block.

Sampling is *blocked*: a sweep visits the items in a random order, ``block_size`` at a time;
the items of a block are drawn together, each from its conditional given every other item's
current assignment, and the statistics are updated after the block. ``block_size=1`` is the
exact sequential collapsed Gibbs sampler. Larger blocks are a parallel approximation: items of
one block do not see each other's new clusters, so the chain's stationary distribution is not
exactly the posterior. How far off depends on the share of a cluster that moves at once: small
when a block is a small part of every cluster (the default ``block_size``, 256 of thousands
of items), large when a block holds much of one (``tests/test_gmm.py`` measures it on a tiny
problem whose posterior is enumerated; ``benchmarks/bench_gmm_gibbs.py`` compares the blocked
and the exact sampler at the default size).

The arithmetic lives in pure functions beside the class (:func:`normal_wishart_posterior`,
:func:`collapsed_log_conditionals`, :func:`log_marginal_likelihood`, :func:`gibbs_sweep`). It
runs in float64: the scatter matrices of thousands of items lose too many digits in float32,
and float64 costs little at these sizes.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import NamedTuple

import torch

from serket.clustering import kmeans_pp_labels, kmeans_pp_start
from serket.errors import ConfigError, DataError
from serket.inference import SharedCategory, best_of
from serket.messages import Categorical, Gaussian, Message, Samples
from serket.module import Module, Port
from serket.sampling import gumbel_noise
from serket.validation import check_choice, check_int, check_items, check_real

__all__ = [
    "GMM",
    "ClusterCollapseWarning",
    "NormalWishart",
    "ClusterPosterior",
    "sufficient_statistics",
    "normal_wishart_posterior",
    "student_t_log_predictive",
    "collapsed_log_conditionals",
    "log_marginal_likelihood",
    "log_assignment_prior",
    "gibbs_sweep",
    "SweepResult",
]

_LOG_PI = math.log(math.pi)
_DTYPE = torch.float64


class ClusterCollapseWarning(UserWarning):
    """Clusters of a mixture lost all their items during an update."""


class NormalWishart(NamedTuple):
    """A Normal-Wishart prior: ``Lambda ~ Wishart(nu0, scale0^-1)``, ``mu ~ N(mean0, (kappa0 Lambda)^-1)``.

    ``scale0`` (D, D) is the Wishart's *inverse* scale: the prior mean of the precision is
    ``nu0 scale0^-1`` and, for ``nu0 > D + 1``, the prior mean of the covariance is
    ``scale0 / (nu0 - D - 1)``.
    """

    mean0: torch.Tensor
    kappa0: float
    nu0: float
    scale0: torch.Tensor


class ClusterPosterior(NamedTuple):
    """Normal-Wishart posterior of K clusters; ``chol`` is the lower Cholesky factor of ``scale``."""

    kappa: torch.Tensor  # (K,)
    nu: torch.Tensor  # (K,)
    mean: torch.Tensor  # (K, D)
    scale: torch.Tensor  # (K, D, D)
    chol: torch.Tensor  # (K, D, D)
    logdet: torch.Tensor  # (K,)


# --- the mathematics -----------------------------------------------------------------------------
def _features(points: torch.Tensor) -> torch.Tensor:
    """``[1, x, vec(x x^T)]`` per item: (N, D) -> (N, 1 + D + D^2).

    Their per-cluster sums are the sufficient statistics (count, sum, sum of outer products),
    and their inner products with ``[m^T P m, -2 P m, vec P]`` are the quadratic forms
    ``(x - m)^T P (x - m)``: one matmul each for a whole block.
    """
    n, d = points.shape
    products = (points[:, :, None] * points[:, None, :]).reshape(n, d * d)
    return torch.cat([points.new_ones(n, 1), points, products], 1)


def _scale_matrix(scale0, dim: int) -> torch.Tensor:
    """The Wishart inverse scale as a (D, D) float64 matrix, from a number (times the identity)
    or a matrix."""
    scale0 = torch.as_tensor(scale0, dtype=_DTYPE)
    return scale0 * torch.eye(dim, dtype=_DTYPE) if scale0.ndim == 0 else scale0


def _onehot(labels, n_clusters: int, dtype):
    # a comparison, not F.one_hot: F.one_hot checks the range on the host, a sync on CUDA
    return (labels[:, None] == torch.arange(n_clusters, device=labels.device)).to(dtype)


def _moments(points, assignments, n_clusters: int) -> torch.Tensor:
    """Per-cluster sums of :func:`_features`: (K, 1 + D + D^2)."""
    return _onehot(assignments, n_clusters, points.dtype).T @ _features(points)


def _split_moments(moments, dim: int):
    n_clusters = moments.shape[0]
    return moments[:, 0], moments[:, 1:1 + dim], moments[:, 1 + dim:].reshape(n_clusters, dim, dim)


def sufficient_statistics(points: torch.Tensor, assignments: torch.Tensor, n_clusters: int):
    """Per-cluster count (K,), sum (K, D) and sum of outer products (K, D, D)."""
    return _split_moments(_moments(points, assignments, n_clusters), points.shape[1])


def _mean_scale_cholesky(kappa, weighted_sums, outer, base):
    # weighted_sums = kappa0 m0 + sum x = kappa m;  base = S0 + kappa0 m0 m0^T
    mean = weighted_sums / kappa[:, None]
    # only the lower triangle is read by the Cholesky, so rounding asymmetry is harmless
    scale = base + outer - mean[:, :, None] * weighted_sums[:, None, :]
    # cholesky_ex does not synchronise with the host (no error check): the sweep stays on the device
    chol, _ = torch.linalg.cholesky_ex(scale)
    return mean, scale, chol


def _half_logdet(chol):
    # 1/2 log det S from its Cholesky factor (the same bits as 0.5 * (2.0 * ...): powers of two)
    return chol.diagonal(dim1=1, dim2=2).log().sum(-1)


def _posterior(kappa, nu, weighted_sums, outer, base) -> ClusterPosterior:
    mean, scale, chol = _mean_scale_cholesky(kappa, weighted_sums, outer, base)
    return ClusterPosterior(kappa, nu, mean, scale, chol, 2.0 * _half_logdet(chol))


def normal_wishart_posterior(prior: NormalWishart, counts, sums, outer) -> ClusterPosterior:
    """The posterior of each cluster given its sufficient statistics (K,), (K, D), (K, D, D)."""
    base = prior.scale0 + prior.kappa0 * torch.outer(prior.mean0, prior.mean0)
    return _posterior(prior.kappa0 + counts, prior.nu0 + counts,
                      prior.kappa0 * prior.mean0 + sums, outer, base)


def _quadratic_forms(chol, mean, eye) -> torch.Tensor:
    """(1 + D + D^2, K) such that ``_features(x) @ Q = (x - m_k)^T S_k^-1 (x - m_k)``, from the
    Cholesky factors (K, D, D) of the ``S_k``, the means (K, D) and the (D, D) identity."""
    # P = L^-T L^-1 by a triangular solve: cholesky_inverse would check errors on the host (a sync)
    inverse = torch.linalg.solve_triangular(chol, eye, upper=False)
    precision = inverse.mT @ inverse
    pm = (precision @ mean[:, :, None]).squeeze(-1)
    mpm = (mean * pm).sum(-1, keepdim=True)
    return torch.cat([mpm, -2 * pm, precision.flatten(1)], 1).T


def _mahalanobis(points, post: ClusterPosterior):
    """``(x_i - m_k)^T S_k^-1 (x_i - m_k)`` for all items and clusters: (B, D) -> (B, K).

    Expanded as ``x^T P x - 2 x^T P m + m^T P m``: in float64 the cancellation costs about
    ``1e-16 (|x|^2 + |m|^2) / sigma^2``, far below what matters (data are centred on the prior
    mean first); rounding below zero is clamped.
    """
    eye = torch.eye(points.shape[1], dtype=post.chol.dtype, device=post.chol.device)
    return (_features(points) @ _quadratic_forms(post.chol, post.mean, eye)).clamp_min(0)


def _log_t_constant(kappa, nu, dim: int):
    # the terms of the Student-t log predictive that depend on neither the point nor S
    return (torch.lgamma((nu + 1) / 2) - torch.lgamma((nu - dim + 1) / 2)
            - 0.5 * dim * _LOG_PI - 0.5 * dim * (torch.log(kappa + 1) - torch.log(kappa)))


def _count_terms(kappa, nu, counts, alpha: float, n_clusters: int, dim: int) -> torch.Tensor:
    """The parts of the collapsed conditional that depend on a cluster's count only: (M, 6)
    for M clusters with the given ``kappa``, ``nu`` and ``counts`` (each (M,)).

    Columns, in pairs (a new member, then a current member left out), so that each step of
    :func:`_log_conditionals` is one kernel for both: the constants ``log(n + alpha/K) +
    t-constant`` and the same at ``n - 1``; the factors of the Mahalanobis term
    ``kappa/(kappa+1)`` and ``c = kappa/(kappa-1)``; the factors of the logarithms
    ``(nu+1)/2`` and ``-(nu-1)/2`` (negated, so that both are subtracted). The sweep evaluates
    them once for every count 0..N and looks them up, which saves a dozen small kernels per block.
    """
    weight = alpha / n_clusters
    new = torch.log(counts + weight) + _log_t_constant(kappa, nu, dim)
    member = counts >= 1  # a cluster with no items has no member to leave out
    safe_kappa = torch.where(member, kappa, kappa + 1)
    safe_nu = torch.where(member, nu, nu + 1)
    own = (torch.log(torch.where(member, counts - 1 + weight, weight))
           + _log_t_constant(safe_kappa - 1, safe_nu - 1, dim))
    return torch.stack([new, own, kappa / (kappa + 1), safe_kappa / (safe_kappa - 1),
                        0.5 * (nu + 1), -0.5 * (safe_nu - 1)], dim=1)


@functools.lru_cache(maxsize=4)
def _count_table(n: int, kappa0: float, nu0: float, alpha: float, n_clusters: int, dim: int,
                 dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(n + 1, 7): for every count 0..n, ``kappa`` and then :func:`_count_terms`. Each block of
    a sweep looks its K clusters' rows up in one gather; kept between the sweeps of an update
    (read only, never written)."""
    every_count = torch.arange(n + 1, dtype=dtype, device=device)
    kappas = kappa0 + every_count
    terms = _count_terms(kappas, nu0 + every_count, every_count, alpha, n_clusters, dim)
    return torch.cat([kappas[:, None], terms], 1)


def student_t_log_predictive(points, post: ClusterPosterior):
    """``log p(x_i | cluster k's data)`` for new points: (B, D) -> (B, K)."""
    dim = points.shape[1]
    a = _mahalanobis(points, post)
    const = _log_t_constant(post.kappa, post.nu, dim) - 0.5 * post.logdet
    return const - 0.5 * (post.nu + 1) * torch.log1p(post.kappa / (post.kappa + 1) * a)


def _log_conditionals(a, is_own, half_logdet, terms):
    # a: (B, K) Mahalanobis terms; is_own: (B, K) each item's current cluster; terms:
    # _count_terms of each cluster's current count. On a last axis of two, each item joining
    # cluster k (0) and each item staying in its own cluster k, left out (1): one kernel a step
    constants = terms[:, :2] - half_logdet[:, None]
    scaled = a[:, :, None] * terms[:, 2:4]  # kappa/(kappa+1) a, c a
    logs = torch.empty_like(scaled)
    torch.log1p(scaled[..., 0], out=logs[..., 0])
    # own cluster, leave-one-out: S' = S - c u u^T, det S' = det S (1 - c a); 1 - c a > 0 in
    # exact arithmetic (it is det S' / det S), the clamp only guards rounding
    torch.log((1 - scaled[..., 1]).clamp_min_(torch.finfo(a.dtype).tiny), out=logs[..., 1])
    log_joining_or_staying = constants - terms[:, 4:6] * logs
    return torch.where(is_own, log_joining_or_staying[..., 1], log_joining_or_staying[..., 0])


def collapsed_log_conditionals(points, own, counts, post: ClusterPosterior, alpha: float):
    """Unnormalised ``log p(c_i = k | x, c_-i)`` for items currently in clusters ``own``: (B, K).

    ``counts`` (K,) and ``post`` include the items themselves; each item's own cluster is
    downdated in closed form (see the module docstring).
    """
    n_clusters, dim = counts.shape[0], points.shape[1]
    terms = _count_terms(post.kappa, post.nu, counts, alpha, n_clusters, dim)
    is_own = own[:, None] == torch.arange(n_clusters, device=points.device)
    return _log_conditionals(_mahalanobis(points, post), is_own, 0.5 * post.logdet, terms)


def log_marginal_likelihood(prior: NormalWishart, counts, post: ClusterPosterior):
    """``log p(x_k)`` of each cluster's data with mean and precision integrated out: (K,)."""
    dim = prior.mean0.shape[0]
    logdet0 = torch.logdet(prior.scale0)
    return (-0.5 * dim * _LOG_PI * counts
            + 0.5 * dim * (math.log(prior.kappa0) - torch.log(post.kappa))
            + torch.mvlgamma(post.nu / 2, dim) - torch.mvlgamma(torch.full_like(post.nu, prior.nu0 / 2), dim)
            + 0.5 * prior.nu0 * logdet0 - 0.5 * post.nu * post.logdet)


def log_assignment_prior(counts, alpha: float):
    """``log p(c)`` of one labelled assignment under a symmetric Dirichlet(alpha/K) on the weights."""
    n_clusters = counts.shape[0]
    a = alpha / n_clusters
    total = counts.sum()
    return (math.lgamma(alpha) - torch.lgamma(total + alpha)
            + (torch.lgamma(counts + a) - math.lgamma(a)).sum())


class SweepResult(NamedTuple):
    """What :func:`gibbs_sweep` returns."""

    assignments: torch.Tensor  # (N,) long: the tensor that was passed in, updated
    statistics: torch.Tensor  # (K, 1 + D + D^2): per-cluster count, sum, vec(sum of x x^T)
    conditionals: torch.Tensor | None  # (N, K) with the prior on c, when recorded
    own_conditionals: torch.Tensor | None  # (N, K) without it, when recorded


def gibbs_sweep(points, assignments, prior: NormalWishart, *, alpha: float, n_clusters: int,
                block_size: int, generator: torch.Generator, log_prior=None, record: bool = False,
                statistics=None) -> SweepResult:
    """One sweep of blocked collapsed Gibbs sampling.

    Args:
        points: (N, D) float64 data.
        assignments: (N,) long, updated in place.
        prior: the clusters' Normal-Wishart prior (tensors on the points' device, float64).
        alpha, n_clusters: the Dirichlet(alpha/K) prior on the weights.
        block_size: items drawn together (1: exact sequential Gibbs).
        generator: the random stream (a random order, then one Gumbel per item and cluster).
        log_prior: optional (N, K) log prior over each item's cluster (the "c" message).
        record: also return each item's conditional probabilities at the moment it was drawn,
            with and without ``log_prior``.
        statistics: the previous sweep's ``statistics`` for the same points and assignments,
            to save recomputing them (``None``: computed from ``assignments``).
    """
    n, dim = points.shape
    dtype, device = points.dtype, points.device
    moments = _moments(points, assignments, n_clusters) if statistics is None else statistics
    base = prior.scale0 + prior.kappa0 * torch.outer(prior.mean0, prior.mean0)
    kappa0_mean0 = prior.kappa0 * prior.mean0
    eye = torch.eye(dim, dtype=dtype, device=device)
    table = _count_table(n, float(prior.kappa0), float(prior.nu0), float(alpha), n_clusters, dim,
                         dtype, device)

    order = torch.randperm(n, generator=generator, device=device)
    gumbel = gumbel_noise((n, n_clusters), generator=generator, dtype=dtype, device=device)
    # in visiting order, so that each block is a slice; the monomials of all items at once (the
    # same size as the statistics' first computation), not a few small kernels per block
    features = _features(points[order])
    # blocks are disjoint, so the assignments before the sweep are each block's old ones
    one_hot = torch.eye(n_clusters, dtype=dtype, device=device)
    old_one_hot = one_hot[assignments[order]]
    is_old_all = old_one_hot.bool()
    log_prior = None if log_prior is None else log_prior[order]
    drawn, seen, seen_with_prior = [], [], []
    for start in range(0, n, block_size):
        block = slice(start, start + block_size)
        # the K clusters' posteriors, batched: one gather of the count terms, one Cholesky
        terms = table[moments[:, 0].long()]
        weighted_sums = kappa0_mean0 + moments[:, 1:1 + dim]
        outer = moments[:, 1 + dim:].reshape(n_clusters, dim, dim)
        mean, _, chol = _mean_scale_cholesky(terms[:, 0], weighted_sums, outer, base)
        a = (features[block] @ _quadratic_forms(chol, mean, eye)).clamp_min(0)
        logits = _log_conditionals(a, is_old_all[block], _half_logdet(chol), terms[:, 1:])
        full = logits if log_prior is None else logits + log_prior[block]
        new = (full + gumbel[block]).argmax(1)  # Gumbel-max: a draw from softmax(full)
        if record:
            seen.append(logits)
            seen_with_prior.append(full)
        delta = one_hot[new] - old_one_hot[block]  # entries 0, +-1: counts stay exact integers
        moments = moments + delta.T @ features[block]
        drawn.append(new)
    assignments[order] = torch.cat(drawn)
    if not record:
        return SweepResult(assignments, moments, None, None)
    # softmax is row by row: one call on all the blocks' rows gives each block's to the bit
    own_conditionals = torch.softmax(torch.cat(seen), 1)
    conditionals = (own_conditionals if log_prior is None
                    else torch.softmax(torch.cat(seen_with_prior), 1))
    unsorted = torch.empty_like(conditionals), torch.empty_like(own_conditionals)
    unsorted[0][order], unsorted[1][order] = conditionals, own_conditionals
    return SweepResult(assignments, moments, unsorted[0], unsorted[1])


# --- the module ----------------------------------------------------------------------------------
class GMM(SharedCategory, Module):
    """A Bayesian Gaussian mixture with a Normal-Wishart prior, learned by collapsed Gibbs sampling.

    Args:
        name: the module's name in the graph.
        n_clusters: K, the number of mixture components (a finite mixture; empty clusters keep
            Dirichlet weight ``alpha/K`` and can be revived).
        dim: D, the dimension of the data on port ``x``.
        alpha: total concentration of the symmetric Dirichlet(alpha/K) prior on the weights.
        kappa0: prior pseudo-count on each cluster mean.
        nu0: Wishart degrees of freedom (> D - 1); default ``D + 2``, the smallest integer
            with a finite prior mean covariance.
        mean0: (D,) prior mean of the cluster means; default the data mean when the
            assignments are initialised (first update, or a change in the number of items).
        scale0: (D, D) Wishart inverse scale S0, or a scalar times the identity. Default, set
            with ``mean0``: ``S0 = (nu0 - D - 1) * v * K^(-2/D) * I``, so the prior mean covariance
            of a cluster is ``v K^(-2/D) I``, where ``v`` is the data's average per-dimension
            variance: K clusters sharing the data's volume have about ``K^(-2/D)`` of its
            variance each (needs ``nu0 > D + 1``; pass ``scale0`` otherwise).
        sweeps: Gibbs sweeps per :meth:`update`.
        block_size: items drawn together in one step of a sweep (1: exact sequential Gibbs;
            larger: a parallel approximation, see the module docstring).
        prior_variance: variance of the per-item Gaussian sent on port ``x``: ``"unit"`` (ones,
            as in Neuro-SERKET) or ``"cluster"`` (diagonal of the cluster's posterior mean
            covariance).
        init: first assignments: ``"kmeans++"`` (k-means++ seeding, nearest centre) or
            ``"random"`` (uniform).
        restarts: independent starts run whenever an update starts from fresh assignments (the
            first update, or data with a different number of items), each from its own ``init``
            and ``sweeps`` sweeps; the one with the highest collapsed log joint
            :meth:`log_joint` (``log p(x, c)``, an unsupervised criterion: labels never enter)
            is kept. 1: a single start.
        seed, device: see :class:`serket.module.Module`.

    Ports:
        ``x`` (accepts ``samples``, sends ``gaussian``, size D): data up (e.g. a VAE's latents);
        down, each item's prior ``N(m_k, var)`` for its current cluster ``k``.
        ``c`` (accepts ``categorical``, sends ``categorical``, size K): a per-item prior over
        clusters in; out, ``P(c_i = k | x, c_-i)`` from the final sweep of the last update,
        *without* the received prior (so a tail-to-tail combiner multiplying the others'
        messages does not count this module's own prior twice).

    Learned state (after :meth:`update`): ``assignments_`` (N,), ``responsibilities_`` (N, K)
    (conditionals of the final sweep *with* the received prior; :meth:`predict` is their argmax),
    ``data_responsibilities_`` (the same without the prior; sent on ``c``), ``means_`` (K, D),
    ``covariances_`` (K, D, D) and ``weights_`` (K,) (posterior means given the assignments),
    ``counts_``, ``sums_``, ``outer_`` (sufficient statistics of the data centred on
    ``mean0_``), ``dead_clusters_`` (empty clusters), ``n_iter_`` (sweeps since the assignments
    were initialised), ``mean0_``, ``scale0_`` (the prior actually used), ``category_weight_``
    (the evidence weight of a shared category, set by :meth:`category_join`; None until joined),
    ``restart_log_joints_`` (each start's collapsed log joint when ``restarts > 1`` started
    afresh, in the order they ran; None otherwise).

    New items (:meth:`infer`): their posterior over the clusters as a new point's collapsed
    conditional given every learned item's assignment, and the prior they would be sent down.

    Example::

        >>> gmm = GMM("gmm", n_clusters=3, dim=2, sweeps=20)
        >>> labels = gmm.fit_predict(torch.randn(300, 2))
        >>> gmm.publish()["c"].probs.shape
        torch.Size([300, 3])
    """

    def __init__(self, name: str, n_clusters: int = 10, dim: int = 10, *, alpha: float = 1.0,
                 kappa0: float = 0.01, nu0: float | None = None, mean0=None, scale0=None,
                 sweeps: int = 50, block_size: int = 256, prior_variance: str = "unit",
                 init: str = "kmeans++", restarts: int = 1, seed: int = 0, device="cpu"):
        super().__init__(name, seed=seed, device=device)
        n_clusters = check_int(self, "n_clusters", n_clusters, minimum=1)
        dim = check_int(self, "dim", dim, minimum=1)
        alpha = check_real(self, "alpha", alpha, above=0)
        kappa0 = check_real(self, "kappa0", kappa0, above=0)
        nu0 = check_real(self, "nu0", dim + 2 if nu0 is None else nu0, above=dim - 1)
        sweeps = check_int(self, "sweeps", sweeps, minimum=1)
        block_size = check_int(self, "block_size", block_size, minimum=1)
        prior_variance = check_choice(self, "prior_variance", prior_variance, ("unit", "cluster"))
        init = check_choice(self, "init", init, ("kmeans++", "random"))
        restarts = check_int(self, "restarts", restarts, minimum=1)
        if scale0 is None and not nu0 > dim + 1:
            raise ConfigError(f"GMM {name!r}: nu0 must be > dim + 1 = {dim + 1} for the default scale0 "
                              f"(or pass scale0), got {nu0!r}")
        if prior_variance == "cluster" and not nu0 > dim + 1:
            raise ConfigError(f"GMM {name!r}: nu0 must be > dim + 1 = {dim + 1} for prior_variance='cluster', "
                              f"got {nu0!r}")
        self.n_clusters = n_clusters
        self.dim = dim
        self.alpha = alpha
        self.kappa0 = kappa0
        self.nu0 = nu0
        # kept as plain numbers, so that they are printed and fingerprinted with the other settings
        self.mean0 = None if mean0 is None else tuple(self._as_mean(mean0).tolist())
        self.scale0 = None if scale0 is None else self._as_scale(scale0)
        self.sweeps = sweeps
        self.block_size = block_size
        self.prior_variance = prior_variance
        self.init = init
        self.restarts = restarts
        self._clear_learned()
        self.category_weight_ = None  # the evidence weight of a shared category, once joined
        self.restart_log_joints_: list[float] | None = None

    def _as_setting_tensor(self, setting: str, value, wanted: str) -> torch.Tensor:
        try:
            tensor = torch.as_tensor(value, dtype=_DTYPE)
        except (TypeError, ValueError, RuntimeError):
            raise ConfigError(f"GMM {self.name!r}: {setting} must be {wanted} of numbers, got {value!r}") from None
        if not bool(torch.isfinite(tensor).all()):
            raise ConfigError(f"GMM {self.name!r}: {setting} must be {wanted} of finite numbers, "
                              f"got {tensor.tolist()!r}")
        return tensor

    def _as_mean(self, mean0) -> torch.Tensor:
        mean0 = self._as_setting_tensor("mean0", mean0, f"a ({self.dim},) vector")
        if mean0.numel() != self.dim:
            raise ConfigError(f"GMM {self.name!r}: mean0 must be a ({self.dim},) vector for dim={self.dim}, "
                              f"got shape {tuple(mean0.shape)}")
        return mean0.reshape(self.dim)

    def _as_scale(self, scale0):
        """``scale0`` checked: a number (times the identity) or a (D, D) matrix as nested tuples."""
        given = self._as_setting_tensor("scale0", scale0, f"a ({self.dim}, {self.dim}) matrix or a scalar")
        matrix = _scale_matrix(given, self.dim)
        if matrix.shape != (self.dim, self.dim) or not torch.allclose(matrix, matrix.T):
            raise ConfigError(f"GMM {self.name!r}: scale0 must be a symmetric ({self.dim}, {self.dim}) "
                              f"matrix or a scalar, got shape {tuple(matrix.shape)}")
        if torch.linalg.cholesky_ex(matrix).info != 0:
            raise ConfigError(f"GMM {self.name!r}: scale0 must be positive definite, got {matrix.tolist()!r}")
        return float(given) if given.ndim == 0 else tuple(map(tuple, given.tolist()))

    def _clear_learned(self) -> None:
        self.assignments_ = None
        self.responsibilities_ = None
        self.data_responsibilities_ = None
        self.counts_ = self.sums_ = self.outer_ = None
        self.means_ = self.covariances_ = self.weights_ = None
        self.mean0_ = self.scale0_ = None
        self.dead_clusters_: list[int] = []
        self.n_iter_ = 0

    def ports(self):
        return {
            "x": Port("x", sends=("gaussian",), accepts=("samples",), size=self.dim,
                      doc="data up; per-item prior N(mean of the item's cluster, var) down"),
            "c": Port("c", sends=("categorical",), accepts=("categorical",), size=self.n_clusters,
                      doc="cluster of each item: a prior in, P(c_i | x) out"),
        }

    # --- input checks ----------------------------------------------------------------------------
    def _check_input(self, port: str, message: Message) -> None:
        if port == "x":
            values = message.values
            n = values.shape[0]
            if n == 0:
                raise DataError(f"GMM {self.name!r}: empty dataset on port 'x' (0 items)")
            if values.shape[1] != self.dim:
                raise DataError(f"GMM {self.name!r}: data on port 'x' have dim {values.shape[1]}, "
                                f"the module was built for dim={self.dim}")
            if not bool(torch.isfinite(values).all()):
                raise DataError(f"GMM {self.name!r}: data on port 'x' contain NaN or inf")
        elif port == "c" and "x" in self.inbox:
            check_items(self, "the prior on port 'c'", message.n_items, "the data on port 'x'",
                        self.inbox["x"].n_items)

    def _check_tensor(self, x) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise DataError(f"GMM {self.name!r}: data must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 2 or x.shape[-1] != self.dim:
            raise DataError(f"GMM {self.name!r}: data must have shape (N, {self.dim}) for dim={self.dim}, "
                            f"got {tuple(x.shape)}")
        x = x if x.is_floating_point() else x.float()
        if not bool(torch.isfinite(x).all()):
            raise DataError(f"GMM {self.name!r}: data contain NaN or inf")
        return x

    def fit(self, x=None, c=None) -> "GMM":
        """Use the module alone: ``x`` (N, D) data (tensor or Samples), ``c`` optional prior."""
        if isinstance(x, torch.Tensor):
            x = Samples(self._check_tensor(x))
        if isinstance(c, torch.Tensor):
            c = Categorical(c)
        return super().fit(x=x, c=c)

    def fit_predict(self, x, c=None) -> torch.Tensor:
        return self.fit(x, c).predict()

    # --- learning --------------------------------------------------------------------------------
    def _data_and_prior(self):
        if "x" not in self.inbox:
            raise DataError(f"GMM {self.name!r}: no data received on port 'x'")
        x = self.inbox["x"].values
        if x.shape[0] < self.n_clusters:  # for learning only: infer takes any number of new items
            raise DataError(f"GMM {self.name!r}: {x.shape[0]} items on port 'x' but {self.n_clusters} "
                            f"clusters: more clusters than points")
        prior = self.inbox.get("c")
        if prior is not None:
            check_items(self, "the prior on port 'c'", prior.n_items, "the data on port 'x'", x.shape[0])
        log_prior = None if prior is None else torch.log(prior.probs.to(_DTYPE))
        return x.to(_DTYPE), log_prior

    def _prior(self) -> NormalWishart:
        # the data are centred on mean0_ before sampling (fewer digits lost in S), so m0 = 0
        zeros = torch.zeros(self.dim, dtype=_DTYPE, device=self.device)
        return NormalWishart(zeros, self.kappa0, self.nu0, self.scale0_)

    def _initialise(self, points: torch.Tensor) -> None:
        n = points.shape[0]
        self.mean0_ = (points.mean(0) if self.mean0 is None
                       else torch.tensor(self.mean0, dtype=_DTYPE, device=self.device))
        if self.scale0 is None:
            v = float(points.var(0, unbiased=False).mean()) if n > 1 else 1.0
            v = v if v > 0 else 1.0
            s = (self.nu0 - self.dim - 1) * v * self.n_clusters ** (-2.0 / self.dim)
            self.scale0_ = s * torch.eye(self.dim, dtype=_DTYPE, device=self.device)
        else:
            self.scale0_ = _scale_matrix(self.scale0, self.dim).to(self.device)
        centred = points - self.mean0_
        if self.init == "random":
            self.assignments_ = torch.randint(self.n_clusters, (n,), generator=self.generator,
                                              device=self.device)
        else:
            self.assignments_ = kmeans_pp_labels(centred, self.n_clusters, self.generator)
        self.n_iter_ = 0

    def _run(self, n_sweeps: int, trace: bool = False, stacklevel: int = 4):
        # stacklevel: a collapse warning names the caller of update (through the base's counting
        # wrapper) or of sample_assignments
        x, log_prior = self._data_and_prior()
        if self.assignments_ is None or self.assignments_.shape[0] != x.shape[0]:
            self._initialise(x)
        points = x - self.mean0_
        prior = self._prior()
        labels = torch.arange(self.n_clusters, device=self.device)
        alive_before = (self.assignments_[:, None] == labels).any(0)
        history, statistics = [], None
        for s in range(n_sweeps):
            # statistics are recomputed from the data at the start of each update (the data may
            # have changed) and carried from sweep to sweep within it
            result = gibbs_sweep(points, self.assignments_, prior, alpha=self.alpha,
                                 n_clusters=self.n_clusters, block_size=self.block_size,
                                 generator=self.generator, log_prior=log_prior,
                                 record=s == n_sweeps - 1, statistics=statistics)
            statistics = result.statistics
            if trace:
                history.append(self.assignments_.clone())
        self.n_iter_ += n_sweeps
        self.responsibilities_ = result.conditionals.float()
        self.data_responsibilities_ = result.own_conditionals.float()
        self._summarise(points)
        died = (alive_before & (self.counts_ == 0)).nonzero().flatten().tolist()
        self.dead_clusters_ = (self.counts_ == 0).nonzero().flatten().tolist()
        if died:
            warnings.warn(f"GMM {self.name!r}: clusters {died} lost all their items during update "
                          f"{self.n_updates}; they keep prior weight alpha/K and may be revived",
                          ClusterCollapseWarning, stacklevel=stacklevel)
        return torch.stack(history) if trace else None

    def _summarise(self, points: torch.Tensor) -> None:
        counts, sums, outer = sufficient_statistics(points, self.assignments_, self.n_clusters)
        self.counts_, self.sums_, self.outer_ = counts.long(), sums, outer
        post = normal_wishart_posterior(self._prior(), counts, sums, outer)
        self.means_ = post.mean + self.mean0_
        # posterior mean of the covariance, E[Lambda^-1] = S / (nu - D - 1); for nu0 <= D + 1 an
        # empty cluster's is undefined, and we report S / nu (the inverse mean precision) instead
        denom = torch.where(post.nu > self.dim + 1, post.nu - self.dim - 1, post.nu)
        self.covariances_ = post.scale / denom[:, None, None]
        self.weights_ = (counts + self.alpha / self.n_clusters) / (counts.sum() + self.alpha)

    def update(self) -> None:
        """Run ``sweeps`` sweeps on the data in the inbox.

        The first update (or one whose data have a different number of items) initialises the
        assignments with ``init`` (``restarts`` times, the likeliest start kept); later ones
        continue from the current assignments, with the statistics recomputed from whatever
        data are in the inbox now.
        """
        if self.restarts > 1 and self._starts_afresh():
            self._best_of_restarts()
        else:
            self._run(self.sweeps)

    def _starts_afresh(self) -> bool:
        x, _ = self._data_and_prior()
        return self.assignments_ is None or self.assignments_.shape[0] != x.shape[0]

    def _best_of_restarts(self) -> None:
        """``restarts`` independent starts, one after the other on the module's stream, keeping
        the one with the highest collapsed log joint (ties: the earlier). Only the kept start's
        cluster-collapse warnings are issued."""
        def start():
            self._clear_learned()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                self._run(self.sweeps)
            # each start initialises new tensors, so the ones kept here stay as this start left them
            return self.log_joint(), (self._learned(), caught)

        _, (kept, caught), scores = best_of(start for _ in range(self.restarts))
        for key, value in kept.items():
            setattr(self, key, value)
        self.restart_log_joints_ = scores
        for warning in caught:
            warnings.warn(warning.message, warning.category, stacklevel=4)

    # --- a shared category (see serket.inference.SharedCategory) ---------------------------------
    def category_join(self, port, evidence_weight=1.0):
        """Remember the evidence weight that scales :meth:`category_log_likelihood`."""
        self.category_weight_ = check_real(self, "evidence_weight", evidence_weight, above=0)

    def _category_points(self) -> torch.Tensor:
        x, _ = self._data_and_prior()
        if self.mean0_ is None or self.assignments_ is None or self.assignments_.shape[0] != x.shape[0]:
            self._initialise(x)
        return x - self.mean0_

    def category_start(self, port, generator):
        """A k-means++ clustering of the data (hard responsibilities)."""
        return kmeans_pp_start(self._category_points(), self.n_clusters, generator)

    def category_fit(self, port, responsibilities):
        """Each cluster's Normal-Wishart posterior given soft counts of the data."""
        points = self._category_points()
        moments = responsibilities.to(_DTYPE).T @ _features(points)
        return normal_wishart_posterior(self._prior(), *_split_moments(moments, self.dim))

    def category_log_likelihood(self, port, params):
        """The Student-t posterior predictive of each item under each cluster, times the evidence
        weight (1 when not joined)."""
        weight = 1.0 if self.category_weight_ is None else self.category_weight_
        return weight * student_t_log_predictive(self._category_points(), params)

    def category_adopt(self, port, responsibilities, params):
        """Each item to its most probable cluster; the chain continues from there."""
        points = self._category_points()
        self.assignments_ = responsibilities.argmax(1).to(self.device)
        self.responsibilities_ = responsibilities.float()
        self._summarise(points)
        self.dead_clusters_ = (self.counts_ == 0).nonzero().flatten().tolist()

    def sample_assignments(self, n_sweeps: int) -> torch.Tensor:
        """Like :meth:`update` with ``n_sweeps`` sweeps; returns the (n_sweeps, N) assignments
        after each sweep (draws from the chain, for posterior summaries)."""
        return self._run(check_int(self, "n_sweeps", n_sweeps, minimum=1), trace=True, stacklevel=3)

    def publish(self) -> dict[str, Message]:
        if self.assignments_ is None:
            return {}
        dtype = self.inbox["x"].values.dtype if "x" in self.inbox else torch.float32
        return {"x": self._prior_down(self.assignments_, dtype), "c": Categorical(self.data_responsibilities_)}

    def _prior_down(self, clusters: torch.Tensor, dtype) -> Gaussian:
        """The prior sent down on ``x`` for items in ``clusters``: their cluster's mean, with unit
        variance or the cluster's (``prior_variance``)."""
        mean = self.means_[clusters].to(dtype)
        if self.prior_variance == "unit":
            return Gaussian(mean, torch.ones_like(mean))
        return Gaussian(mean, self.covariances_.diagonal(dim1=1, dim2=2)[clusters].to(dtype))

    def predict(self) -> torch.Tensor | None:
        """The most probable cluster of each item (argmax of ``responsibilities_``), (N,) long."""
        if self.responsibilities_ is None:
            return None
        return self.responsibilities_.argmax(1)

    def infer(self, x=None, c=None) -> dict[str, Message]:
        """For new items, from the learned assignments (nothing is learned, nothing drawn).

        ``c``: a new item's posterior over the clusters, computed as the sampler computes a
        learned item's, from the same per-cluster Normal-Wishart posteriors: the collapsed
        conditional of a new point joining the learned items,
        ``P(c = k | x) ∝ (n_k + alpha/K) t(x | m_k, S_k, kappa_k, nu_k)`` (the Student-t
        predictive of the module docstring, with every learned item's current assignment
        counted, as the statistics ``counts_``, ``sums_``, ``outer_`` hold them). Like the
        training message it leaves out any prior on ``c``. Without ``x`` (a prior on ``c``
        alone, as when generating) it is the weights' predictive ``(n_k + alpha/K) / (N + alpha)``.

        ``x``: the prior the item would be sent down, ``N(means_[k], var)`` with ``var`` as in
        :meth:`publish`, for its most probable cluster ``k`` given ``x`` *and* the prior ``c``
        when one is given (training sends the mean of a cluster drawn from that posterior).

        A prior on ``c`` (a Categorical per new item) thus multiplies the posterior that chooses
        the cluster sent down on ``x``, and :meth:`predict` with ``c`` given returns the argmax
        of that product, as :meth:`predict` on the learned items includes their received prior.

        On the items it learned from, ``c`` is close to but not the same as the training
        message ``data_responsibilities_``: that one is each item's conditional when it was
        drawn in the final sweep (without the item itself, with the other items' assignments of
        that moment), this one counts every final assignment, the item's own included.
        """
        own, full = self._new_item_log_posteriors(x, c)
        dtype = x.values.dtype if x is not None else (
            self.inbox["x"].values.dtype if "x" in self.inbox else torch.float32)
        return {"c": Categorical(torch.softmax(own, 1).float()), "x": self._prior_down(full.argmax(1), dtype)}

    def _new_item_log_posteriors(self, x, c):
        """Unnormalised float64 ``log P(c | x)`` of new items without and with the prior ``c``:
        (M, K) each (``x``: Samples or None, ``c``: Categorical or None, not both None)."""
        if self.counts_ is None:
            raise DataError(f"GMM {self.name!r}: infer needs a learned mixture, but the module has "
                            f"not learned yet (update it first)")
        counts = self.counts_.to(_DTYPE)
        log_weight = torch.log(counts + self.alpha / self.n_clusters)
        if x is not None:
            post = normal_wishart_posterior(self._prior(), counts, self.sums_, self.outer_)
            own = log_weight + student_t_log_predictive(x.values.to(_DTYPE) - self.mean0_, post)
        else:
            own = log_weight.expand(c.n_items, -1)
        # the prior's log as the sampler takes it (a zero probability rules a cluster out)
        full = own if c is None else own + torch.log(c.probs.to(_DTYPE))
        return own, full

    def _categories(self, given, inferred):
        """The cluster of each new item: the argmax of ``P(c | x)`` times the prior on ``c``
        when one is given (as :meth:`predict` includes the received prior), the cluster whose
        mean :meth:`infer` sends on ``x``."""
        with torch.no_grad():
            return self._new_item_log_posteriors(given.get("x"), given.get("c"))[1].argmax(1)

    def log_joint(self) -> float:
        """The collapsed log joint ``log p(x, c)`` of the data and current assignments (weights,
        means and precisions integrated out; the received prior on ``c`` not included)."""
        if self.assignments_ is None:
            raise DataError(f"GMM {self.name!r}: log_joint needs an update first")
        x, _ = self._data_and_prior()
        points = x - self.mean0_
        prior = self._prior()
        counts, sums, outer = sufficient_statistics(points, self.assignments_, self.n_clusters)
        post = normal_wishart_posterior(prior, counts, sums, outer)
        total = log_assignment_prior(counts, self.alpha) + log_marginal_likelihood(prior, counts, post).sum()
        return float(total)

    def diagnostics(self) -> dict:
        if self.assignments_ is None:
            return {}
        return {"log_joint": self.log_joint(), "n_iter": self.n_iter_,
                "alive_clusters": self.n_clusters - len(self.dead_clusters_)}
