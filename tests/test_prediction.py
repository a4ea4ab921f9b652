"""A trained graph on new items: Graph.infer / predict / generate, and the model file.

The graphs here are built from the minimal module of examples/ (a soft k-means), so that the
expected answers can be written down: its category message is a softmax of squared distances
to its learned centres.
"""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from serket.connections import Observation
from serket.errors import CheckpointError, DataError, GraphError
from serket.graph import Graph
from serket.model import load_model, save_model
from serket.training import train_alternate

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def tied(load_example):
    """Two soft k-means on two views of the same items, tied tail-to-tail, trained 4 rounds."""
    example = load_example("minimal_module.py")
    first, second, labels = example.two_views(n_per_category=60, seed=3)
    graph = Graph(seed=3)
    graph.add(Observation("first", first))
    graph.add(Observation("second", second))
    graph.add(example.SoftKMeans("left", n_clusters=4, dim=2, seed=3))
    graph.add(example.SoftKMeans("right", n_clusters=4, dim=2, seed=3))
    graph.observe("first", "left.x")
    graph.observe("second", "right.x")
    graph.tail_to_tail("category", ["left.c", "right.c"])
    graph.validate()
    train_alternate(graph, 4, progress=False)
    return graph, example, first, second, labels


def _soft_kmeans_posterior(x, centres):
    return torch.softmax(-0.5 * torch.cdist(x, centres).square(), 1)


def test_infer_on_new_items_is_the_closed_form_and_learns_nothing(tied):
    graph, _, first, _, _ = tied
    left = graph.node("left")
    before = {k: v.clone() for k, v in left._learned().items() if isinstance(v, torch.Tensor)}
    inbox = dict(left.inbox)
    new = first[:7] + 0.25
    out = left.infer(x=new)
    torch.testing.assert_close(out["c"].probs, _soft_kmeans_posterior(new, left.centres_))
    assert torch.equal(left.predict(x=new), _soft_kmeans_posterior(new, left.centres_).argmax(1))
    # a prior on the category port (a plain tensor is fine) multiplies the module's posterior
    prior = torch.softmax(torch.randn(7, 4, generator=torch.Generator().manual_seed(0)) * 3, 1)
    expected = (_soft_kmeans_posterior(new, left.centres_).log() + prior.log()).argmax(1)
    assert torch.equal(left.predict(x=new, c=prior), expected)
    for key, value in before.items():
        assert torch.equal(getattr(left, key), value), key
    assert left.inbox == inbox and left.n_updates == 4


def test_graph_predict_on_the_training_items_equals_what_training_predicts(tied):
    graph, _, first, second, _ = tied
    both = graph.predict({"first": first, "second": second})
    assert set(both) == {"left", "right", "category"}
    # the combiner's consensus from the members' messages on the same items and centres
    assert torch.equal(both["category"], graph.node("category").predict())
    # each member: its own posterior times the prior the combiner last sent it (computed from
    # the same final messages), as its category in training would be
    priors = graph.node("category").publish()
    for name in ("left", "right"):
        own = graph.node(name).publish()["c"].probs
        expected = (own.clamp_min(1e-30).log() + priors[name].probs.clamp_min(1e-30).log()).argmax(1)
        assert torch.equal(both[name], expected)


def test_each_subset_of_observations_reaches_its_own_side_and_the_shared_category(tied):
    graph, _, first, second, labels = tied
    from serket.metrics import clustering_accuracy

    only_first = graph.predict({"first": first})
    only_second = graph.predict({"second": second})
    assert set(only_first) == {"left", "category"} and set(only_second) == {"right", "category"}
    # one view alone: the shared category is that member's posterior in the combiner's labels
    perm = graph.node("category")._learned_permutation("left")
    assert torch.equal(only_first["category"], graph.node("left").infer(x=first)["c"].probs[:, perm].argmax(1))
    # both views together categorise better than either alone (each view is noisy alone)
    both = clustering_accuracy(labels, graph.predict({"first": first, "second": second})["category"])
    assert both > max(clustering_accuracy(labels, only_first["category"]),
                      clustering_accuracy(labels, only_second["category"]))


def test_new_data_errors_name_the_observation(tied):
    graph, _, first, second, _ = tied
    with pytest.raises(GraphError, match="'third' is not an observation"):
        graph.predict({"third": first})
    with pytest.raises(DataError, match="observation 'first'.*width 3"):
        graph.predict({"first": torch.zeros(5, 3)})
    with pytest.raises(DataError, match="differ in their number of items"):
        graph.predict({"first": first[:5], "second": second[:6]})
    with pytest.raises(DataError, match="at least one observation"):
        graph.predict({})
    with pytest.raises(DataError, match="infer needs new items"):
        graph.node("left").infer()


def test_a_node_without_infer_is_named(toy_chain):
    graph = toy_chain()
    train_alternate(graph, 1, progress=False)
    with pytest.raises(GraphError, match="node 'proj'.*cannot infer on new items"):
        graph.predict({"obs": torch.randn(3, 4)})


def test_a_saved_model_predicts_identically_in_a_fresh_process(tied, tmp_path):
    graph, _, first, second, _ = tied
    path = save_model(graph, tmp_path / "tied.model")
    expected = graph.predict({"first": first, "second": second})
    torch.save({"first": first, "second": second, "expected": expected}, tmp_path / "data.pt")
    script = textwrap.dedent(f"""
        import importlib.util, sys, torch
        import serket
        from serket.model import load_model
        spec = importlib.util.spec_from_file_location("minimal_module", {str(EXAMPLES / "minimal_module.py")!r})
        example = importlib.util.module_from_spec(spec); spec.loader.exec_module(example)
        data = torch.load({str(tmp_path / "data.pt")!r})
        graph = load_model({str(path)!r}, classes=[example.SoftKMeans])
        got = graph.predict({{"first": data["first"], "second": data["second"]}})
        assert set(got) == set(data["expected"]), (sorted(got), sorted(data["expected"]))
        for name, categories in data["expected"].items():
            assert torch.equal(got[name], categories), name
        print("identical")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "identical" in done.stdout, done.stderr[-2000:]


def test_a_model_file_is_verified_before_anything_is_loaded(tied, tmp_path, load_example):
    graph, example, first, _, _ = tied
    path = save_model(graph, tmp_path / "tied.model")
    # a class outside serket is never imported on the file's word
    with pytest.raises(CheckpointError, match="not part of serket: pass it"):
        load_model(path)
    raw = bytearray(path.read_bytes())
    raw[-100] ^= 0xFF
    tampered = tmp_path / "tampered.model"
    tampered.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="damaged"):
        load_model(tampered, classes=[example.SoftKMeans])
    with pytest.raises(CheckpointError, match="not a neuro-serket model"):
        (tmp_path / "other.model").write_bytes(b"hello\n")
        load_model(tmp_path / "other.model")
    loaded = load_model(path, classes=[example.SoftKMeans])
    assert torch.equal(loaded.predict({"first": first})["left"], graph.predict({"first": first})["left"])


def test_neuro_serket_on_held_out_pairs_saved_and_loaded_in_a_fresh_process(tmp_path):
    """The library's own architecture, trained briefly on real pairs: a saved model predicts the
    held-out items identically in another process from speech alone, images alone and both, and
    speech alone generates images that are the VAE's decodings of GMM component means."""
    from serket.audio import speech_sequences
    from serket.datasets import load_mnist_subset, load_speech, pair_by_digit
    from serket.graphs.neuro_serket import SCHEDULE, build_neuro_serket
    from serket.messages import Gaussian
    from serket.training import AlternateTrainer

    digits = load_speech("auto")
    test = digits.test_mask()

    def pairs(split, utterances, per_class):
        x, y = load_mnist_subset(per_class=per_class, seed=0, split=split)
        images_idx, speech_idx = pair_by_digit(y, utterances.labels, seed=0)
        picked = utterances.subset(speech_idx)
        return x[images_idx], speech_sequences(picked.waveforms, picked.rate, picked.speakers), y[images_idx]

    images, speech, labels = pairs("train", digits.subset(~test), 15)
    new_images, new_speech, new_labels = pairs("test", digits.subset(test), 5)
    graph = build_neuro_serket(images, speech, seed=0, n_units=16, vae={"epochs": 2, "first_epochs": 3},
                               gmm={"sweeps": 5}, asr={"n_best": 5}, lda={"sweeps": 10},
                               combiner={"evidence_weight": {"lda": 0.08}, "prior_exponent": {"lda": 0.01}})
    AlternateTrainer(graph, rounds=2, schedule=SCHEDULE, labels=labels, progress=False).run()

    subsets = {"speech": {"speech": new_speech}, "images": {"images": new_images},
               "both": {"images": new_images, "speech": new_speech}}
    expected = {name: graph.predict(data) for name, data in subsets.items()}
    assert set(expected["speech"]) == {"lda", "category"} and set(expected["images"]) == {"gmm", "category"}
    assert set(expected["both"]) == {"gmm", "lda", "category"}
    generated = graph.generate({"speech": new_speech}, "images").values
    vae, gmm = graph.node("vae"), graph.node("gmm")
    decodings = vae.infer(z=Gaussian(gmm.means_.float(), torch.ones_like(gmm.means_).float()))["x"].values
    difference = (generated[:, None] - decodings[None]).abs().amax(-1)  # (items, components)
    assert generated.shape == (new_labels.numel(), 784) and float(difference.min(1).values.max()) < 1e-5
    assert len({int(i) for i in difference.argmin(1)}) > 1

    path = save_model(graph, tmp_path / "neuro_serket.model")
    torch.save({"subsets": subsets, "expected": expected, "generated": generated}, tmp_path / "data.pt")
    script = textwrap.dedent(f"""
        import torch
        import serket
        from serket.model import load_model
        data = torch.load({str(tmp_path / "data.pt")!r}, weights_only=False)
        graph = load_model({str(path)!r})
        for name, subset in data["subsets"].items():
            got = graph.predict(subset)
            assert set(got) == set(data["expected"][name]), name
            for node, categories in data["expected"][name].items():
                assert torch.equal(got[node], categories), (name, node)
        assert torch.equal(graph.generate({{"speech": data["subsets"]["speech"]["speech"]}}, "images").values,
                           data["generated"])
        print("identical")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "identical" in done.stdout, done.stderr[-3000:]


def test_the_held_out_split_and_its_image_pairs():
    from serket.datasets import held_out_images, load_speech

    training, held_out = load_speech("auto").split()
    assert (len(training), len(held_out)) == (2700, 300)
    assert min(training.takes) == 5 and max(held_out.takes) == 4
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    images, utterances, digits = held_out_images(labels, seed=0)
    assert torch.equal(digits, labels[utterances]) and images.shape == (6, 784)
    assert sorted(utterances.tolist()) == list(range(6))
