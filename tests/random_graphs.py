"""Random small valid graphs for fuzzing, and the checks every one of them must pass.

Shared by ``tests/test_fuzz.py`` (a fixed set of seeds, quick) and ``benchmarks/fuzz_graphs.py``
(the long fuzz). :func:`random_graph` draws, from a ``random.Random``, a graph of one to three
components on the same ``N`` items, each component a pattern the library documents:

* an encoder (``VAE``, a stack of two VAEs, ``MVAE`` with or without missing modalities,
  ``JMVAE``) on observed data, optionally under a mixture (``GMM`` or ``MixturePrior``) by a
  head-to-tail link, feedback on or off;
* a mixture (``GMM`` or ``MixturePrior``) on observed vectors;
* an ``LDA`` on observed bags of words (counts, or word distributions), one or two modalities;
* a ``Recognizer`` on tiny synthetic speech (waveforms through the front end, or frames drawn
  directly), alone or joined to an ``LDA`` by a head-to-head SIR node;
* two toy Gaussian experts (:class:`GaussianExpert`, defined here: no library module both sends
  and accepts Gaussians on one port) joined by a head-to-head product of experts;

then, often, a tail-to-tail combiner over two or three of the categorical ports of equal size
(with the joint fit of the shared category or messages multiplied only, evidence weights and
prior exponents or not, feedback on or off). Sizes and settings are drawn within their valid
ranges; training is alternate, or joint where a differentiable module is present.

:func:`check_graph` trains a graph for two rounds checking every message it publishes after each
round, then trains a fresh copy for one round with a checkpoint and another fresh copy to two
rounds from that checkpoint, and compares the final messages and predictions with the
uninterrupted run's (``torch.equal``).

Reproduce one graph: ``graph_from_seed(seed)`` with the seed its description names (or
``python benchmarks/fuzz_graphs.py --replay SEED``).
"""

from __future__ import annotations

import math
import random
import shutil
import tempfile
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from serket.connections import Observation, product_of_gaussians
from serket.graph import Graph
from serket.messages import Categorical, Counts, Gaussian, Message, NBest, Sequences
from serket.module import Module, Port
from serket.modules.asr import Recognizer
from serket.modules.gmm import GMM, ClusterCollapseWarning
from serket.modules.lda import LDA
from serket.modules.mixture import MixturePrior
from serket.modules.multimodal import JMVAE, MVAE
from serket.modules.vae import VAE
from serket.seeding import seed_everything
from serket.training import train

__all__ = ["GaussianExpert", "FuzzGraph", "FuzzResult", "random_graph", "graph_from_seed", "graph_seed",
           "check_graph", "nonfinite_messages", "differences", "REQUIRED_TAGS"]

#: What the graphs of a fuzz run must cover between them (see ``FuzzGraph.tags``).
REQUIRED_TAGS = frozenset({
    "VAE", "GMM", "LDA", "Recognizer", "MVAE", "JMVAE", "MixturePrior",
    "data", "head_to_tail:feedback", "head_to_tail:one-way",
    "tail_to_tail:2", "tail_to_tail:3", "tail_to_tail:restarts", "tail_to_tail:one-way",
    "head_to_head:sir", "head_to_head:sir-one-way", "head_to_head:poe", "mvae:missing-modalities",
    "speech:waveforms", "speech:frames", "alternate", "joint",
})


def graph_seed(base: int, index: int) -> int:
    """The seed of the ``index``-th graph of a fuzz run seeded ``base``."""
    return int(base) * 100_003 + int(index)


# --- a toy module for the head-to-head product of experts ---------------------------------------
class GaussianExpert(Module):
    """A toy Gaussian expert (not a library module): a per-item diagonal Gaussian belief over a
    D-vector. It observes noisy vectors on ``x``; on ``z`` it sends its belief and takes another
    expert's, which it multiplies with its own evidence (:func:`product_of_gaussians`)."""

    def __init__(self, name, dim, *, noise: float = 0.5, seed=0, device="cpu"):
        super().__init__(name, seed=seed, device=device)
        self.dim, self.noise = int(dim), float(noise)
        self.mean_ = self.var_ = None

    def ports(self):
        return {"x": Port("x", accepts=("samples",), size=self.dim),
                "z": Port("z", sends=("gaussian",), accepts=("gaussian",), size=self.dim)}

    def update(self):
        x = self.inbox["x"].values
        jitter = 0.1 * torch.randn(x.shape, generator=self.generator, device=self.device)
        means, variances = [x + jitter], [torch.full_like(x, self.noise ** 2)]
        if "z" in self.inbox:
            means.append(self.inbox["z"].mean)
            variances.append(self.inbox["z"].var)
        self.mean_, self.var_ = product_of_gaussians(means, variances)

    def publish(self):
        return {} if self.mean_ is None else {"z": Gaussian(self.mean_, self.var_)}


# --- the graph description ---------------------------------------------------------------------
class _Data:
    """Observation data drawn lazily (once, on first use) from its own seed, then copied."""

    def __init__(self, make, seed: int):
        self._make, self._seed, self._value = make, seed, None

    def get(self):
        if self._value is None:
            self._value = self._make(torch.Generator().manual_seed(self._seed))
        value = self._value
        if isinstance(value, Message):
            return type(value)(**{k: v.clone() for k, v in value._tensors().items()})
        return value.clone()


@dataclass
class FuzzGraph:
    """A drawn graph: how to build it (``build()``, a fresh graph each call) and train it."""

    seed: int
    n_items: int
    graph_seed: int | None
    mode: str
    train_options: dict
    schedule_repeats: int
    steps: list = field(default_factory=list)  # ("add", cls, args, kwargs) | (connection, args, kwargs)
    parts: list = field(default_factory=list)  # pieces of the description
    tags: set = field(default_factory=set)
    labels: _Data | None = None

    @property
    def description(self) -> str:
        options = ", ".join(f"{k}={v}" for k, v in self.train_options.items())
        mode = f"{self.mode}({options})" if options else self.mode
        repeat = f", schedule x{self.schedule_repeats}" if self.schedule_repeats > 1 else ""
        return (f"graph seed {self.seed}: N={self.n_items}, Graph(seed={self.graph_seed}), {mode}{repeat}; "
                + "; ".join(self.parts))

    def build(self) -> Graph:
        graph = Graph(seed=self.graph_seed)
        for kind, *rest in self.steps:
            if kind == "add":
                cls, args, kwargs = rest
                args = [a.get() if isinstance(a, _Data) else a for a in args]
                graph.add(cls(*args, **kwargs))
            else:
                args, kwargs = rest
                getattr(graph, kind)(*args, **kwargs)
        graph.validate()
        return graph

    def schedule(self, graph: Graph):
        return None if self.schedule_repeats == 1 else graph.schedule() * self.schedule_repeats

    def train(self, graph: Graph, rounds: int, **kwargs):
        labels = None if self.labels is None else self.labels.get()
        return train(graph, rounds, mode=self.mode, labels=labels, progress=False,
                     schedule=self.schedule(graph), **self.train_options, **kwargs)


class _Builder:
    """Draws one graph: components on the same items, then the links between them."""

    def __init__(self, rng: random.Random, seed: int):
        self.rng = rng
        self.n = rng.randint(12, 32)
        self.n_classes = rng.randint(2, 4)
        self.k_shared = rng.randint(2, min(5, self.n))
        graph_seed = None if rng.random() < 0.1 else rng.randrange(10**6)
        self.fg = FuzzGraph(seed=seed, n_items=self.n, graph_seed=graph_seed, mode="alternate",
                            train_options={}, schedule_repeats=1)
        labels_seed = rng.randrange(2**31)
        n, c = self.n, self.n_classes
        self.fg.labels = _Data(lambda g: torch.randperm(n, generator=g) % c, labels_seed)
        self.counter = 0
        self.providers: list[tuple[str, int, str]] = []  # (module name, K, class name): categorical ports "c"
        self.differentiable = False
        self.needs_warmup = False  # a differentiable module whose input comes from another module
        self.vectors: list[tuple[str, int]] = []  # observations of real vectors: (name, width)

    # helpers ---------------------------------------------------------------------------------
    def name(self, stem: str) -> str:
        self.counter += 1
        return f"{stem}{self.counter}"

    def module_seed(self) -> int:
        return self.rng.choice([0, self.rng.randrange(1000)])

    def add(self, cls, *args, **kwargs):
        self.fg.steps.append(("add", cls, list(args), kwargs))
        if cls is not Observation:
            self.fg.tags.add(cls.__name__)

    def connect(self, kind, *args, **kwargs):
        self.fg.steps.append((kind, list(args), kwargs))

    def observe(self, make, endpoint: str, what: str, dim: int | None = None) -> str:
        """An observation of data ``make(labels, generator)`` feeding ``endpoint``; ``dim``: the
        width of real-valued vectors, which a later mixture may observe too."""
        obs = self.name("obs")
        labels = self.fg.labels

        def draw(g, make=make):
            return make(labels.get(), g)

        self.add(Observation, obs, _Data(draw, self.rng.randrange(2**31)))
        self.connect("observe", obs, endpoint)
        self.fg.tags.add("data")
        self.fg.parts.append(f"{obs}[{what}] -> {endpoint}")
        if dim is not None:
            self.vectors.append((obs, dim))
        return obs

    def batch(self) -> int:
        return 1 if self.rng.random() < 0.03 else self.rng.randint(2, self.n + 4)

    def k(self) -> int:
        r = self.rng.random()
        if r < 0.75:
            return self.k_shared
        return self.n if r < 0.8 else self.rng.randint(1, min(6, self.n))  # as many categories as items, now and then

    # data ------------------------------------------------------------------------------------
    def blobs(self, dim: int, spread: float, *, unit: bool = False, binary: bool = False):
        # now and then degenerate data: every item one of two points
        degenerate = self.rng.random() < 0.04
        if degenerate:
            self.fg.tags.add("data:degenerate")
        scale = 1.0 if unit or binary or self.rng.random() < 0.9 else self.rng.choice([1e-3, 1e3])
        if scale != 1.0:
            self.fg.tags.add("data:scaled")

        def make(labels, g):
            centres = spread * torch.randn(int(labels.max()) + 1, dim, generator=g)
            x = centres[labels] + torch.randn(labels.shape[0], dim, generator=g)
            if degenerate:
                x = x[torch.arange(labels.shape[0]) % 2]
            x = scale * x
            if binary:
                return (torch.rand(x.shape, generator=g) < torch.sigmoid(x)).float()
            return torch.sigmoid(x) if unit else x
        return make

    @staticmethod
    def counts(vocab: int, length: int, *, empty_rows: bool, as_probs: bool = False):
        def make(labels, g):
            probs = torch.softmax(2.0 * torch.randn(int(labels.max()) + 1, vocab, generator=g), 1)
            if as_probs:
                noisy = probs[labels] + 0.2 * torch.rand(labels.shape[0], vocab, generator=g)
                return Categorical(noisy / noisy.sum(1, keepdim=True))
            words = torch.multinomial(probs[labels], length, replacement=True, generator=g)
            bags = torch.zeros(labels.shape[0], vocab).scatter_add_(1, words, torch.ones(words.shape))
            if empty_rows:
                bags[torch.randint(labels.shape[0], (2,), generator=g)] = 0.0
            return Counts(bags)
        return make

    @staticmethod
    def frames(dim: int):
        """Sequences drawn directly: each class a pair of 'phones', 3-10 frames an item."""
        def make(labels, g):
            n = labels.shape[0]
            phones = 3.0 * torch.randn(4, dim, generator=g)
            words = torch.randint(4, (int(labels.max()) + 1, 2), generator=g)
            lengths = torch.randint(3, 11, (n,), generator=g)
            values = torch.zeros(n, 10, dim)
            for i in range(n):
                half = int(lengths[i]) // 2
                a, b = words[int(labels[i])].tolist()
                values[i, :half], values[i, half:lengths[i]] = phones[a], phones[b]
                values[i, :lengths[i]] += 0.5 * torch.randn(int(lengths[i]), dim, generator=g)
            return Sequences(values, lengths)
        return make

    @staticmethod
    def waveforms(n_mfcc: int, n_speakers: int):
        """Tiny synthetic utterances (tones per class, noise, silence around) through the front end."""
        def make(labels, g):
            from serket.audio import speech_sequences

            rate = 8000
            tones = 300.0 + 1500.0 * torch.rand(int(labels.max()) + 1, 2, generator=g)
            waves, speakers = [], []
            for i, label in enumerate(labels.tolist()):
                samples = int(rate * (0.08 + 0.12 * float(torch.rand((), generator=g))))
                t = torch.arange(samples) / rate
                half = samples // 2
                f = torch.where(torch.arange(samples) < half, tones[label, 0], tones[label, 1])
                speaker = i % n_speakers
                voice = (0.5 + 0.5 * speaker) * torch.sin(2 * math.pi * f * (1 + 0.05 * speaker) * t)
                voice = voice + 0.05 * torch.randn(samples, generator=g)
                silence = 1e-3 * torch.randn(int(rate * 0.03), generator=g)
                waves.append(torch.cat([silence, voice, silence]))
                speakers.append(f"voice{speaker}")
            return speech_sequences(waves, rate, speakers, n_mfcc=n_mfcc)
        return make

    # components ------------------------------------------------------------------------------
    def vae_settings(self, x_dim):
        r = self.rng
        first = r.choice([None, None, 0, 1, 2])
        return dict(x_dim=x_dim, z_dim=r.randint(1, 4), epochs=r.choice([0, 1, 1, 2]), first_epochs=first,
                    batch_size=self.batch(), lr=r.choice([1e-3, 3e-3, 1e-2, 0.1]), kl_weight=r.choice([0.0, 0.5, 1.0, 2.0]),
                    restart=r.choice(["warm", "warm", "reinit"]), send=r.choice(["mean", "sample"]),
                    seed=self.module_seed())

    def vae(self, *, data=True, x_dim=None):
        """A VAE on observed data (or, ``data=False``, on another module's latent)."""
        r = self.rng
        name = self.name("vae")
        if data and r.random() < 0.2:
            side = r.choice([4, 8])
            settings = self.vae_settings(side * side) | dict(architecture="conv", hidden=(r.choice([4, 8]),))
            self.fg.tags.add("vae:conv")
        else:
            settings = self.vae_settings(x_dim or r.randint(2, 12)) | dict(hidden=r.choice([(), (6,), (8, 4)]))
        likelihood = r.choice(["bernoulli", "gaussian"]) if data else "gaussian"
        settings["likelihood"] = likelihood
        self.add(VAE, name, **settings)
        self.fg.parts.append(f"{name}=VAE({_short(settings)})")
        if data:
            binary = likelihood == "bernoulli" and r.random() < 0.5
            self.observe(self.blobs(settings["x_dim"], 2.0, unit=likelihood == "bernoulli", binary=binary),
                         f"{name}.x", "binary" if binary else "unit" if likelihood == "bernoulli" else "real",
                         dim=settings["x_dim"])
        self.differentiable = True
        return name, settings["z_dim"]

    def multimodal(self, cls):
        r = self.rng
        name = self.name(cls.__name__.lower())
        names = r.sample(["image", "speech", "touch"], r.randint(1, 3))
        modalities = {m: r.randint(2, 10) for m in names}
        likelihoods = {m: r.choice(["bernoulli", "gaussian"]) for m in names}
        settings = dict(likelihoods=likelihoods, z_dim=r.randint(1, 4), hidden=r.choice([(), (6,), (8, 4)]),
                        epochs=r.choice([0, 1, 1, 2]), first_epochs=r.choice([None, None, 0, 1]),
                        batch_size=self.batch(), lr=r.choice([1e-3, 1e-2, 0.1]), kl_weight=r.choice([0.0, 0.5, 1.0]),
                        kl_anneal=r.choice([0, 0, 1, 3]), send=r.choice(["mean", "sample"]), seed=self.module_seed())
        if r.random() < 0.3:
            settings["weights"] = {m: r.choice([0.0, 0.5, 2.0]) for m in names}
        if cls is JMVAE:
            settings["alpha"] = r.choice([0.0, 0.5, 1.0])
        self.add(cls, name, modalities, **settings)
        self.fg.parts.append(f"{name}={cls.__name__}({modalities}, {_short(settings)})")
        for m in names:
            unit = likelihoods[m] == "bernoulli"
            self.observe(self.blobs(modalities[m], 2.0, unit=unit), f"{name}.{m}", "unit" if unit else "real",
                         dim=modalities[m])
        if r.random() < 0.5:
            missing = cls is MVAE and len(names) > 1 and r.random() < 0.8
            n_mod = len(names)

            def mask(labels, g, missing=missing, n_mod=n_mod):
                m = torch.ones(labels.shape[0], n_mod)
                if missing:
                    m = (torch.rand(m.shape, generator=g) < 0.6).float()
                    m[torch.arange(m.shape[0]), torch.randint(n_mod, (m.shape[0],), generator=g)] = 1.0
                return m

            self.observe(mask, f"{name}.mask", "missing" if missing else "all present")
            if missing:
                self.fg.tags.add("mvae:missing-modalities")
        self.differentiable = True
        return name, settings["z_dim"]

    def gmm(self, dim: int):
        r = self.rng
        name = self.name("gmm")
        k = self.k()
        settings = dict(n_clusters=k, dim=dim, alpha=r.choice([0.05, 0.5, 1.0, 5.0, 50.0]),
                        kappa0=r.choice([1e-4, 0.01, 0.1, 1.0, 10.0]),
                        sweeps=r.randint(1, 3), block_size=r.choice([1, 5, 256]),
                        prior_variance=r.choice(["unit", "cluster"]), init=r.choice(["kmeans++", "random"]),
                        seed=self.module_seed())
        if r.random() < 0.3:
            settings["nu0"] = dim + r.choice([1.5, 3.0, 6.0])
        if r.random() < 0.2:  # an explicit prior; nu0 may then be as low as dim - 1 (exclusive)
            settings["mean0"] = [0.0] * dim
            settings["scale0"] = r.choice([0.5, 1.0, 4.0])
            if settings["prior_variance"] == "unit" and r.random() < 0.5:
                settings["nu0"] = dim - 0.5
        self.add(GMM, name, **settings)
        self.providers.append((name, k, "GMM"))
        self.fg.parts.append(f"{name}=GMM({_short(settings)})")
        return name

    def mixture(self, dim: int):
        r = self.rng
        name = self.name("mix")
        k = self.k()
        settings = dict(n_clusters=k, dim=dim, em_iterations=r.choice([0, 1, 3, 5]), restarts=r.randint(1, 3),
                        min_var=r.choice([1e-6, 1e-3, 1e-2, 0.1]), lr=r.choice([1e-3, 1e-2, 0.1]),
                        prior_variance=r.choice(["cluster", "unit"]), seed=self.module_seed())
        self.add(MixturePrior, name, **settings)
        self.providers.append((name, k, "MixturePrior"))
        self.fg.parts.append(f"{name}=MixturePrior({_short(settings)})")
        self.differentiable = True
        return name

    def lda(self, vocab: dict, *, tokens_needed: bool = False):
        r = self.rng
        name = self.name("lda")
        k = self.k()
        tokens = r.choice([1, 2.5, 5, 10, 10, 20]) if tokens_needed else r.choice([None, None, 1, 2.5, 5, 10, 20])
        block = r.choice([None, None, 7, 64] + ([1] if (tokens or 10) <= 10 else []))
        settings = dict(n_topics=k, vocab_sizes=vocab, alpha=r.choice([0.01, 0.1, 1.0, 5.0]),
                        beta=r.choice([0.01, 0.1, 1.0]),
                        tokens=tokens, sweeps=r.randint(1, 3), block_size=block, chains=r.choice([1, 1, 2]),
                        seed=self.module_seed())
        if len(vocab) > 1 and r.random() < 0.5:
            settings["weights"] = {m: r.choice([0.0, 0.5, 1.0, 2.0]) for m in vocab}
            if not any(settings["weights"].values()):
                settings["weights"][next(iter(vocab))] = 1.0
        self.add(LDA, name, **settings)
        self.providers.append((name, k, "LDA"))
        self.fg.parts.append(f"{name}=LDA({_short(settings)})")
        return name, settings

    def observe_words(self, lda: str, port: str, vocab: int, tokens) -> None:
        r = self.rng
        as_probs = tokens is not None and r.random() < 0.25
        empty = r.random() < 0.15
        self.observe(self.counts(vocab, r.randint(3, 20), empty_rows=empty, as_probs=as_probs), f"{lda}.{port}",
                     "word distributions" if as_probs else "counts with empty rows" if empty else "counts")

    # the components --------------------------------------------------------------------------
    def encoder_component(self):
        r = self.rng
        kind = r.choice(["vae", "vae", "stack", "mvae", "jmvae"])
        if kind == "vae":
            top, z = self.vae()
        elif kind == "stack":
            lower, z_lower = self.vae()
            top, z = self.vae(data=False, x_dim=z_lower)
            self.connect("head_to_tail", upper=f"{top}.x", lower=f"{lower}.z", feedback=False)
            self.fg.parts.append(f"{lower}.z -ht(one-way)-> {top}.x")
            self.fg.tags.add("head_to_tail:one-way")
            self.needs_warmup = True
        else:
            top, z = self.multimodal(MVAE if kind == "mvae" else JMVAE)
        if r.random() < 0.8:
            upper = self.gmm(z) if r.random() < 0.5 else self.mixture(z)
            feedback = r.random() < 0.7
            self.connect("head_to_tail", upper=f"{upper}.x", lower=f"{top}.z", feedback=feedback)
            self.fg.parts.append(f"{top}.z -ht({'feedback' if feedback else 'one-way'})-> {upper}.x")
            self.fg.tags.add("head_to_tail:feedback" if feedback else "head_to_tail:one-way")
            if upper.startswith("mix"):
                self.needs_warmup = True  # a mixture above an encoder starts jointly from a fitted latent

    def mixture_component(self):
        r = self.rng
        shared = [v for v in self.vectors if v[1] <= 6]
        if shared and r.random() < 0.3:  # data another module observes too
            obs, dim = r.choice(shared)
            name = self.gmm(dim) if r.random() < 0.5 else self.mixture(dim)
            self.connect("observe", obs, f"{name}.x")
            self.fg.parts.append(f"{obs} -> {name}.x")
            self.fg.tags.add("data:shared")
            return
        dim = r.randint(1, 4)
        name = self.gmm(dim) if r.random() < 0.5 else self.mixture(dim)
        self.observe(self.blobs(dim, 3.0), f"{name}.x", "real", dim=dim)

    def lda_component(self):
        r = self.rng
        vocab = {f"w{i}": r.randint(2, 12) for i in range(r.choice([1, 1, 2]))}
        name, settings = self.lda(vocab)
        for port, v in vocab.items():
            self.observe_words(name, port, v, settings["tokens"])

    def speech_component(self):
        r = self.rng
        name = self.name("asr")
        if r.random() < 0.5:
            n_mfcc = r.choice([4, 8, 13])
            dim, make, what = 3 * n_mfcc, self.waveforms(n_mfcc, r.randint(1, 3)), "waveforms"
        else:
            dim = r.randint(1, 5)
            make, what = self.frames(dim), "frames"
        self.fg.tags.add(f"speech:{what}")
        n_units = r.randint(2, 12)
        settings = dict(n_units=n_units, dim=dim, n_best=r.randint(1, 5), position_weight=r.choice([0.0, 1.0, 2.0]),
                        relearn_rate=r.choice([0.01, 0.3, 1.0]), shrinkage=r.choice([0.0, 0.1, 0.5, 0.9]),
                        variance_floor=r.choice([1e-6, 1e-3, 1e-1]), restarts=r.randint(1, 2), iterations=r.choice([0, 3, 10]),
                        discriminant=r.choice([None, None, r.randint(1, dim + 1)]), seed=self.module_seed())
        self.add(Recognizer, name, **settings)
        self.fg.parts.append(f"{name}=Recognizer({_short(settings)})")
        self.observe(make, f"{name}.audio", what)
        if r.random() < 0.8:
            vocab = {"w": n_units}
            if r.random() < 0.3:
                vocab["o"] = r.randint(2, 8)
            lda, lda_settings = self.lda(vocab, tokens_needed=True)
            if "o" in vocab:
                self.observe_words(lda, "o", vocab["o"], lda_settings["tokens"])
            words = self.name("words")
            feedback = r.random() < 0.7
            bag = r.choice(["scores", "uniform"])
            self.connect("head_to_head", words, proposer=f"{name}.w", weighter=f"{lda}.w", feedback=feedback,
                         bag_weights=bag)
            self.fg.parts.append(f"{words}=head_to_head SIR({name}.w -> {lda}.w, feedback={feedback}, bag={bag})")
            self.fg.tags.add("head_to_head:sir" if feedback else "head_to_head:sir-one-way")

    def experts_component(self):
        r = self.rng
        dim = r.randint(1, 4)
        names = []
        for _ in range(2):
            name = self.name("expert")
            noise = r.choice([0.3, 1.0])
            self.add(GaussianExpert, name, dim, noise=noise, seed=self.module_seed())
            self.fg.parts.append(f"{name}=GaussianExpert(dim={dim}, noise={noise})")
            self.observe(self.blobs(dim, 2.0), f"{name}.x", "real", dim=dim)
            names.append(name)
        poe = self.name("poe")
        feedback = r.random() < 0.8
        self.connect("head_to_head", poe, proposer=f"{names[0]}.z", weighter=f"{names[1]}.z", feedback=feedback)
        self.fg.parts.append(f"{poe}=head_to_head PoE({names[0]}.z, {names[1]}.z, feedback={feedback})")
        self.fg.tags.add("head_to_head:poe")

    def tail_to_tail(self):
        r = self.rng
        by_k: dict[int, list] = {}
        for provider in self.providers:
            by_k.setdefault(provider[1], []).append(provider)
        groups = [g for g in by_k.values() if len(g) >= 2]
        if not groups or r.random() < 0.3:
            return
        group = r.choice(groups)
        members = r.sample(group, min(len(group), r.choice([2, 2, 3])))
        name = self.name("category")
        feedback = r.random() < 0.8
        kwargs = dict(smoothing=r.choice([0.0, 0.01, 0.1, 0.5]), temperature=r.choice([0.2, 0.5, 1.0, 1.5, 3.0]),
                      em_iterations=r.choice([1, 3, 10]), feedback=feedback)
        restarts = r.choice(["default", "default", None, 0, 1, 2])  # None: the messages only multiplied
        if restarts != "default":
            kwargs["restarts"] = restarts
        if r.random() < 0.5:
            weighed = r.sample(members, r.randint(1, len(members)))
            kwargs["evidence_weight"] = {m: r.choice([0.01, 0.1, 0.5, 1.0, 2.0]) for m, _, _ in weighed}
        lda_members = [m for m, _, cls in members if cls == "LDA"]
        if lda_members and r.random() < 0.5:
            kwargs["prior_exponent"] = {lda_members[0]: r.choice([0.05, 0.5, 2.0])}
        self.connect("tail_to_tail", name, [f"{m}.c" for m, _, _ in members], **kwargs)
        self.fg.parts.append(f"{name}=tail_to_tail({[m for m, _, _ in members]}, {_short(kwargs)})")
        self.fg.tags.add(f"tail_to_tail:{len(members)}")
        if not feedback:
            self.fg.tags.add("tail_to_tail:one-way")
        if feedback and restarts is not None:  # the joint fit (the default)
            self.fg.tags.add("tail_to_tail:restarts")

    def training(self):
        r = self.rng
        if self.differentiable and r.random() < 0.5:
            self.fg.mode = "joint"
            warmup = 1 if self.needs_warmup else r.choice([0, 1])
            self.fg.train_options = dict(epochs=r.choice([1, 2]), batch_size=self.batch(), warmup=warmup)
        self.fg.tags.add(self.fg.mode)
        if r.random() < 0.08:
            self.fg.schedule_repeats = 2


def _short(settings: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items() if k not in ("seed",))


COMPONENTS = ("encoder", "mixture", "lda", "speech", "experts")
_WEIGHTS = (5, 2, 3, 4, 1)


def random_graph(rng: random.Random) -> FuzzGraph:
    """A random small valid graph drawn from ``rng`` (see the module docstring): one draw from
    ``rng`` gives the graph's seed (named in its description), :func:`graph_from_seed` the rest."""
    return graph_from_seed(rng.randrange(2**62))


def graph_from_seed(seed: int) -> FuzzGraph:
    """The random graph of a seed (as a description names it): the way to reproduce one."""
    rng = random.Random(seed)
    b = _Builder(rng, seed)
    for kind in rng.choices(COMPONENTS, weights=_WEIGHTS, k=rng.choice([1, 2, 2, 3])):
        getattr(b, f"{kind}_component")()
    # a second categorical provider of the shared size now and then, so that combiners get built
    if len([p for p in b.providers if p[1] == b.k_shared]) == 1 and rng.random() < 0.5:
        rng.choice([b.mixture_component, b.lda_component])()
    b.tail_to_tail()
    b.training()
    return b.fg


# --- the checks --------------------------------------------------------------------------------
@dataclass
class FuzzResult:
    """What :func:`check_graph` found for one graph."""

    seed: int
    description: str
    finished: bool = False
    stage: str = ""
    exception: tuple[str, str, str] | None = None  # (type, message, traceback)
    nonfinite: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.finished and not self.nonfinite and not self.mismatches

    def report(self) -> str:
        lines = [f"random graph failed — {self.description}",
                 f"reproduce: graph_from_seed({self.seed}) of tests/random_graphs.py, or "
                 f"python benchmarks/fuzz_graphs.py --replay {self.seed}"]
        if self.exception:
            kind, message, trace = self.exception
            lines += [f"{kind} while {self.stage}: {message}", trace]
        lines += [f"non-finite message: {m}" for m in self.nonfinite[:10]]
        lines += [f"resume mismatch: {m}" for m in self.mismatches[:10]]
        return "\n".join(lines)


def nonfinite_messages(graph: Graph) -> list[str]:
    """Every message on the graph's edges with a NaN or an infinity (an N-best list may score a
    hypothesis that is all padding -inf: no other value may be non-finite)."""
    bad = []
    for (parent, child), both in graph.messages().items():
        for direction, message in both.items():
            if message is None:
                continue
            for name, tensor in message._tensors().items():
                if not tensor.is_floating_point():
                    continue
                finite = torch.isfinite(tensor)
                if isinstance(message, NBest) and name == "log_scores":
                    padding = (message.hypotheses < 0).all(dim=2)
                    finite = finite | (padding & (tensor == float("-inf")))
                if not bool(finite.all()):
                    bad.append(f"{parent}->{child} {direction} {message.kind}.{name}: "
                               f"{int((~finite).sum())} non-finite of {tensor.numel()}")
    return bad


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, Message):
        if type(a) is not type(b):
            return False
        return all(_same(x, y) for x, y in zip(a._tensors().values(), b._tensors().values()))
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)


def differences(whole: Graph, resumed: Graph) -> list[str]:
    """Where two graphs' final messages or predictions differ (torch.equal)."""
    out = []
    theirs = resumed.messages()
    for edge, both in whole.messages().items():
        for direction, message in both.items():
            if not _same(message, theirs[edge][direction]):
                out.append(f"message {edge[0]}->{edge[1]} {direction}")
    for name, node in whole.nodes.items():
        if not _same(node.predict(), resumed.node(name).predict()):
            out.append(f"prediction of {name}")
    return out


def check_graph(fg: FuzzGraph, workdir=None) -> FuzzResult:
    """Train ``fg`` for 2 rounds (checking every message after each round); train a fresh copy
    for 1 round with a checkpoint and another to 2 rounds from it; compare the final messages
    and predictions. Every exception is caught and reported in the result."""
    import time

    result = FuzzResult(fg.seed, fg.description)
    own = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="serket-fuzz-") if own else workdir)
    checkpoints = workdir / f"checkpoint-{fg.seed}"
    t0 = time.perf_counter()

    def finite(trainer, record):
        result.nonfinite += [f"round {record['round']}: {m}" for m in nonfinite_messages(trainer.graph)]

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ClusterCollapseWarning)  # expected of tiny data
            result.stage = "building the graph"
            whole = fg.build()
            result.stage = "training 2 rounds"
            seed_everything(0)  # Graph(seed=None) leaves the global generators alone: start them alike
            history = fg.train(whole, 2, callbacks=[finite])
            if len(history) != 2:
                raise AssertionError(f"{len(history)} rounds in the history, not 2")
            result.stage = "training 1 round with a checkpoint"
            seed_everything(0)
            first = fg.build()
            before = fg.train(first, 1, checkpoint_dir=checkpoints, callbacks=[finite])
            result.stage = "resuming to 2 rounds from the checkpoint"
            seed_everything(1)  # must not matter: the checkpoint holds the generators' states
            resumed = fg.build()
            after = fg.train(resumed, 2, checkpoint_dir=checkpoints, callbacks=[finite])
            if len(after) != 2 or after[0]["seconds"] != before[0]["seconds"]:
                raise AssertionError("the second run did not resume from the first one's checkpoint")
            result.stage = "comparing"
            result.mismatches = differences(whole, resumed)
        result.finished = True
    except Exception as error:  # noqa: BLE001 - every exception is a finding
        result.exception = (type(error).__name__, str(error), traceback.format_exc(limit=-6))
    finally:
        shutil.rmtree(checkpoints, ignore_errors=True)
        if own:
            shutil.rmtree(workdir, ignore_errors=True)
        result.seconds = time.perf_counter() - t0
    return result
