"""Multimodal latent Dirichlet allocation (mLDA) learned by collapsed Gibbs sampling, vectorised.

Generative model, for ``K`` topics, documents (items) ``d = 1..D`` and modalities ``m = 1..M``
with vocabularies of ``V_m`` words::

    theta_d ~ Dirichlet(alpha, ..., alpha)                 one topic mixture per document
    phi_{k,m} ~ Dirichlet(beta, ..., beta)                 one word distribution per topic and modality
    z_i ~ Categorical(theta_d) x prior_d                   each token of document d
    w_i | z_i = k ~ Categorical(phi_{k,m})                 in its modality m

The topics are shared by the modalities, so a document's words in one modality tell its
topics in the others (the multimodal LDA of SERKET and Neuro-SERKET). ``theta`` and ``phi`` are
integrated out; only the token topics ``z`` are sampled. With counts ``n_dk`` (tokens of
document ``d`` in topic ``k``), ``n_kw`` (tokens of word ``w`` in topic ``k``) and ``n_km``
(tokens of modality ``m`` in topic ``k``), a token's conditional given all the others is::

    p(z_i = k | z_-i, w) ∝ (n_dk^-i + alpha) * prior[d, k] * (n_kw^-i + beta) / (n_km^-i + V_m beta)

where ``^-i`` means "without token i". ``prior`` is the optional per-document categorical
message on port ``c``, a *potential on every token's topic*: the chain's target is
``p(z | w) * prod_i prior[d_i, z_i]``. Without a message it is uniform and drops out.

**Tokens.** Each document's counts in modality ``m`` are scaled to ``T_m = round(tokens *
weight_m)`` tokens (100 by default, as published) by largest remainders
(:func:`scale_counts`): the exact shares ``c_v * T_m / sum(c)`` are floored, and the tokens
still missing go one each to the words with the largest fractional parts (ties to the lower
word id), so every non-empty document has exactly ``T_m`` integer tokens and no word is off by
one or more from its exact share. A categorical message on a modality port (a distribution over
words) is scaled the same way, i.e. read as expected counts times ``T_m``. With
``tokens=None`` the counts are used as given and must be whole numbers. A document whose row is
all zeros gets no tokens: that is allowed; its topic distribution is then its prior (uniform
without one), and it sends a uniform message on ``c``.

**Blocked, vectorised sampling.** Tokens live in flat tensors (document, word, modality,
topic). A sweep visits them in a random order that interleaves documents — a token of every
document (documents in a random order), then the next token of every document, and so on, each
document's tokens taken cyclically from a random first one (:func:`visiting_order`) — and
draws ``block_size`` consecutive tokens of that order together: each from its conditional
given the counts *before* the block, less its own token, by one inverse-CDF draw per token;
the counts are then updated with ``index_add_``. ``block_size=1`` is the exact
sequential collapsed Gibbs sampler (random scan order). Larger blocks are a parallel
approximation: tokens of a block do not see each other's new topics. With the default
``block_size`` (the number of documents) a block holds at most one token of each document when
documents have equal lengths, so the document-topic counts every token sees are exact and only
the topic-word counts lag by one block — the approximation of AD-LDA (Newman et al., 2009),
which is small once each word's count is spread over many documents and large when one token
is much of a word's count (``tests/test_lda.py`` measures the worst case on a 4-token corpus;
``benchmarks/bench_lda.py`` compares block sizes on a corpus of the benchmark's size).

**Messages.** Port ``c`` sends ``topic_proportions_``: the posterior mean of ``theta_d`` given
the topics, ``(n_dk + alpha) / (n_d + K alpha)``, *without* the received prior. The module's
belief about a new token's topic is ``topic_posterior_ ∝ (n_dk + alpha) prior[d, k]``; divided
by the incoming message it leaves exactly ``topic_proportions_``, so a tail-to-tail combiner
that multiplies the other modules' messages does not count this module's prior twice. (Dividing
``n_dk + alpha`` itself by the prior would not work: the prior acts on every one of the
document's tokens, not once, and dividing once over-corrects a document the prior has moved.)
The prior still shapes ``n_dk`` through the sampled topics, as a GMM's prior shapes its
clusters. Each modality port sends ``P(w | d) = sum_k topic_posterior_[d, k] phi_{k,w}``, the
predictive distribution of a new word of document ``d`` (prior included), which a recogniser
uses to weight its hypotheses. :meth:`LDA.predict` is the argmax of ``topic_posterior_``.

**A shared category.** Topic proportions are a mixture weight, too flat to say which single
category a document belongs to. Once the module has joined a shared category
(:meth:`LDA.category_join`, called by the tail-to-tail connection), it reads a topic as a
category of whole documents instead (the mixture-of-unigrams reading): port ``c`` sends
:meth:`LDA.category_likelihood`, how well each topic alone explains the document, scaled by the
connection's evidence weight, and :meth:`LDA.predict` is the argmax of
:meth:`LDA.category_posterior`, the same with the received prior.

**New documents.** :meth:`LDA.infer` folds new documents in (:func:`fold_in`): their tokens'
topics are Gibbs-sampled with each topic's word distributions held fixed at ``topic_word_``,
and it returns the messages :meth:`LDA.publish` would send for them, on ``c`` the same reading
(topic proportions, or once joined the single-topic likelihood, which is closed form). Nothing
it learned changes; the draws come from a fresh stream, so infer is repeatable.

**Warm starts.** The first update draws every token's topic uniformly. A later update with the
same scaled counts continues from the current topics. If the counts change (the recogniser
relearned and sent new bags of words) the token list is rebuilt and each new token's topic is
drawn from its document's current ``topic_proportions_`` (so the documents keep their topics
and labels across rounds); if the number of documents changes, the topics start afresh.

The arithmetic lives in pure functions beside the class (:func:`scale_counts`,
:func:`build_tokens`, :func:`topic_counts`, :func:`visiting_order`, :func:`gibbs_sweep`,
:func:`collapsed_log_joint`, :func:`topic_proportions`, :func:`topic_word`, :func:`fold_in`). Counts are kept
in float32 (exact integers up to 2^24 tokens; float64 beyond).
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import torch

from serket.clustering import kmeans_pp_start
from serket.errors import ConfigError, DataError, MessageError
from serket.inference import SharedCategory, best_of
from serket.messages import Categorical, Counts, Message
from serket.module import Module, Port, derive_seed
from serket.validation import check_int, check_items, check_real

__all__ = [
    "LDA",
    "Tokens",
    "TopicCounts",
    "scale_counts",
    "build_tokens",
    "topic_counts",
    "visiting_order",
    "gibbs_sweep",
    "collapsed_log_joint",
    "topic_proportions",
    "topic_word",
    "fold_in",
]

# a probability is floored here before its log: a zero is a large finite penalty, not -inf
_LOG_FLOOR = 1e-30
# keeps a divisor or a log's argument off exact zero, where the result is masked or never matters
_NONZERO = 1e-300
# float32 holds every integer below this exactly: counts of fewer tokens are kept in float32
_FLOAT32_EXACT_COUNTS = 2 ** 24


class Tokens(NamedTuple):
    """A corpus as flat token tensors, sorted by document (then word id).

    ``words`` are global word ids: modality ``m``'s word ``v`` is ``offset_m + v``, the
    modalities' vocabularies laid end to end.
    """

    docs: torch.Tensor  # (T,) long
    words: torch.Tensor  # (T,) long, global word ids
    modalities: torch.Tensor  # (T,) long
    starts: torch.Tensor  # (D,) long: index of each document's first token
    lengths: torch.Tensor  # (D,) long: tokens per document
    max_length: int
    n_docs: int

    @property
    def n_tokens(self) -> int:
        return self.docs.shape[0]


class TopicCounts(NamedTuple):
    """The sufficient statistics of the token topics (float tensors holding exact integers)."""

    doc_topic: torch.Tensor  # (D, K): n_dk
    word_topic: torch.Tensor  # (V_total, K): n_kw, one row per global word id
    modality_topic: torch.Tensor  # (M, K): n_km


# --- the mathematics -----------------------------------------------------------------------------
def scale_counts(counts: torch.Tensor, total: int) -> torch.Tensor:
    """Scale each non-zero row of ``counts`` (N, V) to ``total`` integer tokens: (N, V) long.

    Largest remainders: floor the exact shares ``c_v * total / sum(c)``, then give the tokens
    still missing one each to the words with the largest fractional parts (ties to the lower
    word id). Rows of zeros stay zeros.
    """
    counts = counts.to(torch.float64)
    n, vocab = counts.shape
    sums = counts.sum(1, keepdim=True)
    filled = sums > 0
    exact = torch.where(filled, counts * (float(total) / sums.clamp_min(_NONZERO)), 0.0)
    floor = exact.floor()
    missing = torch.where(filled, float(total) - floor.sum(1, keepdim=True), 0.0).clamp(0, vocab)
    fraction = exact - floor
    order = torch.sort(fraction, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(vocab, device=counts.device).expand(n, vocab))
    return (floor + (rank < missing).to(torch.float64)).long()


def build_tokens(doc_word_counts: torch.Tensor, word_modality: torch.Tensor) -> Tokens:
    """Flat tokens from per-document counts (D, V_total) long over the global vocabulary."""
    n_docs, vocab = doc_word_counts.shape
    device = doc_word_counts.device
    cell = torch.repeat_interleave(torch.arange(n_docs * vocab, device=device), doc_word_counts.flatten())
    docs, words = cell // vocab, cell % vocab
    lengths = doc_word_counts.sum(1)
    starts = lengths.cumsum(0) - lengths
    max_length = int(lengths.max()) if n_docs else 0
    return Tokens(docs, words, word_modality[words], starts, lengths, max_length, n_docs)


def _onehot(labels: torch.Tensor, n_topics: int, dtype) -> torch.Tensor:
    # a comparison, not F.one_hot: F.one_hot checks the range on the host, a sync on CUDA
    return (labels[:, None] == torch.arange(n_topics, device=labels.device)).to(dtype)


def topic_counts(tokens: Tokens, topics: torch.Tensor, n_topics: int, vocab_total: int,
                 n_modalities: int, dtype=torch.float32) -> TopicCounts:
    """Count the tokens by (document, topic), (word, topic) and (modality, topic)."""
    device = topics.device
    onehot = _onehot(topics, n_topics, dtype)
    doc_topic = torch.zeros(tokens.n_docs, n_topics, dtype=dtype, device=device).index_add_(0, tokens.docs, onehot)
    word_topic = torch.zeros(vocab_total, n_topics, dtype=dtype, device=device).index_add_(0, tokens.words, onehot)
    modality_topic = torch.zeros(n_modalities, n_topics, dtype=dtype, device=device).index_add_(
        0, tokens.modalities, onehot)
    return TopicCounts(doc_topic, word_topic, modality_topic)


def visiting_order(tokens: Tokens, generator: torch.Generator) -> torch.Tensor:
    """A random order of the tokens that interleaves documents: (T,) long token indices.

    Row ``j`` of the order holds a ``j``-th token of every document that has more than ``j``
    tokens, the documents in a random order (the same for every row). Each document's tokens are
    visited cyclically from a random first token: a random rotation rather than a random
    permutation, because sorting 300,000 keys costs more than the whole sweep on a CPU, and any
    order chosen without looking at the topics leaves the posterior invariant. A run of up to D
    consecutive tokens of the order holds at most one token per document when the documents
    have equal lengths.
    """
    n_docs, length, device = tokens.n_docs, tokens.max_length, tokens.docs.device
    n = tokens.n_tokens
    lengths = tokens.lengths[:, None]
    rank = torch.arange(length, device=device)
    valid = rank < lengths  # (D, L)
    first = (torch.rand(n_docs, 1, generator=generator, device=device, dtype=torch.float64) * lengths).long()
    position = (rank + first) % lengths.clamp_min(1)
    doc_order = torch.randperm(n_docs, generator=generator, device=device)
    index = (tokens.starts[:, None] + position).index_select(0, doc_order).T.flatten()
    valid = valid.index_select(0, doc_order).T.flatten()
    # drop the padding without a host sync: each valid entry goes to its rank, padding to slot n
    slot = torch.where(valid, valid.cumsum(0) - 1, n)
    order = torch.empty(n + 1, dtype=torch.long, device=device)
    order.scatter_(0, slot, index)
    return order[:n]


def gibbs_sweep(tokens: Tokens, topics: torch.Tensor, counts: TopicCounts, *, alpha: float, beta: float,
                vocab_beta: torch.Tensor, block_size: int, generator: torch.Generator,
                doc_prior: torch.Tensor | None = None) -> torch.Tensor:
    """One sweep of blocked collapsed Gibbs sampling over every token.

    Args:
        tokens: the corpus (:func:`build_tokens`).
        topics: (T,) long, updated in place.
        counts: the statistics of ``topics`` (:func:`topic_counts`), updated in place.
        alpha, beta: the symmetric Dirichlet parameters of theta and phi.
        vocab_beta: (M,) ``V_m * beta`` per modality, in the counts' dtype.
        block_size: tokens drawn together (1: exact sequential Gibbs).
        generator: the random stream (a visiting order, then one uniform per token).
        doc_prior: optional (D, K) potential on each document's token topics (port ``c``).

    Returns the number of tokens whose topic changed (a 0-d tensor, left on the device).
    """
    n = tokens.n_tokens
    doc_topic, word_topic, modality_topic = counts
    n_topics, dtype = doc_topic.shape[1], doc_topic.dtype
    # rows of the identity are the one-hot topic vectors: one gather instead of a compare and a cast
    onehot = torch.eye(n_topics, dtype=dtype, device=topics.device)
    order = visiting_order(tokens, generator)
    uniform = torch.rand(n, 1, generator=generator, dtype=dtype, device=topics.device)
    # work in visiting order, so that each block is a slice, not a gather
    docs, words, modalities, current = (t.index_select(0, order) for t in tokens[:3] + (topics,))
    before = current.clone()
    for start in range(0, n, block_size):
        block = slice(start, start + block_size)
        d, w, m, old = docs[block], words[block], modalities[block], current[block]
        own = onehot.index_select(0, old)
        # the counts without each token itself; index_select returns copies, so in place is safe
        # (and is several times faster than advanced indexing on a CPU)
        weight = doc_topic.index_select(0, d).add_(alpha).sub_(own)
        weight.mul_(word_topic.index_select(0, w).add_(beta).sub_(own))
        weight.div_((modality_topic + vocab_beta[:, None]).index_select(0, m).sub_(own))
        if doc_prior is not None:
            weight.mul_(doc_prior.index_select(0, d))
        # inverse CDF: the first topic whose cumulative weight reaches u * total
        cumulative = weight.cumsum_(1)
        new = torch.searchsorted(cumulative, uniform[block] * cumulative[:, -1:]).squeeze(1).clamp_(max=n_topics - 1)
        delta = onehot.index_select(0, new).sub_(own)
        doc_topic.index_add_(0, d, delta)
        word_topic.index_add_(0, w, delta)
        modality_topic.index_add_(0, m, delta)
        current[block] = new
    topics.index_copy_(0, order, current)
    return (current != before).sum()


def collapsed_log_joint(doc_topic: torch.Tensor, word_topic: torch.Tensor, vocab_sizes, alpha: float,
                        beta: float) -> torch.Tensor:
    """``log p(w, z)`` with theta and phi integrated out (0-d float64 tensor).

    ``doc_topic`` (D, K) and ``word_topic`` (V_total, K) are the counts; ``vocab_sizes`` the
    modalities' V_m in the order their words are laid out. Each document contributes
    ``log B(n_d. + alpha) - log B(alpha)``, each topic and modality
    ``log B(n_k.m + beta) - log B(beta)`` (B: the multivariate beta function).
    """
    doc_topic, word_topic = doc_topic.to(torch.float64), word_topic.to(torch.float64)
    n_docs, n_topics = doc_topic.shape
    total = (n_docs * (math.lgamma(n_topics * alpha) - n_topics * math.lgamma(alpha))
             + torch.lgamma(doc_topic + alpha).sum() - torch.lgamma(doc_topic.sum(1) + n_topics * alpha).sum())
    offset = 0
    for vocab in vocab_sizes:
        counts = word_topic[offset:offset + vocab]
        offset += vocab
        total = total + (n_topics * (math.lgamma(vocab * beta) - vocab * math.lgamma(beta))
                         + torch.lgamma(counts + beta).sum() - torch.lgamma(counts.sum(0) + vocab * beta).sum())
    return total


def topic_proportions(doc_topic: torch.Tensor, alpha: float, doc_prior: torch.Tensor | None = None) -> torch.Tensor:
    """Each document's topic distribution ``∝ (n_dk + alpha) * prior[d, k]``: (D, K) float64.

    Without ``doc_prior`` this is the posterior mean of theta_d given the topics.
    """
    weight = doc_topic.to(torch.float64) + alpha
    if doc_prior is not None:
        weight = weight * doc_prior.to(torch.float64)
    return weight / weight.sum(1, keepdim=True)


def topic_word(word_topic: torch.Tensor, vocab_sizes, beta: float) -> list[torch.Tensor]:
    """Each modality's posterior mean ``phi_{k,m} = (n_kw + beta) / (n_km + V_m beta)``: (K, V_m) float64."""
    out, offset = [], 0
    for vocab in vocab_sizes:
        counts = word_topic[offset:offset + vocab].T.to(torch.float64) + beta
        out.append(counts / counts.sum(1, keepdim=True))
        offset += vocab
    return out


def fold_in(doc_word_counts: torch.Tensor, phi: torch.Tensor, *, alpha: float, sweeps: int, burn_in: int,
            generator: torch.Generator, doc_prior: torch.Tensor | None = None) -> torch.Tensor:
    """Topic proportions of new documents, with the topics held fixed: (D, K) float64.

    ``doc_word_counts`` (D, V_total) long: the new documents' tokens over the global vocabulary;
    ``phi`` (V_total, K): each word's probability under each topic (every modality's rows, each
    topic's column summing to one within a modality). With phi fixed, the documents are
    independent and each token's topic has the conditional

        p(z_i = k | z_-i, w) ∝ (n_dk^-i + alpha) * prior[d, k] * phi_{k, w_i}

    Gibbs sampling visits each document's tokens cyclically from a random first one, one token
    of every document at a time: with phi fixed no two documents share a count, so this is the
    exact sequential sampler of every document at once. The topics start from ``phi_{k, w_i}
    prior[d, k]`` (each token alone). The result is ``(n_dk + alpha) / (n_d + K alpha)``, the
    posterior mean of theta_d given the topics, averaged over the sweeps after ``burn_in``: an
    estimate of E[theta_d | w_d, phi] with less noise than one draw. ``doc_prior`` (D, K) is a
    potential on every token's topic, as in :func:`gibbs_sweep`; it is not divided out here.
    A document without tokens gets uniform proportions.
    """
    n_docs, vocab = doc_word_counts.shape
    n_topics, device = phi.shape[1], phi.device
    phi = phi.to(torch.float64)
    lengths = doc_word_counts.sum(1)
    length = int(lengths.max()) if n_docs else 0
    # each document's tokens in a (D, L) table, padded at the end
    cell = torch.repeat_interleave(torch.arange(n_docs * vocab, device=device), doc_word_counts.flatten())
    docs, words = cell // vocab, cell % vocab
    starts = lengths.cumsum(0) - lengths
    position = torch.arange(docs.shape[0], device=device) - starts[docs]
    table = torch.zeros(n_docs, max(length, 1), dtype=torch.long, device=device)
    table[docs, position] = words
    valid = torch.arange(table.shape[1], device=device)[None, :] < lengths[:, None]
    prior = None if doc_prior is None else doc_prior.to(torch.float64)

    def draw(weight):  # inverse CDF, one uniform per row
        cumulative = weight.cumsum(-1)
        u = torch.rand(cumulative.shape[:-1] + (1,), generator=generator, dtype=torch.float64, device=device)
        return torch.searchsorted(cumulative, u * cumulative[..., -1:]).squeeze(-1).clamp_(max=n_topics - 1)

    start = phi[table]  # (D, L, K)
    if prior is not None:
        start = start * prior[:, None, :]
    topics = draw(start)
    onehot = torch.eye(n_topics, dtype=torch.float64, device=device)
    doc_topic = (onehot[topics] * valid[..., None]).sum(1)
    rows = torch.arange(n_docs, device=device)
    denominator = (lengths.to(torch.float64) + n_topics * alpha)[:, None]
    total = torch.zeros(n_docs, n_topics, dtype=torch.float64, device=device)
    kept = 0
    for sweep in range(sweeps):
        first = (torch.rand(n_docs, generator=generator, dtype=torch.float64, device=device) * lengths).long()
        for j in range(length):
            live = valid[:, j]
            pos = (first + j) % lengths.clamp_min(1)
            old = topics[rows, pos]
            own = onehot[old]
            weight = (doc_topic - own + alpha) * phi[table[rows, pos]]
            if prior is not None:
                weight = weight * prior
            new = torch.where(live, draw(weight), old)
            doc_topic += onehot[new] - own
            topics[rows, pos] = new
        if sweep >= burn_in:
            total += (doc_topic + alpha) / denominator
            kept += 1
    return total / kept


# --- the module ----------------------------------------------------------------------------------
class LDA(SharedCategory, Module):
    """Multimodal LDA over bags of words, learned by blocked collapsed Gibbs sampling.

    Args:
        name: the module's name in the graph.
        n_topics: K, the number of topics (the categories of port ``c``).
        vocab_sizes: the vocabulary size of each modality: a sequence ``(V_1, ...)`` (ports
            ``"w0"``, ``"w1"``, ...) or a dict ``{port name: V}``.
        alpha: the symmetric Dirichlet parameter of each document's topic proportions.
        beta: the symmetric Dirichlet parameter of each topic's word distributions.
        tokens: tokens per document and modality (times its weight) that the counts are scaled
            to, by largest remainders; ``None``: use the counts as given (whole numbers). The
            work of a sweep grows with the tokens, so a document may hold at most
            :attr:`MAX_TOKENS_PER_DOCUMENT` (10,000, a hundred times the published 100) over all
            its modalities: ``tokens`` times the weights beyond that is a ``ConfigError``, and
            with ``tokens=None`` a document whose counts add up to more is a ``DataError``.
        weights: per-modality multipliers of ``tokens`` (a sequence, or a dict by port name);
            default 1 each. A weight of 0 ignores a modality's words. With ``tokens=None`` they
            multiply the raw counts (rounded to whole tokens).
        sweeps: Gibbs sweeps per :meth:`update`.
        chains: independent chains run in the first update (from random topics); the one with
            the highest collapsed log joint is kept (1: a single chain).
        block_size: tokens drawn together in one step of a sweep (1: exact sequential Gibbs);
            ``None`` (default): the number of documents, one token per document per block.
        seed, device: see :class:`serket.module.Module`.

    Ports:
        one per modality (accepts ``counts`` or ``categorical``, sends ``categorical``, size
        V_m): bags of words in; out, ``P(w | d)``, each document's predictive word distribution.
        ``c`` (accepts ``categorical``, sends ``categorical``, size K): a per-document prior
        over topics in; out, ``topic_proportions_`` (without the prior), or once joined to a
        shared category :meth:`category_likelihood` (see the module docstring).

    Learned state (after :meth:`update`): ``topics_`` (T,) each token's topic,
    ``token_counts_`` (D, V_total) the scaled counts the tokens came from, ``doc_topic_counts_``
    (D, K), ``topic_word_counts_`` (K, V_total), ``topic_proportions_`` (D, K) (sent on
    ``c``), ``topic_posterior_`` (D, K) (with the prior; :meth:`predict` is its argmax),
    ``topic_word_`` ``{modality: (K, V_m)}`` (posterior mean phi), ``n_iter_`` (sweeps since
    the topics were initialised), ``changed_fraction_`` (tokens that changed topic in the last
    sweep), ``rebuilt_`` (whether the last update rebuilt the tokens from new counts),
    ``chain_log_joints_`` (each first-update chain's collapsed log joint), ``category_weight_``
    (the evidence weight of a shared category, set by :meth:`category_join`; None until joined).

    Example::

        >>> lda = LDA("lda", n_topics=3, vocab_sizes=(12,), sweeps=20)
        >>> topics = lda.fit_predict(w0=torch.randint(0, 5, (50, 12)))
        >>> lda.publish()["w0"].probs.shape
        torch.Size([50, 12])
    """

    #: The most tokens one document may hold, over all its modalities (see ``tokens``).
    MAX_TOKENS_PER_DOCUMENT = 10_000

    def __init__(self, name: str, n_topics: int = 10, vocab_sizes=None, *, alpha: float = 1.0,
                 beta: float = 1.0, tokens: int | None = 100, weights=None, sweeps: int = 100,
                 block_size: int | None = None, chains: int = 1, seed: int = 0, device="cpu"):
        super().__init__(name, seed=seed, device=device)
        if vocab_sizes is None:
            raise ConfigError(f"LDA {name!r}: vocab_sizes is required: (V_1, ...) or {{modality: V}}")
        if isinstance(vocab_sizes, dict):
            vocab = {str(k): v for k, v in vocab_sizes.items()}
        elif isinstance(vocab_sizes, (tuple, list)):
            vocab = {f"w{i}": v for i, v in enumerate(vocab_sizes)}
        else:
            raise ConfigError(f"LDA {name!r}: vocab_sizes must be a sequence or a dict of modality -> V, "
                              f"got {type(vocab_sizes).__name__}")
        if not vocab:
            raise ConfigError(f"LDA {name!r}: vocab_sizes must name at least one modality, got {vocab_sizes!r}")
        if "c" in vocab:
            raise ConfigError(f"LDA {name!r}: a modality cannot be named 'c' (the topic port)")
        vocab = {m: check_int(self, f"vocab_sizes[{m!r}]", v, minimum=1) for m, v in vocab.items()}
        weights = self._as_weights(name, vocab, weights)
        n_topics = check_int(self, "n_topics", n_topics, minimum=1)
        alpha = check_real(self, "alpha", alpha, above=0)
        beta = check_real(self, "beta", beta, above=0)
        check_real(self, "tokens", tokens, above=0, maximum=self.MAX_TOKENS_PER_DOCUMENT, none=True)
        sweeps = check_int(self, "sweeps", sweeps, minimum=1)
        block_size = check_int(self, "block_size", block_size, minimum=1, none=True)
        chains = check_int(self, "chains", chains, minimum=1)
        if not any(w > 0 for w in weights.values()):
            raise ConfigError(f"LDA {name!r}: weights must not all be 0 (no modality would give tokens), "
                              f"got {weights}")
        if tokens is not None:
            # the tokens each document gets, as _token_counts scales them
            per_document = sum(int(math.floor(tokens * w + 0.5)) for w in weights.values())
            if not 1 <= per_document <= self.MAX_TOKENS_PER_DOCUMENT:
                raise ConfigError(f"LDA {name!r}: tokens times the weights must give an integer in [1, "
                                  f"{self.MAX_TOKENS_PER_DOCUMENT}] tokens per document "
                                  f"(MAX_TOKENS_PER_DOCUMENT), got {per_document} from tokens={tokens!r}")
        self.n_topics = int(n_topics)
        self.vocab_sizes = {k: int(v) for k, v in vocab.items()}
        self.modalities = tuple(self.vocab_sizes)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.tokens = tokens
        self.weights = weights
        self.sweeps = sweeps
        self.block_size = block_size
        self.chains = chains
        self.chain_log_joints_: list[float] = []
        self.category_weight_ = None  # the evidence weight of a shared category, once joined
        self._vocab_total = sum(self.vocab_sizes.values())
        starts = itertools.accumulate(self.vocab_sizes.values(), initial=0)
        self._offsets = dict(zip(self.modalities, starts))  # where each modality's word ids begin
        self._clear_learned()

    def _as_weights(self, name, vocab, weights) -> dict[str, float]:
        if weights is None:
            return {m: 1.0 for m in vocab}
        if isinstance(weights, dict):
            unknown = set(weights) - set(vocab)
            if unknown:
                raise ConfigError(f"LDA {name!r}: weights name unknown modalities {sorted(unknown)}; "
                                  f"the modalities are {list(vocab)}")
            weights = {m: weights.get(m, 1.0) for m in vocab}
        else:
            if isinstance(weights, (str, bytes)) or not hasattr(weights, "__iter__"):
                raise ConfigError(f"LDA {name!r}: weights must be a sequence or a dict of modality -> weight, "
                                  f"got {weights!r}")
            weights = list(weights)
            if len(weights) != len(vocab):
                raise ConfigError(f"LDA {name!r}: weights must hold one weight per modality, got {len(weights)} "
                                  f"weights for {len(vocab)} modalities")
            weights = dict(zip(vocab, weights))
        return {m: check_real(self, f"weights[{m!r}]", w, minimum=0) for m, w in weights.items()}

    def _clear_learned(self) -> None:
        self.topics_ = None
        self.token_counts_ = None
        self.doc_topic_counts_ = None
        self.topic_word_counts_ = None
        self.topic_proportions_ = None
        self.topic_posterior_ = None
        self.topic_word_: dict[str, torch.Tensor] = {}
        self.n_iter_ = 0
        self.changed_fraction_ = float("nan")
        self.rebuilt_ = False
        self._cached_tokens: Tokens | None = None

    def ports(self):
        ports = {
            m: Port(m, sends=("categorical",), accepts=("counts", "categorical"), size=v,
                    doc=f"bags of words of modality {m!r} in; P(w | d) out")
            for m, v in self.vocab_sizes.items()
        }
        ports["c"] = Port("c", sends=("categorical",), accepts=("categorical",), size=self.n_topics,
                          doc="document topic: a prior in, topic proportions (without it) out")
        return ports

    # --- input checks ----------------------------------------------------------------------------
    def _check_input(self, port: str, message: Message) -> None:
        n = message.n_items
        if n == 0:
            raise DataError(f"LDA {self.name!r}: empty message on port {port!r} (0 items)")
        if port != "c":
            if self.tokens is None and message.kind == "categorical":
                raise MessageError(f"LDA {self.name!r}: a categorical message on port {port!r} needs "
                                   f"tokens= to scale it to counts (tokens=None uses counts as given)")
            if self.tokens is None:
                counts = message.counts.to(torch.float64)
                if bool((counts != counts.round()).any()):
                    raise DataError(f"LDA {self.name!r}: counts on port {port!r} must be whole numbers "
                                    f"when tokens=None")
        # every modality and the prior on 'c' describe the same documents
        for other, received in self.inbox.items():
            if other != port:
                check_items(self, f"port {port!r}", n, f"port {other!r}", received.n_items)

    def fit(self, c=None, **modalities) -> "LDA":
        """Use the module alone: each modality's counts (N, V_m) as tensors or messages, and an
        optional (N, K) prior ``c``."""
        for modality, value in modalities.items():
            if isinstance(value, torch.Tensor):
                modalities[modality] = Counts(value if value.is_floating_point() else value.float())
        if isinstance(c, torch.Tensor):
            c = Categorical(c)
        return super().fit(c=c, **modalities)

    def fit_predict(self, c=None, **modalities) -> torch.Tensor:
        return self.fit(c=c, **modalities).predict()

    # --- learning --------------------------------------------------------------------------------
    def _token_counts(self) -> torch.Tensor:
        """The scaled integer counts of every modality in the inbox, laid end to end: (D, V_total)."""
        return self._scaled_counts(self.inbox)

    def _scaled_counts(self, messages: dict) -> torch.Tensor:
        """The scaled integer counts of every modality in ``messages`` (the inbox, or new
        documents given to :meth:`infer`), laid end to end: (D, V_total); a modality not given
        has no tokens."""
        present = [m for m in self.modalities if m in messages]
        if not present:
            raise DataError(f"LDA {self.name!r}: no bags of words received on any of the ports "
                            f"{list(self.modalities)}")
        n_docs = messages[present[0]].n_items
        for m in present[1:] + (["c"] if "c" in messages else []):
            check_items(self, f"port {m!r}", messages[m].n_items, f"port {present[0]!r}", n_docs)
        blocks = []
        raw_lengths = torch.zeros(n_docs, dtype=torch.float64, device=self.device)
        for m in self.modalities:
            if m not in messages:
                blocks.append(torch.zeros(n_docs, self.vocab_sizes[m], dtype=torch.long, device=self.device))
                continue
            message = messages[m]
            values = message.counts if message.kind == "counts" else message.probs
            if self.tokens is None:
                raw = values.to(torch.float64).round()
                raw_lengths += (raw * self.weights[m]).round().sum(1)
                blocks.append(raw.long())
            else:
                blocks.append(scale_counts(values, int(math.floor(self.tokens * self.weights[m] + 0.5))))
        if self.tokens is None and n_docs:
            # checked before the casts to integers, which would wrap counts beyond 2^63
            longest = float(raw_lengths.max())
            if longest > self.MAX_TOKENS_PER_DOCUMENT:
                doc = int(raw_lengths.argmax())
                raise DataError(f"LDA {self.name!r}: document {doc} has {longest:.0f} tokens (tokens=None uses "
                                f"the counts as given), more than MAX_TOKENS_PER_DOCUMENT = "
                                f"{self.MAX_TOKENS_PER_DOCUMENT}; pass tokens= to scale the counts")
        counts = torch.cat(blocks, 1)
        if self.tokens is None:
            # weights still apply to raw counts: 0 drops a modality, others must keep whole numbers
            for m in self.modalities:
                w = self.weights[m]
                if w != 1.0:
                    cols = slice(self._offsets[m], self._offsets[m] + self.vocab_sizes[m])
                    counts[:, cols] = (counts[:, cols].double() * w).round().long()
        return counts

    def _word_modality(self) -> torch.Tensor:
        return torch.repeat_interleave(torch.arange(len(self.modalities), device=self.device),
                                       torch.tensor(list(self.vocab_sizes.values()), device=self.device))

    def _count_dtype(self, n_tokens: int):
        return torch.float32 if n_tokens < _FLOAT32_EXACT_COUNTS else torch.float64

    def _prepare(self, token_counts: torch.Tensor) -> None:
        """Initialise or rebuild the tokens for ``token_counts``; decide whether to warm-start."""
        self.rebuilt_ = False
        same_docs = self.token_counts_ is not None and self.token_counts_.shape == token_counts.shape
        if same_docs and torch.equal(self.token_counts_, token_counts):
            if self._cached_tokens is None:
                self._cached_tokens = build_tokens(token_counts, self._word_modality())
            return
        tokens = build_tokens(token_counts, self._word_modality())
        if tokens.n_tokens == 0:
            raise DataError(f"LDA {self.name!r}: every document is empty (all counts are zero)")
        if same_docs and self.doc_topic_counts_ is not None:
            # new bags of words for the same documents: each new token starts from its document's
            # current topic proportions, so documents keep their topics (and labels) across rounds
            theta = topic_proportions(self.doc_topic_counts_, self.alpha)[tokens.docs]
            cumulative = theta.cumsum(1)
            u = torch.rand(tokens.n_tokens, generator=self.generator, dtype=torch.float64, device=self.device)
            topics = (cumulative < u[:, None] * cumulative[:, -1:]).sum(1).clamp_(max=self.n_topics - 1)
            self.rebuilt_ = True
        else:
            topics = torch.randint(self.n_topics, (tokens.n_tokens,), generator=self.generator, device=self.device)
            self.n_iter_ = 0
        self._cached_tokens, self.topics_, self.token_counts_ = tokens, topics, token_counts

    def _doc_prior(self, n_docs: int, dtype) -> torch.Tensor | None:
        prior = self.inbox.get("c")
        if prior is None:
            return None
        check_items(self, "the prior on port 'c'", prior.n_items, "the bags of words", n_docs)
        return prior.probs.to(dtype)

    def _run(self, n_sweeps: int, trace: bool = False):
        self._prepare(self._token_counts())
        tokens = self._cached_tokens
        dtype = self._count_dtype(tokens.n_tokens)
        doc_prior = self._doc_prior(tokens.n_docs, dtype)
        counts = topic_counts(tokens, self.topics_, self.n_topics, self._vocab_total, len(self.modalities), dtype)
        vocab_beta = torch.tensor([v * self.beta for v in self.vocab_sizes.values()], dtype=dtype, device=self.device)
        block_size = self.block_size or max(1, tokens.n_docs)
        history = []
        for _ in range(n_sweeps):
            changed = gibbs_sweep(tokens, self.topics_, counts, alpha=self.alpha, beta=self.beta,
                                  vocab_beta=vocab_beta, block_size=block_size, generator=self.generator,
                                  doc_prior=doc_prior)
            if trace:
                history.append(self.topics_.clone())
        self.n_iter_ += n_sweeps
        self.changed_fraction_ = float(changed) / max(1, tokens.n_tokens)
        self._summarise(counts)
        return torch.stack(history) if trace else None

    def _summarise(self, counts: TopicCounts) -> None:
        self.doc_topic_counts_ = counts.doc_topic.round().long()
        self.topic_word_counts_ = counts.word_topic.T.round().long().contiguous()
        self.topic_proportions_ = topic_proportions(self.doc_topic_counts_, self.alpha).float()
        doc_prior = self._doc_prior(self.doc_topic_counts_.shape[0], torch.float64)
        self.topic_posterior_ = topic_proportions(self.doc_topic_counts_, self.alpha, doc_prior).float()
        phis = topic_word(counts.word_topic, self.vocab_sizes.values(), self.beta)
        self.topic_word_ = {m: phi.float() for m, phi in zip(self.modalities, phis)}

    def update(self) -> None:
        """Run ``sweeps`` sweeps on the bags of words in the inbox.

        The first update draws every token's topic uniformly; later ones continue from the
        current topics, or — when the scaled counts have changed — rebuild the tokens and draw
        each one's topic from its document's current topic proportions (see the module docstring).
        """
        if self.chains > 1 and self.topics_ is None:
            self._best_of_chains()
        else:
            self._run(self.sweeps)

    def _best_of_chains(self) -> None:
        """The first update with ``chains`` independent chains from random topics, keeping the one
        with the highest collapsed log joint (an unsupervised choice: labels never enter)."""
        def chain():
            self._clear_learned()
            self._run(self.sweeps)
            # each chain starts from new tensors, so the ones kept here stay as this chain left them
            return self.log_joint(), {**self._learned(), "_cached_tokens": self._cached_tokens}

        _, kept, scores = best_of(chain for _ in range(self.chains))
        for key, value in kept.items():
            setattr(self, key, value)
        self.chain_log_joints_ = scores

    def sample_topics(self, n_sweeps: int) -> torch.Tensor:
        """Like :meth:`update` with ``n_sweeps`` sweeps; returns the (n_sweeps, T) token topics
        after each sweep (draws from the chain, for posterior summaries)."""
        return self._run(check_int(self, "n_sweeps", n_sweeps, minimum=1), trace=True)

    def token_table(self) -> dict[str, torch.Tensor]:
        """The current tokens as flat (T,) tensors: ``doc``, ``modality`` (index into
        :attr:`modalities`), ``word`` (id within its modality) and ``topic``."""
        if self._cached_tokens is None:
            raise DataError(f"LDA {self.name!r}: there are no tokens before the first update")
        offsets = torch.tensor(list(self._offsets.values()), device=self.device)
        t = self._cached_tokens
        return {"doc": t.docs, "modality": t.modalities, "word": t.words - offsets[t.modalities],
                "topic": self.topics_}

    def publish(self) -> dict[str, Message]:
        if self.topic_posterior_ is None:
            return {}
        out = {}
        theta = self.topic_posterior_.to(torch.float64)
        for m in self.modalities:
            words = theta @ self.topic_word_[m].to(torch.float64)
            out[m] = Categorical((words / words.sum(1, keepdim=True)).float())
        out["c"] = Categorical(self.topic_proportions_ if self.category_weight_ is None
                               else self.category_likelihood())
        return out

    def _topic_log_likelihood(self, counts: torch.Tensor | None = None) -> torch.Tensor:
        """``weight * sum_v n_dv log phi_cv``: each topic's log likelihood of the whole document
        ``d`` as if all its tokens came from that topic, times the evidence weight (1 when not
        joined), (D, K) float64; for the module's own documents, or for the scaled ``counts``
        (D, V_total) of new ones."""
        if self.token_counts_ is None:
            raise DataError(f"LDA {self.name!r}: no category likelihood before the first update")
        log_phi = torch.cat([self.topic_word_[m].to(torch.float64) for m in self.modalities], 1).log()
        if counts is None:
            return self.category_log_likelihood("c", log_phi)
        weight = 1.0 if self.category_weight_ is None else self.category_weight_
        return weight * (counts.to(torch.float64) @ log_phi.T)

    def category_likelihood(self) -> torch.Tensor:
        """P(c | w_d) for a document whose tokens all come from the one topic ``c`` (uniform
        prior over ``c``): ``softmax_c(weight * sum_v n_dv log phi_cv)``, (D, K), with the
        evidence weight given by :meth:`category_join` (1 when not joined).

        This is what a shared category needs from the module: how well each topic alone explains
        the whole document (the mixture-of-unigrams reading of a topic as a category), without the
        received prior. Once joined, it is what port ``c`` sends.
        """
        return torch.softmax(self._topic_log_likelihood(), 1).float()

    def category_posterior(self) -> torch.Tensor:
        """P(c | w_d, prior) in the single-topic reading of :meth:`category_likelihood`: that
        times the received prior as the sampler applies it, once per token (so a prior sent as the
        ``n``-th root counts once for a document of ``n`` tokens), (D, K). Once joined, it is what
        :meth:`predict` reads."""
        # (without tokens, the likelihood below says that nothing was learned yet)
        prior = None if self.token_counts_ is None else self._doc_prior(self.token_counts_.shape[0], torch.float64)
        return torch.softmax(self._single_topic_log_posterior(None, prior), 1).float()

    def _single_topic_log_posterior(self, counts: torch.Tensor | None, prior: torch.Tensor | None) -> torch.Tensor:
        """Unnormalised ``log P(c | w_d, prior)`` of the single-topic reading, (D, K) float64: the
        weighted document log likelihood plus the prior once per token, for the module's own
        documents (``counts`` None) or the scaled ``counts`` of new ones."""
        log_post = self._topic_log_likelihood(counts)
        if prior is not None:
            n_tokens = (self.token_counts_ if counts is None else counts).sum(1, keepdim=True).to(torch.float64)
            log_post = log_post + n_tokens * prior.to(torch.float64).clamp_min(_LOG_FLOOR).log()
        return log_post

    # --- a shared category (see serket.inference.SharedCategory) ---------------------------------
    def category_join(self, port, evidence_weight=1.0):
        """Joined to a shared category: from now on port ``c`` sends
        :meth:`category_likelihood` and :meth:`predict` reads :meth:`category_posterior`, each with
        ``evidence_weight`` on the document's log likelihood."""
        self.category_weight_ = check_real(self, "evidence_weight", evidence_weight, above=0)

    def _category_counts(self) -> torch.Tensor:
        if self.token_counts_ is None:
            raise DataError(f"LDA {self.name!r}: a shared category needs one update first (no tokens yet)")
        return self.token_counts_.to(torch.float64)

    def category_start(self, port, generator):
        """A k-means++ clustering of the documents' word frequencies (hard responsibilities)."""
        freq = self._category_counts()
        return kmeans_pp_start(freq / freq.sum(1, keepdim=True).clamp_min(1), self.n_topics, generator)

    def category_fit(self, port, responsibilities):
        """Each topic's word distributions from the documents' tokens, weighted by the
        responsibilities (the single-topic reading of :meth:`category_likelihood`): log phi, (K, V_total)."""
        counts = responsibilities.to(torch.float64).T @ self._category_counts()   # (K, V_total)
        return torch.cat([torch.log(block + self.beta) - torch.log(block + self.beta).logsumexp(1, keepdim=True)
                          for block in counts.split(list(self.vocab_sizes.values()), 1)], 1)

    def category_log_likelihood(self, port, params):
        """``weight * sum_v n_dv log phi_cv`` for log phi ``params`` (K, V_total), with the evidence
        weight of :meth:`category_join` (1 when not joined)."""
        weight = 1.0 if self.category_weight_ is None else self.category_weight_
        return weight * (self._category_counts() @ params.T)

    def category_adopt(self, port, responsibilities, params):
        """Redraw every token's topic from ``r_dk phi_k(w)`` (its document's category and its
        word); the chain continues from there."""
        self._prepare(self.token_counts_)
        tokens = self._cached_tokens
        log_p = (responsibilities.to(torch.float64).clamp_min(_LOG_FLOOR).log()[tokens.docs]
                 + params.T[tokens.words])
        self.topics_ = torch.multinomial(torch.softmax(log_p, 1), 1, generator=self.generator).squeeze(1)
        dtype = self._count_dtype(tokens.n_tokens)
        self._summarise(topic_counts(tokens, self.topics_, self.n_topics, self._vocab_total,
                                     len(self.modalities), dtype))

    def predict(self) -> torch.Tensor | None:
        """Each document's category, (N,) long: the argmax of ``topic_posterior_`` (its most
        probable topic), or once joined to a shared category the argmax of
        :meth:`category_posterior` (the topic that best explains the whole document, prior
        included)."""
        if self.topic_posterior_ is None:
            return None
        if self.category_weight_ is not None:
            return self.category_posterior().argmax(1)
        return self.topic_posterior_.argmax(1)

    # --- new documents ---------------------------------------------------------------------------
    #: Gibbs sweeps that :meth:`infer` runs on new documents, and the first of them it discards:
    #: with the topics held fixed each document's chain mixes on its own, in few sweeps.
    INFER_SWEEPS = 50
    INFER_BURN_IN = 10

    def infer(self, c=None, **modalities) -> dict[str, Message]:
        """For new documents: ``{"c": Categorical, modality: Categorical, ...}``, the messages
        the module would send for them, the topics it learned held fixed.

        Args:
            c: optional (N, K) categorical prior over each new document's topic, a potential on
                every token's topic as in training.
            modalities: bags of words (counts or word distributions) of the new documents on any
                subset of the modality ports; a modality not given contributes no tokens. Each
                document is scaled to the tokens the module uses for its own (``tokens``,
                ``weights``).

        The new documents are folded in (:func:`fold_in`): Gibbs sampling of their token topics
        with each topic's word distributions fixed at their posterior mean (``topic_word_``),
        from a fresh stream seeded from the module's seed and update count, so infer is
        repeatable and leaves the training stream as it was. Port ``c`` then sends what
        :meth:`publish` sends for a document: its topic proportions (without the prior), or, once
        joined to a shared category, :meth:`category_likelihood` of the new document (closed
        form: how well each topic alone explains its tokens, with the evidence weight). Each
        modality port sends ``P(w | d) = sum_k topic_posterior[d, k] phi_{k, w}`` with
        ``topic_posterior ∝ topic proportions x prior``, as in training.
        """
        if self.topic_posterior_ is None:
            raise DataError(f"{self._who()}: nothing learned yet; infer needs a first update")
        if not modalities:
            raise DataError(f"{self._who()}: infer needs the new documents' bags of words on at least one "
                            f"of the ports {list(self.modalities)}, not only a prior on 'c'")
        counts = self._scaled_counts(modalities)
        phi = torch.cat([self.topic_word_[m].to(torch.float64) for m in self.modalities], 1)  # (K, V_total)
        prior = None if c is None else c.probs.to(torch.float64)
        generator = torch.Generator(device=self.device)
        generator.manual_seed(derive_seed(self.seed + self.n_updates, self.name + ":infer"))
        proportions = fold_in(counts, phi.T, alpha=self.alpha, sweeps=self.INFER_SWEEPS,
                              burn_in=self.INFER_BURN_IN, generator=generator, doc_prior=prior)
        posterior = proportions if prior is None else proportions * prior
        posterior = posterior / posterior.sum(1, keepdim=True).clamp_min(_NONZERO)
        if self.category_weight_ is None:
            out = {"c": Categorical(proportions.float())}
        else:
            out = {"c": Categorical(torch.softmax(self._topic_log_likelihood(counts), 1).float())}
        offset = 0
        for m in self.modalities:
            words = posterior @ phi[:, offset:offset + self.vocab_sizes[m]]
            offset += self.vocab_sizes[m]
            out[m] = Categorical((words / words.sum(1, keepdim=True)).float())
        return out

    def _categories(self, given, inferred):
        """The category of each new document, as :meth:`predict` reads it for the module's own:
        the argmax of the topic proportions times the prior ``c`` when one is given, or once
        joined of the single-topic reading with the prior once per token
        (:meth:`category_posterior`)."""
        if given.get("c") is None:
            return inferred["c"].probs.argmax(1)
        prior = given["c"].probs.to(torch.float64)
        if self.category_weight_ is None:
            return (inferred["c"].probs.to(torch.float64) * prior).argmax(1)
        counts = self._scaled_counts({m: given[m] for m in self.modalities if given.get(m) is not None})
        return self._single_topic_log_posterior(counts, prior).argmax(1)

    def log_joint(self) -> float:
        """The collapsed log joint ``log p(w, z)`` of the current tokens and topics (theta and
        phi integrated out; the received prior on ``c`` not included)."""
        if self.doc_topic_counts_ is None:
            raise DataError(f"LDA {self.name!r}: log_joint needs an update first")
        return float(collapsed_log_joint(self.doc_topic_counts_, self.topic_word_counts_.T,
                                         self.vocab_sizes.values(), self.alpha, self.beta))

    def perplexity(self) -> dict[str, float]:
        """Per modality, ``exp(-mean log P(w | d))`` over the training tokens."""
        if self.topic_posterior_ is None:
            raise DataError(f"LDA {self.name!r}: perplexity needs an update first")
        out = {}
        for m in self.modalities:
            cols = slice(self._offsets[m], self._offsets[m] + self.vocab_sizes[m])
            counts = self.token_counts_[:, cols].to(torch.float64)
            total = float(counts.sum())
            if total == 0:
                continue
            words = self.topic_posterior_.double() @ self.topic_word_[m].double()
            out[m] = math.exp(-float((counts * words.clamp_min(_NONZERO).log()).sum()) / total)
        return out

    def diagnostics(self) -> dict:
        if self.topic_posterior_ is None:
            return {}
        per_modality = {m: int(self.token_counts_[:, self._offsets[m]:self._offsets[m] + v].sum())
                        for m, v in self.vocab_sizes.items()}
        return {"log_joint": self.log_joint(), "n_iter": self.n_iter_, "n_tokens": per_modality,
                "changed_fraction": self.changed_fraction_, "rebuilt": self.rebuilt_,
                "topic_sizes": self.doc_topic_counts_.sum(0).tolist(), "perplexity": self.perplexity(),
                "empty_documents": int((self.token_counts_.sum(1) == 0).sum())}
