"""One shared latent for image and speech (MVAE or JMVAE), clustered by a Gaussian mixture:
MVAE+GMM (:func:`build_mvae_gmm`) and JMVAE+GMM (:func:`build_jmvae_gmm`).

The multimodal VAE encodes each image-utterance pair into one latent ``z``; a mixture over
``z`` (head-to-tail, exactly as in VAE+GMM) categorises the pairs and sends each item the
Gaussian of its component as a prior. Two mixtures fit:

* ``prior="gibbs"``: the Bayesian :class:`~serket.modules.gmm.GMM` (collapsed Gibbs). It is not
  differentiable: in joint training it takes its sweeps between rounds.
* ``prior="mixture"``: :class:`~serket.modules.mixture.MixturePrior` (EM alternately; in joint
  training its parameters learn by gradient alongside the encoders, scoring the live latent).

Both train with either mode of :func:`serket.training.train` — the same graph, the same
module code. Speech enters as a fixed-size vector per utterance: speaker-normalised MFCC with
deltas, silence trimmed, pooled into its mean, standard deviation and three segment means,
standardised per dimension over the corpus (:func:`serket.audio.features.speech_vectors`).

Example::

    graph = build_jmvae_gmm(images, speech_vectors(sequences), prior="mixture")
    train(graph, 5, mode="joint", warmup=1, epochs=10, labels=labels)
    graph.node("gmm").predict()                 # a digit category per image-utterance pair

The benchmark's metrics beyond the mixture's clustering accuracy
(:func:`serket.bench.evaluation.coherence`): speech-to-image and image-to-image generation, each
image classified by a digit classifier trained for evaluation only, on the MNIST test split (never
on the benchmark's images, which come from the train split).

Built only from serket's public API.
"""

from __future__ import annotations

import torch

from serket.connections import Observation
from serket.errors import ConfigError, DataError
from serket.graph import Graph
from serket.modules.gmm import GMM
from serket.modules.mixture import MixturePrior
from serket.modules.multimodal import JMVAE, MVAE
from serket.training import train

__all__ = ["MODELS", "PRIORS", "build_multimodal_gmm", "run_multimodal", "build_mvae_gmm", "run_mvae_gmm",
           "build_jmvae_gmm", "run_jmvae_gmm"]

MODELS = {"mvae": MVAE, "jmvae": JMVAE}
PRIORS = ("gibbs", "mixture")


def build_multimodal_gmm(images: torch.Tensor, speech: torch.Tensor, *, model: str = "mvae",
                         prior: str = "gibbs", n_categories: int = 10, z_dim: int = 10,
                         mask: torch.Tensor | None = None, linked: bool = True, seed: int = 0,
                         device="cpu", encoder: dict | None = None, gmm: dict | None = None) -> Graph:
    """The graph: observations ``images`` (N, 784) in [0, 1] and ``speech`` (N, D) -> the
    multimodal VAE (node ``model``) -> the mixture (node ``"gmm"``)."""
    if model not in MODELS:
        raise ConfigError(f"unknown model {model!r}; use one of {list(MODELS)}")
    if prior not in PRIORS:
        raise ConfigError(f"unknown prior {prior!r}; use one of {list(PRIORS)}")
    if images.shape[0] != speech.shape[0]:
        raise DataError(f"{images.shape[0]} images but {speech.shape[0]} utterances: pairs must align")
    graph = Graph(seed=seed, device=device)
    graph.add(Observation("images", images))
    graph.add(Observation("speech", speech))
    options = {"likelihoods": {"image": "bernoulli", "speech": "gaussian"}} | dict(encoder or {})
    graph.add(MODELS[model](model, {"image": images.shape[1], "speech": speech.shape[1]}, z_dim=z_dim,
                            seed=seed, **options))
    if prior == "gibbs":
        graph.add(GMM("gmm", n_clusters=n_categories, dim=z_dim, seed=seed, **(gmm or {})))
    else:
        graph.add(MixturePrior("gmm", n_clusters=n_categories, dim=z_dim, seed=seed, **(gmm or {})))
    graph.observe("images", f"{model}.image")
    graph.observe("speech", f"{model}.speech")
    if mask is not None:
        graph.add(Observation("mask", mask))
        graph.observe("mask", f"{model}.mask")
    graph.head_to_tail(upper="gmm.x", lower=f"{model}.z", feedback=linked)
    graph.validate()
    return graph


def run_multimodal(images, speech, labels, *, rounds: int, mode: str = "alternate", warmup: int = 1,
                   epochs: int = 10, batch_size: int = 500, checkpoint_dir=None, resume: bool = True,
                   progress: bool = True, prefix: str = "", **build) -> dict:
    """Build and train; ``mode="joint"`` trains jointly after ``warmup`` alternate rounds."""
    graph = build_multimodal_gmm(images, speech, **build)
    options = dict(labels=labels, checkpoint_dir=checkpoint_dir, resume=resume, progress=progress, prefix=prefix)
    if mode == "joint":
        options |= dict(epochs=epochs, batch_size=batch_size, warmup=warmup)
    history = train(graph, rounds, mode=mode, **options)
    return {"graph": graph, "history": history}


def build_mvae_gmm(images, speech, **options) -> Graph:
    """MVAE+GMM over paired ``images`` (N, 784) in [0, 1] and ``speech`` (N, D) vectors;
    options as :func:`build_multimodal_gmm` (``prior``, ``mask``, ...)."""
    return build_multimodal_gmm(images, speech, model="mvae", **options)


def build_jmvae_gmm(images, speech, **options) -> Graph:
    """JMVAE+GMM over paired ``images`` (N, 784) in [0, 1] and ``speech`` (N, D) vectors;
    options as :func:`build_multimodal_gmm` (``prior``, ``mask``, ...)."""
    return build_multimodal_gmm(images, speech, model="jmvae", **options)


def run_mvae_gmm(images, speech, labels, *, rounds: int, mode: str = "alternate", **options) -> dict:
    """Build MVAE+GMM and train it, alternately or jointly; returns ``{"graph", "history"}``."""
    return run_multimodal(images, speech, labels, rounds=rounds, mode=mode, model="mvae", **options)


def run_jmvae_gmm(images, speech, labels, *, rounds: int, mode: str = "alternate", **options) -> dict:
    """Build JMVAE+GMM and train it, alternately or jointly; returns ``{"graph", "history"}``."""
    return run_multimodal(images, speech, labels, rounds=rounds, mode=mode, model="jmvae", **options)


# --- the benchmark: `serket bench multimodal` -------------------------------------------------
# Neuro-SERKET's fully linked row (Taniguchi et al., 2020), for reference: GMM on images, LDA on speech
NEURO_SERKET_FULL = {"gmm (images)": 91.0, "lda (speech)": 93.7}
CONFIGS = ["mvae-alternate", "mvae-joint", "jmvae-alternate", "jmvae-joint"]


def bench_parser():
    from serket.bench.runner import benchmark_parser, nonnegative_float, nonnegative_int, positive_int
    from serket.datasets.spoken_digits import add_speech_option

    p = benchmark_parser("serket bench multimodal",
                         "MVAE+GMM and JMVAE+GMM on MNIST and spoken digits, trained alternately and jointly.",
                         rounds=8, out="results/multimodal")
    p.set_defaults(configs=CONFIGS)
    p._option_string_actions["--configs"].choices = CONFIGS
    add_speech_option(p)
    p.add_argument("--per-class", type=positive_int, default=270,
                   help="training image-utterance pairs per digit (at most the training utterances per digit: "
                        "270 for FSDD, takes 5-49; the held-out pairs are the test takes 0-4 with MNIST test images)")
    p.add_argument("--speech-features", default="mfcc", choices=["mfcc", "logmel"],
                   help="pooled MFCC+deltas or pooled log-mel energies per utterance")
    p.add_argument("--hidden", type=positive_int, nargs="+", default=[512, 256], help="encoder and decoder hidden widths")
    p.add_argument("--z-dim", type=positive_int, default=10, help="dimensions of the shared latent")
    p.add_argument("--first-epochs", type=positive_int, default=50, help="epochs of the first (warmup) round")
    p.add_argument("--epochs", type=positive_int, default=10, help="epochs per later round")
    p.add_argument("--speech-weight", type=nonnegative_float, default=1.0, help="weight of the speech reconstruction")
    p.add_argument("--kl-anneal", type=nonnegative_int, default=25,
                   help="epochs of KL annealing in the first round (0: off)")
    p.add_argument("--alpha", type=nonnegative_float, default=1.0, help="JMVAE's KL weight toward the unimodal encoders")
    p.add_argument("--prior", default="mixture", choices=PRIORS,
                   help="the mixture over the latent, in every row: 'mixture' (EM alternately, gradient "
                        "jointly, likelihood-chosen restarts) or 'gibbs' (the Bayesian GMM of Neuro-SERKET)")
    p.add_argument("--gmm-sweeps", type=positive_int, default=50, help="GMM Gibbs sweeps per round (--prior gibbs)")
    return p


PRESETS = {"quick": {"per_class": 20, "rounds": 2, "epochs": 2, "first_epochs": 3, "gmm_sweeps": 5,
                     "seeds": lambda args: args.seeds[:1]}}


def bench_main(argv=None) -> dict:
    from pathlib import Path

    from serket.audio.features import speech_features
    from serket.bench.drawing import draw_graph
    from serket.bench.evaluation import DigitClassifier, coherence, held_out_figures
    from serket.bench.reporting import format_mean_sd, plot_image_grid, plot_latent, write_json, write_text
    from serket.bench.runner import parse_benchmark_args, run_benchmark
    from serket.datasets.mnist import load_mnist, load_mnist_subset
    from serket.datasets.pairing import held_out_images, pair_by_digit
    from serket.datasets.spoken_digits import load_speech

    args = parse_benchmark_args(bench_parser(), argv, presets=PRESETS)
    digits = load_speech(args.speech, data_dir=args.data_dir)
    kind = "SYNTHETIC speech" if digits.synthetic else "real recordings"
    _, _, info = load_mnist("train", data_dir=args.data_dir, verbose=False)
    digits, held_out_digits = digits.split()
    data_line = (f"data: images MNIST train ({info['source']}), speech {digits.source} — {kind}; "
                 f"{args.per_class} image-utterance pairs per digit for training, utterances of takes "
                 f"{digits.test_takes} and above")
    held_out_line = (f"MNIST test images paired with the utterances of takes 0-{digits.test_takes - 1} "
                     f"({len(held_out_digits)} pairs), never seen in training; each component named by the digit "
                     f"it was matched to on the training pairs")
    device = torch.device(args.device)
    # each set standardised on its own, so nothing of the held-out audio reaches training
    speech_all = speech_features(digits, args.speech_features, device=device)
    held_out_speech = speech_features(held_out_digits, args.speech_features, device=device)

    # the evaluation classifier: MNIST test split only (trained at the first run's end, so that
    # the data line is the first thing the benchmark prints)
    evaluation: dict = {}
    classifier_info: dict = {}

    def classifier():
        if not evaluation:
            test_x, test_y, _ = load_mnist("test", data_dir=args.data_dir, verbose=False)
            test_x = (test_x.reshape(-1, 784).float() / 255.0).to(device)
            n_eval = 2000 if args.quick else test_x.shape[0]
            net = DigitClassifier()
            accuracy = net.fit(test_x[:n_eval], test_y.long().to(device)[:n_eval], epochs=1 if args.quick else 3,
                               held_out=min(1000, n_eval // 5))
            evaluation.update(net=net, accuracy=accuracy)
            classifier_info.update(trained_on=f"MNIST test split, {n_eval} images", held_out=min(1000, n_eval // 5),
                                   held_out_accuracy=accuracy)
            print(f"evaluation classifier (MNIST test split only): held-out accuracy {accuracy * 100:.1f}%", flush=True)
        return evaluation["net"]

    coherences: dict[str, dict[int, dict]] = {}
    held_out_coherences: dict[str, dict[int, dict]] = {}

    def run_one(config, seed, checkpoint_dir):
        model, mode = config.split("-")
        x, y = load_mnist_subset(per_class=args.per_class, seed=seed, data_dir=args.data_dir)
        images_idx, speech_idx = pair_by_digit(y, digits.labels, seed=seed)
        images, speech, labels = x[images_idx], speech_all[speech_idx.to(device)], y[images_idx]
        encoder = {"hidden": tuple(args.hidden), "epochs": args.epochs, "first_epochs": args.first_epochs,
                   "weights": {"speech": args.speech_weight}, "kl_anneal": args.kl_anneal}
        if model == "jmvae":
            encoder["alpha"] = args.alpha
        prior = args.prior
        result = run_multimodal(images, speech, labels, rounds=args.rounds, mode=mode, warmup=1,
                                epochs=args.epochs, model=model, prior=prior, z_dim=args.z_dim, seed=seed,
                                device=device, encoder=encoder,
                                gmm={"sweeps": args.gmm_sweeps} if prior == "gibbs" else {},
                                checkpoint_dir=checkpoint_dir, resume=not args.no_resume,
                                prefix=f"[{config} seed {seed}] ")
        node = result["graph"].node(model)
        result.update(labels=labels, images=images.to(device), speech=speech, model=model)
        coherences.setdefault(config, {})[seed] = coherence(node, images.to(device), speech, labels, classifier())
        result["history"][-1]["coherence"] = coherences[config][seed]
        test_images, speech_idx, test_labels = held_out_images(held_out_digits.labels, seed=seed,
                                                               data_dir=args.data_dir)
        test_images, test_speech = test_images.to(device), held_out_speech[speech_idx.to(device)]
        subsets = {"both": {"images": test_images, "speech": test_speech}, "images only": {"images": test_images},
                   "speech only": {"speech": test_speech}}
        result["held_out"] = held_out_figures(result["graph"], subsets, test_labels,
                                              {"gmm": result["graph"].node("gmm").predict()}, labels)
        held_out_coherences.setdefault(config, {})[seed] = coherence(node, test_images, test_speech, test_labels,
                                                                     classifier())
        return result

    out = Path(args.out)
    title = "Multimodal VAEs + GMM: one latent for image and speech" + (" (SYNTHETIC speech)" if digits.synthetic else "")
    bench = run_benchmark(title=title, data_line=data_line, configs=args.configs, seeds=args.seeds,
                          run_one=run_one, nodes="gmm", out=out, published={},
                          settings={k: v for k, v in vars(args).items() if k != "out"},
                          compare=("mvae-alternate", "mvae-joint") if {"mvae-alternate", "mvae-joint"} <= set(args.configs) else None,
                          extra_info={"synthetic": digits.synthetic, "speech_source": digits.source,
                                      "image_source": info, "evaluation_classifier": classifier_info,
                                      "coherence": coherences, "held_out_coherence": held_out_coherences,
                                      "reference_neuro_serket_full": NEURO_SERKET_FULL},
                          held_out_line=held_out_line)

    # coherence and per-modality terms beside the clustering table
    kinds = ("speech_to_image", "image_to_image", "both_to_image")
    lines = ["", "| configuration | latent clustering accuracy (%) | speech→image coherence (%) | "
                 "image→image coherence (%) | both→image coherence (%) | held-out speech→image (%) | "
                 "held-out image→image (%) | held-out both→image (%) |", "|---" * 8 + "|"]
    for config in args.configs:
        acc = bench["summary"][config]["gmm"]["accuracy"]
        cells = [format_mean_sd([table[config][s][k] for s in args.seeds])
                 for table in (coherences, held_out_coherences) for k in kinds]
        lines.append(f"| {config} | {format_mean_sd(acc)} | " + " | ".join(cells) + " |")
    lines += ["", f"coherence: generated images classified by a CNN trained on the MNIST test split only "
                  f"(held-out accuracy {evaluation['accuracy'] * 100:.1f}%).",
              f"reference, Neuro-SERKET fully linked (published): GMM on images {NEURO_SERKET_FULL['gmm (images)']}, "
              f"LDA on speech {NEURO_SERKET_FULL['lda (speech)']}."]
    table = "\n".join(lines)
    print(table, flush=True)
    md = (out / "results.md").read_text()
    write_text(out / "results.md", md + table + "\n")

    # figures: speech-to-image generations per digit, latent projections, loss terms
    seed = args.seeds[-1]
    terms = {}
    for config, by_seed in bench["results"].items():
        result = by_seed[seed]
        graph, labels, node = result["graph"], result["labels"], result["graph"].node(result["model"])
        rows = []
        for digit in range(10):
            pick = (labels == digit).nonzero().squeeze(1)[:8].to(device)
            rows.append(node.cross_generate({"speech": result["speech"][pick]}, "image").cpu().view(-1, 28, 28))
        plot_image_grid(rows, out / f"speech_to_image_{config}.png", row_labels=[str(d) for d in range(10)],
                        title=f"{config}: images generated from speech alone (seed {seed}), "
                              "one row per spoken digit, one column per utterance")
        plot_latent(node.latent_.cpu().numpy(), graph.node("gmm").predict().cpu().numpy(),
                    out / f"latent_{config}.png", title=f"{config}: shared latent (PCA), coloured by cluster",
                    colour_label="mixture component (its own numbering)")
        terms[config] = node.diagnostics()
    draw_graph(graph, out / "graph.png", title=f"the graph of '{config}' (every row has this shape: a multimodal VAE, "
                                        "MVAE or JMVAE, under a mixture)")
    write_json(out / "loss_terms.json", {"data": data_line, "seed": seed, "terms": terms})
    return bench
