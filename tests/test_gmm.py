"""The Bayesian GMM: its predictive and downdate against direct recomputation, recovery of a known
mixture, the exact collapsed posterior of a tiny problem, priors, errors, save/load and seeding."""

import itertools
import math
import warnings

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from scipy.special import gammaln, multigammaln
from scipy.stats import multivariate_t

from serket.errors import DataError, MessageError
from serket.messages import Categorical, Gaussian, Samples
from serket.module import settings
from serket.modules.gmm import (
    GMM,
    ClusterCollapseWarning,
    NormalWishart,
    collapsed_log_conditionals,
    normal_wishart_posterior,
    student_t_log_predictive,
    sufficient_statistics,
)


# --- an independent reference: the Normal-Wishart evidence in its centred-scatter form -----------
def log_evidence(x, mean0, kappa0, nu0, scale0):
    """log p(X) of one cluster's points (n, D), mean and precision integrated out (numpy)."""
    n, d = x.shape
    if n == 0:
        return 0.0
    xbar = x.mean(0)
    scatter = (x - xbar).T @ (x - xbar)
    kappa_n, nu_n = kappa0 + n, nu0 + n
    scale_n = scale0 + scatter + kappa0 * n / kappa_n * np.outer(xbar - mean0, xbar - mean0)
    return (-0.5 * n * d * math.log(math.pi) + 0.5 * d * math.log(kappa0 / kappa_n)
            + multigammaln(nu_n / 2, d) - multigammaln(nu0 / 2, d)
            + 0.5 * nu0 * np.linalg.slogdet(scale0)[1] - 0.5 * nu_n * np.linalg.slogdet(scale_n)[1])


def log_partition_prior(counts, alpha):
    k = len(counts)
    return gammaln(alpha) - gammaln(alpha + sum(counts)) + sum(gammaln(n + alpha / k) - gammaln(alpha / k) for n in counts)


def _prior(d, kappa0=0.3, nu0=None, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d))
    scale0 = a @ a.T + d * np.eye(d)
    return rng.normal(size=d), kappa0, (d + 1.5 if nu0 is None else nu0), scale0


def _torch_prior(mean0, kappa0, nu0, scale0):
    return NormalWishart(torch.tensor(mean0), kappa0, nu0, torch.tensor(scale0))


# --- 1. predictive and leave-one-out downdate ----------------------------------------------------
def test_reference_evidence_of_one_point_is_scipys_student_t():
    # ties the test's own evidence formula to an outside implementation of the predictive
    mean0, kappa0, nu0, scale0 = _prior(3)
    x = np.array([[0.4, -1.0, 2.0]])
    df = nu0 - 3 + 1
    shape = scale0 * (kappa0 + 1) / (kappa0 * df)
    expected = multivariate_t(loc=mean0, shape=shape, df=df).logpdf(x[0])
    assert log_evidence(x, mean0, kappa0, nu0, scale0) == pytest.approx(expected, abs=1e-10)


def test_student_t_predictive_matches_scipy():
    rng = np.random.default_rng(1)
    mean0, kappa0, nu0, scale0 = _prior(3, seed=1)
    x = rng.normal(size=(30, 3)) * 2
    assign = torch.tensor(rng.integers(0, 3, size=30))
    counts, sums, outer = sufficient_statistics(torch.tensor(x), assign, 3)
    post = normal_wishart_posterior(_torch_prior(mean0, kappa0, nu0, scale0), counts, sums, outer)
    new = rng.normal(size=(5, 3))
    got = student_t_log_predictive(torch.tensor(new), post).numpy()
    for k in range(3):
        kappa, nu = post.kappa[k].item(), post.nu[k].item()
        df = nu - 3 + 1
        shape = post.scale[k].numpy() * (kappa + 1) / (kappa * df)
        want = multivariate_t(loc=post.mean[k].numpy(), shape=shape, df=df).logpdf(new)
        np.testing.assert_allclose(got[:, k], want, rtol=0, atol=1e-9)


def test_leave_one_out_downdate_equals_recomputation_without_the_point():
    rng = np.random.default_rng(2)
    d, k, n, alpha = 3, 4, 25, 1.7
    mean0, kappa0, nu0, scale0 = _prior(d, seed=2)
    x = rng.normal(size=(n, d)) * 1.5 + 3.0
    assign = rng.integers(0, k - 1, size=n)
    assign[7] = k - 1  # a singleton: leaving it out empties its cluster (kappa - 1 = kappa0)
    own = torch.tensor(assign)
    counts, sums, outer = sufficient_statistics(torch.tensor(x), own, k)
    post = normal_wishart_posterior(_torch_prior(mean0, kappa0, nu0, scale0), counts, sums, outer)
    got = collapsed_log_conditionals(torch.tensor(x), own, counts, post, alpha).numpy()

    want = np.empty((n, k))
    for i in range(n):
        rest = np.arange(n) != i
        for c in range(k):
            members = x[rest & (assign == c)]
            with_i = np.vstack([members, x[i:i + 1]])
            want[i, c] = (math.log(len(members) + alpha / k)
                          + log_evidence(with_i, mean0, kappa0, nu0, scale0)
                          - log_evidence(members, mean0, kappa0, nu0, scale0))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


# --- 2. recovery of a known mixture --------------------------------------------------------------
def test_recovers_a_known_three_component_mixture():
    rng = np.random.default_rng(3)
    means = np.array([[0.0, 0.0], [6.0, 1.0], [2.0, 7.0]])
    covs = np.array([[[1.0, 0.3], [0.3, 0.5]], [[0.4, -0.1], [-0.1, 0.8]], [[0.6, 0.0], [0.0, 0.6]]])
    sizes = [300, 180, 120]  # weights exactly 0.5, 0.3, 0.2
    x = np.vstack([rng.multivariate_normal(m, c, size=s) for m, c, s in zip(means, covs, sizes)])
    x = x[rng.permutation(len(x))]
    gmm = GMM("gmm", n_clusters=3, dim=2, sweeps=30, seed=0)
    gmm.fit(torch.tensor(x, dtype=torch.float32))
    est = gmm.means_.numpy()
    rows, cols = linear_sum_assignment(((means[:, None] - est[None]) ** 2).sum(-1))
    # standard errors: a mean of 120 points with sd <= 1 is off by ~0.09 per coordinate at most
    np.testing.assert_allclose(est[cols], means[rows], atol=0.15)
    np.testing.assert_allclose(gmm.weights_.numpy()[cols], np.array(sizes)[rows] / 600, atol=0.05)
    for r, c in zip(rows, cols):
        # a covariance from 120-300 points is off by ~sqrt(2/n) ~ 0.13 relative at most
        rel = np.linalg.norm(gmm.covariances_[c].numpy() - covs[r]) / np.linalg.norm(covs[r])
        assert rel < 0.3, (r, rel)
    assert gmm.dead_clusters_ == []
    assert gmm.predict().shape == (600,)


# --- 3. the exact collapsed posterior of a tiny problem ------------------------------------------
TINY_X = np.array([[0.0, 0.0], [0.6, 0.3], [1.6, 1.2], [2.0, 2.1]])
TINY = dict(n_clusters=3, dim=2, alpha=1.0, kappa0=0.1, nu0=4.0)
TINY_MEAN0, TINY_SCALE0 = TINY_X.mean(0), 0.5 * np.eye(2)
PAIRS = list(itertools.combinations(range(4), 2))


def _partition_keys(labels):
    # a partition is identified by which pairs share a cluster (label-invariant)
    labels = np.asarray(labels)
    return sum((labels[..., i] == labels[..., j]).astype(np.int64) << b for b, (i, j) in enumerate(PAIRS))


def _exact_partition_posterior():
    logp = {}
    for labels in itertools.product(range(3), repeat=4):
        labels = np.array(labels)
        counts = np.bincount(labels, minlength=3)
        lp = log_partition_prior(counts, TINY["alpha"]) + sum(
            log_evidence(TINY_X[labels == k], TINY_MEAN0, TINY["kappa0"], TINY["nu0"], TINY_SCALE0)
            for k in range(3))
        key = int(_partition_keys(labels))
        logp[key] = np.logaddexp(logp.get(key, -np.inf), lp)
    z = np.logaddexp.reduce(list(logp.values()))
    return {key: math.exp(v - z) for key, v in logp.items()}


def _sampled_partitions(block_size, n_sweeps, burn_in=100):
    gmm = GMM("tiny", **TINY, mean0=torch.tensor(TINY_MEAN0), scale0=torch.tensor(TINY_SCALE0),
              block_size=block_size, sweeps=1, init="random", seed=11)
    gmm.receive("x", torch.tensor(TINY_X))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ClusterCollapseWarning)
        trace = gmm.sample_assignments(n_sweeps + burn_in)[burn_in:].numpy()
    return gmm, _partition_keys(trace)


def _total_variation(exact, keys):
    freq = {key: float(np.mean(keys == key)) for key in exact}
    return 0.5 * sum(abs(freq[key] - p) for key, p in exact.items())


def test_exact_sampler_matches_the_enumerated_posterior():
    exact = _exact_partition_posterior()
    assert len(exact) == 14 and max(exact.values()) < 0.6  # a spread posterior, not one partition
    gmm, keys = _sampled_partitions(block_size=1, n_sweeps=8000)
    # 8000 correlated sweeps: batch means give a standard error of at most 0.007 per partition
    # frequency and an expected total variation of about 0.012; 0.04 is over 3 times that, while
    # a sampler that ignores the downdate or the label prior is off by 0.1 or more
    assert _total_variation(exact, keys) < 0.04
    for b in range(len(PAIRS)):
        together = sum(p for key, p in exact.items() if key >> b & 1)
        assert np.mean(keys >> b & 1) == pytest.approx(together, abs=0.03), PAIRS[b]
    # the module's log joint is the enumerated one for its current assignments
    labels = gmm.assignments_.numpy()
    counts = np.bincount(labels, minlength=3)
    want = log_partition_prior(counts, 1.0) + sum(
        log_evidence(TINY_X[labels == k], TINY_MEAN0, 0.1, 4.0, TINY_SCALE0) for k in range(3))
    assert gmm.log_joint() == pytest.approx(want, abs=1e-9)


def test_parallel_blocks_are_an_approximation_of_stated_size():
    # Items of one block are drawn together without seeing each other's new clusters. With two
    # blocks of two items the partition distribution is off by a total variation of 0.11 (this
    # seed; the exact sampler: 0.013); with all four items in one block, 0.63. Large blocks are
    # only accurate when a block is a small part of each cluster (256 of thousands of items).
    exact = _exact_partition_posterior()
    _, keys = _sampled_partitions(block_size=2, n_sweeps=8000)
    assert _total_variation(exact, keys) < 0.2


# --- 4. the prior on c ---------------------------------------------------------------------------
def _two_blobs(n=60, seed=4):
    rng = np.random.default_rng(seed)
    x = np.vstack([rng.normal(size=(n, 2)) * 0.5, rng.normal(size=(n, 2)) * 0.5 + [5.0, 0.0]])
    return torch.tensor(x, dtype=torch.float32)


def test_a_strong_prior_moves_items_and_is_not_echoed_on_port_c():
    rng = np.random.default_rng(5)
    x = torch.tensor(rng.normal(size=(90, 2)), dtype=torch.float32)  # one blob: the data barely decide
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ClusterCollapseWarning)
        alone = GMM("gmm", n_clusters=3, dim=2, sweeps=20).fit(x)
        target = (int(alone.assignments_[:30].mode().values) + 1) % 3  # not where they go alone
        assert alone.assignments_[:30].eq(target).float().mean() < 0.5
        probs = torch.full((90, 3), 1 / 3)
        probs[:30] = 0.001
        probs[:30, target] = 0.998
        gmm = GMM("gmm", n_clusters=3, dim=2, sweeps=20).fit(x, probs)
    assert gmm.assignments_[:30].eq(target).float().mean() > 0.95
    assert gmm.predict()[:30].eq(target).float().mean() > 0.95
    # the message on c is the module's own conditional, without the received prior: the
    # responsibilities (used by predict) are that message times the prior, renormalised
    sent = gmm.publish()["c"].probs
    expected = torch.softmax(torch.log(sent) + torch.log(probs), 1)
    torch.testing.assert_close(gmm.responsibilities_, expected, atol=1e-5, rtol=1e-4)
    assert (sent[:30] - gmm.responsibilities_[:30]).abs().max() > 0.01


# --- 5. clear errors ------------------------------------------------------------------------------
def test_bad_input_raises_errors_that_name_the_module_and_the_problem():
    gmm = GMM("latent-gmm", n_clusters=3, dim=2)
    bad = torch.randn(10, 2)
    bad[4, 1] = float("nan")
    with pytest.raises(DataError, match="latent-gmm.*NaN"):
        gmm.fit(bad)
    with pytest.raises(DataError, match=r"latent-gmm.*\(N, 2\).*\(10, 3\)"):
        gmm.fit(torch.randn(10, 3))
    with pytest.raises(MessageError, match="latent-gmm.*width 3.*size 2"):
        gmm.receive("x", Samples(torch.randn(10, 3)))
    with pytest.raises(DataError, match="latent-gmm.*empty dataset"):
        gmm.fit(torch.zeros(0, 2))
    with pytest.raises(DataError, match="latent-gmm.*2 items.*3 clusters: more clusters than points"):
        gmm.fit(torch.randn(2, 2))
    gmm.receive("x", torch.randn(10, 2))
    with pytest.raises(MessageError, match="latent-gmm.*'c' has 8 items.*'x' has 10"):
        gmm.receive("c", Categorical(torch.full((8, 3), 1 / 3)))
    # a prior that was right for the old data becomes stale when the data change size
    gmm.receive("c", Categorical(torch.full((10, 3), 1 / 3)))
    gmm.receive("x", torch.randn(12, 2))
    with pytest.raises(MessageError, match="latent-gmm.*'c' has 10 items.*'x' has 12"):
        gmm.update()
    with pytest.raises(DataError, match="no data"):
        GMM("empty", n_clusters=2, dim=2).update()
    with pytest.raises(ValueError, match="block_size"):
        GMM("g", block_size=0)


# --- 6. state, seeding, devices, messages ---------------------------------------------------------
def test_save_and_load_continue_identically():
    x = _two_blobs(seed=6) + 0.3 * torch.randn(120, 2, generator=torch.Generator().manual_seed(0))
    kwargs = dict(n_clusters=4, dim=2, sweeps=3, block_size=16, init="random", seed=5)
    first = GMM("gmm", **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ClusterCollapseWarning)
        first.fit(x)
        copy = GMM("gmm", **kwargs)
        copy.load_state_dict(first.state_dict())
        for name in ("assignments_", "counts_", "means_", "responsibilities_", "mean0_", "scale0_"):
            assert torch.equal(getattr(first, name), getattr(copy, name)), name
        assert copy.n_iter_ == first.n_iter_ == 3 and copy.dead_clusters_ == first.dead_clusters_
        first.update()
        copy.update()
    assert torch.equal(first.assignments_, copy.assignments_)
    assert torch.equal(first.responsibilities_, copy.responsibilities_)
    assert first.n_iter_ == 6


def test_the_given_prior_is_a_setting_printed_and_fingerprinted():
    gmm = GMM("gmm", n_clusters=2, dim=2, sweeps=2, mean0=torch.tensor([1.0, -2.0]), scale0=0.5)
    assert settings(gmm)["mean0"] == (1.0, -2.0) and settings(gmm)["scale0"] == 0.5
    assert "mean0=(1.0, -2.0), scale0=0.5" in repr(gmm)
    matrix = GMM("gmm", n_clusters=2, dim=2, sweeps=2, scale0=[[2.0, 0.5], [0.5, 1.0]])
    assert settings(matrix)["scale0"] == ((2.0, 0.5), (0.5, 1.0)) and settings(matrix)["mean0"] is None
    # and the prior used is exactly the one given
    x = _two_blobs(seed=3)
    gmm.fit(x)
    assert torch.equal(gmm.mean0_, torch.tensor([1.0, -2.0], dtype=torch.float64))
    assert torch.equal(gmm.scale0_, 0.5 * torch.eye(2, dtype=torch.float64))
    matrix.fit(x)
    assert torch.equal(matrix.scale0_, torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64))


def test_a_joined_evidence_weight_scales_only_the_category_log_likelihood():
    x = _two_blobs(seed=5)
    gmm = GMM("gmm", n_clusters=2, dim=2, sweeps=5, seed=1).fit(x)
    params = gmm.category_fit("c", gmm.publish()["c"].probs.double())
    alone = gmm.category_log_likelihood("c", params)
    # not joined: exactly the Student-t predictive of every item under every cluster
    assert gmm.category_weight_ is None
    assert torch.equal(alone, student_t_log_predictive(x.double() - gmm.mean0_, params))
    sent = gmm.publish()["c"].probs
    gmm.category_join("c", 0.3)
    assert gmm.category_weight_ == 0.3
    assert torch.equal(gmm.category_log_likelihood("c", params), 0.3 * alone)
    assert torch.equal(gmm.publish()["c"].probs, sent)  # what it sends does not change
    with pytest.raises(ValueError, match="evidence_weight"):
        gmm.category_join("c", -1.0)


def test_seeds_decide_the_chain():
    rng = np.random.default_rng(7)
    x = torch.tensor(rng.normal(size=(200, 2)), dtype=torch.float32)  # ambiguous: chains wander

    def run(seed):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ClusterCollapseWarning)
            return GMM("gmm", n_clusters=4, dim=2, sweeps=3, seed=seed).fit(x).assignments_

    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))


def test_dead_clusters_warn_and_can_revive():
    x = _two_blobs(n=40, seed=8)
    gmm = GMM("gmm", n_clusters=6, dim=2, sweeps=40, init="random", seed=0)
    with pytest.warns(ClusterCollapseWarning, match="'gmm'.*clusters"):
        gmm.fit(x)
    assert len(gmm.dead_clusters_) >= 3
    assert all(int(gmm.counts_[k]) == 0 for k in gmm.dead_clusters_)
    # an empty cluster keeps weight alpha/K: its posterior weight is positive
    assert all(float(gmm.weights_[k]) > 0 for k in gmm.dead_clusters_)


def test_messages_new_data_and_device_moves():
    x = _two_blobs(seed=9)
    gmm = GMM("gmm", n_clusters=2, dim=2, sweeps=10, prior_variance="cluster")
    assert gmm.publish() == {} and gmm.predict() is None
    gmm.fit(x)
    out = gmm.publish()
    assert isinstance(out["x"], Gaussian) and isinstance(out["c"], Categorical)
    assert out["x"].mean.shape == (120, 2) and out["c"].probs.shape == (120, 2)
    torch.testing.assert_close(out["x"].mean, gmm.means_[gmm.assignments_].float())
    torch.testing.assert_close(out["x"].var, gmm.covariances_.diagonal(dim1=1, dim2=2)[gmm.assignments_].float())
    # new latent samples for the same items: warm start, statistics recomputed from the new data
    before, means = gmm.assignments_.clone(), gmm.means_.clone()
    gmm.fit(x + 0.05)
    assert gmm.n_iter_ == 20 and torch.equal(gmm.assignments_, before)
    torch.testing.assert_close(gmm.means_, means + 0.05, atol=1e-3, rtol=0)
    # a different number of items: start again
    gmm.fit(x[:100])
    assert gmm.n_iter_ == 10 and gmm.assignments_.shape == (100,)
    gmm.to("cpu")
    assert gmm.assignments_.device.type == "cpu"
    assert "n_clusters=2" in repr(gmm) and "prior_variance='cluster'" in repr(gmm)


# --- 7. restarts: independent starts in the first update, the likeliest kept ---------------------
def _uneven_blobs():
    # four well separated blobs of very different sizes: from k-means++ seeds and two sweeps a
    # single start often splits the big blob and merges two small ones
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [8.0, 0.0], [0.0, 8.0], [8.0, 8.0]])
    sizes = (200, 40, 40, 20)
    x = torch.cat([torch.randn(n, 2, generator=gen) * 0.7 + c for n, c in zip(sizes, centres)])
    return x, torch.cat([torch.full((n,), k) for k, n in enumerate(sizes)])


def test_restarts_keep_the_start_with_the_highest_collapsed_log_joint():
    x, labels = _uneven_blobs()
    improved = 0
    for seed in range(8):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ClusterCollapseWarning)
            single = GMM("gmm", n_clusters=4, dim=2, sweeps=2, seed=seed).fit(x)
            several = GMM("gmm", n_clusters=4, dim=2, sweeps=2, seed=seed, restarts=4).fit(x)
        scores = several.restart_log_joints_
        assert single.restart_log_joints_ is None and len(scores) == 4
        # the first start draws from the same stream as the single one: the same chain
        assert scores[0] == single.log_joint()
        # best_of honoured: the state kept is the argmax start's (its criterion recomputed from
        # the kept assignments), and never worse than the single start
        assert several.log_joint() == max(scores) == scores[int(np.argmax(scores))]
        assert several.log_joint() >= single.log_joint()
        # the kept state is consistent with itself: statistics and messages from the kept chain
        counts, _, _ = sufficient_statistics(x.double() - several.mean0_, several.assignments_, 4)
        assert torch.equal(several.counts_, counts.long())
        assert torch.equal(several.publish()["x"].mean, several.means_[several.assignments_].float())
        improved += several.log_joint() > single.log_joint()
    assert improved >= 1  # a problem where single starts do get stuck, so restarts are tested


def test_restarts_run_only_when_an_update_starts_afresh():
    x, _ = _uneven_blobs()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ClusterCollapseWarning)
        gmm = GMM("gmm", n_clusters=4, dim=2, sweeps=2, seed=1, restarts=3).fit(x)
        first = list(gmm.restart_log_joints_)
        kept = gmm.assignments_.clone()
        twin = GMM("gmm", n_clusters=4, dim=2, sweeps=2, seed=1, restarts=3).fit(x)
        assert torch.equal(twin.assignments_, kept) and twin.restart_log_joints_ == first  # seeded
        gmm.update()  # continues the kept chain: one chain, no new starts
        assert gmm.restart_log_joints_ == first and gmm.n_iter_ == 4
        twin.restarts = 1  # the same continuation, as a single-start module would run it
        twin.update()
        assert torch.equal(gmm.assignments_, twin.assignments_)
        gmm.fit(x[:150])  # a different number of items starts afresh: restarts again
    assert len(gmm.restart_log_joints_) == 3 and gmm.restart_log_joints_ != first and gmm.n_iter_ == 2


def test_restarts_setting_is_checked_printed_and_conforms():
    from serket.errors import ConfigError
    from serket.testing import check_module

    assert settings(GMM("gmm"))["restarts"] == 1 and "restarts=3" in repr(GMM("gmm", restarts=3))
    with pytest.raises(ConfigError, match="GMM 'gmm'.*restarts"):
        GMM("gmm", restarts=0)
    x, _ = _uneven_blobs()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ClusterCollapseWarning)
        check_module(lambda: GMM("gmm", n_clusters=4, dim=2, sweeps=2, restarts=3, seed=2), {"x": Samples(x)})


def test_only_the_kept_starts_collapse_warnings_are_issued():
    x = _two_blobs(n=40, seed=8)
    kwargs = dict(n_clusters=6, dim=2, sweeps=40, init="random", seed=0)

    def collapse_warnings(restarts):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gmm = GMM("gmm", restarts=restarts, **kwargs).fit(x)
        return gmm, [w for w in caught if issubclass(w.category, ClusterCollapseWarning)]

    gmm, several = collapse_warnings(3)
    _, single = collapse_warnings(1)
    # one warning, from the kept start, pointing where a single start's points (the caller of update)
    assert len(several) == 1 == len(single) and bool(gmm.dead_clusters_)
    assert (several[0].filename, several[0].lineno) == (single[0].filename, single[0].lineno)


# --- 7. the sweep's kernels (issue 14) -------------------------------------------------------------
@pytest.mark.parametrize("with_prior", [False, True])
def test_the_blocked_sweep_draws_the_reference_chain_with_few_kernels_and_no_host_sync(with_prior, load_benchmark):
    # On a GPU a sweep is latency-bound: each operator is a kernel launch, each .item() a wait.
    # The sweep was restructured for fewer kernels without changing its arithmetic: it draws the
    # same chain as the sweep before (benchmarks/bench_gmm_gibbs.py keeps it), to the bit.
    bench = load_benchmark("bench_gmm_gibbs.py")
    k, dim, block = 4, 3, 32
    data, _ = bench.synthetic_mixture(8 * block, dim, k, torch.Generator().manual_seed(0))
    prior = NormalWishart(torch.zeros(dim, dtype=torch.float64), 0.01, dim + 2.0,
                          torch.eye(dim, dtype=torch.float64))
    kernels = {}
    for blocks in (4, 8):
        n = blocks * block
        points = data[:n] - data[:n].mean(0)
        start = torch.randint(k, (n,), generator=torch.Generator().manual_seed(1))
        log_prior = (torch.log_softmax(torch.randn(n, k, generator=torch.Generator().manual_seed(2),
                                                   dtype=torch.float64), 1) if with_prior else None)
        mine, theirs, identical = bench.compare_sweeps(points, start, prior, k=k, block_size=block,
                                                       log_prior=log_prior)
        assert identical
        assert mine.host_syncs() == 0
        kernels[blocks] = mine.kernels(), theirs.kernels()
    per_block = [(kernels[8][i] - kernels[4][i]) / 4 for i in range(2)]
    assert per_block[0] <= 35 + with_prior  # the reference: 51 (52 with a prior)
    assert per_block[0] < 0.7 * per_block[1]
