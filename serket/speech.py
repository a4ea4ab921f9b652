"""Spoken digits: WAV files read with clear errors, the Free Spoken Digit Dataset, and a
synthetic stand-in spoken by the operating system's text-to-speech engines.

FSDD (3,000 recordings: 6 speakers x 10 digits x 50 takes, 8 kHz) is looked for, in order:

1. ``fsdd/recordings/{digit}_{speaker}_{take}.wav`` in the data folder: the ``data_dir``
   argument, else :func:`serket.data.data_dir` (``$SERKET_DATA_DIR`` or ``../shared/data``);
2. the same layout in the cache folder (:func:`serket.data.cache_dir`), from an earlier download;
3. the public GitHub repository's archive (a short timeout; cached after the first download);
4. the copy bundled inside the package (``serket/bundled/fsdd/recordings.zip``: the same 3,000
   recordings as FLAC, lossless, with their licence beside them), which every installation has.

A synthetic set made by :func:`synthesize_digits` (espeak-ng, plus flite and festival when
installed) is used only when asked for (``source="synthetic"``). Synthetic speech is always
labelled so: ``SpokenDigits.source`` starts with ``"synthetic"`` and ``SpokenDigits.synthetic``
is True. ``SpokenDigits.source`` names where real recordings came from, e.g.
``"FSDD (real, bundled copy)"``.

Labels (the digits) are carried for evaluation only: no module is ever given them.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio

from serket.data import cache_dir, data_dir as default_data_dir, file_sha256
from serket.errors import DataError

__all__ = [
    "read_wav",
    "SpokenDigits",
    "load_fsdd",
    "bundle_fsdd",
    "waveform_digest",
    "synthesize_digits",
    "load_synthetic",
    "DIGIT_WORDS",
    "FSDD_SOURCES",
    "FSDD_URL",
    "BUNDLED_FSDD",
]

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
FSDD_SOURCES = ("shared", "cache", "github", "bundled", "synthetic")
FSDD_AUTO = ("shared", "cache", "github", "bundled")  # real recordings only, in this order
SOURCE_NAMES = {"shared": "FSDD (real, data folder)", "cache": "FSDD (real, cache)",
                "github": "FSDD (real, downloaded)", "bundled": "FSDD (real, bundled copy)"}
BUNDLED_FSDD = Path(__file__).resolve().parent / "bundled" / "fsdd" / "recordings.zip"
# sha256 of the bundled archive as shipped, checked before it is read
BUNDLED_FSDD_SHA256 = "b382a55d8439975c980d9354b48daef40c6939c8258f044960471ad0144a5a3e"
# waveform_digest of the 3,000 FSDD recordings at commit 26eb9aa, read at 8 kHz: the bundled copy
# and the WAV files give this same digest
FSDD_DIGEST = "8729ff6b0d2348f28704921a3dd603da1e58fccf929be056b2223dad30abcb61"
FSDD_URL = "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/heads/master.zip"
FSDD_TEST_TAKES = 5  # the official split: takes 0-4 of every speaker and digit are the test set
DOWNLOAD_TIMEOUT_S = 10.0
MANIFEST = "manifest.json"

# A file name that parses: digit, speaker (no underscore), take.
_CLIP_NAME = re.compile(r"^(?P<digit>[0-9])_(?P<speaker>[^_/\\]+)_(?P<take>[0-9]+)\.wav$")


def _say(verbose: bool, text: str) -> None:
    if verbose:
        print(f"serket.speech: {text}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# WAV files


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


def _check_wav_container(path: Path) -> None:
    """Refuse empty, non-WAV and truncated files before libsndfile guesses its way through."""
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
    _check_wav_container(path)
    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:  # libsndfile: bad header, unsupported encoding, I/O errors
        raise DataError(f"{path}: cannot read this WAV file ({error})") from error
    return _mono_waveform(samples, rate, target_rate, f"{path}: the WAV file")


def _mono_waveform(samples: np.ndarray, rate: int, target_rate, what: str) -> tuple[torch.Tensor, int]:
    """Decoded ``samples`` (T, channels) as a checked float32 mono waveform at ``target_rate``."""
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


# --------------------------------------------------------------------------------------------
# A set of spoken digits


@dataclass
class SpokenDigits:
    """Utterances of single digits and what is known about each.

    Attributes:
        waveforms: N float32 mono waveforms, each of shape (T_i,), all at ``rate``.
        rate: sample rate in Hz.
        labels: int64 tensor (N,), the digit spoken: for metrics only, never for modules.
        speakers: the speaker (for synthetic sets: the voice) of each utterance.
        takes: the take number of each utterance (0, 1, ... per speaker and digit).
        paths: the file each utterance was read from.
        source: where the data came from, e.g. ``"FSDD (real)"`` or
            ``"synthetic (espeak-ng 1.51 text-to-speech)"``.
        synthetic: True when the speech is synthesized rather than recorded.
        test_takes: takes ``0 .. test_takes - 1`` form the test split: 5 for FSDD (its
            official split, 10%); for synthetic sets about a tenth of each voice's takes.
        details: where the set was read from and, for synthetic sets, the seed and engines.
    """

    waveforms: list
    rate: int
    labels: torch.Tensor
    speakers: list
    takes: list
    paths: list
    source: str
    synthetic: bool
    test_takes: int = FSDD_TEST_TAKES
    details: dict = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.waveforms)
        for name in ("speakers", "takes", "paths"):
            if len(getattr(self, name)) != n:
                raise DataError(f"SpokenDigits: {name} has {len(getattr(self, name))} "
                                f"entries for {n} waveforms")
        if tuple(self.labels.shape) != (n,):
            raise DataError(f"SpokenDigits: labels of shape {tuple(self.labels.shape)} "
                            f"for {n} waveforms")

    def __len__(self) -> int:
        return len(self.waveforms)

    def __repr__(self) -> str:
        return (f"SpokenDigits(N={len(self)}, rate={self.rate}, "
                f"speakers={len(set(self.speakers))}, source={self.source!r})")

    @property
    def lengths(self) -> torch.Tensor:
        """int64 tensor (N,): samples in each waveform."""
        return torch.tensor([len(w) for w in self.waveforms], dtype=torch.int64)

    @property
    def speaker_ids(self) -> torch.Tensor:
        """int64 tensor (N,): each utterance's index in ``sorted(set(speakers))``."""
        names = sorted(set(self.speakers))
        index = {name: i for i, name in enumerate(names)}
        return torch.tensor([index[s] for s in self.speakers], dtype=torch.int64)

    def test_mask(self) -> torch.Tensor:
        """Bool tensor (N,): the test split, takes ``0 .. test_takes - 1`` of each speaker and
        digit (for FSDD the official split, takes 0-4: 300 of 3,000)."""
        return torch.tensor([take < self.test_takes for take in self.takes], dtype=torch.bool)

    def subset(self, indices) -> SpokenDigits:
        """The utterances at ``indices`` (ints, or a boolean mask of length N), in that order."""
        indices = torch.as_tensor(indices)
        if indices.dtype == torch.bool:
            if tuple(indices.shape) != (len(self),):
                raise DataError(f"a boolean mask must have shape ({len(self)},), "
                                f"got {tuple(indices.shape)}")
            indices = indices.nonzero().flatten()
        if indices.ndim != 1 or indices.is_floating_point():
            raise DataError(f"indices must be a 1-D integer sequence, got {indices.dtype} "
                            f"of shape {tuple(indices.shape)}")
        picked = indices.tolist()
        if any(i < -len(self) or i >= len(self) for i in picked):
            raise DataError(f"indices out of range for a set of N={len(self)} utterances")
        return SpokenDigits(
            waveforms=[self.waveforms[i] for i in picked],
            rate=self.rate,
            labels=self.labels[indices.to(torch.int64)],
            speakers=[self.speakers[i] for i in picked],
            takes=[self.takes[i] for i in picked],
            paths=[self.paths[i] for i in picked],
            source=self.source,
            synthetic=self.synthetic,
            test_takes=self.test_takes,
            details=dict(self.details),
        )


def _parse_clip_name(path: Path) -> tuple[int, str, int]:
    match = _CLIP_NAME.match(path.name)
    if match is None:
        raise DataError(f"{path}: file name does not parse as {{digit}}_{{speaker}}_{{take}}.wav")
    return int(match["digit"]), match["speaker"], int(match["take"])


def _select_speakers(entries: list, speakers, where: str) -> list:
    if speakers is None:
        return entries
    if isinstance(speakers, str):
        speakers = [speakers]
    wanted = set(speakers)
    present = {entry[1] for entry in entries}
    missing = sorted(wanted - present)
    if missing:
        raise DataError(f"{where}: no speaker(s) {missing}; present: {sorted(present)}")
    return [entry for entry in entries if entry[1] in wanted]


def waveform_digest(digits: SpokenDigits) -> str:
    """sha256 over every utterance's (digit, speaker, take) and float32 samples, in order.

    Two sets with the same digest hold the same recordings sample for sample, wherever they
    were read from (WAV files, the bundled FLAC copy)."""
    digest = hashlib.sha256()
    for label, speaker, take, waveform in zip(digits.labels.tolist(), digits.speakers,
                                              digits.takes, digits.waveforms):
        digest.update(f"{label}_{speaker}_{take}:{len(waveform)}\n".encode())
        digest.update(waveform.detach().cpu().to(torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def _read_clips(entries: list, target_rate, where: str, read=None) -> tuple[list, int]:
    """Waveforms of ``entries`` (digit, speaker, take, path), all at one rate; ``read(path,
    target_rate)`` reads one clip (default :func:`read_wav`)."""
    read = read or read_wav
    waveforms, rates = [], set()
    for *_, path in entries:
        waveform, rate = read(path, target_rate)
        waveforms.append(waveform)
        rates.add(rate)
    if len(rates) > 1:
        raise DataError(f"{where}: recordings at several rates {sorted(rates)}; "
                        f"pass target_rate to resample them to one")
    return waveforms, rates.pop()


def _clip_fields(entries: list, *, speakers, target_rate, where: str, read=None) -> dict:
    """The per-clip fields of a :class:`SpokenDigits` from (digit, speaker, take, path) entries:
    sorted by (digit, speaker, take), filtered by speaker, read at one rate."""
    entries = _select_speakers(sorted(entries, key=lambda entry: entry[:3]), speakers, where)
    waveforms, rate = _read_clips(entries, target_rate, where, read)
    return {
        "waveforms": waveforms,
        "rate": rate,
        "labels": torch.tensor([entry[0] for entry in entries], dtype=torch.int64),
        "speakers": [entry[1] for entry in entries],
        "takes": [entry[2] for entry in entries],
        "paths": [str(entry[3]) for entry in entries],
    }


def _load_recordings(folder: Path, *, target_rate, speakers, source: str) -> SpokenDigits:
    entries = []
    for path in folder.iterdir():
        if path.suffix.lower() != ".wav":
            continue  # READMEs, metadata and the like live beside the recordings
        entries.append((*_parse_clip_name(path), path))
    if not entries:
        raise DataError(f"{folder}: no WAV recordings found")
    clips = _clip_fields(entries, speakers=speakers, target_rate=target_rate, where=str(folder))
    return SpokenDigits(**clips, source=source, synthetic=False, details={"folder": str(folder)})


# --------------------------------------------------------------------------------------------
# The bundled copy: the recordings as FLAC (lossless) in one zip archive


def bundle_fsdd(recordings, archive) -> Path:
    """Write the WAV recordings of the folder ``recordings`` as FLAC into the zip ``archive``.

    Each ``{digit}_{speaker}_{take}.wav`` becomes ``{digit}_{speaker}_{take}.flac`` holding the
    same 16-bit samples (FLAC is lossless), so :func:`load_fsdd` reads identical waveforms from
    either. Members are stored uncompressed (FLAC is compressed already) with fixed dates, in
    name order; the archive is written atomically. Returns its path.

    Raises:
        DataError: a file name that does not parse, a clip that is not 16-bit PCM, or no clips.
    """
    recordings, archive = Path(recordings), Path(archive)
    paths = sorted(p for p in recordings.iterdir() if p.suffix.lower() == ".wav")
    if not paths:
        raise DataError(f"{recordings}: no WAV recordings to bundle")
    archive.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=archive.parent, prefix=f".{archive.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with zipfile.ZipFile(temporary, "w", zipfile.ZIP_STORED) as bundle:
            for path in paths:
                _parse_clip_name(path)
                _check_wav_container(path)
                info = soundfile.info(str(path))
                if info.subtype != "PCM_16":
                    raise DataError(f"{path}: only 16-bit PCM recordings are bundled, "
                                    f"this one is {info.subtype}")
                samples, rate = soundfile.read(str(path), dtype="int16", always_2d=True)
                flac = io.BytesIO()
                soundfile.write(flac, samples, rate, format="FLAC", subtype="PCM_16")
                member = zipfile.ZipInfo(path.stem + ".flac", date_time=(1980, 1, 1, 0, 0, 0))
                bundle.writestr(member, flac.getvalue())
        os.chmod(temporary, 0o644)
        os.replace(temporary, archive)
    finally:
        Path(temporary).unlink(missing_ok=True)
    return archive


def _load_bundle(archive: Path, *, target_rate, speakers, expected_sha256: str | None) -> SpokenDigits:
    """The recordings of a :func:`bundle_fsdd` archive, checked against ``expected_sha256``."""
    if not archive.is_file():
        raise DataError(f"{archive}: the bundled FSDD copy is missing from this installation")
    if expected_sha256 is not None:
        found = file_sha256(archive)
        if found != expected_sha256:
            raise DataError(f"{archive}: the bundled FSDD copy is damaged (sha256 {found}, "
                            f"expected {expected_sha256}); reinstall neuro-serket")
    try:
        bundle = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as error:
        raise DataError(f"{archive}: not a readable zip archive ({error})") from error
    with bundle:
        entries = []
        for name in bundle.namelist():
            if not name.endswith(".flac"):
                continue
            digit, speaker, take = _parse_clip_name(Path(name[: -len(".flac")] + ".wav"))
            entries.append((digit, speaker, take, name))
        if not entries:
            raise DataError(f"{archive}: holds no FLAC recordings")

        def read(name, target_rate):
            try:
                samples, rate = soundfile.read(io.BytesIO(bundle.read(name)), dtype="float32",
                                               always_2d=True)
            except Exception as error:  # a damaged member: zlib, CRC or libsndfile errors
                raise DataError(f"{archive}/{name}: cannot read this recording ({error})") from error
            return _mono_waveform(samples, rate, target_rate, f"{archive}/{name}")

        clips = _clip_fields(entries, speakers=speakers, target_rate=target_rate,
                             where=str(archive), read=read)
    clips["paths"] = [f"{archive}/{name}" for name in clips["paths"]]
    return SpokenDigits(**clips, source=SOURCE_NAMES["bundled"], synthetic=False,
                        details={"archive": str(archive)})


# --------------------------------------------------------------------------------------------
# FSDD from its public repository


def _download_fsdd(target: Path, verbose: bool) -> Path:
    """The recordings of the GitHub archive extracted into ``target`` (all or nothing)."""
    _say(verbose, f"downloading {FSDD_URL} (timeout {DOWNLOAD_TIMEOUT_S:.0f} s)")
    try:
        with urllib.request.urlopen(FSDD_URL, timeout=DOWNLOAD_TIMEOUT_S) as response:
            archive = response.read()
    except Exception as error:  # no network, DNS failure, HTTP error, timeout
        raise DataError(f"{FSDD_URL}: {type(error).__name__}: {error}") from error
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".fsdd-"))
    try:
        with zipfile.ZipFile(io.BytesIO(archive)) as bundle:
            count = 0
            for member in bundle.namelist():
                parts = member.split("/")
                # Only the files of .../recordings/, by their base name: nothing else is written.
                if len(parts) >= 2 and parts[-2] == "recordings" and _CLIP_NAME.match(parts[-1]):
                    (staging / parts[-1]).write_bytes(bundle.read(member))
                    count += 1
        if count != 3000:
            raise DataError(f"{FSDD_URL}: expected 3000 recordings in the archive, found {count}")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except zipfile.BadZipFile as error:
        raise DataError(f"{FSDD_URL}: not a zip archive ({error})") from error
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def load_fsdd(
    *,
    data_dir=None,
    source: str = "auto",
    target_rate: int | None = 8000,
    speakers: Iterable[str] | None = None,
    synthetic_seed: int = 0,
    verbose: bool = True,
) -> SpokenDigits:
    """The Free Spoken Digit Dataset, or a synthetic stand-in (see the module's docstring).

    Args:
        data_dir: folder holding ``fsdd/recordings``; default :func:`serket.data.data_dir`.
        source: ``"auto"`` tries ``"shared"``, ``"cache"``, ``"github"`` then ``"bundled"``
            (real recordings only); naming one (or ``"synthetic"``) uses only that one.
        target_rate: resample every clip to this rate (Hz); None keeps the files' rate.
        speakers: keep only these speakers (voices, for synthetic sets); None keeps all.
        synthetic_seed: the seed of the synthetic set, when one is made or reused.
        verbose: say on stderr where the data is looked for.

    Returns:
        :class:`SpokenDigits` sorted by (digit, speaker, take).

    Raises:
        DataError: unknown source, a file that cannot be read or whose name does not parse,
            unknown speakers, a damaged bundled copy, or no espeak-ng for ``"synthetic"``.

    Example::

        digits = load_fsdd(verbose=False)
        len(digits), digits.rate, digits.source     # (3000, 8000, 'FSDD (real, data folder)')
        test = digits.subset(digits.test_mask())     # 300 utterances
    """
    if source != "auto" and source not in FSDD_SOURCES:
        raise DataError(
            f"unknown FSDD source {source!r}: use 'auto' or one of {list(FSDD_SOURCES)}")
    order = FSDD_AUTO if source == "auto" else (source,)
    folder = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    cached = cache_dir() / "fsdd" / "recordings"
    failures = []
    for candidate in order:
        if candidate in ("shared", "cache"):
            recordings = cached if candidate == "cache" else (
                folder / "fsdd" / "recordings" if folder is not None else None)
            if recordings is None or not recordings.is_dir():
                failures.append(f"{candidate}: {recordings} not found" if recordings else
                                f"{candidate}: no data folder ($SERKET_DATA_DIR unset)")
                _say(verbose and source == "auto", failures[-1])
                continue
            _say(verbose, f"FSDD from {recordings}")
            return _load_recordings(recordings, target_rate=target_rate, speakers=speakers,
                                    source=SOURCE_NAMES[candidate])
        if candidate == "github":
            try:
                recordings = _download_fsdd(cached, verbose)
            except DataError as error:
                failures.append(f"github: {error}")
                _say(verbose, f"download failed: {error}")
                continue
            _say(verbose, f"FSDD downloaded and cached in {recordings}")
            return _load_recordings(recordings, target_rate=target_rate, speakers=speakers,
                                    source=SOURCE_NAMES["github"])
        if candidate == "bundled":
            try:
                digits = _load_bundle(BUNDLED_FSDD, target_rate=target_rate, speakers=speakers,
                                      expected_sha256=BUNDLED_FSDD_SHA256)
            except DataError as error:
                if source != "auto":
                    raise
                failures.append(f"bundled: {error}")
                continue
            _say(verbose, f"FSDD from the bundled copy {BUNDLED_FSDD}")
            return digits
        # synthetic, asked for by name
        where = cache_dir() / "fsdd-synthetic" / f"seed{synthetic_seed}"
        manifest = where / MANIFEST
        if not _synthetic_set_complete(where):
            _say(verbose, f"synthesizing 3000 spoken digits into {where} (seed {synthetic_seed})")
            manifest = synthesize_digits(where, seed=synthetic_seed, verbose=verbose)
        _say(verbose, f"SYNTHETIC spoken digits from {manifest}")
        return load_synthetic(where, target_rate=target_rate, speakers=speakers)
    raise DataError("FSDD could not be loaded:\n  " + "\n  ".join(failures))


# --------------------------------------------------------------------------------------------
# Synthetic spoken digits


# espeak-ng: an English accent and a voice variant (the variant sets sex, pitch range, breath).
ESPEAK_VOICES = (
    "en-us+m1", "en-gb+m3", "en-gb-scotland+m2", "en-gb-x-rp+f2", "en-029+m4", "en-us+f1",
    "en-gb-x-gbclan+m5", "en-us-nyc+m6", "en-gb+f3", "en-gb-x-rp+m7", "en-us+f4",
    "en-gb-scotland+f5", "en-us+klatt", "en-gb+klatt2",
)
FLITE_VOICES = ("kal16", "awb", "rms", "slt")  # the diphone and clustergen voices flite ships
FLITE_F0 = {"kal16": 100.0, "kal": 100.0, "awb": 110.0, "rms": 100.0, "slt": 170.0}
FESTIVAL_VOICES = ("kal_diphone",)
ENGINE_TIMEOUT_S = 60.0
FESTIVAL_CHUNK = 24  # clips per festival process: its start-up (~1 s) dwarfs one clip


@dataclass(frozen=True)
class _Voice:
    engine: str
    voice: str   # the engine's own name for it
    name: str    # the speaker name in file names and SpokenDigits.speakers (no underscore)


def _engine_version(program: str) -> str:
    flag = {"flite": "--version", "festival": "--version", "espeak-ng": "--version"}[program]
    try:
        result = subprocess.run([program, flag], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown version"
    text = result.stdout + result.stderr
    match = re.search(r"(\d+\.\d+(?:\.\d+)?)", text.split("version:")[-1] if "version:" in
                      text else text)
    return match.group(1) if match else "unknown version"


def _flite_voices() -> list[str]:
    try:
        result = subprocess.run(["flite", "-lv"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    listed = set(result.stdout.replace("Voices available:", " ").split())
    return [voice for voice in FLITE_VOICES if voice in listed]


@functools.lru_cache(maxsize=8)
def _festival_works(voice: str) -> bool:
    script = f"(begin ({'voice_' + voice}) (print 'ready))"
    try:
        result = subprocess.run(["festival", "--batch", script], capture_output=True,
                                text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and "ready" in result.stdout


def _voice_pool(engines: Sequence[str]) -> tuple[list[_Voice], dict[str, str]]:
    """The voices of the engines that are installed, in a fixed order, and their versions."""
    known = ("espeak-ng", "flite", "festival")
    unknown = [engine for engine in engines if engine not in known]
    if unknown:
        raise DataError(f"unknown text-to-speech engine(s) {unknown}: use some of {list(known)}")
    installed = [engine for engine in engines if shutil.which(engine)]
    if "espeak-ng" not in installed:
        found = f" (found only {installed})" if installed else ""
        raise DataError(
            "synthetic spoken digits need the text-to-speech engine espeak-ng, which is not "
            f"installed{found}: install it with `apt-get install espeak-ng` "
            "(flite and festival add voices: `apt-get install espeak-ng flite festival`)"
        )
    pool = [_Voice("espeak-ng", voice, voice) for voice in ESPEAK_VOICES]
    if "flite" in installed:
        pool += [_Voice("flite", voice, f"flite-{voice}") for voice in _flite_voices()]
    if "festival" in installed:
        pool += [_Voice("festival", voice, f"festival-{voice.split('_')[0]}")
                 for voice in FESTIVAL_VOICES if _festival_works(voice)]
    engines_used = sorted({voice.engine for voice in pool}, key=known.index)
    return pool, {engine: _engine_version(engine) for engine in engines_used}


def _clip_plan(pool: list[_Voice], n_per_digit: int, seed: int) -> list[dict]:
    """Every clip's voice and prosody. Voices take turns within each digit (balanced speakers,
    like FSDD); tempo, pitch, loudness and noise come from a stream seeded by (seed, digit, k),
    so a clip does not depend on how many others are made or in which order."""
    plan = []
    for digit, word in enumerate(DIGIT_WORDS):
        for k in range(n_per_digit):
            voice = pool[k % len(pool)]
            take = k // len(pool)
            stream = np.random.default_rng([seed, digit, k])
            tempo = float(np.exp(stream.uniform(np.log(0.8), np.log(1.25))))
            pitch = float(np.exp(stream.uniform(np.log(0.8), np.log(1.25))))
            clip = {
                "file": f"{digit}_{voice.name}_{take}.wav",
                "digit": digit,
                "word": word,
                "speaker": voice.name,
                "engine": voice.engine,
                "voice": voice.voice,
                "take": take,
                "tempo": round(tempo, 4),
                "pitch": round(pitch, 4),
                "peak": round(float(stream.uniform(0.3, 0.9)), 4),
                "snr_db": round(float(stream.uniform(30.0, 50.0)), 2),
                "noise_seed": int(stream.integers(2**31)),
            }
            if voice.engine == "espeak-ng":
                # -s words per minute (default 175); -p pitch 0-99 (default 50)
                clip["args"] = ["-v", voice.voice, "-s", str(round(175 * tempo)),
                                "-p", str(int(np.clip(round(50 + 60 * np.log2(pitch)), 0, 99)))]
            elif voice.engine == "flite":
                clip["args"] = ["-voice", voice.voice,
                                "--setf", f"duration_stretch={1 / tempo:.4f}",
                                "--setf", f"int_f0_target_mean={FLITE_F0[voice.voice] * pitch:.1f}"]
            else:
                clip["args"] = [f"Duration_Stretch={1 / tempo:.4f}",
                                f"target_f0_mean={105 * pitch:.1f}"]
            plan.append(clip)
    return plan


def _run(command: list[str], what: str) -> None:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=ENGINE_TIMEOUT_S)
    except subprocess.TimeoutExpired as error:
        raise DataError(f"{what}: {command[0]} took over {ENGINE_TIMEOUT_S:.0f} s") from error
    except OSError as error:
        raise DataError(f"{what}: cannot run {command[0]}: {error}") from error
    if result.returncode != 0:
        tail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
        raise DataError(f"{what}: {' '.join(command)} failed (exit {result.returncode}): {tail}")


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _speak_festival(clips: list[dict], raw_dir: Path) -> None:
    """Several clips from one festival process (its start-up costs about a second)."""
    lines, voice = [], None
    for clip in clips:
        stretch, f0 = (float(arg.split("=")[1]) for arg in clip["args"])
        raw = raw_dir / clip["file"]
        if clip["voice"] != voice:
            voice = clip["voice"]
            lines.append(f"(voice_{voice})")
        lines += [
            f"(Parameter.set 'Duration_Stretch {stretch})",
            f"(set! int_lr_params '((target_f0_mean {f0}) (target_f0_std 14) "
            "(model_f0_mean 170) (model_f0_std 34)))",
            f"(utt.save.wave (utt.synth (Utterance Text {_scheme_string(clip['word'])})) "
            f"{_scheme_string(str(raw))} 'riff)",
        ]
    script = raw_dir / f"festival-{clips[0]['file']}.scm"
    script.write_text("\n".join(lines) + "\n")
    _run(["festival", "-b", str(script)], f"festival for {clips[0]['file']}...")


def _speak(clip: dict, raw_dir: Path) -> None:
    raw = str(raw_dir / clip["file"])
    if clip["engine"] == "espeak-ng":
        command = ["espeak-ng", *clip["args"], "-w", raw, clip["word"]]
    else:
        command = ["flite", *clip["args"], "-t", clip["word"], "-o", raw]
    _run(command, clip["file"])


def _finish_clip(clip: dict, raw_dir: Path, out_dir: Path, rate: int) -> None:
    """Engine output -> mono at ``rate``, silence trimmed, peak and noise set, 16-bit WAV."""
    raw_path = raw_dir / clip["file"]
    waveform, raw_rate = read_wav(raw_path)
    waveform = resample(waveform, raw_rate, rate).numpy().astype(np.float64)
    peak = np.abs(waveform).max()
    if peak <= 0:
        raise DataError(f"{raw_path}: {clip['engine']} produced silence for {clip['word']!r}")
    loud = np.flatnonzero(np.abs(waveform) > peak * 10 ** (-35 / 20))
    margin = int(0.015 * rate)  # keep 15 ms either side of the first and last loud sample
    waveform = waveform[max(loud[0] - margin, 0): loud[-1] + margin + 1]
    waveform *= clip["peak"] / peak
    rms = np.sqrt(np.mean(waveform**2))
    noise = np.random.default_rng(clip["noise_seed"]).standard_normal(len(waveform))
    waveform += noise * rms * 10 ** (-clip["snr_db"] / 20)
    pcm = np.clip(np.rint(waveform * 32767), -32768, 32767).astype(np.int16)
    soundfile.write(str(out_dir / clip["file"]), pcm, rate, subtype="PCM_16", format="WAV")
    raw_path.unlink()


def _synthetic_set_complete(folder: Path) -> bool:
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return False
    try:
        clips = json.loads(manifest.read_text())["clips"]
    except (ValueError, KeyError, OSError):
        return False
    return all((folder / clip["file"]).is_file() for clip in clips)


def synthesize_digits(
    out_dir,
    *,
    n_per_digit: int = 300,
    seed: int = 0,
    rate: int = 16000,
    engines: Sequence[str] = ("espeak-ng", "flite", "festival"),
    jobs: int = 2,
    verbose: bool = False,
) -> Path:
    """Speak the ten digit words with the installed text-to-speech engines; write WAVs and a
    manifest.

    Voices come from every installed engine among ``engines`` (espeak-ng is required: 14
    accent/variant voices; flite adds kal16, awb, rms, slt; festival adds kal_diphone) and take
    turns within each digit, so every digit has the same voices. Each clip's tempo and pitch
    (factors in [0.8, 1.25]), peak level and background-noise SNR (30-50 dB) are drawn from a
    random stream seeded by ``(seed, digit, clip index)``. Engine output is resampled to
    ``rate`` with torchaudio, trimmed of leading and trailing silence and written as mono
    16-bit WAV ``{digit}_{voice}_{take}.wav``. ``manifest.json`` (written last) lists every clip
    with its digit, speaker (the voice), engine, tempo, pitch, take and engine arguments.

    The same seed and the same installed engines give the same files, labels, speakers and
    manifest; the audio bytes were identical across runs on one machine (espeak-ng, flite and
    festival are deterministic), but may differ between engine versions.

    Args:
        out_dir: folder to write into (created if needed).
        n_per_digit: clips of each digit.
        seed: a non-negative int.
        rate: sample rate of the written files (Hz).
        engines: which engines may be used, if installed.
        jobs: engine processes run at once (threads, each waiting on a subprocess).
        verbose: report progress on stderr.

    Returns:
        the path of ``manifest.json``.

    Raises:
        DataError: espeak-ng not installed (saying what to install), bad arguments, or an
            engine that fails (naming the clip and the command).

    Example::

        manifest = synthesize_digits("/tmp/digits", n_per_digit=30)
        digits = load_synthetic("/tmp/digits")
    """
    if not isinstance(n_per_digit, (int, np.integer)) or n_per_digit < 1:
        raise DataError(f"n_per_digit must be a positive int, got {n_per_digit!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"seed must be a non-negative int, got {seed!r}")
    if not isinstance(rate, (int, np.integer)) or rate < 4000:
        raise DataError(f"rate must be an int of at least 4000 Hz, got {rate!r}")
    if not isinstance(jobs, (int, np.integer)) or jobs < 1:
        raise DataError(f"jobs must be a positive int, got {jobs!r}")
    started = time.monotonic()
    pool, versions = _voice_pool(tuple(engines))
    plan = _clip_plan(pool, int(n_per_digit), int(seed))
    out_dir = Path(out_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST).unlink(missing_ok=True)  # an interrupted run must not look complete

    def single(clip, raw_dir):
        _speak(clip, raw_dir)
        _finish_clip(clip, raw_dir, out_dir, rate)

    def batch(clips, raw_dir):
        _speak_festival(clips, raw_dir)
        for clip in clips:
            _finish_clip(clip, raw_dir, out_dir, rate)

    festival = [clip for clip in plan if clip["engine"] == "festival"]
    tasks = [(batch, festival[i:i + FESTIVAL_CHUNK])
             for i in range(0, len(festival), FESTIVAL_CHUNK)]  # slowest first
    tasks += [(single, clip) for clip in plan if clip["engine"] != "festival"]
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers resample concurrently; one thread each is enough
    try:
        with tempfile.TemporaryDirectory(prefix="serket-tts-") as raw_dir, \
                ThreadPoolExecutor(max_workers=int(jobs)) as workers:
            futures = [workers.submit(task, item, Path(raw_dir)) for task, item in tasks]
            for done, future in enumerate(futures, 1):
                future.result()  # re-raises the first failure
                if verbose and done % 500 == 0:
                    _say(True, f"{done}/{len(futures)} synthesis tasks done")
    finally:
        torch.set_num_threads(torch_threads)
    manifest = {
        "generator": "serket.speech.synthesize_digits",
        "synthetic": True,
        "seed": int(seed),
        "n_per_digit": int(n_per_digit),
        "rate": int(rate),
        "engines": versions,
        "voices": [voice.name for voice in pool],
        "clips": plan,
    }
    path = out_dir / MANIFEST
    temporary = out_dir / f".{MANIFEST}.tmp"
    temporary.write_text(_manifest_text(manifest))
    os.replace(temporary, path)
    _say(verbose, f"{len(plan)} clips from {len(pool)} voices ({versions}) "
                  f"in {time.monotonic() - started:.1f} s")
    return path


def _manifest_text(manifest: dict) -> str:
    """JSON with one clip a line: readable, diffable, and the same bytes for the same plan."""
    header = {key: value for key, value in manifest.items() if key != "clips"}
    lines = [json.dumps(header, sort_keys=True)[:-1] + ', "clips": [']
    lines += [" " + json.dumps(clip, sort_keys=True) + "," for clip in manifest["clips"]]
    lines[-1] = lines[-1][:-1]
    return "\n".join(lines) + "\n]}\n"


def _synthetic_source(engines: dict) -> str:
    known = ("espeak-ng", "flite", "festival")
    ordered = sorted(engines, key=lambda engine: (known.index(engine) if engine in known
                                                   else len(known), engine))
    names = ", ".join(f"{engine} {engines[engine]}" for engine in ordered)
    return f"synthetic ({names} text-to-speech)"


def load_synthetic(directory, *, target_rate: int | None = None,
                   speakers: Iterable[str] | None = None) -> SpokenDigits:
    """A set written by :func:`synthesize_digits`, read back through its manifest.

    Args:
        directory: the folder holding ``manifest.json`` and the clips.
        target_rate: resample to this rate (Hz); None keeps the files' rate.
        speakers: keep only these voices; None keeps all.

    Returns:
        :class:`SpokenDigits` sorted by (digit, speaker, take), with ``synthetic=True``,
        speakers = voice names and a ``source`` naming the engines, e.g.
        ``"synthetic (espeak-ng 1.51, flite 2.2 text-to-speech)"``.

    Raises:
        DataError: no or unreadable manifest, a listed clip missing or unreadable.
    """
    directory = Path(directory).expanduser()
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise DataError(f"{manifest_path}: no manifest; is {directory} a synthetic digit set?")
    try:
        manifest = json.loads(manifest_path.read_text())
        clips, engines = manifest["clips"], manifest["engines"]
        entries = [(int(clip["digit"]), str(clip["speaker"]), int(clip["take"]),
                    directory / clip["file"]) for clip in clips]
    except (ValueError, KeyError, TypeError) as error:
        raise DataError(f"{manifest_path}: not a synthetic digit manifest ({error})") from error
    if not entries:
        raise DataError(f"{manifest_path}: lists no clips")
    clips = _clip_fields(entries, speakers=speakers, target_rate=target_rate, where=str(directory))
    takes_per_voice = 1 + max(clips["takes"])
    return SpokenDigits(
        **clips,
        source=_synthetic_source(engines),
        synthetic=True,
        test_takes=max(1, round(takes_per_voice / 10)),
        details={"folder": str(directory), "seed": manifest.get("seed"), "engines": engines},
    )
