"""Multimodal VAEs: one latent ``z`` shared by several modalities (image, speech, ...).

Both modules generate every modality from one latent, ``x_m ~ p_m(x_m | decoder_m(z))``, with
``z`` drawn from the prior their upper module sends on ``z`` (a per-item Gaussian, e.g. a
mixture's component) or N(0, I) when none has arrived. They differ in inference:

* :class:`MVAE` (Wu & Goodman, 2018): q(z | x_S) for any subset S of modalities is the product
  of Gaussian experts — a prior expert N(0, I) and one expert q_m(z | x_m) per present modality.
  Its objective sums the ELBO of the posterior of every non-empty subset of the modalities,
  each reconstructing every modality present for the item (or, with ``reconstruct="subset"``,
  only the subset's own, as in the paper); a per-item ``mask`` (port ``mask``, (N, M) of 0/1)
  marks missing modalities, whose experts and terms drop out — so it trains on incomplete
  items.
* :class:`JMVAE` (JMVAE-kl, Suzuki et al., 2016): a joint encoder q(z | x_1..x_M) on all the
  modalities and one unimodal encoder per modality. The objective is the joint ELBO plus
  ``alpha * sum_m KL(q(z | x_all) || q(z | x_m))``, which pulls each unimodal encoder toward
  the joint one, so that a single modality can stand in for all. Inference uses the joint
  encoder when every modality is present, the unimodal encoder for one, and the product of
  the unimodal experts for any other subset. It trains on complete items only.

Likelihoods per modality: ``"bernoulli"`` (data in [0, 1], e.g. pixels) or ``"gaussian"`` (a
learned variance per dimension, e.g. standardised speech features); ``weights`` scale each
modality's reconstruction term (the MVAE paper's lambda).

Ports: one per modality (accepts ``samples`` of its width), ``mask`` (accepts ``samples``,
width M, optional), ``z`` (sends ``samples`` — posterior means of the observed modalities, or a
draw — and accepts a per-item ``gaussian`` prior).

Trained alternately (:meth:`update`: epochs of Adam on the fixed prior message) or jointly
(:meth:`joint_forward`: the upper module scores the latent samples of every ELBO term).
"""

from __future__ import annotations

import itertools
import numbers

import torch
from torch import nn

from serket.connections import product_of_gaussians
from serket.errors import ConfigError, DataError
from serket.messages import Gaussian, Samples
from serket.module import JointTraining, Module, Port, Rows, derive_seed
from serket.modules.nn import (MLPDecoder, MLPEncoder, gaussian_kl, gaussian_neg_entropy, reconstruction_nll,
                               reparameterised_sample)
from serket.validation import check_choice, check_int, check_items, check_real, check_sizes

__all__ = ["MVAE", "JMVAE"]

_RESERVED = ("z", "mask")


class _MultimodalVAE(JointTraining, Module):
    """What MVAE and JMVAE share: ports, decoders, likelihoods, training loops, state."""

    def __init__(self, name: str, modalities: dict, *, likelihoods: dict | None = None,
                 weights: dict | None = None, z_dim: int = 10, hidden=(512, 256), epochs: int = 20,
                 first_epochs: int | None = None, batch_size: int = 500, lr: float = 1e-3,
                 kl_weight: float = 1.0, kl_anneal: int = 0, send: str = "mean", seed: int = 0, device="cpu"):
        super().__init__(name, seed=seed, device=device)
        kind = type(self).__name__
        if not isinstance(modalities, dict) or not modalities:
            raise ConfigError(f"{kind} {name!r}: modalities must be a non-empty {{name: width}} dict, "
                              f"got {modalities!r}")
        for m in modalities:
            if not isinstance(m, str) or m in _RESERVED or not m.isidentifier():
                raise ConfigError(f"{kind} {name!r}: modality name {m!r} is not allowed (not 'z', 'mask', "
                                  f"and an identifier)")
        widths = {m: check_int(self, f"modalities[{m!r}]", w, minimum=1) for m, w in modalities.items()}
        for setting, given in (("likelihoods", likelihoods), ("weights", weights)):
            if given is not None and not isinstance(given, dict):
                raise ConfigError(f"{kind} {name!r}: {setting} must be a {{modality: value}} dict, got {given!r}")
        likelihoods = {m: "gaussian" for m in modalities} | dict(likelihoods or {})
        weights = {m: 1.0 for m in modalities} | dict(weights or {})
        unknown = (set(likelihoods) | set(weights)) - set(modalities)
        if unknown:
            raise ConfigError(f"{kind} {name!r}: likelihoods/weights name unknown modalities {sorted(unknown)}; "
                              f"the modalities are {list(modalities)}")
        for m, lik in likelihoods.items():
            check_choice(self, f"likelihoods[{m!r}]", lik, ("bernoulli", "gaussian"))
        weights = {m: check_real(self, f"weights[{m!r}]", w, minimum=0) for m, w in weights.items()}
        send = check_choice(self, "send", send, ("mean", "sample"))
        z_dim = check_int(self, "z_dim", z_dim, minimum=1)
        hidden = check_sizes(self, "hidden", (hidden,) if isinstance(hidden, numbers.Integral) else hidden,
                             allow_empty=True)
        epochs = check_int(self, "epochs", epochs, minimum=0)
        first_epochs = check_int(self, "first_epochs", first_epochs, minimum=0, none=True)
        batch_size = check_int(self, "batch_size", batch_size, minimum=1)
        lr = check_real(self, "lr", lr, above=0)
        kl_weight = check_real(self, "kl_weight", kl_weight, minimum=0)
        kl_anneal = check_int(self, "kl_anneal", kl_anneal, minimum=0)
        self.modalities = widths
        self.names = list(self.modalities)
        self.likelihoods, self.weights = likelihoods, weights
        self.z_dim, self.hidden = z_dim, hidden
        self.epochs, self.batch_size, self.lr = epochs, batch_size, lr
        self.first_epochs = self.epochs if first_epochs is None else first_epochs
        self.kl_weight, self.kl_anneal, self.send = kl_weight, kl_anneal, send
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, self.name + "/weights"))
            self.encoders = nn.ModuleDict({m: MLPEncoder(w, self.hidden, self.z_dim) for m, w in self.modalities.items()})
            self.decoders = nn.ModuleDict({m: MLPDecoder(self.z_dim, self.hidden, w) for m, w in self.modalities.items()})
            self.out_logvar = nn.ParameterDict({m: nn.Parameter(torch.zeros(w)) for m, w in self.modalities.items()
                                                if self.likelihoods[m] == "gaussian"})
            self._build_extra()
        self.to(self.device)
        self.optimizer_ = torch.optim.Adam(self.parameters(), lr=self.lr)
        self.loss_history_: list[dict[str, float]] = []  # the terms of each update, averaged over items
        self.latent_: torch.Tensor | None = None          # what it last published on z
        self.posterior_: Gaussian | None = None
        self._joint_totals, self._joint_items = None, 0

    def _build_extra(self) -> None:
        """Hook for subclasses' extra networks (built from the module's weight stream)."""

    # --- inference and generation ----------------------------------------------------------------
    def _expert(self, m, x):
        return self.encoders[m](x)

    def _experts(self, batch, mask):
        """Each given modality's expert q_m(z | x_m): lists of means and variances, (B, z_dim)
        each. A modality the mask marks missing for an item gets zero precision (infinite
        variance) there, so it drops out of any product."""
        means, variances = [], []
        for m in self.names:
            if m not in batch:
                continue
            mu, logvar = self._expert(m, batch[m])
            present = mask[:, self.names.index(m)][:, None]
            means.append(mu)
            variances.append(torch.where(present > 0, logvar.exp(), torch.full_like(mu, float("inf"))))
        return means, variances

    def posterior(self, batch: dict, mask: torch.Tensor | None = None):
        """``(mu, logvar)`` of q(z | the present modalities), each (B, z_dim). ``batch`` maps
        modality names to (B, width) tensors (any subset); ``mask`` (B, M) marks, per item, which
        of the modalities (in the module's order) are present."""
        raise NotImplementedError

    def encode(self, batch: dict, mask: torch.Tensor | None = None) -> Gaussian:
        """q(z | any subset of modalities) as a Gaussian message (no gradients)."""
        self._check_batch(batch)
        with torch.no_grad():
            mu, logvar = self.posterior(batch, mask)
        return Gaussian(mu, logvar.exp())

    def infer(self, **messages):
        """For new items: ``{"z": Samples}``, the latent the module would publish for them
        (posterior means, or one draw with ``send="sample"``), computed from the modalities
        given, any subset, and an optional per-item ``mask`` (width M, in the module's order of
        modalities) marking which of them each item has; and, on the port of each modality not
        given, its mean generated from the posterior mean (cross-modal generation). The prior on
        ``z`` does not enter the encoders' posterior: given alone (a Gaussian from the module
        above), it is what to generate from, and every modality's mean at the Gaussian's mean
        is returned. A draw comes from a fresh stream seeded from the module's seed and update
        count, so infer is repeatable and leaves the training stream as it was."""
        if self.latent_ is None:
            raise DataError(f"{self._who()}: nothing learned yet; infer needs a first update")
        if "z" in messages:
            if set(messages) != {"z"}:
                raise DataError(f"{self._who()}: infer computes 'z' from the modalities; give some of "
                                f"{self.names} (and optionally 'mask'), or a prior on 'z' alone to generate from")
            return {m: Samples(self.generate(messages["z"].mean, m)) for m in self.names}
        mask = messages.pop("mask", None)
        batch = {m: message.values for m, message in messages.items()}
        if not batch:
            raise DataError(f"{self._who()}: infer needs data on at least one of the modalities {self.names}; "
                            f"got only a mask")
        if mask is not None:
            mask = mask.values
            given = torch.tensor([m in batch for m in self.names], device=mask.device)
            empty = (mask[:, given].sum(1) == 0).nonzero()
            if empty.numel():
                raise DataError(f"{self._who()}: the mask marks none of the given modalities {sorted(batch)} "
                                f"present for item {int(empty[0])}")
        mu, logvar = self.posterior(batch, mask)
        generated = {m: Samples(self.generate(mu, m)) for m in self.names if m not in batch}
        if self.send == "mean":
            return {"z": Samples(mu), **generated}
        generator = torch.Generator(device=self.device)
        generator.manual_seed(derive_seed(self.seed + self.n_updates, self.name + ":infer"))
        return {"z": Samples(reparameterised_sample(mu, logvar, generator)), **generated}

    def generate(self, z: torch.Tensor, modality: str) -> torch.Tensor:
        """The mean of p(x_modality | z): pixel probabilities or Gaussian means."""
        if modality not in self.modalities:
            raise DataError(f"{type(self).__name__} {self.name!r} has no modality {modality!r}; it has {self.names}")
        with torch.no_grad():
            out = self.decoders[modality](z)
        return torch.sigmoid(out) if self.likelihoods[modality] == "bernoulli" else out

    def cross_generate(self, batch: dict, target: str) -> torch.Tensor:
        """Generate ``target`` from the posterior mean given the modalities in ``batch``."""
        return self.generate(self.encode(batch).mean, target)

    def _check_batch(self, batch: dict) -> None:
        unknown = set(batch) - set(self.modalities)
        if unknown or not batch:
            raise DataError(f"{type(self).__name__} {self.name!r}: give some of the modalities {self.names}; "
                            f"got {sorted(batch)}")
        for m, x in batch.items():
            if x.ndim != 2 or x.shape[1] != self.modalities[m]:
                raise DataError(f"{type(self).__name__} {self.name!r}: modality {m!r} needs (N, {self.modalities[m]}) "
                                f"data, got shape {tuple(x.shape)}")

    # --- the objective -----------------------------------------------------------------------------
    def _reconstruction(self, m, x, z):
        return reconstruction_nll(x, self.decoders[m](z), self.likelihoods[m], self.out_logvar.get(m))

    def _terms(self, batch, mask):
        """The ELBO terms: a list of ``(label, mu, logvar, reconstructed modalities, item weight)``
        plus extra per-item penalties ``{label: (B,) tensor}``."""
        raise NotImplementedError

    def objective(self, batch, mask=None, prior_mean=None, prior_var=None, scored=False, kl_scale=1.0):
        """``(loss, report, rows)``: the negative objective averaged over items; the report of
        every term (reconstruction per modality, KL per ELBO term, penalties); and, when the
        prior is scored above (``scored=True``), the latent :class:`Rows` to send up."""
        b = next(iter(batch.values())).shape[0]
        mask = self._full_mask(b, batch) if mask is None else mask
        elbo_terms, penalties = self._terms(batch, mask)
        total = torch.zeros(b, device=mask.device)
        report, rows = {}, []
        for label, mu, logvar, targets, weight in elbo_terms:
            z = reparameterised_sample(mu, logvar, self.generator)
            rec_sum = torch.zeros(b, device=mask.device)
            for m in targets:
                present = mask[:, self.names.index(m)]
                rec = self._reconstruction(m, batch[m], z) * present
                rec_sum = rec_sum + self.weights[m] * rec
                report[f"reconstruction_{m}_{label}"] = rec.mean()
            if scored:
                kl = gaussian_neg_entropy(logvar)
                rows.append((z, weight))
            else:
                kl = gaussian_kl(mu, logvar, prior_mean, prior_var)
            report[f"kl_{label}" if not scored else f"neg_entropy_{label}"] = (kl * weight).mean()
            total = total + weight * (rec_sum + kl_scale * self.kl_weight * kl)
        for label, value in penalties.items():
            report[label] = value.mean()
            total = total + value
        loss = total.mean()
        report["loss"] = loss
        live = None
        if scored:
            items = torch.arange(b, device=mask.device)
            live = Rows(torch.cat([z for z, _ in rows]), items.repeat(len(rows)),
                        torch.cat([w for _, w in rows]) * self.kl_weight)
        return loss, report, live

    def _full_mask(self, b, batch):
        return torch.stack([torch.full((b,), float(m in batch), device=self.device) for m in self.names], 1)

    # --- the protocol --------------------------------------------------------------------------------
    def ports(self):
        ports = {m: Port(m, accepts=("samples",), size=w, doc=f"observed {m}") for m, w in self.modalities.items()}
        ports["mask"] = Port("mask", accepts=("samples",), size=len(self.names),
                             doc="per item, 1 where a modality is present, 0 where it is missing")
        ports["z"] = Port("z", sends=("samples",), accepts=("gaussian",), size=self.z_dim,
                          doc="shared latent: posterior means/draws up, per-item Gaussian prior down")
        return ports

    def _check_input(self, port, message):
        if port == "z":
            return
        x = message.values
        if x.shape[0] == 0:
            raise DataError(f"{type(self).__name__} {self.name!r}: the data on port {port!r} are empty")
        if port == "mask":
            if not bool(((x == 0) | (x == 1)).all()):
                raise DataError(f"{type(self).__name__} {self.name!r}: the mask must hold only 0 and 1")
            if bool((x.sum(1) == 0).any()):
                bad = int((x.sum(1) == 0).nonzero()[0])
                raise DataError(f"{type(self).__name__} {self.name!r}: item {bad} has no modality present")
        elif self.likelihoods[port] == "bernoulli":
            lo, hi = float(x.min()), float(x.max())
            if lo < 0.0 or hi > 1.0:
                raise DataError(f"{type(self).__name__} {self.name!r}: a Bernoulli likelihood needs data in [0, 1]; "
                                f"port {port!r} has values in [{lo:g}, {hi:g}]")

    def _inputs(self):
        missing = [m for m in self.names if m not in self.inbox]
        if missing:
            raise DataError(f"{type(self).__name__} {self.name!r}: no data received on ports {missing} "
                            f"(send zeros and a mask for a modality that is missing for some items)")
        data = {m: self.inbox[m].values for m in self.names}
        first, n = self.names[0], data[self.names[0]].shape[0]
        for m in self.names[1:]:
            check_items(self, f"port {m!r}", data[m].shape[0], f"port {first!r}", n)
        mask = self.inbox["mask"].values if "mask" in self.inbox else None
        if mask is not None:
            check_items(self, "the mask", mask.shape[0], f"port {first!r}", n)
        prior = self.inbox.get("z")
        if prior is not None:
            check_items(self, "the prior on port 'z'", prior.n_items, f"port {first!r}", n)
        if mask is None:
            mask = torch.ones(n, len(self.names), device=self.device)
        return data, mask, prior

    def _run_batch(self, data, mask, prior, idx, scored=False, kl_scale=1.0):
        batch = {m: x[idx] for m, x in data.items()}
        return self.objective(batch, mask[idx],
                              None if prior is None or scored else prior.mean[idx],
                              None if prior is None or scored else prior.var[idx], scored=scored,
                              kl_scale=kl_scale)

    def _record(self, totals: dict, n: int) -> None:
        self.loss_history_.append({k: float(v) / n for k, v in totals.items()})

    def update(self) -> None:
        data, mask, prior = self._inputs()
        self._check_training_mask(mask)
        n = mask.shape[0]
        self.train()
        epochs = self.first_epochs if self.n_updates == 0 else self.epochs
        totals: dict = {}
        for epoch in range(epochs):
            # KL annealing in the first update (the prior terms' weight rises linearly to 1)
            kl_scale = min(1.0, (epoch + 1) / self.kl_anneal) if self.kl_anneal and self.n_updates == 0 else 1.0
            order = torch.randperm(n, generator=self.generator, device=self.device)
            totals = {}
            for start in range(0, n, self.batch_size):
                idx = order[start:start + self.batch_size]
                loss, report, _ = self._run_batch(data, mask, prior, idx, kl_scale=kl_scale)
                self.optimizer_.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer_.step()
                for k, v in report.items():
                    totals[k] = totals.get(k, 0.0) + v.detach() * idx.numel()
        if totals:
            self._record(totals, n)
        self._publish_latent(data, mask)

    def _check_training_mask(self, mask) -> None:
        """Hook: JMVAE refuses incomplete items."""

    def _publish_latent(self, data, mask) -> None:
        self.eval()
        with torch.no_grad():
            mu, logvar = self.posterior(data, mask)
        self.posterior_ = Gaussian(mu, logvar.exp())
        self.latent_ = mu if self.send == "mean" else reparameterised_sample(mu, logvar, self.generator)

    def publish(self):
        return {} if self.latent_ is None else {"z": Samples(self.latent_)}

    def diagnostics(self) -> dict:
        """Every term of the last update (reconstruction per modality, KL per ELBO term,
        penalties), averaged over items."""
        return dict(self.loss_history_[-1]) if self.loss_history_ else {}

    # --- joint training ------------------------------------------------------------------------------
    def joint_begin(self) -> None:
        data, mask, _ = self._inputs()
        self._check_training_mask(mask)
        self.train()
        self._joint_totals, self._joint_items = {}, 0

    def joint_forward(self, idx, live, scored):
        data, mask, prior = self._inputs()
        loss, report, rows = self._run_batch(data, mask, prior, idx, scored="z" in scored)
        for k, v in report.items():
            self._joint_totals[k] = self._joint_totals.get(k, 0.0) + v.detach() * idx.numel()
        self._joint_items += idx.numel()
        return loss, ({"z": rows} if rows is not None else {})

    def joint_end(self) -> None:
        if self._joint_totals:
            self._record(self._joint_totals, self._joint_items)
        data, mask, _ = self._inputs()
        self._publish_latent(data, mask)

    def joint_optimizer(self) -> torch.optim.Optimizer:
        return self.optimizer_


class MVAE(_MultimodalVAE):
    """Multimodal VAE with a product-of-experts posterior (see the module docstring).

    Its objective has one ELBO per non-empty subset S of the modalities (``2**M - 1`` terms:
    the joint one and, with two modalities, one per modality), each with q(z | x_S), the
    product of the prior expert and the experts of S. An expert is trained only by the terms
    whose subset holds it, so every subset that inference may be asked about is trained: with
    three modalities, the pairs as well as the single ones. A term counts for an item when
    every modality of its subset is present there.

    What each subset's posterior reconstructs (``reconstruct``):

    * ``"present"`` (default): every modality present for the item. Each term is then an ELBO
      of the item's whole likelihood, ``E_q(z | x_S)[sum_m log p(x_m | z)] - KL(q(z | x_S) ||
      p(z))`` (any q gives a lower bound), so one modality's posterior must place its item where
      the other modalities can be generated from: the modalities teach each other, and a single
      modality infers the latent the whole item would have.
    * ``"subset"``: only the modalities of S (the sub-sampled ELBOs of Wu & Goodman, 2018).
      A modality whose expert is slower to become informative than another's can then stay
      uninformative: the joint term hardly trains it (its share of the product's precision is
      small) and its own term asks only for its own reconstruction.

    Args:
        name: node name.
        modalities: ``{name: width}``, e.g. ``{"image": 784, "speech": 195}``.
        reconstruct: ``"present"`` or ``"subset"`` (above).
        likelihoods: ``{name: "bernoulli" | "gaussian"}`` (default gaussian).
        weights: reconstruction weight per modality (default 1).
        z_dim, hidden: latent width and MLP hidden widths (encoders and decoders mirror).
        epochs, first_epochs, batch_size, lr: Adam training per alternate update. The default
            minibatch of 100 gives an epoch enough steps for every expert to become
            informative before the prior terms reach their full weight (an expert still
            uninformative then tends to stay so: its posterior is the prior's).
        kl_weight: weight of the prior terms.
        kl_anneal: epochs over which the prior terms' weight rises linearly from 0 to 1 in the
            first update (KL annealing, as in the MVAE paper; 0: off).
        send: ``"mean"`` or ``"sample"`` upward on ``z``.

    Learned state (beside the networks' weights): ``optimizer_`` (Adam), ``latent_`` (what it
    last sent on ``z``), ``posterior_`` (q(z | the item's modalities), a Gaussian message) and
    ``loss_history_`` (each update's terms, averaged over items).

    Example::

        mvae = MVAE("mvae", {"image": 784, "speech": 195}, likelihoods={"image": "bernoulli"})
        mvae.fit(image=images, speech=features)
        mvae.cross_generate({"speech": features[:8]}, "image")   # (8, 784) pixel probabilities
    """

    def __init__(self, name: str, modalities: dict, *, reconstruct: str = "present", likelihoods: dict | None = None,
                 weights: dict | None = None, z_dim: int = 10, hidden=(512, 256), epochs: int = 20,
                 first_epochs: int | None = None, batch_size: int = 100, lr: float = 1e-3,
                 kl_weight: float = 1.0, kl_anneal: int = 0, send: str = "mean", seed: int = 0, device="cpu"):
        self.reconstruct = check_choice(f"MVAE {name!r}", "reconstruct", reconstruct, ("present", "subset"))
        super().__init__(name, modalities, likelihoods=likelihoods, weights=weights, z_dim=z_dim, hidden=hidden,
                         epochs=epochs, first_epochs=first_epochs, batch_size=batch_size, lr=lr,
                         kl_weight=kl_weight, kl_anneal=kl_anneal, send=send, seed=seed, device=device)

    def posterior(self, batch, mask=None):
        self._check_batch(batch)
        b = next(iter(batch.values())).shape[0]
        mask = self._full_mask(b, batch) if mask is None else mask
        means, variances = self._experts(batch, mask)
        zeros = torch.zeros(b, self.z_dim, device=mask.device)
        mean, var = product_of_gaussians(means, variances, zeros[:1], torch.ones_like(zeros[:1]))
        return mean, var.log()

    def subsets(self) -> list[tuple[str, ...]]:
        """The proper non-empty subsets of the modalities whose ELBOs the objective holds beside
        the joint one: by size, then in the module's order of modalities."""
        return [s for k in range(1, len(self.names)) for s in itertools.combinations(self.names, k)]

    def _terms(self, batch, mask):
        terms = [("joint", *self.posterior(batch, mask), self.names, torch.ones(mask.shape[0], device=mask.device))]
        for subset in self.subsets():
            present = mask[:, [self.names.index(m) for m in subset]].prod(1)
            mu, logvar = self.posterior({m: batch[m] for m in subset}, mask)
            targets = self.names if self.reconstruct == "present" else list(subset)
            terms.append(("+".join(subset), mu, logvar, targets, present))
        return terms, {}


class JMVAE(_MultimodalVAE):
    """JMVAE-kl: a joint encoder, unimodal encoders pulled toward it (see the module docstring).

    Args: those of :class:`MVAE`, and
        alpha: weight of the KL terms between the joint and each unimodal posterior.
    """

    def __init__(self, name: str, modalities: dict, *, alpha: float = 1.0, likelihoods: dict | None = None,
                 weights: dict | None = None, z_dim: int = 10, hidden=(512, 256), epochs: int = 20,
                 first_epochs: int | None = None, batch_size: int = 500, lr: float = 1e-3,
                 kl_weight: float = 1.0, kl_anneal: int = 0, send: str = "mean", seed: int = 0, device="cpu"):
        # checked before the networks are built (the joint encoder's hook runs in __init__)
        self.alpha = check_real(f"JMVAE {name!r}", "alpha", alpha, minimum=0)
        super().__init__(name, modalities, likelihoods=likelihoods, weights=weights, z_dim=z_dim, hidden=hidden,
                         epochs=epochs, first_epochs=first_epochs, batch_size=batch_size, lr=lr,
                         kl_weight=kl_weight, kl_anneal=kl_anneal, send=send, seed=seed, device=device)

    def _build_extra(self):
        self.joint_encoder = MLPEncoder(sum(self.modalities.values()), self.hidden, self.z_dim)

    def _joint(self, batch):
        return self.joint_encoder(torch.cat([batch[m] for m in self.names], 1))

    def posterior(self, batch, mask=None):
        self._check_batch(batch)
        b = next(iter(batch.values())).shape[0]
        mask = self._full_mask(b, batch) if mask is None else mask
        complete = mask.sum(1) == len(self.names)
        present = [m for m in self.names if m in batch]
        if len(present) == len(self.names) and bool(complete.all()):
            return self._joint(batch)
        if len(present) == len(self.names) and bool(complete.any()):
            # items differ: the joint encoder for complete ones, the unimodal experts otherwise
            mu_j, lv_j = self._joint(batch)
            mu_u, lv_u = self._unimodal_product(batch, mask)
            keep = complete[:, None]
            return torch.where(keep, mu_j, mu_u), torch.where(keep, lv_j, lv_u)
        return self._unimodal_product(batch, mask)

    def _unimodal_product(self, batch, mask):
        means, variances = self._experts(batch, mask)
        if len(means) == 1:
            return means[0], variances[0].log()
        mean, var = product_of_gaussians(means, variances)
        return mean, var.log()

    def _check_training_mask(self, mask):
        if not bool((mask == 1).all()):
            raise DataError(f"JMVAE {self.name!r} trains on complete items only (its joint encoder needs "
                            f"every modality); {int((mask.sum(1) < len(self.names)).sum())} items miss one: "
                            f"use MVAE to train with missing modalities")

    def _terms(self, batch, mask):
        mu, logvar = self._joint(batch)
        penalties = {}
        for m in self.names:
            mu_m, lv_m = self._expert(m, batch[m])
            kl = gaussian_kl(mu, logvar, mu_m, lv_m.exp())
            penalties[f"kl_joint_to_{m}"] = self.alpha * kl
        return [("joint", mu, logvar, self.names, torch.ones(mask.shape[0], device=mask.device))], penalties
