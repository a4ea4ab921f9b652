"""Joint training: gradients cross connections, the known optimum of a toy graph, the mode flag."""

import pytest
import torch

from serket.connections import Observation
from serket.errors import GraphError
from serket.graph import Graph
from serket.messages import Samples
from serket.module import JointTraining, Module, Port
from serket.modules.gmm import GMM
from serket.modules.mixture import MixturePrior, diagonal_mixture_log_density
from serket.modules.vae import VAE
from serket.training import JointTrainer, train


class Scale(JointTraining, Module):
    """z = a * x with a learnable scalar a; its own objective is 0.5 (a - 2)^2."""

    def __init__(self, name, *, seed=0, device="cpu"):
        super().__init__(name, seed=seed, device=device)
        self.a = torch.nn.Parameter(torch.ones((), device=self.device))
        self.optimizer_ = torch.optim.Adam(self.parameters(), lr=0.02)

    def ports(self):
        return {"x": Port("x", accepts=("samples",), size=1), "z": Port("z", sends=("samples",), accepts=("gaussian",), size=1)}

    def update(self):
        pass  # learns only jointly; the base counts the update

    def publish(self):
        return {"z": Samples(self.a.detach() * self.inbox["x"].values)}

    def joint_forward(self, idx, live, scored):
        z = self.a * self.inbox["x"].values[idx]
        return 0.5 * (self.a - 2.0) ** 2, {"z": z}

    def joint_optimizer(self):
        return self.optimizer_


def _toy(feedback=True, n=2000):
    gen = torch.Generator().manual_seed(0)
    x = 1.5 + 0.5 * torch.randn(n, 1, generator=gen)
    graph = Graph(seed=0)
    graph.add(Observation("data", x))
    graph.add(Scale("scale"))
    graph.add(MixturePrior("prior", n_clusters=1, dim=1, lr=0.02, restarts=1))
    graph.observe("data", "scale.x")
    graph.head_to_tail(upper="prior.x", lower="scale.z", feedback=feedback)
    return graph, x


def test_joint_training_reaches_the_known_optimum_of_a_toy_graph():
    # J(a, mu, s2) = 0.5 (a-2)^2 + mean_i -log N(a x_i; mu, s2). At the optimum mu = a m,
    # s2 = a^2 v, so J(a) = 0.5 (a-2)^2 + log a + const, minimised at a = 1: the child's own
    # objective alone would give a = 2, so reaching a = 1 needs the gradient through the edge.
    graph, x = _toy()
    train(graph, 40, mode="joint", warmup=1, epochs=5, batch_size=500, progress=False)
    a = float(graph.node("scale").a.detach())
    prior = graph.node("prior")
    assert a == pytest.approx(1.0, abs=0.03)
    assert float(prior.means[0, 0]) == pytest.approx(a * float(x.mean()), abs=0.03)
    assert float(prior._log_var().exp()[0, 0]) == pytest.approx(a * a * float(x.var(unbiased=False)), rel=0.08)


def test_a_one_way_edge_stops_the_gradient():
    graph, _ = _toy(feedback=False)
    train(graph, 40, mode="joint", warmup=1, epochs=5, batch_size=500, progress=False)
    assert float(graph.node("scale").a.detach()) == pytest.approx(2.0, abs=0.03)


def test_the_mixture_density_and_em_fit():
    gen = torch.Generator().manual_seed(1)
    x = torch.cat([torch.randn(600, 2, generator=gen) * 0.3 + torch.tensor([3.0, 0.0]),
                   torch.randn(400, 2, generator=gen) * 0.5 - torch.tensor([3.0, 1.0])])
    prior = MixturePrior("m", n_clusters=2, dim=2, em_iterations=50, restarts=3).fit(x=x)
    order = prior.means[:, 0].argsort(descending=True)
    assert torch.allclose(prior.means.detach()[order], torch.tensor([[3.0, 0.0], [-3.0, -1.0]]), atol=0.08)
    assert torch.allclose(prior._log_var().detach().exp()[order], torch.tensor([[0.09, 0.09], [0.25, 0.25]]), rtol=0.2)
    assert torch.allclose(torch.softmax(prior.logits.detach(), 0)[order], torch.tensor([0.6, 0.4]), atol=0.01)
    # the density against torch.distributions
    means, log_var = torch.randn(3, 2), torch.randn(3, 2) * 0.3
    log_w = torch.log_softmax(torch.randn(3), 0)
    mix = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=log_w),
        torch.distributions.Independent(torch.distributions.Normal(means, (0.5 * log_var).exp()), 1))
    ours, _ = diagonal_mixture_log_density(x[:5], means, log_var, log_w)
    assert torch.allclose(ours, mix.log_prob(x[:5]), atol=1e-5)


def _vae_graph(prior_cls, **prior_kw):
    gen = torch.Generator().manual_seed(0)
    images = (torch.rand(60, 16, generator=gen) > 0.5).float()
    graph = Graph(seed=3)
    graph.add(Observation("images", images))
    graph.add(VAE("vae", x_dim=16, z_dim=2, hidden=(8,), epochs=2, batch_size=20))
    graph.add(prior_cls("gmm", n_clusters=3, dim=2, **prior_kw))
    graph.observe("images", "vae.x")
    graph.head_to_tail(upper="gmm.x", lower="vae.z")
    return graph


def test_one_flag_switches_a_graph_between_alternate_and_joint():
    # the same classes, untouched, under both modes; with a Gibbs GMM (not differentiable) the
    # joint trainer steps it between rounds; with the mixture it learns by gradient
    for prior_cls, kw in ((GMM, {"sweeps": 3}), (MixturePrior, {"em_iterations": 5})):
        for mode in ("alternate", "joint"):
            graph = _vae_graph(prior_cls, **kw)
            options = {"warmup": 1, "epochs": 2, "batch_size": 20} if mode == "joint" else {}
            history = train(graph, 3, mode=mode, progress=False, labels=torch.arange(60) % 3, **options)
            assert [h["mode"] for h in history] == (["alternate"] * 3 if mode == "alternate"
                                                    else ["alternate", "joint", "joint"])
            assert graph.node("gmm").predict().shape == (60,)
            assert graph.node("vae").n_updates == 3


def test_after_a_joint_round_the_mixture_speaks_for_the_latent_published_in_that_round():
    # the trainer's metrics and the mixture's messages after a joint round must come from the
    # latent the VAE published at the end of that round, not from the one the mixture received
    # before it (which the round's gradient steps have since moved)
    from serket.metrics import clustering_report

    labels = torch.arange(60) % 3
    graph = _vae_graph(MixturePrior, em_iterations=5)
    gmm = graph.node("gmm")
    checked = []

    def check(trainer, record):
        latent = graph.messages()[("gmm", "vae")]["up"]  # what the VAE published this round
        fresh = gmm.infer(x=latent)
        predicted = gmm.predict(x=latent)
        checked.append((record["mode"], torch.equal(gmm.predict(), predicted),
                        torch.equal(gmm.publish()["c"].probs, fresh["c"].probs),
                        torch.equal(gmm.publish()["x"].mean, fresh["x"].mean),
                        record["metrics"]["gmm"] == clustering_report(labels, predicted)))

    train(graph, 4, mode="joint", warmup=1, epochs=3, batch_size=20, progress=False, labels=labels,
          callbacks=[check])
    assert [c[0] for c in checked] == ["alternate", "joint", "joint", "joint"]
    assert all(all(c[1:]) for c in checked), checked


def test_joint_training_resumes_exactly(tmp_path):
    def run(rounds, directory):
        graph = _vae_graph(MixturePrior, em_iterations=5)
        JointTrainer(graph, rounds=rounds, warmup=1, epochs=2, batch_size=20, checkpoint_dir=directory,
                     progress=False).run()
        return graph
    whole = run(4, tmp_path / "a")
    run(2, tmp_path / "b")
    resumed = run(4, tmp_path / "b")
    for (name, p), (_, q) in zip(whole.node("vae").state_dict().items(), resumed.node("vae").state_dict().items()):
        if isinstance(p, torch.Tensor):
            assert torch.equal(p, q), name
    assert torch.equal(whole.node("gmm").means, resumed.node("gmm").means)


def test_joint_training_errors_are_named():
    graph = Graph(seed=0)
    graph.add(Observation("d", torch.randn(30, 2)))
    graph.add(GMM("gmm", n_clusters=2, dim=2))
    graph.observe("d", "gmm.x")
    with pytest.raises(GraphError, match="at least one differentiable module"):
        JointTrainer(graph, rounds=1)
    with pytest.raises(ValueError, match="mode must be"):
        train(graph, 1, mode="both")
    toy, _ = _toy()
    with pytest.raises(Exception, match="warmup"):
        train(toy, 1, mode="joint", warmup=0, progress=False)


def test_multimodal_benchmark_smoke(tmp_path, capsys, golden_figures):
    from serket.bench.cli import main

    assert main(["bench", "multimodal", "--quick", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    golden_figures("multimodal", tmp_path / "results.json")
    assert lines[0].startswith("data: images MNIST")
    table = "\n".join(lines)
    for row in ("| mvae-alternate |", "| mvae-joint |", "| jmvae-alternate |", "| jmvae-joint |", "speech→image"):
        assert row in table
    for name in ("results.json", "results.md", "accuracy_per_round.png", "speech_to_image_jmvae-joint.png",
                 "latent_mvae-alternate.png", "graph.png", "loss_terms.json"):
        assert (tmp_path / name).stat().st_size > 0, name


def test_multimodal_example_runs_as_a_smoke_test(load_example):
    example = load_example("jmvae_gmm_joint.py")
    results = example.main(["--per-class", "10", "--rounds", "2", "--epochs", "1"])
    assert set(results) == {"alternate", "joint"} and all(0.0 <= a <= 1.0 for a in results.values())


def test_a_checkpoint_is_resumed_only_in_its_own_mode(tmp_path):
    from serket.errors import CheckpointError

    graph = _vae_graph(MixturePrior, em_iterations=5)
    JointTrainer(graph, rounds=2, warmup=1, epochs=1, batch_size=20, checkpoint_dir=tmp_path, progress=False).run()
    with pytest.raises(CheckpointError, match="'mode': 'joint'"):
        train(_vae_graph(MixturePrior, em_iterations=5), 3, mode="alternate", checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="'epochs': 1"):
        train(_vae_graph(MixturePrior, em_iterations=5), 3, mode="joint", warmup=1, epochs=2, batch_size=20,
              checkpoint_dir=tmp_path, progress=False)


def test_an_mvae_with_missing_modalities_trains_jointly_with_a_mixture():
    from serket.module import Rows
    from serket.modules.multimodal import MVAE

    gen = torch.Generator().manual_seed(0)
    image = (torch.rand(40, 16, generator=gen) > 0.5).float()
    speech = torch.randn(40, 6, generator=gen)
    mask = torch.ones(40, 2)
    mask[::2, 1] = 0.0
    graph = Graph(seed=0)
    graph.add(Observation("image", image))
    graph.add(Observation("speech", speech))
    graph.add(Observation("mask", mask))
    mvae = graph.add(MVAE("mvae", {"image": 16, "speech": 6}, likelihoods={"image": "bernoulli"}, z_dim=2,
                          hidden=(8,), epochs=1, batch_size=20))
    prior = graph.add(MixturePrior("gmm", n_clusters=2, dim=2, em_iterations=5))
    for name in ("image", "speech", "mask"):
        graph.observe(name, f"mvae.{name}")
    graph.head_to_tail(upper="gmm.x", lower="mvae.z")
    seen = []
    original = prior.joint_forward

    def spy(idx, live, scored):
        seen.append(live["x"])
        return original(idx, live, scored)

    prior.joint_forward = spy
    history = train(graph, 2, mode="joint", warmup=1, epochs=1, batch_size=20, progress=False)
    assert history[-1]["mode"] == "joint" and mvae.n_updates == 2
    rows = seen[0]
    assert isinstance(rows, Rows) and rows.values.shape == (3 * 20, 2) and rows.values.requires_grad
    # the speech-only term's rows of items without speech carry no weight
    assert set(rows.weights[40:].tolist()) == {0.0, 1.0}


def test_joint_training_can_start_without_a_warmup():
    gen = torch.Generator().manual_seed(0)
    graph = Graph(seed=0)
    graph.add(Observation("images", (torch.rand(30, 16, generator=gen) > 0.5).float()))
    vae = graph.add(VAE("vae", x_dim=16, z_dim=2, hidden=(8,), batch_size=10))
    graph.observe("images", "vae.x")
    history = train(graph, 2, mode="joint", epochs=3, batch_size=10, progress=False)
    assert [h["mode"] for h in history] == ["joint", "joint"]
    assert len(vae.loss_history_) == 2 and vae.loss_history_[1]["loss"] < vae.loss_history_[0]["loss"]
