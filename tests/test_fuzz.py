"""Fuzz: random small valid graphs of every module and connection kind (``random_graphs.py``).

Each graph trains for two rounds publishing only finite messages, and a fresh copy resumed from
the checkpoint written after round 1 ends with exactly the messages and predictions of the
uninterrupted run. A failure names the graph (its description and seed); replay one with
``python benchmarks/fuzz_graphs.py --replay SEED``, which also runs the long fuzz.
"""

import random

import pytest
import torch

from random_graphs import (REQUIRED_TAGS, FuzzGraph, GaussianExpert, check_graph, graph_seed, nonfinite_messages,
                           random_graph)
from serket.connections import Observation
from serket.messages import NBest

SEED = 0
N_GRAPHS = 100


def _graph(index):
    return random_graph(random.Random(graph_seed(SEED, index)))


@pytest.mark.parametrize("index", range(N_GRAPHS))
def test_a_random_valid_graph_trains_stays_finite_and_resumes_exactly(index, tmp_path):
    result = check_graph(_graph(index), tmp_path)
    assert result.ok, result.report()


def test_the_random_graphs_cover_every_module_and_connection_kind():
    tags = set().union(*(_graph(index).tags for index in range(N_GRAPHS)))
    assert REQUIRED_TAGS <= tags, f"no graph has {sorted(REQUIRED_TAGS - tags)}"


class _Forgetful(GaussianExpert):
    """A toy whose checkpoint forgets a random stream it draws from: a resumed run must differ."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._stream = torch.Generator().manual_seed(0)

    def update(self):
        super().update()
        self.mean_ = self.mean_ + torch.randn(self.mean_.shape, generator=self._stream)


def test_the_checks_notice_a_run_that_does_not_resume_exactly(tmp_path):
    x = torch.randn(10, 2, generator=torch.Generator().manual_seed(0))
    steps = [("add", Observation, ["d", x], {}), ("add", _Forgetful, ["e1", 2], {}),
             ("add", GaussianExpert, ["e2", 2], {}), ("observe", ["d", "e1.x"], {}), ("observe", ["d", "e2.x"], {}),
             ("head_to_head", ["poe"], {"proposer": "e1.z", "weighter": "e2.z"})]
    graph = FuzzGraph(seed=-1, n_items=10, graph_seed=0, mode="alternate", train_options={}, schedule_repeats=1,
                      steps=steps)
    result = check_graph(graph, tmp_path)
    assert result.finished and not result.nonfinite and not result.ok
    assert "message e1->poe down" in result.mismatches


def test_the_checks_notice_a_non_finite_message():
    graph = FuzzGraph(seed=-1, n_items=2, graph_seed=0, mode="alternate", train_options={}, schedule_repeats=1,
                      steps=[("add", Observation, ["d", torch.zeros(2, 2)], {}), ("add", GaussianExpert, ["e", 2], {}),
                             ("observe", ["d", "e.x"], {})]).build()
    hypotheses = torch.tensor([[[0, 1], [-1, -1]], [[1, 1], [0, -1]]])
    # all padding may score -inf; a real hypothesis may not
    scores = torch.tensor([[-1.0, float("-inf")], [-2.0, float("-inf")]])
    graph.nx.edges["e", "d"]["up"] = NBest(hypotheses, scores)
    assert nonfinite_messages(graph) == ["e->d up nbest.log_scores: 1 non-finite of 4"]
