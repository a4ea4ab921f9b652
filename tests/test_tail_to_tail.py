"""A fully linked toy graph: two modalities, each ambiguous alone, share one category."""

import torch

from serket.connections import Observation
from serket.graph import Graph
from serket.messages import Counts
from serket.modules.gmm import GMM
from serket.modules.lda import LDA
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


def _run(linked, seed=0):
    points, words, labels = _toy(seed=seed)
    g = Graph(seed=seed)
    g.add(Observation("points", points))
    g.add(Observation("words", Counts(words)))
    g.add(GMM("gmm", n_clusters=4, dim=2, sweeps=20, seed=seed))
    g.add(LDA("lda", n_topics=4, vocab_sizes=(10,), sweeps=30, tokens=20, seed=seed))
    g.observe("points", "gmm.x")
    g.observe("words", "lda.w0")
    # the LDA applies its prior to each of its 20 tokens: send it the 20th root
    g.tail_to_tail("category", ["gmm.c", "lda.c"], feedback=linked, prior_temperature={"lda": 1 / 20})
    return AlternateTrainer(g, rounds=5, labels=labels, progress=False).run()[-1]["metrics"]


def test_linked_modalities_beat_each_module_alone():
    for seed in (0, 1):
        alone, linked = _run(False, seed), _run(True, seed)
        # alone, each module sees only half the distinction between the four classes
        assert alone["gmm"]["accuracy"] < 0.6 and alone["lda"]["accuracy"] < 0.75
        assert linked["gmm"]["accuracy"] > 0.95 and linked["lda"]["accuracy"] > 0.95


def test_neuro_serket_benchmark_smoke(tmp_path, capsys):
    from serket.cli import main

    assert main(["bench", "neuro-serket", "--quick", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("data: images MNIST")
    table = "\n".join(lines)
    for row in ("| separate |", "| asr |", "| halves |", "| full |"):
        assert row in table
    for name in ("results.json", "accuracy_per_round.png", "confusion_full_gmm.png", "latent_full.png", "graph_full.png"):
        assert (tmp_path / name).stat().st_size > 0, name
