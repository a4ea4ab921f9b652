"""The long fuzz: many random small valid graphs, each trained, checked and resumed.

The graphs and the checks are those of ``tests/test_fuzz.py`` (``tests/random_graphs.py``):
every module (VAE, GMM, LDA, Recognizer, MVAE, JMVAE, MixturePrior) and connection kind (data,
head-to-tail with feedback on and off, tail-to-tail with two or three members and restarts,
head-to-head SIR and product of experts), alternate and joint training. For each graph: two
rounds of training with every published message checked for NaN and infinities after each
round; one round with a checkpoint, then a fresh copy resumed to two rounds, whose final messages
and predictions must equal the uninterrupted run's exactly.

Usage::

    python benchmarks/fuzz_graphs.py [--graphs 1000] [--seed 0] [--json counts.json]
    python benchmarks/fuzz_graphs.py --replay SEED [SEED ...]     # one graph each, in full

Prints a line per failing graph as it happens, progress every ``--every`` graphs, and at the
end the counts: graphs tried and finished, exceptions by type (one example each), non-finite
messages and resume mismatches. The exit status is 1 when any graph failed.
"""

import argparse
import json
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import serket  # noqa: F401  (first: sets the thread policy before torch loads)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from random_graphs import REQUIRED_TAGS, check_graph, graph_from_seed, graph_seed, random_graph  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--graphs", type=int, default=1000, help="random graphs to try (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the run: graph i is drawn from it and i")
    p.add_argument("--json", type=Path, default=None, help="write the counts here as JSON")
    p.add_argument("--every", type=int, default=10, help="print progress every this many graphs")
    p.add_argument("--replay", type=int, nargs="+", default=None, metavar="SEED",
                   help="check only the graphs of these graph seeds (as failure reports name them), in full")
    args = p.parse_args(argv)
    if args.graphs < 0 or args.every < 1:
        p.error("--graphs must be >= 0 and --every >= 1")
    return args


def summarise(results, tags: Counter, seconds: float, args) -> dict:
    exceptions: dict[str, dict] = {}
    for r in results:
        if r.exception:
            kind, message, _ = r.exception
            entry = exceptions.setdefault(kind, {"count": 0, "example": message, "stage": r.stage,
                                                 "graph_seed": r.seed, "graph": r.description, "seeds": []})
            entry["count"] += 1
            entry["seeds"].append(r.seed)
    nonfinite = [r for r in results if r.nonfinite]
    mismatched = [r for r in results if r.mismatches]
    return {
        "seed": args.seed,
        "graphs_tried": len(results),
        "finished": sum(r.finished for r in results),
        "clean": sum(r.ok for r in results),
        "exceptions": dict(sorted(exceptions.items(), key=lambda kv: -kv[1]["count"])),
        "nonfinite_messages": sum(len(r.nonfinite) for r in results),
        "graphs_with_nonfinite_messages": len(nonfinite),
        "nonfinite_example": None if not nonfinite else {"graph_seed": nonfinite[0].seed,
                                                          "graph": nonfinite[0].description,
                                                          "messages": nonfinite[0].nonfinite[:5]},
        "resume_mismatches": len(mismatched),
        "resume_mismatch_example": None if not mismatched else {"graph_seed": mismatched[0].seed,
                                                                "graph": mismatched[0].description,
                                                                "differences": mismatched[0].mismatches[:5]},
        "failed_graph_seeds": [r.seed for r in results if not r.ok],
        "coverage": dict(sorted(tags.items())),
        "coverage_missing": sorted(REQUIRED_TAGS - set(tags)),
        "seconds": round(seconds, 1),
        "slowest": sorted(((round(r.seconds, 2), r.seed) for r in results), reverse=True)[:5],
    }


def print_summary(counts: dict) -> None:
    print()
    print(f"graphs tried:   {counts['graphs_tried']}   ({counts['seconds']:.0f} s)")
    print(f"finished:       {counts['finished']}   (no exception; clean: {counts['clean']})")
    if counts["exceptions"]:
        print("exceptions by type:")
        for kind, e in counts["exceptions"].items():
            print(f"  {kind}: {e['count']}  e.g. graph seed {e['graph_seed']}, while {e['stage']}: {e['example'][:300]}")
    else:
        print("exceptions:     0")
    print(f"non-finite messages: {counts['nonfinite_messages']} in {counts['graphs_with_nonfinite_messages']} graphs")
    if counts["nonfinite_example"]:
        print(f"  e.g. graph seed {counts['nonfinite_example']['graph_seed']}: {counts['nonfinite_example']['messages'][0]}")
    print(f"resume mismatches:   {counts['resume_mismatches']} graphs")
    if counts["resume_mismatch_example"]:
        example = counts["resume_mismatch_example"]
        print(f"  e.g. graph seed {example['graph_seed']}: {', '.join(example['differences'])}")
    if counts["coverage_missing"] and counts["graphs_tried"] >= 50:
        print(f"not covered by any graph: {', '.join(counts['coverage_missing'])}")
    if counts["failed_graph_seeds"]:
        print("replay a failure: python benchmarks/fuzz_graphs.py --replay "
              + " ".join(map(str, counts["failed_graph_seeds"][:5])))


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.replay:
        graphs = [graph_from_seed(s) for s in args.replay]
    else:
        graphs = (random_graph(random.Random(graph_seed(args.seed, i))) for i in range(args.graphs))
    total = len(args.replay) if args.replay else args.graphs
    results, tags = [], Counter()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="serket-fuzz-") as workdir:
        try:
            for i, graph in enumerate(graphs, 1):
                tags.update(graph.tags)
                result = check_graph(graph, workdir)
                results.append(result)
                if args.replay:
                    print(graph.description)
                    print("ok" if result.ok else result.report(), flush=True)
                elif not result.ok:
                    what = (f"{result.exception[0]} while {result.stage}: {result.exception[1][:200]}" if result.exception
                            else f"{len(result.nonfinite)} non-finite messages" if result.nonfinite
                            else f"resume mismatch: {', '.join(result.mismatches[:3])}")
                    print(f"[{i}/{total}] FAILED graph seed {result.seed}: {what}", flush=True)
                if not args.replay and (i % args.every == 0 or i == total):
                    bad = sum(not r.ok for r in results)
                    elapsed = time.perf_counter() - t0
                    print(f"[{i}/{total}] {bad} failed so far, {elapsed:.0f} s ({elapsed / i:.2f} s a graph)", flush=True)
        except KeyboardInterrupt:
            print("interrupted: the counts so far", flush=True)
    counts = summarise(results, tags, time.perf_counter() - t0, args)
    print_summary(counts)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(counts, indent=2) + "\n")
        print(f"counts written to {args.json}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
