"""Neuro-SERKET: VAE+GMM on images and LDA+ASR on speech, joined by a shared digit category.

The image half (VAE -> GMM, head-to-tail on the latent ``z``) and the speech half (recogniser
and LDA joined head-to-head on the words) each categorise their own data. A tail-to-tail
combiner (``category``) makes the digit category the common parent of the GMM's cluster and
the LDA's topic: it receives both posteriors, aligns their labels by optimal assignment, and
sends each module the other's posterior as a prior.

The four configurations of the published table:

==============  ==========================  ==========================  ===================
configuration   VAE <-> GMM                 ASR <-> LDA                 GMM <-> LDA
==============  ==========================  ==========================  ===================
``separate``    VAE -> GMM only             recogniser decodes once     none
``asr``         VAE -> GMM only             linked (SIR)                none
``halves``      linked                      linked                      none
``full``        linked                      linked                      tail-to-tail
==============  ==========================  ==========================  ===================

The halves do not interact unless joined, so the first three rows are the image and speech
benchmarks side by side; only ``full`` needs the joint graph. The benchmark trains each half
once per seed and linking and shares it between the rows that hold it.

How the shared category is fitted. The GMM sends P(c | z) without its prior; the LDA, a member
of the shared category, sends how well each topic alone explains the whole utterance,
``softmax_c(evidence_weight * sum_w n_dw log phi_cw)`` — its topic proportions are a mixture
weight, too flat to carry its evidence. A module that has not reported yet gets the others'
product, so in the first round the GMM starts from the LDA's categories. Once both have
reported, the combiner fits the shared category jointly
(:class:`~serket.inference.JointCategoryFit`, on by default): EM in which the GMM and the LDA
refit their per-category distributions to shared responsibilities, from the current consensus,
the last fit and fresh k-means++ starts (on the latent, on the word frequencies, in turn),
keeping the start with the highest joint log likelihood — labels never enter. Both are options
of the tail-to-tail connection: the LDA's ``evidence_weight`` (0.04 in the benchmark) counts the
100 tokens of a bag averaged over 50 N-best paths as about 4 independent ones; its
``prior_exponent`` (0.01, one 100th root per token) makes the GMM's posterior count once per
utterance.

Built only from serket's public API.
"""

from __future__ import annotations

import torch

from serket.connections import Observation
from serket.datasets.folders import cache_dir
from serket.errors import ConfigError, DataError
from serket.graph import Graph
from serket.inference import DEFAULT_RESTARTS
from serket.messages import Sequences
from serket.modules.gmm import GMM
from serket.modules.lda import LDA
from serket.modules.mixture import MixturePrior
from serket.modules.phones import RECOGNIZERS, speech_recognizer
from serket.modules.vae import VAE
from serket.training import AlternateTrainer

__all__ = ["CONFIGURATIONS", "SCHEDULE", "build_neuro_serket", "run_neuro_serket"]

# (VAE <-> GMM linked, ASR <-> LDA linked, tail-to-tail)
CONFIGURATIONS = {
    "separate": (False, False, False),
    "asr": (False, True, False),
    "halves": (True, True, False),
    "full": (True, True, True),
}
SCHEDULE = ["speech", "asr", "words", "lda", "words", "category",
            "images", "vae", "gmm", "category"]


def build_neuro_serket(images: torch.Tensor | None, sequences: Sequences | None, *,
                       configuration: str = "full", n_categories: int = 10, n_units: int = 64,
                       z_dim: int = 10, seed: int = 0, device="cpu", vae: dict | None = None,
                       gmm: dict | None = None, asr: dict | None = None, lda: dict | None = None,
                       combiner: dict | None = None, mixture: str = "gibbs", recognizer: str = "units") -> Graph:
    """The whole architecture over paired ``images`` (N, 784) and ``sequences`` (N utterances).

    ``mixture``: the image side's Gaussian mixture, ``"gibbs"`` (the Bayesian GMM, collapsed
    Gibbs) or ``"em"`` (:class:`~serket.modules.mixture.MixturePrior`: EM from the current fit
    and from fresh k-means++ starts each round, the likeliest kept).

    ``recognizer``: the speech half's recogniser, ``"units"`` (acoustic units learned from
    feature frames) or ``"pocketsphinx"`` (the pretrained phone loop; ``sequences`` are then
    waveforms and ``asr`` carries their ``rate``), as in :func:`serket.graphs.lda_asr.build_lda_asr`.

    One half alone: pass ``images=None`` (the speech half: speech, asr, words, lda) or
    ``sequences=None`` (the image half: images, vae, gmm), with a configuration other than
    ``"full"``. Its modules are the same, seeded the same, as in the whole graph: without the
    tail-to-tail link the halves never exchange a message, so a half trained alone is that
    configuration's half (the benchmark shares halves between rows so). ``combiner``: options of
    the tail-to-tail connection (:meth:`~serket.graph.Graph.tail_to_tail`), such as the LDA's
    ``evidence_weight`` and ``prior_exponent``.
    """
    if configuration not in CONFIGURATIONS:
        raise ConfigError(f"unknown configuration {configuration!r}; use one of {list(CONFIGURATIONS)}")
    if images is None and sequences is None:
        raise DataError("build_neuro_serket needs the images, the utterances, or both")
    link_images, link_speech, link_category = CONFIGURATIONS[configuration]
    if (images is None or sequences is None) and link_category:
        raise DataError("the fully linked configuration needs both the images and the utterances")
    if images is not None and sequences is not None and images.shape[0] != sequences.n_items:
        raise DataError(f"{images.shape[0]} images but {sequences.n_items} utterances: pairs must align")
    if mixture not in ("gibbs", "em"):
        raise ConfigError(f"mixture must be 'gibbs' or 'em', got {mixture!r}")
    graph = Graph(seed=seed, device=device)
    if images is not None:
        graph.add(Observation("images", images))
        graph.add(VAE("vae", x_dim=images.shape[1], z_dim=z_dim, seed=seed, **(vae or {})))
        mixture_cls = GMM if mixture == "gibbs" else MixturePrior
        graph.add(mixture_cls("gmm", n_clusters=n_categories, dim=z_dim, seed=seed, **(gmm or {})))
        graph.observe("images", "vae.x")
        graph.head_to_tail(upper="gmm.x", lower="vae.z", feedback=link_images)
    if sequences is not None:
        graph.add(Observation("speech", sequences))
        module, vocab = speech_recognizer("asr", recognizer, n_units=n_units, dim=sequences.size, seed=seed,
                                          cache=cache_dir() / "phones", settings=asr)
        graph.add(module)
        lda_module = graph.add(LDA("lda", n_topics=n_categories, vocab_sizes={"w": vocab}, seed=seed,
                                   **(lda or {})))
        graph.observe("speech", "asr.audio")
        graph.head_to_head("words", proposer="asr.w", weighter="lda.w", feedback=link_speech,
                           bag_weights="uniform" if recognizer == "units" else "scores")
        if images is None:
            # the speech half alone reads the LDA's category as the whole graph does, as a member
            # of the shared category (the topic that best explains the whole utterance), so that
            # rows differ only in their links
            lda_module.category_join("c", (combiner or {}).get("evidence_weight", {}).get("lda", 1.0))
    if images is not None and sequences is not None:
        graph.tail_to_tail("category", ["gmm.c", "lda.c"], feedback=link_category, **(combiner or {}))
    graph.validate()
    return graph


def run_neuro_serket(images, sequences, labels, *, rounds: int, configuration: str = "full", seed: int = 0,
                     device="cpu", checkpoint_dir=None, resume: bool = True, progress: bool = True,
                     prefix: str = "", **build) -> dict:
    """Build (see :func:`build_neuro_serket`; either side may be ``None``) and train alternately
    with :data:`SCHEDULE` (restricted to the nodes present)."""
    graph = build_neuro_serket(images, sequences, configuration=configuration, seed=seed, device=device, **build)
    schedule = [name for name in SCHEDULE if name in graph.nodes]
    trainer = AlternateTrainer(graph, rounds=rounds, schedule=schedule, labels=labels,
                               checkpoint_dir=checkpoint_dir, resume=resume, progress=progress, prefix=prefix)
    history = trainer.run()
    return {"graph": graph, "history": history}


# --- the benchmark: `serket bench neuro-serket` ------------------------------------------------
# Taniguchi et al. (2020), accuracy (%) of the GMM on images and the LDA on speech
PUBLISHED = {
    "separate": {"gmm": 63.7, "lda": 27.5},
    "asr": {"gmm": 63.7, "lda": 92.7},
    "halves": {"gmm": 66.7, "lda": 92.7},
    "full": {"gmm": 91.0, "lda": 93.7},
}


def bench_parser():
    from serket.bench.runner import (benchmark_parser, nonnegative_float, nonnegative_int, positive_float,
                                     positive_int, restarts_int)
    from serket.datasets.spoken_digits import add_speech_option

    p = benchmark_parser("serket bench neuro-serket",
                         "VAE+GMM+LDA+ASR on MNIST and spoken digits: the four rows of the published table.",
                         rounds=4, out="results/neuro_serket")
    p.set_defaults(configs=list(CONFIGURATIONS))
    p._option_string_actions["--configs"].choices = list(CONFIGURATIONS)
    add_speech_option(p)
    p.add_argument("--per-class", type=positive_int, default=270,
                   help="training image-utterance pairs per digit (at most the training utterances per digit: "
                        "270 for FSDD, takes 5-49; the held-out pairs are the test takes 0-4 with MNIST test images)")
    p.add_argument("--hidden", type=positive_int, nargs="+", default=[512, 256], help="VAE hidden widths")
    p.add_argument("--epochs", type=positive_int, default=15, help="VAE epochs per round after the first")
    p.add_argument("--first-epochs", type=positive_int, default=60, help="VAE epochs in the first round")
    p.add_argument("--gmm-sweeps", type=positive_int, default=50, help="GMM Gibbs sweeps per round")
    p.add_argument("--lda-sweeps", type=positive_int, default=60, help="LDA Gibbs sweeps per round")
    p.add_argument("--units", type=positive_int, default=64, help="acoustic units the recogniser discovers")
    p.add_argument("--n-best", type=positive_int, default=50, help="recogniser hypotheses per utterance")
    p.add_argument("--discriminant", type=nonnegative_int, default=20,
                   help="recogniser's discriminant dimensions (0: off)")
    p.add_argument("--recognizer", choices=RECOGNIZERS, default="units",
                   help="the recogniser: 'units' discovers acoustic units from the audio; 'pocketsphinx' is "
                        "the pretrained US-English phone loop (pip install 'neuro-serket[phones]')")
    p.add_argument("--lda-chains", type=positive_int, default=2,
                   help="LDA chains in the first round, the likeliest kept (collapsed log joint)")
    p.add_argument("--mixture", default="gibbs", choices=["gibbs", "em"],
                   help="the image side's mixture: the Bayesian GMM (Gibbs) or EM with likelihood-chosen restarts")
    # --evidence-weight and --lda-prior-exponent were set on development seeds (98, 99; one early
    # look at seed 4's latent too), never tuned on the benchmark's table. Without the joint fit's
    # restarts, linked runs settled in optima with a digit split in two while two others shared a
    # category (five and nine sound alike as bags of acoustic units), 10-15 points apart from
    # seed to seed. On the 2,700 training pairs (takes 5-49) the weight went from 0.08 to 0.04:
    # at 0.08 the joint model itself preferred a split optimum (sixes in two categories) on one
    # table seed, its mean joint log likelihood above that of EM started from the digits; the
    # change was chosen on development seeds 5-9 (at 0.08 seed 9 fell into that optimum, at 0.04
    # none did), then run once on the table.
    p.add_argument("--evidence-weight", type=positive_float, default=0.04,
                   help="the LDA's evidence weight in the shared category: exponent on its document "
                        "likelihood (its tokens are correlated)")
    p.add_argument("--category-restarts", type=restarts_int, default=DEFAULT_RESTARTS,
                   help="fresh starts of the joint fit of the shared category, the likeliest kept "
                        "(-1: no joint fit, the combiner multiplies the modules' messages)")
    p.add_argument("--lda-prior-exponent", type=nonnegative_float, default=0.01,
                   help="exponent on the GMM's posterior sent to the LDA, which applies it to each token")
    p.add_argument("--published", action="store_true", help="40 rounds, 200 VAE epochs and 100 LDA sweeps a round")
    return p


# what --published and --quick stand for; an option given explicitly wins over both
PRESETS = {
    "published": {"rounds": 40, "epochs": 200, "first_epochs": 200, "lda_sweeps": 100},
    "quick": {"per_class": 20, "rounds": 2, "epochs": 2, "first_epochs": 3, "gmm_sweeps": 5, "lda_sweeps": 10,
              "units": 16, "n_best": 5, "seeds": lambda args: args.seeds[:1]},
}


def _bench_data(args) -> dict:
    """What every run of the benchmark reads: the split utterances, each set as its recogniser
    reads it, prepared on that set alone (nothing of the held-out audio reaches training)."""
    from serket.audio.features import recogniser_inputs
    from serket.datasets.spoken_digits import load_speech

    digits, held_out_digits = load_speech(args.speech, data_dir=args.data_dir).split()
    return {"digits": digits, "held_out_digits": held_out_digits,
            "sequences": recogniser_inputs(digits, args.recognizer, device=args.device),
            "held_out_sequences": recogniser_inputs(held_out_digits, args.recognizer, device=args.device)}


def _bench_settings(args, rate: int = 8000) -> dict:
    """The modules' settings (build_neuro_serket's keywords) from the benchmark's options;
    ``rate``: the speech's sample rate (the phone recogniser's setting)."""
    recognizer = getattr(args, "recognizer", "units")
    return dict(
        n_units=args.units, mixture=args.mixture, recognizer=recognizer,
        vae={"epochs": args.epochs, "first_epochs": args.first_epochs, "hidden": tuple(args.hidden)},
        gmm={"sweeps": args.gmm_sweeps} if args.mixture == "gibbs" else {},
        asr=({"rate": rate, "n_best": args.n_best} if recognizer == "pocketsphinx" else
             {"n_best": args.n_best, "relearn_rate": 1.0, "discriminant": args.discriminant or None}),
        lda={"sweeps": args.lda_sweeps, "tokens": 100, "chains": args.lda_chains},
        # the LDA applies its prior to each of its tokens: send it a root of the GMM's posterior
        combiner={"evidence_weight": {"lda": args.evidence_weight}, "prior_exponent": {"lda": args.lda_prior_exponent},
                  "restarts": args.category_restarts if args.category_restarts >= 0 else None},
    )


def _holders(configs, side: int, linked: bool) -> list[str]:
    """The rows without the tail-to-tail link whose ``side`` (0 images, 1 speech) is ``linked``."""
    return [c for c in configs if c != "full" and CONFIGURATIONS[c][side] == linked]


def bench_pieces(configs, config: str) -> list[str]:
    """What a row is trained as: the fully linked row whole; a row without the tail-to-tail link
    as its two halves, which never meet, each named by the first row that holds it (``separate``
    and ``asr`` share the image half, ``asr`` and ``halves`` the speech half), so that a half is
    trained once per seed."""
    if config == "full":
        return ["full"]
    return [f"{side}-{_holders(configs, i, CONFIGURATIONS[config][i])[0]}"
            for i, side in enumerate(("images", "speech"))]


def bench_combine(config: str, seed: int, parts: dict) -> dict:
    """A row's result from its pieces' results: a row of halves has their histories side by side."""
    from serket.bench.evaluation import merge_histories

    if config == "full":
        return parts["full"]
    images, speech = parts.values()
    return {"history": merge_histories(images["history"], speech["history"]),
            "held_out": {**images["held_out"], **speech["held_out"]}}


def bench_run(args, piece: str, seed: int, checkpoint_dir, draw: bool) -> dict:
    """One piece of the benchmark (``args``: its parsed options) with one seed: train it, score
    it on the held-out pairs, and, where ``draw``, write the plots of every row it belongs to.
    Picklable, as the sweep needs."""
    from pathlib import Path

    from serket.bench.drawing import draw_graph
    from serket.bench.evaluation import held_out_figures
    from serket.bench.reporting import plot_confusion, plot_latent
    from serket.bench.sweep import per_process
    from serket.datasets.mnist import load_mnist_subset
    from serket.datasets.pairing import held_out_images, pair_by_digit
    from serket.metrics import confusion_matrix

    data = per_process(_bench_data, args)
    sequences, held_out_sequences = data["sequences"], data["held_out_sequences"]
    x, y = load_mnist_subset(per_class=args.per_class, seed=seed, data_dir=args.data_dir)
    images_idx, speech_idx = pair_by_digit(y, data["digits"].labels, seed=seed)
    images, utterances, labels = x[images_idx], sequences.index(speech_idx.to(sequences.device)), y[images_idx]
    build = _bench_settings(args, data["digits"].rate)
    common = dict(rounds=args.rounds, seed=seed, device=args.device, resume=not args.no_resume,
                  checkpoint_dir=checkpoint_dir, **build)
    if piece == "full":
        rows = ["full"]
        result = run_neuro_serket(images, utterances, labels, configuration="full",
                                  prefix=f"[full seed {seed}] ", **common)
    else:
        # a half alone, as the first row that holds it; the same modules, seeded the same
        side, row = piece.split("-", 1)
        rows = _holders(args.configs, 0 if side == "images" else 1, CONFIGURATIONS[row][0 if side == "images" else 1])
        result = run_neuro_serket(images if side == "images" else None, utterances if side == "speech" else None,
                                  labels, configuration=row, prefix=f"[{side} half of {row} seed {seed}] ", **common)
    graph = result["graph"]
    test_images, test_idx, test_labels = held_out_images(data["held_out_digits"].labels, seed=seed,
                                                         data_dir=args.data_dir)
    test_utterances = held_out_sequences.index(test_idx.to(held_out_sequences.device))
    subsets = {"both": {"images": test_images, "speech": test_utterances}, "images only": {"images": test_images},
               "speech only": {"speech": test_utterances}}
    trained = {name: node.predict() for name, node in graph.nodes.items() if name in ("gmm", "lda", "category")}
    held_out = held_out_figures(graph, subsets, test_labels, trained, labels)
    if draw:
        out = Path(args.out)
        what = {"gmm": "GMM clusters of the images", "lda": "LDA topics of the utterances"}
        titles = {"separate": "every module separate", "asr": "LDA+ASR linked",
                  "halves": "VAE+GMM linked, LDA+ASR linked, no link between",
                  "full": "VAE+GMM+LDA+ASR fully linked"}
        for row in rows:
            for node in ("gmm", "lda"):
                if node in graph.nodes:
                    plot_confusion(confusion_matrix(labels, graph.node(node).predict().cpu()),
                                   out / f"confusion_{row}_{node}.png",
                                   title=f"{row}: {what[node]} vs digits (seed {seed})", ylabel="true digit",
                                   xlabel=f"{node.upper()} {'cluster' if node == 'gmm' else 'topic'}, "
                                          "named by its matched digit")
            if "vae" in graph.nodes:
                plot_latent(graph.node("vae").latent_.cpu().numpy(), graph.node("gmm").predict().cpu().numpy(),
                            out / f"latent_{row}.png", title=f"{row}: VAE latent (PCA), coloured by GMM cluster",
                            colour_label="GMM cluster (its own numbering)")
                # the row's whole graph, built (not trained) for the drawing
                whole = graph if row == "full" else build_neuro_serket(images, utterances, configuration=row,
                                                                       seed=seed, **build)
                draw_graph(whole, out / f"graph_{row}.png",
                           title=f"Neuro-SERKET, configuration '{row}': {titles[row]}")
    return {"history": result["history"], "held_out": held_out}


def bench_main(argv=None) -> dict:
    from functools import partial
    from pathlib import Path

    from serket.bench.runner import parse_benchmark_args, run_benchmark
    from serket.datasets.mnist import load_mnist
    from serket.datasets.spoken_digits import load_speech

    args = parse_benchmark_args(bench_parser(), argv, presets=PRESETS)
    digits, held_out_digits = load_speech(args.speech, data_dir=args.data_dir).split()
    _, _, info = load_mnist("train", data_dir=args.data_dir, verbose=False)
    kind = "SYNTHETIC speech" if digits.synthetic else "real recordings"
    data_line = (f"data: images MNIST train ({info['source']}), speech {digits.source} — {kind}; "
                 f"{args.per_class} image-utterance pairs per digit for training, utterances of takes "
                 f"{digits.test_takes} and above; recogniser: " + (
                     "pocketsphinx US-English phone loop (pretrained, 39 CMU phones, no words)"
                     if args.recognizer == "pocketsphinx" else f"{args.units} acoustic units learned from the audio"))
    held_out_line = (f"MNIST test images paired with the utterances of takes 0-{digits.test_takes - 1} "
                     f"({held_out_digits.labels.numel()} pairs), never seen in training; each category named by "
                     f"the digit it was matched to on the training pairs")
    extra_info = {"synthetic": digits.synthetic, "speech_source": digits.source, "image_source": info}
    del digits, held_out_digits  # the runs load what they need, in whichever process runs them
    title = "Neuro-SERKET: VAE+GMM+LDA+ASR" + (" (SYNTHETIC speech)" if extra_info["synthetic"] else "")
    return run_benchmark(title=title, data_line=data_line, configs=args.configs, seeds=args.seeds,
                         run=partial(bench_run, args), pieces=partial(bench_pieces, args.configs),
                         combine=bench_combine, nodes=["gmm", "lda"], out=Path(args.out),
                         workers=args.workers, threads=args.threads, ray=args.ray,
                         published={} if extra_info["synthetic"] else PUBLISHED,
                         settings={k: v for k, v in vars(args).items() if k != "out"},
                         compare=("separate", "full") if {"separate", "full"} <= set(args.configs) else None,
                         extra_info=extra_info, held_out_line=held_out_line)
