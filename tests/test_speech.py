"""Spoken digits: WAV files refused with errors that name them, FSDD loading, and the synthetic
stand-in (which needs espeak-ng installed: these tests fail, not skip, without it)."""

import io
import json
import shutil
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

import serket.speech as speech
from serket.data import data_dir
from serket.errors import DataError
from serket.speech import (
    SyntheticSpeechWarning,
    load_fsdd,
    load_synthetic,
    read_wav,
    synthesize_digits,
)


def write_wav(path, samples, rate=8000, subtype="PCM_16"):
    soundfile.write(str(path), np.asarray(samples), rate, subtype=subtype, format="WAV")
    return path


def tone(n, rate=8000, hz=300.0):
    return 0.5 * np.sin(2 * np.pi * hz * np.arange(n) / rate)


# --------------------------------------------------------------------------------------------
# read_wav


def test_read_wav_int16_and_float(tmp_path):
    wave, rate = read_wav(write_wav(tmp_path / "a.wav", tone(800)))
    assert rate == 8000 and wave.dtype == torch.float32 and wave.shape == (800,)
    assert np.allclose(wave.numpy(), tone(800), atol=1 / 32767)
    wave, _ = read_wav(write_wav(tmp_path / "f.wav", tone(800), subtype="FLOAT"))
    assert np.allclose(wave.numpy(), tone(800), atol=1e-7)


def test_read_wav_averages_channels(tmp_path):
    stereo = np.stack([tone(500), np.full(500, 0.25)], axis=1)
    wave, _ = read_wav(write_wav(tmp_path / "s.wav", stereo, subtype="FLOAT"))
    assert np.allclose(wave.numpy(), stereo.mean(1), atol=1e-7)


def test_read_wav_resamples(tmp_path):
    wave, rate = read_wav(write_wav(tmp_path / "hi.wav", tone(16000, 16000), 16000), 8000)
    assert rate == 8000 and wave.shape == (8000,)
    wave, rate = read_wav(write_wav(tmp_path / "odd.wav", tone(11025, 11025), 11025), 8000)
    assert rate == 8000 and wave.shape == (8000,)


def _raises_naming(path, match):
    with pytest.raises(DataError, match=match) as caught:
        read_wav(path)
    assert str(path) in str(caught.value)


def test_read_wav_errors_name_the_file(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    _raises_naming(empty, "empty file")

    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(bytes(range(256)) * 4)
    _raises_naming(garbage, "not a WAV file")

    whole = write_wav(tmp_path / "whole.wav", tone(4000)).read_bytes()
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(whole[: len(whole) // 2])
    _raises_naming(truncated, "truncated")
    header_only = tmp_path / "header.wav"
    header_only.write_bytes(whole[:20])
    _raises_naming(header_only, "truncated")

    silent = write_wav(tmp_path / "zero.wav", np.zeros(0))
    _raises_naming(silent, "no audio samples")

    flac = tmp_path / "a.flac"
    soundfile.write(str(flac), tone(800), 8000, format="FLAC")
    _raises_naming(flac, "not a WAV file")

    _raises_naming(tmp_path / "missing.wav", "no such")


# --------------------------------------------------------------------------------------------
# FSDD


def test_fsdd_from_the_shared_folder():
    folder = data_dir()
    if folder is None or not (folder / "fsdd" / "recordings").is_dir():
        pytest.skip("the shared FSDD recordings are absent (set SERKET_DATA_DIR to use them)")
    digits = load_fsdd(source="shared", verbose=False)
    assert len(digits) == 3000 and digits.rate == 8000
    assert digits.source == "FSDD (real)" and not digits.synthetic
    assert torch.bincount(digits.labels).tolist() == [300] * 10
    assert sorted(set(digits.speakers)) == ["george", "jackson", "lucas", "nicolas", "theo",
                                            "yweweler"]
    assert int(digits.test_mask().sum()) == 300
    keys = list(zip(digits.labels.tolist(), digits.speakers, digits.takes))
    assert keys == sorted(keys)
    theo = load_fsdd(source="shared", speakers=["theo"], verbose=False)
    assert len(theo) == 500 and set(theo.speakers) == {"theo"}


def _fake_fsdd(folder: Path, names):
    recordings = folder / "fsdd" / "recordings"
    recordings.mkdir(parents=True)
    for i, name in enumerate(names):
        write_wav(recordings / name, tone(400 + 10 * i))
    return recordings


def test_fsdd_layout_parsing_sorting_and_errors(tmp_path):
    names = ["3_bob_1.wav", "3_bob_0.wav", "1_amy_12.wav", "1_amy_2.wav", "9_amy_0.wav"]
    recordings = _fake_fsdd(tmp_path, names)
    (recordings / "README.md").write_text("not a recording")
    digits = load_fsdd(data_dir=tmp_path, source="shared", target_rate=None, verbose=False)
    assert [Path(p).name for p in digits.paths] == [
        "1_amy_2.wav", "1_amy_12.wav", "3_bob_0.wav", "3_bob_1.wav", "9_amy_0.wav"]
    assert digits.labels.tolist() == [1, 1, 3, 3, 9] and digits.takes == [2, 12, 0, 1, 0]
    assert digits.test_mask().tolist() == [True, False, True, True, True]
    picked = digits.subset(torch.tensor([4, 0]))
    assert picked.speakers == ["amy", "amy"] and picked.labels.tolist() == [9, 1]
    assert len(digits.subset(digits.test_mask())) == 4
    with pytest.raises(DataError, match="no speaker"):
        load_fsdd(data_dir=tmp_path, source="shared", speakers=["zed"], verbose=False)
    write_wav(recordings / "seven_bob_3.wav", tone(100))
    with pytest.raises(DataError, match="seven_bob_3.wav"):
        load_fsdd(data_dir=tmp_path, source="shared", verbose=False)
    with pytest.raises(DataError, match="unknown FSDD source"):
        load_fsdd(source="kaggle")


def test_fsdd_download_is_extracted_safely_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("SERKET_CACHE_DIR", str(tmp_path / "cache"))
    clip = write_wav(tmp_path / "clip.wav", tone(300)).read_bytes()
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as bundle:
        for digit in range(10):
            for speaker in ("ann", "bob", "cat", "dan", "eve", "fay"):
                for take in range(50):
                    name = f"fsdd-master/recordings/{digit}_{speaker}_{take}.wav"
                    bundle.writestr(name, clip)
        bundle.writestr("fsdd-master/recordings/../../evil.wav", clip)
        bundle.writestr("fsdd-master/README.md", "hello")
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: io.BytesIO(archive.getvalue()))
    digits = load_fsdd(source="github", data_dir=tmp_path / "none", verbose=False)
    assert len(digits) == 3000 and digits.source == "FSDD (real)"
    assert len(list((tmp_path / "cache" / "fsdd" / "recordings").iterdir())) == 3000
    assert not (tmp_path / "evil.wav").exists()
    assert len(load_fsdd(source="cache", verbose=False)) == 3000


def test_fsdd_download_failure_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SERKET_CACHE_DIR", str(tmp_path / "cache"))

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataError, match="network unreachable"):
        load_fsdd(source="github", verbose=False)


# --------------------------------------------------------------------------------------------
# Synthetic spoken digits (espeak-ng must be installed: `apt-get install espeak-ng`)


@pytest.fixture
def two_espeak_voices(monkeypatch):
    # Fewer espeak-ng voices, so that a small set also reaches flite and festival if installed.
    monkeypatch.setattr(speech, "ESPEAK_VOICES", ("en-us+m1", "en-gb+f2"))


def test_synthesis_is_deterministic_and_labelled_synthetic(tmp_path, two_espeak_voices):
    first = synthesize_digits(tmp_path / "a", n_per_digit=7, seed=3)
    second = synthesize_digits(tmp_path / "b", n_per_digit=7, seed=3)
    assert first.read_bytes() == second.read_bytes()
    manifest = json.loads(first.read_text())
    assert manifest["synthetic"] is True and "espeak-ng" in manifest["engines"]
    assert len(manifest["clips"]) == 70
    a, b = load_synthetic(tmp_path / "a"), load_synthetic(tmp_path / "b")
    assert torch.equal(a.labels, b.labels) and a.speakers == b.speakers and a.takes == b.takes
    for path_a, path_b in zip(a.paths, b.paths):
        assert Path(path_a).read_bytes() == Path(path_b).read_bytes()
    assert a.synthetic and a.source.startswith("synthetic (espeak-ng")
    assert a.rate == 16000 and torch.bincount(a.labels).tolist() == [7] * 10
    assert sorted(set(a.speakers)) == sorted(manifest["voices"][:7])
    assert all(len(w) > 0.1 * a.rate for w in a.waveforms)
    info = soundfile.info(a.paths[0])
    assert info.samplerate == 16000 and info.channels == 1 and info.subtype == "PCM_16"
    pool, _ = speech._voice_pool(("espeak-ng",))
    assert speech._clip_plan(pool, 7, 4) != speech._clip_plan(pool, 7, 3)  # the seed matters
    low = load_synthetic(tmp_path / "a", target_rate=8000, speakers=["en-us+m1"])
    assert low.rate == 8000 and set(low.speakers) == {"en-us+m1"}


def test_auto_falls_back_to_synthetic_speech_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("SERKET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(urllib.request, "urlopen",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    real = speech.synthesize_digits
    monkeypatch.setattr(speech, "synthesize_digits", lambda where, **options: real(
        where, n_per_digit=2, seed=options["seed"], engines=("espeak-ng",)))
    with pytest.warns(SyntheticSpeechWarning, match="SYNTHETIC"):
        digits = load_fsdd(data_dir=tmp_path / "nothing", verbose=False)
    assert digits.synthetic and digits.source.startswith("synthetic")
    assert len(digits) == 20 and digits.rate == 8000


def test_no_engine_installed_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: None)
    with pytest.raises(DataError, match="apt-get install espeak-ng"):
        synthesize_digits(tmp_path, n_per_digit=1)
    with pytest.raises(DataError, match="unknown text-to-speech"):
        synthesize_digits(tmp_path, n_per_digit=1, engines=("say",))
