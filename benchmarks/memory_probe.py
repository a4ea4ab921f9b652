"""Peak memory of one row of the neuro-serket benchmark, one seed, stage by stage.

Runs what ``serket bench neuro-serket`` runs for one configuration and one seed, in the same
order (speech and MNIST loading, feature extraction, the pairing, training, checkpoints,
held-out scoring), and reports for each stage the resident memory (RSS, MiB) when it ends
and its own peak. On Linux the peak is measured per stage: the kernel's high-water mark is
reset (``/proc/self/clear_refs``) before each stage, so a stage's peak is the most it held,
not the most held so far; elsewhere the peak is the process's peak so far
(``getrusage().ru_maxrss``). Training is broken down by node and round: every
``Graph.step`` and every checkpoint written is a stage.

    OMP_NUM_THREADS=1 SERKET_DATA_DIR=/work/shared/data \\
        python benchmarks/memory_probe.py --config full --seed 7

Options not given take the benchmark's defaults (``--per-class 270``, 4 rounds, ...); use
development seeds (not the table's 0-4). ``--json FILE`` writes the stages as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import serket  # noqa: F401  (before torch: serket sets the thread policy)
import torch

PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 2.0 ** 20
_RESET = Path("/proc/self/clear_refs")


def current_rss() -> float:
    """Resident memory now, MiB (from /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / MIB


def peak_rss() -> float:
    """Peak resident memory since the last reset (or since start), MiB."""
    scale = 1.0 if sys.platform == "darwin" else 1024.0  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / MIB


def reset_peak() -> bool:
    """Reset the kernel's high-water mark of this process (Linux >= 4.0); True if it was."""
    try:
        _RESET.write_text("5")
        return True
    except OSError:
        return False


class Probe:
    def __init__(self):
        self.stages: list[dict] = []
        self.resets = reset_peak()
        self.overall = peak_rss()
        self._start = None

    def begin(self):
        if self.resets:
            reset_peak()
        self._start = (current_rss(), time.perf_counter())

    def end(self, name: str):
        rss0, t0 = self._start
        peak = peak_rss()
        self.overall = max(self.overall, peak)
        stage = {"stage": name, "seconds": round(time.perf_counter() - t0, 2), "rss_before": round(rss0, 1),
                 "rss_after": round(current_rss(), 1), "peak": round(peak, 1),
                 "peak_over_start": round(peak - rss0, 1)}
        self.stages.append(stage)
        print(f"  {name:<34} {stage['seconds']:7.1f}s  rss {stage['rss_before']:7.1f} -> {stage['rss_after']:7.1f}"
              f"  peak {stage['peak']:7.1f} (+{stage['peak_over_start']:.1f})", flush=True)

    def stage(self, name: str, fn, *args, **kwargs):
        self.begin()
        out = fn(*args, **kwargs)
        self.end(name)
        return out


def state_digest(value, digest=None):
    """sha256 of a node's state (nested dicts, lists, tensors, numbers): what a result is made
    of. Integer tensors are hashed as int64, so that a change of storage type (say int16 word
    ids in place of int64) does not count as a change of result."""
    import hashlib

    top = digest is None
    digest = hashlib.sha256() if top else digest
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
        if not tensor.is_floating_point() and not tensor.is_complex() and tensor.dtype != torch.bool:
            tensor = tensor.long()
        tensor = tensor.contiguous().reshape(-1)
        digest.update(f"T{tuple(tensor.shape)}{tensor.dtype}".encode())
        if tensor.numel():
            digest.update(tensor.view(torch.uint8).numpy())
    elif isinstance(value, dict):
        for key in sorted(value, key=str):
            digest.update(f"K{key}".encode())
            state_digest(value[key], digest)
    elif isinstance(value, (list, tuple)):
        for item in value:
            state_digest(item, digest)
    else:
        digest.update(repr(value).encode())
    return digest.hexdigest() if top else None


def main(argv=None) -> dict:
    import serket.graphs.neuro_serket as ns
    from serket import training
    from serket.audio.features import speech_sequences
    from serket.bench.evaluation import held_out_figures
    from serket.datasets.mnist import load_mnist, load_mnist_subset
    from serket.datasets.pairing import held_out_images, pair_by_digit
    from serket.datasets.spoken_digits import load_speech
    from serket.graph import Graph

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="full", choices=list(ns.CONFIGURATIONS))
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--per-class", type=int, default=270)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--quick", action="store_true", help="the benchmark's --quick settings (a smoke run)")
    p.add_argument("--json", help="write the stages to this file")
    args = p.parse_args(argv)
    bench_args = ns.bench_parser().parse_args([])  # the benchmark's defaults
    settings = dict(vars(bench_args), per_class=args.per_class, rounds=args.rounds)
    if args.quick:
        settings.update({k: v for k, v in ns.PRESETS["quick"].items() if k != "seeds"})
    s = argparse.Namespace(**settings)
    data_dir = os.environ.get("SERKET_DATA_DIR")
    probe = Probe()
    print(f"memory probe: {args.config}, seed {args.seed}, {s.per_class} pairs per digit, {s.rounds} rounds, "
          f"{torch.get_num_threads()} thread(s); stage peaks {'reset per stage' if probe.resets else 'cumulative'}")
    print(f"  {'start (imports)':<34} rss {current_rss():.1f}  peak {peak_rss():.1f}")

    digits = probe.stage("load speech", load_speech, s.speech, data_dir=data_dir)
    probe.stage("load MNIST train (info)", load_mnist, "train", data_dir=data_dir, verbose=False)
    digits, held_out_digits = probe.stage("split speech", digits.split)
    sequences = probe.stage("features (training speech)", speech_sequences, digits.waveforms, digits.rate,
                            digits.speakers)
    held_out_sequences = probe.stage("features (held-out speech)", speech_sequences, held_out_digits.waveforms,
                                     held_out_digits.rate, held_out_digits.speakers)

    def pairs(seed):
        x, y = load_mnist_subset(per_class=s.per_class, seed=seed, data_dir=data_dir)
        images_idx, speech_idx = pair_by_digit(y, digits.labels, seed=seed)
        return x[images_idx], sequences.index(speech_idx), y[images_idx]

    images, utterances, labels = probe.stage("pairs (MNIST subset, speech index)", pairs, args.seed)

    # every node's update and every checkpoint is a stage of its own
    rounds = {"n": 0}
    step = Graph.step
    save = training.save_checkpoint

    def probed_step(graph, name, *a, **k):
        if name == graph_schedule[0][0]:
            rounds["n"] += 1
        probe.begin()
        out = step(graph, name, *a, **k)
        probe.end(f"round {rounds['n']} {name}")
        return out

    def probed_save(*a, **k):
        probe.begin()
        out = save(*a, **k)
        probe.end(f"round {rounds['n']} checkpoint")
        return out

    build = dict(
        n_units=s.units, mixture=s.mixture,
        vae={"epochs": s.epochs, "first_epochs": s.first_epochs, "hidden": tuple(s.hidden)},
        gmm={"sweeps": s.gmm_sweeps} if s.mixture == "gibbs" else {},
        asr={"n_best": s.n_best, "relearn_rate": 1.0, "discriminant": s.discriminant or None},
        lda={"sweeps": s.lda_sweeps, "tokens": 100, "chains": s.lda_chains},
        combiner={"evidence_weight": {"lda": s.evidence_weight}, "prior_exponent": {"lda": s.lda_prior_exponent},
                  "restarts": s.category_restarts if s.category_restarts >= 0 else None},
    )
    builder = ns.build_neuro_serket

    def probed_build(*a, **k):
        return probe.stage("build graph", builder, *a, **k)

    graph_schedule = [None]
    ns.build_neuro_serket = probed_build
    Graph.step = probed_step
    training.save_checkpoint = probed_save
    out_dir = Path(tempfile.mkdtemp(prefix="memory-probe-"))
    common = dict(rounds=s.rounds, seed=args.seed, resume=False, progress=False, **build)
    try:
        if args.config == "full":
            graph_schedule[0] = [n for n in ns.SCHEDULE]
            rounds["n"] = 0
            result = ns.run_neuro_serket(images, utterances, labels, configuration="full",
                                         checkpoint_dir=out_dir / "full", **common)
            graphs, nodes = result["graph"], result["graph"].nodes
            history = result["history"]
        else:
            parts = []
            for i, side in enumerate(("images", "speech")):
                schedule = [n for n in ns.SCHEDULE if n in (("images", "vae", "gmm") if side == "images"
                                                            else ("speech", "asr", "words", "lda"))]
                graph_schedule[0] = schedule
                rounds["n"] = 0
                print(f"  -- {side} half", flush=True)
                parts.append(ns.run_neuro_serket(images if side == "images" else None,
                                                 utterances if side == "speech" else None, labels,
                                                 configuration=args.config, checkpoint_dir=out_dir / side, **common))
            graphs = [part["graph"] for part in parts]
            history = [part["history"][-1] for part in parts]
            nodes = {**graphs[0].nodes, **graphs[1].nodes}
    finally:
        ns.build_neuro_serket = builder
        Graph.step = step
        training.save_checkpoint = save
        shutil.rmtree(out_dir, ignore_errors=True)
    last = history[-1:] if isinstance(history[-1], dict) and "round" in history[-1] and args.config == "full" else history
    for record in last:
        for node, m in record["metrics"].items():
            print(f"  trained {node:<24} acc {m['accuracy'] * 100:.2f} ari {m['ari']:.4f}")

    def scored():
        images_h, speech_idx, held_out_labels = held_out_images(held_out_digits.labels, seed=args.seed,
                                                                data_dir=data_dir)
        utterances_h = held_out_sequences.index(speech_idx)
        subsets = {"both": {"images": images_h, "speech": utterances_h}, "images only": {"images": images_h},
                   "speech only": {"speech": utterances_h}}
        trained = {name: node.predict() for name, node in nodes.items() if name in ("gmm", "lda", "category")}
        return held_out_figures(graphs, subsets, held_out_labels, trained, labels)

    graph_list = graphs if isinstance(graphs, list) else [graphs]
    digests = {name: state_digest(node.state_dict()) for g in graph_list for name, node in g.nodes.items()
               if name not in ("images", "speech")}
    for name, value in digests.items():
        print(f"  state digest {name:<10} {value[:16]}")
    figures = probe.stage("held-out scoring", scored)
    for key, m in sorted(figures.items()):
        print(f"  held-out {key:<22} acc {m['accuracy'] * 100:.1f}")
    print(f"overall peak RSS {probe.overall:.1f} MiB")
    report = {"config": args.config, "seed": args.seed, "settings": {k: v for k, v in settings.items()},
              "overall_peak_mib": round(probe.overall, 1), "stages": probe.stages,
              "held_out": figures, "state_digests": digests}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))
    return report


if __name__ == "__main__":
    main()
