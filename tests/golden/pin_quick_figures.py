"""Pin every benchmark's ``--quick`` figures in ``quick_figures.json`` (run from the repository root).

    .venv/bin/python tests/golden/pin_quick_figures.py [--check]

Runs ``serket bench NAME --quick`` for each benchmark in a temporary folder and writes, per
configuration and seed, each scored node's final accuracy, ARI and NMI and its accuracy per round.
The tests compare their own ``--quick`` runs with this file (``golden_figures`` in conftest.py):
a refactor must leave every figure identical. ``--check`` compares instead of writing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ("vae-gmm", "lda-asr", "neuro-serket", "multimodal")


def figures(results: dict) -> dict:
    """``{config: {seed: {"final", "accuracy_per_round"}}}`` from a benchmark's results.json."""
    return {config: {str(run["seed"]): {"final": run["final"], "accuracy_per_round": run["accuracy_per_round"]}
                     for run in runs} for config, runs in results["runs"].items()}


def main(argv=None) -> int:
    check = "--check" in (argv if argv is not None else sys.argv[1:])
    measured = {}
    with tempfile.TemporaryDirectory() as root:
        for name in BENCHMARKS:
            out = Path(root) / name
            subprocess.run([sys.executable, "-m", "serket.bench.cli", "bench", name, "--quick", "--out", str(out)],
                           check=True, stdout=subprocess.DEVNULL)
            measured[name] = figures(json.loads((out / "results.json").read_text()))
    path = HERE / "quick_figures.json"
    if check:
        pinned = json.loads(path.read_text())["figures"]
        differ = [name for name in BENCHMARKS if pinned[name] != measured[name]]
        print("identical" if not differ else f"differ: {differ}")
        return 1 if differ else 0
    document = json.loads(path.read_text()) if path.is_file() else {}
    document["figures"] = measured
    path.write_text(json.dumps(document, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
