"""The graph: modules, observations and combiners on a networkx directed graph.

Edges point in the *generative* direction (parent -> child): an upper module points to the
lower module it generates a variable for, a module points to the observation it explains, a
tail-to-tail combiner points to each module that shares its category, and the two parents of a
head-to-head connection point to its child node. Each edge carries the last message sent in
each direction: ``down`` (parent -> child) and ``up`` (child -> parent).

The graph validates itself before any learning, derives an update schedule (children before
parents, so that data flow upward first) and prints a summary; it does not draw itself
(:func:`serket.bench.drawing.draw_graph` draws it as PNG, SVG, PDF or DOT).

Example::

    g = Graph(seed=0)
    g.add(Observation("images", x))
    g.add(VAE("vae"))
    g.add(GMM("gmm"))
    g.observe("images", "vae.x")
    g.head_to_tail(upper="gmm.x", lower="vae.z")
    g.validate()
    print(g.summary())
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import networkx as nx
import torch

from .connections import DATA, HEAD_TO_HEAD, HEAD_TO_TAIL, TAIL_TO_TAIL, HeadToHead, Observation, TailToTail
from .errors import CheckpointError, GraphError, MessageError, PortError, SerketError, with_context
from .inference import DEFAULT_EM_ITERATIONS, DEFAULT_RESTARTS, SharedCategory
from . import prediction
from .messages import Message
from .module import Module, Node, resolve_device, settings
from .validation import check_int

__all__ = ["Graph", "Connection"]


class Connection(NamedTuple):
    """One edge of the graph as its readers see it (see :meth:`Graph.connections`).

    ``parent`` -> ``child`` is the generative direction; ``kind`` is one of
    :data:`~serket.connections.CONNECTION_KINDS`; ``blocked`` names the direction whose messages
    are never delivered (``"down"``: parent -> child, ``"up"``: child -> parent) or is ``None``.
    A data link (an observation feeding a module) always has ``blocked="down"``.
    """

    parent: str
    parent_port: str
    child: str
    child_port: str
    kind: str
    blocked: str | None

    @property
    def two_way(self) -> bool:
        """Whether messages travel in both directions."""
        return self.blocked is None


def fingerprint_differences(saved, current) -> list[str]:
    """What differs between two :meth:`Graph.fingerprint` records, one line each."""
    if not isinstance(saved, dict):
        return ["the checkpoint was written by an older version of neuro-serket"]
    lines = []
    if saved.get("seed") != current["seed"]:
        lines.append(f"graph seed: checkpoint {saved.get('seed')!r}, here {current['seed']!r}")
    old_nodes, new_nodes = saved.get("nodes", {}), current["nodes"]
    for name in sorted(set(old_nodes) | set(new_nodes)):
        if name not in new_nodes or name not in old_nodes:
            lines.append(f"node {name!r}: only {'in the checkpoint' if name in old_nodes else 'here'}")
            continue
        old, new = old_nodes[name], new_nodes[name]
        if old["type"] != new["type"]:
            lines.append(f"node {name!r}: a {old['type']} in the checkpoint, a {new['type']} here")
            continue
        for key in sorted(set(old["settings"]) | set(new["settings"])):
            a, b = old["settings"].get(key, "(unset)"), new["settings"].get(key, "(unset)")
            if a != b:
                lines.append(f"node {name!r} setting {key}: checkpoint {a!r}, here {b!r}")
        if old.get("data") != new.get("data"):
            lines.append(f"observation {name!r}: other data (digest {str(old.get('data'))[:12]} in the "
                         f"checkpoint, {str(new.get('data'))[:12]} here)")
    if saved.get("edges") != current["edges"]:
        lines.append(f"connections: checkpoint {saved.get('edges')}, here {current['edges']}")
    return lines


def _split(endpoint: str) -> tuple[str, str]:
    if not isinstance(endpoint, str) or endpoint.count(".") != 1:
        raise GraphError(f"endpoint {endpoint!r} must be written 'node.port'")
    node, port = endpoint.split(".")
    return node, port


class Graph:
    """A composite of modules that learn by exchanging messages.

    Args:
        seed: seeds the global generators at the start of training (modules draw from their
            own streams, set by their own ``seed``); ``None`` leaves them alone.
        device: where modules and messages live (``"cpu"``, ``"cuda"``, ``"auto"``).
    """

    def __init__(self, *, seed: int | None = 0, device="cpu"):
        self.seed = check_int("Graph", "seed", seed, minimum=0, none=True)
        self.device = resolve_device(device, "Graph")
        self.nx = nx.DiGraph()

    # --- building ---------------------------------------------------------------------------
    def add(self, node):
        """Add a module, observation or combiner; returns it."""
        if not isinstance(node, Node):
            raise GraphError(f"cannot add {type(node).__name__}: not a serket Module or Node")
        if node.name in self.nx:
            raise GraphError(f"the graph already has a node named {node.name!r}")
        node.to(self.device)
        role = "module" if isinstance(node, Module) else type(node).__name__.lower()
        self.nx.add_node(node.name, obj=node, role=role)
        return node

    def node(self, name: str):
        if name not in self.nx:
            raise GraphError(f"the graph has no node {name!r}; it has {sorted(self.nx.nodes)}")
        return self.nx.nodes[name]["obj"]

    @property
    def modules(self) -> dict[str, Module]:
        return {n: d["obj"] for n, d in self.nx.nodes(data=True) if d["role"] == "module"}

    @property
    def nodes(self) -> dict[str, object]:
        return {n: d["obj"] for n, d in self.nx.nodes(data=True)}

    def roles(self) -> dict[str, str]:
        """Each node's role, in insertion order: ``"module"``, ``"observation"``,
        ``"tailtotail"`` (a shared-category combiner) or ``"headtohead"`` (a common child)."""
        return {n: d["role"] for n, d in self.nx.nodes(data=True)}

    def connections(self) -> list[Connection]:
        """Every connection, parent -> child, in the order they were made, with its kind, its
        ports and the direction it blocks (one-way links such as ``feedback=False``)."""
        return [Connection(p, e["parent_port"], c, e["child_port"], e["kind"], e["blocked"])
                for p, c, e in self.nx.edges(data=True)]

    def _endpoint(self, endpoint: str) -> tuple[str, str]:
        name, port = _split(endpoint)
        node = self.node(name)
        try:
            node._port(port)
        except (PortError, GraphError) as err:
            raise GraphError(str(err)) from None
        return name, port

    def _add_edge(self, parent, parent_port, child, child_port, kind, blocked=None):
        if self.nx.has_edge(parent, child):
            raise GraphError(f"{parent!r} and {child!r} are already connected")
        # blocked: the direction ("down": parent -> child, "up": child -> parent) whose messages
        # are never delivered, for one-way links such as the "separate" baselines
        self.nx.add_edge(parent, child, kind=kind, parent_port=parent_port, child_port=child_port,
                         blocked=blocked, down=None, up=None)

    def observe(self, observation: str, endpoint: str) -> None:
        """Feed an observation node's data to a module's data port (``"vae.x"``)."""
        obs = self.node(observation)
        if not isinstance(obs, Observation):
            raise GraphError(f"{observation!r} is not an Observation node")
        module, port = self._endpoint(endpoint)
        self._add_edge(module, port, observation, "out", DATA, blocked="down")

    def head_to_tail(self, *, upper: str, lower: str, feedback: bool = True) -> None:
        """Connect an upper module's port to the lower module's port that it generates.

        ``feedback=False`` keeps the connection one-way (lower -> upper only): the "separate"
        baseline in which the upper module's prior never reaches the lower one.
        """
        u, up = self._endpoint(upper)
        l, lp = self._endpoint(lower)
        if u == l:
            raise GraphError(f"head-to-tail: {u!r} cannot be connected to itself")
        self._add_edge(u, up, l, lp, HEAD_TO_TAIL, blocked=None if feedback else "down")

    def tail_to_tail(self, name: str, endpoints: list[str], *, smoothing: float = 0.01,
                     temperature: float = 1.0, prior_exponent: dict[str, float] | None = None,
                     evidence_weight: dict[str, float] | None = None, restarts: int | str | None = "auto",
                     em_iterations: int = DEFAULT_EM_ITERATIONS, feedback: bool = True) -> TailToTail:
        """A shared category: adds a combiner node ``name`` (:class:`TailToTail`) and connects
        each module port to it.

        ``restarts``: the joint fit of the shared category, each time the combiner updates (EM
        over all members from their consensus, the last fit and ``restarts`` fresh starts, the
        likeliest kept; :class:`~serket.inference.JointCategoryFit`), which needs every member
        to implement :class:`~serket.inference.SharedCategory`. ``"auto"`` (the default): the
        joint fit with :data:`~serket.inference.DEFAULT_RESTARTS` fresh starts where every
        member implements it, else the messages are only aligned and multiplied; an integer:
        the joint fit with that many, refused (naming the member) where a member cannot take
        part; ``None``: messages only. Without feedback there is no joint fit: it would move
        the modules. ``prior_exponent`` and ``evidence_weight`` are per-member options, by
        module name (see :class:`TailToTail`); each member implementing the protocol joins with
        its evidence weight (``category_join``) once the connection is made.
        """
        if len(endpoints) < 2:
            raise GraphError(f"tail-to-tail {name!r} needs at least two modules, got {endpoints}")
        resolved = [self._endpoint(e) for e in endpoints]
        sizes = {(n, p): self.node(n)._port(p).size for n, p in resolved}
        known = {s for s in sizes.values() if s is not None}
        if len(known) > 1:
            raise GraphError(f"tail-to-tail {name!r}: the category sizes differ: {sizes}")
        unable = [n for n, _ in resolved if not isinstance(self.node(n), SharedCategory)]
        if isinstance(restarts, str) and restarts == "auto":
            restarts = None if unable else DEFAULT_RESTARTS
        elif restarts is not None and unable:
            raise GraphError(f"tail-to-tail {name!r}: a joint fit of the shared category (restarts={restarts!r}) "
                             f"needs every member to implement SharedCategory, and {unable} do not; "
                             f"restarts=None only multiplies their messages")
        combiner = TailToTail(name, known.pop() if known else 1, smoothing=smoothing, temperature=temperature,
                              prior_exponent=prior_exponent, evidence_weight=evidence_weight,
                              restarts=restarts if feedback else None, em_iterations=em_iterations,
                              seed=self.seed if self.seed is not None else 0, device=self.device)
        for option, values in (("prior_exponent", prior_exponent), ("evidence_weight", evidence_weight)):
            unknown = set(values or {}) - {n for n, _ in resolved}
            if unknown:
                raise GraphError(f"tail-to-tail {name!r}: {option} names modules it does not connect: "
                                 f"{sorted(unknown)}")
        with self._all_or_nothing():
            self.add(combiner)
            for n, p in resolved:
                self._add_edge(name, n, n, p, TAIL_TO_TAIL, blocked=None if feedback else "down")
            for n, p in resolved:  # once every edge is in place: joining changes the members
                combiner.add_member(n, self.node(n), p)
        return combiner

    def head_to_head(self, name: str, *, proposer: str, weighter: str, seed: int | None = None,
                     feedback: bool = True, bag_weights: str = "scores") -> HeadToHead:
        """A common child of two parents: adds a node ``name`` realising SIR or a product of experts.

        ``feedback=False`` never sends the resampled hypotheses back to the proposer (it decodes
        once and never relearns): the "separate" baseline. ``bag_weights``: see :class:`HeadToHead`.
        """
        pn, pp = self._endpoint(proposer)
        wn, wp = self._endpoint(weighter)
        child = HeadToHead(name, seed=(self.seed or 0) if seed is None else seed,
                           vocab_size=self.node(pn)._port(pp).size, bag_weights=bag_weights)
        with self._all_or_nothing():
            self.add(child)
            self._add_edge(pn, pp, name, "proposer", HEAD_TO_HEAD, blocked=None if feedback else "up")
            self._add_edge(wn, wp, name, "weighter", HEAD_TO_HEAD, blocked=None)
        return child

    @contextlib.contextmanager
    def _all_or_nothing(self):
        """A connection is added whole or not at all: a call that fails leaves no half-built
        node or edge behind, so the corrected call can use the same name."""
        nodes, edges = set(self.nx.nodes), set(self.nx.edges)
        try:
            yield
        except BaseException:
            self.nx.remove_edges_from([e for e in list(self.nx.edges) if e not in edges])
            self.nx.remove_nodes_from([n for n in list(self.nx.nodes) if n not in nodes])
            raise

    # --- checking ---------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise :class:`GraphError` naming the nodes of the first problem found."""
        if not self.modules:
            raise GraphError("the graph has no modules")
        try:
            cycle = nx.find_cycle(self.nx)
        except nx.NetworkXNoCycle:
            cycle = None
        if cycle:
            path = " -> ".join([cycle[0][0]] + [v for _, v in cycle])
            raise GraphError(
                f"cycle not mediated by a combiner: {path}. Share the variable through a "
                f"tail-to-tail combiner or a head-to-head node instead."
            )
        for parent, child, e in self.nx.edges(data=True):
            self._validate_edge(parent, child, e)
        for name, node in self.nodes.items():
            if isinstance(node, HeadToHead):
                self._validate_join(name)
        for name, module in self.modules.items():
            if self.nx.degree(name) == 0:
                raise GraphError(f"module {name!r} is not connected to anything")

    def _validate_join(self, name: str) -> None:
        """A head-to-head node's parents must send a pair of kinds it can join."""
        sent = {}
        for parent, _, e in self.nx.in_edges(name, data=True):
            sent[e["child_port"]] = (parent, e["parent_port"], set(self.node(parent)._port(e["parent_port"]).sends))
        (pn, pp, proposed), (wn, wp, weighed) = sent["proposer"], sent["weighter"]
        if not any((a, b) in HeadToHead.COMBINABLE for a in proposed for b in weighed):
            raise GraphError(
                f"head-to-head {name!r} cannot join {pn}.{pp} (sends {sorted(proposed)}) with {wn}.{wp} "
                f"(sends {sorted(weighed)}): it needs nbest + categorical (sampling-importance-"
                f"resampling) or gaussian + gaussian (a product of experts)")

    def _validate_edge(self, parent, child, e):
        pnode, cnode = self.node(parent), self.node(child)
        pport, cport = pnode._port(e["parent_port"]), cnode._port(e["child_port"])
        where = f"{e['kind']} {parent}.{pport.name} -> {child}.{cport.name}"
        if e["blocked"] != "up" and not set(cport.sends) & set(pport.accepts):
            raise GraphError(f"{where}: {child}.{cport.name} sends {list(cport.sends)} but "
                             f"{parent}.{pport.name} accepts {list(pport.accepts)}")
        if e["blocked"] != "down" and not set(pport.sends) & set(cport.accepts):
            raise GraphError(f"{where}: {parent}.{pport.name} sends {list(pport.sends)} but "
                             f"{child}.{cport.name} accepts {list(cport.accepts)}")
        if pport.size is not None and cport.size is not None and e["kind"] != HEAD_TO_HEAD:
            if pport.size != cport.size:
                raise GraphError(f"{where}: sizes do not fit ({pport.size} vs {cport.size})")

    # --- scheduling -------------------------------------------------------------------------
    def schedule(self) -> list[str]:
        """Children before parents (data flow upward first); ties broken by insertion order.

        A head-to-head node is the exception: it joins what its two parents publish, so it
        runs right after each of them (after the proposer, to pass its hypotheses on; after the
        weighter, to resample them by its weights), as in ``speech, asr, words, lda, words``.
        """
        order = {n: i for i, n in enumerate(self.nx.nodes)}
        topo = list(nx.lexicographical_topological_sort(self.nx, key=lambda n: -order[n]))
        children_first = list(reversed(topo))
        joins = [n for n in children_first if isinstance(self.node(n), HeadToHead)]
        schedule = [n for n in children_first if n not in joins]
        for join in joins:
            parents = {parent for parent, _ in self.nx.in_edges(join)}
            at = [i for i, n in enumerate(schedule) if n in parents]
            for i in reversed(at):
                schedule.insert(i + 1, join)
        return schedule

    def check_schedule(self, schedule) -> list[str]:
        schedule = list(schedule)
        unknown = [n for n in schedule if n not in self.nx]
        if unknown:
            raise GraphError(f"the schedule names unknown nodes {unknown}; the graph has {sorted(self.nx.nodes)}")
        missing = [n for n in self.modules if n not in schedule]
        if missing:
            raise GraphError(f"the schedule never updates modules {missing}")
        return schedule

    # --- running one node -------------------------------------------------------------------
    def step(self, name: str) -> None:
        """Deliver a node's latest incoming messages, let it learn, and store what it publishes.
        An error raised on the way names the node (and, for a bad message, the port)."""
        node = self.deliver(name)
        try:
            node.update()
        except SerketError as error:
            raise with_context(error, f"node {name!r}, while it learned (update)") from error
        self.store(name)

    def deliver(self, name: str):
        """Give a node the latest message on each of its unblocked connections; returns it."""
        node = self.node(name)
        for parent, _, e in self.nx.in_edges(name, data=True):
            if e["down"] is not None and e["blocked"] != "down":
                self._deliver(node, e["child_port"], e["down"], parent)
        for _, child, e in self.nx.out_edges(name, data=True):
            if e["up"] is not None and e["blocked"] != "up":
                self._deliver(node, e["parent_port"], e["up"], child)
        return node

    def store(self, name: str) -> None:
        """Put what a node publishes on its connections."""
        node = self.node(name)
        try:
            outgoing = node.publish()
        except MessageError as error:
            kind = getattr(error, "kind", None)
            ports = [port for port, spec in node.ports().items() if kind in spec.sends]
            where = f"port {ports[0]!r}" if len(ports) == 1 else f"one of ports {ports}" if ports else "a port"
            raise with_context(error, f"node {name!r} published a bad message on {where}") from error
        except SerketError as error:
            raise with_context(error, f"node {name!r}, while it published") from error
        for _, child, e in self.nx.out_edges(name, data=True):
            if e["parent_port"] in outgoing:
                e["down"] = outgoing[e["parent_port"]]
        for parent, _, e in self.nx.in_edges(name, data=True):
            if e["child_port"] in outgoing:
                e["up"] = outgoing[e["child_port"]]

    def _deliver(self, node, port, message: Message, sender: str) -> None:
        try:
            node.receive(port, message)
        except (MessageError, PortError) as err:
            raise type(err)(f"message from {sender!r} to {node.name}.{port}: {err}") from None

    def messages(self) -> dict[tuple[str, str], dict[str, Message | None]]:
        """The last message in each direction on every edge."""
        return {(p, c): {"down": e["down"], "up": e["up"]} for p, c, e in self.nx.edges(data=True)}

    # --- using the trained graph on new items ---------------------------------------------------
    def infer(self, data: dict) -> dict[str, dict[str, Message]]:
        """Run the trained graph on new items, ``{observation name: data}`` for any subset of its
        observations, without learning: ``{node: {port: message}}``, what each node reached
        inferred (:func:`serket.prediction.recognise`)."""
        return prediction.recognise(self, data).outputs

    def predict(self, data: dict) -> dict[str, torch.Tensor]:
        """The category of each new item, ``{node: (N,) tensor}``, for every node with categories
        that the given observations reach: images alone reach the GMM and the shared category,
        speech alone the LDA and the shared category (:func:`serket.prediction.predict`)."""
        return prediction.predict(self, data)

    def generate(self, data: dict, target: str) -> Message:
        """Data for the observation ``target`` generated from new data for others (speech alone
        -> an image of its category; :func:`serket.prediction.generate`)."""
        return prediction.generate(self, data, target)

    # --- state ------------------------------------------------------------------------------
    def fingerprint(self) -> dict:
        """What a checkpoint must match to be loaded here: the graph seed; every node's type and
        settings (:func:`serket.module.settings`: its ``__init__`` arguments, seeds included); a
        digest of every observation's data; the connections."""
        nodes = {}
        for name, d in self.nx.nodes(data=True):
            node = d["obj"]
            nodes[name] = {"type": type(node).__name__, "settings": settings(node)}
            if isinstance(node, Observation):
                nodes[name]["data"] = node.data_digest()
        edges = sorted((p, c, e["kind"], e["parent_port"], e["child_port"], str(e["blocked"]))
                       for p, c, e in self.nx.edges(data=True))
        return {"seed": self.seed, "nodes": dict(sorted(nodes.items())), "edges": [list(e) for e in edges]}

    def state_dict(self) -> dict:
        return {
            "fingerprint": self.fingerprint(),
            "nodes": {n: d["obj"].state_dict() for n, d in self.nx.nodes(data=True)},
            "edges": {
                f"{p}->{c}": {k: (None if e[k] is None else e[k].state()) for k in ("down", "up")}
                for p, c, e in self.nx.edges(data=True)
            },
        }

    def load_state_dict(self, state: dict) -> None:
        differences = fingerprint_differences(state.get("fingerprint"), self.fingerprint())
        if differences:
            raise CheckpointError("the checkpoint was written by a different graph: " + "; ".join(differences))
        for name, node_state in state["nodes"].items():
            self.node(name).load_state_dict(node_state)
        for p, c, e in self.nx.edges(data=True):
            saved = state["edges"][f"{p}->{c}"]
            for k in ("down", "up"):
                e[k] = None if saved[k] is None else Message.from_state(saved[k]).to(self.device)

    def to(self, device) -> "Graph":
        self.device = resolve_device(device)
        for obj in self.nodes.values():
            obj.to(self.device)
        for _, _, e in self.nx.edges(data=True):
            for k in ("down", "up"):
                if e[k] is not None:
                    e[k] = e[k].to(self.device)
        return self

    # --- showing ----------------------------------------------------------------------------
    def summary(self) -> str:
        lines = [f"Graph: {len(self.modules)} modules, {self.nx.number_of_nodes()} nodes, "
                 f"{self.nx.number_of_edges()} connections, device {self.device}"]
        for name, node in self.nodes.items():
            lines.append(f"{name}: {type(node).__name__}")
            lines += [f"  port {port}" for port in node.ports().values()]
        lines.append("connections (parent -> child):")
        for p, c, e in self.nx.edges(data=True):
            flag = "" if e["kind"] == DATA or not e["blocked"] else f"  [{e['blocked']} messages switched off]"
            lines.append(f"  {e['kind']:<12} {p}.{e['parent_port']} -> {c}.{e['child_port']}{flag}")
        lines.append("schedule: " + ", ".join(self.schedule()))
        return "\n".join(lines)
