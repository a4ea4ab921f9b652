import numpy as np
import pytest
import torch
from scipy import stats
from torch.distributions import Independent, Normal

from serket.clustering import kmeans, kmeans_pp_labels
from serket.errors import DataError, MessageError
from serket.messages import NBest, Sequences
from serket.modules.asr import Recognizer, diagonal_gaussian_log_likelihood
from serket.testing import check_module


def _toy_speech(n=60, d=3, seed=0, noise=0.3):
    """Utterances made of two 'phones' each: three word types, sequences of 4-8 frames."""
    gen = torch.Generator().manual_seed(seed)
    phones = 5 * torch.randn(4, d, generator=gen)
    words = [(0, 1), (2, 3), (1, 2)]
    lengths = torch.randint(4, 9, (n,), generator=gen)
    values = torch.zeros(n, 8, d)
    labels = torch.arange(n) % 3
    for i in range(n):
        half = int(lengths[i]) // 2
        a, b = words[int(labels[i])]
        values[i, :half] = phones[a]
        values[i, half:lengths[i]] = phones[b]
        values[i, :lengths[i]] += noise * torch.randn(int(lengths[i]), d, generator=gen)
    return Sequences(values, lengths), labels


def test_gaussian_log_likelihood_matches_torch():
    gen = torch.Generator().manual_seed(0)
    frames, means = torch.randn(50, 4, generator=gen), torch.randn(3, 4, generator=gen)
    variances = torch.rand(3, 4, generator=gen) + 0.2
    expected = torch.stack([Independent(Normal(means[u], variances[u].sqrt()), 1).log_prob(frames)
                            for u in range(3)], 1)
    assert torch.allclose(diagonal_gaussian_log_likelihood(frames, means, variances, chunk=7), expected, atol=1e-4)


def test_kmeans_recovers_separated_clusters():
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = centres[torch.arange(300) % 3] + torch.randn(300, 2, generator=gen)
    found, labels = kmeans(points, 3, generator=gen)
    order = found[:, 0].argsort()
    assert torch.allclose(found[order][:, 0].sort().values, torch.tensor([0.0, 0.0, 10.0]), atol=0.4)
    # every true cluster is exactly one found cluster
    for k in range(3):
        assert len(torch.unique(labels[torch.arange(300) % 3 == k])) == 1


def _old_kmeans(points, k, iterations, restarts, generator, sample):
    """The recogniser's own k-means as it was before it moved to serket.clustering, to pin its draws."""
    def sq(p, c):
        return (p.pow(2).sum(1, keepdim=True) - 2.0 * p @ c.T + c.pow(2).sum(1)).clamp_min(0)

    n = points.shape[0]
    subset = points if n <= sample else points[torch.randperm(n, generator=generator)[:sample]]
    best = None
    for _ in range(restarts):
        centres = subset[torch.randint(subset.shape[0], (1,), generator=generator)]
        closest = sq(subset, centres).squeeze(1)
        for _ in range(1, k):
            probs = closest / closest.sum() if float(closest.sum()) > 0 else torch.full_like(closest, 1.0 / len(closest))
            idx = torch.multinomial(probs, 1, generator=generator)
            centres = torch.cat([centres, subset[idx]])
            closest = torch.minimum(closest, sq(subset, subset[idx]).squeeze(1))
        for _ in range(iterations):
            labels = sq(subset, centres).argmin(1)
            counts = torch.bincount(labels, minlength=k).to(subset.dtype)
            sums = torch.zeros_like(centres).index_add_(0, labels, subset)
            centres = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centres)
        inertia = float(sq(subset, centres).amin(1).sum())
        if best is None or inertia < best[0]:
            best = (inertia, centres)
    return best[1], sq(points, best[1]).argmin(1)


def _old_kmeans_pp_labels(points, n_clusters, generator):
    """The GMM's k-means++ seeding as it was before the recogniser shared it."""
    centres = [points[torch.randint(points.shape[0], (1,), generator=generator)[0]]]
    nearest = (points - centres[0]).square().sum(1)
    for _ in range(1, n_clusters):
        weights = torch.where(nearest.sum() > 0, nearest, torch.ones_like(nearest))
        centres.append(points[torch.multinomial(weights, 1, generator=generator)[0]])
        nearest = torch.minimum(nearest, (points - centres[-1]).square().sum(1))
    return torch.cdist(points, torch.stack(centres)).argmin(1)


@pytest.mark.parametrize("n, sample", [(400, 20000), (3000, 1000)])
def test_one_kmeans_pp_draws_what_each_caller_drew_before(n, sample):
    # the recogniser's k-means and the GMM's seeding computed D^2 and its weights differently;
    # the one seeding keeps each caller's arithmetic, so the same streams pick the same points
    points = torch.randn(n, 5, generator=torch.Generator().manual_seed(n)) * torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0])
    new, old = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    centres, labels = kmeans(points, 12, iterations=4, restarts=3, generator=new, sample=sample)
    want_centres, want_labels = _old_kmeans(points, 12, 4, 3, old, sample)
    assert torch.equal(centres, want_centres) and torch.equal(labels, want_labels)
    assert torch.equal(new.get_state(), old.get_state())
    for _ in range(3):
        assert torch.equal(kmeans_pp_labels(points.double(), 10, new), _old_kmeans_pp_labels(points.double(), 10, old))
    assert torch.equal(new.get_state(), old.get_state())
    # duplicates everywhere: the draws fall back to uniform, each in its own arithmetic
    few = points[:3].repeat(20, 1)
    assert torch.equal(kmeans(few, 5, generator=new)[0], _old_kmeans(few, 5, 25, 3, old, 20000)[0])
    assert torch.equal(kmeans_pp_labels(few, 5, new), _old_kmeans_pp_labels(few, 5, old))
    assert torch.equal(new.get_state(), old.get_state())


def test_drawn_paths_follow_the_frame_posteriors():
    speech, _ = _toy_speech(noise=4.0)  # overlapping units: ambiguous frames
    asr = Recognizer("asr", n_units=4, dim=3, n_best=2000, position_weight=0.0, seed=1)
    asr.receive("audio", speech)
    asr.update()
    logq = asr.frame_log_posteriors()
    # pick the most ambiguous frame and compare the drawn units (hypotheses 1..B-1) with q
    frame = int((-(logq.exp() * logq).sum(1)).argmax())
    _, item, position = asr._flat_frames()
    drawn = asr.nbest_.hypotheses[item[frame], 1:, position[frame]].numpy()
    q = logq[frame].exp().double().numpy()
    counts = np.bincount(drawn, minlength=4)
    keep = q * len(drawn) > 5
    chi2 = stats.chisquare(counts[keep], q[keep] / q[keep].sum() * counts[keep].sum())
    assert chi2.pvalue > 0.001, (counts, q)
    # the first hypothesis is the best path and the scores are the path log probabilities
    assert torch.equal(asr.nbest_.hypotheses[item, 0, position], logq.argmax(1))
    best = logq.max(1).values
    assert torch.allclose(asr.nbest_.log_scores[:, 0], torch.zeros(speech.n_items).index_add_(0, item, best), atol=1e-4)


def test_relearning_from_given_paths_fits_those_units():
    speech, labels = _toy_speech()
    asr = Recognizer("asr", n_units=4, dim=3, n_best=3, position_weight=0.0, relearn_rate=1.0, shrinkage=0.0)
    asr.receive("audio", speech)
    asr.update()
    frames, item, position = asr._flat_frames()
    # resampled paths that put every frame of every utterance in unit 2 except the first frame
    hyps = torch.full((speech.n_items, 1, 8), -1, dtype=torch.long)
    mask = speech.mask()
    hyps[:, 0][mask] = 2
    hyps[:, 0, 0] = 0
    asr.receive("w", NBest(hyps, torch.zeros(speech.n_items, 1)))
    asr.update()
    firsts = position == 0
    assert torch.allclose(asr.means_[0], frames[firsts].mean(0), atol=1e-4)
    assert torch.allclose(asr.means_[2], frames[~firsts].mean(0), atol=1e-4)
    assert asr.n_relearned_ == 1 and "w" not in asr.inbox


def test_recognizer_alone_discovers_the_toy_words():
    from serket.metrics import clustering_accuracy

    speech, labels = _toy_speech()
    asr = Recognizer("asr", n_units=4, dim=3, n_best=1, position_weight=0.0)
    asr.receive("audio", speech)
    asr.update()
    # first-frame unit and last-frame unit identify the word
    lengths = speech.lengths
    first = asr.nbest_.hypotheses[:, 0, 0]
    last = asr.nbest_.hypotheses[torch.arange(speech.n_items), 0, lengths - 1]
    assert clustering_accuracy(labels, first * 4 + last) == 1.0


def test_recognizer_conformance():
    speech, _ = _toy_speech(n=30)
    check_module(lambda: Recognizer("asr", n_units=4, dim=3, n_best=3, seed=2), {"audio": speech})


def test_recognizer_errors_are_clear():
    speech, _ = _toy_speech(n=10)
    asr = Recognizer("asr", n_units=4, dim=3)
    with pytest.raises(DataError, match="no audio received"):
        asr.update()
    with pytest.raises(DataError, match="frames in all cannot train 500 units"):
        Recognizer("big", n_units=500, dim=3).receive("audio", speech)
    asr.receive("audio", speech)
    asr.update()
    with pytest.raises(MessageError, match="one resampled hypothesis per utterance"):
        asr.receive("w", NBest(torch.zeros(10, 2, 8, dtype=torch.long), torch.zeros(10, 2)))
    short = torch.full((10, 1, 8), -1, dtype=torch.long)
    short[:, 0, 0] = 1
    asr.receive("w", NBest(short, torch.zeros(10, 1)))
    with pytest.raises(MessageError, match="shorter than its utterance"):
        asr.update()
    with pytest.raises(ValueError, match="relearn_rate"):
        Recognizer("r", relearn_rate=0.0)


def test_the_n_best_drawn_in_blocks_of_frames_equal_one_draw(monkeypatch):
    # the decode draws its Gumbel noise a block of frames at a time (memory); on the CPU a
    # generator's numbers come out in order, so the blocks draw exactly what one draw would
    import serket.modules.asr as asr_module

    speech, _ = _toy_speech(n=40, noise=3.0)
    results = []
    for chunk in (10**9, 7):
        monkeypatch.setattr(asr_module, "_DECODE_CHUNK", chunk)
        asr = Recognizer("asr", n_units=4, dim=3, n_best=6, seed=2)
        asr.fit(audio=speech)
        results.append((asr.nbest_, asr.generator.get_state()))
    (whole, state_whole), (blocks, state_blocks) = results
    assert torch.equal(whole.hypotheses, blocks.hypotheses)
    assert torch.equal(whole.log_scores, blocks.log_scores)
    assert torch.equal(state_whole, state_blocks)
