"""VAE + GMM: a VAE learns a latent space of images; a GMM clusters that latent space.

Head-to-tail connection on the VAE's latent ``z``: the VAE sends its posterior means up to the
GMM; the GMM sends back, for each image, a Gaussian prior centred on the mean of the cluster the
image currently belongs to, so the VAE's latent space gathers around the clusters. With
``linked=False`` the message back is switched off: the VAE learns alone and the GMM clusters
its latent ("every module separate" in the Neuro-SERKET table).

Built only from serket's public API.
"""

from __future__ import annotations

from pathlib import Path

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


def bench_parser():
    from serket.bench.runner import benchmark_parser, nonnegative_float, positive_int

    p = benchmark_parser("serket bench vae-gmm", "VAE+GMM on MNIST: separate vs linked, several seeds.",
                         rounds=10, out="results/vae_gmm")
    p.add_argument("--epochs", type=positive_int, default=20, help="VAE epochs per round after the first")
    p.add_argument("--first-epochs", type=positive_int, default=100, help="VAE epochs in the first round")
    p.add_argument("--sweeps", type=positive_int, default=50, help="GMM Gibbs sweeps per round")
    p.add_argument("--per-class", type=positive_int, default=300, help="MNIST training images per digit")
    p.add_argument("--held-out-per-class", type=positive_int, default=100,
                   help="MNIST test images per digit on which the trained graph is scored (never trained on)")
    p.add_argument("--hidden", type=positive_int, nargs="+", default=[512, 256],
                   help="VAE hidden widths (the published run used 128)")
    p.add_argument("--kl-weight", type=nonnegative_float, default=1.0, help="VAE KL weight")
    p.add_argument("--prior-variance", default="unit", choices=["unit", "cluster"],
                   help="the variance of the GMM's prior sent to the VAE: unit, or the item's cluster's")
    p.add_argument("--restart", default="warm", choices=["warm", "reinit"],
                   help="each round the VAE continues from its weights (warm) or starts afresh (reinit)")
    p.add_argument("--published", action="store_true",
                   help="the published setting: 40 rounds, 200 VAE epochs per round")
    return p


# what --published and --quick stand for; an option given explicitly wins over both
PRESETS = {
    "published": {"rounds": 40, "epochs": 200, "first_epochs": 200},
    "quick": {"per_class": 20, "rounds": 2, "epochs": 2, "first_epochs": 3, "sweeps": 5,
              "seeds": lambda args: args.seeds[:2]},
}


def bench_run(args, config: str, seed: int, checkpoint_dir, draw: bool) -> dict:
    """One run of the benchmark (``args``: its parsed options): train, score the held-out test
    images, and, where ``draw``, write this configuration's plots. Picklable, as the sweep needs."""
    from serket.bench.drawing import draw_graph
    from serket.bench.evaluation import held_out_figures
    from serket.bench.reporting import plot_confusion, plot_latent
    from serket.datasets.mnist import load_mnist_subset
    from serket.metrics import confusion_matrix

    x, y = load_mnist_subset(per_class=args.per_class, seed=seed, data_dir=args.data_dir)
    result = run_vae_gmm(
        x, y, rounds=args.rounds, linked=(config == "linked"), seed=seed, device=args.device,
        checkpoint_dir=checkpoint_dir, resume=not args.no_resume, prefix=f"[{config} seed {seed}] ",
        vae={"epochs": args.epochs, "first_epochs": args.first_epochs, "restart": args.restart,
             "hidden": tuple(args.hidden), "kl_weight": args.kl_weight},
        gmm={"sweeps": args.sweeps, "prior_variance": args.prior_variance},
    )
    graph = result["graph"]
    test_x, test_y = load_mnist_subset(per_class=args.held_out_per_class, seed=seed, split="test",
                                       data_dir=args.data_dir)
    held_out = held_out_figures(graph, {"both": {"images": test_x}}, test_y,
                                {"gmm": graph.node("gmm").predict()}, y)
    if draw:
        out = Path(args.out)
        gmm, vae = graph.node("gmm"), graph.node("vae")
        pred = gmm.predict().cpu()
        plot_confusion(confusion_matrix(y, pred), out / f"confusion_{config}.png",
                       title=f"{config}: GMM clusters vs digits (seed {seed})", ylabel="true digit",
                       xlabel="GMM cluster, named by its matched digit")
        plot_latent(vae.latent_.cpu().numpy(), pred.numpy(), out / f"latent_{config}.png",
                    title=f"{config}: VAE latent (PCA), coloured by GMM cluster",
                    colour_label="GMM cluster (its own numbering)")
        draw_graph(graph, out / f"graph_{config}.png", title=f"VAE+GMM, configuration '{config}': " + (
            "the GMM's prior reaches the VAE" if config == "linked"
            else "the VAE learns alone, the GMM clusters its latent"))
    return {"history": result["history"], "held_out": held_out}


def bench_main(argv=None) -> dict:
    from functools import partial

    from serket.bench.runner import parse_benchmark_args, run_benchmark
    from serket.datasets.mnist import load_mnist

    args = parse_benchmark_args(bench_parser(), argv, presets=PRESETS)
    _, _, info = load_mnist("train", data_dir=args.data_dir, verbose=False)
    data_line = f"data: MNIST train ({info['source']}: {info['path']}), {args.per_class} per digit — real images"
    return run_benchmark(title="VAE+GMM on MNIST", data_line=data_line, configs=args.configs,
                         seeds=args.seeds, run=partial(bench_run, args), nodes="gmm", out=Path(args.out),
                         workers=args.workers, threads=args.threads, ray=args.ray, published=PUBLISHED,
                         settings={k: v for k, v in vars(args).items() if k != "out"},
                         compare=("separate", "linked"), extra_info={"data_info": info},
                         held_out_line=f"{args.held_out_per_class} MNIST test images per digit, never seen "
                                       f"in training; each cluster named by the digit it was matched to in training")
