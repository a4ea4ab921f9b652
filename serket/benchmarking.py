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

from pathlib import Path
from typing import Callable

from .reporting import format_mean_sd, plot_rounds, write_json, write_text

__all__ = ["run_benchmark", "benchmark_parser", "peak_memory"]


def peak_memory() -> dict[str, float]:
    """Peak resident memory of this process (MiB) and, where CUDA is in use, peak GPU memory."""
    import resource

    import torch

    out = {"cpu_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["gpu_allocated"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def benchmark_parser(prog: str, description: str, *, rounds: int):
    """An argument parser with the options every architecture benchmark shares."""
    import argparse

    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--configs", nargs="+", default=["separate", "linked"], choices=["separate", "linked"])
    p.add_argument("--rounds", type=int, default=rounds)
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--data-dir", default=None, help="the data folder (default $SERKET_DATA_DIR)")
    p.add_argument("--quick", action="store_true", help="a smoke-test setting: tiny data, 2 rounds")
    p.add_argument("--no-resume", action="store_true", help="ignore the checkpoints in --out")
    return p


def _node_seconds(history) -> dict[str, float]:
    """Seconds spent in each node, summed over per-round records."""
    total: dict[str, float] = {}
    for record in history:
        for name, seconds in record.get("node_seconds", {}).items():
            total[name] = total.get(name, 0.0) + seconds
    return total


def run_benchmark(*, title: str, data_line: str, configs: list[str], seeds: list[int],
                  run_one: Callable[[str, int, Path], dict], nodes, out,
                  published: dict | None = None, settings: dict | None = None,
                  compare: tuple[str, str] | None = None, extra_info: dict | None = None) -> dict:
    """Run every configuration with every seed; returns ``{"summary", "runs", "results"}``.

    ``run_one(config, seed, checkpoint_dir)`` returns a dict with at least ``"history"`` (the
    trainer's per-round records); whatever else the last seed's runs return is kept in
    ``results`` for plots (earlier seeds' graphs are released, to bound memory).
    ``nodes`` names the node (or nodes) whose categories are scored; ``published`` maps a
    configuration to the published accuracy (%), or to ``{node: accuracy}`` for several nodes.
    """
    nodes = [nodes] if isinstance(nodes, str) else list(nodes)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    published = published or {}

    def reference(config, node):
        value = published.get(config)
        return value.get(node) if isinstance(value, dict) else value

    print(data_line, flush=True)
    if settings:
        print("settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()), flush=True)
    runs: dict[str, list[dict]] = {c: [] for c in configs}
    results: dict[str, dict[int, dict]] = {c: {} for c in configs}
    for config in configs:
        for seed in seeds:
            result = run_one(config, seed, out / "checkpoints" / f"{config}-seed{seed}")
            history = result["history"]
            runs[config].append({
                "seed": seed,
                "final": {n: history[-1]["metrics"][n] for n in nodes},
                "accuracy_per_round": {n: [h["metrics"][n]["accuracy"] for h in history] for n in nodes},
                "seconds": sum(h["seconds"] for h in history),
                "node_seconds": _node_seconds(history),
            })
            if seed == seeds[-1]:  # plots read the last seed's runs; earlier graphs are let go
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
    memory = peak_memory()
    where = _node_seconds([{"node_seconds": r["node_seconds"]} for rs in runs.values() for r in rs])
    total = sum(where.values())
    if total > 0:
        lines += ["", "where the time goes (all runs; a shared half counted once per row that shows it): "
                  + ", ".join(f"{n} {t:.0f} s ({100 * t / total:.0f}%)"
                              for n, t in sorted(where.items(), key=lambda kv: -kv[1]))]
    lines += ["", f"seeds {seeds}; mean ± sd across seeds; accuracy after Hungarian matching of "
                  f"categories to the true digits (labels reach the metrics only).",
              "peak memory of the whole benchmark process: " + ", ".join(f"{k} {v:.0f} MiB" for k, v in memory.items())]
    table = "\n".join(lines)
    print(table, flush=True)
    write_json(out / "results.json", {"title": title, "data": data_line, "settings": settings or {},
                                      "published": published, "summary": summary, "runs": runs,
                                      "peak_memory_mib": memory,
                                      **(extra_info or {})})
    write_text(out / "results.md", f"# {title}\n\n{table}\n")
    curves = {(c if len(nodes) == 1 else f"{c}: {n}"): [[a * 100 for a in r["accuracy_per_round"][n]] for r in rs]
              for c, rs in runs.items() for n in nodes}
    plot_rounds(curves, out / "accuracy_per_round.png", title=f"{title}: accuracy per round",
                references={f"published {c}" + ("" if len(nodes) == 1 else f" {n}"): reference(c, n)
                            for c in runs for n in nodes if reference(c, n) is not None})
    return {"summary": summary, "runs": runs, "results": results}
