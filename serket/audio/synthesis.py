"""Spoken digits synthesized by the operating system's text-to-speech engines.

:func:`synthesize_digits` runs espeak-ng (required), flite and festival (when installed) as
subprocesses, one clip per voice and prosody, and writes mono 16-bit WAV files and a manifest;
:func:`serket.datasets.load_synthetic` reads such a set back as labelled spoken digits. Synthetic
speech is always labelled so wherever it is used.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import torch

from serket.errors import DataError
from serket.files import atomic_write

from .wav import read_wav, resample

__all__ = ["synthesize_digits", "synthetic_set_complete", "DIGIT_WORDS", "MANIFEST"]

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
MANIFEST = "manifest.json"  # written last: a set without it is unfinished


def _say(verbose: bool, text: str) -> None:
    if verbose:
        print(f"serket.audio.synthesis: {text}", file=sys.stderr, flush=True)


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


def synthetic_set_complete(folder) -> bool:
    """Whether ``folder`` holds a finished :func:`synthesize_digits` set: its manifest (written
    last) and every clip the manifest lists."""
    folder = Path(folder)
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
        digits = serket.datasets.load_synthetic("/tmp/digits")
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
        "generator": "serket.audio.synthesis.synthesize_digits",
        "synthetic": True,
        "seed": int(seed),
        "n_per_digit": int(n_per_digit),
        "rate": int(rate),
        "engines": versions,
        "voices": [voice.name for voice in pool],
        "clips": plan,
    }
    path = atomic_write(out_dir / MANIFEST, _manifest_text(manifest))
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
