"""One latent for image and speech: JMVAE + Gaussian mixture, trained alternately and jointly.

Run (a few minutes on 2 cores with the defaults):

    python examples/jmvae_gmm_joint.py
    python examples/jmvae_gmm_joint.py --per-class 10 --rounds 2 --epochs 1   # a smoke test

Pairs MNIST images with spoken digits of the same class, builds JMVAE -> mixture, and trains
the same graph twice, once with ``mode="alternate"`` and once with ``mode="joint"``: the flag is
the only difference. Then it generates images from speech alone.
"""

import argparse

import serket  # noqa: F401  (first: sets the thread policy before torch loads)
from serket.audio import speech_sequences, speech_vectors
from serket.datasets import load_mnist_subset, load_speech, pair_by_digit
from serket.graphs.multimodal import build_jmvae_gmm
from serket.metrics import clustering_accuracy
from serket.training import train


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    digits = load_speech("auto")                      # FSDD: data folder, cache, download or bundled copy
    speech = speech_vectors(speech_sequences(digits.waveforms, digits.rate, digits.speakers))
    images, labels = load_mnist_subset(per_class=args.per_class, seed=args.seed)
    i, s = pair_by_digit(labels, digits.labels, seed=args.seed)   # labels choose pairs, never reach modules
    print(f"{len(i)} image-utterance pairs; speech: {digits.source}")

    results = {}
    for mode in ("alternate", "joint"):
        graph = build_jmvae_gmm(images[i], speech[s], prior="mixture", seed=args.seed,
                                encoder={"hidden": (256,), "epochs": args.epochs, "first_epochs": 5 * args.epochs,
                                         "kl_anneal": 2 * args.epochs, "batch_size": 100})
        options = {"warmup": 1, "epochs": args.epochs, "batch_size": 100} if mode == "joint" else {}
        train(graph, args.rounds, mode=mode, labels=labels[i], prefix=f"[{mode}] ", **options)
        results[mode] = clustering_accuracy(labels[i], graph.node("gmm").predict())
        generated = graph.node("jmvae").cross_generate({"speech": speech[s][:10]}, "image")
        print(f"{mode}: accuracy {results[mode] * 100:.1f}%; images generated from speech: {tuple(generated.shape)}")
    return results


if __name__ == "__main__":
    main()
