"""The pretrained phone recogniser (pocketsphinx, US English): decoding real FSDD clips, its
N-best list, the relearned phone bigram against its closed form, checkpoints, clear errors."""

import io
import math
import sys

import pytest
import torch

from serket.errors import ConfigError, DataError
from serket.messages import NBest, Sequences
from serket.audio.features import waveform_sequences
from serket.modules.phones import PHONES, PhoneRecognizer, bigram_log_prob, edit_distance, phone_bigram
from serket.testing import check_module


# the CMU dictionary's pronunciations of the digit words (the first of "zero"'s two)
PRONUNCIATIONS = {0: ("Z", "IH", "R", "OW"), 1: ("W", "AH", "N"), 2: ("T", "UW"), 3: ("TH", "R", "IY"),
                  4: ("F", "AO", "R"), 5: ("F", "AY", "V"), 6: ("S", "IH", "K", "S"),
                  7: ("S", "EH", "V", "AH", "N"), 8: ("EY", "T"), 9: ("N", "AY", "N")}


@pytest.fixture(scope="module")
def clips():
    """Take 0 of each digit by one speaker, real FSDD recordings at 8 kHz."""
    from serket.datasets import load_fsdd

    digits = load_fsdd(speakers=["jackson"])
    keep = [i for i, take in enumerate(digits.takes) if take == 0]
    return [digits.waveforms[i] for i in keep], [int(digits.labels[i]) for i in keep], digits.rate


@pytest.fixture(scope="module")
def decoded(clips, tmp_path_factory):
    waves, labels, rate = clips
    asr = PhoneRecognizer("asr", rate=rate, n_best=20).use_cache(tmp_path_factory.mktemp("phones"))
    asr.fit(audio=waveform_sequences(waves))
    return asr, labels


def _strings(nbest: NBest, item: int):
    return [[PHONES[int(p)] for p in row if p >= 0] for row, score in
            zip(nbest.hypotheses[item], nbest.log_scores[item]) if math.isfinite(float(score))]


def test_real_clips_decode_near_their_digit_words(decoded):
    # the acoustic model is US English at 16 kHz, FSDD is 8 kHz and cut tight: the best path is
    # rough (a phone error near 0.75 over the corpus), the N-best list holds the word's phones
    asr, labels = decoded
    oracle = [min(edit_distance(s, PRONUNCIATIONS[d]) for s in _strings(asr.nbest_, i)) for i, d in enumerate(labels)]
    best = [edit_distance(_strings(asr.nbest_, i)[0], PRONUNCIATIONS[d]) for i, d in enumerate(labels)]
    # pocketsphinx is deterministic: 7 of the 10 are within 2 edits in the 20-best with pocketsphinx 5.1.1
    assert sum(o <= 2 for o in oracle) >= 7, oracle
    assert sum(best) / sum(len(PRONUNCIATIONS[d]) for d in labels) < 1.0, best


def test_nbest_scores_are_ordered_and_strings_distinct(decoded):
    asr, _ = decoded
    scores = asr.nbest_.log_scores
    assert bool((scores[:, :-1] >= scores[:, 1:]).all())
    assert bool(torch.isfinite(scores[:, 0]).all())
    for i in range(scores.shape[0]):
        strings = [tuple(s) for s in _strings(asr.nbest_, i)]
        assert len(strings) == len(set(strings)) >= 2


def test_decodes_are_cached_and_deterministic(clips, tmp_path):
    waves, _, rate = clips
    audio = waveform_sequences(waves[:2])
    first = PhoneRecognizer("asr", rate=rate, n_best=5).use_cache(tmp_path).fit(audio=audio)
    files = sorted(tmp_path.rglob("*.json"))
    assert len(files) == 2
    again = PhoneRecognizer("asr", rate=rate, n_best=5).use_cache(tmp_path).fit(audio=audio)
    uncached = PhoneRecognizer("asr", rate=rate, n_best=5).fit(audio=audio)
    for other in (again, uncached):
        assert torch.equal(first.nbest_.hypotheses, other.nbest_.hypotheses)
        assert torch.equal(first.nbest_.log_scores, other.nbest_.log_scores)


def test_bigram_matches_its_closed_form():
    # V = 2 phones; strings "0 1" and "1"; add-one: P(b | a) = (n(a, b) + 1) / (n(a) + 3)
    log_bigram = phone_bigram([[0, 1], [1]], 2, 1.0)
    start = end = 2
    expected = {(start, 0): 2 / 5, (start, 1): 2 / 5, (start, end): 1 / 5, (0, 1): 2 / 4, (0, 0): 1 / 4,
                (0, end): 1 / 4, (1, end): 3 / 5, (1, 0): 1 / 5, (1, 1): 1 / 5}
    for (a, b), p in expected.items():
        assert math.isclose(float(log_bigram[a, b].exp()), p, rel_tol=1e-12)
    hyps = torch.tensor([[[0, 1, -1], [1, -1, -1], [-1, -1, -1]]], dtype=torch.int16)
    got = bigram_log_prob(log_bigram, hyps)[0]
    want = [math.log(2 / 5 * 2 / 4 * 3 / 5), math.log(2 / 5 * 3 / 5), math.log(1 / 5)]
    assert torch.allclose(got, torch.tensor(want, dtype=torch.float64))


def test_relearned_bigram_rescores_the_nbest(decoded, clips):
    waves, _, rate = clips
    asr = PhoneRecognizer("asr", rate=rate, n_best=20, decoder_scale=30.0, lm_weight=2.0, lm_smoothing=0.5)
    asr.use_cache(decoded[0]._decode_cache).fit(audio=waveform_sequences(waves))
    before = asr.nbest_
    # resample each utterance's last listed string; the bigram learns them
    last = torch.isfinite(before.log_scores).sum(1) - 1
    chosen = before.hypotheses[torch.arange(len(waves)), last].unsqueeze(1)
    asr.receive("w", NBest(chosen, torch.zeros(len(waves), 1)))
    asr.update()
    strings = [[int(p) for p in row if p >= 0] for row in chosen[:, 0]]
    closed = phone_bigram(strings, len(PHONES), 0.5)
    assert torch.allclose(asr.log_bigram_, closed)
    decoded_scores = asr.decoded_.log_scores
    want = 30.0 * decoded_scores + 2.0 * bigram_log_prob(closed, asr.decoded_.hypotheses)
    want = torch.where(torch.isfinite(decoded_scores), want, torch.full_like(want, -math.inf))
    assert torch.allclose(asr.nbest_.log_scores.double(), want.sort(1, descending=True).values.float().double(),
                          atol=1e-3)
    # the strings the LDA chose gained rank on average
    rank = lambda nbest, i: next(b for b in range(nbest.hypotheses.shape[1])
                                 if torch.equal(nbest.hypotheses[i, b], chosen[i, 0]))
    assert sum(rank(asr.nbest_, i) for i in range(len(waves))) < sum(rank(before, i) for i in range(len(waves)))
    # new utterances are rescored the same way, without learning
    out = asr.infer(audio=waveform_sequences(waves[:2]))["w"]
    assert torch.equal(out.hypotheses, asr.nbest_.hypotheses[:2, :, : out.hypotheses.shape[2]])
    assert asr.n_relearned_ == 1


def test_state_round_trips_through_a_checkpoint(decoded, clips):
    asr, _ = decoded
    waves, _, rate = clips
    buffer = io.BytesIO()
    torch.save(asr.state_dict(), buffer)
    buffer.seek(0)
    restored = PhoneRecognizer("asr", rate=rate, n_best=20)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(restored.nbest_.hypotheses, asr.nbest_.hypotheses)
    assert torch.equal(restored.decoded_.log_scores, asr.decoded_.log_scores)
    assert restored.n_updates == asr.n_updates


def test_conformance(clips, tmp_path):
    waves, _, rate = clips
    check_module(lambda: PhoneRecognizer("asr", rate=rate, n_best=4, seed=3).use_cache(tmp_path),
                 {"audio": waveform_sequences(waves[:3])})


def test_clear_errors_on_wrong_audio(clips):
    waves, _, rate = clips
    asr = PhoneRecognizer("asr", rate=rate)
    features = Sequences(torch.zeros(2, 50, 39), torch.tensor([50, 40]))
    with pytest.raises(Exception, match="size|39"):
        asr.receive("audio", features)
    with pytest.raises(DataError, match=r"\[-1, 1\]"):
        asr.receive("audio", waveform_sequences([torch.as_tensor(waves[0]) * 40000]))
    with pytest.raises(DataError, match="shorter than 20 ms"):
        asr.receive("audio", waveform_sequences([torch.zeros(50)]))
    with pytest.raises(ConfigError, match="rate"):
        PhoneRecognizer("asr", rate=4000)
    with pytest.raises(DataError, match="first update"):
        asr.infer(audio=waveform_sequences(waves[:1]))


def test_clear_error_when_pocketsphinx_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "pocketsphinx", None)  # import pocketsphinx now raises ImportError
    with pytest.raises(ConfigError, match="pocketsphinx"):
        PhoneRecognizer("asr")
