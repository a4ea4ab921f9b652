"""WAV files read with errors that name them, and resampling.

:func:`read_wav` checks the RIFF container itself (:func:`check_wav_container`) before
libsndfile decodes it, so an empty, truncated or non-WAV file is a :class:`~serket.errors.DataError`
naming the file rather than a guess.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio

from serket.errors import DataError

__all__ = ["read_wav", "resample", "check_wav_container", "mono_waveform"]


@functools.lru_cache(maxsize=16)
def _resampler(orig_rate: int, new_rate: int) -> torchaudio.transforms.Resample:
    # Building the windowed-sinc kernel costs more than applying it to a short clip: keep it.
    return torchaudio.transforms.Resample(orig_rate, new_rate)


def resample(waveform: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """``waveform`` (..., T) from ``orig_rate`` to ``new_rate`` Hz (torchaudio's sinc filter)."""
    if orig_rate == new_rate:
        return waveform
    kernel = _resampler(int(orig_rate), int(new_rate))
    with torch.no_grad():
        return kernel.to(waveform.device)(waveform)


_STREAMED_SIZE = 0x7FFFF000  # writers that stream (espeak-ng --stdout) put a huge size here


def check_wav_container(path: Path) -> None:
    """Refuse empty, non-WAV and truncated files before libsndfile guesses its way through.

    Raises:
        DataError: naming the file: empty, not RIFF/RIFX/RF64 WAVE, audio data before its
            ``fmt `` chunk, a data chunk longer than the file, or no data chunk.
    """
    size = path.stat().st_size
    if size == 0:
        raise DataError(f"{path}: empty file (0 bytes), not a WAV file")
    with open(path, "rb") as file:
        head = file.read(12)
        if len(head) < 12:
            raise DataError(f"{path}: truncated WAV file ({size} bytes, shorter than a header)")
        if head[:4] not in (b"RIFF", b"RIFX", b"RF64") or head[8:12] != b"WAVE":
            raise DataError(
                f"{path}: not a WAV file (it starts with {head[:4]!r}, expected b'RIFF'...b'WAVE')"
            )
        if head[:4] == b"RF64":  # 64-bit sizes live in a ds64 chunk: leave those to libsndfile
            return
        position, found_format = 12, False
        while position + 8 <= size:
            file.seek(position)
            chunk = file.read(8)
            name = chunk[:4]
            length = int.from_bytes(chunk[4:], "little" if head[:4] == b"RIFF" else "big")
            if name == b"fmt ":
                found_format = True
            if name == b"data":
                if not found_format:
                    raise DataError(f"{path}: WAV file has audio data before its 'fmt ' chunk")
                available = size - position - 8
                if length > available and length < _STREAMED_SIZE:
                    raise DataError(
                        f"{path}: truncated WAV file: its data chunk declares {length} bytes "
                        f"but only {available} are present"
                    )
                return
            position += 8 + length + (length & 1)
        raise DataError(f"{path}: truncated or corrupt WAV file: no 'data' chunk found")


def read_wav(path, target_rate: int | None = None) -> tuple[torch.Tensor, int]:
    """One WAV file as a float32 mono waveform, optionally resampled.

    Integer samples (8/16/24/32-bit PCM) are scaled to [-1, 1); float WAV files are read as
    they are. Files with several channels are made mono by averaging the channels.

    Args:
        path: the WAV file.
        target_rate: resample to this rate (Hz) with ``torchaudio.functional.resample``'s
            windowed-sinc filter; None keeps the file's rate.

    Returns:
        ``(waveform, rate)``: float32 tensor of shape (T,) with T >= 1, and its rate in Hz.

    Raises:
        DataError: naming the file: missing, empty, not a WAV file, truncated or corrupt, no
            samples, or non-finite samples.

    Example::

        waveform, rate = read_wav("0_george_0.wav", target_rate=16000)
    """
    if not isinstance(path, (str, os.PathLike)):
        raise DataError(f"read_wav needs the path of a WAV file (a str or os.PathLike), got {path!r}")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such WAV file")
    check_wav_container(path)
    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:  # libsndfile: bad header, unsupported encoding, I/O errors
        raise DataError(f"{path}: cannot read this WAV file ({error})") from error
    return mono_waveform(samples, rate, target_rate, f"{path}: the WAV file")


def mono_waveform(samples: np.ndarray, rate: int, target_rate, what: str) -> tuple[torch.Tensor, int]:
    """Decoded ``samples`` (T, channels) as a checked float32 mono waveform at ``target_rate``
    (None keeps ``rate``); ``what`` names the audio in errors."""
    if samples.shape[0] == 0:
        raise DataError(f"{what} holds no audio samples (zero length)")
    if not np.isfinite(samples).all():
        raise DataError(f"{what} holds non-finite samples (NaN or inf)")
    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    waveform = torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))
    if target_rate is not None:
        if not isinstance(target_rate, (int, np.integer)) or target_rate <= 0:
            raise DataError(f"target_rate must be a positive int (Hz), got {target_rate!r}")
        waveform = resample(waveform, int(rate), int(target_rate))
        rate = int(target_rate)
    return waveform, int(rate)

