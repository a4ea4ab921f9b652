"""A trained graph as a file: saved once trained, loaded in another process to predict.

A model file is not a training checkpoint. A checkpoint resumes training of a graph that its
builder makes again, on the same data; a model file rebuilds the graph by itself, without the
training data, so that it can be used on new items (:meth:`~serket.graph.Graph.predict`).
It holds

* the architecture: each node's class and settings (:func:`serket.module.settings`) and the
  connections, replayed through the graph's own verbs when it is loaded;
* each node's state: its learned attributes and parameters and the last message on each port
  (a collapsed sampler's statistics come from them), but no observation's data.

The file is written like a checkpoint (atomically, one header line with the sha256 of the body)
and read with ``torch.load(weights_only=True)``: it holds tensors, numbers and strings, never
code. Classes are found by name only inside serket; a class of your own is found only when
you pass it to :func:`load_model` (``classes=[MyModule]``), so a file cannot make the loader
import anything else.

Example::

    save_model(graph, "digits.model")
    graph = load_model("digits.model")                  # in another process
    graph.predict({"speech": new_utterances})["lda"]    # a category per new utterance
"""

from __future__ import annotations

import importlib
from pathlib import Path

from .checkpoint import load_checkpoint, save_checkpoint
from .connections import DATA, HEAD_TO_HEAD, HEAD_TO_TAIL, TAIL_TO_TAIL, HeadToHead, Observation, TailToTail
from .errors import CheckpointError, ConfigError
from .graph import Graph, fingerprint_differences
from .module import Node, _setting_names, settings

__all__ = ["save_model", "load_model", "MODEL_FORMAT"]

MODEL_FORMAT = "neuro-serket-model/1"
_SAVE_AGAIN = "save the trained graph again (serket.model.save_model)"
# the combiner and head-to-head settings that their graph verbs take by name
_TAIL_TO_TAIL_OPTIONS = ("smoothing", "temperature", "prior_exponent", "evidence_weight", "restarts", "em_iterations")
_HEAD_TO_HEAD_OPTIONS = ("seed", "bag_weights")


def _class_name(cls) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _module_record(node) -> dict:
    found = settings(node)
    missing = [key for key in _setting_names(type(node)) if key not in found]
    if missing:
        raise ConfigError(f"cannot save module {node.name!r} ({type(node).__name__}) as a model: its settings "
                          f"{missing} are not plain data (numbers, strings, tuples, dicts), so it could not be rebuilt")
    return {"name": node.name, "class": _class_name(type(node)), "settings": found}


def _architecture(graph: Graph) -> dict:
    nodes = []
    for name, node in graph.nodes.items():
        if isinstance(node, Observation):
            kind, size = node.layout
            nodes.append({"name": name, "observation": {"kind": kind, "size": size}})
        elif not isinstance(node, (TailToTail, HeadToHead)):  # those are made by their connections
            nodes.append(_module_record(node))
    connections, made = [], set()
    for c in graph.connections():
        if c.kind == DATA:
            connections.append({"verb": "observe", "observation": c.child, "endpoint": f"{c.parent}.{c.parent_port}"})
        elif c.kind == HEAD_TO_TAIL:
            connections.append({"verb": "head_to_tail", "upper": f"{c.parent}.{c.parent_port}",
                                "lower": f"{c.child}.{c.child_port}", "feedback": c.blocked is None})
        elif c.kind == TAIL_TO_TAIL and c.parent not in made:
            made.add(c.parent)
            combiner = graph.node(c.parent)
            members = [m for m in graph.connections() if m.kind == TAIL_TO_TAIL and m.parent == c.parent]
            options = {key: getattr(combiner, key) for key in _TAIL_TO_TAIL_OPTIONS}
            connections.append({"verb": "tail_to_tail", "name": c.parent,
                                "endpoints": [f"{m.child}.{m.child_port}" for m in members],
                                "feedback": c.blocked is None, "options": options})
        elif c.kind == HEAD_TO_HEAD and c.child not in made:
            made.add(c.child)
            child = graph.node(c.child)
            parents = {m.child_port: m for m in graph.connections() if m.kind == HEAD_TO_HEAD and m.child == c.child}
            proposer, weighter = parents["proposer"], parents["weighter"]
            connections.append({"verb": "head_to_head", "name": c.child,
                                "proposer": f"{proposer.parent}.{proposer.parent_port}",
                                "weighter": f"{weighter.parent}.{weighter.parent_port}",
                                "feedback": proposer.blocked is None,
                                "options": {key: getattr(child, key) for key in _HEAD_TO_HEAD_OPTIONS}})
    return {"seed": graph.seed, "nodes": nodes, "connections": connections}


def _without_data(fingerprint: dict) -> dict:
    """A graph's fingerprint without its observations' data (their digest, and the data
    themselves where a data-less observation shows them as a setting)."""
    nodes = {}
    for name, record in fingerprint["nodes"].items():
        record = {k: v for k, v in record.items() if k != "data"}
        if record["type"] == Observation.__name__:
            record["settings"] = {k: v for k, v in record["settings"].items() if k != "data"}
        nodes[name] = record
    return {**fingerprint, "nodes": nodes}


def save_model(graph: Graph, path) -> Path:
    """Write the trained ``graph`` to ``path`` as a model file (see the module docstring);
    returns the path. Raises :class:`~serket.errors.ConfigError` naming a module whose
    settings could not be rebuilt from the file."""
    graph.validate()
    architecture = _architecture(graph)
    state = {name: node.state_dict() for name, node in graph.nodes.items() if not isinstance(node, Observation)}
    return save_checkpoint(path, {"architecture": architecture, "fingerprint": _without_data(graph.fingerprint()),
                                  "state": state}, file_format=MODEL_FORMAT)


def _resolve(name: str, allowed: dict, path) -> type:
    if name in allowed:
        return allowed[name]
    module, _, qualname = name.partition(":")
    if not (module == "serket" or module.startswith("serket.")):
        raise CheckpointError(f"model {path} needs the class {name}, which is not part of serket: pass it to "
                              f"load_model(..., classes=[{qualname}]) to allow it")
    try:
        found = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        raise CheckpointError(f"model {path} needs the class {name}, which this version of serket does not have") from None
    if not (isinstance(found, type) and issubclass(found, Node)):
        raise CheckpointError(f"model {path} names {name}, which is not a serket node")
    return found


def load_model(path, *, classes=(), device="cpu") -> Graph:
    """Rebuild a graph written by :func:`save_model`, with its learned state, on ``device``.

    ``classes``: your own module classes that the model uses (serket's are found by name).
    The rebuilt graph has observations without data (:meth:`Observation.without_data`): it is
    for prediction and generation on new items, not for more training.

    Raises:
        CheckpointError: naming the file: not a model file, damaged (checksum), a class that is
            not allowed or not found, or a rebuilt graph that differs from the saved one.
    """
    payload = load_checkpoint(path, file_format=MODEL_FORMAT, what="model", advice=_SAVE_AGAIN)
    allowed = {_class_name(cls): cls for cls in classes}
    architecture = payload["architecture"]
    graph = Graph(seed=architecture["seed"], device=device)
    for record in architecture["nodes"]:
        if "observation" in record:
            layout = record["observation"]
            graph.add(Observation.without_data(record["name"], layout["kind"], layout["size"], device=device))
        else:
            cls = _resolve(record["class"], allowed, path)
            graph.add(cls(record["name"], **record["settings"], device=device))
    for c in architecture["connections"]:
        verb = c["verb"]
        if verb == "observe":
            graph.observe(c["observation"], c["endpoint"])
        elif verb == "head_to_tail":
            graph.head_to_tail(upper=c["upper"], lower=c["lower"], feedback=c["feedback"])
        elif verb == "tail_to_tail":
            graph.tail_to_tail(c["name"], list(c["endpoints"]), feedback=c["feedback"], **c["options"])
        elif verb == "head_to_head":
            graph.head_to_head(c["name"], proposer=c["proposer"], weighter=c["weighter"], feedback=c["feedback"],
                               **c["options"])
        else:
            raise CheckpointError(f"model {path} has a connection of unknown kind {verb!r}")
    differences = fingerprint_differences(payload["fingerprint"], _without_data(graph.fingerprint()))
    if differences:
        raise CheckpointError(f"model {path}: the rebuilt graph differs from the saved one: " + "; ".join(differences))
    for name, state in payload["state"].items():
        graph.node(name).load_state_dict(state)
    return graph
