"""The speech architecture: recogniser + LDA joined by a head-to-head (SIR) connection."""

import torch

from serket.audio import speech_sequences
from serket.graphs.lda_asr import SCHEDULE, build_lda_asr
from serket.training import AlternateTrainer


def _toy_sequences(n=60, seed=0):
    gen = torch.Generator().manual_seed(seed)
    phones = 4 * torch.randn(4, 3, generator=gen)
    words = [(0, 1), (2, 3), (1, 2)]
    lengths = torch.randint(4, 9, (n,), generator=gen)
    values = torch.zeros(n, 8, 3)
    labels = torch.arange(n) % 3
    for i in range(n):
        half = int(lengths[i]) // 2
        a, b = words[int(labels[i])]
        values[i, :half], values[i, half:lengths[i]] = phones[a], phones[b]
        values[i, :lengths[i]] += 0.5 * torch.randn(int(lengths[i]), 3, generator=gen)
    from serket.messages import Sequences

    return Sequences(values, lengths), labels


def test_linked_recogniser_relearns_from_resampled_paths_and_separate_does_not():
    seq, labels = _toy_sequences()
    for linked in (False, True):
        g = build_lda_asr(seq, linked=linked, n_topics=3, n_units=6,
                          asr={"n_best": 5, "position_weight": 0.0}, lda={"sweeps": 20})
        history = AlternateTrainer(g, rounds=3, schedule=SCHEDULE, labels=labels, progress=False).run()
        asr = g.node("asr")
        assert asr.n_relearned_ == (2 if linked else 0)  # rounds 2 and 3 relearn from round 1's SIR
        # the toy words are easy: the LDA's topics recover them either way
        assert history[-1]["metrics"]["lda"]["accuracy"] > 0.9


def test_speech_sequences_trim_and_normalise_per_speaker():
    rate = 8000
    t = torch.arange(rate // 2) / rate
    loud = torch.sin(2 * torch.pi * 440 * t)
    clip = torch.cat([torch.zeros(2000) + 1e-4 * torch.randn(2000), loud, torch.zeros(2000)])
    seq = speech_sequences([clip, clip * 0.5, loud], rate, ["a", "a", "b"])
    # silence trimmed: the padded clips come down to about the loud half second (51 frames)
    assert abs(int(seq.lengths[0]) - 51) <= 6
    valid = seq.mask()
    frames_b = seq.values[2][valid[2]]
    assert torch.allclose(frames_b.mean(0), torch.zeros(seq.size), atol=1e-4)


def test_lda_asr_benchmark_smoke(tmp_path, capsys, golden_figures):
    from serket.bench.cli import main

    assert main(["bench", "lda-asr", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    golden_figures("lda-asr", tmp_path / "results.json")
    assert out.splitlines()[0].startswith("data: ")
    assert "real recordings" in out.splitlines()[0] or "SYNTHETIC" in out.splitlines()[0]
    for name in ("results.json", "results.md", "accuracy_per_round.png", "confusion_linked.png"):
        assert (tmp_path / name).stat().st_size > 0, name


def test_the_lda_asr_example_runs_as_a_smoke_test(load_example):
    example = load_example("lda_asr_fsdd.py")
    results = example.main(["--every", "10", "--rounds", "2", "--units", "16", "--sweeps", "10", "--chains", "2"])
    assert set(results) == {"separate", "linked"} and all(0.0 <= a <= 1.0 for a in results.values())
