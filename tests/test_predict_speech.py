"""The speech modules on new items: LDA.infer folds new documents in with the learned topics
held fixed, Recognizer.infer decodes new utterances with the learned units. Both send what they
would send for their own items, without learning."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from serket.errors import DataError, MessageError, PortError
from serket.messages import Categorical, Counts, NBest, Sequences
from serket.modules.asr import Recognizer
from serket.modules.lda import LDA, fold_in


# --- helpers -------------------------------------------------------------------------------------
def _snapshot(module):
    tensors = {k: v.clone() for k, v in module.state_dict().items() if isinstance(v, torch.Tensor)}
    learned = {k: v for k, v in module._learned().items()}
    copies = {k: (v.clone() if isinstance(v, torch.Tensor) else
                  {m: t.clone() for m, t in v.items()} if isinstance(v, dict) else v)
              for k, v in learned.items()}
    return tensors, copies, module.generator.get_state().clone(), module.n_updates, dict(module.inbox)


def _assert_untouched(module, snapshot):
    tensors, learned, generator, n_updates, inbox = snapshot
    now = {k: v for k, v in module.state_dict().items() if isinstance(v, torch.Tensor)}
    assert now.keys() == tensors.keys()
    for key, value in tensors.items():
        assert torch.equal(now[key], value), key
    assert module._learned().keys() == learned.keys()
    for key, value in learned.items():
        current = getattr(module, key)
        if isinstance(value, torch.Tensor):
            assert torch.equal(current, value), key
        elif isinstance(value, dict):
            assert current.keys() == value.keys() and all(torch.equal(current[m], value[m]) for m in value), key
        elif isinstance(value, float) and math.isnan(value):
            assert math.isnan(current), key
        else:
            assert current is value or current == value, key
    assert torch.equal(module.generator.get_state(), generator)
    assert module.n_updates == n_updates
    assert module.inbox.keys() == inbox.keys() and all(module.inbox[k] is inbox[k] for k in inbox)


def _block_topics(k, vocab, words_per_topic, floor=0.01):
    phi = torch.full((k, vocab), floor)
    for j in range(k):
        phi[j, j * words_per_topic:(j + 1) * words_per_topic] = 1.0
    return phi / phi.sum(1, keepdim=True)


def _corpus(phis, n_docs, tokens, dominant, seed):
    """Documents with one dominant topic each (topic d % K): (truth, [counts per modality])."""
    gen = torch.Generator().manual_seed(seed)
    k = phis[0].shape[0]
    truth = torch.arange(n_docs) % k
    theta = torch.full((n_docs, k), (1 - dominant) / (k - 1))
    theta[torch.arange(n_docs), truth] = dominant
    out = []
    for phi in phis:
        draws = torch.multinomial(theta @ phi, tokens, replacement=True, generator=gen)
        out.append(torch.zeros(n_docs, phi.shape[1]).scatter_add_(1, draws, torch.ones(n_docs, tokens)))
    return truth, out


def _label_map(truth, predicted, k):
    """The learned label of each true topic (majority vote), required to be a bijection."""
    mapping = torch.tensor([int(torch.mode(predicted[truth == j]).values) for j in range(k)])
    assert len(set(mapping.tolist())) == k, mapping
    return mapping


# --- LDA: the single-topic category reading, closed form ----------------------------------------
def _joined_lda(tokens=None):
    gen = torch.Generator().manual_seed(3)
    counts = torch.zeros(60, 3)
    counts[:30, 0] = torch.randint(6, 10, (30,), generator=gen).float()
    counts[30:, 1] = torch.randint(6, 10, (30,), generator=gen).float()
    counts[:, 2] = 2
    lda = LDA("lda", n_topics=2, vocab_sizes=(3,), tokens=tokens, sweeps=20, seed=4)
    lda.category_join("c", 0.5)
    return lda.fit(w0=counts), counts


def test_joined_category_on_new_documents_is_the_closed_form():
    lda, counts = _joined_lda()
    phi = lda.topic_word_["w0"].double().tolist()
    new = torch.tensor([[3.0, 0, 1], [0, 2, 2], [1, 1, 0], [0, 0, 4], [2, 1, 5]])
    prior = torch.tensor([[0.5, 0.5], [0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])

    def closed_form(doc, pi=(1.0, 1.0), per_token=True):
        # P(c | d) ∝ pi_c^(tokens of d) prod_w phi_cw^(weight n_dw): a hand-written loop
        n_d = sum(doc) if per_token else 1
        scores = [pi[c] ** n_d * math.prod(phi[c][w] ** (0.5 * n) for w, n in enumerate(doc)) for c in range(2)]
        return [s / sum(scores) for s in scores]

    out = lda.infer(w0=new)
    want = torch.tensor([closed_form(doc) for doc in new.tolist()], dtype=torch.float64)
    torch.testing.assert_close(out["c"].probs.double(), want, rtol=1e-5, atol=1e-6)
    # the prior changes the category of documents (predict), not the message (a likelihood)
    with_prior = lda.infer(w0=new, c=prior)
    torch.testing.assert_close(with_prior["c"].probs, out["c"].probs)
    want_post = torch.tensor([closed_form(d, p) for d, p in zip(new.tolist(), prior.tolist())])
    assert torch.equal(lda.predict(w0=new, c=prior), want_post.argmax(1))
    assert not torch.equal(want_post.argmax(1), want.argmax(1))  # the prior does decide some here
    assert torch.equal(lda.predict(w0=new), want.argmax(1))
    # on its own documents, infer sends exactly what the module publishes, and predicts as it does
    torch.testing.assert_close(lda.infer(w0=counts)["c"].probs, lda.publish()["c"].probs, rtol=0, atol=0)
    own_prior = torch.tensor([0.45, 0.55]).expand(60, 2)
    lda.receive("c", Categorical(own_prior))
    assert torch.equal(lda.predict(w0=counts, c=own_prior), lda.predict())


def test_new_documents_are_scaled_to_the_modules_tokens():
    lda, counts = _joined_lda(tokens=40)
    phi = lda.topic_word_["w0"].double()
    # [1, 2, 1] scales to [10, 20, 10]; [1, 1, 1] to 40 tokens by largest remainders: [14, 13, 13]
    new = torch.tensor([[1.0, 2, 1], [1, 1, 1]])
    scaled = torch.tensor([[10.0, 20, 10], [14, 13, 13]], dtype=torch.float64)
    want = torch.softmax(0.5 * scaled @ phi.log().T, 1)
    torch.testing.assert_close(lda.infer(w0=new)["c"].probs.double(), want, rtol=1e-5, atol=1e-6)
    # a word distribution is read as expected counts, scaled the same way
    as_probs = Categorical(new / new.sum(1, keepdim=True))
    torch.testing.assert_close(lda.infer(w0=as_probs)["c"].probs, lda.infer(w0=new)["c"].probs)


# --- LDA: folding in topic proportions -----------------------------------------------------------
def test_fold_in_recovers_known_topics_of_new_documents():
    phi = _block_topics(4, 40, 10)
    truth, (counts,) = _corpus([phi], 200, 100, 0.9, seed=1)
    lda = LDA("lda", n_topics=4, vocab_sizes=(40,), sweeps=50, seed=3).fit(w0=counts)
    mapping = _label_map(truth, lda.predict(), 4)
    assert float((lda.predict() == mapping[truth]).float().mean()) > 0.97
    new_truth, (new,) = _corpus([phi], 80, 100, 0.9, seed=11)
    out = lda.infer(w0=new)
    theta = out["c"].probs.double()
    assert torch.allclose(theta.sum(1), torch.ones(80, dtype=torch.float64), atol=1e-5)
    assert torch.equal(theta.argmax(1), mapping[new_truth])
    assert torch.equal(lda.predict(w0=new), mapping[new_truth])
    # each document's dominant topic holds about 90% of its tokens: (90 + alpha) / (100 + K alpha)
    dominant = theta[torch.arange(80), mapping[new_truth]]
    assert abs(float(dominant.mean()) - 91 / 104) < 0.04, float(dominant.mean())
    # the words it predicts are theta times the learned phi, as publish sends them
    words = theta @ lda.topic_word_["w0"].double()
    torch.testing.assert_close(out["w0"].probs.double(), words / words.sum(1, keepdim=True), rtol=1e-5, atol=1e-6)
    # in sample: the fold-in agrees with the chain's own topic proportions and categories
    own = lda.infer(w0=counts)
    assert float((own["c"].probs.argmax(1) == lda.predict()).float().mean()) > 0.97
    assert float((own["c"].probs - lda.topic_proportions_).abs().mean()) < 0.03
    assert float((own["w0"].probs - lda.publish()["w0"].probs).abs().max()) < 0.02


def test_fold_in_matches_the_exact_posterior_of_a_tiny_document():
    # one document of five tokens, two topics: E[theta | w, phi] by enumerating the 32 topic
    # assignments, each weighted by its probability with theta integrated out
    phi = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], dtype=torch.float64)
    words, alpha, prior = [0, 0, 2, 2, 1], 0.3, torch.tensor([0.4, 0.6], dtype=torch.float64)
    weights, means = [], []
    for z in np.ndindex(*[2] * len(words)):
        n = [z.count(0), z.count(1)]
        # p(z) ∝ prod_k Gamma(n_k + alpha) (the Dirichlet-multinomial), times phi and the prior per token
        p = math.prod(math.gamma(c + alpha) for c in n)
        p *= math.prod(float(phi[k, w] * prior[k]) for k, w in zip(z, words))
        weights.append(p)
        means.append([(c + alpha) / (len(words) + 2 * alpha) for c in n])
    exact = (torch.tensor(weights, dtype=torch.float64)[:, None]
             * torch.tensor(means, dtype=torch.float64)).sum(0) / sum(weights)
    # 2000 copies of the document: an average over 2000 independent chains (standard error ~0.0015);
    # a sampler that forgot to take each token out of its own count is off by ~0.02 here
    counts = torch.tensor([[2, 1, 2]]).expand(2000, 3)
    got = fold_in(counts, phi.T, alpha=alpha, sweeps=60, burn_in=10, generator=torch.Generator().manual_seed(0),
                  doc_prior=prior.expand(2000, 2)).mean(0)
    assert torch.allclose(got, exact, atol=0.006), (got, exact)


def test_fold_in_with_a_subset_of_the_modalities():
    # modality a tells {0, 1} from {2}; modality b tells {0} from {1, 2}
    a = torch.tensor([[1.0, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1]]) + 0.02
    b = torch.tensor([[1.0, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 1]]) + 0.02
    a, b = a / a.sum(1, keepdim=True), b / b.sum(1, keepdim=True)
    truth, (counts_a, counts_b) = _corpus([a, b], 150, 100, 0.98, seed=4)
    lda = LDA("lda", n_topics=3, vocab_sizes={"a": 6, "b": 6}, sweeps=40, seed=5).fit(a=counts_a, b=counts_b)
    mapping = _label_map(truth, lda.predict(), 3)
    new_truth, (new_a, new_b) = _corpus([a, b], 60, 100, 0.98, seed=8)
    both = lda.predict(a=new_a, b=new_b)
    assert float((both == mapping[new_truth]).float().mean()) > 0.95
    # modality a alone cannot tell topic 0 from topic 1, but tells topic 2 from both
    only_a = lda.infer(a=new_a)["c"].probs
    look_alike = new_truth < 2
    pair = only_a[look_alike][:, mapping[:2]].sum(1)
    assert float(pair.min()) > 0.8
    assert torch.equal(only_a[~look_alike].argmax(1), mapping[new_truth[~look_alike]])
    # a modality not given contributes no tokens: the same as all-zero counts, draw for draw
    zeros = lda.infer(a=new_a, b=torch.zeros(60, 6))
    assert all(torch.equal(zeros[p].probs, lda.infer(a=new_a)[p].probs) for p in ("c", "a", "b"))
    # and its words are still predicted, from the topics the other modality gave
    words_b = lda.infer(a=new_a)["b"].probs.double()
    theta = lda.infer(a=new_a)["c"].probs.double()
    expected = theta @ lda.topic_word_["b"].double()
    torch.testing.assert_close(words_b, expected / expected.sum(1, keepdim=True), rtol=1e-5, atol=1e-6)


def test_a_prior_on_new_documents_acts_on_every_token():
    # documents that hold only a word both topics share follow the prior; clear ones keep their topic
    gen = torch.Generator().manual_seed(6)
    counts = torch.zeros(80, 5)
    counts[:40, :2] = torch.randint(20, 30, (40, 2), generator=gen).float()
    counts[40:, 2:4] = torch.randint(20, 30, (40, 2), generator=gen).float()
    counts[:, 4] = 10
    lda = LDA("lda", n_topics=2, vocab_sizes=(5,), sweeps=30, seed=7, tokens=40).fit(w0=counts)
    shared = torch.zeros(6, 5)
    shared[:, 4] = 10
    new = torch.cat([counts[:3], counts[40:43], shared])
    leaning = torch.tensor([0.2, 0.8])
    topic_b = int(lda.predict()[45])
    prior = leaning.flip(0) if topic_b == 0 else leaning
    prior = prior.expand(12, 2)
    out = lda.infer(w0=new, c=prior)
    plain = lda.infer(w0=new)
    # the prior acts on every token's topic while the new documents are folded in (as in
    # training), so it moves the topic proportions of the shared-word documents, which their words
    # leave open, and not those of the clear ones
    assert (out["c"].probs[6:, topic_b] > plain["c"].probs[6:, topic_b]).all()
    assert float(out["c"].probs[6:, topic_b].min()) > 0.9
    assert float((out["c"].probs[:6] - plain["c"].probs[:6]).abs().max()) < 0.05
    # the words' own documents are decided by their words, the shared-word ones by the prior
    assert torch.equal(lda.predict(w0=new, c=prior)[:6], lda.predict()[torch.tensor([0, 1, 2, 40, 41, 42])])
    assert (lda.predict(w0=new, c=prior)[6:] == topic_b).all()
    # the word distributions carry the prior, as publish's do (topic_posterior_)
    theta = out["c"].probs.double() * prior.double()
    words = (theta / theta.sum(1, keepdim=True)) @ lda.topic_word_["w0"].double()
    torch.testing.assert_close(out["w0"].probs.double(), words / words.sum(1, keepdim=True), rtol=1e-5, atol=1e-6)


def test_lda_infer_leaves_the_state_untouched_and_repeats():
    phi = _block_topics(3, 12, 4)
    _, (counts,) = _corpus([phi], 60, 100, 0.8, seed=2)
    lda = LDA("lda", n_topics=3, vocab_sizes=(12,), sweeps=10, seed=1).fit(w0=counts)
    snapshot = _snapshot(lda)
    _, (new,) = _corpus([phi], 9, 100, 0.8, seed=3)
    first, second = lda.infer(w0=new), lda.infer(w0=Counts(new))
    assert first.keys() == {"c", "w0"}
    assert all(torch.equal(first[p].probs, second[p].probs) for p in first)
    lda.predict(w0=new, c=torch.full((9, 3), 1 / 3))
    _assert_untouched(lda, snapshot)
    # training continues exactly as if infer had never run
    fresh = LDA("lda", n_topics=3, vocab_sizes=(12,), sweeps=10, seed=1).fit(w0=counts)
    lda.update()
    fresh.update()
    assert torch.equal(lda.topics_, fresh.topics_)


def test_lda_infer_errors_name_the_problem():
    lda = LDA("lda", n_topics=2, vocab_sizes=(5,), sweeps=5)
    with pytest.raises(DataError, match="'lda'.*nothing learned yet"):
        lda.infer(w0=torch.ones(3, 5))
    lda.fit(w0=torch.randint(0, 4, (20, 5)))
    with pytest.raises(MessageError, match="'lda'.*port 'w0'.*width 4 does not match the port's size 5"):
        lda.infer(w0=torch.ones(3, 4))
    with pytest.raises(MessageError, match="'lda'.*port 'w0'.*negative"):
        lda.infer(w0=torch.tensor([[1.0, -1, 0, 0, 0]]))
    with pytest.raises(DataError, match="'lda'.*bags of words.*not only a prior on 'c'"):
        lda.infer(c=torch.full((3, 2), 0.5))
    with pytest.raises(MessageError, match="'lda'.*port 'c' has 3 items but port 'w0' has 2"):
        lda.infer(w0=torch.ones(2, 5), c=torch.full((3, 2), 0.5))
    with pytest.raises(PortError, match="no port 'x'"):
        lda.infer(x=torch.ones(2, 5))
    with pytest.raises(DataError, match="'lda'.*empty message on port 'w0'"):
        lda.infer(w0=torch.ones(0, 5))
    whole = LDA("whole", n_topics=2, vocab_sizes=(5,), tokens=None, sweeps=5).fit(w0=torch.ones(4, 5))
    with pytest.raises(DataError, match="whole numbers"):
        whole.infer(w0=torch.full((2, 5), 0.5))


# --- the recogniser ------------------------------------------------------------------------------
_UNIT_MEANS = torch.tensor([[8.0, 0, 0], [0, 8, 0], [0, 0, 8], [-8, -8, -8]])


def _unit_speech(n, seed, noise=0.5):
    """Utterances of 2-3 segments, each segment 3-5 frames of one of four distinct Gaussians."""
    gen = torch.Generator().manual_seed(seed)
    length = 15
    values, lengths = torch.zeros(n, length, 3), torch.zeros(n, dtype=torch.long)
    units = torch.full((n, length), -1, dtype=torch.long)
    for i in range(n):
        t = 0
        for _ in range(int(torch.randint(2, 4, (1,), generator=gen))):
            unit, run = int(torch.randint(0, 4, (1,), generator=gen)), int(torch.randint(3, 6, (1,), generator=gen))
            units[i, t:t + run] = unit
            t += run
        lengths[i] = t
    mask = units >= 0
    values[mask] = _UNIT_MEANS[units[mask]] + noise * torch.randn(int(mask.sum()), 3, generator=gen)
    return Sequences(values, lengths), units


def _trained_recognizer(**kw):
    speech, units = _unit_speech(60, seed=0)
    asr = Recognizer("asr", n_units=4, dim=3, seed=2, **kw).fit(audio=speech)
    return asr, speech, units


def test_infer_on_the_training_utterances_is_the_in_sample_decode():
    asr, speech, units = _trained_recognizer(n_best=5)
    out = asr.infer(audio=speech)["w"]
    own = asr.publish()["w"]
    assert isinstance(out, NBest) and out.hypotheses.shape == own.hypotheses.shape
    # the best path is each frame's most probable unit: the same as in sample, with its score
    assert torch.equal(out.hypotheses[:, 0], own.hypotheses[:, 0])
    torch.testing.assert_close(out.log_scores[:, 0], own.log_scores[:, 0], rtol=0, atol=0)
    # every path is padded where the utterance ends, and scored by its frames' log posteriors
    mask = speech.mask()
    assert ((out.hypotheses >= 0) == mask[:, None, :]).all()
    logq = asr.frame_log_posteriors()
    _, item, position = asr._flat_frames()
    paths = out.hypotheses[item, :, position]
    scores = torch.zeros_like(out.log_scores).index_add_(0, item, logq.gather(1, paths.long()))
    torch.testing.assert_close(out.log_scores, scores, rtol=1e-5, atol=1e-4)


def test_infer_draws_its_paths_from_the_frame_posteriors_as_in_sample():
    # overlapping units (ambiguous frames) and many drawn paths: the drawn units of a frame follow
    # q(u | f) in infer exactly as in the module's own N-best
    speech, _ = _unit_speech(30, seed=5, noise=6.0)
    asr = Recognizer("asr", n_units=4, dim=3, n_best=1500, position_weight=0.0, seed=1).fit(audio=speech)
    out = asr.infer(audio=speech)["w"]
    logq = asr.frame_log_posteriors()
    _, item, position = asr._flat_frames()
    frame = int((-(logq.exp() * logq).sum(1)).argmax())
    q = logq[frame].exp().double().numpy()
    keep = q * 1499 > 5
    for nbest in (out, asr.nbest_):
        drawn = nbest.hypotheses[item[frame], 1:, position[frame]].numpy()
        counts = np.bincount(drawn, minlength=4)
        test = stats.chisquare(counts[keep], q[keep] / q[keep].sum() * counts[keep].sum())
        assert test.pvalue > 0.001, (counts, q)
    # a fresh stream: not the draws of the training stream
    assert not torch.equal(out.hypotheses[:, 1:], asr.nbest_.hypotheses[:, 1:])


def test_new_utterances_of_the_same_units_decode_to_their_unit_paths():
    asr, speech, units = _trained_recognizer(n_best=3)
    own = asr.nbest_.hypotheses[:, 0]
    mask = speech.mask()
    mapping = _label_map(units[mask], own[mask], 4)
    assert torch.equal(own[mask], mapping[units[mask]])
    new_speech, new_units = _unit_speech(25, seed=9)
    out = asr.infer(audio=new_speech)["w"]
    new_mask = new_speech.mask()
    assert torch.equal(out.hypotheses[:, 0][new_mask], mapping[new_units[new_mask]])
    # an utterance shorter than the number of units decodes too, once the units are learned
    short = Sequences(new_speech.values[:1, :2], torch.tensor([2]))
    assert torch.equal(asr.infer(audio=short)["w"].hypotheses[0, 0], mapping[new_units[0, :2]])


def test_recognizer_infer_leaves_the_state_untouched_and_repeats():
    asr, speech, _ = _trained_recognizer(n_best=4)
    snapshot = _snapshot(asr)
    cached = asr._cached_frames
    new_speech, _ = _unit_speech(10, seed=3, noise=3.0)
    first, second = asr.infer(audio=new_speech)["w"], asr.infer(audio=new_speech)["w"]
    assert torch.equal(first.hypotheses, second.hypotheses) and torch.equal(first.log_scores, second.log_scores)
    assert asr.predict(audio=new_speech) is None  # its words are paths, not categories
    _assert_untouched(asr, snapshot)
    assert asr._cached_frames is cached
    # relearning continues exactly as if infer had never run
    fresh = Recognizer("asr", n_units=4, dim=3, n_best=4, seed=2).fit(audio=speech)
    for module in (asr, fresh):
        module.receive("w", NBest(module.nbest_.hypotheses[:, 1:2], module.nbest_.log_scores[:, 1:2]))
        module.update()
    assert torch.equal(asr.nbest_.hypotheses, fresh.nbest_.hypotheses)
    assert torch.equal(asr.means_, fresh.means_)


def test_recognizer_infer_with_a_discriminant_space_decodes_there():
    asr, speech, _ = _trained_recognizer(n_best=2, discriminant=2)
    asr.receive("w", NBest(asr.nbest_.hypotheses[:, :1], asr.nbest_.log_scores[:, :1]))
    asr.update()
    assert asr.projection_ is not None
    out = asr.infer(audio=speech)["w"]
    assert torch.equal(out.hypotheses[:, 0], asr.nbest_.hypotheses[:, 0])


def test_recognizer_infer_errors_name_the_problem():
    speech, _ = _unit_speech(10, seed=1)
    asr = Recognizer("asr", n_units=4, dim=3, n_best=2)
    with pytest.raises(DataError, match="'asr'.*nothing learned yet"):
        asr.infer(audio=speech)
    asr.fit(audio=speech)
    with pytest.raises(MessageError, match="'asr'.*port 'audio'.*width 5 does not match the port's size 3"):
        asr.infer(audio=Sequences(torch.zeros(2, 4, 5), torch.tensor([4, 3])))
    with pytest.raises(DataError, match="'asr'.*no utterances on port 'audio'"):
        asr.infer(audio=Sequences(torch.zeros(0, 4, 3), torch.zeros(0, dtype=torch.long)))
    with pytest.raises(DataError, match="'asr'.*infer needs new items"):
        asr.infer()
    hyps = NBest(torch.zeros(10, 1, 15, dtype=torch.long), torch.zeros(10, 1))
    with pytest.raises(DataError, match="'asr'.*infer decodes new utterances given on port 'audio'"):
        asr.infer(audio=speech, w=hyps)
    # before learning, too few frames for the units is still refused, as before
    with pytest.raises(DataError, match="frames in all cannot train 500 units"):
        Recognizer("big", n_units=500, dim=3).receive("audio", speech)
