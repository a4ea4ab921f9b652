"""Drawing graphs and plotting rounds: what a reader sees, checked through the drawing's data."""

import pytest
import torch

from serket.errors import GraphError
from serket.messages import Sequences
from serket.bench.drawing import draw_graph, graph_layout, graph_to_dot, layout_problems
from serket.bench.reporting import plot_rounds, rounds_figure


@pytest.fixture(scope="module")
def tiny_data():
    gen = torch.Generator().manual_seed(0)
    n = 12
    images = torch.rand(n, 784, generator=gen)
    sequences = Sequences(torch.randn(n, 5, 3, generator=gen), torch.full((n,), 5))
    return images, sequences


@pytest.fixture(scope="module")
def neuro_serket_graphs(tiny_data):
    from serket.graphs.neuro_serket import CONFIGURATIONS, build_neuro_serket

    images, sequences = tiny_data
    return {c: build_neuro_serket(images, sequences, configuration=c, n_units=4, n_categories=3, z_dim=2,
                                  vae={"hidden": (8,)}) for c in CONFIGURATIONS}


def _edge(layout, parent, child):
    (edge,) = [e for e in layout.edges if (e.parent, e.child) == (parent, child)]
    return edge


def test_graph_lists_its_connections_with_kind_and_blocked_direction(toy_chain):
    g = toy_chain(feedback=False, n_items=10)
    assert g.roles() == {"obs": "observation", "proj": "module", "cat": "module"}
    data, link = g.connections()
    assert (data.parent, data.child, data.kind, data.blocked) == ("proj", "obs", "data", "down")
    assert (link.parent, link.parent_port, link.child, link.child_port) == ("cat", "x", "proj", "z")
    assert link.kind == "head_to_tail" and link.blocked == "down" and not link.two_way
    assert toy_chain(n_items=10).connections()[1].two_way


def test_a_blocked_link_is_dashed_with_one_arrow_and_a_linked_one_solid_both_ways(toy_chain):
    one_way = graph_layout(toy_chain(feedback=False, n_items=10))
    two_way = graph_layout(toy_chain(feedback=True, n_items=10))
    blocked = _edge(one_way, "cat", "proj")
    # the prior (cat -> proj) is switched off: messages reach the upper module only
    assert blocked.linestyle == "dashed" and blocked.one_way and blocked.arrowstyle == "-|>"
    assert (blocked.start, blocked.end, blocked.arrows) == ("proj", "cat", "end")
    assert "one-way" in blocked.label and "head-to-tail" in blocked.label
    linked = _edge(two_way, "cat", "proj")
    assert linked.linestyle == "solid" and linked.arrows == "both" and linked.arrowstyle == "<|-|>"
    data = _edge(two_way, "proj", "obs")  # data flow from the observation up into the module, solid
    assert data.linestyle == "solid" and (data.start, data.end, data.arrows) == ("obs", "proj", "end")
    assert one_way.style() != two_way.style()


def test_the_four_neuro_serket_drawings_differ_where_the_architecture_does(neuro_serket_graphs, tmp_path):
    layouts = {c: graph_layout(g) for c, g in neuro_serket_graphs.items()}
    styles = {c: layout.style() for c, layout in layouts.items()}
    assert len(set(styles.values())) == 4

    def arrows(config, parent, child):
        e = _edge(layouts[config], parent, child)
        return e.arrows, e.linestyle

    one_way_up, two_way = ("end", "dashed"), ("both", "solid")
    # VAE <-> GMM: one-way in separate and asr, linked in halves and full
    assert [arrows(c, "gmm", "vae") for c in layouts] == [one_way_up, one_way_up, two_way, two_way]
    # the recogniser hears back from the LDA (SIR) in every row but separate
    assert [arrows(c, "asr", "words") for c in layouts] == [one_way_up, two_way, two_way, two_way]
    # the shared category sends its prior to the GMM and the LDA in full only
    for member in ("gmm", "lda"):
        assert [arrows(c, "category", member) for c in layouts] == [one_way_up] * 3 + [two_way]
    # everything else is drawn alike
    same = {(e.parent, e.child, e.arrows, e.linestyle) for e in layouts["separate"].edges}
    same &= {(e.parent, e.child, e.arrows, e.linestyle) for e in layouts["full"].edges}
    assert {(p, c) for p, c, _, _ in same} == {("vae", "images"), ("asr", "speech"), ("lda", "words")}
    # and the files differ too
    pngs = {c: draw_graph(neuro_serket_graphs[c], tmp_path / f"graph_{c}.png").read_bytes() for c in ("separate", "full")}
    assert pngs["separate"][:4] == b"\x89PNG" and pngs["separate"] != pngs["full"]


def test_rows_put_observations_below_modules_and_combiners_on_top(neuro_serket_graphs):
    layout = graph_layout(neuro_serket_graphs["full"])
    y = {n: d.y for n, d in layout.nodes.items()}
    observations = [n for n, d in layout.nodes.items() if d.role == "observation"]
    modules = [n for n, d in layout.nodes.items() if d.role == "module"]
    assert sorted(observations) == ["images", "speech"] and y["images"] == y["speech"]
    assert max(y[o] for o in observations) < min(y[m] for m in modules)
    assert y["vae"] < y["gmm"] and y["asr"] < y["words"] < y["lda"]  # the common child between its parents
    assert y["category"] > max(y[m] for m in modules)  # the shared category above everything
    assert y["gmm"] == y["lda"]
    assert layout.nodes["category"].shape == "diamond" and layout.nodes["words"].shape == "hexagon"
    assert {layout.nodes[n].shape for n in observations} == {"ellipse"}
    assert {layout.nodes[m].shape for m in modules} == {"box"}


def test_no_edge_crosses_another_or_a_node_in_the_ready_made_architectures(tiny_data, neuro_serket_graphs):
    from serket.graphs.lda_asr import build_lda_asr
    from serket.graphs.multimodal import build_jmvae_gmm, build_mvae_gmm
    from serket.graphs.vae_gmm import build_vae_gmm

    images, sequences = tiny_data
    speech = torch.randn(images.shape[0], 5)
    graphs = dict(neuro_serket_graphs)
    graphs["vae_gmm"] = build_vae_gmm(images, n_clusters=3, z_dim=2, vae={"hidden": (8,)})
    graphs["lda_asr"] = build_lda_asr(sequences, n_topics=3, n_units=4)
    graphs["mvae_gmm"] = build_mvae_gmm(images, speech, n_categories=3, z_dim=2)
    graphs["jmvae_gmm"] = build_jmvae_gmm(images, speech, n_categories=3, z_dim=2,
                                          mask=torch.ones(images.shape[0], 2))
    for name, g in graphs.items():
        layout = graph_layout(g)
        assert layout_problems(layout) == {"crossings": [], "through_nodes": []}, name
        for e in layout.edges:  # every link runs upward, labelled with its kind
            assert layout.nodes[e.start].y < layout.nodes[e.end].y, (name, e)
            assert e.label.startswith(e.kind.replace("_", "-")), (name, e.label)


def test_drawing_to_a_directory_is_refused_by_name_and_suffixes_decide_the_format(toy_chain, tmp_path):
    g = toy_chain(feedback=False, n_items=10)
    target = tmp_path / "results"
    target.mkdir()
    with pytest.raises(GraphError, match=f"{target}.*is a directory"):
        draw_graph(g, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]  # no results.png beside it
    with pytest.raises(GraphError, match="is a directory"):
        draw_graph(g, f"{tmp_path / 'not-yet'}/")  # a trailing slash means a directory, even one not made yet
    with pytest.raises(GraphError, match="use a .png, .svg, .pdf or .dot"):
        draw_graph(g, tmp_path / "graph.txt")
    written = draw_graph(g, tmp_path / "graph")
    assert written == tmp_path / "graph.png" and written.read_bytes()[:4] == b"\x89PNG"
    assert draw_graph(g, tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"
    dot = draw_graph(g, tmp_path / "g.dot").read_text()
    assert dot == graph_to_dot(g) + "\n"
    assert '"cat" -> "proj"' in dot and "style=dashed" in dot and "dir=back" in dot and "head-to-tail" in dot
    assert '"proj" -> "obs"' in dot and "rankdir=TB" in dot
    assert "style=dashed" not in graph_to_dot(toy_chain(feedback=True, n_items=10))


def test_plot_rounds_has_one_panel_per_node_integer_rounds_and_published_stars(tmp_path):
    curves = {node: {"separate": [[20.0, 25.0, 30.0], [22.0, 27.0, 29.0]], "full": [[50.0, 70.0, 80.0]] * 2}
              for node in ("gmm", "lda")}
    references = {"gmm": {"separate": 63.7, "full": 91.0}, "lda": {"separate": 27.5, "full": 93.7}}
    fig = rounds_figure(curves, title="toy", references=references, ylim=(0, 100))
    try:
        axes = fig.axes
        assert [ax.get_title() for ax in axes] == ["gmm", "lda"]
        for ax in axes:
            lo, hi = ax.get_xlim()
            ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
            assert ticks == [1, 2, 3] and all(float(t).is_integer() for t in ticks)
            stars = [line for line in ax.get_lines() if line.get_marker() == "*"]
            assert len(stars) == 2 and all(s.get_xdata()[0] > 3 for s in stars)  # beside the last round
            assert {t.get_text() for t in ax.texts} >= {"published"}
        assert {t.get_text() for t in axes[0].texts} >= {"63.7", "91.0"}
        legend_texts = {t.get_text() for t in fig.legends[0].get_texts()}
        assert {"separate", "full"} <= legend_texts  # one legend, below the panels, naming configurations
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    path = plot_rounds(curves, tmp_path / "rounds.png", title="toy", references=references)
    assert path.read_bytes()[:4] == b"\x89PNG"
    # a single panel of {label: runs}, as older callers pass it, still works
    flat = plot_rounds({"a": [[1.0, 2.0]], "b": [[2.0, 3.0]]}, tmp_path / "flat.png", references={"a": 2.5})
    assert flat.stat().st_size > 0


def test_round_ticks_are_whole_rounds_for_long_runs():
    from serket.bench.reporting import _round_ticks

    assert _round_ticks(1) == [1]
    assert _round_ticks(40) == [1, 5, 10, 15, 20, 25, 30, 35, 40]
    assert all(isinstance(t, int) for t in _round_ticks(200))
    assert len(_round_ticks(200)) <= 11
