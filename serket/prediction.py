"""A trained graph used on new items: recognition, categories and generation.

Training moves messages both ways over every connection; using a trained graph moves them one
way at a time, and nothing learns.

* **Recognition** (:func:`recognise`) carries new data from the observations given up through the
  graph: an observation's data to the module that explains it, a lower module's latent to the
  module above it (head-to-tail), a member's posterior to its shared category (tail-to-tail), a
  proposer's hypotheses through the common child to the weighter (head-to-head). Each node, in
  that order, runs :meth:`~serket.module.Node.infer` on what reached it; a node that nothing
  reached (its observation was not given) is skipped, so any subset of observations works.
* **Categories** (:func:`predict`): each node's category per new item, from what it inferred.
* **Generation** (:func:`generate`) carries the result down again to an observation that was not
  given: a shared category's prior to its members, an upper module's prior to the lower one,
  the lowest module's mean to the observation (speech alone -> the category -> the GMM
  component's mean -> the VAE's decoder -> an image).

:class:`~serket.graph.Graph` exposes these as ``graph.infer``, ``graph.predict`` and
``graph.generate``.
"""

from __future__ import annotations

from typing import NamedTuple

import networkx as nx
import torch

from .connections import DATA, HEAD_TO_HEAD, HEAD_TO_TAIL, TAIL_TO_TAIL, Observation
from .errors import DataError, GraphError, SerketError, with_context
from .messages import Message

__all__ = ["Recognition", "recognise", "predict", "generate"]


class Recognition(NamedTuple):
    """What each node was given (``inputs``) and what it inferred (``outputs``) on new items,
    ``{node: {port: Message}}``, for the nodes that recognition reached, in the order they ran."""

    inputs: dict[str, dict[str, Message]]
    outputs: dict[str, dict[str, Message]]


def _upward_routes(graph) -> list[tuple[str, str, str, str]]:
    """``(sender, sender port, receiver, receiver port)`` of every connection, in the direction
    recognition takes it."""
    routes = []
    for c in graph.connections():
        if c.kind in (DATA, HEAD_TO_TAIL, TAIL_TO_TAIL):  # the child explains, the parent hears
            routes.append((c.child, c.child_port, c.parent, c.parent_port))
        elif c.kind == HEAD_TO_HEAD and c.child_port == "proposer":
            routes.append((c.parent, c.parent_port, c.child, c.child_port))
        elif c.kind == HEAD_TO_HEAD:  # the common child shows the weighter what was proposed
            routes.append((c.child, c.child_port, c.parent, c.parent_port))
    return routes


def _order(graph, routes) -> list[str]:
    """The nodes in an order where every sender comes before its receivers (ties: insertion)."""
    flow = nx.DiGraph()
    flow.add_nodes_from(graph.nx.nodes)
    flow.add_edges_from((sender, receiver) for sender, _, receiver, _ in routes)
    position = {n: i for i, n in enumerate(graph.nx.nodes)}
    return list(nx.lexicographical_topological_sort(flow, key=position.__getitem__))


def _new_observations(graph, data: dict) -> dict[str, Message]:
    if not isinstance(data, dict) or not data:
        raise DataError("new data must be a dict {observation name: data} naming at least one observation")
    observations = [n for n, node in graph.nodes.items() if isinstance(node, Observation)]
    messages = {}
    for name, values in data.items():
        if name not in observations:
            raise GraphError(f"{name!r} is not an observation of this graph; its observations are {observations}")
        messages[name] = graph.node(name).new_items(values)
    counts = {name: m.n_items for name, m in messages.items()}
    if len(set(counts.values())) > 1:
        raise DataError(f"the new observations differ in their number of items: {counts}")
    return messages


def _infer(graph, name: str, given: dict) -> dict[str, Message]:
    try:
        return graph.node(name).infer(**given)
    except SerketError as error:
        raise with_context(error, f"node {name!r}, while it inferred on new items") from error


def recognise(graph, data: dict) -> Recognition:
    """Run the trained graph on new data, ``{observation name: data}`` for any non-empty subset
    of its observations (each as the observation was built: an (N, ...) tensor, or a message
    such as :class:`~serket.messages.Sequences`). Nothing learns."""
    routes = _upward_routes(graph)
    outputs: dict[str, dict[str, Message]] = {name: {"out": m} for name, m in _new_observations(graph, data).items()}
    inputs: dict[str, dict[str, Message]] = {}
    for name in _order(graph, routes):
        if name in outputs:
            continue  # an observation given new data
        given = {port: outputs[sender][sport] for sender, sport, receiver, port in routes
                 if receiver == name and sport in outputs.get(sender, {})}
        if not given:
            continue
        inputs[name] = given
        outputs[name] = _infer(graph, name, given)
    return Recognition(inputs, {n: outputs[n] for n in inputs})


def predict(graph, data: dict, recognition: Recognition | None = None) -> dict[str, torch.Tensor]:
    """The category of each new item, ``{node: (N,) tensor}``, for every node with categories
    that recognition reached (a module's own labels, the labels its ``predict()`` uses in
    training, with its shared category's prior where others reached the category too; a
    shared category's consensus)."""
    recognition = recognition or recognise(graph, data)
    # a member of a shared category that others reached too is also given the category's prior
    # (the product of the others' posteriors), as in training: its category is then the
    # item's, seen through every observation given
    priors: dict[str, dict[str, Message]] = {}
    for c in graph.connections():
        if c.kind == TAIL_TO_TAIL and c.blocked != "down" and c.child in recognition.inputs:
            prior = recognition.outputs.get(c.parent, {}).get(c.parent_port)
            if prior is not None:
                priors.setdefault(c.child, {})[c.child_port] = prior
    categories = {}
    for name, given in recognition.inputs.items():
        node = graph.node(name)
        if name in priors:
            given = {**given, **priors[name]}
            found = node._categories(given, _infer(graph, name, given))
        else:
            found = node._categories(given, recognition.outputs[name])
        if found is not None:
            categories[name] = found
    return categories


def generate(graph, data: dict, target: str) -> Message:
    """Data for observation ``target`` generated from new data for other observations.

    Recognition runs first. If the module that explains ``target`` inferred its data on the
    way up (a multimodal VAE decoding a missing modality), that is the answer. Otherwise the
    result travels down from where recognition ended: each node on the way to ``target`` that
    received a message from above (a shared category's prior, an upper module's prior) infers
    from it alone, and the module that explains ``target`` returns its mean.
    """
    node = graph.node(target)
    if not isinstance(node, Observation):
        raise GraphError(f"generate: {target!r} is not an observation of this graph")
    if target in data:
        raise GraphError(f"generate: {target!r} is given; generate it from the other observations")
    recognition = recognise(graph, data)
    explaining = [(c.parent, c.parent_port) for c in graph.connections() if c.kind == DATA and c.child == target]
    for module, port in explaining:
        if port in recognition.outputs.get(module, {}):
            return recognition.outputs[module][port]
    ancestors = nx.ancestors(graph.nx, target)
    downward: dict[str, dict[str, Message]] = {}
    for name in nx.topological_sort(graph.nx):
        if name not in ancestors:
            continue
        given = {}
        for parent, _, e in graph.nx.in_edges(name, data=True):
            if e["kind"] in (HEAD_TO_TAIL, TAIL_TO_TAIL) and e["parent_port"] in downward.get(parent, {}):
                given[e["child_port"]] = downward[parent][e["parent_port"]]
        if given:
            downward[name] = _infer(graph, name, given)
        elif name in recognition.outputs:
            downward[name] = recognition.outputs[name]
    for module, port in explaining:
        if port in downward.get(module, {}):
            return downward[module][port]
    raise GraphError(f"generate: nothing reached {target!r} from {sorted(data)}: no module above it "
                     f"received a message it could generate from")
