"""Two views of one image tied by a shared category: the tail-to-tail combiner's defaults at work.

The top and the bottom half of 1,000 MNIST training digits (100 per digit) are two views of the
same items. Each view is its own VAE -> GMM (head-to-tail on the latent); tied, the two GMMs
share one category through ``graph.tail_to_tail("category", ["gmm_top.c", "gmm_bottom.c"])``
with the combiner's defaults; separate, they never meet. Trained alternately; the score is each
GMM's clustering accuracy (Hungarian matching) over seeds.

    .venv/bin/python benchmarks/two_view_tie.py --out results/two_view_tie

prints a table, writes ``results.json`` and ``accuracy.png`` (bars per configuration and GMM)
under ``--out``. The configurations:

* ``separate`` — no tie: each view alone;
* ``tied`` — the combiner's defaults: the joint fit of the shared category (EM over both GMMs
  from their consensus, the last fit and fresh starts, the likeliest kept);
* ``multiplied`` — ``restarts=None``: the combiner only aligns and multiplies the posteriors,
  the default before the joint fit was (the ``--configs`` option picks among them).

Measured with the defaults below (3 rounds; 40 VAE epochs in the first, 10 after; 20 Gibbs
sweeps a round), GMM on the top / bottom halves, seeds 0, 1, 2:

==============  ======================  ======================
configuration   top (%)                 bottom (%)
==============  ======================  ======================
separate        43.8 +- 6.3             49.2 +- 2.1
tied            60.6 +- 4.7             60.6 +- 4.7
multiplied      49.8 +- 6.0             55.0 +- 4.4
==============  ======================  ======================

Issue 11 recorded, before the joint fit became the default, 45.1 +- 6.5 / 48.7 +- 8.9 tied
with the default then (messages multiplied), 60.9 +- 3.5 with ``restarts=10``, 43.9 / 45.7
separate (3 seeds; its rounds and epochs were not recorded).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import serket  # noqa: F401  (first: sets the thread policy before torch loads)
import torch

from serket.connections import Observation
from serket.datasets import load_mnist_subset
from serket.graph import Graph
from serket.modules.gmm import GMM
from serket.modules.vae import VAE
from serket.training import AlternateTrainer

VIEWS = ("top", "bottom")
CONFIGURATIONS = {
    "separate": None,  # no tail-to-tail connection
    "tied": {},  # the combiner's defaults
    "multiplied": {"restarts": None},  # messages aligned and multiplied only, no joint fit
}
# the training each view gets (one VAE -> GMM on 392 pixels), as in the VAE+GMM floor test
DEFAULTS = {"rounds": 3, "epochs": 10, "first_epochs": 40, "batch_size": 100, "sweeps": 20}


def split_views(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """(N, 784) digits as their top and bottom halves, (N, 392) each (rows 0-13 and 14-27)."""
    half = images.shape[1] // 2
    return {"top": images[:, :half], "bottom": images[:, half:]}


def build_two_view(images: torch.Tensor, *, tie: dict | None, seed: int = 0, epochs: int = 10,
                   first_epochs: int = 40, batch_size: int = 100, sweeps: int = 20, device="cpu") -> Graph:
    """Two VAE -> GMM halves over the two views of ``images``; ``tie``: options of the
    tail-to-tail connection between the GMMs (``{}``: its defaults), or None for no tie."""
    graph = Graph(seed=seed, device=device)
    for view, pixels in split_views(images).items():
        graph.add(Observation(view, pixels))
        graph.add(VAE(f"vae_{view}", x_dim=pixels.shape[1], z_dim=10, epochs=epochs, first_epochs=first_epochs,
                      batch_size=batch_size, seed=seed))
        graph.add(GMM(f"gmm_{view}", n_clusters=10, dim=10, sweeps=sweeps, seed=seed))
        graph.observe(view, f"vae_{view}.x")
        graph.head_to_tail(upper=f"gmm_{view}.x", lower=f"vae_{view}.z")
    if tie is not None:
        graph.tail_to_tail("category", [f"gmm_{view}.c" for view in VIEWS], **tie)
    graph.validate()
    return graph


def run_two_view(configuration: str, seed: int, *, per_class: int = 100, rounds: int = 3, progress: bool = False,
                 **training) -> dict[str, float]:
    """Train one configuration on one seed's digits; each GMM's final accuracy."""
    images, labels = load_mnist_subset(per_class=per_class, seed=seed, verbose=False)
    graph = build_two_view(images, tie=CONFIGURATIONS[configuration], seed=seed, **training)
    history = AlternateTrainer(graph, rounds=rounds, labels=labels, progress=progress).run()
    return {f"gmm_{view}": history[-1]["metrics"][f"gmm_{view}"]["accuracy"] for view in VIEWS}


def _mean_std(values: list[float]) -> tuple[float, float]:
    tensor = torch.tensor(values, dtype=torch.float64)
    return float(tensor.mean()), float(tensor.std()) if len(values) > 1 else 0.0


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = list(summary)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    width = 0.38
    for i, view in enumerate(VIEWS):
        means = [100 * summary[c][f"gmm_{view}"]["mean"] for c in configs]
        stds = [100 * summary[c][f"gmm_{view}"]["std"] for c in configs]
        bars = ax.bar([x + (i - 0.5) * width for x in range(len(configs))], means, width, yerr=stds, capsize=4,
                      label=f"GMM on the {view} halves")
        ax.bar_label(bars, fmt="%.1f", padding=2, fontsize=8)
    ax.axhline(58, color="grey", linestyle="--", linewidth=1, label="goal: 58")
    ax.set_xticks(range(len(configs)), configs)
    ax.set_ylabel("clustering accuracy (%), mean and sd over seeds")
    ax.set_ylim(0, 100)
    ax.set_title("Two views of MNIST digits, VAE -> GMM each: tied or not")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--configs", nargs="+", choices=list(CONFIGURATIONS), default=list(CONFIGURATIONS))
    p.add_argument("--per-class", type=int, default=100, help="MNIST training digits per class")
    for key, value in DEFAULTS.items():
        p.add_argument(f"--{key.replace('_', '-')}", type=int, default=value)
    p.add_argument("--out", default="results/two_view_tie")
    args = p.parse_args(argv)
    training = {k: getattr(args, k) for k in DEFAULTS}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, dict[int, dict[str, float]]] = {}
    for config in args.configs:
        for seed in args.seeds:
            t0 = time.perf_counter()
            runs.setdefault(config, {})[seed] = run_two_view(config, seed, per_class=args.per_class, **training)
            scores = "  ".join(f"{k} {100 * v:.1f}" for k, v in runs[config][seed].items())
            print(f"{config:<10} seed {seed}: {scores}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    summary = {config: {node: dict(zip(("mean", "std"), _mean_std([by_seed[s][node] for s in args.seeds])))
                        for node in (f"gmm_{view}" for view in VIEWS)}
               for config, by_seed in runs.items()}
    print(f"\n{len(args.seeds)} seeds {args.seeds}, {args.per_class} digits per class, {training}")
    print("| configuration | GMM top (%) | GMM bottom (%) |\n|---|---|---|")
    for config, nodes in summary.items():
        cells = " | ".join(f"{100 * nodes[n]['mean']:.1f} +- {100 * nodes[n]['std']:.1f}" for n in nodes)
        print(f"| {config} | {cells} |")
    result = {"settings": {"seeds": args.seeds, "per_class": args.per_class, **training},
              "runs": {c: {str(s): v for s, v in by_seed.items()} for c, by_seed in runs.items()},
              "summary": summary}
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(summary, out / "accuracy.png")
    print(f"wrote {out / 'results.json'} and {out / 'accuracy.png'}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
