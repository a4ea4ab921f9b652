"""Spoken digits: the Free Spoken Digit Dataset, and a synthetic stand-in spoken by the operating
system's text-to-speech engines (:mod:`serket.audio.synthesis`).

FSDD (3,000 recordings: 6 speakers x 10 digits x 50 takes, 8 kHz) is looked for, in order:

1. ``fsdd/recordings/{digit}_{speaker}_{take}.wav`` in the data folder: the ``data_dir``
   argument, else :func:`serket.datasets.folders.data_dir` (``$SERKET_DATA_DIR`` or
   ``../shared/data``);
2. the same layout in the cache folder (:func:`serket.datasets.folders.cache_dir`), from an
   earlier download;
3. the public GitHub repository's archive (a short timeout; cached after the first download);
4. the copy bundled inside the package (``serket/bundled/fsdd/recordings.zip``: the same 3,000
   recordings as FLAC, lossless, with their licence beside them), which every installation has.

A synthetic set made by :func:`~serket.audio.synthesis.synthesize_digits` (espeak-ng, plus flite
and festival when installed) is used only when asked for (``source="synthetic"``). Synthetic
speech is always labelled so: ``SpokenDigits.source`` starts with ``"synthetic"`` and
``SpokenDigits.synthetic`` is True. ``SpokenDigits.source`` names where real recordings came
from, e.g. ``"FSDD (real, bundled copy)"``.

The benchmarks' ``--speech`` option (:func:`add_speech_option`) names these sources in the words
of a command line; :func:`load_speech` loads by that name.

Labels (the digits) are carried for evaluation only: no module is ever given them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import soundfile
import torch

from serket.audio.synthesis import DIGIT_WORDS, MANIFEST, synthesize_digits, synthetic_set_complete
from serket.audio.wav import check_wav_container, mono_waveform, read_wav
from serket.errors import DataError
from serket.files import atomic_write, file_sha256

from .folders import cache_dir, data_dir as default_data_dir

__all__ = [
    "SpokenDigits",
    "load_fsdd",
    "load_synthetic",
    "load_speech",
    "add_speech_option",
    "bundle_fsdd",
    "waveform_digest",
    "DIGIT_WORDS",
    "FSDD_SOURCES",
    "FSDD_URL",
    "BUNDLED_FSDD",
    "SPEECH_SOURCES",
]

FSDD_SOURCES = ("shared", "cache", "github", "bundled", "synthetic")
FSDD_AUTO = ("shared", "cache", "github", "bundled")  # real recordings only, in this order
SOURCE_NAMES = {"shared": "FSDD (real, data folder)", "cache": "FSDD (real, cache)",
                "github": "FSDD (real, downloaded)", "bundled": "FSDD (real, bundled copy)"}
# serket/datasets/spoken_digits.py -> serket/bundled (package data: see pyproject.toml)
BUNDLED_FSDD = Path(__file__).resolve().parents[1] / "bundled" / "fsdd" / "recordings.zip"
# sha256 of the bundled archive as shipped, checked before it is read
BUNDLED_FSDD_SHA256 = "b382a55d8439975c980d9354b48daef40c6939c8258f044960471ad0144a5a3e"
# waveform_digest of the 3,000 FSDD recordings at commit 26eb9aa, read at 8 kHz: the bundled copy
# and the WAV files give this same digest
FSDD_DIGEST = "8729ff6b0d2348f28704921a3dd603da1e58fccf929be056b2223dad30abcb61"
FSDD_URL = "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/heads/master.zip"
FSDD_TEST_TAKES = 5  # the official split: takes 0-4 of every speaker and digit are the test set
DOWNLOAD_TIMEOUT_S = 10.0

# A file name that parses: digit, speaker (no underscore), take.
_CLIP_NAME = re.compile(r"^(?P<digit>[0-9])_(?P<speaker>[^_/\\]+)_(?P<take>[0-9]+)\.wav$")


def _say(verbose: bool, text: str) -> None:
    if verbose:
        print(f"serket.datasets.spoken_digits: {text}", file=sys.stderr, flush=True)


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

    def split(self) -> tuple[SpokenDigits, SpokenDigits]:
        """``(training, held_out)``: the utterances outside the test split and those in it
        (:meth:`test_mask`; for FSDD takes 5-49 and 0-4)."""
        held_out = self.test_mask()
        return self.subset(~held_out), self.subset(held_out)

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
    target_rate)`` reads one clip (default :func:`~serket.audio.wav.read_wav`)."""
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

    def write(file):
        with zipfile.ZipFile(file, "w", zipfile.ZIP_STORED) as bundle:
            for path in paths:
                _parse_clip_name(path)
                check_wav_container(path)
                info = soundfile.info(str(path))
                if info.subtype != "PCM_16":
                    raise DataError(f"{path}: only 16-bit PCM recordings are bundled, "
                                    f"this one is {info.subtype}")
                samples, rate = soundfile.read(str(path), dtype="int16", always_2d=True)
                flac = io.BytesIO()
                soundfile.write(flac, samples, rate, format="FLAC", subtype="PCM_16")
                member = zipfile.ZipInfo(path.stem + ".flac", date_time=(1980, 1, 1, 0, 0, 0))
                bundle.writestr(member, flac.getvalue())

    return atomic_write(archive, write)


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
            return mono_waveform(samples, rate, target_rate, f"{archive}/{name}")

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
        data_dir: folder holding ``fsdd/recordings``; default
            :func:`serket.datasets.folders.data_dir`.
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
        if not synthetic_set_complete(where):
            _say(verbose, f"synthesizing 3000 spoken digits into {where} (seed {synthetic_seed})")
            manifest = synthesize_digits(where, seed=synthetic_seed, verbose=verbose)
        _say(verbose, f"SYNTHETIC spoken digits from {manifest}")
        return load_synthetic(where, target_rate=target_rate, speakers=speakers)
    raise DataError("FSDD could not be loaded:\n  " + "\n  ".join(failures))


def _synthetic_source(engines: dict) -> str:
    known = ("espeak-ng", "flite", "festival")
    ordered = sorted(engines, key=lambda engine: (known.index(engine) if engine in known
                                                   else len(known), engine))
    names = ", ".join(f"{engine} {engines[engine]}" for engine in ordered)
    return f"synthetic ({names} text-to-speech)"


def load_synthetic(directory, *, target_rate: int | None = None,
                   speakers: Iterable[str] | None = None) -> SpokenDigits:
    """A set written by :func:`~serket.audio.synthesis.synthesize_digits`, read back through its
    manifest.

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


# --------------------------------------------------------------------------------------------
# The benchmarks' --speech option

# --speech NAME: which of load_fsdd's sources
SPEECH_SOURCES = {"auto": "auto", "fsdd": "shared", "bundled": "bundled", "synthetic": "synthetic"}


def add_speech_option(parser) -> None:
    """The ``--speech`` option of the benchmarks that use spoken digits."""
    parser.add_argument("--speech", default="auto", choices=list(SPEECH_SOURCES),
                        help="auto: real FSDD recordings from the data folder, the cache, the public "
                             "repository or the copy bundled with the package, the first found; fsdd: "
                             "the data folder only; bundled: the bundled copy only; synthetic: digits "
                             "spoken by espeak-ng (labelled SYNTHETIC)")


def load_speech(kind: str, *, data_dir=None, verbose: bool = False) -> SpokenDigits:
    """Spoken digits by the name ``--speech`` gives them (see :data:`SPEECH_SOURCES`)."""
    return load_fsdd(data_dir=data_dir, source=SPEECH_SOURCES[kind], verbose=verbose)
