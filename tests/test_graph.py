import numpy as np
import pytest
import torch
from scipy import stats

from serket.connections import (
    HeadToHead,
    Observation,
    TailToTail,
    align_permutation,
    product_of_gaussians,
    sir_resample,
)
from serket.errors import GraphError, MessageError, PortError
from serket.graph import Graph
from serket.messages import Categorical, Gaussian, NBest


def test_schedule_runs_children_first_and_messages_flow(toy_chain):
    g = toy_chain()
    g.validate()
    assert g.schedule() == ["obs", "proj", "cat"]
    for name in g.schedule():
        g.step(name)
    msgs = g.messages()
    assert msgs[("cat", "proj")]["up"].kind == "samples"
    assert msgs[("cat", "proj")]["down"].kind == "gaussian"
    assert msgs[("proj", "obs")]["up"].n_items == 20
    g.step("proj")  # now receives the prior from cat
    assert "z" in g.node("proj").inbox


def test_no_feedback_keeps_the_prior_away(toy_chain):
    g = toy_chain(feedback=False)
    for _ in range(2):
        for name in g.schedule():
            g.step(name)
    assert "z" not in g.node("proj").inbox


def test_unknown_port_and_node_are_named(toy_modules):
    Proj, Cat = toy_modules
    g = Graph()
    g.add(Proj("proj"))
    g.add(Cat("cat"))
    with pytest.raises(GraphError, match="'proj'.*has no port 'w'"):
        g.head_to_tail(upper="cat.x", lower="proj.w")
    with pytest.raises(GraphError, match="no node 'gmm'"):
        g.head_to_tail(upper="gmm.x", lower="proj.z")
    with pytest.raises(GraphError, match="node.port"):
        g.head_to_tail(upper="cat", lower="proj.z")
    with pytest.raises(GraphError, match="already has a node named 'cat'"):
        g.add(Cat("cat"))


def test_incompatible_ports_and_sizes(toy_modules):
    Proj, Cat = toy_modules
    g = Graph()
    g.add(Proj("a"))
    g.add(Proj("b"))
    g.head_to_tail(upper="a.x", lower="b.z")  # b.z sends samples, a.x accepts samples, but a.x sends nothing
    with pytest.raises(GraphError, match=r"a\.x sends \[\] but b\.z accepts \['gaussian'\]"):
        g.validate()
    g2 = Graph()
    g2.add(Proj("p", z_dim=3))
    g2.add(Cat("c", z_dim=2))
    g2.head_to_tail(upper="c.x", lower="p.z")
    with pytest.raises(GraphError, match=r"sizes do not fit \(2 vs 3\)"):
        g2.validate()


def test_unmediated_cycle_is_refused(toy_modules):
    Proj, Cat = toy_modules
    g = Graph()
    g.add(Cat("a"))
    g.add(Proj("b", x_dim=2))
    g.head_to_tail(upper="a.x", lower="b.z")
    # a second head-to-tail connection back from b to a closes a cycle
    g.head_to_tail(upper="b.x", lower="a.x")
    with pytest.raises(GraphError, match="cycle not mediated by a combiner: (a -> b -> a|b -> a -> b)"):
        g.validate()


def test_observation_rejects_bad_data():
    with pytest.raises(GraphError, match="empty"):
        Observation("obs", torch.zeros(0, 3))
    with pytest.raises(MessageError, match="non-finite"):
        Observation("obs", torch.tensor([[1.0, float("inf")]]))


def test_user_schedule_is_checked(toy_chain):
    g = toy_chain()
    with pytest.raises(GraphError, match="unknown nodes \\['vae'\\]"):
        g.check_schedule(["obs", "vae"])
    with pytest.raises(GraphError, match="never updates modules \\['cat'\\]"):
        g.check_schedule(["obs", "proj"])


def test_summary_and_drawing(toy_chain, tmp_path):
    from serket.bench.drawing import draw_graph  # the graph does not draw itself

    g = toy_chain()
    text = g.summary()
    assert "head_to_tail" in text and "schedule: obs, proj, cat" in text
    # each node with its type and ports, as the graph reads them from the node
    assert "proj: NoisyProjection\n  port x[4] (sends -; accepts samples)\n  port z[2]" in text
    assert "obs: Observation\n  port out[4] (sends samples; accepts -)" in text
    draw_graph(g, tmp_path / "g.png")
    draw_graph(g, tmp_path / "g.dot")
    assert (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"
    assert '"cat" -> "proj"' in (tmp_path / "g.dot").read_text()


def test_alignment_recovers_a_known_permutation():
    gen = torch.Generator().manual_seed(0)
    k, n = 6, 300
    labels = torch.randint(k, (n,), generator=gen)
    reference = torch.softmax(3 * torch.nn.functional.one_hot(labels, k).float() + torch.randn(n, k, generator=gen), 1)
    perm = torch.randperm(k, generator=gen)
    other = torch.empty_like(reference)
    other[:, perm] = torch.softmax(2 * torch.nn.functional.one_hot(labels, k).float() + torch.randn(n, k, generator=gen), 1)
    assert torch.equal(align_permutation(reference, other), perm)


def test_alignment_beats_greedy_matching():
    # overlap = reference.T @ other = [[5, 4], [4, 0]]: greedy takes the largest entry (0,0)=5 and is
    # left with (1,1)=0, total 5; the optimum pairs 0-1 and 1-0 for a total of 8
    reference = torch.tensor([[1.0, 0.0]] * 9 + [[0.0, 1.0]] * 4)
    other = torch.tensor([[5 / 9, 4 / 9]] * 9 + [[1.0, 0.0]] * 4)
    assert torch.allclose(reference.T @ other, torch.tensor([[5.0, 4.0], [4.0, 0.0]]))
    perm = align_permutation(reference, other)
    assert perm.tolist() == [1, 0]


def test_tail_to_tail_sends_product_of_the_others():
    c = TailToTail("cat", 3, smoothing=0.0)
    for m in ("a", "b", "c"):
        c.add_member(m)
    pa = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    pb = torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]])
    pc = torch.tensor([[0.7, 0.2, 0.1], [0.3, 0.3, 0.4]])
    for m, p in zip("abc", (pa, pb, pc)):
        c.receive(m, Categorical(p))
    c.update()
    out = c.publish()
    expected_a = pb * pc / (pb * pc).sum(1, keepdim=True)
    assert torch.allclose(out["a"].probs, expected_a, atol=1e-6)


def test_tail_to_tail_returns_priors_in_each_members_label_order():
    gen = torch.Generator().manual_seed(1)
    n, k = 200, 4
    labels = torch.randint(k, (n,), generator=gen)
    onehot = torch.nn.functional.one_hot(labels, k).float()
    pa = torch.softmax(4 * onehot + torch.randn(n, k, generator=gen), 1)
    perm = torch.tensor([2, 0, 3, 1])
    pb = torch.empty_like(pa)
    pb[:, perm] = torch.softmax(4 * onehot + torch.randn(n, k, generator=gen), 1)
    c = TailToTail("cat", k, smoothing=0.0)
    c.add_member("a")
    c.add_member("b")
    c.receive("a", Categorical(pa))
    c.receive("b", Categorical(pb))
    c.update()
    # b's prior comes from a, expressed in b's labels: its argmax must agree with b's own posterior mostly
    agree = (c.publish()["b"].probs.argmax(1) == pb.argmax(1)).float().mean()
    assert agree > 0.9


def test_product_of_gaussians_matches_closed_form():
    m1, v1 = torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 4.0]])
    m2, v2 = torch.tensor([[2.0, -1.0]]), torch.tensor([[1.0, 1.0]])
    mean, var = product_of_gaussians([m1, m2], [v1, v2], prior_mean=torch.zeros(1, 2), prior_var=torch.ones(1, 2))
    # precisions 1+1+1 = 3 and 1/4+1+1 = 2.25; means (0+2+0)/3, (1/4 - 1 + 0)/2.25
    assert torch.allclose(var, torch.tensor([[1 / 3, 1 / 2.25]]))
    assert torch.allclose(mean, torch.tensor([[2 / 3, -0.75 / 2.25]]))


def test_sir_resampling_frequencies_match_weights():
    weights = torch.tensor([0.5, 0.3, 0.15, 0.05])
    n = 20000
    log_w = torch.log(weights).expand(n, 4)
    idx = sir_resample(torch.zeros(n, 4), log_w, torch.Generator().manual_seed(0))
    counts = np.bincount(idx.numpy(), minlength=4)
    chi2 = stats.chisquare(counts, weights.numpy() * n)
    assert chi2.pvalue > 0.001, (counts, chi2)


def test_head_to_head_resamples_by_word_probabilities():
    node = HeadToHead("w", seed=0)
    n = 4000
    hyps = torch.tensor([[[0, 1], [2, -1]]]).expand(n, 2, 2).clone()  # "0 1" or "2"
    node.receive("proposer", NBest(hyps, torch.zeros(n, 2)))
    probs = torch.tensor([[0.5, 0.4, 0.1]]).expand(n, 3)
    node.receive("weighter", Categorical(probs))
    node.update()
    chosen = node.chosen_.float().mean().item()
    # weights: 0.5 * 0.4 = 0.2 for the first, 0.1 for the second -> P(second) = 1/3
    assert abs(chosen - 1 / 3) < 3 * (1 / 3 * 2 / 3 / n) ** 0.5 + 1e-3
    out = node.publish()["proposer"]
    assert out.hypotheses.shape == (n, 1, 2)
    node.receive("weighter", Categorical(torch.tensor([[0.5, 0.5]]).expand(n, 2)))
    with pytest.raises(MessageError, match="vocabulary has 2 words"):
        node.update()


def test_head_to_head_sends_the_weighter_expected_word_counts():
    node = HeadToHead("w", vocab_size=4)
    hyps = torch.tensor([[[0, 1], [2, -1]], [[3, 3], [1, -1]]])
    scores = torch.log(torch.tensor([[0.75, 0.25], [0.5, 0.5]]))
    node.receive("proposer", NBest(hyps, scores))
    node.update()  # no weights yet: only the bag of words goes out
    out = node.publish()
    assert set(out) == {"weighter"}
    expected = torch.tensor([[0.75, 0.75, 0.25, 0.0], [0.0, 0.5, 0.0, 1.0]])
    assert torch.allclose(out["weighter"].counts, expected)


def test_tail_to_tail_sends_a_late_member_the_product_of_those_that_reported():
    c = TailToTail("cat", 3, smoothing=0.0)
    for m in ("a", "b", "c"):
        c.add_member(m)
    pa = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    c.receive("a", Categorical(pa))
    c.update()
    assert set(c.publish()) == {"b", "c"}  # a lone member gets nothing from itself
    torch.testing.assert_close(c.publish()["b"].probs, pa)
    pb = torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]])
    c.receive("b", Categorical(pb))
    c.update()
    out = c.publish()
    torch.testing.assert_close(out["c"].probs, pa * pb / (pa * pb).sum(1, keepdim=True))
    torch.testing.assert_close(out["a"].probs, pb)


@pytest.mark.parametrize("length, short", [(9, None), (220, 30)])
def test_head_to_head_scores_many_items_as_one_block_would(length, short):
    """Items are scored a block at a time (memory), each block without the padding none of its
    items uses (time: one long utterance pads the whole message); each figure is what the whole
    at once gives, whatever the integer type of the word ids."""
    gen = torch.Generator().manual_seed(3)
    n, b, vocab = 700, 6, 5
    hyps = torch.randint(0, vocab, (n, b, length), generator=gen)
    hyps[torch.rand(n, b, length, generator=gen) < 0.3] = -1
    if short is not None:  # every item short but one, in the first block
        hyps[:, :, short:] = -1
        hyps[5, 2, :] = torch.randint(0, vocab, (length,), generator=gen)
        hyps[7, :, 10:26] = -1  # a gap in every hypothesis of an item, then a word after it
        hyps[7, 1, 25] = 3
    hyps[:, 0, 0] = 1  # every hypothesis has a word
    probs = torch.softmax(torch.randn(n, vocab, generator=gen), 1)
    scores = torch.randn(n, b, generator=gen)
    valid = hyps >= 0
    # the whole at once
    word_logp = torch.gather(torch.log(probs.clamp_min(1e-30)), 1, hyps.clamp_min(0).flatten(1)).view_as(hyps)
    log_w = (word_logp * valid).sum(dim=2)
    bag = torch.zeros(n, vocab).scatter_add_(
        1, hyps.clamp_min(0).reshape(n, -1), (torch.softmax(scores, 1).unsqueeze(2) * valid).reshape(n, -1))
    reference = torch.multinomial(torch.softmax(log_w, 1), 1, generator=torch.Generator().manual_seed(0)).squeeze(1)
    for dtype in (torch.int64, torch.int16):
        node = HeadToHead("w", vocab_size=vocab, seed=0)
        node.receive("proposer", NBest(hyps.to(dtype), scores))
        node.update()
        assert torch.equal(node.publish()["weighter"].counts, bag)
        node.receive("weighter", Categorical(probs))
        node.update()
        assert torch.equal(node.chosen_, reference)
        sent = node.publish()["proposer"]
        # a sum over fewer padding zeros may round otherwise in the last bit
        assert torch.allclose(sent.log_scores.squeeze(1), log_w[torch.arange(n), reference], rtol=1e-6, atol=0)
        if short is None:
            assert torch.equal(sent.log_scores.squeeze(1), log_w[torch.arange(n), reference])
        assert sent.hypotheses.dtype == dtype


def test_head_to_head_blocks_keep_every_word_of_an_item_with_a_gap():
    """Blocks cut the padding after an item's last word, wherever its gaps are."""
    from serket.connections import _blocks_by_length

    hyps = torch.full((3, 2, 8), -1)
    hyps[0, 0, 0], hyps[0, 1, 6] = 1, 2  # a gap of five columns, then a word
    hyps[1, :, :3] = 4
    (index, block), = _blocks_by_length(hyps)
    assert block.shape[2] == 7 and sorted(index.tolist()) == [0, 1, 2]
    kept = {int(i): block[k] for k, i in enumerate(index)}
    assert torch.equal(kept[0], hyps[0, :, :7]) and torch.equal(kept[1], hyps[1, :, :7])
    assert index.tolist()[0] == 2  # ordered by length: the empty item first
