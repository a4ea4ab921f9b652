"""A benchmark's table one run after another against in parallel, side by side on one machine.

    .venv/bin/python benchmarks/bench_sweep.py [--benchmark neuro-serket] [--out DIR] [-- options...]

Runs ``serket bench NAME`` (with any options after ``--``) three ways, one after the other:

1. ``--workers 1 --threads C``: one run after another in one process with all C cores' threads,
   as the benchmarks ran before they had workers;
2. the default: as many worker processes as cores, one thread per run;
3. ``--workers 1`` with one thread per run, on the first seed only: the same runs as in 2,
   one after another, to show that the figures do not depend on the number of workers.

Prints each way's wall-clock, the speed-up of 2 over 1 (a ratio measured in one sitting), the
peak memory of one run and of all processes together, and whether 3's figures equal 2's, figure
for figure; writes ``sweep_speed.json`` under ``--out``. Figures of 1 may differ from 2 in
places: a run with two threads sums in another order (see :mod:`serket.bench.sweep`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import serket  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)
from serket.bench.reporting import write_json
from serket.bench.sweep import machine_cores


def figures(results: dict) -> dict:
    """``{config: {seed: (final metrics, accuracy per round, held-out figures)}}``."""
    return {config: {run["seed"]: (run["final"], run["accuracy_per_round"], run.get("held_out"))
                     for run in runs} for config, runs in results["runs"].items()}


def run(name: str, out: Path, options: list[str]) -> dict:
    command = [sys.executable, "-m", "serket.bench.cli", "bench", name, "--out", str(out), "--no-resume", *options]
    print("$ " + " ".join(command[1:]), flush=True)
    t0 = time.perf_counter()
    subprocess.run(command, check=True)
    wall = time.perf_counter() - t0
    results = json.loads((out / "results.json").read_text())
    one_run = max(r["peak_rss_mib"] for rs in results["runs"].values() for r in rs)
    return {"command": " ".join(command[1:]), "wall_seconds": wall, "peak_one_run_mib": one_run,
            "peak_together_pss_mib": results["peak_memory_mib"]["processes_together_pss"],
            "peak_together_rss_mib": results["peak_memory_mib"]["processes_together_rss"],
            "figures": figures(results)}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--benchmark", default="neuro-serket", help="the benchmark, as `serket list` names it")
    p.add_argument("--out", default="benchmarks/results/sweep", help="folder for the three runs and the JSON")
    p.add_argument("--skip-check", action="store_true", help="leave out the third way (the figure check)")
    args = p.parse_args(argv)
    out, cores = Path(args.out), machine_cores()
    ways = {"sequential": run(args.benchmark, out / "sequential", ["--workers", "1", "--threads", str(cores), *extra]),
            "parallel": run(args.benchmark, out / "parallel", extra)}
    report = {"benchmark": args.benchmark, "options": extra, "cores": cores,
              "speedup": ways["sequential"]["wall_seconds"] / ways["parallel"]["wall_seconds"]}
    lines = [f"{args.benchmark} {' '.join(extra)} on {cores} cores:"]
    for way, r in ways.items():
        lines.append(f"  {way:>10}: {r['wall_seconds']:.0f} s, one run at most {r['peak_one_run_mib']:.0f} MiB, "
                     f"all processes together {r['peak_together_pss_mib']:.0f} MiB proportional "
                     f"({r['peak_together_rss_mib']:.0f} MiB resident)")
    lines.append(f"  speed-up of parallel over sequential: {report['speedup']:.2f}x")
    if not args.skip_check:
        first = ways["parallel"]["figures"]
        seed = min(s for by_seed in first.values() for s in by_seed)
        check = run(args.benchmark, out / "one-thread", [*extra, "--workers", "1", "--seeds", str(seed)])
        same = all(check["figures"][c][seed] == first[c][seed] for c in check["figures"])
        report["same_figures_one_process_one_thread"] = same
        report["checked_seed"] = seed
        ways["one-thread"] = check
        lines.append(f"  seed {seed} one after another with one thread per run: figures "
                     + ("identical to the parallel sweep's" if same else "DIFFER from the parallel sweep's"))
    differ = [c for c in ways["parallel"]["figures"] for s in ways["parallel"]["figures"][c]
              if ways["sequential"]["figures"][c][s] != ways["parallel"]["figures"][c][s]]
    report["sequential_two_threads_differs_in"] = differ
    lines.append(f"  sequential with {cores} threads per run against parallel with one: "
                 + (f"{len(differ)} run(s) differ" if differ else "identical figures"))
    report["ways"] = {w: {k: v for k, v in r.items() if k != "figures"} for w, r in ways.items()}
    write_json(out / "sweep_speed.json", report)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
