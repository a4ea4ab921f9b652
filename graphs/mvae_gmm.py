"""MVAE + GMM: one latent shared by image and speech (MVAE), clustered by a Gaussian mixture.

The graph of :func:`serket.graphs.multimodal.build_multimodal_gmm` with ``model="mvae"``;
train it with ``serket.training.train(graph, rounds, mode="alternate" | "joint")``.

Example::

    graph = build_mvae_gmm(images, speech_vectors(sequences), prior="mixture")
    train(graph, 5, mode="joint", warmup=1, epochs=10, labels=labels)
    graph.node("gmm").predict()                 # a digit category per image-utterance pair

Built only from serket's public API.
"""

from __future__ import annotations

from serket.graphs.multimodal import build_multimodal_gmm, run_multimodal

__all__ = ["build_mvae_gmm", "run_mvae_gmm"]


def build_mvae_gmm(images, speech, **options):
    """MVAE+GMM over paired ``images`` (N, 784) in [0, 1] and ``speech`` (N, D) vectors;
    options as :func:`~serket.graphs.multimodal.build_multimodal_gmm` (``prior``, ``mask``, ...)."""
    return build_multimodal_gmm(images, speech, model="mvae", **options)


def run_mvae_gmm(images, speech, labels, *, rounds: int, mode: str = "alternate", **options) -> dict:
    """Build and train, alternately or jointly; returns ``{"graph", "history"}``."""
    return run_multimodal(images, speech, labels, rounds=rounds, mode=mode, model="mvae", **options)
