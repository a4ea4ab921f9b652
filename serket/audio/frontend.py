"""Speech front end: waveforms -> frames of MFCC or log-mel features, batched, on any device.

:class:`FrontEnd` turns a batch of waveforms of different lengths into a padded tensor of
feature frames and the number of valid frames of each, with optional delta and delta-delta
coefficients and cepstral mean and variance normalisation (per utterance or per speaker).
:func:`pooled_features` makes a fixed-size vector of each utterance from its frames.

Padding never changes an utterance's features: each waveform is framed exactly as it would be
alone (``torch.stft(center=True)`` framing with reflection at its own ends), deltas replicate
its own last frame, and statistics use only its valid frames.

Example::

    front = FrontEnd(sample_rate=8000)                  # 13 MFCC + deltas = 39 dims
    features, frames = front([torch.randn(4000), torch.randn(2500)])
    features.shape, frames                              # (2, 51, 39), tensor([51, 32])
    vectors = pooled_features(features, frames)         # (2, 195)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torchaudio
from torch import nn

from serket.errors import ConfigError, DataError
from serket.validation import check_choice, check_int, check_real

__all__ = ["FrontEnd", "add_deltas", "normalise_features", "pooled_features", "trim_silence"]

FEATURES = ("mfcc", "logmel")
NORMALISATIONS = ("utterance", "speaker", None)
LOG_OFFSET = 1e-6  # the offset torchaudio's MFCC(log_mels=True) adds before its log


# --------------------------------------------------------------------------------------------
# Pure functions on padded frames (B, F, D) with valid frame counts (B,)


def _valid_frames(lengths: torch.Tensor, n_frames: int) -> torch.Tensor:
    """Bool (B, F): which frames of each item are real."""
    return torch.arange(n_frames, device=lengths.device)[None, :] < lengths[:, None]


def _repeat_last_frame(features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Frames past each item's end replaced by its last valid frame (replicate padding)."""
    frames = torch.arange(features.shape[1], device=features.device)
    index = torch.minimum(frames[None, :], (lengths - 1).clamp(min=0)[:, None])
    return features.gather(1, index[:, :, None].expand(-1, -1, features.shape[2]))


def add_deltas(features: torch.Tensor, lengths: torch.Tensor, *, win_length: int = 5,
               order: int = 2) -> torch.Tensor:
    """Features with their deltas (and delta-deltas) appended, each item on its own frames.

    Uses ``torchaudio.functional.compute_deltas`` (regression over ``win_length`` frames,
    replicating the edge frames). Frames past an item's end do not leak into its deltas.

    Args:
        features: (B, F, D) padded frames.
        lengths: (B,) valid frames of each item.
        win_length: frames in the regression window (odd, >= 3).
        order: 1 adds deltas, 2 adds deltas and delta-deltas.

    Returns:
        (B, F, D * (order + 1)), zero past each item's end.
    """
    win_length = check_int("add_deltas", "win_length", win_length, minimum=3)
    order = check_int("add_deltas", "order", order, minimum=0)
    parts = [features]
    current = features
    for _ in range(order):
        current = _repeat_last_frame(current, lengths)
        current = torchaudio.functional.compute_deltas(
            current.transpose(1, 2), win_length=win_length, mode="replicate"
        ).transpose(1, 2)
        parts.append(current)
    stacked = torch.cat(parts, dim=2)
    return stacked * _valid_frames(lengths, features.shape[1])[:, :, None]


def _speaker_index(speakers, batch: int, device) -> torch.Tensor:
    if speakers is None:
        raise DataError("normalise='speaker' needs the speaker of each utterance (speakers=...)")
    if isinstance(speakers, torch.Tensor):
        if speakers.shape != (batch,) or speakers.is_floating_point():
            raise DataError(f"speakers must be {batch} integer ids, got {speakers.dtype} of "
                            f"shape {tuple(speakers.shape)}")
        return torch.unique(speakers.to(device), return_inverse=True)[1]
    speakers = list(speakers)
    if len(speakers) != batch:
        raise DataError(f"speakers has {len(speakers)} entries for {batch} utterances")
    index = {}
    return torch.tensor([index.setdefault(s, len(index)) for s in speakers], device=device)


def normalise_features(features: torch.Tensor, lengths: torch.Tensor,
                       mode: str | None = "utterance", speakers=None, *,
                       eps: float = 1e-8) -> torch.Tensor:
    """Mean and variance normalisation of each feature dimension over valid frames.

    Args:
        features: (B, F, D) padded frames.
        lengths: (B,) valid frames of each item.
        mode: ``"utterance"`` (statistics of each utterance's own frames), ``"speaker"``
            (statistics of all frames, in this batch, of the utterance's speaker) or None.
        speakers: for ``"speaker"``: one id per utterance (a list of names or an int tensor).
        eps: added to the variance (a constant dimension becomes zero, not NaN).

    Returns:
        (B, F, D): zero mean and unit variance per dimension over the chosen frames, zero past
        each item's end.
    """
    if mode not in NORMALISATIONS:
        raise DataError(f"unknown normalisation {mode!r}: use one of {list(NORMALISATIONS)}")
    valid = _valid_frames(lengths, features.shape[1])[:, :, None].to(features.dtype)
    if mode is None:
        return features * valid
    counts = lengths.to(features.dtype)[:, None]                   # (B, 1)
    sums = (features * valid).sum(1)                               # (B, D)
    if mode == "speaker":
        group = _speaker_index(speakers, features.shape[0], features.device)
        n_groups = int(group.max()) + 1
        group_counts = counts.new_zeros(n_groups, 1).index_add_(0, group, counts)
        mean = (sums.new_zeros(n_groups, sums.shape[1]).index_add_(0, group, sums)
                / group_counts)[group]
    else:
        mean = sums / counts
    centred = (features - mean[:, None, :]).mul_(valid)           # zero past each end
    squares = centred.square().sum(1)
    if mode == "speaker":
        squares = squares.new_zeros(n_groups, sums.shape[1]).index_add_(0, group, squares)
        variance = (squares / group_counts)[group]
    else:
        variance = squares / counts
    return centred.mul_(torch.rsqrt(variance + eps)[:, None, :])


def pooled_features(features: torch.Tensor, lengths: torch.Tensor, *, segments: int = 3,
                    std: bool = True) -> torch.Tensor:
    """A fixed-size vector per utterance: mean (and std) over its valid frames, then the means
    of ``segments`` equal stretches of it (which keep some of the order of its sounds).

    An utterance with fewer frames than ``segments`` repeats frames so that no stretch is empty.

    Args:
        features: (B, F, D) padded frames.
        lengths: (B,) valid frames of each item (each >= 1).
        segments: equal stretches whose means are appended (0 for none).
        std: append the standard deviation over valid frames.

    Returns:
        (B, D * (1 + std + segments)): ``[mean, std, segment_1, ..., segment_k]``.
    """
    if features.ndim != 3 or lengths.shape != features.shape[:1]:
        raise DataError(f"pooled_features needs features (B, F, D) and lengths (B,), got "
                        f"{tuple(features.shape)} and {tuple(lengths.shape)}")
    if bool((lengths < 1).any()):
        raise DataError("pooled_features: every utterance needs at least one frame")
    segments = check_int("pooled_features", "segments", segments, minimum=0)
    n_frames = features.shape[1]
    frames = torch.arange(n_frames, device=features.device)[None, :]
    lengths = lengths.to(features.device)
    valid = (frames < lengths[:, None]).to(features.dtype)[:, :, None]
    counts = lengths.to(features.dtype)[:, None]
    mean = (features * valid).sum(1) / counts
    parts = [mean]
    if std:
        variance = (((features - mean[:, None, :]) ** 2) * valid).sum(1) / counts
        parts.append(torch.sqrt(variance + 1e-12))
    for k in range(segments):
        start = torch.div(k * lengths, segments, rounding_mode="floor").clamp(max=lengths - 1)
        end = torch.maximum(torch.div((k + 1) * lengths, segments, rounding_mode="floor"),
                            start + 1)
        inside = ((frames >= start[:, None]) & (frames < end[:, None])).to(features.dtype)
        stretch = (end - start).to(features.dtype)[:, None]
        parts.append((features * inside[:, :, None]).sum(1) / stretch)
    return torch.cat(parts, dim=1)


# --------------------------------------------------------------------------------------------
# The front end


class FrontEnd(nn.Module):
    """Waveforms to padded MFCC or log-mel frames, with deltas and normalisation.

    Args:
        sample_rate: rate of the waveforms it is given (Hz).
        features: ``"mfcc"`` (``n_mfcc`` cepstra of ``n_mels`` log mel energies, DCT-II) or
            ``"logmel"`` (the ``n_mels`` log mel energies themselves).
        n_mels: mel bands.
        n_mfcc: cepstral coefficients kept (for ``"mfcc"``), c0 included.
        deltas: append delta and delta-delta coefficients (tripling the dimension).
        win_ms, hop_ms: analysis window and hop (ms); a Hann window over ``n_fft`` points.
        n_fft: FFT size; default the smallest power of two that holds the window.
        f_min, f_max: the mel filterbank's range (Hz), ``0 <= f_min < f_max <= sample_rate / 2``;
            ``f_max`` default ``sample_rate // 2``.
        normalise: ``"utterance"`` (cepstral mean and variance normalisation over each
            utterance's frames), ``"speaker"`` (over all frames of the utterance's speaker in
            the batch: pass ``speakers``) or None.

    A setting of the wrong type or out of its range is a :class:`~serket.errors.ConfigError`
    naming it.

    Frames are those of ``torch.stft(center=True)``: an utterance of T samples gives
    ``1 + T // hop`` frames, each utterance reflected at its own ends. Clips shorter than a
    window are padded the same way (reflection, then repetition of their edge samples when
    they are shorter than half a window), so any clip of at least one sample gives at least one
    frame; an empty clip raises DataError, and so does a clip too loud for float32 spectra
    (samples beyond about 1e17 in magnitude), rather than giving NaN features.

    Shapes: ``forward(waveforms)`` with a list of B 1-D tensors, or a padded (B, T) tensor and
    ``lengths`` (B,), returns ``(features (B, F_max, D), frame_lengths (B,) int64)``, features
    zero past each utterance's end.

    Example::

        front = FrontEnd(8000, normalise="speaker")
        features, frames = front(digits.waveforms, speakers=digits.speakers)
    """

    def __init__(self, sample_rate: int = 8000, *, features: str = "mfcc", n_mels: int = 40,
                 n_mfcc: int = 13, deltas: bool = True, win_ms: float = 25.0,
                 hop_ms: float = 10.0, n_fft: int | None = None, f_min: float = 20.0,
                 f_max: float | None = None, normalise: str | None = "utterance"):
        super().__init__()
        who = "FrontEnd"
        features = check_choice(who, "features", features, FEATURES)
        normalise = check_choice(who, "normalise", normalise, NORMALISATIONS)
        if isinstance(sample_rate, np.integer):
            sample_rate = int(sample_rate)
        self.sample_rate = check_int(who, "sample_rate", sample_rate, minimum=1)
        self.features = features
        self.n_mels = check_int(who, "n_mels", n_mels, minimum=1)
        self.n_mfcc = check_int(who, "n_mfcc", n_mfcc, minimum=1)
        if not isinstance(deltas, (bool, np.bool_)):
            raise ConfigError(f"{who}: deltas must be True or False, got {deltas!r}")
        self.deltas = bool(deltas)
        win_ms = check_real(who, "win_ms", win_ms, above=0)
        hop_ms = check_real(who, "hop_ms", hop_ms, above=0)
        self.win_length = max(1, round(self.sample_rate * win_ms / 1000))
        self.hop_length = max(1, round(self.sample_rate * hop_ms / 1000))
        n_fft = check_int(who, "n_fft", n_fft, minimum=1, none=True)
        self.n_fft = n_fft if n_fft is not None else 1 << math.ceil(math.log2(self.win_length))
        if self.n_fft < self.win_length:
            raise ConfigError(f"{who}: n_fft must be an integer >= the window of {self.win_length} samples "
                              f"(win_ms={win_ms:g} at {self.sample_rate} Hz), got {self.n_fft}")
        if features == "mfcc" and self.n_mfcc > self.n_mels:
            raise ConfigError(f"{who}: n_mfcc must be an integer <= n_mels = {self.n_mels} for features='mfcc', "
                              f"got {self.n_mfcc}")
        f_min = check_real(who, "f_min", f_min, minimum=0)
        if f_max is None:
            top = self.sample_rate // 2  # torchaudio's default f_max
            if not f_min < top:
                raise ConfigError(f"{who}: f_min must be a finite number >= 0 and < f_max = sample_rate // 2 = "
                                  f"{top}, got {f_min!r}")
        else:
            check_real(who, "f_max", f_max, above=f_min, maximum=self.sample_rate / 2)
        self.normalise = normalise
        mel_options = dict(n_fft=self.n_fft, win_length=self.win_length,
                           hop_length=self.hop_length, f_min=float(f_min), f_max=f_max,
                           n_mels=self.n_mels, center=False, power=2.0)
        if features == "mfcc":
            self.transform = torchaudio.transforms.MFCC(
                self.sample_rate, n_mfcc=self.n_mfcc, log_mels=True, melkwargs=mel_options)
        else:
            self.transform = torchaudio.transforms.MelSpectrogram(self.sample_rate, **mel_options)

    @property
    def dim(self) -> int:
        """D: values per frame."""
        base = self.n_mfcc if self.features == "mfcc" else self.n_mels
        return base * (3 if self.deltas else 1)

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames of utterances of ``lengths`` samples: ``1 + lengths // hop``."""
        return 1 + torch.div(lengths, self.hop_length, rounding_mode="floor")

    def extra_repr(self) -> str:
        return (f"sample_rate={self.sample_rate}, features={self.features!r}, "
                f"n_mels={self.n_mels}, n_mfcc={self.n_mfcc}, deltas={self.deltas}, "
                f"win={self.win_length}, hop={self.hop_length}, n_fft={self.n_fft}, "
                f"normalise={self.normalise!r}, dim={self.dim}")

    # ---------------------------------------------------------------- batching

    def _device(self) -> torch.device:
        return next(iter(self.transform.buffers())).device

    def _batch(self, waveforms, lengths, numbers=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded (B, T) float waveforms and their lengths (B,), on the front end's device.
        ``numbers``: each waveform's position among the caller's, for messages (default 0..B-1)."""
        device = self._device()
        number = (lambda i: i) if numbers is None else (lambda i: numbers[i])
        if isinstance(waveforms, torch.Tensor) and waveforms.ndim == 2:
            padded = waveforms
            if lengths is None:
                lengths = torch.full((padded.shape[0],), padded.shape[1], dtype=torch.int64)
            lengths = torch.as_tensor(lengths)
            if lengths.shape != (padded.shape[0],) or lengths.is_floating_point():
                raise DataError(f"lengths must be {padded.shape[0]} integers, got "
                                f"{lengths.dtype} of shape {tuple(lengths.shape)}")
            lengths = lengths.to(device=padded.device, dtype=torch.int64)
            if bool((lengths < 1).any()) or bool((lengths > padded.shape[1]).any()):
                raise DataError(f"lengths must lie in 1..{padded.shape[1]} (the padded length); "
                                f"empty utterances have no frames")
        else:
            if isinstance(waveforms, torch.Tensor) and waveforms.ndim == 1:
                waveforms = [waveforms]
            if isinstance(waveforms, torch.Tensor) or not isinstance(waveforms, Sequence):
                raise DataError("waveforms must be a list of 1-D tensors or a padded (B, T) "
                                f"tensor, got {type(waveforms).__name__}")
            if len(waveforms) == 0:
                raise DataError("no waveforms given")
            items = []
            for i, waveform in enumerate(waveforms):
                waveform = torch.as_tensor(waveform)
                if waveform.ndim != 1 or waveform.numel() == 0:
                    raise DataError(f"waveform {number(i)} must be a non-empty 1-D tensor, got shape "
                                    f"{tuple(waveform.shape)}")
                if not waveform.is_floating_point():
                    raise DataError(f"waveform {number(i)} must hold floats (samples in [-1, 1]), "
                                    f"got {waveform.dtype}")
                items.append(waveform.to(device=device, dtype=torch.float32))
            lengths = torch.tensor([len(item) for item in items], dtype=torch.int64,
                                   device=device)
            padded = nn.utils.rnn.pad_sequence(items, batch_first=True)
        if padded.device != device:
            raise DataError(f"waveforms are on {padded.device} but the front end is on "
                            f"{device}: move one with .to()")
        if not padded.is_floating_point():
            raise DataError(f"waveforms must hold floats (samples in [-1, 1]), got {padded.dtype}")
        padded = padded.to(torch.float32)
        finite = torch.isfinite(padded)
        if not bool(finite.all()):
            item = int((~finite).any(1).nonzero()[0])
            raise DataError(f"waveform {number(item)} has a non-finite sample (NaN or inf)")
        return padded, lengths

    def _framed_input(self, padded: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Each utterance reflected at its own ends by n_fft // 2 (as stft(center=True) does),
        zeros after; so that frames of a short utterance never see its neighbours' padding."""
        half = self.n_fft // 2
        longest = int(lengths.max())
        positions = torch.arange(longest + 2 * half, device=padded.device)[None, :] - half
        ends = lengths[:, None]
        source = positions.abs()
        source = torch.where(source >= ends, 2 * (ends - 1) - source, source)
        source = torch.minimum(source.clamp(min=0), ends - 1)  # clips under half a window
        inside = positions < ends + half
        return padded[:, :longest].gather(1, source) * inside

    def raw_features(self, waveforms, lengths=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Features and deltas before normalisation: ``(features (B, F, D), frames (B,))``.

        A waveform whose features are not finite (samples so loud that their power overflows
        float32, beyond about 1e17) is a DataError naming it, never NaN features."""
        return self._raw_features(waveforms, lengths)

    def _raw_features(self, waveforms, lengths=None, numbers=None):
        padded, lengths = self._batch(waveforms, lengths, numbers)
        spectra = self.transform(self._framed_input(padded, lengths))      # (B, C, F)
        if self.features == "logmel":
            spectra = torch.log(spectra + LOG_OFFSET)
        features = spectra.transpose(1, 2)
        frames = self.frame_lengths(lengths)
        if self.deltas:
            features = add_deltas(features, frames)
        else:
            features = features * _valid_frames(frames, features.shape[1])[:, :, None]
        finite = torch.isfinite(features).flatten(1).all(1)
        if not bool(finite.all()):
            item = int((~finite).nonzero()[0])
            loudest = float(padded[item, :int(lengths[item])].abs().max())
            raise DataError(f"waveform {item if numbers is None else numbers[item]} gives non-finite "
                            f"features (its largest sample magnitude is {loudest:.3g}, too loud for "
                            f"float32 spectra): scale its samples to [-1, 1]")
        return features, frames

    def forward(self, waveforms, lengths=None, *, speakers=None):
        """Features of a batch: see the class docstring for shapes.

        Args:
            waveforms: list of B 1-D tensors, or a padded (B, T) tensor.
            lengths: (B,) samples of each utterance, with a padded tensor (default: all T).
            speakers: one id per utterance, needed by ``normalise="speaker"``.
        """
        features, frames = self.raw_features(waveforms, lengths)
        return normalise_features(features, frames, self.normalise, speakers), frames

    def extract(self, waveforms, lengths=None, *, speakers=None, batch_size: int = 256):
        """As ``forward``, computed in batches of ``batch_size`` utterances of similar length
        (less padding, bounded memory). Speaker normalisation then uses all utterances
        together, so it sees every frame of each speaker. Same result as ``forward``."""
        if isinstance(waveforms, torch.Tensor) and waveforms.ndim == 2:
            full = torch.full((waveforms.shape[0],), waveforms.shape[1], dtype=torch.int64)
            counts = torch.as_tensor(lengths if lengths is not None else full).tolist()
            waveforms = [waveforms[i, :n] for i, n in enumerate(counts)]
        elif lengths is not None:
            raise DataError("lengths go with a padded (B, T) tensor, not with a list")
        if not waveforms:
            raise DataError("no waveforms given")
        batch_size = check_int("FrontEnd.extract", "batch_size", batch_size, minimum=1)
        order = sorted(range(len(waveforms)), key=lambda i: len(waveforms[i]))
        pieces = []
        for start in range(0, len(order), batch_size):
            chosen = order[start:start + batch_size]
            chunk, chunk_frames = self._raw_features([waveforms[i] for i in chosen], numbers=chosen)
            if self.normalise != "speaker":  # per-utterance statistics: normalise while small
                chunk = normalise_features(chunk, chunk_frames, self.normalise)
            pieces.append((chunk, chunk_frames))
        # each batch goes straight to its utterances' rows, zero padded, and is let go: one
        # padded copy of the features is held, never the batches, their padding and a reordering
        longest = max(piece[0].shape[1] for piece in pieces)
        first = pieces[0][0]
        features = first.new_zeros(len(order), longest, first.shape[2])
        frames = pieces[0][1].new_empty(len(order))
        positions = torch.tensor(order, device=features.device)
        start = 0
        while pieces:
            chunk, chunk_frames = pieces.pop(0)
            rows = positions[start:start + chunk.shape[0]]
            features[rows, :chunk.shape[1]] = chunk
            frames[rows] = chunk_frames
            start += chunk.shape[0]
            del chunk
        if self.normalise == "speaker":
            features = normalise_features(features, frames, "speaker", speakers)
        return features, frames


def trim_silence(features: torch.Tensor, lengths: torch.Tensor, *, channel: int = 0,
                 threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep each utterance's frames from the first to the last loud one.

    A frame is loud when its ``channel`` (c0 of raw, unnormalised MFCCs: the log energy up to
    a constant) exceeds ``max - threshold * (max - min)`` of that utterance. Returns the
    shifted, re-padded features (B, F', D) and the new frame counts (B,). Vectorised: one
    gather, no per-utterance loop.
    """
    if not 0.0 <= threshold <= 1.0:
        raise DataError(f"trim_silence: threshold must be in [0, 1], got {threshold}")
    valid = _valid_frames(lengths, features.shape[1])
    energy = features[:, :, channel]
    high = energy.masked_fill(~valid, float("-inf")).amax(1)
    low = energy.masked_fill(~valid, float("inf")).amin(1)
    loud = (energy >= (high - threshold * (high - low))[:, None]) & valid
    frames = torch.arange(features.shape[1], device=features.device)
    first = torch.where(loud, frames, features.shape[1]).amin(1)
    last = torch.where(loud, frames, -1).amax(1)
    new_lengths = last - first + 1
    width = int(new_lengths.max())
    index = (first[:, None] + torch.arange(width, device=features.device)[None, :]).clamp(max=features.shape[1] - 1)
    trimmed = features.gather(1, index[:, :, None].expand(-1, -1, features.shape[2]))
    return trimmed.mul_(_valid_frames(new_lengths, width)[:, :, None]), new_lengths
