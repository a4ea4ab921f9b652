"""A fully linked toy graph: two modalities, each ambiguous alone, share one category."""

import pytest
import torch
from scipy.stats import multivariate_t

from serket.connections import Observation, TailToTail
from serket.errors import GraphError
from serket.graph import Graph
from serket.messages import Counts, Samples
from serket.modules.gmm import GMM
from serket.modules.lda import LDA
from serket.modules.mixture import MixturePrior
from serket.modules.vae import VAE
from serket.training import AlternateTrainer


def _toy(n=400, seed=0):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    # continuous modality: classes 0 and 1 share a blob, 2 and 3 share another
    centres = torch.tensor([[0.0, 0.0], [0.0, 0.0], [6.0, 0.0], [6.0, 0.0]])
    points = centres[labels] + torch.randn(n, 2, generator=gen)
    # words: classes 0 and 2 use words 0-4, classes 1 and 3 words 5-9
    word_probs = torch.zeros(4, 10)
    word_probs[[0, 2], :5] = 0.2
    word_probs[[1, 3], 5:] = 0.2
    words = torch.stack([torch.multinomial(word_probs[k], 20, replacement=True, generator=gen).bincount(minlength=10)
                         for k in labels]).float()
    return points, words, labels


def _graph(linked, seed=0, mixture="gibbs", restarts=None, n=400):
    points, words, labels = _toy(n=n, seed=seed)
    g = Graph(seed=seed)
    g.add(Observation("points", points))
    g.add(Observation("words", Counts(words)))
    if mixture == "gibbs":
        g.add(GMM("gmm", n_clusters=4, dim=2, sweeps=20, seed=seed))
    else:
        g.add(MixturePrior("gmm", n_clusters=4, dim=2, seed=seed))
    lda_options = {} if restarts is None else {"category_message": "likelihood", "evidence_weight": 0.5}
    g.add(LDA("lda", n_topics=4, vocab_sizes=(10,), sweeps=30, tokens=20, seed=seed, **lda_options))
    g.observe("points", "gmm.x")
    g.observe("words", "lda.w0")
    # the LDA applies its prior to each of its 20 tokens: send it the 20th root
    g.tail_to_tail("category", ["gmm.c", "lda.c"], feedback=linked, prior_temperature={"lda": 1 / 20},
                   restarts=restarts)
    return g, labels


def _run(linked, seed=0, rounds=5, **kw):
    g, labels = _graph(linked, seed, **kw)
    return AlternateTrainer(g, rounds=rounds, labels=labels, progress=False).run()[-1]["metrics"]


def test_linked_modalities_beat_each_module_alone():
    for seed in (0, 1):
        alone, linked = _run(False, seed), _run(True, seed)
        # alone, each module sees only half the distinction between the four classes
        assert alone["gmm"]["accuracy"] < 0.6 and alone["lda"]["accuracy"] < 0.75
        assert linked["gmm"]["accuracy"] > 0.95 and linked["lda"]["accuracy"] > 0.95


def test_neuro_serket_benchmark_smoke(tmp_path, capsys, golden_figures):
    from serket.cli import main

    assert main(["bench", "neuro-serket", "--quick", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    golden_figures("neuro-serket", tmp_path / "results.json")
    assert lines[0].startswith("data: images MNIST")
    table = "\n".join(lines)
    for row in ("| separate |", "| asr |", "| halves |", "| full |"):
        assert row in table
    for name in ("results.json", "accuracy_per_round.png", "confusion_full_gmm.png", "latent_full.png", "graph_full.png"):
        assert (tmp_path / name).stat().st_size > 0, name


def test_the_joint_fit_finds_the_four_classes_in_two_rounds():
    # EM over the shared category from the consensus and 6 fresh starts, the likeliest kept:
    # the shared category is right after one round; the LDA's own reading of it needs the
    # GMM's side, which reaches it as a prior in the second
    for seed, mixture in ((0, "gibbs"), (1, "em")):
        first = _run(True, seed, rounds=1, mixture=mixture, restarts=6)
        assert first["category"]["accuracy"] > 0.95
        second = _run(True, seed, rounds=2, mixture=mixture, restarts=6)
        assert second["gmm"]["accuracy"] > 0.95 and second["lda"]["accuracy"] > 0.95


def test_the_joint_fit_keeps_the_likeliest_start_and_the_labels():
    g, labels = _graph(True, 2, mixture="em", restarts=6)
    AlternateTrainer(g, rounds=2, labels=labels, progress=False).run()
    combiner = g.node("category")
    lls = combiner.joint_log_likelihoods_
    # the consensus, the last installed fit and 6 fresh starts
    assert len(lls) == 8 and combiner.chosen_start_ == max(range(8), key=lls.__getitem__)
    before = combiner.predict().clone()
    assert (g.node("gmm").predict() == before).float().mean() > 0.95
    assert (g.node("lda").predict() == before).float().mean() > 0.95
    g.step("category")  # another joint fit on the same data: same categories, same labels
    assert (combiner.predict() == before).float().mean() > 0.98


def test_joint_em_steps_never_lower_the_joint_likelihood():
    # maximum-likelihood M steps (diagonal Gaussians) and near-ML ones (multinomials with a
    # tiny pseudo-count): each iteration of EM may only raise the mean joint log likelihood
    g, _ = _graph(True, 3, mixture="em", restarts=0)
    g.node("lda").beta = 1e-6
    AlternateTrainer(g, rounds=1, progress=False).run()
    combiner = g.node("category")
    start = torch.softmax(torch.randn(400, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64), 1)
    lls = []
    for iterations in range(1, 12):
        combiner.em_iterations = iterations
        lls.append(combiner._em(start)[0])
    assert all(b >= a - 1e-9 * abs(a) for a, b in zip(lls, lls[1:])), lls
    assert lls[-1] > lls[0]


def test_restarts_need_members_that_share_categories():
    combiner = TailToTail("category", 3, restarts=2)
    combiner.add_member("gmm", MixturePrior("gmm", n_clusters=3, dim=2), "c")
    with pytest.raises(GraphError, match="'vae' does not"):
        combiner.add_member("vae", VAE("vae", x_dim=4, z_dim=2), "z")


def test_the_members_category_hooks_match_their_closed_forms():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(60, 2, generator=gen, dtype=torch.float64)
    r = torch.softmax(torch.randn(60, 3, generator=gen, dtype=torch.float64), 1)
    # diagonal Gaussians: the weighted means and variances
    em = MixturePrior("em", n_clusters=3, dim=2)
    em.receive("x", Samples(x.float()))
    means, log_var = em.category_fit("c", r)
    nk = r.sum(0)[:, None]
    want_mean = r.T @ x.float().double() / nk
    torch.testing.assert_close(means, want_mean)
    torch.testing.assert_close(log_var.exp(), r.T @ x.float().double().pow(2) / nk - want_mean.pow(2))
    # the Bayesian GMM: with hard responsibilities, each cluster's Student-t predictive of its
    # Normal-Wishart posterior, checked against scipy's multivariate t
    gmm = GMM("gmm", n_clusters=3, dim=2, seed=0)
    gmm.fit(x=x.float())
    hard = torch.nn.functional.one_hot(gmm.assignments_, 3).double()
    post = gmm.category_fit("c", hard)
    points = x.float().double() - gmm.mean0_
    loglik = gmm.category_log_likelihood("c", post)
    for k in range(3):
        kappa, nu, d = float(post.kappa[k]), float(post.nu[k]), 2
        shape = post.scale[k].numpy() * (kappa + 1) / (kappa * (nu - d + 1))
        want = multivariate_t(loc=post.mean[k].numpy(), shape=shape, df=nu - d + 1).logpdf(points.numpy())
        torch.testing.assert_close(loglik[:, k], torch.as_tensor(want), rtol=1e-6, atol=1e-6)
    # the LDA: each topic's words from the weighted token counts, plus beta
    words = torch.randint(0, 4, (60, 6), generator=gen).float()
    lda = LDA("lda", n_topics=3, vocab_sizes=(6,), tokens=None, beta=0.5, evidence_weight=0.3, sweeps=2)
    lda.fit(w0=Counts(words))
    log_phi = lda.category_fit("c", r)
    phi = r.T @ words.double() + 0.5
    torch.testing.assert_close(log_phi.exp(), phi / phi.sum(1, keepdim=True))
    torch.testing.assert_close(lda.category_log_likelihood("c", log_phi), 0.3 * words.double() @ log_phi.T)
    # adopting a fit: every token takes a topic its document is responsible for
    certain = torch.nn.functional.one_hot(torch.arange(60) % 3, 3).double()
    lda.category_adopt("c", certain, lda.category_fit("c", certain))
    table = lda.token_table()
    assert (table["topic"] == table["doc"] % 3).all()


def test_merged_histories_join_metrics_and_add_seconds():
    from serket.graphs.neuro_serket import merge_histories

    a = [{"round": 1, "seconds": 2.0, "node_seconds": {"vae": 1.5}, "metrics": {"gmm": {"accuracy": 0.5}}}]
    b = [{"round": 1, "seconds": 3.0, "node_seconds": {"lda": 2.5}, "metrics": {"lda": {"accuracy": 0.7}}}]
    (merged,) = merge_histories(a, b)
    assert merged["seconds"] == 5.0 and merged["node_seconds"] == {"vae": 1.5, "lda": 2.5}
    assert merged["metrics"] == {"gmm": {"accuracy": 0.5}, "lda": {"accuracy": 0.7}}
    with pytest.raises(ValueError, match="different lengths"):
        merge_histories(a, a + a)
