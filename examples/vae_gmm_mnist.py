"""VAE + GMM on MNIST: a VAE and a Gaussian mixture learn digit categories together.

Run (about a minute on 2 cores with the defaults):

    python examples/vae_gmm_mnist.py
    python examples/vae_gmm_mnist.py --per-class 30 --rounds 2 --epochs 2   # a smoke test

Shows the whole public workflow: load data, build the graph from modules, validate it, train
it alternately with per-round accuracy, and compare with the same modules unlinked.
"""

import argparse

import serket  # noqa: F401  (first: sets the thread policy before torch loads)
from serket.connections import Observation
from serket.datasets import load_mnist_subset
from serket.graph import Graph
from serket.modules.gmm import GMM
from serket.modules.vae import VAE
from serket.training import train_alternate


def build(images, linked: bool, seed: int, epochs: int, sweeps: int) -> Graph:
    graph = Graph(seed=seed)
    graph.add(Observation("images", images))
    graph.add(VAE("vae", x_dim=784, z_dim=10, hidden=(128,), epochs=epochs, first_epochs=5 * epochs, seed=seed))
    graph.add(GMM("gmm", n_clusters=10, dim=10, sweeps=sweeps, seed=seed))
    graph.observe("images", "vae.x")                              # the VAE explains the images
    graph.head_to_tail(upper="gmm.x", lower="vae.z", feedback=linked)  # the GMM generates z
    graph.validate()
    return graph


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-class", type=int, default=300)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--sweeps", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    images, labels = load_mnist_subset(per_class=args.per_class, seed=args.seed)
    results = {}
    for linked in (False, True):
        name = "linked" if linked else "separate"
        graph = build(images, linked, args.seed, args.epochs, args.sweeps)
        if linked:
            print(graph.summary())
        history = train_alternate(graph, args.rounds, labels=labels, prefix=f"[{name}] ")
        results[name] = history[-1]["metrics"]["gmm"]["accuracy"]
    print(f"GMM accuracy on {len(labels)} MNIST images: separate {results['separate']*100:.1f}%, "
          f"linked {results['linked']*100:.1f}% (seed {args.seed})")
    return results


if __name__ == "__main__":
    main()
