"""examples/minimal_module.py: a complete module in under 40 lines that passes check_module, whose
EM is the closed form, and that joins a graph tied tail-to-tail with a GMM."""

from __future__ import annotations

import ast
from pathlib import Path

import torch

from serket.messages import Categorical, Samples
from serket.module import settings
from serket.testing import check_module

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "minimal_module.py"


def test_the_minimal_module_is_under_40_lines():
    tree = ast.parse(EXAMPLE.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "SoftKMeans")
    imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    lines = cls.end_lineno - cls.lineno + 1 + len(imports)
    assert lines <= 40, f"SoftKMeans and its imports take {lines} lines"


def test_it_passes_the_conformance_check(load_example):
    example = load_example("minimal_module.py")
    first, _, _ = example.two_views(seed=0)
    uniform = Categorical(torch.full((first.shape[0], 4), 0.25))
    check_module(lambda: example.SoftKMeans("k", n_clusters=4, dim=2, seed=1), {"x": Samples(first)})
    check_module(lambda: example.SoftKMeans("k", n_clusters=4, dim=2, seed=1), {"x": Samples(first), "c": uniform})
    module = example.SoftKMeans("k", n_clusters=4, dim=2, iterations=7)
    assert settings(module) == {"n_clusters": 4, "dim": 2, "iterations": 7, "seed": 0}
    assert "iterations=7" in repr(module)


def test_one_em_step_is_the_closed_form(load_example):
    # with unit variances the E step is softmax(-|x - m_k|^2 / 2 + log prior) and the M step the
    # responsibility-weighted mean; one iteration from known centres, computed by hand
    example = load_example("minimal_module.py")
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [4.0, 4.0], [5.0, 4.0]])
    prior = torch.tensor([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8], [0.5, 0.5]])
    module = example.SoftKMeans("k", n_clusters=2, dim=2, iterations=1)
    centres = torch.tensor([[0.0, 1.0], [4.0, 3.0]])
    module.centres_ = centres.clone()
    module.fit(x=x, c=Categorical(prior))
    d2 = ((x[:, None, :] - centres[None]) ** 2).sum(-1)
    r = torch.softmax(-d2 / 2 + prior.log(), 1)
    expected = (r.T @ x) / r.sum(0)[:, None]
    torch.testing.assert_close(module.centres_, expected)
    message = module.publish()["c"].probs
    d2_new = ((x[:, None, :] - expected[None]) ** 2).sum(-1)
    torch.testing.assert_close(message, torch.softmax(-d2_new / 2, 1))  # no prior in the message
    assert module.n_updates == 1


def test_tied_with_a_gmm_both_views_agree(load_example):
    example = load_example("minimal_module.py")
    tied = example.main(seed=0, rounds=5)
    # each 2-D view alone confuses neighbouring categories; tied, both modules find them.
    # Measured (seeds 0-3, 5 rounds): tied 93.2-94.2 (k-means) and 93.0-95.0 (GMM), separate
    # 82.0-84.8 and 65.2-71.0
    assert tied["kmeans"] >= 0.90 and tied["gmm"] >= 0.90, tied
    from serket.connections import Observation
    from serket.graph import Graph
    from serket.modules.gmm import GMM
    from serket.training import train_alternate

    first, second, labels = example.two_views(seed=0)
    alone = Graph(seed=0)
    alone.add(Observation("first", first))
    alone.add(Observation("second", second))
    alone.add(example.SoftKMeans("kmeans", n_clusters=4, dim=2, seed=0))
    alone.add(GMM("gmm", n_clusters=4, dim=2, seed=0))
    alone.observe("first", "kmeans.x")
    alone.observe("second", "gmm.x")
    separate = train_alternate(alone, 5, labels=labels, progress=False)[-1]["metrics"]
    for name in ("kmeans", "gmm"):
        assert tied[name] >= separate[name]["accuracy"] + 0.05, (name, tied, separate)
