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

from pathlib import Path

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


CLASSIFIER_FORMAT = "neuro-serket-evaluation-classifier/1"


def _bench_data(args) -> dict:
    """The split speech as pooled feature vectors, each set standardised on its own (nothing of
    the held-out audio reaches training)."""
    from serket.audio.features import speech_features
    from serket.datasets.spoken_digits import load_speech

    digits, held_out_digits = load_speech(args.speech, data_dir=args.data_dir).split()
    device = torch.device(args.device)
    return {"digits": digits, "held_out_digits": held_out_digits,
            "speech": speech_features(digits, args.speech_features, device=device),
            "held_out_speech": speech_features(held_out_digits, args.speech_features, device=device)}


def _evaluation_classifier(args, path):
    """The digit classifier that scores generated images, trained on the MNIST test split only,
    once per benchmark (its file in ``--out``, so that every run, in any process, scores with the
    same one, and a resumed benchmark does not train it again). Returns (net, info)."""
    from serket.bench.evaluation import DigitClassifier
    from serket.checkpoint import load_checkpoint, save_checkpoint
    from serket.datasets.mnist import load_mnist

    device = torch.device(args.device)
    net = DigitClassifier()
    if not Path(path).is_file():
        test_x, test_y, _ = load_mnist("test", data_dir=args.data_dir, verbose=False)
        test_x = (test_x.reshape(-1, 784).float() / 255.0).to(device)
        n_eval = 2000 if args.quick else test_x.shape[0]
        held_out = min(1000, n_eval // 5)
        accuracy = net.fit(test_x[:n_eval], test_y.long().to(device)[:n_eval], epochs=1 if args.quick else 3,
                           held_out=held_out)
        info = {"trained_on": f"MNIST test split, {n_eval} images", "held_out": held_out,
                "held_out_accuracy": accuracy}
        save_checkpoint(path, {"state": {k: v.cpu() for k, v in net.state_dict().items()}, "info": info},
                        file_format=CLASSIFIER_FORMAT)
    saved = load_checkpoint(path, file_format=CLASSIFIER_FORMAT, what="evaluation classifier",
                            advice=f"delete {path} to train it again")
    net.load_state_dict(saved["state"])
    net.to(device).eval()
    return net, saved["info"]


def _loaded_classifier(given) -> tuple:
    return _evaluation_classifier(*given)


def bench_run(args, classifier_path, config: str, seed: int, checkpoint_dir, draw: bool) -> dict:
    """One run of the benchmark (``args``: its parsed options): train, score the held-out pairs
    and the coherence of generated images, and, where ``draw``, write this configuration's plots
    and loss terms. Picklable, as the sweep needs."""
    from serket.bench.drawing import draw_graph
    from serket.bench.evaluation import coherence, held_out_figures
    from serket.bench.reporting import plot_image_grid, plot_latent
    from serket.bench.sweep import per_process
    from serket.datasets.mnist import load_mnist_subset
    from serket.datasets.pairing import held_out_images, pair_by_digit

    data = per_process(_bench_data, args)
    classifier, _ = per_process(_loaded_classifier, (args, classifier_path))
    device = torch.device(args.device)
    model, mode = config.split("-")
    x, y = load_mnist_subset(per_class=args.per_class, seed=seed, data_dir=args.data_dir)
    images_idx, speech_idx = pair_by_digit(y, data["digits"].labels, seed=seed)
    images, speech, labels = x[images_idx].to(device), data["speech"][speech_idx.to(device)], y[images_idx]
    encoder = {"hidden": tuple(args.hidden), "epochs": args.epochs, "first_epochs": args.first_epochs,
               "weights": {"speech": args.speech_weight}, "kl_anneal": args.kl_anneal}
    if model == "jmvae":
        encoder["alpha"] = args.alpha
    result = run_multimodal(x[images_idx], speech, labels, rounds=args.rounds, mode=mode, warmup=1,
                            epochs=args.epochs, model=model, prior=args.prior, z_dim=args.z_dim, seed=seed,
                            device=device, encoder=encoder,
                            gmm={"sweeps": args.gmm_sweeps} if args.prior == "gibbs" else {},
                            checkpoint_dir=checkpoint_dir, resume=not args.no_resume,
                            prefix=f"[{config} seed {seed}] ")
    graph = result["graph"]
    node = graph.node(model)
    figures = {"coherence": coherence(node, images, speech, labels, classifier)}
    test_images, test_idx, test_labels = held_out_images(data["held_out_digits"].labels, seed=seed,
                                                         data_dir=args.data_dir)
    test_images, test_speech = test_images.to(device), data["held_out_speech"][test_idx.to(device)]
    subsets = {"both": {"images": test_images, "speech": test_speech}, "images only": {"images": test_images},
               "speech only": {"speech": test_speech}}
    held_out = held_out_figures(graph, subsets, test_labels, {"gmm": graph.node("gmm").predict()}, labels)
    figures["held_out_coherence"] = coherence(node, test_images, test_speech, test_labels, classifier)
    out = Path(args.out)
    if draw:
        # speech-to-image generations per digit, the latent, the loss terms, the graph
        rows = []
        for digit in range(10):
            pick = (labels == digit).nonzero().squeeze(1)[:8].to(device)
            rows.append(node.cross_generate({"speech": speech[pick]}, "image").cpu().view(-1, 28, 28))
        plot_image_grid(rows, out / f"speech_to_image_{config}.png", row_labels=[str(d) for d in range(10)],
                        title=f"{config}: images generated from speech alone (seed {seed}), "
                              "one row per spoken digit, one column per utterance")
        plot_latent(node.latent_.cpu().numpy(), graph.node("gmm").predict().cpu().numpy(),
                    out / f"latent_{config}.png", title=f"{config}: shared latent (PCA), coloured by cluster",
                    colour_label="mixture component (its own numbering)")
        figures["loss_terms"] = node.diagnostics()
        if config == args.configs[-1]:
            draw_graph(graph, out / "graph.png", title=f"the graph of '{config}' (every row has this shape: a "
                                                      "multimodal VAE, MVAE or JMVAE, under a mixture)")
    return {"history": result["history"], "held_out": held_out, "figures": figures}


def bench_main(argv=None) -> dict:
    from functools import partial

    from serket.bench.reporting import format_mean_sd, write_json, write_text
    from serket.bench.runner import parse_benchmark_args, run_benchmark
    from serket.datasets.mnist import load_mnist
    from serket.datasets.spoken_digits import load_speech

    args = parse_benchmark_args(bench_parser(), argv, presets=PRESETS)
    digits, held_out_digits = load_speech(args.speech, data_dir=args.data_dir).split()
    kind = "SYNTHETIC speech" if digits.synthetic else "real recordings"
    _, _, info = load_mnist("train", data_dir=args.data_dir, verbose=False)
    data_line = (f"data: images MNIST train ({info['source']}), speech {digits.source} — {kind}; "
                 f"{args.per_class} image-utterance pairs per digit for training, utterances of takes "
                 f"{digits.test_takes} and above")
    held_out_line = (f"MNIST test images paired with the utterances of takes 0-{digits.test_takes - 1} "
                     f"({len(held_out_digits)} pairs), never seen in training; each component named by the digit "
                     f"it was matched to on the training pairs")
    synthetic, source = digits.synthetic, digits.source
    del digits, held_out_digits  # the runs load what they need, in whichever process runs them
    out = Path(args.out)
    classifier_path, classifier_info = out / "evaluation_classifier.pt", {}

    def prepare():  # once, here, before any run: every run scores with the same classifier
        classifier_info.update(_evaluation_classifier(args, classifier_path)[1])
        print(f"evaluation classifier (MNIST test split only): held-out accuracy "
              f"{classifier_info['held_out_accuracy'] * 100:.1f}%", flush=True)

    title = "Multimodal VAEs + GMM: one latent for image and speech" + (" (SYNTHETIC speech)" if synthetic else "")
    bench = run_benchmark(title=title, data_line=data_line, configs=args.configs, seeds=args.seeds,
                          run=partial(bench_run, args, classifier_path), nodes="gmm", out=out, published={},
                          workers=args.workers, threads=args.threads, ray=args.ray, prepare=prepare,
                          settings={k: v for k, v in vars(args).items() if k != "out"},
                          compare=("mvae-alternate", "mvae-joint") if {"mvae-alternate", "mvae-joint"} <= set(args.configs) else None,
                          extra_info={"synthetic": synthetic, "speech_source": source,
                                      "image_source": info, "evaluation_classifier": classifier_info,
                                      "reference_neuro_serket_full": NEURO_SERKET_FULL},
                          held_out_line=held_out_line)

    # coherence and per-modality terms beside the clustering table
    kinds = ("speech_to_image", "image_to_image", "both_to_image")
    lines = ["", "| configuration | latent clustering accuracy (%) | speech→image coherence (%) | "
                 "image→image coherence (%) | both→image coherence (%) | held-out speech→image (%) | "
                 "held-out image→image (%) | held-out both→image (%) |", "|---" * 8 + "|"]
    for config in args.configs:
        acc = bench["summary"][config]["gmm"]["accuracy"]
        cells = [format_mean_sd([r["figures"][table][k] for r in bench["runs"][config]])
                 for table in ("coherence", "held_out_coherence") for k in kinds]
        lines.append(f"| {config} | {format_mean_sd(acc)} | " + " | ".join(cells) + " |")
    lines += ["", f"coherence: generated images classified by a CNN trained on the MNIST test split only "
                  f"(held-out accuracy {classifier_info['held_out_accuracy'] * 100:.1f}%).",
              f"reference, Neuro-SERKET fully linked (published): GMM on images {NEURO_SERKET_FULL['gmm (images)']}, "
              f"LDA on speech {NEURO_SERKET_FULL['lda (speech)']}."]
    table = "\n".join(lines)
    print(table, flush=True)
    md = (out / "results.md").read_text()
    write_text(out / "results.md", md + table + "\n")
    seed = args.seeds[-1]
    write_json(out / "loss_terms.json", {"data": data_line, "seed": seed,
                                         "terms": {c: r[seed]["figures"]["loss_terms"]
                                                   for c, r in bench["results"].items()}})
    return bench
