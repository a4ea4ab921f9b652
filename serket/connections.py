"""Connections between modules, and the graph nodes that are not modules.

The three kinds of Neuro-SERKET connection:

* **head-to-tail** (:data:`HEAD_TO_TAIL`) — the upper module generates a variable that the lower
  module explains its data with. Lower -> upper: a posterior or samples (VAE -> GMM: samples of
  ``z``). Upper -> lower: a prior (GMM -> VAE: the item's cluster mean and variance). An edge
  between two module ports; no node in between.
* **tail-to-tail** (:class:`TailToTail`) — a common parent: one category generates the variables
  of several modules. A combiner node receives each module's posterior over the category,
  aligns their label permutations by optimal assignment, and sends each module the product of
  the others' posteriors as its prior.
* **head-to-head** (:class:`HeadToHead`) — a common child generated jointly by two parents.
  Realised by sampling-importance-resampling (the proposer sends N-best hypotheses, the
  weighter sends per-item probabilities over words; one hypothesis per item is resampled and
  sent back to the proposer) or, for Gaussian messages, by a product of experts.

Observations (:class:`Observation`) are data nodes: they publish their tensor on one port.
Labels are never part of an observation.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from .errors import ConfigError, GraphError, MessageError
from .messages import Categorical, Counts, Gaussian, Message, NBest, Samples, as_float_data
from .module import Port, resolve_device
from .validation import check_choice, check_int, check_real

__all__ = [
    "HEAD_TO_TAIL",
    "TAIL_TO_TAIL",
    "HEAD_TO_HEAD",
    "DATA",
    "CONNECTION_KINDS",
    "Node",
    "Observation",
    "TailToTail",
    "HeadToHead",
    "align_permutation",
    "product_of_gaussians",
    "sir_resample",
]

HEAD_TO_TAIL = "head_to_tail"
TAIL_TO_TAIL = "tail_to_tail"
HEAD_TO_HEAD = "head_to_head"
DATA = "data"
CONNECTION_KINDS = (HEAD_TO_TAIL, TAIL_TO_TAIL, HEAD_TO_HEAD, DATA)


class Node:
    """What the graph needs of a non-module node: ports, receive, update, publish, state."""

    def __init__(self, name: str, device="cpu"):
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{type(self).__name__}: name must be a non-empty string, got {name!r}")
        self.name = name
        self.inbox: dict[str, Message] = {}
        self._device = resolve_device(device, self)

    @property
    def device(self):
        return self._device

    def ports(self) -> dict[str, Port]:
        raise NotImplementedError(f"{type(self).__name__} must declare its ports")

    def port(self, name: str) -> Port:
        ports = self.ports()
        if name not in ports:
            raise GraphError(f"node {self.name!r} has no port {name!r}; its ports are {sorted(ports)}")
        return ports[name]

    def receive(self, port: str, message: Message) -> None:
        spec = self.port(port)
        if message.kind not in spec.accepts:
            raise MessageError(f"node {self.name!r} port {port!r} does not accept {message.kind!r}")
        self.inbox[port] = message.to(self._device)

    def update(self) -> None:
        pass

    def publish(self) -> dict[str, Message]:
        return {}

    def predict(self):
        return None

    def to(self, device):
        self._device = resolve_device(device)
        self.inbox = {k: m.to(self._device) for k, m in self.inbox.items()}
        return self

    def state_dict(self) -> dict:
        return {"inbox": {k: m.state() for k, m in self.inbox.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.inbox = {k: Message.from_state(v).to(self._device) for k, v in state["inbox"].items()}

    def describe(self) -> str:
        lines = [f"{self.name}: {type(self).__name__}"]
        lines += [f"  port {p}" for p in self.ports().values()]
        return "\n".join(lines)


class Observation(Node):
    """A data source: publishes fixed data (``Samples`` of an (N, D) tensor) on port ``"out"``.

    Args:
        name: node name.
        data: (N, ...) tensor (trailing dimensions are flattened), or a ready message such as
            :class:`~serket.messages.Sequences`.
    """

    def __init__(self, name: str, data, device="cpu"):
        super().__init__(name, device)
        self._digest = None
        if isinstance(data, Message):  # e.g. padded speech frames as a Sequences message
            if data.n_items == 0:
                raise GraphError(f"observation {name!r} is empty")
            self.data = data.to(self._device)
            return
        if not isinstance(data, torch.Tensor):
            data = torch.as_tensor(np.asarray(data))
        if data.ndim < 1 or data.shape[0] == 0:
            raise GraphError(f"observation {name!r} is empty (shape {tuple(data.shape)})")
        data = data.reshape(data.shape[0], -1)
        self.data = Samples(as_float_data(data, f"observation {name!r}")).to(self._device)
        # (Samples checks finiteness and names the index)

    def ports(self):
        return {"out": Port("out", sends=(self.data.kind,), size=self.data.size, doc="observed data")}

    def data_digest(self) -> str:
        """sha256 of the observed data (every tensor of the message, with shapes and dtypes),
        computed once: checkpoints record it so that a run resumes only on the same data."""
        if self._digest is None:
            digest = hashlib.sha256()
            for field, tensor in self.data._tensors().items():
                tensor = tensor.detach().cpu().contiguous()
                digest.update(f"{field}:{tuple(tensor.shape)}:{tensor.dtype}\n".encode())
                digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
            self._digest = digest.hexdigest()
        return self._digest

    def publish(self):
        return {"out": self.data}

    def to(self, device):
        super().to(device)
        self.data = self.data.to(self._device)
        return self

    def state_dict(self):
        return {}  # the data are given again by whoever builds the graph

    def load_state_dict(self, state):
        pass

    @property
    def n_items(self) -> int:
        return self.data.n_items


def align_permutation(reference: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """The permutation of ``other``'s categories that best matches ``reference``.

    Both are (N, K) posteriors over the same items. Returns ``perm`` (K,) such that
    ``other[:, perm]`` is aligned with ``reference``: category ``j`` of the reference
    corresponds to category ``perm[j]`` of ``other``. Optimal assignment (Hungarian) on the
    expected co-occurrence matrix ``reference.T @ other``, not a greedy swap.
    """
    if reference.shape != other.shape:
        raise MessageError(
            f"cannot align posteriors of shapes {tuple(reference.shape)} and {tuple(other.shape)}"
        )
    overlap = (reference.T.double() @ other.double()).cpu().numpy()
    rows, cols = linear_sum_assignment(-overlap)
    perm = np.empty(reference.shape[1], dtype=np.int64)
    perm[rows] = cols
    return torch.as_tensor(perm, device=reference.device)


class TailToTail(Node):
    """A combiner for a category shared by several modules (a common parent).

    Each connected module sends its posterior P(c | its data) on a port named after it. The
    combiner aligns every posterior to the first module's labels (Hungarian), and sends each
    module, in its own label order, the normalised product of the *other* modules' posteriors,
    smoothed towards uniform so that no category is ever ruled out:
    ``prior = (1 - smoothing) * product + smoothing / K``. A member that has not sent a
    posterior yet receives the product of all those that have, in the first one's label order:
    a module that starts after the others starts from their categories instead of from its own
    data alone.

    Args:
        name: node name (the shared variable, e.g. ``"category"``).
        n_categories: K.
        smoothing: weight of the uniform distribution mixed into each prior.
        temperature: exponent applied to each incoming posterior before the product (1 = plain
            product; < 1 softens over-confident modules).
        prior_temperature: per member, an exponent applied to the prior it is sent (default 1).
            A module that applies its prior to every one of its tokens (an LDA with ``n``
            tokens per document applies it ``n`` times) can be sent ``p ** (1 / n)`` this way.
        restarts: ``None`` (default): combine the members' messages as above. An integer: once
            every member has reported, fit the shared category jointly at each update — EM in
            which every member refits its per-category distributions to the shared
            responsibilities (``Module.category_fit``) and the combiner recomputes them from the
            mixing weights and all members' log likelihoods — from the members' current
            consensus and from ``restarts`` fresh starts (k-means++ on one member's data, the
            members in turn), keeping the start with the highest joint log likelihood and
            installing it in every member (``Module.category_adopt``). Linked modules settle in
            poor local optima on their own (a digit split in two while two others share a
            category); restarts judged by the joint likelihood, never by labels, are the
            answer. The priors then carry the others' log likelihoods under the installed fit.
        em_iterations: the most EM iterations per start (stops earlier when the mean joint log
            likelihood gains less than a millionth).
        seed: seeds the restarts' generator.
    """

    def __init__(self, name: str, n_categories: int, *, smoothing: float = 0.01,
                 temperature: float = 1.0, prior_temperature: dict[str, float] | None = None,
                 restarts: int | None = None, em_iterations: int = 50, seed: int = 0, device="cpu"):
        super().__init__(name, device)
        owner = f"combiner {name!r}"
        self.n_categories = check_int(owner, "n_categories", n_categories, minimum=1)
        self.smoothing = check_real(owner, "smoothing", smoothing, minimum=0.0)
        if not self.smoothing < 1.0:
            raise ConfigError(f"{owner}: smoothing must be a finite number in [0, 1), got {smoothing!r}")
        self.temperature = check_real(owner, "temperature", temperature, above=0.0)
        if prior_temperature is not None and not isinstance(prior_temperature, dict):
            raise ConfigError(f"{owner}: prior_temperature must be a dict of module name -> exponent, "
                              f"got {prior_temperature!r}")
        self.prior_temperature = {k: check_real(owner, f"prior_temperature[{k!r}]", v, above=0.0)
                                  for k, v in (prior_temperature or {}).items()}
        self.restarts = check_int(owner, "restarts", restarts, minimum=0, none=True)
        self.em_iterations = check_int(owner, "em_iterations", em_iterations, minimum=1)
        self.seed = check_int(owner, "seed", seed, minimum=0)
        self.generator = torch.Generator(device=self._device)
        self.generator.manual_seed(self.seed)
        self.members: list[str] = []  # filled by the graph, one per connected module
        self.bound: dict[str, tuple] = {}  # member -> (module, port), for the joint fit
        self.permutations_: dict[str, torch.Tensor] = {}
        self.priors_: dict[str, Categorical] = {}
        # the responsibilities of the last joint fit, installed in every member (whose labels
        # are the combiner's from then on); None before the first
        self.joint_responsibilities_: torch.Tensor | None = None
        self.joint_log_likelihoods_: list[float] = []  # of each start, in the last joint fit
        self.chosen_start_: int | None = None  # 0: from the current consensus, then the last fit, then fresh

    def add_member(self, module_name: str, module=None, port: str | None = None) -> None:
        if module_name in self.members:
            raise GraphError(f"combiner {self.name!r} is already connected to {module_name!r}")
        if self.restarts is not None and (module is None or not getattr(module, "shares_categories", False)):
            raise GraphError(f"combiner {self.name!r}: restarts need every member to implement the shared-"
                             f"category hooks (Module.category_fit, ...); {module_name!r} does not")
        self.members.append(module_name)
        if module is not None:
            self.bound[module_name] = (module, port)

    def ports(self):
        return {
            m: Port(m, sends=("categorical",), accepts=("categorical",), size=self.n_categories,
                    doc=f"posterior from / prior to {m}")
            for m in self.members
        }

    def update(self):
        present = [m for m in self.members if m in self.inbox]
        self.priors_ = {}
        if not present:
            return  # nothing to combine yet
        reference = self.inbox[present[0]].probs
        n = reference.shape[0]
        aligned = {}
        for m in present:
            probs = self.inbox[m].probs
            if probs.shape[0] != n:
                raise MessageError(
                    f"combiner {self.name!r}: {m!r} sent {probs.shape[0]} items, "
                    f"{present[0]!r} sent {n}"
                )
            if self.joint_responsibilities_ is not None:
                # the members adopted the last joint fit's labels: nothing to align (aligning
                # posteriors that are each ambiguous alone could only scramble them)
                perm = torch.arange(self.n_categories, device=probs.device)
            else:
                perm = align_permutation(reference, probs)
            self.permutations_[m] = perm
            aligned[m] = probs[:, perm]
        logs = {m: torch.log(p.clamp_min(1e-30)) * self.temperature for m, p in aligned.items()}
        total = sum(logs.values())
        if self.restarts is not None and len(present) == len(self.members):
            logs = self._joint_fit(torch.softmax(total, 1))
            self.permutations_ = {m: torch.arange(self.n_categories, device=total.device) for m in present}
            total = sum(logs.values())
        uniform = 1.0 / self.n_categories
        # a member that has not reported yet (no labels of its own so far) gets the product of
        # all those that have, in the reference's label order, and starts from their categories
        for m in self.members:
            if m in present and len(present) < 2:
                continue  # a lone member gets no prior from itself
            others = total - logs[m] if m in present else total
            product = torch.softmax(self.prior_temperature.get(m, 1.0) * others, dim=1)
            prior_aligned = (1 - self.smoothing) * product + self.smoothing * uniform
            if m not in present:
                self.priors_[m] = Categorical((prior_aligned / prior_aligned.sum(dim=1, keepdim=True)).float())
                continue
            # back to the member's own label order: its category perm[j] is reference's j
            prior = torch.empty_like(prior_aligned)
            prior[:, self.permutations_[m]] = prior_aligned
            self.priors_[m] = Categorical((prior / prior.sum(dim=1, keepdim=True)).float())

    # --- the joint fit of the shared category ---------------------------------------------------
    def _em(self, r: torch.Tensor):
        """EM over the shared category from responsibilities ``r``: every member refits its
        per-category distributions to ``r`` (M step), then the combiner recomputes ``r`` from
        the mixing weights and all members' log likelihoods (E step). Returns (mean joint log
        likelihood, r)."""
        ll = float("-inf")
        for _ in range(self.em_iterations):
            params = self._fit_members(r)
            joint = r.mean(0).clamp_min(1e-12).log() + sum(
                mod.category_log_likelihood(port, params[m]) for m, (mod, port) in self.bound.items())
            previous, ll = ll, float(torch.logsumexp(joint, 1).mean())
            r = torch.softmax(joint, 1)
            if ll - previous < 1e-6 * abs(ll):
                break
        return ll, r

    def _fit_members(self, r: torch.Tensor) -> dict:
        return {m: mod.category_fit(port, r) for m, (mod, port) in self.bound.items()}

    def _joint_fit(self, current: torch.Tensor) -> dict[str, torch.Tensor]:
        """The shared category fitted jointly: EM from the members' current consensus, from the
        last installed fit (if any) and from ``restarts`` fresh starts (each drawn from one member's own data, the members in turn);
        the start with the highest joint log likelihood is installed in every member. Labels
        never enter. Returns each member's (N, K) log likelihood under the installed fit."""
        starters = list(self.bound)
        candidates = [self._em(current.to(torch.float64))]
        last = self.joint_responsibilities_
        if last is not None and last.shape == current.shape:
            # the last installed fit, rescored on today's data: a module drifting on its own
            # between fits must not lose an optimum that is still the likeliest
            candidates.append(self._em(last.to(torch.float64)))
        for i in range(self.restarts):
            module, port = self.bound[starters[i % len(starters)]]
            candidates.append(self._em(module.category_start(port, self.generator).to(torch.float64)))
        self.joint_log_likelihoods_ = [c[0] for c in candidates]
        self.chosen_start_ = max(range(len(candidates)), key=lambda i: candidates[i][0])
        r = candidates[self.chosen_start_][1]
        if self.chosen_start_ > 0:
            # a fresh start numbers its categories arbitrarily: relabel it to match the current
            # consensus, so that labels (and the priors the members already hold) stay put
            r = r[:, align_permutation(current.to(r.dtype), r)]
        params = self._fit_members(r)
        for m, (module, port) in self.bound.items():
            module.category_adopt(port, r, params[m])
        self.joint_responsibilities_ = r.float()
        return {m: mod.category_log_likelihood(port, params[m]) * self.temperature
                for m, (mod, port) in self.bound.items()}

    def publish(self):
        return dict(self.priors_)

    def consensus(self) -> torch.Tensor | None:
        """The product of all aligned posteriors, in the first member's label order."""
        if self.joint_responsibilities_ is not None:
            return self.joint_responsibilities_
        present = [m for m in self.members if m in self.inbox]
        if not present:
            return None
        reference = self.inbox[present[0]].probs
        total = 0
        for m in present:
            probs = self.inbox[m].probs
            total = total + torch.log(probs[:, align_permutation(reference, probs)].clamp_min(1e-30))
        return torch.softmax(total, dim=1)

    def predict(self):
        joint = self.consensus()
        return None if joint is None else joint.argmax(dim=1)

    def state_dict(self):
        state = super().state_dict()
        state["priors"] = {k: m.state() for k, m in self.priors_.items()}
        state["permutations"] = {k: v.cpu() for k, v in self.permutations_.items()}
        state["generator_device"] = str(self._device)
        state["generator"] = self.generator.get_state()
        state["joint_responsibilities"] = (None if self.joint_responsibilities_ is None
                                           else self.joint_responsibilities_.cpu())
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.priors_ = {k: Message.from_state(v).to(self._device) for k, v in state["priors"].items()}
        self.permutations_ = {k: v.to(self._device) for k, v in state["permutations"].items()}
        if "generator" in state and torch.device(state["generator_device"]).type == self._device.type:
            self.generator.set_state(state["generator"])
        joint = state.get("joint_responsibilities")
        self.joint_responsibilities_ = None if joint is None else joint.to(self._device)

    def to(self, device):
        super().to(device)
        self.priors_ = {k: m.to(self._device) for k, m in self.priors_.items()}
        self.permutations_ = {k: v.to(self._device) for k, v in self.permutations_.items()}
        if self.generator.device.type != self._device.type:
            # a generator cannot move between devices: a fresh one there, from the node's seed
            self.generator = torch.Generator(device=self._device)
            self.generator.manual_seed(self.seed)
        if self.joint_responsibilities_ is not None:
            self.joint_responsibilities_ = self.joint_responsibilities_.to(self._device)
        return self


def product_of_gaussians(means, variances, prior_mean=None, prior_var=None):
    """The product of diagonal Gaussian experts, renormalised: returns (mean, var).

    ``means`` and ``variances`` are sequences of (N, D) tensors; an optional prior expert is
    included. Precisions add; the mean is the precision-weighted average.
    """
    means, variances = list(means), list(variances)
    if prior_mean is not None:
        means.append(prior_mean.expand_as(means[0]))
        variances.append(prior_var.expand_as(variances[0]))
    if not means:
        raise MessageError("a product of experts needs at least one expert")
    precisions = [1.0 / v for v in variances]
    precision = sum(precisions)
    mean = sum(p * m for p, m in zip(precisions, means)) / precision
    return mean, 1.0 / precision


def sir_resample(log_scores: torch.Tensor, log_weights: torch.Tensor, generator=None) -> torch.Tensor:
    """Sampling-importance-resampling: one index per item.

    ``log_scores`` (N, B) are the proposer's scores of its hypotheses (unused in the weights:
    the proposal already drew them), ``log_weights`` (N, B) the weighter's log probabilities of
    each hypothesis; invalid hypotheses carry ``-inf``. Returns (N,) indices drawn with
    probability proportional to ``exp(log_weights)`` per row.
    """
    if log_weights.shape != log_scores.shape:
        raise MessageError("sir_resample: scores and weights differ in shape")
    weights = torch.softmax(log_weights, dim=1)
    if not bool(torch.isfinite(weights).all()):
        raise MessageError("sir_resample: an item has no hypothesis with a finite weight")
    return torch.multinomial(weights, 1, generator=generator).squeeze(1)


class HeadToHead(Node):
    """A common child generated jointly by two parents.

    Two modes, chosen by the kinds the parents send:

    * ``nbest`` (+ ``categorical``): the *proposer* sends N-best word sequences with log
      scores. The weighter receives them as a bag of words (``counts`` (N, V): each
      hypothesis's words weighted by its normalised score) — the words it observes. Once the
      *weighter* has sent per-item word probabilities P(w | d) (N, V), each hypothesis is
      weighted by the product of its words' probabilities, one is resampled per item (SIR),
      and the proposer receives the chosen hypotheses as an ``nbest`` message with B = 1.
    * ``gaussian`` + ``gaussian``: each parent receives the other's Gaussian expert, to
      multiply with its own (a product of experts, :func:`product_of_gaussians`).

    Ports: ``"proposer"`` and ``"weighter"``.

    Args:
        vocab_size: V, the number of word types (the proposer's port size).
        bag_weights: how the bag of words weighs the hypotheses: ``"scores"`` (softmax of their
            log scores, for an N-best list of the most probable hypotheses) or ``"uniform"``
            (equal weights, for hypotheses drawn from the proposer's posterior, whose average
            already estimates the expected counts).
    """

    # (what the proposer sends, what the weighter sends): the pairs this node can join
    COMBINABLE = frozenset({("nbest", "categorical"), ("gaussian", "gaussian")})

    def __init__(self, name: str, *, vocab_size: int | None = None, bag_weights: str = "scores",
                 seed: int = 0, device="cpu"):
        super().__init__(name, device)
        owner = f"head-to-head {name!r}"
        self.bag_weights = check_choice(owner, "bag_weights", bag_weights, ("scores", "uniform"))
        self.vocab_size = check_int(owner, "vocab_size", vocab_size, minimum=1, none=True)
        self.seed = check_int(owner, "seed", seed, minimum=0)
        self.generator = torch.Generator(device=self._device)
        self.generator.manual_seed(self.seed)
        self.outgoing_: dict[str, Message] = {}
        self.chosen_: torch.Tensor | None = None

    def ports(self):
        return {
            "proposer": Port("proposer", sends=("nbest", "gaussian"), accepts=("nbest", "gaussian"),
                             doc="N-best hypotheses (or a Gaussian expert) from the proposing parent"),
            "weighter": Port("weighter", sends=("counts", "gaussian"), accepts=("categorical", "gaussian"),
                             doc="word probabilities (or a Gaussian expert) from the weighting parent"),
        }

    def update(self):
        self.outgoing_ = {}
        prop, weigh = self.inbox.get("proposer"), self.inbox.get("weighter")
        if isinstance(prop, NBest):
            self.outgoing_["weighter"] = self.bag_of_words(prop)
        if prop is None or weigh is None:
            return
        if prop.n_items != weigh.n_items:
            raise MessageError(
                f"head-to-head {self.name!r}: proposer sent {prop.n_items} items, weighter {weigh.n_items}"
            )
        if isinstance(prop, NBest) and isinstance(weigh, Categorical):
            hyps = prop.hypotheses
            valid = hyps >= 0
            if bool((hyps >= weigh.size).any()):
                raise MessageError(
                    f"head-to-head {self.name!r}: a hypothesis uses word id {int(hyps.max())} but "
                    f"the weighter's vocabulary has {weigh.size} words"
                )
            logp = torch.log(weigh.probs.clamp_min(1e-30))
            word_logp = torch.gather(logp, 1, hyps.clamp_min(0).flatten(1)).view_as(hyps)
            log_w = (word_logp * valid).sum(dim=2)
            log_w = log_w.masked_fill(~valid.any(dim=2), float("-inf"))
            self.chosen_ = sir_resample(prop.log_scores, log_w, self.generator)
            rows = torch.arange(hyps.shape[0], device=hyps.device)
            self.outgoing_["proposer"] = NBest(
                hyps[rows, self.chosen_].unsqueeze(1), log_w[rows, self.chosen_].unsqueeze(1)
            )
        elif isinstance(prop, Gaussian) and isinstance(weigh, Gaussian):
            self.outgoing_["proposer"] = weigh
            self.outgoing_["weighter"] = prop
        else:
            raise MessageError(
                f"head-to-head {self.name!r}: cannot combine {prop.kind!r} with {weigh.kind!r} "
                f"(expected nbest + categorical, or gaussian + gaussian)"
            )

    def bag_of_words(self, nbest: NBest) -> Counts:
        """Expected word counts per item under the normalised hypothesis scores (N, V)."""
        vocab = self.vocab_size if self.vocab_size is not None else int(nbest.hypotheses.max()) + 1
        if bool((nbest.hypotheses >= vocab).any()):
            raise MessageError(f"head-to-head {self.name!r}: a hypothesis uses word id "
                               f"{int(nbest.hypotheses.max())} but the vocabulary has {vocab} words")
        if self.bag_weights == "scores":
            weights = torch.softmax(nbest.log_scores, dim=1)  # (N, B)
        else:
            weights = torch.full(nbest.log_scores.shape, 1.0 / nbest.log_scores.shape[1],
                                 device=nbest.log_scores.device)
        hyps = nbest.hypotheses
        valid = hyps >= 0
        n, b, length = hyps.shape
        counts = torch.zeros(n, vocab, device=hyps.device, dtype=weights.dtype)
        contrib = (weights.unsqueeze(2) * valid).reshape(n, b * length)
        counts.scatter_add_(1, hyps.clamp_min(0).reshape(n, b * length), contrib)
        return Counts(counts)

    def publish(self):
        return dict(self.outgoing_)

    def to(self, device):
        before = self._device
        super().to(device)
        if self._device != before:
            # a generator cannot move between devices: a fresh one on the new device, seeded
            # from the node's seed, so that runs stay reproducible per device
            self.generator = torch.Generator(device=self._device)
            self.generator.manual_seed(self.seed)
        self.outgoing_ = {k: m.to(self._device) for k, m in self.outgoing_.items()}
        if self.chosen_ is not None:
            self.chosen_ = self.chosen_.to(self._device)
        return self

    def state_dict(self):
        state = super().state_dict()
        state["generator_device"] = str(self._device)
        state["generator"] = self.generator.get_state()
        state["outgoing"] = {k: m.state() for k, m in self.outgoing_.items()}
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        if torch.device(state.get("generator_device", "cpu")).type == self._device.type:
            self.generator.set_state(state["generator"])
        self.outgoing_ = {k: Message.from_state(v).to(self._device) for k, v in state["outgoing"].items()}
