"""LDA + ASR: a recogniser and a topic model learn spoken-digit categories from speech alone.

The recogniser (:class:`~serket.modules.asr.Recognizer`) discovers acoustic units from the
audio and proposes, for each utterance, N-best unit paths. A head-to-head node (``words``: the
words are generated jointly by the LDA's topics and the recogniser) turns them into a bag of
words for the LDA, and, once the LDA has sent its word probabilities P(w | d), resamples one
path per utterance by those probabilities (SIR) and sends it back: the recogniser relearns its
units from the resampled paths and decodes again. The LDA's topics are the categories.

Schedule per round: speech, asr, words, lda, words (the recogniser, then the LDA, as published).
With ``linked=False`` the resampled paths never reach the recogniser: it decodes once and the
LDA learns from that ("recogniser alone" in the Neuro-SERKET table).

Built only from serket's public API.
"""

from __future__ import annotations

import torch

from serket.connections import Observation
from serket.frontend import FrontEnd, normalise_features, trim_silence
from serket.graph import Graph
from serket.messages import Sequences
from serket.modules.asr import Recognizer
from serket.modules.lda import LDA
from serket.training import AlternateTrainer

__all__ = ["speech_sequences", "build_lda_asr", "run_lda_asr", "SCHEDULE"]

SCHEDULE = ["speech", "asr", "words", "lda", "words"]


def speech_sequences(waveforms, sample_rate: int, speakers, *, n_mfcc: int = 13, trim: float = 0.5,
                     device="cpu") -> Sequences:
    """Utterances to padded MFCC + delta frames, silence trimmed, normalised per speaker.

    Speaker identities are used for normalisation only (which voice spoke, never what was said).
    """
    front = FrontEnd(sample_rate, n_mfcc=n_mfcc, deltas=True, normalise=None).to(device)
    features, lengths = front.extract([w.to(device) for w in waveforms])
    features, lengths = trim_silence(features, lengths, channel=0, threshold=trim)
    features = normalise_features(features, lengths, "speaker", list(speakers))
    return Sequences(features, lengths)


def build_lda_asr(sequences: Sequences, *, linked: bool = True, n_topics: int = 10, n_units: int = 64,
                  seed: int = 0, device="cpu", asr: dict | None = None, lda: dict | None = None) -> Graph:
    """The LDA+ASR graph over ``sequences`` (see :func:`speech_sequences`)."""
    graph = Graph(seed=seed, device=device)
    graph.add(Observation("speech", sequences))
    graph.add(Recognizer("asr", n_units=n_units, dim=sequences.size, seed=seed, **(asr or {})))
    graph.add(LDA("lda", n_topics=n_topics, vocab_sizes={"w": n_units}, seed=seed, **(lda or {})))
    graph.observe("speech", "asr.audio")
    # the recogniser's paths are drawn from its posterior, so their plain average is the
    # expected bag of units
    graph.head_to_head("words", proposer="asr.w", weighter="lda.w", feedback=linked, bag_weights="uniform")
    graph.validate()
    return graph


def run_lda_asr(sequences, labels, *, rounds: int, linked: bool = True, seed: int = 0, device="cpu",
                checkpoint_dir=None, resume: bool = True, progress: bool = True, prefix: str = "",
                **build) -> dict:
    graph = build_lda_asr(sequences, linked=linked, seed=seed, device=device, **build)
    trainer = AlternateTrainer(graph, rounds=rounds, schedule=SCHEDULE, labels=labels,
                               checkpoint_dir=checkpoint_dir, resume=resume, progress=progress, prefix=prefix)
    history = trainer.run()
    return {"graph": graph, "history": history, "final": history[-1]["metrics"]["lda"] if history else None}
