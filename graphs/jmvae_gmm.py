"""JMVAE + GMM: one latent shared by image and speech (JMVAE), clustered by a Gaussian mixture.

The graph of :func:`serket.graphs.multimodal.build_multimodal_gmm` with ``model="jmvae"``;
train it with ``serket.training.train(graph, rounds, mode="alternate" | "joint")``.

Example::

    graph = build_jmvae_gmm(images, speech_vectors(sequences), prior="mixture")
    train(graph, 5, mode="joint", warmup=1, epochs=10, labels=labels)
    graph.node("gmm").predict()                 # a digit category per image-utterance pair

Built only from serket's public API.
"""

from __future__ import annotations

from serket.graphs.multimodal import build_multimodal_gmm, run_multimodal

__all__ = ["build_jmvae_gmm", "run_jmvae_gmm"]


def build_jmvae_gmm(images, speech, **options):
    """JMVAE+GMM over paired ``images`` (N, 784) in [0, 1] and ``speech`` (N, D) vectors;
    options as :func:`~serket.graphs.multimodal.build_multimodal_gmm` (``prior``, ``mask``, ...)."""
    return build_multimodal_gmm(images, speech, model="jmvae", **options)


def run_jmvae_gmm(images, speech, labels, *, rounds: int, mode: str = "alternate", **options) -> dict:
    """Build and train, alternately or jointly; returns ``{"graph", "history"}``."""
    return run_multimodal(images, speech, labels, rounds=rounds, mode=mode, model="jmvae", **options)
