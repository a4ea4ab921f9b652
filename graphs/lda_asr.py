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

from pathlib import Path

import torch

from serket.connections import Observation
from serket.datasets.folders import cache_dir
from serket.graph import Graph
from serket.messages import Sequences
from serket.modules.lda import LDA
from serket.modules.phones import RECOGNIZERS, speech_recognizer
from serket.training import AlternateTrainer

__all__ = ["build_lda_asr", "run_lda_asr", "SCHEDULE"]

SCHEDULE = ["speech", "asr", "words", "lda", "words"]


def build_lda_asr(sequences: Sequences, *, linked: bool = True, n_topics: int = 10, n_units: int = 64,
                  seed: int = 0, device="cpu", asr: dict | None = None, lda: dict | None = None,
                  recognizer: str = "units") -> Graph:
    """The LDA+ASR graph over ``sequences``: feature frames
    (:func:`serket.audio.features.speech_sequences`) for the ``"units"`` recogniser, waveforms
    (:func:`serket.audio.features.waveform_sequences`, ``asr={"rate": ...}``) for
    ``"pocketsphinx"``."""
    graph = Graph(seed=seed, device=device)
    graph.add(Observation("speech", sequences))
    module, vocab = speech_recognizer("asr", recognizer, n_units=n_units, dim=sequences.size, seed=seed,
                                      cache=cache_dir() / "phones", settings=asr)
    graph.add(module)
    graph.add(LDA("lda", n_topics=n_topics, vocab_sizes={"w": vocab}, seed=seed, **(lda or {})))
    graph.observe("speech", "asr.audio")
    # the unit recogniser's paths are drawn from its posterior, so their plain average is the
    # expected bag of units; the phone recogniser's are its most probable strings, weighed by score
    graph.head_to_head("words", proposer="asr.w", weighter="lda.w", feedback=linked,
                       bag_weights="uniform" if recognizer == "units" else "scores")
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


# --- the benchmark: `serket bench lda-asr` -----------------------------------------------------
PUBLISHED = {"separate": 27.5, "linked": 92.7}  # Taniguchi et al. (2020), LDA accuracy on speech, %


def bench_parser():
    from serket.bench.runner import benchmark_parser, nonnegative_int, positive_float, positive_int
    from serket.datasets.spoken_digits import add_speech_option

    p = benchmark_parser("serket bench lda-asr", "LDA+ASR on spoken digits: recogniser alone vs linked, several seeds.",
                         rounds=10, out="results/lda_asr")
    p.add_argument("--units", type=positive_int, default=64, help="acoustic units the recogniser discovers")
    p.add_argument("--n-best", type=positive_int, default=50, help="hypotheses per utterance (published: 10)")
    p.add_argument("--relearn-rate", type=positive_float, default=1.0,
                   help="how far the recogniser's lexicon moves toward the resampled paths each round")
    p.add_argument("--discriminant", type=nonnegative_int, default=20,
                   help="dimensions of the projection the recogniser relearns (0: off)")
    p.add_argument("--sweeps", type=positive_int, default=100, help="LDA Gibbs sweeps per round")
    p.add_argument("--recognizer", choices=RECOGNIZERS, default="units",
                   help="the recogniser: 'units' discovers acoustic units from the audio; 'pocketsphinx' is "
                        "the pretrained US-English phone loop (pip install 'neuro-serket[phones]'), whose "
                        "--n-best phone strings the LDA weighs and whose phone bigram is relearned")
    p.add_argument("--lda-chains", type=positive_int, default=4,
                   help="LDA chains in the first round, the likeliest kept (collapsed log joint)")
    add_speech_option(p)
    return p


PRESETS = {"quick": {"rounds": 2, "sweeps": 10, "units": 16, "n_best": 5, "seeds": lambda args: args.seeds[:1]}}


def _split_speech(args):
    """The utterances for training and the held-out ones (with --quick, every tenth of each)."""
    from serket.datasets.spoken_digits import load_speech

    digits = load_speech(args.speech, data_dir=args.data_dir)
    if args.quick:  # every tenth utterance
        keep = torch.arange(len(digits)) % 10 == 0
        digits = digits.subset(keep.nonzero().squeeze(1))
    return digits.split()


def _bench_data(args) -> dict:
    """What every run of the benchmark reads: the split utterances, each set as its recogniser
    reads it, prepared on that set alone (nothing of the held-out audio reaches training)."""
    from serket.audio.features import recogniser_inputs

    digits, held_out_digits = _split_speech(args)
    return {"digits": digits, "held_out_digits": held_out_digits,
            "sequences": recogniser_inputs(digits, args.recognizer, device=args.device),
            "held_out_sequences": recogniser_inputs(held_out_digits, args.recognizer, device=args.device)}


def _asr_settings(args, rate: int) -> dict:
    """The recogniser's settings from the benchmark's options, for the chosen backend."""
    if args.recognizer == "pocketsphinx":
        return {"rate": rate, "n_best": args.n_best}
    return {"n_best": args.n_best, "relearn_rate": args.relearn_rate, "discriminant": args.discriminant or None}


def bench_run(args, config: str, seed: int, checkpoint_dir, draw: bool) -> dict:
    """One run of the benchmark (``args``: its parsed options): train, score the held-out takes,
    and, where ``draw``, write this configuration's plots. Picklable, as the sweep needs."""
    from serket.bench.drawing import draw_graph
    from serket.bench.evaluation import held_out_figures
    from serket.bench.reporting import plot_confusion
    from serket.bench.sweep import per_process
    from serket.metrics import confusion_matrix

    data = per_process(_bench_data, args)
    digits, held_out_digits = data["digits"], data["held_out_digits"]
    result = run_lda_asr(
        data["sequences"], digits.labels, rounds=args.rounds, linked=(config == "linked"), seed=seed,
        device=args.device, checkpoint_dir=checkpoint_dir, resume=not args.no_resume,
        prefix=f"[{config} seed {seed}] ", n_units=args.units, recognizer=args.recognizer,
        asr=_asr_settings(args, digits.rate), lda={"sweeps": args.sweeps, "chains": args.lda_chains},
    )
    graph = result["graph"]
    held_out = held_out_figures(graph, {"both": {"speech": data["held_out_sequences"]}}, held_out_digits.labels,
                                {"lda": graph.node("lda").predict()}, digits.labels)
    if draw:
        out = Path(args.out)
        plot_confusion(confusion_matrix(digits.labels, graph.node("lda").predict().cpu()),
                       out / f"confusion_{config}.png", title=f"{config}: LDA topics vs spoken digits (seed {seed})",
                       ylabel="true digit", xlabel="LDA topic, named by its matched digit")
        draw_graph(graph, out / f"graph_{config}.png", title=f"LDA+ASR, configuration '{config}': " + (
            "the recogniser relearns from the resampled words" if config == "linked"
            else "the recogniser decodes once, alone"))
    return {"history": result["history"], "held_out": held_out}


def bench_main(argv=None) -> dict:
    from functools import partial

    from serket.bench.runner import parse_benchmark_args, run_benchmark

    args = parse_benchmark_args(bench_parser(), argv, presets=PRESETS)
    digits, held_out_digits = _split_speech(args)
    kind = "SYNTHETIC speech" if digits.synthetic else "real recordings"
    data_line = (f"data: {digits.source}, {len(digits)} utterances for training (takes {digits.test_takes} and above), "
                 f"{len(set(digits.speakers))} speakers/voices — {kind}; recogniser: " + (
                     "pocketsphinx US-English phone loop (pretrained, 39 CMU phones, no words)"
                     if args.recognizer == "pocketsphinx" else f"{args.units} acoustic units learned from the audio"))
    held_out_line = (f"the {len(held_out_digits)} utterances of takes 0-{digits.test_takes - 1}, never seen in "
                     f"training; each topic named by the digit it was matched to in training")
    title = "LDA+ASR on " + ("synthetic spoken digits" if digits.synthetic else "FSDD")
    extra_info = {"synthetic": digits.synthetic, "source": digits.source}
    del digits, held_out_digits  # the runs load what they need, in whichever process runs them
    return run_benchmark(title=title, data_line=data_line, configs=args.configs, seeds=args.seeds,
                         run=partial(bench_run, args), nodes="lda", out=Path(args.out),
                         workers=args.workers, threads=args.threads, ray=args.ray,
                         published={} if extra_info["synthetic"] else PUBLISHED,
                         settings={k: v for k, v in vars(args).items() if k != "out"},
                         compare=("separate", "linked"), extra_info=extra_info, held_out_line=held_out_line)
