"""Connections between modules, and the graph nodes that are not modules.

The three kinds of Neuro-SERKET connection:

* **head-to-tail** (:data:`HEAD_TO_TAIL`) — the upper module generates a variable that the lower
  module explains its data with. Lower -> upper: a posterior or samples (VAE -> GMM: samples of
  ``z``). Upper -> lower: a prior (GMM -> VAE: the item's cluster mean and variance). An edge
  between two module ports; no node in between.
* **tail-to-tail** (:class:`TailToTail`) — a common parent: one category generates the variables
  of several modules. A combiner node receives each module's posterior over the category,
  aligns their label permutations by optimal assignment, and sends each module the product of
  the others' posteriors as its prior; where every member supports it, the shared category is
  fitted jointly over all of them first (:class:`~serket.inference.JointCategoryFit`).
* **head-to-head** (:class:`HeadToHead`) — a common child generated jointly by two parents.
  Realised by sampling-importance-resampling (the proposer sends N-best hypotheses, the
  weighter sends per-item probabilities over words; one hypothesis per item is resampled and
  sent back to the proposer) or, for Gaussian messages, by a product of experts.

Observations (:class:`Observation`) are data nodes: they publish their tensor on one port.
Labels are never part of an observation. Every node here is a :class:`~serket.module.Node`: its
settings are its ``__init__`` arguments, its learned state its attributes ending in ``_``.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from .errors import ConfigError, DataError, GraphError, MessageError
from .inference import DEFAULT_EM_ITERATIONS, DEFAULT_RESTARTS, JointCategoryFit, SharedCategory, align_permutation
from .messages import Categorical, Counts, Gaussian, Message, NBest, Samples, as_float_data
from .module import Node, Port, resolve_device
from .validation import check_choice, check_int, check_items, check_real

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

# floor on a probability before its log is taken, so that no category is ruled out by -inf
_PROB_FLOOR = 1e-30


def _seeded_generator(seed: int, device: torch.device) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


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
        self._layout = None  # (kind, size) of a data-less observation (a loaded model's)
        self.data = self._as_message(data, "observation")
        # (Samples checks finiteness and names the index)

    @classmethod
    def without_data(cls, name: str, kind: str, size: int | None, device="cpu") -> "Observation":
        """An observation that holds no data, only what it would send (``kind``, ``size``): the
        data node of a trained model loaded for prediction (:func:`serket.model.load_model`)."""
        node = cls.__new__(cls)
        Node.__init__(node, name, device)
        node._digest, node.data, node._layout = None, None, (kind, size)
        return node

    def _as_message(self, data, what: str) -> Message:
        name = self.name
        if isinstance(data, Message):  # e.g. padded speech frames as a Sequences message
            if data.n_items == 0:
                raise GraphError(f"{what} {name!r} is empty")
            return data.to(self._device)
        if not isinstance(data, torch.Tensor):
            data = torch.as_tensor(np.asarray(data))
        if data.ndim < 1 or data.shape[0] == 0:
            raise GraphError(f"{what} {name!r} is empty (shape {tuple(data.shape)})")
        data = data.reshape(data.shape[0], -1)
        return Samples(as_float_data(data, f"{what} {name!r}")).to(self._device)

    def new_items(self, data) -> Message:
        """New data for this observation (prediction on new items), as the message it would
        publish: the same kind and width as the data it was built with, or a named error."""
        message = self._as_message(data, "new data for observation")
        kind, size = self.layout
        if message.kind != kind or (size is not None and message.size != size):
            raise DataError(f"new data for observation {self.name!r}: a {message.kind!r} message of width "
                            f"{message.size}, but the observation was built on {kind!r} of width {size}")
        return message

    @property
    def layout(self) -> tuple[str, int | None]:
        """``(kind, size)`` of what the observation sends."""
        return self._layout if self.data is None else (self.data.kind, self.data.size)

    def ports(self):
        kind, size = self.layout
        return {"out": Port("out", sends=(kind,), size=size, doc="observed data")}

    def data_digest(self) -> str:
        """sha256 of the observed data (every tensor of the message, with shapes and dtypes),
        computed once: checkpoints record it so that a run resumes only on the same data."""
        if self._digest is None and self.data is None:
            self._digest = "no data"
        if self._digest is None:
            digest = hashlib.sha256()
            for field, tensor in self.data._tensors().items():
                tensor = tensor.detach().cpu().contiguous()
                digest.update(f"{field}:{tuple(tensor.shape)}:{tensor.dtype}\n".encode())
                if tensor.numel():  # the bytes in place, not a copy of them
                    digest.update(tensor.view(torch.uint8).numpy())
            self._digest = digest.hexdigest()
        return self._digest

    def publish(self):
        return {} if self.data is None else {"out": self.data}

    def to(self, device):
        # the data are a setting, not learned state: given again by whoever builds the graph,
        # never saved; they follow the node to its device
        super().to(device)
        if self.data is not None:
            self.data = self.data.to(self._device)
        return self

    @property
    def n_items(self) -> int:
        return 0 if self.data is None else self.data.n_items


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

    The joint fit (on by default): when every member implements
    :class:`~serket.inference.SharedCategory`, the combiner fits the shared category jointly at
    each update once every member has reported — :class:`~serket.inference.JointCategoryFit`,
    EM over all members from their consensus, the last fit and ``restarts`` fresh starts, the
    likeliest installed in every member — and the priors carry the others' log likelihoods
    under the installed fit. Where a member does not implement the protocol (or ``restarts`` is
    None) the combiner only aligns and multiplies the messages, as above.

    Args:
        name: node name (the shared variable, e.g. ``"category"``).
        n_categories: K.
        smoothing: weight of the uniform distribution mixed into each prior.
        temperature: exponent applied to each incoming posterior before the product (1 = plain
            product; < 1 softens over-confident modules).
        prior_exponent: per member (by module name), an exponent applied to the prior it is
            sent (default 1). A module that applies its prior to every one of its tokens (an
            LDA with ``n`` tokens per document applies it ``n`` times) can be sent
            ``p ** (1 / n)`` this way.
        evidence_weight: per member (by module name), the weight of its evidence in the joint
            fit and in the category message it sends (default 1), handed to the member's
            ``category_join`` when the connection is made: a module whose items hold fewer
            independent observations than they seem (correlated tokens) counts less.
        restarts: fresh starts of the joint fit; ``None``: no joint fit, the messages are only
            multiplied.
        em_iterations: the most EM iterations per start of the joint fit.
        seed: seeds the generator of the joint fit's fresh starts.
    """

    def __init__(self, name: str, n_categories: int, *, smoothing: float = 0.01, temperature: float = 1.0,
                 prior_exponent: dict[str, float] | None = None, evidence_weight: dict[str, float] | None = None,
                 restarts: int | None = DEFAULT_RESTARTS, em_iterations: int = DEFAULT_EM_ITERATIONS,
                 seed: int = 0, device="cpu"):
        super().__init__(name, device)
        owner = f"combiner {name!r}"
        self.n_categories = check_int(owner, "n_categories", n_categories, minimum=1)
        self.smoothing = check_real(owner, "smoothing", smoothing, minimum=0.0)
        if not self.smoothing < 1.0:
            raise ConfigError(f"{owner}: smoothing must be a finite number in [0, 1), got {smoothing!r}")
        self.temperature = check_real(owner, "temperature", temperature, above=0.0)
        self.prior_exponent = _per_member(owner, "prior_exponent", prior_exponent)
        self.evidence_weight = _per_member(owner, "evidence_weight", evidence_weight)
        self.restarts = check_int(owner, "restarts", restarts, minimum=0, none=True)
        self.em_iterations = check_int(owner, "em_iterations", em_iterations, minimum=1)
        self.seed = check_int(owner, "seed", seed, minimum=0)
        self.members: list[str] = []  # filled by the graph, one per connected module
        self._member_ports: dict[str, tuple] = {}  # member -> (module, port), for the joint fit
        self.joint_fit: JointCategoryFit | None = None  # None: the messages are only multiplied
        self.generator_ = _seeded_generator(self.seed, self._device)
        self.permutations_: dict[str, torch.Tensor] = {}
        self.priors_: dict[str, Categorical] = {}
        # the responsibilities of the last joint fit, installed in every member (whose labels
        # are the combiner's from then on); None before the first
        self.joint_responsibilities_: torch.Tensor | None = None
        self.joint_log_likelihoods_: list[float] = []  # of each start, in the last joint fit
        self.chosen_start_: int | None = None  # 0: from the current consensus, then the last fit, then fresh

    def add_member(self, module_name: str, module=None, port: str | None = None) -> None:
        """Connect a module's categorical ``port`` (the graph calls this when it makes the
        connection). A member implementing :class:`~serket.inference.SharedCategory` joins on
        ``port`` with its evidence weight; the joint fit is used while every member does."""
        if module_name in self.members:
            raise GraphError(f"combiner {self.name!r} is already connected to {module_name!r}")
        self.members.append(module_name)
        if module is None:
            self.joint_fit = None
            return
        self._member_ports[module_name] = (module, port)
        if isinstance(module, SharedCategory):
            module.category_join(port, self.evidence_weight.get(module_name, 1.0))
        shared = all(isinstance(self._member_ports.get(m, (None,))[0], SharedCategory) for m in self.members)
        self.joint_fit = None if not shared or self.restarts is None else JointCategoryFit(
            {m: self._member_ports[m] for m in self.members}, restarts=self.restarts, em_iterations=self.em_iterations)

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
            check_items(self, f"the posterior from {m!r}", probs.shape[0], f"the one from {present[0]!r}", n)
            if self.joint_responsibilities_ is not None:
                # the members adopted the last joint fit's labels: nothing to align (aligning
                # posteriors that are each ambiguous alone could only scramble them)
                perm = torch.arange(self.n_categories, device=probs.device)
            else:
                perm = align_permutation(reference, probs)
            self.permutations_[m] = perm
            aligned[m] = probs[:, perm]
        logs = {m: torch.log(p.clamp_min(_PROB_FLOOR)) * self.temperature for m, p in aligned.items()}
        total = sum(logs.values())
        if self.joint_fit is not None and len(present) == len(self.members):
            fit = self.joint_fit.fit(torch.softmax(total, 1), self.joint_responsibilities_, self.generator_)
            self.joint_responsibilities_ = fit.responsibilities.float()
            self.joint_log_likelihoods_, self.chosen_start_ = fit.start_scores, fit.chosen
            logs = {m: ll * self.temperature for m, ll in fit.log_likelihoods.items()}
            self.permutations_ = {m: torch.arange(self.n_categories, device=total.device) for m in present}
            total = sum(logs.values())
        self.priors_ = self._priors(logs, total, present, self.permutations_)

    def _priors(self, logs: dict, total: torch.Tensor, present: list, permutations: dict) -> dict:
        """Each member's prior: the product of the other members' aligned posteriors (``logs``,
        their sum ``total``), smoothed, in the member's own label order."""
        priors = {}
        uniform = 1.0 / self.n_categories
        # a member that has not reported yet (no labels of its own so far) gets the product of
        # all those that have, in the reference's label order, and starts from their categories
        for m in self.members:
            if m in present and len(present) < 2:
                continue  # a lone member gets no prior from itself
            others = total - logs[m] if m in present else total
            product = torch.softmax(self.prior_exponent.get(m, 1.0) * others, dim=1)
            prior_aligned = (1 - self.smoothing) * product + self.smoothing * uniform
            if m not in present:
                priors[m] = Categorical((prior_aligned / prior_aligned.sum(dim=1, keepdim=True)).float())
                continue
            # back to the member's own label order: its category perm[j] is reference's j
            prior = torch.empty_like(prior_aligned)
            prior[:, permutations[m]] = prior_aligned
            priors[m] = Categorical((prior / prior.sum(dim=1, keepdim=True)).float())
        return priors

    def infer(self, **posteriors):
        """For new items: each member's prior (the smoothed product of the other members'
        posteriors given here, aligned with the labels learned in training), as :meth:`update`
        computes it, but without aligning anew or refitting. Any subset of members may be
        given; a member not given receives the product of all given."""
        logs = {m: torch.log(p.probs[:, self._learned_permutation(m)].clamp_min(_PROB_FLOOR)) * self.temperature
                for m, p in posteriors.items()}
        total = sum(logs.values())
        return self._priors(logs, total, list(posteriors), {m: self._learned_permutation(m) for m in self.members})

    def _learned_permutation(self, member: str) -> torch.Tensor:
        # after a joint fit every member speaks the combiner's labels; before one, the last
        # alignment found in training (none yet: the member's own order)
        if self.joint_responsibilities_ is None and member in self.permutations_:
            return self.permutations_[member]
        return torch.arange(self.n_categories, device=self._device)

    def _categories(self, given, inferred):
        """The shared category of each new item: the argmax of the product of the aligned
        posteriors given (the consensus, in the labels :meth:`predict` uses)."""
        total = sum(torch.log(p.probs[:, self._learned_permutation(m)].clamp_min(_PROB_FLOOR))
                    for m, p in given.items())
        return total.argmax(dim=1)

    def publish(self):
        return dict(self.priors_)

    def consensus(self) -> torch.Tensor | None:
        """The product of all aligned posteriors, in the first member's label order (after a
        joint fit: its responsibilities)."""
        if self.joint_responsibilities_ is not None:
            return self.joint_responsibilities_
        present = [m for m in self.members if m in self.inbox]
        if not present:
            return None
        reference = self.inbox[present[0]].probs
        total = 0
        for m in present:
            probs = self.inbox[m].probs
            total = total + torch.log(probs[:, align_permutation(reference, probs)].clamp_min(_PROB_FLOOR))
        return torch.softmax(total, dim=1)

    def predict(self):
        joint = self.consensus()
        return None if joint is None else joint.argmax(dim=1)

    def to(self, device):
        device = resolve_device(device, self)
        if self.generator_.device.type != device.type:
            # a generator cannot move between devices: a fresh one there, from the node's seed
            self.generator_ = _seeded_generator(self.seed, device)
        return super().to(device)


def _per_member(owner: str, setting: str, values) -> dict[str, float]:
    """A per-member option of a combiner: ``{module name: positive number}``."""
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{owner}: {setting} must be a dict of module name -> number, got {values!r}")
    return {k: check_real(owner, f"{setting}[{k!r}]", v, above=0.0) for k, v in values.items()}


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


# items whose N-best hypotheses a head-to-head node scores at once
_ROW_BLOCK = 256


def _row_blocks(n: int):
    """Slices of ``_ROW_BLOCK`` rows covering ``range(n)``."""
    return [slice(start, min(start + _ROW_BLOCK, n)) for start in range(0, n, _ROW_BLOCK)]


def _blocks_by_length(hyps: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """N-best hypotheses (N, B, L), padded with -1, in blocks of ``_ROW_BLOCK`` items of similar
    length: ``[(item indices, their hypotheses without the padding none of them uses)]``.

    The message is padded to the longest utterance of all; scored in that shape, every item
    would cost as much as the longest. Items ordered by length (stably) and cut to the longest
    of their block cost what their own words cost: a round grows with the number of frames."""
    # an item's length: one past its last word in any hypothesis (padding need not be a suffix)
    position = torch.arange(1, hyps.shape[2] + 1, device=hyps.device)
    lengths = torch.cat([((hyps[rows] >= 0).any(1) * position).amax(1) for rows in _row_blocks(hyps.shape[0])]) \
        if hyps.shape[0] and hyps.shape[2] else torch.zeros(hyps.shape[0], dtype=torch.long, device=hyps.device)
    order = torch.argsort(lengths, stable=True)
    blocks = []
    for rows in _row_blocks(hyps.shape[0]):
        index = order[rows]
        width = int(lengths[index].max())
        blocks.append((index, hyps[index, :, :width]))
    return blocks


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
        self.generator_ = _seeded_generator(self.seed, self._device)
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
        blocks = _blocks_by_length(prop.hypotheses) if isinstance(prop, NBest) else None
        if isinstance(prop, NBest):
            self.outgoing_["weighter"] = self.bag_of_words(prop, blocks)
        if prop is None or weigh is None:
            return
        check_items(self, "what the proposer sent", prop.n_items, "what the weighter sent", weigh.n_items)
        if isinstance(prop, NBest) and isinstance(weigh, Categorical):
            hyps = prop.hypotheses
            if hyps.numel() and int(hyps.max()) >= weigh.size:
                raise MessageError(
                    f"head-to-head {self.name!r}: a hypothesis uses word id {int(hyps.max())} but "
                    f"the weighter's vocabulary has {weigh.size} words"
                )
            logp = torch.log(weigh.probs.clamp_min(_PROB_FLOOR))
            # a block of items at a time: the (N, B, L) temporaries (int64 ids, their log
            # probabilities) would be the largest tensors of a run; each row is computed as a whole
            log_w = torch.empty(hyps.shape[:2], dtype=logp.dtype, device=hyps.device)
            for index, block in blocks:
                valid = block >= 0
                word_logp = torch.gather(logp[index], 1, block.clamp_min(0).flatten(1).long()).view_as(block)
                log_w[index] = (word_logp * valid).sum(dim=2).masked_fill_(~valid.any(dim=2), float("-inf"))
            self.chosen_ = sir_resample(prop.log_scores, log_w, self.generator_)
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

    def infer(self, **messages):
        """For new items: what the common child passes on without resampling. N-best hypotheses
        from the proposer reach the weighter as a bag of words (the words it observes); a
        Gaussian expert from either parent reaches the other. Resampling is learning (it
        feeds the proposer's relearning) and does not happen here."""
        out = {}
        prop, weigh = messages.get("proposer"), messages.get("weighter")
        if isinstance(prop, NBest):
            out["weighter"] = self.bag_of_words(prop)
        elif isinstance(prop, Gaussian):
            out["weighter"] = prop
        if isinstance(weigh, Gaussian):
            out["proposer"] = weigh
        return out

    def bag_of_words(self, nbest: NBest, blocks=None) -> Counts:
        """Expected word counts per item under the normalised hypothesis scores (N, V);
        ``blocks``: the hypotheses in blocks by length, if already made."""
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
        n, b = hyps.shape[:2]
        counts = torch.zeros(n, vocab, device=hyps.device, dtype=weights.dtype)
        for index, block in blocks if blocks is not None else _blocks_by_length(hyps):  # as in update
            valid = block >= 0
            width = b * block.shape[2]
            contrib = (weights[index].unsqueeze(2) * valid).reshape(block.shape[0], width)
            counts[index] = counts[index].scatter_add_(1, block.clamp_min(0).reshape(block.shape[0], width).long(),
                                                       contrib)
        return Counts(counts)

    def publish(self):
        return dict(self.outgoing_)

    def to(self, device):
        device = resolve_device(device, self)
        if device != self._device:
            # a generator cannot move between devices: a fresh one on the new device, seeded
            # from the node's seed, so that runs stay reproducible per device
            self.generator_ = _seeded_generator(self.seed, device)
        return super().to(device)
