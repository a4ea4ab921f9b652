"""How the cost grows: one training round of each module and of the whole Neuro-SERKET graph
against the number of items N, with the peak memory at each N.

What is timed. The fully linked graph of :mod:`serket.graphs.neuro_serket` (VAE -> GMM on
images, recogniser <-> LDA on speech, the GMM's cluster and the LDA's topic joined by the
tail-to-tail combiner) is built over N image-utterance pairs and trained alternately with its
:data:`~serket.graphs.neuro_serket.SCHEDULE`, with the per-round settings of the default
``serket bench neuro-serket`` run, read from its parser (VAE epochs a round, GMM and LDA
sweeps, acoustic units, N-best lists, the combiner's weights and restarts). Round 1 is a
warm-up and is not timed: it holds the one-off work (the recogniser's k-means over all frames, the LDA's second chain, the VAE's first epochs). Round 2 is the timed round;
its seconds per node are those the trainer records (:class:`~serket.training.AlternateTrainer`),
summed where a node appears twice in the schedule (the head-to-head node ``words`` and the
combiner ``category``). The one change from the benchmark: the VAE's first round runs
``--first-epochs`` 15 epochs instead of 60, because round 1 is not timed and 60 epochs at
N = 30k cost about as much as the rest of the measurement (it changes what round 2 starts from,
not what round 2 does).

Where the data comes from. Images: the MNIST training split, N / 10 per digit
(:func:`~serket.datasets.mnist.digits_subset`, seed 0). Speech: the FSDD training takes 5-49
(2,700 real recordings, 270 per digit). Item j of a digit is the digit's clip ``j mod 270``;
the first 270 items of a digit are the recordings themselves, later ones (``j >= 270``, copy
``j // 270``) are that recording perturbed with its own seed (``--speech-seed``, the clip's
position and the copy number): a gain drawn uniformly in +-6 dB, a speed change (resampled from
8 kHz to 7.2, 7.6, 8.4 or 8.8 kHz and played at 8 kHz: tempo and pitch change together, by -10 %
to +11 %) and white noise at 30 dB SNR (against the clip's mean power after the gain). So N = 1k
is all real recordings (100 per digit), 3k holds 2,700 real and 300 perturbed, 10k 2,700 and
7,300, 30k 2,700 and 27,300. Each image is paired with an utterance of its digit; labels reach
only the metrics.

Each N runs in a fresh Python process, so the peak resident memory (``ru_maxrss``) is that of
this N alone: the data, the features, the graph and both rounds. The slope of log(seconds)
against log(N), fitted over every N measured, says how each part grows (1: linearly); the local
slopes between neighbouring N show where fixed costs stop mattering.

Usage::

    python benchmarks/scaling.py [--n 1000 3000 10000 30000] [--out benchmarks/results/scaling]

Writes ``scaling.json``, ``scaling.md`` (the table) and ``scaling.png`` (log-log, time against
N per module with a slope-1 reference line, and the peak memory) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import serket  # noqa: F401  (first: sets the thread policy before torch loads)
import numpy as np
import torch

# what is timed, as (column, the schedule's node names, what it is)
PARTS = [
    ("vae", ("vae",), "VAE (15 epochs)"),
    ("gmm", ("gmm",), "GMM (50 Gibbs sweeps)"),
    ("lda", ("lda",), "LDA (60 Gibbs sweeps)"),
    ("asr", ("asr",), "recogniser (relearn + 50-best decode)"),
    ("words", ("words",), "head-to-head SIR (words, twice)"),
    ("category", ("category",), "tail-to-tail combiner (category, twice)"),
    ("round", None, "the whole graph, one round"),
]
DEFAULT_NS = (1000, 3000, 10000, 30000)
SPEED_RATES = (7200, 7600, 8400, 8800)  # resample 8 kHz to these and play at 8 kHz
GAIN_DB, NOISE_SNR_DB = 6.0, 30.0
LINEAR_BAND = (0.85, 1.15)  # a fitted slope in this band counts as linear


def default_settings() -> dict:
    """The per-round settings of ``serket bench neuro-serket`` (its defaults), first round shortened."""
    from serket.graphs.neuro_serket import bench_parser

    bench = bench_parser().parse_args([])  # the benchmark's defaults, read where they are set
    return {"epochs": bench.epochs, "first_epochs": 15, "hidden": list(bench.hidden), "gmm_sweeps": bench.gmm_sweeps,
            "lda_sweeps": bench.lda_sweeps, "lda_chains": bench.lda_chains, "tokens": 100, "units": bench.units,
            "n_best": bench.n_best, "discriminant": bench.discriminant, "evidence_weight": bench.evidence_weight,
            "lda_prior_exponent": bench.lda_prior_exponent, "category_restarts": bench.category_restarts,
            "warmup_rounds": 1, "seed": 0, "speech_seed": 0, "clips_per_digit": None}


# --- data ---------------------------------------------------------------------------------------
def perturb(waveform: torch.Tensor, rate: int, rng: np.random.Generator) -> tuple[torch.Tensor, dict]:
    """A seeded variant of one recording: gain, speed (tempo and pitch) and white noise."""
    import torchaudio

    gain_db = float(rng.uniform(-GAIN_DB, GAIN_DB))
    new_rate = int(rng.choice(SPEED_RATES))
    out = torchaudio.functional.resample(waveform, rate, new_rate) * 10 ** (gain_db / 20)
    power = float(out.pow(2).mean())
    noise = torch.from_numpy(rng.standard_normal(out.shape[0]).astype(np.float32))
    out = out + math.sqrt(power / 10 ** (NOISE_SNR_DB / 10)) * noise
    return out, {"gain_db": gain_db, "speed": rate / new_rate}


def scaling_speech(n: int, *, seed: int = 0, clips_per_digit: int | None = None, data_dir=None):
    """N/10 utterances of each digit from the FSDD training takes, perturbed copies beyond 270 a
    digit (see the module's docstring): ``(waveforms, rate, speakers, labels, provenance)``.
    ``clips_per_digit``: use only the first this many recordings of each digit (tests)."""
    from serket.datasets.spoken_digits import load_fsdd

    digits, _ = load_fsdd(data_dir=data_dir, verbose=False).split()
    per_digit = n // 10
    waveforms, speakers, labels = [], [], []
    real = perturbed = 0
    for digit in range(10):
        clips = (digits.labels == digit).nonzero().flatten().tolist()[:clips_per_digit]
        for j in range(per_digit):
            clip, copy = clips[j % len(clips)], j // len(clips)
            if copy == 0:
                waveforms.append(digits.waveforms[clip])
                real += 1
            else:
                rng = np.random.default_rng([seed, clip, copy])
                waveforms.append(perturb(digits.waveforms[clip], digits.rate, rng)[0])
                perturbed += 1
            speakers.append(digits.speakers[clip])
            labels.append(digit)
    clips_per_digit = min(len((digits.labels == d).nonzero()[:clips_per_digit]) for d in range(10))
    provenance = {"source": digits.source, "takes": f"{digits.test_takes}-49 (training takes)",
                  "real": real, "perturbed": perturbed, "per_digit": per_digit,
                  "max_copies_per_clip": -(-per_digit // clips_per_digit),
                  "perturbation": (f"seeded per (seed {seed}, clip, copy): gain U(-{GAIN_DB:g}, +{GAIN_DB:g}) dB, "
                                   f"speed x{8000 / max(SPEED_RATES):.3f}..x{8000 / min(SPEED_RATES):.3f} by "
                                   f"resampling 8 kHz to one of {list(SPEED_RATES)} Hz, white noise at "
                                   f"{NOISE_SNR_DB:g} dB SNR")}
    return waveforms, digits.rate, speakers, torch.tensor(labels), provenance


def scaling_images(n: int, *, seed: int = 0, data_dir=None):
    """N/10 MNIST training images of each digit, in digit order: ``(x (N, 784), labels)``."""
    from serket.datasets.mnist import digits_subset, load_mnist

    images, labels, info = load_mnist("train", data_dir=data_dir, verbose=False)
    idx = digits_subset(labels, n // 10, seed=seed)
    return images[idx].reshape(len(idx), 784).float() / 255.0, labels[idx], info


# --- one N, in this process ---------------------------------------------------------------------
def peak_rss_mib() -> float:
    """This process's peak resident memory so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(n: int, settings: dict, *, data_dir=None) -> dict:
    """Build the fully linked graph over N pairs, run the warm-up round(s) and one timed round."""
    from serket.audio.features import speech_sequences
    from serket.graphs.neuro_serket import SCHEDULE, build_neuro_serket
    from serket.modules.gmm import ClusterCollapseWarning
    from serket.training import AlternateTrainer

    if n % 10:
        raise ValueError(f"N must be a multiple of 10 (N/10 items per digit), got {n}")
    t0 = time.perf_counter()
    x, image_labels, image_info = scaling_images(n, seed=settings["seed"], data_dir=data_dir)
    waveforms, rate, speakers, speech_labels, provenance = scaling_speech(
        n, seed=settings["speech_seed"], clips_per_digit=settings["clips_per_digit"], data_dir=data_dir)
    assert torch.equal(image_labels, speech_labels)  # both in digit order, N/10 each: pairs align
    sequences = speech_sequences(waveforms, rate, speakers)
    del waveforms
    data_seconds = time.perf_counter() - t0
    rss_data = peak_rss_mib()
    s = settings
    graph = build_neuro_serket(
        x, sequences, configuration="full", n_units=s["units"], seed=s["seed"],
        vae={"epochs": s["epochs"], "first_epochs": s["first_epochs"], "hidden": tuple(s["hidden"])},
        gmm={"sweeps": s["gmm_sweeps"]},
        asr={"n_best": s["n_best"], "relearn_rate": 1.0, "discriminant": s["discriminant"] or None},
        lda={"sweeps": s["lda_sweeps"], "tokens": s["tokens"], "chains": s["lda_chains"]},
        combiner={"evidence_weight": {"lda": s["evidence_weight"]},
                  "prior_exponent": {"lda": s["lda_prior_exponent"]},
                  "restarts": s["category_restarts"] if s["category_restarts"] >= 0 else None})
    # CPU seconds of every node's step beside the trainer's wall-clock seconds: other programs
    # sharing the machine stretch the wall clock, not this process's CPU time
    cpu: dict[str, float] = {}
    step = graph.step

    def timed_step(name):
        start = time.process_time()
        step(name)
        cpu[name] = cpu.get(name, 0.0) + time.process_time() - start

    def keep_cpu(trainer, record):
        record["cpu_node_seconds"] = dict(cpu)
        cpu.clear()

    graph.step = timed_step
    trainer = AlternateTrainer(graph, rounds=s["warmup_rounds"] + 1, schedule=SCHEDULE, labels=image_labels,
                               callbacks=[keep_cpu], progress=False)
    with warnings.catch_warnings():  # a cluster may die from a poor start; we only time here
        warnings.simplefilter("ignore", ClusterCollapseWarning)
        history = trainer.run()
    timed = history[-1]

    def by_part(node_seconds):
        figures = {name: sum(node_seconds.get(node, 0.0) for node in nodes) for name, nodes, _ in PARTS if nodes}
        figures["round"] = sum(node_seconds.values())
        return figures

    wall = by_part(timed["node_seconds"])
    wall["round"] = timed["seconds"]
    return {
        "n": n, "seconds": by_part(timed["cpu_node_seconds"]), "wall_seconds": wall, "timed_round": timed["round"],
        "warmup_wall_seconds": [record["seconds"] for record in history[:-1]],
        "warmup_cpu_node_seconds": [record["cpu_node_seconds"] for record in history[:-1]],
        "peak_rss_mib": peak_rss_mib(), "rss_after_data_mib": rss_data, "data_seconds": data_seconds,
        # how far each node's work raised the process's peak (recorded by the trainer, where it does)
        "node_peak_rss_growth_mib": [record.get("node_peak_rss_growth_mib") for record in history],
        "frames": int(sequences.lengths.sum()), "max_frames": int(sequences.values.shape[1]),
        "speech": provenance, "images": {"source": f"MNIST train ({image_info['source']})", "per_digit": n // 10},
        "accuracy": {node: m["accuracy"] for node, m in timed["metrics"].items()},
        "torch_threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
    }


# --- every N, each in a fresh process -----------------------------------------------------------
def measure_in_subprocess(n: int, settings: dict, *, data_dir=None, timeout: float | None = None) -> dict:
    """:func:`measure` in a fresh interpreter, so that its peak memory is this N's alone."""
    with tempfile.TemporaryDirectory() as folder:
        result = Path(folder) / "result.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--measure", str(n),
                   "--settings", json.dumps(settings), "--result", str(result)]
        if data_dir is not None:
            command += ["--data-dir", str(data_dir)]
        started = time.perf_counter()
        try:
            done = subprocess.run(command, timeout=timeout, capture_output=True, text=True)
        except subprocess.TimeoutExpired:
            return {"n": n, "error": f"not measured: over the {timeout:.0f} s limit for one N"}
        if done.returncode != 0:
            return {"n": n, "error": f"exit status {done.returncode}: {done.stderr.strip()[-2000:]}"}
        figures = json.loads(result.read_text())
        figures["process_seconds"] = time.perf_counter() - started
        return figures


def fit_slope(ns, values) -> float:
    """Least-squares slope of log(values) against log(ns); NaN with fewer than two usable points."""
    pairs = [(math.log(n), math.log(v)) for n, v in zip(ns, values) if v is not None and v > 0 and math.isfinite(v)]
    if len(pairs) < 2:
        return float("nan")
    x, y = np.array(pairs).T
    return float(np.polyfit(x, y, 1)[0])


def growth(slope: float) -> str:
    if not math.isfinite(slope):
        return "-"
    low, high = LINEAR_BAND
    return "linear" if low <= slope <= high else ("sublinear" if slope < low else "SUPERLINEAR")


def slopes_of(rows: list[dict]) -> dict:
    """Per part: the slope over all N, the local slopes between neighbouring N, and the verdict."""
    measured = [row for row in rows if "seconds" in row]
    ns = [row["n"] for row in measured]
    out = {}
    for name, _, _ in PARTS:
        values = [row["seconds"][name] for row in measured]
        slope = fit_slope(ns, values)
        local = [fit_slope(ns[i:i + 2], values[i:i + 2]) for i in range(len(ns) - 1)]
        out[name] = {"slope": slope, "local": local, "growth": growth(slope)}
    memory = [row["peak_rss_mib"] for row in measured]
    out["peak_rss"] = {"slope": fit_slope(ns, memory),
                       "local": [fit_slope(ns[i:i + 2], memory[i:i + 2]) for i in range(len(ns) - 1)]}
    out["peak_rss"]["growth"] = growth(out["peak_rss"]["slope"])
    return out


def format_table(rows: list[dict], slopes: dict) -> str:
    """Markdown: CPU seconds of the timed round per part, its wall-clock seconds, the peak memory,
    the padded utterance length and where the speech came from; then the slopes."""
    names = [name for name, _, _ in PARTS]
    head = ("| N | " + " | ".join(f"{name} s" for name in names)
            + " | round wall s | peak RSS MiB | RSS after data MiB | longest utt. (frames) | speech: real + perturbed |")
    lines = [head, "|" + "---|" * (len(names) + 6)]
    for row in rows:
        if "seconds" not in row:
            lines.append(f"| {row['n']:,} | " + " | ".join("-" for _ in names) + f" | - | - | - | - | {row['error'][:80]} |")
            continue
        cells = " | ".join(f"{row['seconds'][name]:.2f}" for name in names)
        speech = row["speech"]
        lines.append(f"| {row['n']:,} | {cells} | {row['wall_seconds']['round']:.2f} | {row['peak_rss_mib']:.0f} | "
                     f"{row['rss_after_data_mib']:.0f} | {row['max_frames']} | {speech['real']:,} + {speech['perturbed']:,} |")
    lines.append("| slope | " + " | ".join(f"{slopes[name]['slope']:.2f}" for name in names)
                 + f" | | {slopes['peak_rss']['slope']:.2f} | | | |")
    lines.append("| growth | " + " | ".join(slopes[name]["growth"] for name in names)
                 + f" | | {slopes['peak_rss']['growth']} | | | |")
    return "\n".join(lines)


def plot_scaling(rows: list[dict], slopes: dict, path) -> Path:
    from serket.bench.reporting import pyplot

    plt = pyplot()
    measured = [row for row in rows if "seconds" in row]
    ns = np.array([row["n"] for row in measured], dtype=float)
    fig, (ax, mem) = plt.subplots(1, 2, figsize=(12, 5), gridspec_kw={"width_ratios": [2, 1]})
    for name, _, label in PARTS:
        values = np.array([row["seconds"][name] for row in measured])
        style = dict(lw=2.5, color="black") if name == "round" else {}
        ax.plot(ns, values, "o-", label=f"{label}: slope {slopes[name]['slope']:.2f}", **style)
    rounds = np.array([row["seconds"]["round"] for row in measured])
    if len(ns):
        anchor = rounds[0] * 1.6  # above the whole round's first point
        ax.plot(ns, anchor * ns / ns[0], "--", color="grey", label="slope 1 (linear), for reference")
    ax.set(xscale="log", yscale="log", xlabel="items N (image-utterance pairs)", ylabel="CPU seconds in the round",
           title="Neuro-SERKET: one training round (round 2) against N")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    memory = np.array([row["peak_rss_mib"] for row in measured])
    mem.plot(ns, memory, "o-", color="tab:purple", label=f"peak RSS: slope {slopes['peak_rss']['slope']:.2f}")
    if len(ns):
        mem.plot(ns, memory[0] * ns / ns[0], "--", color="grey", label="slope 1")
    mem.set(xscale="log", yscale="log", xlabel="items N", ylabel="peak resident memory (MiB)",
            title="peak memory of the whole process")
    mem.grid(True, which="both", alpha=0.3)
    mem.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_scaling(ns, settings: dict, out, *, fresh_process: bool = True, data_dir=None,
                timeout: float | None = None, log=print) -> dict:
    """Measure every N (each in a fresh process unless told otherwise), then write the table,
    the plot and the JSON to ``out``; returns ``{"rows", "slopes", "table", ...}``."""
    rows = []
    for n in sorted(ns):
        log(f"N = {n:,} ...")
        row = (measure_in_subprocess(n, settings, data_dir=data_dir, timeout=timeout) if fresh_process
               else measure(n, settings, data_dir=data_dir))
        rows.append(row)
        if "seconds" in row:
            log(f"  round {row['timed_round']}: " + ", ".join(f"{k} {v:.2f}s" for k, v in row["seconds"].items())
                + f"; peak RSS {row['peak_rss_mib']:.0f} MiB")
        else:
            log(f"  {row['error']}")
    return report(rows, settings, out, fresh_process=fresh_process)


def report(rows: list[dict], settings: dict, out, *, fresh_process: bool = True) -> dict:
    """Fit the slopes and write ``scaling.json``, ``scaling.md`` and ``scaling.png`` to ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ns = [row["n"] for row in rows]
    threads = sorted({row["torch_threads"] for row in rows if "torch_threads" in row})
    omp = sorted({row.get("omp_num_threads", "unset") for row in rows if "seconds" in row})
    slopes = slopes_of(rows)
    table = format_table(rows, slopes)
    speech_lines = [f"N = {row['n']:,}: {row['speech']['real']:,} real FSDD recordings (takes 5-49) + "
                    f"{row['speech']['perturbed']:,} perturbed copies (at most {row['speech']['max_copies_per_clip']} "
                    f"items from one recording)" for row in rows if "speech" in row]
    perturbation = next((row["speech"]["perturbation"] for row in rows if "speech" in row), "")
    notes = (f"Timed: round {1 + settings['warmup_rounds']} of the fully linked graph (round 1 is a warm-up; "
             f"VAE first round {settings['first_epochs']} epochs instead of the benchmark's 60). Seconds are CPU "
             f"seconds of this process (user + system) per node, summed over the node's steps in the round; "
             f"'round wall s' is the trainer's wall clock (stretched by other programs on the machine). Each N in "
             f"{'a fresh process' if fresh_process else 'this process'}; peak RSS = ru_maxrss of that process "
             f"(data + features + graph + all rounds). Torch threads: {threads} "
             f"(OMP_NUM_THREADS={', '.join(omp)}).\n"
             f"Images: MNIST training split, N/10 per digit. Speech:\n  " + "\n  ".join(speech_lines)
             + f"\n  perturbation: {perturbation}")
    payload = {"settings": settings, "ns": sorted(ns), "rows": rows, "slopes": slopes,
               "linear_band": LINEAR_BAND, "parts": {name: label for name, _, label in PARTS},
               "fresh_process": fresh_process, "notes": notes}
    from serket.bench.reporting import write_json, write_text

    write_json(out / "scaling.json", payload)
    write_text(out / "scaling.md", f"# How the cost grows\n\n{table}\n\n{notes}\n")
    plot = plot_scaling(rows, slopes, out / "scaling.png") if any("seconds" in r for r in rows) else None
    return {**payload, "table": table, "plot": plot}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=list(DEFAULT_NS), help="item counts N (multiples of 10)")
    parser.add_argument("--out", default="benchmarks/results/scaling", help="folder for the table, plot and JSON")
    parser.add_argument("--data-dir", default=None, help="holds mnist.npz and fsdd/; unset: $SERKET_DATA_DIR")
    parser.add_argument("--first-epochs", type=int, default=None, help="VAE epochs in the warm-up round (15)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds allowed for one N (its process)")
    parser.add_argument("--in-process", action="store_true", help="measure every N in this process (no fresh one)")
    parser.add_argument("--replot", default=None, metavar="JSON",
                        help="write the table, plot and JSON again from an earlier scaling.json (no measuring)")
    parser.add_argument("--measure", type=int, default=None, help=argparse.SUPPRESS)  # the child's side
    parser.add_argument("--settings", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    settings = default_settings()
    if args.settings:
        settings.update(json.loads(args.settings))
    if args.first_epochs is not None:
        settings["first_epochs"] = args.first_epochs
    if args.measure is not None:
        Path(args.result).write_text(json.dumps(measure(args.measure, settings, data_dir=args.data_dir)))
        return None
    if args.replot:
        saved = json.loads(Path(args.replot).read_text())
        result = report(saved["rows"], saved["settings"], args.out, fresh_process=saved["fresh_process"])
    else:
        result = run_scaling(args.n, settings, args.out, fresh_process=not args.in_process, data_dir=args.data_dir,
                             timeout=args.timeout)
    print()
    print(result["table"])
    print()
    print(result["notes"])
    print(f"\nwritten: {Path(args.out) / 'scaling.json'}, scaling.md, scaling.png")
    return result


if __name__ == "__main__":
    main()
