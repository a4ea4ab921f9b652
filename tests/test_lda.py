"""The multimodal LDA: token scaling, the exact collapsed posterior of a tiny corpus, recovery of
known topics, two modalities that only together identify the topic, the prior on ``c``, the
messages it sends, conformance, warm starts and errors."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from serket.errors import DataError, MessageError, PortError
from serket.messages import Categorical, Counts
from serket.modules.lda import LDA, build_tokens, collapsed_log_joint, scale_counts, visiting_order
from serket.testing import check_module


# --- helpers -------------------------------------------------------------------------------------
def synthetic_corpus(phis, n_docs, tokens, *, dominant=0.8, seed=0):
    """Documents with one dominant topic each: returns the true topics (N,) and, per modality,
    counts (N, V_m). ``phis``: per modality (K, V_m) word distributions."""
    gen = torch.Generator().manual_seed(seed)
    k = phis[0].shape[0]
    truth = torch.arange(n_docs) % k
    theta = torch.full((n_docs, k), (1 - dominant) / max(1, k - 1))
    theta[torch.arange(n_docs), truth] = dominant if k > 1 else 1.0
    corpus = []
    for phi in phis:
        words = theta @ phi
        draws = torch.multinomial(words, tokens, replacement=True, generator=gen)
        corpus.append(torch.zeros(n_docs, phi.shape[1]).scatter_add_(1, draws, torch.ones(n_docs, tokens)))
    return truth, corpus


def block_topics(k, vocab, *, words_per_topic, floor=0.01):
    """(k, vocab) word distributions; topic j puts most of its mass on its own run of words."""
    phi = torch.full((k, vocab), floor)
    for j in range(k):
        phi[j, j * words_per_topic:(j + 1) * words_per_topic] = 1.0
    return phi / phi.sum(1, keepdim=True)


def matched_accuracy(truth, predicted, k):
    confusion = np.zeros((k, k))
    np.add.at(confusion, (np.asarray(truth), np.asarray(predicted)), 1)
    rows, cols = linear_sum_assignment(-confusion)
    return confusion[rows, cols].sum() / len(truth), dict(zip(rows, cols))


# --- 1. scaling the counts to tokens -------------------------------------------------------------
def test_scale_counts_by_largest_remainders():
    got = scale_counts(torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [2.0, 0.0, 6.0], [0.2, 0.5, 0.3]]), 100)
    assert got.tolist() == [[34, 33, 33], [0, 0, 0], [25, 0, 75], [20, 50, 30]]
    counts = torch.rand(200, 17, generator=torch.Generator().manual_seed(0)) * 9
    counts[counts < 3] = 0
    for total in (1, 7, 100):
        scaled = scale_counts(counts, total)
        exact = counts * total / counts.sum(1, keepdim=True)
        assert scaled.dtype == torch.long
        assert (scaled.sum(1) == total).all()
        # every word within one token of its exact share, and zero counts stay zero
        assert ((scaled - exact).abs() < 1).all()
        assert (scaled[counts == 0] == 0).all()


def test_documents_are_scaled_to_tokens_times_weight():
    lda = LDA("lda", n_topics=2, vocab_sizes=(3, 4), tokens=50, weights=(1.0, 0.5), sweeps=1)
    lda.fit(w0=torch.tensor([[3.0, 1.0, 0.0], [0.0, 0.0, 0.0]]), w1=Categorical(torch.full((2, 4), 0.25)))
    assert lda.token_counts_.tolist() == [[38, 12, 0, 7, 6, 6, 6], [0, 0, 0, 7, 6, 6, 6]]
    assert lda.diagnostics()["n_tokens"] == {"w0": 50, "w1": 50}


def test_raw_counts_with_weights():
    lda = LDA("lda", n_topics=2, vocab_sizes=(2, 2), tokens=None, weights=(2.0, 0.0), sweeps=1)
    lda.fit(w0=torch.tensor([[1.0, 3.0]]), w1=torch.tensor([[5.0, 5.0]]))
    assert lda.token_counts_.tolist() == [[2, 6, 0, 0]]


def test_the_visiting_order_interleaves_documents():
    gen = torch.Generator().manual_seed(0)
    equal = torch.randint(0, 4, (7, 5), generator=gen)
    equal[:, 0] += 12 - equal.sum(1)  # every document 12 tokens
    for counts in (equal, torch.randint(0, 4, (7, 5), generator=gen)):
        tokens = build_tokens(counts, torch.zeros(5, dtype=torch.long))
        for _ in range(3):
            order = visiting_order(tokens, gen)
            assert sorted(order.tolist()) == list(range(tokens.n_tokens))  # a permutation
            docs = tokens.docs[order]
            if counts is equal:
                # each run of 7 consecutive tokens holds one token of each of the 7 documents
                assert all(len(set(docs[i:i + 7].tolist())) == 7 for i in range(tokens.n_tokens - 6))


# --- 2. the exact collapsed posterior of an enumerable corpus ------------------------------------
TOY_COUNTS = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])  # 2 documents, 4 tokens, V = 3
TOY = dict(n_topics=2, vocab_sizes=(3,), alpha=0.5, beta=0.5, tokens=None)
TOY_PRIOR = torch.tensor([[0.8, 0.2], [0.5, 0.5]])


def reference_log_joint(docs, words, topics, n_docs, k, vocab, alpha, beta, prior=None, modalities=None):
    """log p(w, z) of one labelled assignment, written from the Dirichlet-multinomial formulas,
    plus the log of the prior potential on every token's topic. ``vocab``: one size, or one per
    modality (then ``modalities`` gives each token's modality and ``words`` are ids within it)."""
    vocabs = [vocab] if isinstance(vocab, int) else list(vocab)
    modalities = [0] * len(docs) if modalities is None else list(modalities)
    total = 0.0
    for d in range(n_docs):
        n_dk = [sum(1 for i in range(len(docs)) if docs[i] == d and topics[i] == j) for j in range(k)]
        total += (math.lgamma(k * alpha) - math.lgamma(sum(n_dk) + k * alpha)
                  + sum(math.lgamma(n + alpha) - math.lgamma(alpha) for n in n_dk))
    for m, size in enumerate(vocabs):
        for j in range(k):
            n_kw = [sum(1 for i in range(len(words)) if modalities[i] == m and words[i] == v and topics[i] == j)
                    for v in range(size)]
            total += (math.lgamma(size * beta) - math.lgamma(sum(n_kw) + size * beta)
                      + sum(math.lgamma(n + beta) - math.lgamma(beta) for n in n_kw))
    if prior is not None:
        total += sum(math.log(prior[docs[i]][topics[i]]) for i in range(len(docs)))
    return total


def exact_posterior(docs, words, prior=None):
    """p(z | w) over all 2^T labelled assignments of the toy corpus, keyed by sum_i z_i 2^i."""
    logp = {}
    for topics in itertools.product(range(2), repeat=len(docs)):
        key = sum(z << i for i, z in enumerate(topics))
        logp[key] = reference_log_joint(docs, words, topics, 2, 2, 3, TOY["alpha"], TOY["beta"], prior)
    norm = np.logaddexp.reduce(list(logp.values()))
    return {key: math.exp(v - norm) for key, v in logp.items()}


def sampled_frequencies(block_size, n_sweeps, prior=None, burn_in=50, seed=3):
    lda = LDA("toy", **TOY, block_size=block_size, sweeps=1, seed=seed)
    lda.receive("w0", Counts(TOY_COUNTS))
    if prior is not None:
        lda.receive("c", Categorical(prior))
    trace = lda.sample_topics(n_sweeps + burn_in)[burn_in:].numpy()
    keys = (trace << np.arange(trace.shape[1])).sum(1)
    table = lda.token_table()
    return lda, keys, table["doc"].tolist(), table["word"].tolist()


def total_variation(exact, keys):
    freq = np.bincount(keys, minlength=len(exact)) / len(keys)
    return 0.5 * sum(abs(freq[key] - p) for key, p in exact.items())


@pytest.mark.parametrize("prior", [None, TOY_PRIOR], ids=["no prior", "prior on c"])
def test_exact_sampler_matches_the_enumerated_posterior(prior):
    lda, keys, docs, words = sampled_frequencies(1, 6000, prior)
    assert sorted(zip(docs, words)) == [(0, 0), (0, 1), (1, 1), (1, 2)]
    exact = exact_posterior(docs, words, None if prior is None else prior.tolist())
    assert len(exact) == 16 and max(exact.values()) < 0.3  # a spread posterior
    # 6000 sweeps: over 16 states the total variation from sampling noise alone is 0.017-0.031
    # (four seeds; this one: 0.019); the parallel sampler below is off by 0.04-0.08, and
    # a sampler that forgets to leave the token out of its own counts, or ignores the prior, by
    # 0.1 or more
    assert total_variation(exact, keys) < 0.035
    # single-token marginals, each a frequency with a standard error of about 0.01
    for i in range(4):
        p_one = sum(p for key, p in exact.items() if key >> i & 1)
        assert np.mean(keys >> i & 1) == pytest.approx(p_one, abs=0.03), i
    # the module's log joint is the reference one for its current topics (prior not included)
    topics = lda.topics_.tolist()
    want = reference_log_joint(docs, words, topics, 2, 2, 3, TOY["alpha"], TOY["beta"])
    assert lda.log_joint() == pytest.approx(want, abs=1e-9)


def test_parallel_blocks_are_an_approximation_of_stated_size():
    # Tokens of one block are drawn without seeing each other's new topics. The default block
    # (the number of documents, here two tokens of different documents) keeps the document counts
    # exact but lets the word counts lag; on this 4-token corpus, where one token can be half of
    # its word's count, the stationary distribution is off by a total variation of 0.06-0.08
    # (0.04-0.05 with the prior; four seeds), and with all four tokens in one block by 0.29-0.30
    # (0.20-0.21), against 0.02-0.03 for the exact sampler's sampling noise. On real
    # corpora a token is a tiny share of every word count and the lag matters little (see
    # benchmarks/bench_lda.py).
    lda, _, docs, words = sampled_frequencies(1, 50)
    exact = exact_posterior(docs, words)
    _, default_keys, _, _ = sampled_frequencies(None, 4000)
    _, whole_keys, _, _ = sampled_frequencies(4, 4000)
    default_tv, whole_tv = total_variation(exact, default_keys), total_variation(exact, whole_keys)
    assert default_tv < 0.1
    assert 0.2 < whole_tv < 0.4
    assert default_tv < whole_tv


def test_collapsed_log_joint_matches_the_reference_on_a_random_state():
    gen = torch.Generator().manual_seed(5)
    lda = LDA("lda", n_topics=3, vocab_sizes=(4, 2), alpha=0.7, beta=0.3, tokens=None, sweeps=2)
    lda.fit(w0=torch.randint(0, 3, (6, 4), generator=gen), w1=torch.randint(0, 3, (6, 2), generator=gen))
    table = {key: value.tolist() for key, value in lda.token_table().items()}
    total = reference_log_joint(table["doc"], table["word"], table["topic"], 6, 3, (4, 2), 0.7, 0.3,
                                modalities=table["modality"])
    assert lda.log_joint() == pytest.approx(total, abs=1e-8)
    assert float(collapsed_log_joint(lda.doc_topic_counts_, lda.topic_word_counts_.T, (4, 2), 0.7, 0.3)) == \
        pytest.approx(total, abs=1e-8)


# --- 3. recovery of known topics -----------------------------------------------------------------
def test_recovers_known_topics_and_document_categories():
    phi = block_topics(3, 12, words_per_topic=4)
    truth, (counts,) = synthetic_corpus([phi], 150, 100, seed=1)
    lda = LDA("lda", n_topics=3, vocab_sizes=(12,), sweeps=60, seed=2)
    predicted = lda.fit_predict(w0=counts)
    accuracy, match = matched_accuracy(truth, predicted, 3)
    assert accuracy > 0.95
    est = lda.topic_word_["w0"].numpy()
    true = phi.numpy()
    # each topic's word distribution within 0.05 per word: the largest errors come from a
    # document's minority-topic tokens, about a third of which its dominant topic explains
    # (about 0.01-0.02 extra mass on each foreign word); sampling noise is about 0.006
    for j, c in match.items():
        assert np.abs(est[c] - true[j]).max() < 0.05, (j, est[c])
    assert lda.diagnostics()["log_joint"] == pytest.approx(lda.log_joint())


# --- 4. two modalities that only together identify the topic -------------------------------------
def test_two_ambiguous_modalities_identify_the_topic_together():
    # modality a tells {0, 1} from {2}; modality b tells {0} from {1, 2}
    a = torch.tensor([[1.0, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1]]) + 0.02
    b = torch.tensor([[1.0, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 1]]) + 0.02
    a, b = a / a.sum(1, keepdim=True), b / b.sum(1, keepdim=True)
    truth, (counts_a, counts_b) = synthetic_corpus([a, b], 150, 100, dominant=1.0, seed=4)
    vocab = {"a": 6, "b": 6}

    def accuracy(**modalities):
        lda = LDA("lda", n_topics=3, vocab_sizes=vocab, sweeps=40, seed=5)
        return matched_accuracy(truth, lda.fit_predict(**modalities), 3)[0]

    both, only_a, only_b = accuracy(a=counts_a, b=counts_b), accuracy(a=counts_a), accuracy(b=counts_b)
    assert both > 0.95
    # alone, two of the topics look alike: at best 2/3 plus luck in splitting the look-alikes
    assert only_a < 0.85 and only_b < 0.85
    assert both - max(only_a, only_b) > 0.15


# --- 5. the prior on c ---------------------------------------------------------------------------
def _ambiguous_corpus():
    # two clear topics on words {0,1} and {2,3}; word 4 is equally common in both; 20 documents
    # hold only word 4, so nothing in their words tells their topic
    gen = torch.Generator().manual_seed(6)
    clear = torch.zeros(80, 5)
    clear[:40, :2] = torch.randint(20, 30, (40, 2), generator=gen).float()
    clear[40:, 2:4] = torch.randint(20, 30, (40, 2), generator=gen).float()
    clear[:, 4] = 10
    shared = torch.zeros(20, 5)
    shared[:, 4] = 10
    return torch.cat([clear, shared])


def test_a_prior_on_c_moves_documents_towards_its_topic():
    counts = _ambiguous_corpus()
    lda = LDA("lda", n_topics=2, vocab_sizes=(5,), sweeps=40, seed=7)
    lda.fit(w0=counts)
    topic_of = lda.predict()
    first, second = int(topic_of[0]), int(topic_of[40])
    assert first != second
    before = lda.topic_proportions_[80:].clone()
    # ask the first ten shared-word documents for topic `first`, the other ten for `second`
    wanted = torch.tensor([first] * 10 + [second] * 10)
    prior = torch.full((100, 2), 0.5)
    prior[80:] = 0.1
    prior[torch.arange(80, 100), wanted] = 0.9
    lda.fit(c=prior)
    moved = lda.topic_proportions_[80:]
    rows = torch.arange(20)
    assert (lda.predict()[80:] == wanted).all()
    assert float(moved[rows, wanted].mean()) > 0.8
    # before, each shared-word document sat in whichever topic its chain happened to reach
    assert float(before[rows, wanted].mean()) < 0.7
    # the clear documents keep their topics; the message on c does not echo the prior itself
    assert (lda.predict()[:80] == topic_of[:80]).all()
    posterior = lda.topic_posterior_[80:]
    assert float(posterior[rows, wanted].mean()) > float(moved[rows, wanted].mean())
    torch.testing.assert_close(lda.publish()["c"].probs, lda.topic_proportions_)


# --- 6. the messages -----------------------------------------------------------------------------
def test_word_messages_are_theta_times_phi_and_follow_from_the_counts():
    phi = block_topics(3, 9, words_per_topic=3)
    _, (x, y) = synthetic_corpus([phi, block_topics(3, 6, words_per_topic=2)], 60, 40, seed=8)
    lda = LDA("lda", n_topics=3, vocab_sizes=(9, 6), alpha=0.5, beta=0.2, tokens=40, sweeps=10)
    prior = torch.softmax(torch.randn(60, 3, generator=torch.Generator().manual_seed(0)), 1)
    out = lda.fit(w0=x, w1=y, c=prior).publish()
    assert set(out) == {"w0", "w1", "c"}
    # the counts, recounted from the token table
    table = lda.token_table()
    n_dk = torch.zeros(60, 3).index_put_((table["doc"], table["topic"]), torch.ones(len(table["doc"])), accumulate=True)
    assert torch.equal(n_dk.long(), lda.doc_topic_counts_)
    theta = (n_dk + 0.5) / (n_dk.sum(1, keepdim=True) + 1.5)
    torch.testing.assert_close(out["c"].probs, theta)
    posterior = theta * prior / (theta * prior).sum(1, keepdim=True)
    torch.testing.assert_close(lda.topic_posterior_, posterior)
    for m, (port, vocab) in enumerate((("w0", 9), ("w1", 6))):
        mine = table["modality"] == m
        n_kw = torch.zeros(3, vocab).index_put_((table["topic"][mine], table["word"][mine]),
                                                torch.ones(int(mine.sum())), accumulate=True)
        phi_hat = (n_kw + 0.2) / (n_kw.sum(1, keepdim=True) + vocab * 0.2)
        torch.testing.assert_close(lda.topic_word_[port], phi_hat)
        words = out[port].probs
        assert words.shape == (60, vocab)
        torch.testing.assert_close(words.sum(1), torch.ones(60))
        torch.testing.assert_close(words, posterior @ phi_hat)


def test_empty_documents_are_allowed_and_follow_their_prior():
    counts = torch.tensor([[5.0, 0, 0], [0, 0, 0], [0, 0, 4]])
    prior = torch.tensor([[0.5, 0.5], [0.9, 0.1], [0.5, 0.5]])
    lda = LDA("lda", n_topics=2, vocab_sizes=(3,), sweeps=3).fit(w0=counts, c=prior)
    torch.testing.assert_close(lda.topic_posterior_[1], torch.tensor([0.9, 0.1]))
    torch.testing.assert_close(lda.publish()["c"].probs[1], torch.tensor([0.5, 0.5]))
    assert lda.diagnostics()["empty_documents"] == 1
    with pytest.raises(DataError, match="every document is empty"):
        LDA("lda", n_topics=2, vocab_sizes=(3,)).fit(w0=torch.zeros(4, 3))


# --- 7. warm starts ------------------------------------------------------------------------------
def test_new_bags_of_words_keep_the_documents_topics():
    phi = block_topics(3, 12, words_per_topic=4)
    truth, (first,) = synthetic_corpus([phi], 90, 100, seed=9)
    _, (second,) = synthetic_corpus([phi], 90, 100, seed=10)  # new draws, same documents
    lda = LDA("lda", n_topics=3, vocab_sizes=(12,), sweeps=30, seed=1)
    before = lda.fit_predict(w0=first)
    assert not lda.rebuilt_
    lda.sweeps = 1
    lda.fit(w0=first)
    assert not lda.rebuilt_ and lda.n_iter_ == 31  # same counts: a warm start
    after = lda.fit_predict(w0=second)
    assert lda.rebuilt_ and lda.n_iter_ == 32
    # one sweep after the rebuild: the labels carried over from the documents' proportions
    assert float((after == before).float().mean()) > 0.95
    assert matched_accuracy(truth, after, 3)[0] > 0.95
    # a different number of documents starts afresh
    fresh = LDA("lda", n_topics=3, vocab_sizes=(12,), sweeps=1, seed=1)
    fresh.fit(w0=first)
    fresh.inbox.clear()
    fresh.fit(w0=second[:30])
    assert not fresh.rebuilt_ and fresh.n_iter_ == 1


# --- 8. conformance and errors -------------------------------------------------------------------
def test_lda_conformance():
    phi = block_topics(3, 8, words_per_topic=2)
    _, (x, y) = synthetic_corpus([phi, phi], 30, 20, seed=11)
    check_module(lambda: LDA("lda", n_topics=3, vocab_sizes=(8,), sweeps=3, seed=4), {"w0": Counts(x)})
    prior = Categorical(torch.full((30, 3), 1 / 3))
    check_module(lambda: LDA("lda", n_topics=3, vocab_sizes={"image": 8, "speech": 8}, sweeps=2, block_size=7),
                 {"image": Counts(x), "speech": Categorical(y / y.sum(1, keepdim=True)), "c": prior})


def test_bad_input_raises_errors_that_name_the_module_and_the_problem():
    lda = LDA("topics", n_topics=2, vocab_sizes={"image": 3, "speech": 4})
    lda.receive("image", Counts(torch.ones(5, 3)))
    with pytest.raises(MessageError, match=r"^LDA 'topics': port 'speech' has 6 items but port 'image' has 5$"):
        lda.receive("speech", Counts(torch.ones(6, 4)))
    with pytest.raises(MessageError, match=r"port 'c' has 4 items"):
        lda.receive("c", Categorical(torch.full((4, 2), 0.5)))
    with pytest.raises(MessageError, match="does not match the port's size 4"):
        lda.receive("speech", Counts(torch.ones(5, 3)))
    with pytest.raises(MessageError, match="negative"):
        lda.receive("image", Counts(-torch.ones(5, 3)))
    with pytest.raises(PortError, match="has no port 'w0'"):
        lda.receive("w0", Counts(torch.ones(5, 3)))
    with pytest.raises(DataError, match="no bags of words"):
        LDA("topics", n_topics=2, vocab_sizes=(3,)).update()
    with pytest.raises(DataError, match="log_joint needs an update"):
        LDA("topics", n_topics=2, vocab_sizes=(3,)).log_joint()
    raw = LDA("topics", n_topics=2, vocab_sizes=(3,), tokens=None)
    with pytest.raises(DataError, match="whole numbers"):
        raw.receive("w0", Counts(torch.full((2, 3), 0.5)))
    with pytest.raises(MessageError, match="needs tokens="):
        raw.receive("w0", Categorical(torch.full((2, 3), 1 / 3)))
    for kwargs, text in [
        (dict(n_topics=0), "n_topics must be an integer >= 1"),
        (dict(alpha=0.0), "alpha must be a finite number > 0"),
        (dict(beta=-1.0), "beta must be a finite number > 0"),
        (dict(alpha=float("nan")), "alpha must be a finite number > 0"),
        (dict(tokens=0), "tokens must be a finite number > 0"),
        (dict(sweeps=0), "sweeps must be an integer >= 1"),
        (dict(block_size=0), "block_size must be an integer >= 1"),
        (dict(vocab_sizes=()), "at least one modality"),
        (dict(vocab_sizes=(3, 0)), r"vocab_sizes\['w1'\] must be an integer >= 1"),
        (dict(vocab_sizes={"c": 3}), "cannot be named 'c'"),
        (dict(vocab_sizes=(3, 3), weights=(1.0,)), "1 weights for 2 modalities"),
        (dict(vocab_sizes=(3,), weights=(-1.0,)), ">= 0"),
        (dict(vocab_sizes=(3,), weights={"x": 1.0}), "unknown modalities"),
    ]:
        kwargs = {"vocab_sizes": (3,), **kwargs}
        with pytest.raises(ValueError, match=text):
            LDA("topics", **kwargs)


def test_several_chains_keep_the_likeliest():
    gen = torch.Generator().manual_seed(3)
    topics = torch.randint(0, 3, (60,), generator=gen)
    words = torch.zeros(60, 12)
    for d in range(60):
        words[d, 4 * topics[d]: 4 * topics[d] + 4] = torch.randint(1, 6, (4,), generator=gen).float()
    lda = LDA("lda", n_topics=3, vocab_sizes=(12,), sweeps=15, chains=4, tokens=None, seed=1)
    lda.fit(w0=words)
    assert len(lda.chain_log_joints_) == 4
    assert lda.log_joint() == max(lda.chain_log_joints_)  # the kept chain's state, exactly
    assert lda.n_updates == 1
    assert torch.equal(lda.token_table()["topic"], lda.topics_)  # its tokens kept with it
    lda.update()  # later updates continue the kept chain
    assert lda.n_updates == 2 and len(lda.chain_log_joints_) == 4
    with pytest.raises(ValueError, match="chains"):
        LDA("lda", n_topics=3, vocab_sizes=(12,), chains=0)


def test_category_likelihood_is_each_topic_explaining_the_whole_document():
    # the closed form: softmax_c(evidence_weight * sum_v n_dv log phi_cv), from the fitted phi
    counts = _ambiguous_corpus()
    lda = LDA("lda", n_topics=2, vocab_sizes=(5,), sweeps=30, seed=7, tokens=40)
    assert lda.category_weight_ is None
    lda.category_join("c", 0.25)  # what a tail-to-tail connection with a joint fit calls
    assert lda.category_weight_ == 0.25
    lda.fit(w0=counts)
    phi = lda.topic_word_["w0"].double()
    expected = torch.softmax(0.25 * lda.token_counts_.double() @ phi.log().T, 1)
    torch.testing.assert_close(lda.publish()["c"].probs.double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lda.category_likelihood(), expected.float())
    # documents of clear words are certain of their topic, word-4-only ones much less so
    assert float(expected[:80].max(1).values.min()) > 0.99
    assert float(expected[80:].max(1).values.max()) < float(expected[:80].max(1).values.min())
    torch.testing.assert_close(lda.category_posterior(), expected.float())  # no prior yet
    # a prior sent as the 40th root counts once per 40-token document
    prior = torch.full((100, 2), 0.5)
    prior[80:] = torch.tensor([0.2, 0.8])
    lda.receive("c", Categorical(prior ** (1 / 40) / (prior ** (1 / 40)).sum(1, keepdim=True)))
    root = prior ** (1 / 40)
    root = root / root.sum(1, keepdim=True)
    post = lda.category_posterior().double()
    want = torch.softmax(expected.log() + 40 * root.double().log(), 1)
    torch.testing.assert_close(post, want, rtol=1e-4, atol=1e-5)
    assert (lda.predict() == post.argmax(1)).all()
    with pytest.raises(ValueError, match="evidence_weight"):
        LDA("lda", n_topics=2, vocab_sizes=(5,)).category_join("c", 0.0)


def test_an_lda_not_joined_sends_its_topic_proportions_and_predicts_its_likeliest_topic():
    counts = _ambiguous_corpus()
    lda = LDA("lda", n_topics=2, vocab_sizes=(5,), sweeps=30, seed=7, tokens=40).fit(w0=counts)
    prior = Categorical(torch.tensor([[0.3, 0.7]]).expand(100, 2))
    lda.receive("c", prior)
    assert torch.equal(lda.publish()["c"].probs, lda.topic_proportions_)
    assert torch.equal(lda.predict(), lda.topic_posterior_.argmax(1))
    # without a join the category log likelihood carries no weight (exactly 1)
    log_phi = lda.topic_word_["w0"].double().log()
    assert torch.equal(lda.category_log_likelihood("c", log_phi), lda.token_counts_.double() @ log_phi.T)
    # joined, the same state sends the weighted single-topic likelihood and predicts by it
    joined = LDA("lda", n_topics=2, vocab_sizes=(5,), sweeps=30, seed=7, tokens=40)
    joined.load_state_dict(lda.state_dict())
    joined.category_join("c", 0.5)
    assert torch.equal(joined.publish()["c"].probs, joined.category_likelihood())
    assert torch.equal(joined.predict(), joined.category_posterior().argmax(1))
    assert torch.equal(joined.category_log_likelihood("c", log_phi), 0.5 * (lda.token_counts_.double() @ log_phi.T))
