"""A Gaussian mixture prior over a continuous latent, learned by EM or by gradient.

Generative model, per item ``i``::

    c_i ~ Categorical(pi)            (times the categorical message on ``c``, when one arrives)
    x_i ~ N(mu_{c_i}, diag(var_{c_i}))

Unlike :class:`~serket.modules.gmm.GMM` (a Bayesian mixture sampled by collapsed Gibbs), this
mixture has point parameters — ``means`` (K, D), ``log_var`` (K, D), ``logits`` (K) — as
``nn.Parameter``s, so it learns either way:

* alternately (:meth:`update`): EM on the samples received on ``x``, continued from the
  current parameters and from ``restarts`` fresh k-means++ starts, keeping the fit with the
  highest log-likelihood (an unsupervised choice: labels never enter);
* jointly (:meth:`joint_forward`): it scores the lower module's live latent sample, adding
  ``-log p(x)`` (the mixture density, the categorical prior folded into the weights) to the
  summed objective, so that its parameters and the encoder below learn by the same gradient.

Ports:
    ``x`` (accepts ``samples``, sends ``gaussian``, size ``dim``): data up; down, per item, the
    mean of its most probable component and that component's variance (``prior_variance=
    "cluster"``) or a unit variance (``"unit"``).
    ``c`` (accepts and sends ``categorical``, size ``n_clusters``): a prior over the component
    in; P(c_i | x_i) without that prior out.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from serket.clustering import kmeans_pp_centres, kmeans_pp_start, lloyd
from serket.errors import DataError
from serket.inference import SharedCategory, best_of
from serket.messages import Categorical, Gaussian, Message
from serket.module import JointTraining, Module, Port, Rows
from serket.modules.nn import gaussian_log_density
from serket.validation import check_choice, check_int, check_items, check_real

__all__ = ["MixturePrior", "diagonal_mixture_log_density"]

# probabilities are floored here before their log: a zero prior probability is "very unlikely",
# not -inf (which would turn a sum of log probabilities into NaN)
_PROB_FLOOR = 1e-30
# a component whose soft count falls below this has no data: EM keeps its parameters
_EMPTY_COUNT = 1e-3
# the smallest mixing weight EM gives a component, so that its log stays finite
_WEIGHT_FLOOR = 1e-8
# Lloyd iterations refining each k-means++ seeding before EM
_LLOYD_ITERATIONS = 10
# the smallest soft count the shared-category M step divides by
_SOFT_COUNT_FLOOR = 1e-6


def diagonal_mixture_log_density(x, means, log_var, log_weights):
    """``(log p(x), log p(c, x))``: (N,) and (N, K) for a mixture of diagonal Gaussians.

    ``log_weights`` is (K,) or (N, K) (per-item component weights, normalised over K).
    """
    log_comp = gaussian_log_density(x[:, None, :], means[None], log_var[None])   # (N, K)
    joint = log_comp + log_weights
    return torch.logsumexp(joint, dim=1), joint


class MixturePrior(SharedCategory, JointTraining, Module):
    """Diagonal Gaussian mixture over a latent: EM alternately, gradient jointly.

    Args:
        name: node name.
        n_clusters: K components.
        dim: D, the latent's width.
        em_iterations: EM iterations per :meth:`update`.
        restarts: fresh k-means++ starts tried in every update (and in every joint round's refit)
            beside the current parameters, each run for ``em_iterations`` of EM; the fit with
            the highest mean log-likelihood of the latent, ``mean_i log p(x_i)`` under the
            mixture (the prior on ``c`` folded into the weights), is kept: an unsupervised
            criterion, labels never enter.
        min_var: floor on every component variance.
        lr: Adam's learning rate for joint training.
        prior_variance: ``"cluster"`` or ``"unit"``: the variance sent down on ``x``.

    Learned state: the parameters ``means`` (K, D), ``log_var`` (K, D) and ``logits`` (K);
    ``optimizer_`` (Adam, for joint training), ``responsibilities_`` (N, K) P(c_i | x_i) without
    the prior on ``c``, ``log_likelihood_`` (each update's mean log p(x)) and
    ``category_weight_`` (the evidence weight of a joint category fit it joined, else None).

    New items (:meth:`infer`): their posterior over the components, computed as the training
    message is, and the prior they would be sent down.

    Example::

        prior = MixturePrior("gmm", n_clusters=10, dim=10).fit(x=latent)
        prior.predict()                           # (N,) component of each item
        prior.predict(x=new_latent)               # (M,) component of each new item
    """

    def __init__(self, name: str, n_clusters: int = 10, dim: int = 10, *, em_iterations: int = 100,
                 restarts: int = 5, min_var: float = 1e-3, lr: float = 1e-3, prior_variance: str = "cluster",
                 seed: int = 0, device="cpu"):
        super().__init__(name, seed=seed, device=device)
        self.n_clusters = check_int(self, "n_clusters", n_clusters, minimum=1)
        self.dim = check_int(self, "dim", dim, minimum=1)
        self.em_iterations = check_int(self, "em_iterations", em_iterations, minimum=0)
        self.restarts = check_int(self, "restarts", restarts, minimum=1)
        self.min_var = check_real(self, "min_var", min_var, above=0)
        self.lr = check_real(self, "lr", lr, above=0)
        self.prior_variance = check_choice(self, "prior_variance", prior_variance, ("cluster", "unit"))
        self.means = nn.Parameter(torch.zeros(self.n_clusters, self.dim, device=self.device))
        self.log_var = nn.Parameter(torch.zeros(self.n_clusters, self.dim, device=self.device))
        self.logits = nn.Parameter(torch.zeros(self.n_clusters, device=self.device))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool, device=self.device))
        self.optimizer_ = torch.optim.Adam(self.parameters(), lr=self.lr)
        self.responsibilities_: torch.Tensor | None = None
        self.log_likelihood_: list[float] = []
        self.category_weight_: float | None = None
        self._joint_nll, self._joint_items = None, 0

    # --- the protocol ---------------------------------------------------------------------------
    def ports(self):
        return {
            "x": Port("x", sends=("gaussian",), accepts=("samples",), size=self.dim,
                      doc="latent up; per-item prior N(mean, var) of its most probable component down"),
            "c": Port("c", sends=("categorical",), accepts=("categorical",), size=self.n_clusters,
                      doc="component: a prior in, P(c_i | x_i) out"),
        }

    def _data(self) -> torch.Tensor:
        if "x" not in self.inbox:
            raise DataError(f"MixturePrior {self.name!r}: no data received on port 'x'")
        x = self.inbox["x"].values
        if x.shape[0] < self.n_clusters:  # for learning only: infer takes any number of new items
            raise DataError(f"MixturePrior {self.name!r}: {x.shape[0]} items on port 'x' "
                            f"cannot fill {self.n_clusters} components")
        prior = self.inbox.get("c")
        if prior is not None:
            check_items(self, "the prior on 'c'", prior.n_items, "'x'", x.shape[0])
        return x

    def _log_weights(self, idx=None) -> torch.Tensor:
        log_pi = torch.log_softmax(self.logits, 0)
        prior = self.inbox.get("c")
        if prior is None:
            return log_pi
        probs = prior.probs if idx is None else prior.probs[idx]
        return torch.log_softmax(log_pi + probs.clamp_min(_PROB_FLOOR).log(), dim=1)

    def _log_var(self) -> torch.Tensor:
        return self.log_var.clamp_min(math.log(self.min_var))

    # --- EM ---------------------------------------------------------------------------------------
    def _kmeans_pp(self, x: torch.Tensor) -> torch.Tensor:
        """k-means++ centres refined by Lloyd iterations (in the arithmetic the pinned figures
        were drawn with: ``cdist`` distances, normalised weights)."""
        centres = kmeans_pp_centres(x, self.n_clusters, self.generator, distances="cdist", normalise=True, fallback=1.0)
        return lloyd(x, centres, _LLOYD_ITERATIONS, distances="cdist")

    def _em(self, x, means, log_var, logits, iterations):
        """``iterations`` of EM from the given parameters: ``(mean log p(x), (means, log_var, logits))``."""
        prior = self.inbox.get("c")
        log_prior = None if prior is None else prior.probs.clamp_min(_PROB_FLOOR).log()
        ll = torch.tensor(float("-inf"), device=x.device)
        for _ in range(iterations):
            log_w = torch.log_softmax(logits, 0)
            if log_prior is not None:
                log_w = torch.log_softmax(log_w + log_prior, 1)
            log_px, joint = diagonal_mixture_log_density(x, means, log_var, log_w)
            ll = log_px.mean()
            r = torch.softmax(joint, 1)
            nk = r.sum(0)
            alive = nk > _EMPTY_COUNT
            new_means = (r.T @ x) / nk.clamp_min(_EMPTY_COUNT)[:, None]
            new_var = (r.T @ x.pow(2)) / nk.clamp_min(_EMPTY_COUNT)[:, None] - new_means.pow(2)
            means = torch.where(alive[:, None], new_means, means)
            log_var = torch.where(alive[:, None], new_var.clamp_min(self.min_var).log(), log_var)
            logits = (nk / x.shape[0]).clamp_min(_WEIGHT_FLOOR).log()
        return float(ll), (means, log_var, logits)

    def update(self) -> None:
        self._fit(self._data())

    @torch.no_grad()
    def _fit(self, x: torch.Tensor) -> None:
        """EM continued from the current parameters against ``restarts`` fresh k-means++ starts;
        the likeliest fit is kept."""
        spread = x.var(0, unbiased=False).clamp_min(self.min_var).log()
        iterations = max(self.em_iterations, 1)

        def continued():
            return self._em(x, self.means.detach(), self._log_var().detach(), self.logits.detach(), iterations)

        def fresh():
            return self._em(x, self._kmeans_pp(x), spread.expand(self.n_clusters, -1).clone(),
                            torch.zeros(self.n_clusters, device=x.device), iterations)

        starts = ([continued] if bool(self.initialised) else []) + [fresh] * self.restarts
        best, (means, log_var, logits), scores = best_of(starts)
        self.initialised.fill_(True)
        self.means.copy_(means)
        self.log_var.copy_(log_var)
        self.logits.copy_(logits)
        self.log_likelihood_.append(scores[best])
        self._refresh(x)

    @torch.no_grad()
    def _refresh(self, x) -> None:
        pi_only = torch.log_softmax(self.logits, 0)
        _, joint = diagonal_mixture_log_density(x, self.means, self._log_var(), pi_only)
        self.responsibilities_ = torch.softmax(joint, 1)

    # --- a shared category (the protocol serket.inference.SharedCategory) -------------------------
    def category_join(self, port, evidence_weight=1.0):
        """Remember the evidence weight that scales :meth:`category_log_likelihood`."""
        self.category_weight_ = check_real(self, "evidence_weight", evidence_weight, above=0)

    def category_start(self, port, generator):
        """A k-means++ clustering of the data (hard responsibilities)."""
        return kmeans_pp_start(self._data(), self.n_clusters, generator)

    @torch.no_grad()
    def category_fit(self, port, responsibilities):
        """Each component's mean and diagonal variance from soft counts (the M step)."""
        x = self._data().to(torch.float64)
        r = responsibilities.to(torch.float64)
        nk = r.sum(0).clamp_min(_SOFT_COUNT_FLOOR)[:, None]
        means = (r.T @ x) / nk
        var = ((r.T @ x.pow(2)) / nk - means.pow(2)).clamp_min(self.min_var)
        return means, var.log()

    @torch.no_grad()
    def category_log_likelihood(self, port, params):
        """The Gaussian log density of each item under each component (weights left out), times
        the evidence weight it joined with."""
        means, log_var = params
        x = self._data().to(torch.float64)
        zeros = torch.zeros(self.n_clusters, dtype=torch.float64, device=x.device)
        weight = 1.0 if self.category_weight_ is None else self.category_weight_
        return diagonal_mixture_log_density(x, means, log_var, zeros)[1] * weight

    @torch.no_grad()
    def category_adopt(self, port, responsibilities, params):
        means, log_var = params
        self.initialised.fill_(True)
        self.means.copy_(means)
        self.log_var.copy_(log_var)
        self.logits.copy_(responsibilities.mean(0).clamp_min(_WEIGHT_FLOOR).log())
        self._refresh(self._data())

    # --- joint training ---------------------------------------------------------------------------
    def joint_begin(self) -> None:
        """Before each round of joint training: an EM refit on the latest latent (continued
        from the current parameters and from ``restarts`` fresh starts, the likeliest kept);
        the round's minibatches then move the parameters and the encoder by gradient."""
        if "x" not in self.inbox:
            raise DataError(f"MixturePrior {self.name!r}: joint training starts from fitted components; "
                            f"run a warmup round first (JointTrainer(warmup=1)) so that a latent arrives")
        self._fit(self._data())  # the refit belongs to this joint round
        self._joint_nll = torch.zeros((), device=self.device)
        self._joint_items = 0

    def joint_forward(self, idx, live, scored):
        """``-log p(x)`` of the minibatch's latent (a live (B, D) tensor from the module below,
        or :class:`~serket.module.Rows` with several weighted rows per item), summed over rows
        and divided by the number of items."""
        x = live["x"] if "x" in live else self._data()[idx]
        if isinstance(x, Rows):
            values, items, weights = x
        else:
            values, items, weights = x, None, None
        log_w = self._log_weights(idx)
        if log_w.ndim == 2 and items is not None:
            log_w = log_w[items]
        log_px, _ = diagonal_mixture_log_density(values, self.means, self._log_var(), log_w)
        if weights is not None:
            log_px = log_px * weights
        loss = -log_px.sum() / idx.numel()
        self._joint_nll += loss.detach() * idx.numel()
        self._joint_items += idx.numel()
        return loss, {}

    def joint_end(self) -> None:
        with torch.no_grad():
            self.log_var.clamp_(min=math.log(self.min_var))
        self.log_likelihood_.append(-float(self._joint_nll) / max(self._joint_items, 1))
        self._refresh(self._data())

    def joint_optimizer(self) -> torch.optim.Optimizer:
        return self.optimizer_

    # --- outputs ----------------------------------------------------------------------------------
    def publish(self):
        if self.responsibilities_ is None:
            return {}
        return {"x": self._prior_down(self.responsibilities_.argmax(1)), "c": Categorical(self.responsibilities_)}

    def _prior_down(self, components: torch.Tensor) -> Gaussian:
        """The prior sent down on ``x`` for items in ``components``: the component's mean, with
        unit variance or the component's (``prior_variance``)."""
        mean = self.means.detach()[components]
        var = torch.ones_like(mean) if self.prior_variance == "unit" else self._log_var().detach().exp()[components]
        return Gaussian(mean, var)

    def predict(self):
        if self.responsibilities_ is None:
            return None
        log_r = self.responsibilities_.clamp_min(_PROB_FLOOR).log()
        prior = self.inbox.get("c")
        if prior is not None and prior.n_items == log_r.shape[0]:
            log_r = log_r + prior.probs.clamp_min(_PROB_FLOOR).log()
        return log_r.argmax(1)

    def infer(self, x=None, c=None) -> dict[str, Message]:
        """For new items, from the learned parameters (nothing is learned).

        ``c``: each new item's posterior over the components, ``P(c = k | x) ∝ pi_k
        N(x | means_k, diag(var_k))``, exactly as the training message is computed for the
        learned items (the mixing weights ``softmax(logits)``, without any prior on ``c``);
        without ``x`` (a prior on ``c`` alone, as when generating), the weights ``pi``.

        ``x``: the prior the item would be sent down, ``N(means[k], var)`` with ``var`` as in
        :meth:`publish`, for its most probable component ``k`` given ``x`` *and* the prior ``c``
        when one is given (the category :meth:`predict` gives it). Without a prior this is the
        component :meth:`publish` picks for a learned item; :meth:`publish` itself leaves the
        received prior out of that choice.

        A prior on ``c`` (a Categorical per new item) thus multiplies the posterior, as
        :meth:`predict` does on the learned items; :meth:`predict` with ``c`` given returns the
        argmax of that product (the protocol's rule for a category message and a given prior).
        """
        if not bool(self.initialised):
            raise DataError(f"MixturePrior {self.name!r}: infer needs fitted components, but the module "
                            f"has not learned yet (update it first)")
        log_pi = torch.log_softmax(self.logits, 0)
        if x is not None:
            _, joint = diagonal_mixture_log_density(x.values, self.means, self._log_var(), log_pi)
            posterior = torch.softmax(joint, 1)
        else:
            posterior = torch.softmax(log_pi, 0).expand(c.n_items, -1).contiguous()
        # the component predict() would give: the prior multiplied in, both floored as there
        log_post = posterior.clamp_min(_PROB_FLOOR).log()
        if c is not None:
            log_post = log_post + c.probs.clamp_min(_PROB_FLOOR).log()
        return {"c": Categorical(posterior), "x": self._prior_down(log_post.argmax(1))}

    def log_likelihood(self) -> float:
        """Mean log p(x) of the latest data under the current parameters (an unsupervised score)."""
        with torch.no_grad():
            log_px, _ = diagonal_mixture_log_density(self._data(), self.means, self._log_var(), self._log_weights())
        return float(log_px.mean())

    def diagnostics(self) -> dict:
        """The mean log likelihood of the last update."""
        return {"log_likelihood": self.log_likelihood_[-1]} if self.log_likelihood_ else {}
