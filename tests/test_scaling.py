"""benchmarks/scaling.py at tiny N: it measures, fits finite slopes and writes its table, plot and JSON."""

import json
import math
from pathlib import Path

import pytest

import serket  # noqa: F401  (first: sets the thread policy before torch loads)
import numpy as np
import torch


SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "scaling.py"


@pytest.fixture(scope="module")
def scaling():
    from conftest import load_script

    return load_script("benchmarks", SCRIPT.name)


def test_fitted_slopes_read_the_growth(scaling):
    ns = [100, 1000, 10000]
    assert scaling.fit_slope(ns, [2e-3 * n for n in ns]) == pytest.approx(1.0)
    assert scaling.fit_slope(ns, [1e-6 * n * n for n in ns]) == pytest.approx(2.0)
    assert math.isnan(scaling.fit_slope([100], [1.0]))
    assert math.isnan(scaling.fit_slope([100, 200], [1.0, float("nan")]))
    assert [scaling.growth(s) for s in (0.5, 1.0, 1.6, float("nan"))] == ["sublinear", "linear", "SUPERLINEAR", "-"]


def test_perturbed_copies_are_seeded_variants_of_the_recording(scaling):
    rate = 8000
    clip = torch.sin(torch.arange(4000) * 0.3) * torch.hann_window(4000)
    first, info = scaling.perturb(clip, rate, np.random.default_rng([0, 5, 1]))
    again, _ = scaling.perturb(clip, rate, np.random.default_rng([0, 5, 1]))
    other, _ = scaling.perturb(clip, rate, np.random.default_rng([0, 5, 2]))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert torch.isfinite(first).all()
    assert abs(info["gain_db"]) <= scaling.GAIN_DB
    assert first.shape[0] == pytest.approx(4000 / info["speed"], abs=2)  # speed changes the length


def test_the_scaling_core_at_tiny_n_writes_a_table_plot_and_finite_slopes(scaling, tmp_path):
    settings = scaling.default_settings()
    # tiny per-round work; at most 15 real clips a digit, so that N = 200 also holds perturbed copies
    settings.update(epochs=1, first_epochs=1, hidden=[32], gmm_sweeps=2, lda_sweeps=2, lda_chains=1, units=8,
                    n_best=3, discriminant=4, category_restarts=1, clips_per_digit=15)
    result = scaling.run_scaling([100, 200], settings, tmp_path, fresh_process=False, log=lambda text: None)
    rows = result["rows"]
    assert [row["n"] for row in rows] == [100, 200]
    assert all("seconds" in row for row in rows), rows
    assert [(row["speech"]["real"], row["speech"]["perturbed"]) for row in rows] == [(100, 0), (150, 50)]
    for name, _, _ in scaling.PARTS:
        assert all(row["seconds"][name] > 0 for row in rows), name
        assert math.isfinite(result["slopes"][name]["slope"]), name
    assert rows[1]["seconds"]["round"] >= max(rows[1]["seconds"][n] for n in ("vae", "gmm", "lda", "asr"))
    assert math.isfinite(result["slopes"]["peak_rss"]["slope"])
    table = (tmp_path / "scaling.md").read_text()
    assert "| 100 |" in table and "| 200 |" in table and "| slope |" in table
    saved = json.loads((tmp_path / "scaling.json").read_text())
    assert saved["ns"] == [100, 200] and set(saved["slopes"]) >= {"vae", "gmm", "lda", "asr", "round"}
    assert (tmp_path / "scaling.png").stat().st_size > 10_000
