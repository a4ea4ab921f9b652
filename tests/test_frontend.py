"""Speech front end: frame counts, agreement with torchaudio, padding that changes nothing,
normalisation statistics, deltas, pooled vectors and clear errors."""

import math

import pytest
import torch
import torchaudio

from serket.errors import ConfigError, DataError
from serket.audio.frontend import FrontEnd, add_deltas, normalise_features, pooled_features

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def sine(seconds=0.5, rate=8000, hz=440.0):
    t = torch.arange(int(seconds * rate)) / rate
    return 0.5 * torch.sin(2 * math.pi * hz * t)


def noise(n, seed):
    return 0.1 * torch.randn(n, generator=torch.Generator().manual_seed(seed))


def test_mfcc_of_a_sine_has_the_expected_shape_and_matches_torchaudio():
    wave = sine(0.5)                                  # 4000 samples, hop 80 -> 51 frames
    front = FrontEnd(8000, deltas=False, normalise=None)
    features, frames = front([wave])
    assert features.shape == (1, 51, 13) and frames.tolist() == [51]
    assert front.win_length == 200 and front.hop_length == 80 and front.n_fft == 256
    reference = torchaudio.transforms.MFCC(
        8000, n_mfcc=13, log_mels=True,
        melkwargs=dict(n_fft=256, win_length=200, hop_length=80, f_min=20.0, n_mels=40,
                       center=True, pad_mode="reflect"))(wave)
    torch.testing.assert_close(features[0], reference.T, atol=1e-4, rtol=1e-4)
    full = FrontEnd(8000)
    assert full.dim == 39 and full([wave])[0].shape == (1, 51, 39)
    logmel = FrontEnd(8000, features="logmel", n_mels=40)
    assert logmel.dim == 120 and logmel([wave])[0].shape == (1, 51, 120)
    assert "n_mfcc=13" in repr(full)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("normalise", ["utterance", None])
def test_padding_does_not_change_the_shorter_items_features(device, normalise):
    long, short = noise(6000, 1), noise(2345, 2)
    front = FrontEnd(8000, normalise=normalise).to(device)
    batched, frames = front([long.to(device), short.to(device)])
    alone, alone_frames = front([short.to(device)])
    n = int(frames[1])
    assert n == int(alone_frames[0]) == 1 + 2345 // 80
    assert batched.device.type == device and frames.dtype == torch.int64
    assert torch.allclose(batched[1, :n], alone[0], atol=1e-4)
    assert bool((batched[1, n:] == 0).all())
    # a padded tensor with lengths gives the same
    padded = torch.zeros(2, 6000)
    padded[0], padded[1, :2345] = long, short
    again, again_frames = front(padded.to(device), torch.tensor([6000, 2345]))
    assert torch.equal(again_frames, frames) and torch.allclose(again, batched, atol=1e-5)


def test_utterance_normalisation_gives_zero_mean_unit_variance_on_valid_frames():
    front = FrontEnd(8000, normalise="utterance")
    features, frames = front([noise(5000, 3) * torch.linspace(0, 1, 5000), sine(0.3)])
    for item in range(2):
        valid = features[item, : frames[item]]
        assert torch.allclose(valid.mean(0), torch.zeros(39), atol=1e-4)
        spread = valid.var(0, unbiased=False)
        nonconstant = spread > 1e-3  # a pure sine's deltas can be flat in places
        assert torch.allclose(spread[nonconstant], torch.ones(int(nonconstant.sum())), atol=1e-3)


def test_speaker_normalisation_uses_only_that_speakers_frames():
    front = FrontEnd(8000, normalise="speaker")
    a1, a2, b1 = noise(3000, 4), sine(0.4, hz=300), noise(4500, 5) * 3
    features, frames = front([a1, b1, a2], speakers=["ann", "bob", "ann"])
    alone, _ = front([a1, a2], speakers=["ann", "ann"])
    assert torch.allclose(features[0, : frames[0]], alone[0, : frames[0]], atol=1e-4)
    assert torch.allclose(features[2, : frames[2]], alone[1, : frames[2]], atol=1e-4)
    # pooled over the speaker's frames: zero mean, unit variance
    ann = torch.cat([features[0, : frames[0]], features[2, : frames[2]]])
    assert torch.allclose(ann.mean(0), torch.zeros(39), atol=1e-4)
    # integer ids work the same, and a missing speaker list is a clear error
    by_id, _ = front([a1, b1, a2], speakers=torch.tensor([7, 2, 7]))
    assert torch.allclose(by_id, features, atol=1e-6)
    with pytest.raises(DataError, match="speaker"):
        front([a1, b1])


def test_deltas_of_a_constant_feature_are_zero_and_ignore_padding():
    constant = torch.full((2, 12, 4), 3.5)
    lengths = torch.tensor([12, 7])
    constant[1, 7:] = 100.0  # padding garbage must not leak into item 1's deltas
    stacked = add_deltas(constant, lengths)
    assert stacked.shape == (2, 12, 12)
    assert torch.equal(stacked[:, :, 4:][0], torch.zeros(12, 8))
    assert torch.equal(stacked[1, :7, 4:], torch.zeros(7, 8))
    assert bool((stacked[1, 7:] == 0).all())
    ramp = torch.arange(10.0)[None, :, None]
    deltas = add_deltas(ramp, torch.tensor([10]), order=1)[0, 2:-2, 1]
    assert torch.allclose(deltas, torch.ones(6))  # slope 1 in the interior


def test_pooled_features_shape_and_values():
    features = torch.randn(3, 20, 5)
    lengths = torch.tensor([20, 9, 2])
    pooled = pooled_features(features, lengths)
    assert pooled.shape == (3, 25)
    assert torch.allclose(pooled[1, :5], features[1, :9].mean(0), atol=1e-6)
    assert torch.allclose(pooled[1, 5:10], features[1, :9].std(0, unbiased=False), atol=1e-5)
    assert torch.allclose(pooled[1, 10:15], features[1, :3].mean(0), atol=1e-6)
    assert torch.isfinite(pooled).all()  # 2 frames, 3 segments: no empty segment
    assert pooled_features(features, lengths, segments=0, std=False).shape == (3, 5)


def test_short_clips_are_padded_and_bad_input_is_refused():
    front = FrontEnd(8000)
    features, frames = front([torch.tensor([0.3]), noise(50, 6), noise(150, 7)])
    assert frames.tolist() == [1, 1, 2]
    assert torch.isfinite(features).all()
    with pytest.raises(DataError, match="waveform 1 must be a non-empty"):
        front([noise(100, 8), torch.zeros(0)])
    bad = noise(500, 9)
    bad[10] = float("nan")
    with pytest.raises(DataError, match="waveform 1 has a non-finite"):
        front([noise(500, 1), bad])
    with pytest.raises(DataError, match="floats"):
        front([torch.zeros(400, dtype=torch.int16)])
    with pytest.raises(DataError, match="lengths"):
        front(torch.zeros(2, 100), torch.tensor([100, 0]))
    with pytest.raises(ConfigError, match="FrontEnd: features must be one of"):
        FrontEnd(8000, features="plp")


def test_extract_in_batches_equals_forward():
    front = FrontEnd(8000, normalise="speaker")
    waves = [noise(n, seed) for seed, n in enumerate([900, 3000, 120, 2200, 4100])]
    speakers = ["a", "b", "a", "b", "a"]
    whole, frames = front(waves, speakers=speakers)
    chunked, chunk_frames = front.extract(waves, speakers=speakers, batch_size=2)
    assert torch.equal(frames, chunk_frames)
    assert torch.allclose(whole, chunked, atol=1e-5)
    normalised = normalise_features(whole, frames, None)
    assert torch.equal(normalised, whole)  # already zero past each end
