"""VAE + GMM: a VAE learns a latent space of images; a GMM clusters that latent space.

Head-to-tail connection on the VAE's latent ``z``: the VAE sends its posterior means up to the
GMM; the GMM sends back, for each image, a Gaussian prior centred on the mean of the cluster the
image currently belongs to, so the VAE's latent space gathers around the clusters. With
``linked=False`` the message back is switched off: the VAE learns alone and the GMM clusters
its latent ("every module separate" in the Neuro-SERKET table).

Built only from serket's public API.
"""

from __future__ import annotations

import torch

from serket.connections import Observation
from serket.graph import Graph
from serket.modules.gmm import GMM
from serket.modules.vae import VAE
from serket.training import AlternateTrainer

__all__ = ["build_vae_gmm", "run_vae_gmm"]


def build_vae_gmm(images: torch.Tensor, *, linked: bool = True, n_clusters: int = 10, z_dim: int = 10,
                  seed: int = 0, device="cpu", vae: dict | None = None, gmm: dict | None = None) -> Graph:
    """The VAE+GMM graph on ``images`` ((N, D) floats in [0, 1]).

    ``vae`` and ``gmm`` are extra keyword arguments for the two modules (epochs, sweeps, ...).
    """
    graph = Graph(seed=seed, device=device)
    graph.add(Observation("images", images))
    graph.add(VAE("vae", x_dim=images.reshape(images.shape[0], -1).shape[1], z_dim=z_dim, seed=seed,
                  **(vae or {})))
    graph.add(GMM("gmm", n_clusters=n_clusters, dim=z_dim, seed=seed, **(gmm or {})))
    graph.observe("images", "vae.x")
    graph.head_to_tail(upper="gmm.x", lower="vae.z", feedback=linked)
    graph.validate()
    return graph


def run_vae_gmm(images, labels, *, rounds: int, linked: bool = True, seed: int = 0, device="cpu",
                checkpoint_dir=None, resume: bool = True, progress: bool = True, prefix: str = "",
                **build) -> dict:
    """Build and train the graph; returns the history and the final GMM metrics."""
    graph = build_vae_gmm(images, linked=linked, seed=seed, device=device, **build)
    trainer = AlternateTrainer(graph, rounds=rounds, labels=labels, checkpoint_dir=checkpoint_dir,
                               resume=resume, progress=progress, prefix=prefix)
    history = trainer.run()
    return {"graph": graph, "history": history, "final": history[-1]["metrics"]["gmm"] if history else None}


# --- the benchmark: `serket bench vae-gmm` -----------------------------------------------------
PUBLISHED = {"separate": 63.7, "linked": 66.7}  # Taniguchi et al. (2020), GMM accuracy on images, %


def _parser():
    import argparse

    p = argparse.ArgumentParser(prog="serket bench vae-gmm",
                                description="VAE+GMM on MNIST: separate vs linked, several seeds.")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--configs", nargs="+", default=["separate", "linked"], choices=["separate", "linked"])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--epochs", type=int, default=20, help="VAE epochs per round after the first")
    p.add_argument("--first-epochs", type=int, default=100, help="VAE epochs in the first round")
    p.add_argument("--sweeps", type=int, default=50, help="GMM Gibbs sweeps per round")
    p.add_argument("--per-class", type=int, default=300, help="MNIST training images per digit")
    p.add_argument("--hidden", type=int, nargs="+", default=[512, 256],
                   help="VAE hidden widths (default 512 256; the published run used 128)")
    p.add_argument("--kl-weight", type=float, default=1.0, help="VAE KL weight")
    p.add_argument("--prior-variance", default="unit", choices=["unit", "cluster"])
    p.add_argument("--restart", default="warm", choices=["warm", "reinit"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--data-dir", default=None, help="folder holding mnist.npz (default $SERKET_DATA_DIR)")
    p.add_argument("--out", default="results/vae_gmm", help="folder for JSON, Markdown, PNG and checkpoints")
    p.add_argument("--published", action="store_true",
                   help="the published setting: 40 rounds, 200 VAE epochs per round")
    p.add_argument("--quick", action="store_true", help="a smoke-test setting (tiny data, 2 rounds)")
    p.add_argument("--no-resume", action="store_true", help="ignore checkpoints in --out")
    return p


def bench_main(argv=None) -> dict:
    from pathlib import Path

    from serket.data import load_mnist, load_mnist_subset
    from serket.metrics import confusion_matrix
    from serket.reporting import format_mean_sd, plot_confusion, plot_latent, plot_rounds, write_json, write_text

    args = _parser().parse_args(argv)
    if args.published:
        args.rounds, args.epochs, args.first_epochs = 40, 200, 200
    if args.quick:
        args.per_class, args.rounds, args.epochs, args.first_epochs, args.sweeps = 20, 2, 2, 3, 5
        args.seeds = args.seeds[:2]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _, _, info = load_mnist("train", data_dir=args.data_dir, verbose=False)
    data_line = f"data: MNIST train ({info['source']}: {info['path']}), {args.per_class} per digit — real images"
    print(data_line, flush=True)
    settings = {k: v for k, v in vars(args).items()}
    print("settings: " + ", ".join(f"{k}={v}" for k, v in settings.items() if k not in ("out",)), flush=True)

    runs: dict[str, list[dict]] = {c: [] for c in args.configs}
    last_graph = {}
    for config in args.configs:
        for seed in args.seeds:
            x, y = load_mnist_subset(per_class=args.per_class, seed=seed, data_dir=args.data_dir)
            result = run_vae_gmm(
                x, y, rounds=args.rounds, linked=(config == "linked"), seed=seed, device=args.device,
                checkpoint_dir=out / "checkpoints" / f"{config}-seed{seed}", resume=not args.no_resume,
                prefix=f"[{config} seed {seed}] ",
                vae={"epochs": args.epochs, "first_epochs": args.first_epochs, "restart": args.restart,
                     "hidden": tuple(args.hidden), "kl_weight": args.kl_weight},
                gmm={"sweeps": args.sweeps, "prior_variance": args.prior_variance},
            )
            history = result["history"]
            runs[config].append({
                "seed": seed,
                "final": history[-1]["metrics"]["gmm"],
                "accuracy_per_round": [h["metrics"]["gmm"]["accuracy"] for h in history],
                "seconds": sum(h["seconds"] for h in history),
            })
            last_graph[config] = (result["graph"], y)

    lines = [data_line, "", "| configuration | GMM accuracy (%) | ARI | NMI | published (%) | seconds per run |",
             "|---|---|---|---|---|---|"]
    summary = {}
    for config, rs in runs.items():
        acc = [r["final"]["accuracy"] for r in rs]
        ari = [r["final"]["ari"] for r in rs]
        nmi = [r["final"]["nmi"] for r in rs]
        secs = [r["seconds"] for r in rs]
        summary[config] = {"accuracy": acc, "ari": ari, "nmi": nmi, "seconds": secs}
        lines.append(f"| {config} | {format_mean_sd(acc)} | {format_mean_sd(ari, 1, 3)} | "
                     f"{format_mean_sd(nmi, 1, 3)} | {PUBLISHED[config]} | {format_mean_sd(secs, 1, 0)} |")
    if {"separate", "linked"} <= set(runs):
        by_seed = {c: {r["seed"]: r["final"]["accuracy"] for r in runs[c]} for c in ("separate", "linked")}
        diffs = [by_seed["linked"][s] - by_seed["separate"][s] for s in args.seeds
                 if s in by_seed["linked"] and s in by_seed["separate"]]
        summary["linked_minus_separate"] = diffs
        lines.append(f"| linked − separate, paired by seed | {format_mean_sd(diffs)} | | | "
                     f"{PUBLISHED['linked'] - PUBLISHED['separate']:.1f} | |")
    lines.append("")
    lines.append(f"seeds {args.seeds}; mean ± sd across seeds; accuracy after Hungarian matching of clusters to digits.")
    table = "\n".join(lines)
    print(table, flush=True)

    write_json(out / "results.json", {"data": data_line, "data_info": info, "settings": settings,
                                      "published": PUBLISHED, "summary": summary, "runs": runs})
    write_text(out / "results.md", "# VAE+GMM on MNIST\n\n" + table + "\n")
    plot_rounds({c: [[a * 100 for a in r["accuracy_per_round"]] for r in rs] for c, rs in runs.items()},
                out / "accuracy_per_round.png", title="VAE+GMM on MNIST: GMM accuracy per round",
                references={f"published {k}": v for k, v in PUBLISHED.items() if k in runs})
    for config, (graph, y) in last_graph.items():
        gmm, vae = graph.node("gmm"), graph.node("vae")
        pred = gmm.predict().cpu()
        plot_confusion(confusion_matrix(y, pred), out / f"confusion_{config}.png",
                       title=f"{config}: GMM clusters vs digits (seed {args.seeds[-1]})")
        plot_latent(vae.latent_.cpu().numpy(), pred.numpy(), out / f"latent_{config}.png",
                    title=f"{config}: VAE latent (PCA), coloured by GMM cluster")
        graph.draw(out / f"graph_{config}.png")
    return {"summary": summary, "runs": runs}
