"""Spoken digits: WAV files refused with errors that name them, FSDD loading (the data folder, the
cache, the download, the bundled copy), and the synthetic stand-in (its tests need espeak-ng and
are skipped, saying so, only where it is not installed; CI installs it)."""

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

import serket.audio.synthesis as synthesis
import serket.datasets.spoken_digits as spoken_digits
from serket.audio import read_wav, synthesize_digits
from serket.datasets import bundle_fsdd, data_dir, load_fsdd, load_synthetic, waveform_digest
from serket.datasets.spoken_digits import BUNDLED_FSDD, FSDD_DIGEST
from serket.errors import DataError
from serket.files import file_sha256


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


FSDD_SPEAKERS = ["george", "jackson", "lucas", "nicolas", "theo", "yweweler"]


def _check_the_fsdd_recordings(digits):
    assert len(digits) == 3000 and digits.rate == 8000 and not digits.synthetic
    assert torch.bincount(digits.labels).tolist() == [300] * 10
    assert sorted(set(digits.speakers)) == FSDD_SPEAKERS
    assert int(digits.test_mask().sum()) == 300
    keys = list(zip(digits.labels.tolist(), digits.speakers, digits.takes))
    assert keys == sorted(keys)
    assert waveform_digest(digits) == FSDD_DIGEST  # sample for sample the recordings of 26eb9aa


def test_the_bundled_copy_is_the_fsdd_recordings():
    digits = load_fsdd(source="bundled", verbose=False)
    assert digits.source == "FSDD (real, bundled copy)"
    _check_the_fsdd_recordings(digits)
    assert (BUNDLED_FSDD.parent / "LICENSE").read_text().count("CC BY-SA 4.0") >= 1
    theo = load_fsdd(source="bundled", speakers=["theo"], verbose=False)
    assert len(theo) == 500 and set(theo.speakers) == {"theo"}
    wideband = load_fsdd(source="bundled", speakers=["theo"], target_rate=16000, verbose=False)
    assert wideband.rate == 16000 and abs(len(wideband.waveforms[0]) - 2 * len(theo.waveforms[0])) <= 1


def test_fsdd_from_the_data_folder_equals_the_bundled_copy():
    folder = data_dir()
    if folder is None or not (folder / "fsdd" / "recordings").is_dir():
        pytest.skip("no FSDD recordings in $SERKET_DATA_DIR (CI sets it; the bundled copy is tested alone above)")
    digits = load_fsdd(source="shared", verbose=False)
    assert digits.source == "FSDD (real, data folder)"
    _check_the_fsdd_recordings(digits)


def test_auto_uses_the_bundled_copy_when_nothing_else_has_fsdd(tmp_path, monkeypatch):
    monkeypatch.setenv("SERKET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(urllib.request, "urlopen",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    digits = load_fsdd(data_dir=tmp_path / "nothing", speakers=["lucas"], verbose=False)
    assert digits.source == "FSDD (real, bundled copy)" and len(digits) == 500


def test_a_bundle_round_trips_and_a_damaged_one_is_refused(tmp_path):
    recordings = _fake_fsdd(tmp_path, ["3_bob_1.wav", "1_amy_0.wav", "1_amy_12.wav"])
    write_wav(recordings / "2_amy_0.wav", [0.5, -0.25, -1.0, 32767 / 32768])  # the int16 extremes
    archive = bundle_fsdd(recordings, tmp_path / "bundle" / "recordings.zip")
    wavs = load_fsdd(data_dir=tmp_path, source="shared", target_rate=None, verbose=False)
    bundled = spoken_digits._load_bundle(archive, target_rate=None, speakers=None,
                                  expected_sha256=file_sha256(archive))
    assert waveform_digest(bundled) == waveform_digest(wavs)
    assert [Path(p).name for p in bundled.paths] == ["1_amy_0.flac", "1_amy_12.flac", "2_amy_0.flac",
                                                      "3_bob_1.flac"]
    assert sorted(zipfile.ZipFile(archive).namelist()) == sorted(Path(p).name for p in bundled.paths)
    with pytest.raises(DataError, match=r"recordings\.zip: the bundled FSDD copy is damaged"):
        spoken_digits._load_bundle(archive, target_rate=None, speakers=None, expected_sha256="0" * 64)
    with pytest.raises(DataError, match="missing from this installation"):
        spoken_digits._load_bundle(tmp_path / "gone.zip", target_rate=None, speakers=None, expected_sha256=None)
    broken = tmp_path / "broken.zip"
    broken.write_bytes(archive.read_bytes()[:-200])
    with pytest.raises(DataError, match="broken.zip"):
        spoken_digits._load_bundle(broken, target_rate=None, speakers=None, expected_sha256=None)
    (recordings / "0_amy_0.wav").write_bytes(b"")  # an empty recording is named, nothing written
    with pytest.raises(DataError, match="0_amy_0.wav"):
        bundle_fsdd(recordings, tmp_path / "other.zip")
    assert not (tmp_path / "other.zip").exists() and not list(tmp_path.glob(".other.zip.*"))


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
    assert len(digits) == 3000 and digits.source == "FSDD (real, downloaded)"
    assert len(list((tmp_path / "cache" / "fsdd" / "recordings").iterdir())) == 3000
    assert not (tmp_path / "evil.wav").exists()
    cached = load_fsdd(source="cache", verbose=False)
    assert len(cached) == 3000 and cached.source == "FSDD (real, cache)"


def test_fsdd_download_failure_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SERKET_CACHE_DIR", str(tmp_path / "cache"))

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataError, match="network unreachable"):
        load_fsdd(source="github", verbose=False)


# --------------------------------------------------------------------------------------------
# Synthetic spoken digits (they need espeak-ng: `apt-get install espeak-ng`)


@pytest.fixture
def two_espeak_voices(monkeypatch):
    # Fewer espeak-ng voices, so that a small set also reaches flite and festival if installed.
    monkeypatch.setattr(synthesis, "ESPEAK_VOICES", ("en-us+m1", "en-gb+f2"))


@pytest.mark.requires_program("espeak-ng")
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
    pool, _ = synthesis._voice_pool(("espeak-ng",))
    assert synthesis._clip_plan(pool, 7, 4) != synthesis._clip_plan(pool, 7, 3)  # the seed matters
    low = load_synthetic(tmp_path / "a", target_rate=8000, speakers=["en-us+m1"])
    assert low.rate == 8000 and set(low.speakers) == {"en-us+m1"}


@pytest.mark.requires_program("espeak-ng")
def test_synthetic_speech_only_when_asked_for_and_labelled(tmp_path, monkeypatch):
    monkeypatch.setenv("SERKET_CACHE_DIR", str(tmp_path / "cache"))
    real = synthesis.synthesize_digits
    monkeypatch.setattr(spoken_digits, "synthesize_digits", lambda where, **options: real(
        where, n_per_digit=2, seed=options["seed"], engines=("espeak-ng",)))
    digits = load_fsdd(source="synthetic", data_dir=tmp_path / "nothing", verbose=False)
    assert digits.synthetic and digits.source.startswith("synthetic")
    assert len(digits) == 20 and digits.rate == 8000


def test_no_engine_installed_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: None)
    with pytest.raises(DataError, match="apt-get install espeak-ng"):
        synthesize_digits(tmp_path, n_per_digit=1)
    with pytest.raises(DataError, match="unknown text-to-speech"):
        synthesize_digits(tmp_path, n_per_digit=1, engines=("say",))


def test_without_any_source_auto_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("SERKET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(spoken_digits, "BUNDLED_FSDD", tmp_path / "gone" / "recordings.zip")
    monkeypatch.setattr(urllib.request, "urlopen",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    with pytest.raises(DataError) as caught:
        load_fsdd(data_dir=tmp_path / "nothing", verbose=False)
    text = str(caught.value)
    assert text.startswith("FSDD could not be loaded")
    for where in ("shared: ", "cache: ", "github: ", "offline", "bundled: ", "missing from this installation"):
        assert where in text, text
