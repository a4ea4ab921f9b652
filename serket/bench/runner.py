"""The shared machinery of the architecture benchmarks: configurations x seeds, tables, files.

A benchmark names its configurations (``"separate"``, ``"linked"``, ...), gives a function that
trains one configuration with one seed and returns its trainer history, and says which node's
metrics to report. :func:`run_benchmark` runs the grid (each run checkpointed under
``out/checkpoints/<config>-seed<seed>`` so that an interrupted benchmark resumes), prints the
table beside the published figures with the paired difference between two configurations,
and writes ``results.json``, ``results.md`` and ``accuracy_per_round.png``. Every file and the
first printed line say which data were used.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Callable

from serket.checkpoint import folder_problem
from serket.errors import ConfigError
from serket.module import resolve_device

from .reporting import format_mean_sd, plot_rounds, write_json, write_text
from .sweep import MemoryWatch, Task, execute, machine_cores

__all__ = ["run_benchmark", "benchmark_parser", "parse_benchmark_args", "BenchmarkParser", "peak_memory",
           "positive_int", "nonnegative_int", "restarts_int", "positive_float", "nonnegative_float",
           "device_name"]


def peak_memory() -> dict[str, float]:
    """Peak resident memory of this process (MiB) and, where CUDA is in use, peak GPU memory."""
    import resource

    import torch

    out = {"cpu_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["gpu_allocated"] = torch.cuda.max_memory_allocated() / 2**20
    return out


class BenchmarkParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line naming the option and the value (exit 2)
    and whose help shows every option's default."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")

    def add_argument(self, *args, **kwargs):
        # every option says what it does, so that --help can show its default beside it
        if not kwargs.get("help") and args and args[0].startswith("--"):
            raise ConfigError(f"option {args[0]} of {self.prog} has no help text")
        return super().add_argument(*args, **kwargs)


def _integer(text: str, least: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _integer(text, 1, "a positive integer")


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _integer(text, 0, "an integer >= 0")


def restarts_int(text: str) -> int:
    """argparse type: an integer >= -1 (-1 turns the feature off)."""
    return _integer(text, -1, "an integer >= -1 (-1: off)")


def _real(text: str, what: str, ok) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
    if not math.isfinite(value) or not ok(value):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    return _real(text, "a finite number > 0", lambda v: v > 0)


def nonnegative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    return _real(text, "a finite number >= 0", lambda v: v >= 0)


def device_name(text: str) -> str:
    """argparse type: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``, present on this machine;
    ``auto`` becomes ``cuda`` where CUDA is available, else ``cpu``."""
    try:
        return str(resolve_device(text))
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def benchmark_parser(prog: str, description: str, *, rounds: int, out: str) -> BenchmarkParser:
    """An argument parser with the options every architecture benchmark shares."""
    p = BenchmarkParser(prog=prog, description=description)
    p.add_argument("--seeds", type=nonnegative_int, nargs="+", default=[0, 1, 2, 3, 4],
                   help="random seeds, one run per configuration and seed")
    p.add_argument("--configs", nargs="+", default=["separate", "linked"], choices=["separate", "linked"],
                   help="the configurations to run")
    p.add_argument("--rounds", type=positive_int, default=rounds, help="training rounds per run")
    p.add_argument("--device", type=device_name, default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--data-dir", default=None,
                   help="the data folder holding mnist.npz and fsdd/recordings; unset: $SERKET_DATA_DIR")
    p.add_argument("--out", default=out, help="folder for results.json, results.md, PNG plots and checkpoints")
    p.add_argument("--quick", action="store_true",
                   help="a smoke-test setting (tiny data, 2 rounds); options given explicitly still apply")
    p.add_argument("--no-resume", action="store_true", help="ignore the checkpoints in --out and start afresh")
    p.add_argument("--workers", type=positive_int, default=machine_cores(),
                   help="runs carried out at once, each in its own process (default: the cores this machine "
                        "has; 1: one after another in this process)")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="torch threads per run, the same however many workers (a run's figures depend on "
                        "its thread count, never on the number of workers)")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="carry out the runs as tasks on the Ray cluster at ADDRESS ('local': start one here; "
                        "needs pip install 'neuro-serket[ray]'); --workers is then ignored")
    return p


def _given(parser: argparse.ArgumentParser, argv) -> set[str]:
    """The destinations of the options that ``argv`` sets explicitly."""
    saved = {action.dest: action.default for action in parser._actions}
    try:
        for action in parser._actions:
            action.default = argparse.SUPPRESS
        namespace, _ = parser.parse_known_args(argv)
    finally:
        for action in parser._actions:
            action.default = saved[action.dest]
    return set(vars(namespace))


def parse_benchmark_args(parser: argparse.ArgumentParser, argv=None, *,
                         presets: dict[str, dict] | None = None) -> argparse.Namespace:
    """Parse ``argv`` and check, before any training, what can be checked.

    ``presets`` maps a flag's destination (``"quick"``, ``"published"``) to the settings it
    stands for; a preset that is on sets each of its settings unless the command line gives
    that option explicitly (``--quick --rounds 3`` runs 3 rounds). Repeated seeds, a data
    folder that does not exist and an output folder that cannot be written are one-line
    errors (exit 2).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    given = _given(parser, argv)
    for flag, settings in (presets or {}).items():
        if getattr(args, flag, False):
            for name, value in settings.items():
                if name not in given:
                    setattr(args, name, value(args) if callable(value) else value)
    seeds = getattr(args, "seeds", None)
    if seeds is not None:
        repeated = sorted({s for s in seeds if seeds.count(s) > 1})
        if repeated:
            parser.error(f"argument --seeds: seed {repeated[0]} is given more than once "
                         f"({' '.join(map(str, seeds))})")
    if getattr(args, "data_dir", None) is not None and not Path(args.data_dir).expanduser().is_dir():
        parser.error(f"argument --data-dir: no such folder: {args.data_dir!r}")
    if getattr(args, "ray", None) is not None:
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            parser.error(f"argument --ray: Ray is not installed (pip install 'neuro-serket[ray]')")
    if getattr(args, "out", None) is not None:
        problem = folder_problem(args.out)
        if problem:
            parser.error(f"argument --out: {problem}")
    return args


def _node_seconds(history) -> dict[str, float]:
    """Seconds spent in each node, summed over per-round records."""
    total: dict[str, float] = {}
    for record in history:
        for name, seconds in record.get("node_seconds", {}).items():
            total[name] = total.get(name, 0.0) + seconds
    return total


def _node_memory(history) -> dict[str, tuple[float, float]]:
    """``{node: (largest peak resident memory after its work, largest growth of the peak it
    caused in one round)}`` over per-round records (MiB; records without memory are skipped)."""
    out: dict[str, tuple[float, float]] = {}
    for record in history:
        growth = record.get("node_peak_rss_growth_mib", {})
        for name, peak in record.get("node_peak_rss_mib", {}).items():
            old = out.get(name, (0.0, 0.0))
            out[name] = (max(old[0], peak), max(old[1], growth.get(name, 0.0)))
    return out


def _held_out_table(runs: dict, summary: dict, held_out_line: str | None) -> list[str]:
    """The held-out table's lines (accuracy, mean ± sd over seeds, per configuration and key);
    fills ``summary[config]["held_out"]``. No lines when no run has held-out figures."""
    keys: list[str] = []
    for rs in runs.values():
        for r in rs:
            keys += [k for k in r.get("held_out", {}) if k not in keys]
    if not keys:
        return []
    # each node's columns together: from everything given first, then from one observation alone
    nodes = list(dict.fromkeys(k.split(" (")[0] for k in keys))
    keys.sort(key=lambda k: (nodes.index(k.split(" (")[0]), " (" in k))
    lines = ["", f"held-out accuracy (%): {held_out_line or 'items never seen in training'}", "",
             "| configuration | " + " | ".join(keys) + " |", "|---" * (1 + len(keys)) + "|"]
    for config, rs in runs.items():
        figures = {k: [r["held_out"][k]["accuracy"] for r in rs if k in r.get("held_out", {})] for k in keys}
        summary[config]["held_out"] = {k: v for k, v in figures.items() if v}
        lines.append(f"| {config} | " + " | ".join(format_mean_sd(v) if v else "-" for v in figures.values()) + " |")
    return lines


def run_benchmark(*, title: str, data_line: str, configs: list[str], seeds: list[int],
                  run: Callable[[str, int, Path, bool], dict], nodes, out,
                  pieces: Callable[[str], list[str]] | None = None,
                  combine: Callable[[str, int, dict], dict] | None = None,
                  workers: int = 1, threads: int = 1, ray: str | None = None, prepare: Callable[[], None] | None = None,
                  published: dict | None = None, settings: dict | None = None,
                  compare: tuple[str, str] | None = None, extra_info: dict | None = None,
                  held_out_line: str | None = None) -> dict:
    """Run every configuration with every seed; returns ``{"summary", "runs", "results"}``.

    ``run(piece, seed, checkpoint_dir, draw)`` trains one piece with one seed and returns a dict
    with at least ``"history"`` (the trainer's per-round records) and, optionally, ``"held_out"``
    (:func:`~serket.bench.evaluation.held_out_figures`), which gets a second table under
    ``held_out_line`` (what the held-out items are), and ``"figures"``, a benchmark's own
    figures for the run (JSON), kept in ``runs[config][i]["figures"]``. ``draw`` is true for the last seed's runs,
    which write their own plots. It must be picklable, and so must what it returns: the runs are
    carried out by :func:`serket.bench.sweep.execute` in this process (``workers=1``), in
    ``workers`` processes, or on Ray (``ray``), each with ``threads`` torch threads, with the
    same figures every way.

    A piece is a configuration unless ``pieces(config)`` names the pieces a configuration is made
    of (parts that several configurations share are trained once per seed) and
    ``combine(config, seed, {piece: result})`` makes the configuration's result from them.
    What the last seed's runs return is kept in ``results[config][seed]``. ``prepare()``, if
    given, runs here once after the data line is printed and before any run.
    ``nodes`` names the node (or nodes) whose categories are scored; ``published`` maps a
    configuration to the published accuracy (%), or to ``{node: accuracy}`` for several nodes.
    """
    nodes = [nodes] if isinstance(nodes, str) else list(nodes)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    published = published or {}
    pieces = pieces or (lambda config: [config])
    combine = combine or (lambda config, seed, parts: parts[config])

    def reference(config, node):
        value = published.get(config)
        return value.get(node) if isinstance(value, dict) else value

    print(data_line, flush=True)
    if settings:
        print("settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()), flush=True)
    if prepare is not None:
        prepare()
    tasks: list[Task] = []
    # the fullest configuration first (benchmarks list theirs from the simplest): the longest
    # runs start first, so that no worker is left alone with one at the end
    for config in reversed(configs):
        for seed in seeds:
            for piece in pieces(config):
                task = Task(piece, seed, out / "checkpoints" / f"{piece}-seed{seed}", draw=seed == seeds[-1])
                if task not in tasks:
                    tasks.append(task)
    t_start = time.perf_counter()
    with MemoryWatch() as watch:
        done = execute(run, tasks, workers=workers, threads=threads, ray=ray)
    wall = time.perf_counter() - t_start
    runs: dict[str, list[dict]] = {c: [] for c in configs}
    results: dict[str, dict[int, dict]] = {c: {} for c in configs}
    for config in configs:
        for seed in seeds:
            parts = {piece: done[(piece, seed)] for piece in pieces(config)}
            result = combine(config, seed, parts)
            history = result["history"]
            runs[config].append({
                "seed": seed,
                "final": {n: history[-1]["metrics"][n] for n in nodes},
                "accuracy_per_round": {n: [h["metrics"][n]["accuracy"] for h in history] for n in nodes},
                "seconds": sum(h["seconds"] for h in history),
                "node_seconds": _node_seconds(history),
                "peak_rss_mib": max(p["peak_rss_mib"] for p in parts.values()),
                **({"held_out": result["held_out"]} if "held_out" in result else {}),
                **({"figures": result["figures"]} if "figures" in result else {}),
            })
            if seed == seeds[-1]:
                results[config][seed] = result

    header = "| configuration | " + " | ".join(
        f"{n} accuracy (%) | {n} ARI | {n} NMI | {n} published (%)" for n in nodes) + " | seconds per run |"
    lines = [data_line, "", header, "|---" * (1 + 4 * len(nodes) + 1) + "|"]
    summary: dict = {}
    for config, rs in runs.items():
        cells, summary[config] = [], {"seconds": [r["seconds"] for r in rs]}
        for n in nodes:
            acc = [r["final"][n]["accuracy"] for r in rs]
            ari = [r["final"][n]["ari"] for r in rs]
            nmi = [r["final"][n]["nmi"] for r in rs]
            summary[config][n] = {"accuracy": acc, "ari": ari, "nmi": nmi}
            ref = reference(config, n)
            cells.append(f"{format_mean_sd(acc)} | {format_mean_sd(ari, 1, 3)} | {format_mean_sd(nmi, 1, 3)} | "
                         f"{'-' if ref is None else ref}")
        lines.append(f"| {config} | " + " | ".join(cells) + f" | {format_mean_sd(summary[config]['seconds'], 1, 0)} |")
    if compare and all(c in runs for c in compare):
        a, b = compare
        cells = []
        for n in nodes:
            by_seed = {c: {r["seed"]: r["final"][n]["accuracy"] for r in runs[c]} for c in compare}
            diffs = [by_seed[b][s] - by_seed[a][s] for s in seeds]
            summary[f"{b}_minus_{a}"] = {**summary.get(f"{b}_minus_{a}", {}), n: diffs}
            ra, rb = reference(a, n), reference(b, n)
            cells.append(f"{format_mean_sd(diffs)} | | | {'-' if ra is None or rb is None else f'{rb - ra:.1f}'}")
        lines.append(f"| {b} − {a}, paired by seed | " + " | ".join(cells) + " | |")
    lines += _held_out_table(runs, summary, held_out_line)
    memory = peak_memory()
    where = _node_seconds([{"node_seconds": r["node_seconds"]} for rs in runs.values() for r in rs])
    total = sum(where.values())
    if total > 0:
        lines += ["", "where the time goes (all runs; a shared half counted once per row that shows it): "
                  + ", ".join(f"{n} {t:.0f} s ({100 * t / total:.0f}%)"
                              for n, t in sorted(where.items(), key=lambda kv: -kv[1]))]
    memory_by_node = _node_memory([h for rs in done.values() for h in rs["history"]])
    if memory_by_node:
        lines += ["", "where the memory goes (largest over runs: the run's process at its peak after the node's "
                  "work, and in brackets how far the node's work raised that peak in one round): "
                  + ", ".join(f"{n} {peak:.0f} MiB (+{growth:.0f})" for n, (peak, growth)
                              in sorted(memory_by_node.items(), key=lambda kv: -kv[1][0]))]
    lines += ["", f"seeds {seeds}; mean ± sd across seeds; accuracy after Hungarian matching of "
                  f"categories to the true digits (labels reach the metrics only).",
              f"wall-clock {wall:.0f} s for {len(tasks)} runs, " + (
                  f"as Ray tasks ({ray})" if ray else f"{workers} worker process(es)" if workers > 1
                  else "one after another in one process") + f", {threads} thread(s) each" + "; peak memory (resident) of one run "
              f"{max(r['peak_rss_mib'] for rs in runs.values() for r in rs):.0f} MiB; "
              + ("of this process (Ray's workers not counted) " if ray else "of the benchmark's processes together ")
              + f"{watch.peak_pss:.0f} MiB proportional ({watch.peak:.0f} MiB resident, which counts shared "
              f"libraries once per process; sampled every {watch.period} s); this process's own peak: "
              + ", ".join(f"{k} {v:.0f} MiB" for k, v in memory.items())]
    table = "\n".join(lines)
    print(table, flush=True)
    write_json(out / "results.json", {"title": title, "data": data_line, "settings": settings or {},
                                      "published": published, "summary": summary, "runs": runs,
                                      "peak_memory_mib": {**memory, "processes_together_pss": watch.peak_pss,
                                                          "processes_together_rss": watch.peak},
                                      "sweep": {"workers": workers, "threads": threads, "ray": ray, "runs": len(tasks),
                                                "wall_seconds": wall},
                                      **(extra_info or {})})
    write_text(out / "results.md", f"# {title}\n\n{table}\n")
    # one panel per scored node, one line per configuration, its published figure beside its last round
    curves = {n: {c: [[a * 100 for a in r["accuracy_per_round"][n]] for r in rs] for c, rs in runs.items()}
              for n in nodes}
    plot_rounds(curves, out / "accuracy_per_round.png", title=f"{title}: accuracy per round",
                references={n: {c: reference(c, n) for c in runs if reference(c, n) is not None} for n in nodes},
                ylim=(0, 100), panel_titles={n: f"{n}: clustering accuracy" for n in nodes})
    return {"summary": summary, "runs": runs, "results": results}
