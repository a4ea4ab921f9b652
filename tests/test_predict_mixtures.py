"""The two mixtures on new items (``infer`` and ``predict(x=...)``): against closed forms on tiny
problems, against their in-sample answers on the items they learned from, without touching what
they learned, and with named errors for bad input."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_t

from serket.errors import DataError, MessageError
from serket.messages import Categorical
from serket.modules.gmm import GMM
from serket.modules.mixture import MixturePrior


def _blobs(sizes=(40, 30, 30), spread=0.5, seed=0, dim=2):
    """Well separated Gaussian blobs: (N, dim) points and their (N,) blob."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0], [6.0, 6.0]])[:len(sizes), :dim]
    x = torch.cat([torch.randn(n, dim, generator=gen) * spread + c for n, c in zip(sizes, centres)])
    labels = torch.cat([torch.full((n,), k) for k, n in enumerate(sizes)])
    return x, labels


def _new_points(seed=5, n=7):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=gen) * 3 + 3  # spread over and between the blobs


def _prior(n, k, seed=9):
    gen = torch.Generator().manual_seed(seed)
    return Categorical(torch.softmax(2 * torch.randn(n, k, generator=gen), 1))


def _snapshot(module):
    """Everything a module holds that infer must leave alone: its state dict (parameters,
    buffers, learned attributes, inbox, update count and random stream) and its stream's state."""
    state = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in module.state_dict().items()}
    return state, module.generator.get_state().clone(), dict(module.inbox), module.n_updates


def _assert_same(a, b):
    state_a, gen_a, inbox_a, n_a = a
    state_b, gen_b, inbox_b, n_b = b
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        va, vb = state_a[key], state_b[key]
        if isinstance(va, torch.Tensor):
            assert torch.equal(va, vb), key
        else:
            assert repr(va) == repr(vb), key  # the extra state: learned attributes, inbox, stream
    assert torch.equal(gen_a, gen_b)
    assert inbox_a.keys() == inbox_b.keys() and all(inbox_a[k] is inbox_b[k] for k in inbox_a)
    assert n_a == n_b


# --- the Bayesian Gibbs GMM ----------------------------------------------------------------------
def _gmm_closed_form(gmm, x_learned, new):
    """log[(n_k + alpha/K) t(new | cluster k's Normal-Wishart posterior)], (M, K), from the learned
    assignments and the raw data, by scipy's multivariate t (independent of the module's code)."""
    x = x_learned.double().numpy()
    assign = gmm.assignments_.numpy()
    m0 = gmm.mean0_.numpy()
    s0 = gmm.scale0_.numpy()
    k0, nu0, dim = gmm.kappa0, gmm.nu0, x.shape[1]
    out = np.empty((new.shape[0], gmm.n_clusters))
    for k in range(gmm.n_clusters):
        members = x[assign == k]
        n = members.shape[0]
        xbar = members.mean(0) if n else np.zeros(dim)
        scatter = (members - xbar).T @ (members - xbar) if n else np.zeros((dim, dim))
        kappa, nu = k0 + n, nu0 + n
        mean = (k0 * m0 + n * xbar) / kappa
        scale = s0 + scatter + k0 * n / kappa * np.outer(xbar - m0, xbar - m0)
        df = nu - dim + 1
        shape = scale * (kappa + 1) / (kappa * df)
        out[:, k] = (math.log(n + gmm.alpha / gmm.n_clusters)
                     + multivariate_t(loc=mean, shape=shape, df=df).logpdf(new.double().numpy()))
    return out


def test_gmm_infer_is_the_collapsed_predictive_of_a_new_point():
    x, _ = _blobs(sizes=(12, 9, 9), spread=1.5)
    gmm = GMM("gmm", n_clusters=3, dim=2, sweeps=5, seed=1, prior_variance="cluster").fit(x)
    new = _new_points()
    want = _gmm_closed_form(gmm, x, new)
    want_post = np.exp(want - want.max(1, keepdims=True))
    want_post /= want_post.sum(1, keepdims=True)
    out = gmm.infer(x=new)
    np.testing.assert_allclose(out["c"].probs.double().numpy(), want_post, rtol=0, atol=1e-6)
    assert out["c"].probs.dtype == torch.float32  # as the training message
    # the prior sent down: the most probable cluster's posterior mean and covariance diagonal
    best = torch.from_numpy(want.argmax(1))
    assert torch.equal(gmm.predict(x=new), best)
    assert torch.allclose(out["x"].mean, gmm.means_[best].float())
    assert torch.allclose(out["x"].var, gmm.covariances_.diagonal(dim1=1, dim2=2)[best].float())
    # the clusters' predictives are not all alike: the test tells a wrong formula apart
    assert (want_post.max(1) < 0.999).any() and len(set(best.tolist())) > 1


def test_gmm_infer_with_a_prior_on_c():
    x, _ = _blobs(sizes=(12, 9, 9), spread=1.5)
    gmm = GMM("gmm", n_clusters=3, dim=2, sweeps=5, seed=1).fit(x)
    new = _new_points()
    prior = _prior(new.shape[0], 3)
    want = _gmm_closed_form(gmm, x, new)
    with_prior = want + np.log(prior.probs.double().numpy())
    out = gmm.infer(x=new, c=prior)
    # the category message leaves the given prior out, as in training ...
    assert torch.equal(out["c"].probs, gmm.infer(x=new)["c"].probs)
    # ... the cluster sent down and predict() multiply it in, as predict() on learned items does
    best = torch.from_numpy(with_prior.argmax(1))
    assert not torch.equal(best, torch.from_numpy(want.argmax(1)))  # the prior matters here
    assert torch.equal(gmm.predict(x=new, c=prior), best)
    assert torch.equal(out["x"].mean, gmm.means_[best].float())
    assert torch.equal(out["x"].var, torch.ones(new.shape[0], 2))  # prior_variance="unit"
    # a prior alone (generation): the weights' predictive (n_k + alpha/K) / (N + alpha) times it
    alone = gmm.infer(c=prior)
    weights = (gmm.counts_.double() + gmm.alpha / 3) / (x.shape[0] + gmm.alpha)
    assert torch.allclose(alone["c"].probs.double(), weights.expand(new.shape[0], -1), atol=1e-7)
    best_alone = (weights.log() + prior.probs.double().log()).argmax(1)
    assert torch.equal(alone["x"].mean, gmm.means_[best_alone].float())
    assert torch.equal(gmm.predict(c=prior), best_alone)


def test_gmm_infer_on_its_own_items_agrees_with_its_training_message():
    # Not equal by construction: the training message is each item's collapsed conditional at
    # the moment it was drawn in the final sweep (itself left out, the other items' assignments
    # of that moment), infer counts every final assignment, the item's own included. On well
    # separated blobs both are all but certain of the same cluster.
    x, labels = _blobs(sizes=(80, 60, 60))
    gmm = GMM("gmm", n_clusters=3, dim=2, sweeps=10, seed=0).fit(x)
    out = gmm.infer(x=x)
    own = out["c"].probs.argmax(1)
    assert (own == gmm.data_responsibilities_.argmax(1)).float().mean() == 1.0
    assert (gmm.predict(x=x) == gmm.predict()).float().mean() == 1.0
    assert (out["c"].probs - gmm.data_responsibilities_).abs().max() < 1e-3
    # the prior sent down is the one published for the items' current clusters
    assert torch.equal(out["x"].mean, gmm.publish()["x"].mean)
    # and the clustering is the blobs' (so agreement is not that of a degenerate answer)
    assert len(set(zip(own.tolist(), labels.tolist()))) == 3


def test_gmm_infer_leaves_what_it_learned_alone_and_repeats():
    x, _ = _blobs()
    gmm = GMM("gmm", n_clusters=3, dim=2, sweeps=3, seed=2)
    gmm.fit(x, c=_prior(x.shape[0], 3))
    before = _snapshot(gmm)
    first = gmm.infer(x=_new_points(), c=_prior(7, 3, seed=1))
    gmm.predict(x=_new_points(n=2))
    gmm.infer(c=_prior(4, 3))
    _assert_same(before, _snapshot(gmm))
    again = gmm.infer(x=_new_points(), c=_prior(7, 3, seed=1))
    for port in ("c", "x"):
        for a, b in zip(first[port].state().values(), again[port].state().values()):
            assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b
    # and training continues as if infer had never been called
    twin = GMM("gmm", n_clusters=3, dim=2, sweeps=3, seed=2)
    twin.fit(x, c=_prior(x.shape[0], 3))
    gmm.update()
    twin.update()
    assert torch.equal(gmm.assignments_, twin.assignments_)


def test_gmm_infer_errors_are_named():
    with pytest.raises(DataError, match="GMM 'fresh'.*not learned yet"):
        GMM("fresh", n_clusters=3, dim=2).infer(x=torch.zeros(2, 2))
    with pytest.raises(DataError, match="GMM 'fresh'.*not learned yet"):
        GMM("fresh", n_clusters=3, dim=2).predict(x=torch.zeros(2, 2))
    gmm = GMM("gmm", n_clusters=3, dim=2, sweeps=2).fit(_blobs()[0])
    with pytest.raises(MessageError, match="'gmm'.*port 'x'.*width 3.*size 2"):
        gmm.infer(x=torch.zeros(4, 3))
    nan = torch.zeros(4, 2)
    nan[1, 0] = float("nan")
    with pytest.raises((MessageError, DataError), match="'gmm'.*port 'x'.*non-finite"):
        gmm.infer(x=nan)
    with pytest.raises(MessageError, match="'gmm'.*port 'c'.*width 2.*size 3"):
        gmm.infer(x=torch.zeros(4, 2), c=Categorical(torch.full((4, 2), 0.5)))
    with pytest.raises(MessageError, match="'gmm'.*'c' has 3 items.*'x' has 4"):
        gmm.infer(x=torch.zeros(4, 2), c=Categorical(torch.full((3, 3), 1 / 3)))
    with pytest.raises(DataError, match="'gmm'.*infer needs new items"):
        gmm.infer()
    # fewer new items than clusters is fine (only learning needs a point per cluster)
    assert gmm.infer(x=torch.zeros(1, 2))["c"].probs.shape == (1, 3)


# --- the EM / gradient mixture prior -------------------------------------------------------------
def _mixture_closed_form(mixture, new):
    """log[pi_k N(new | mu_k, diag var_k)] by torch.distributions, (M, K)."""
    pi = torch.softmax(mixture.logits.detach().double(), 0)
    var = mixture.log_var.detach().double().clamp_min(math.log(mixture.min_var)).exp()
    normal = torch.distributions.Normal(mixture.means.detach().double(), var.sqrt())
    return pi.log() + normal.log_prob(new.double()[:, None, :]).sum(-1)


def test_mixture_infer_is_the_posterior_of_its_learned_parameters():
    x, _ = _blobs(sizes=(12, 9, 9), spread=1.5)
    mixture = MixturePrior("mix", n_clusters=3, dim=2, em_iterations=20, restarts=2).fit(x=x)
    new = _new_points()
    want = _mixture_closed_form(mixture, new)
    out = mixture.infer(x=new)
    assert torch.allclose(out["c"].probs.double(), torch.softmax(want, 1), atol=1e-6)
    best = want.argmax(1)
    assert torch.equal(mixture.predict(x=new), best)
    assert torch.equal(out["x"].mean, mixture.means.detach()[best])
    assert torch.equal(out["x"].var, mixture._log_var().detach().exp()[best])
    assert (torch.softmax(want, 1).max(1).values < 0.999).any() and len(set(best.tolist())) > 1
    # with a prior on c: the category message leaves it out, the cluster sent down and predict
    # multiply it in (as predict() on the learned items does)
    prior = _prior(new.shape[0], 3)
    with_prior = (torch.softmax(want, 1).log() + prior.probs.double().log()).argmax(1)
    assert not torch.equal(with_prior, best)
    out = mixture.infer(x=new, c=prior)
    assert torch.equal(out["c"].probs, mixture.infer(x=new)["c"].probs)
    assert torch.equal(mixture.predict(x=new, c=prior), with_prior)
    assert torch.equal(out["x"].mean, mixture.means.detach()[with_prior])
    # a prior alone: the mixing weights, times the prior for the component sent down
    alone = mixture.infer(c=prior)
    pi = torch.softmax(mixture.logits.detach(), 0)
    assert torch.allclose(alone["c"].probs, pi.expand(new.shape[0], -1))
    assert torch.equal(alone["x"].mean, mixture.means.detach()[(pi.log() + prior.probs.log()).argmax(1)])


def test_mixture_infer_on_its_own_items_is_its_training_message():
    # equal by construction: the training message is the same posterior of the same items
    x, _ = _blobs()
    mixture = MixturePrior("mix", n_clusters=3, dim=2, em_iterations=10).fit(x=x)
    out = mixture.infer(x=x)
    published = mixture.publish()
    assert torch.equal(out["c"].probs, published["c"].probs)
    assert torch.equal(out["x"].mean, published["x"].mean)
    assert torch.equal(out["x"].var, published["x"].var)
    assert torch.equal(mixture.predict(x=x), mixture.predict())
    # with the learned items' prior given as it was received, predict agrees with predict()
    prior = _prior(x.shape[0], 3)
    mixture.receive("c", prior)
    assert torch.equal(mixture.predict(x=x, c=prior), mixture.predict())


def test_mixture_infer_leaves_what_it_learned_alone_and_repeats():
    x, _ = _blobs()
    mixture = MixturePrior("mix", n_clusters=3, dim=2, em_iterations=5, restarts=2, seed=3)
    mixture.fit(x=x, c=_prior(x.shape[0], 3))
    before = _snapshot(mixture)
    first = mixture.infer(x=_new_points(), c=_prior(7, 3, seed=1))
    mixture.predict(x=_new_points(n=2))
    mixture.infer(c=_prior(4, 3))
    _assert_same(before, _snapshot(mixture))
    assert not first["x"].mean.requires_grad  # no graph back to the parameters
    again = mixture.infer(x=_new_points(), c=_prior(7, 3, seed=1))
    assert torch.equal(first["c"].probs, again["c"].probs) and torch.equal(first["x"].mean, again["x"].mean)


def test_mixture_infer_errors_are_named():
    with pytest.raises(DataError, match="MixturePrior 'fresh'.*not learned yet"):
        MixturePrior("fresh", n_clusters=3, dim=2).infer(x=torch.zeros(2, 2))
    mixture = MixturePrior("mix", n_clusters=3, dim=2, em_iterations=3).fit(x=_blobs()[0])
    with pytest.raises(MessageError, match="'mix'.*port 'x'.*width 3.*size 2"):
        mixture.infer(x=torch.zeros(4, 3))
    nan = torch.zeros(4, 2)
    nan[2, 1] = float("nan")
    with pytest.raises(MessageError, match="'mix'.*port 'x'.*non-finite"):
        mixture.infer(x=nan)
    with pytest.raises(DataError, match="'mix'.*differ in number"):
        mixture.infer(x=torch.zeros(4, 2), c=Categorical(torch.full((3, 3), 1 / 3)))
    assert mixture.infer(x=torch.zeros(1, 2))["c"].probs.shape == (1, 3)
    # learning still needs a point per component
    with pytest.raises(DataError, match="'mix'.*2 items.*cannot fill 3 components"):
        MixturePrior("mix", n_clusters=3, dim=2).fit(x=torch.zeros(2, 2))
