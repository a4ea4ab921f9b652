"""The ``serket`` command: it explains itself, and a mistake on the command line is one line that
names the option and the value, exit status 2, no traceback, before any training starts."""

import os
import stat
import subprocess
import sys

import pytest
import torch

from serket import __version__
from serket.bench.cli import benchmarks, main
from serket.bench.runner import parse_benchmark_args
from serket.graphs import neuro_serket, vae_gmm


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(capsys, *argv):
    code, out, err = run(capsys, *argv)
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_version_list_and_help(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"neuro-serket {__version__}"
    code, out, _ = run(capsys, "list")
    lines = out.strip().splitlines()
    assert code == 0 and [line.split()[0] for line in lines] == ["lda-asr", "multimodal", "neuro-serket", "vae-gmm"]
    assert all(len(line.split(None, 1)[1]) > 20 for line in lines)  # one line on each
    code, out, _ = run(capsys, "bench", "neuro-serket", "--help")
    assert code == 0
    for option in ("--rounds", "--seeds", "--device", "--out", "--quick", "--speech", "--category-restarts"):
        assert option in out
    assert "(default: 4)" in out and "(default: results/neuro_serket)" in out


@pytest.mark.parametrize("name", ["vae-gmm", "lda-asr", "neuro-serket", "multimodal"])
def test_every_option_has_help_text_with_its_default(name):
    parser = benchmarks()[name].load().bench_parser()
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            assert action.help and action.help.strip(), (name, action.option_strings)
    text = parser.format_help()
    assert text.count("(default:") >= len([a for a in parser._actions if a.option_strings]) - 1


@pytest.mark.parametrize("argv, names", [
    (["bench", "neuro-serket", "--device", "gpu"], ["--device", "'gpu'"]),
    (["bench", "neuro-serket", "--seeds", "0", "0"], ["--seeds", "seed 0", "more than once"]),
    (["bench", "vae-gmm", "--seeds", "-1"], ["--seeds", "'-1'"]),
    (["bench", "neuro-serket", "--rounds", "0"], ["--rounds", "'0'", "positive integer"]),
    (["bench", "vae-gmm", "--rounds", "-2"], ["--rounds", "'-2'"]),
    (["bench", "neuro-serket", "--per-class", "0"], ["--per-class", "'0'"]),
    (["bench", "lda-asr", "--units", "two"], ["--units", "'two'"]),
    (["bench", "neuro-serket", "--evidence-weight", "nan"], ["--evidence-weight", "'nan'"]),
    (["bench", "multimodal", "--speech", "kaggle"], ["--speech", "'kaggle'"]),
    (["bench", "lda-asr", "--data-dir", "/no/such/folder"], ["--data-dir", "/no/such/folder"]),
    (["bench", "no-such-architecture"], ["'no-such-architecture'", "neuro-serket"]),
    (["bench"], ["neuro-serket"]),
    (["frobnicate"], ["'frobnicate'"]),
])
def test_a_bad_command_line_is_one_line_naming_the_option_and_value(capsys, argv, names):
    line = one_line_error(capsys, *argv)
    for name in names:
        assert name in line, line


def test_cuda_asked_for_on_a_machine_without_it(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    line = one_line_error(capsys, "bench", "vae-gmm", "--device", "cuda")
    assert "--device" in line and "'cuda'" in line and "CUDA is not available" in line, line
    args = parse_benchmark_args(vae_gmm.bench_parser(), ["--device", "auto", "--out", str(tmp_path)])
    assert args.device == "cpu"


def test_an_output_folder_that_cannot_be_written_is_refused_before_training(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trained = []
    monkeypatch.setattr(vae_gmm, "run_vae_gmm", lambda *a, **k: trained.append(1))
    a_file = tmp_path / "results.txt"
    a_file.write_text("not a folder")
    line = one_line_error(capsys, "bench", "vae-gmm", "--out", str(a_file))
    assert "--out" in line and str(a_file) in line and "not a folder" in line
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        if os.access(locked, os.W_OK):  # root writes anywhere: make the folder unreachable instead
            under = a_file / "results"
        else:
            under = locked / "results"
        line = one_line_error(capsys, "bench", "vae-gmm", "--out", str(under))
        assert "--out" in line and str(under) in line and "cannot write" in line
    finally:
        locked.chmod(stat.S_IRWXU)
    assert trained == []


def test_quick_never_overrides_an_option_given_explicitly(tmp_path):
    parser = neuro_serket.bench_parser()
    out = ["--out", str(tmp_path)]
    quick = parse_benchmark_args(parser, ["--quick", *out], presets=neuro_serket.PRESETS)
    assert (quick.rounds, quick.per_class, quick.seeds, quick.lda_sweeps) == (2, 20, [0], 10)
    mixed = parse_benchmark_args(parser, ["--quick", "--rounds", "3", "--seeds", "1", "2", "--per-class", "30",
                                          *out], presets=neuro_serket.PRESETS)
    assert (mixed.rounds, mixed.seeds, mixed.per_class, mixed.lda_sweeps, mixed.units) == (3, [1, 2], 30, 10, 16)
    published = parse_benchmark_args(parser, ["--published", "--epochs", "50", *out], presets=neuro_serket.PRESETS)
    assert (published.rounds, published.epochs, published.first_epochs, published.lda_sweeps) == (40, 50, 200, 100)
    default = parse_benchmark_args(parser, out, presets=neuro_serket.PRESETS)
    assert (default.rounds, default.seeds, default.per_class) == (4, [0, 1, 2, 3, 4], 270)  # FSDD takes 5-49


def test_the_installed_command_exits_2_with_one_line_and_debug_shows_the_traceback(tmp_path):
    command = [sys.executable, "-m", "serket.bench.cli", "bench", "vae-gmm", "--rounds", "0"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.strip() == (
        "serket bench vae-gmm: error: argument --rounds: must be a positive integer, got '0'")
    missing = [sys.executable, "-m", "serket.bench.cli", "bench", "lda-asr", "--speech", "fsdd", "--data-dir", str(tmp_path),
               "--out", str(tmp_path / "out")]
    done = subprocess.run(missing, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("serket: error: ") and "fsdd" in done.stderr and "Traceback" not in done.stderr
    done = subprocess.run(missing + ["--debug"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode != 0 and "Traceback" in done.stderr and "DataError" in done.stderr


def test_result_files_are_readable_like_the_plots(tmp_path):
    from serket.bench.reporting import write_json, write_text

    old = os.umask(0o022)
    try:
        for path in (write_json(tmp_path / "results.json", {"a": 1}), write_text(tmp_path / "results.md", "# r\n")):
            assert stat.S_IMODE(path.stat().st_mode) == 0o644, oct(path.stat().st_mode)
    finally:
        os.umask(old)
    assert not list(tmp_path.glob(".results*"))
