"""Inference algorithms that stand apart from the modules they run over.

* :func:`best_of` — several starts, keep the best by an unsupervised criterion (the LDA's
  chains, the recogniser's k-means restarts, the mixture's restarts and the joint category fit
  all choose this way; labels never enter).
* :class:`SharedCategory` — the optional protocol a module implements so that its category can
  be fitted jointly with other modules' (through a tail-to-tail connection);
* :class:`JointCategoryFit` — the joint fit of such a shared category over all its members: EM
  from several starts, the likeliest kept (the tail-to-tail combiner runs it);
* :func:`align_permutation` — the optimal matching of two labellings of the same items.
"""

from __future__ import annotations

from typing import Callable, Iterable, NamedTuple, TypeVar

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from .errors import ConfigError, MessageError
from .validation import check_int

__all__ = ["best_of", "SharedCategory", "JointCategoryFit", "JointFit", "align_permutation",
           "DEFAULT_RESTARTS", "DEFAULT_EM_ITERATIONS"]

#: Fresh starts of a joint category fit besides the current consensus and the last fit: the
#: default that finds the likeliest optimum where linked modules alone settle in poor ones.
DEFAULT_RESTARTS = 10
#: The most EM iterations per start of a joint category fit.
DEFAULT_EM_ITERATIONS = 50
# EM stops once an iteration raises the mean joint log likelihood by less than this fraction
_EM_TOLERANCE = 1e-6
# floor on a category's mixing weight before its log is taken (a category no item is in)
_WEIGHT_FLOOR = 1e-12

T = TypeVar("T")


def best_of(starts: Iterable[Callable[[], tuple[float, T]]]) -> tuple[int, T, list[float]]:
    """Run every start (a callable returning ``(score, result)``) and keep the highest score.

    Returns ``(index of the chosen start, its result, every start's score)``. Ties go to the
    earlier start, so a current solution listed first is kept unless a start beats it.
    """
    best_index, best, scores = -1, None, []
    for index, start in enumerate(starts):
        score, result = start()
        scores.append(float(score))
        if best_index < 0 or scores[-1] > scores[best_index]:
            best_index, best = index, result
    if best_index < 0:
        raise ValueError("best_of needs at least one start")
    return best_index, best, scores


class SharedCategory:
    """Optional protocol: a module whose category may be fitted jointly with other modules'.

    A tail-to-tail connection fits a shared category by EM over all its members
    (:class:`JointCategoryFit`) when every member implements this protocol (mix it in before
    :class:`~serket.module.Module`):

    * :meth:`category_join` — called once when the connection is made, with the connection's
      evidence weight for this member;
    * :meth:`category_start` — a fresh start from the module's own data alone;
    * :meth:`category_fit` — per-category parameters refitted to soft responsibilities (pure);
    * :meth:`category_log_likelihood` — each item's log likelihood under each category (pure);
    * :meth:`category_adopt` — install the chosen fit in the module's learned state.

    ``port`` is always the categorical port connected to the combiner. A module without these
    methods can still share a category: the combiner then multiplies the members' messages
    without a joint fit.
    """

    def category_join(self, port: str, evidence_weight: float = 1.0) -> None:
        """Joined to a joint fit on ``port``; ``evidence_weight`` scales the module's category log
        likelihood (fewer than its items' nominal number of independent observations)."""

    def category_start(self, port: str, generator: torch.Generator) -> torch.Tensor:
        """(N, K) responsibilities of a fresh start drawn from this module's own data alone."""
        raise NotImplementedError(f"{type(self).__name__} must implement category_start()")

    def category_fit(self, port: str, responsibilities: torch.Tensor):
        """The parameters of the per-category distributions refitted to (N, K) soft
        responsibilities; the module itself is left unchanged."""
        raise NotImplementedError(f"{type(self).__name__} must implement category_fit()")

    def category_log_likelihood(self, port: str, params) -> torch.Tensor:
        """(N, K) float64 ``log p(item i's data | category k)`` under ``params`` (from
        :meth:`category_fit`), up to a per-item constant, times the evidence weight."""
        raise NotImplementedError(f"{type(self).__name__} must implement category_log_likelihood()")

    def category_adopt(self, port: str, responsibilities: torch.Tensor, params) -> None:
        """Install the joint fit: the module's learned state follows ``responsibilities`` and
        ``params``, and its next update continues from there."""
        raise NotImplementedError(f"{type(self).__name__} must implement category_adopt()")


def align_permutation(reference: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """The permutation of ``other``'s categories that best matches ``reference``.

    Both are (N, K) posteriors over the same items. Returns ``perm`` (K,) such that
    ``other[:, perm]`` is aligned with ``reference``: category ``j`` of the reference
    corresponds to category ``perm[j]`` of ``other``. Optimal assignment (Hungarian) on the
    expected co-occurrence matrix ``reference.T @ other``, not a greedy swap.
    """
    if reference.shape != other.shape:
        raise MessageError(
            f"cannot align posteriors of shapes {tuple(reference.shape)} and {tuple(other.shape)}"
        )
    overlap = (reference.T.double() @ other.double()).cpu().numpy()
    rows, cols = linear_sum_assignment(-overlap)
    perm = np.empty(reference.shape[1], dtype=np.int64)
    perm[rows] = cols
    return torch.as_tensor(perm, device=reference.device)


class JointFit(NamedTuple):
    """What one :meth:`JointCategoryFit.fit` found and installed."""

    responsibilities: torch.Tensor  #: (N, K) float64 of the start kept, in the consensus's labels
    log_likelihoods: dict  #: member -> (N, K) its log likelihood under the installed fit
    start_scores: list  #: the mean joint log likelihood each start reached, in order
    chosen: int  #: the start kept: 0 the consensus, then the last fit (if any), then fresh starts


class JointCategoryFit:
    """The joint fit of a category shared by several modules, by EM over all of them.

    Every member implements :class:`SharedCategory`. One EM iteration refits each member's
    per-category distributions to shared responsibilities (M step, ``category_fit``) and
    recomputes the responsibilities from the mixing weights and the sum of all members' log
    likelihoods (E step, ``category_log_likelihood``). :meth:`fit` runs EM from the members'
    current consensus, from the last installed fit and from ``restarts`` fresh starts (each
    drawn from one member's own data, ``category_start``, the members in turn), keeps the start
    with the highest joint log likelihood (:func:`best_of`; labels never enter) and installs it
    in every member (``category_adopt``). Linked modules that each settle alone in a poor local
    optimum (a category split in two while two others share one) are what the restarts are for.

    Args:
        members: ``{name: (module, port)}``, the port being the module's categorical port.
        restarts: fresh starts besides the consensus and the last fit.
        em_iterations: the most EM iterations per start (EM stops earlier once an iteration
            gains less than a millionth of the mean joint log likelihood).
    """

    def __init__(self, members: dict, *, restarts: int = DEFAULT_RESTARTS,
                 em_iterations: int = DEFAULT_EM_ITERATIONS):
        missing = [name for name, (module, _) in members.items() if not isinstance(module, SharedCategory)]
        if missing:
            raise ConfigError(f"JointCategoryFit: members {missing} do not implement SharedCategory")
        self.members = dict(members)
        self.restarts = check_int(self, "restarts", restarts, minimum=0)
        self.em_iterations = check_int(self, "em_iterations", em_iterations, minimum=1)

    def refit(self, responsibilities: torch.Tensor) -> dict:
        """Every member's per-category parameters refitted to (N, K) ``responsibilities``."""
        return {m: module.category_fit(port, responsibilities) for m, (module, port) in self.members.items()}

    def log_likelihoods(self, params: dict) -> dict:
        """Every member's (N, K) log likelihood under ``params`` (from :meth:`refit`)."""
        return {m: module.category_log_likelihood(port, params[m]) for m, (module, port) in self.members.items()}

    def em(self, responsibilities: torch.Tensor) -> tuple[float, torch.Tensor]:
        """EM from (N, K) ``responsibilities``: ``(mean joint log likelihood, responsibilities)``."""
        r, ll = responsibilities, float("-inf")
        for _ in range(self.em_iterations):
            params = self.refit(r)
            joint = r.mean(0).clamp_min(_WEIGHT_FLOOR).log() + sum(self.log_likelihoods(params).values())
            previous, ll = ll, float(torch.logsumexp(joint, 1).mean())
            r = torch.softmax(joint, 1)
            if ll - previous < _EM_TOLERANCE * abs(ll):
                break
        return ll, r

    def fit(self, consensus: torch.Tensor, last: torch.Tensor | None, generator: torch.Generator) -> JointFit:
        """Fit from ``consensus`` (N, K), the ``last`` installed fit (or None) and the fresh
        starts drawn with ``generator``; install the likeliest in every member and return it."""
        starts = [lambda: self.em(consensus.to(torch.float64))]
        if last is not None and last.shape == consensus.shape:
            # the last installed fit, rescored on today's data: a module drifting on its own
            # between fits must not lose an optimum that is still the likeliest
            starts.append(lambda: self.em(last.to(torch.float64)))
        starters = list(self.members.values())
        for i in range(self.restarts):
            module, port = starters[i % len(starters)]
            starts.append(lambda module=module, port=port:
                          self.em(module.category_start(port, generator).to(torch.float64)))
        chosen, r, scores = best_of(starts)
        if chosen > 0:
            # a fresh start numbers its categories arbitrarily: relabel it to match the current
            # consensus, so that labels (and the priors the members already hold) stay put
            r = r[:, align_permutation(consensus.to(r.dtype), r)]
        params = self.refit(r)
        for m, (module, port) in self.members.items():
            module.category_adopt(port, r, params[m])
        return JointFit(r, self.log_likelihoods(params), scores, chosen)
