"""What the speech architectures are given: utterances as frame sequences or fixed-size vectors.

:func:`speech_sequences` makes the padded MFCC + delta frames the recogniser learns from;
:func:`speech_vectors` pools such frames into one standardised vector per utterance, the input
of the multimodal VAEs; :func:`speech_features` does either from a set of spoken digits. Speaker
identities serve normalisation only (which voice spoke, never what was said).

Example::

    digits = serket.datasets.load_fsdd(verbose=False)
    sequences = speech_sequences(digits.waveforms, digits.rate, digits.speakers)
    vectors = speech_vectors(sequences)               # (3000, 195)
"""

from __future__ import annotations

import torch

from serket.errors import ConfigError, DataError
from serket.messages import Sequences

from .frontend import FrontEnd, normalise_features, pooled_features, trim_silence

__all__ = ["speech_sequences", "speech_vectors", "speech_features", "waveform_sequences", "recogniser_inputs"]


def speech_sequences(waveforms, sample_rate: int, speakers, *, n_mfcc: int = 13, trim: float = 0.5,
                     device="cpu") -> Sequences:
    """Utterances to padded MFCC + delta frames, silence trimmed, normalised per speaker.

    Speaker identities are used for normalisation only (which voice spoke, never what was said).
    """
    front = FrontEnd(sample_rate, n_mfcc=n_mfcc, deltas=True, normalise=None).to(device)
    features, lengths = front.extract([w.to(device) for w in waveforms])
    features, lengths = trim_silence(features, lengths, channel=0, threshold=trim)
    features = normalise_features(features, lengths, "speaker", list(speakers))
    return Sequences(features, lengths)


def speech_vectors(sequences, *, segments: int = 3) -> torch.Tensor:
    """(N, D) fixed-size speech features from padded frames (a ``Sequences`` message):
    pooled mean, std and segment means, standardised per dimension over the corpus."""
    pooled = pooled_features(sequences.values, sequences.lengths, segments=segments)
    return (pooled - pooled.mean(0)) / pooled.std(0).clamp_min(1e-6)


def speech_features(digits, kind: str = "mfcc", *, device="cpu") -> torch.Tensor:
    """(N, D) fixed-size vectors of spoken digits (a :class:`~serket.datasets.SpokenDigits` set,
    or anything with its ``waveforms``, ``rate`` and ``speakers``).

    ``"mfcc"``: 13 MFCC + deltas per frame, silence trimmed, normalised per speaker (the speech
    benchmark's frames), pooled by :func:`speech_vectors` (195 values). ``"logmel"``: 40 log-mel
    energies per frame, trimmed on their total energy, normalised per speaker, pooled the same
    way (200 values). Speaker identities serve normalisation only.
    """
    if kind == "mfcc":
        return speech_vectors(speech_sequences(digits.waveforms, digits.rate, digits.speakers, device=device))
    if kind != "logmel":
        raise ConfigError(f"unknown speech features {kind!r}: use 'mfcc' or 'logmel'")
    front = FrontEnd(digits.rate, features="logmel", n_mels=40, deltas=False, normalise=None).to(device)
    frames, lengths = front.extract([w.to(device) for w in digits.waveforms])
    energy = torch.logsumexp(frames, dim=-1, keepdim=True)
    trimmed, lengths = trim_silence(torch.cat([frames, energy], -1), lengths, channel=frames.shape[-1], threshold=0.5)
    normalised = normalise_features(trimmed[..., :-1], lengths, "speaker", list(digits.speakers))
    return speech_vectors(Sequences(normalised, lengths))


def waveform_sequences(waveforms, device="cpu") -> Sequences:
    """Waveforms (a list of 1-D float arrays or tensors in [-1, 1]) as a ``sequences`` message of
    one value per frame: (N, T, 1) padded with zeros, and each one's length."""
    waves = [torch.as_tensor(w, dtype=torch.float32).reshape(-1) for w in waveforms]
    if not waves:
        raise DataError("waveform_sequences: no waveforms")
    lengths = torch.tensor([w.numel() for w in waves], dtype=torch.int64)
    if int(lengths.min()) < 1:
        raise DataError("waveform_sequences: an empty waveform")
    values = torch.zeros(len(waves), int(lengths.max()), 1)
    for i, w in enumerate(waves):
        values[i, : w.numel(), 0] = w
    return Sequences(values.to(device), lengths.to(device))


def recogniser_inputs(digits, recognizer: str = "units", *, device="cpu") -> Sequences:
    """What a speech graph's recogniser reads of a set of spoken digits: for ``"units"``
    (:class:`~serket.modules.asr.Recognizer`) MFCC frames normalised per speaker on this set
    alone (:func:`speech_sequences`), so that nothing of another set reaches it; for
    ``"pocketsphinx"`` (:class:`~serket.modules.phones.PhoneRecognizer`) the waveforms."""
    if recognizer == "pocketsphinx":
        return waveform_sequences(digits.waveforms, device=device)
    if recognizer != "units":
        raise ConfigError(f"unknown recognizer {recognizer!r}; use 'units' or 'pocketsphinx'")
    return speech_sequences(digits.waveforms, digits.rate, digits.speakers, device=device)
