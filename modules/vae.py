"""A variational autoencoder whose prior is its upper module's message.

Generative model, per item ``i``::

    z_i ~ N(prior_mean_i, diag(prior_var_i))     (standard normal when no message arrived)
    x_i ~ Bernoulli(sigmoid(decoder(z_i)))       (or a Gaussian with learned variance)

Inference: an encoder gives q(z_i | x_i) = N(mu_i, diag(sigma_i^2)). The loss is the negative
ELBO, reported term by term from one forward pass: reconstruction (summed over pixels) and the
KL divergence to the item's prior (closed form between diagonal Gaussians), averaged over items.

Ports:
    ``x`` (accepts ``samples``, size ``x_dim``): the data, one row per item.
    ``z`` (sends ``samples``, accepts ``gaussian``, size ``z_dim``): the latent. Upward it sends
    the posterior means (``send="mean"``, default) or one posterior draw per item
    (``send="sample"``); downward it takes a per-item Gaussian prior (a GMM sends the mean of
    the item's cluster and a unit or cluster variance).

``restart="warm"`` (default) keeps the networks and the optimiser between rounds, so each
round refines the last one's latent space and the GMM's clusters keep their meaning;
``"reinit"`` starts each round from fresh weights (drawn from the module's own stream).
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from serket.errors import ConfigError, DataError
from serket.messages import Gaussian, Samples
from serket.module import JointTraining, Module, Port, derive_seed
from serket.modules.nn import (ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder, gaussian_kl,
                               gaussian_neg_entropy, reconstruction_nll, reparameterised_sample)
from serket.validation import check_choice, check_int, check_items, check_real, check_sizes

__all__ = ["VAE", "vae_loss_terms"]

# each reinitialisation (restart="reinit") draws its weights from its own seed, this far apart
_REINIT_SEED_STRIDE = 7919


def vae_loss_terms(x, decoded, mu, logvar, *, likelihood="bernoulli", out_logvar=None,
                   prior_mean=None, prior_var=None, kl_weight=1.0, scored=False):
    """Negative ELBO and its terms, per item averaged: ``{"loss", "reconstruction", "kl"}``.

    ``decoded`` is the decoder's output for a sample of q(z | x) = N(mu, exp(logvar)). The KL
    term is to the prior N(prior_mean, prior_var) (N(0, I) when None); with ``scored=True`` an
    upper module scores ``-log p(z)`` itself and the term is ``E_q[log q(z)]`` alone."""
    rec = reconstruction_nll(x, decoded, likelihood, out_logvar)
    kl = gaussian_neg_entropy(logvar) if scored else gaussian_kl(mu, logvar, prior_mean, prior_var)
    rec, kl = rec.mean(), kl.mean()
    return {"loss": rec + kl_weight * kl, "reconstruction": rec, "kl": kl}


class VAE(JointTraining, Module):
    """Variational autoencoder module.

    Args:
        name: node name.
        x_dim: data width (784 for MNIST).
        z_dim: latent width (10 as published).
        hidden: hidden layer widths of the MLP (``(128,)`` as published; ``()``: linear); for
            ``"conv"`` exactly one width, that of the fully connected layer.
        architecture: ``"mlp"`` or ``"conv"`` (square images of side ``sqrt(x_dim)``, side % 4 == 0).
        likelihood: ``"bernoulli"`` (data in [0, 1]) or ``"gaussian"`` (learned per-dimension variance).
        kl_weight: weight of the KL term (1 = the ELBO).
        epochs: passes over the data per :meth:`update` (a round).
        first_epochs: passes in the first update, before any prior arrives (default ``epochs``);
            a long first round and short later ones cost less than equal rounds for the same fit.
        batch_size, lr: Adam minibatch size and learning rate (500 and 1e-3 as published).
        restart: ``"warm"`` or ``"reinit"`` between rounds.
        send: ``"mean"`` or ``"sample"`` for the upward message on ``z``.

    Learned state (beside the networks' weights): ``optimizer_`` (Adam), ``latent_`` (what it
    last sent on ``z``), ``posterior_`` (q(z | x) of every item, a Gaussian message) and
    ``loss_history_`` (each update's terms, averaged over items).

    Example::

        vae = VAE("vae", epochs=5)
        vae.fit(x=images)                      # alone, standard normal prior
        z = vae.publish()["z"].values          # (N, 10)
    """

    def __init__(self, name: str, x_dim: int = 784, z_dim: int = 10, hidden=(128,), *,
                 architecture: str = "mlp", likelihood: str = "bernoulli", kl_weight: float = 1.0,
                 epochs: int = 200, batch_size: int = 500, lr: float = 1e-3, restart: str = "warm",
                 send: str = "mean", first_epochs: int | None = None, seed: int = 0, device="cpu"):
        super().__init__(name, seed=seed, device=device)
        architecture = check_choice(self, "architecture", architecture, ("mlp", "conv"))
        likelihood = check_choice(self, "likelihood", likelihood, ("bernoulli", "gaussian"))
        restart = check_choice(self, "restart", restart, ("warm", "reinit"))
        send = check_choice(self, "send", send, ("mean", "sample"))
        x_dim, z_dim = check_int(self, "x_dim", x_dim, minimum=1), check_int(self, "z_dim", z_dim, minimum=1)
        # a single width is a one-layer MLP; () is a linear encoder and decoder (mlp only)
        hidden = check_sizes(self, "hidden", (hidden,) if isinstance(hidden, numbers.Integral) else hidden,
                             allow_empty=True)
        if architecture == "conv":
            if len(hidden) != 1:
                raise ConfigError(f"VAE {name!r}: hidden must hold exactly one width for the conv architecture "
                                  f"(its fully connected layer), got {hidden!r}")
            side = int(round(math.sqrt(x_dim)))
            if side * side != x_dim or side % 4:
                raise ConfigError(f"VAE {name!r}: x_dim must be a square with a side divisible by 4 for the "
                                  f"conv architecture, got {x_dim}")
        epochs = check_int(self, "epochs", epochs, minimum=0)
        first_epochs = check_int(self, "first_epochs", first_epochs, minimum=0, none=True)
        batch_size = check_int(self, "batch_size", batch_size, minimum=1)
        lr = check_real(self, "lr", lr, above=0)
        kl_weight = check_real(self, "kl_weight", kl_weight, minimum=0)
        self.x_dim, self.z_dim = x_dim, z_dim
        self.hidden = hidden
        self.architecture, self.likelihood = architecture, likelihood
        self.kl_weight, self.epochs, self.batch_size, self.lr = kl_weight, epochs, batch_size, lr
        self.restart, self.send = restart, send
        self.first_epochs = self.epochs if first_epochs is None else first_epochs
        self.optimizer_: torch.optim.Optimizer | None = None
        self._build()
        self.loss_history_: list[dict[str, float]] = []  # the terms of each update, averaged over items
        self.latent_: torch.Tensor | None = None          # what it last published on z
        self.posterior_: Gaussian | None = None
        self._joint_totals, self._joint_items = None, 0

    # --- networks -----------------------------------------------------------------------------
    def _build(self) -> None:
        # weights come from the module's own stream, so building is reproducible whatever else
        # has drawn from torch's global generator
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed + _REINIT_SEED_STRIDE * self.n_updates, self.name + "/weights"))
            if self.architecture == "mlp":
                self.encoder = MLPEncoder(self.x_dim, self.hidden, self.z_dim)
                self.decoder = MLPDecoder(self.z_dim, self.hidden, self.x_dim)
            else:
                side = int(round(math.sqrt(self.x_dim)))
                self.encoder = ConvEncoder(side, self.hidden[0], self.z_dim)
                self.decoder = ConvDecoder(self.z_dim, self.hidden[0], side)
            if self.likelihood == "gaussian":
                self.out_logvar = nn.Parameter(torch.zeros(self.x_dim))
            else:
                self.out_logvar = None
        self.to(self.device)
        self.optimizer_ = torch.optim.Adam(self.parameters(), lr=self.lr)

    def encode(self, x: torch.Tensor):
        """``(mu, logvar)`` of q(z | x), each (N, z_dim)."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder output: Bernoulli logits or Gaussian means, (N, x_dim)."""
        return self.decoder(z)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Mean reconstruction of ``x`` through the posterior means (pixel probabilities)."""
        with torch.no_grad():
            return self._data_mean(self.encode(x)[0])

    def _data_mean(self, z: torch.Tensor) -> torch.Tensor:
        """The mean of p(x | z): pixel probabilities or Gaussian means, (N, x_dim)."""
        out = self.decode(z)
        return torch.sigmoid(out) if self.likelihood == "bernoulli" else out

    def loss_terms(self, x, prior_mean=None, prior_var=None) -> dict[str, torch.Tensor]:
        """Negative ELBO with reconstruction and KL reported separately, from one forward pass."""
        return self._forward(x, prior_mean, prior_var)[0]

    def _forward(self, x, prior_mean=None, prior_var=None, scored=False):
        """:func:`vae_loss_terms` of a minibatch and the latent sample they were computed from."""
        mu, logvar = self.encode(x)
        z = reparameterised_sample(mu, logvar, self.generator)
        terms = vae_loss_terms(x, self.decode(z), mu, logvar, likelihood=self.likelihood,
                               out_logvar=self.out_logvar, prior_mean=prior_mean, prior_var=prior_var,
                               kl_weight=self.kl_weight, scored=scored)
        return terms, z

    # --- the module protocol ------------------------------------------------------------------
    def ports(self):
        return {
            "x": Port("x", accepts=("samples",), size=self.x_dim, doc="observed data"),
            "z": Port("z", sends=("samples",), accepts=("gaussian",), size=self.z_dim,
                      doc="latent: posterior means/draws up, per-item Gaussian prior down"),
        }

    def _check_input(self, port, message):
        if port == "x":
            x = message.values
            if x.shape[0] == 0:
                raise DataError(f"VAE {self.name!r}: the dataset on port 'x' is empty")
            if self.likelihood == "bernoulli":
                lo, hi = float(x.min()), float(x.max())
                if lo < 0.0 or hi > 1.0:
                    raise DataError(f"VAE {self.name!r}: a Bernoulli likelihood needs data in [0, 1]; "
                                    f"port 'x' has values in [{lo:g}, {hi:g}] (scale pixels by 1/255)")

    def _data_and_prior(self):
        if "x" not in self.inbox:
            raise DataError(f"VAE {self.name!r}: no data received on port 'x' (connect data to it; where it "
                            f"reads another module's latent, that module publishes after its first round: "
                            f"train jointly with warmup >= 1)")
        x = self.inbox["x"].values
        prior = self.inbox.get("z")
        if prior is not None:
            check_items(self, "the prior on port 'z'", prior.n_items, "the data on 'x'", x.shape[0])
        return x, prior

    def update(self) -> None:
        x, prior = self._data_and_prior()
        if self.restart == "reinit" and self.n_updates > 0:
            self._build()
        n = x.shape[0]
        prior_mean = None if prior is None else prior.mean
        prior_var = None if prior is None else prior.var
        self.train()
        epochs = self.first_epochs if self.n_updates == 0 else self.epochs
        for _ in range(epochs):
            order = torch.randperm(n, generator=self.generator, device=self.device)
            totals = torch.zeros(3, device=self.device)
            for start in range(0, n, self.batch_size):
                idx = order[start:start + self.batch_size]
                terms = self.loss_terms(
                    x[idx],
                    None if prior_mean is None else prior_mean[idx],
                    None if prior_var is None else prior_var[idx],
                )
                self.optimizer_.zero_grad(set_to_none=True)
                terms["loss"].backward()
                self.optimizer_.step()
                totals += torch.stack([terms["loss"], terms["reconstruction"], terms["kl"]]).detach() * idx.numel()
        if epochs:
            loss, rec, kl = (totals / n).tolist()
            self.loss_history_.append({"loss": loss, "reconstruction": rec, "kl": kl})
        self.eval()
        self._publish_latent(x)

    # --- joint training ------------------------------------------------------------------------
    def joint_begin(self) -> None:
        self._data_and_prior()
        self.train()
        self._joint_totals = torch.zeros(3, device=self.device)
        self._joint_items = 0

    def joint_forward(self, idx, live, scored):
        """The minibatch's negative ELBO. When an upper module scores ``z`` (``"z" in scored``)
        the KL term becomes ``E_q[log q(z)]`` and the upper module adds ``-log p(z)`` of the
        sample sent to it; otherwise the prior is the inbox's Gaussian message (or N(0, I))."""
        x, prior = self._data_and_prior()
        xb = live["x"] if "x" in live else x[idx]
        if "z" in scored:
            terms, z = self._forward(xb, scored=True)
        else:
            terms, z = self._forward(xb, None if prior is None else prior.mean[idx],
                                     None if prior is None else prior.var[idx])
        self._joint_totals += torch.stack([terms["loss"], terms["reconstruction"], terms["kl"]]).detach() * idx.numel()
        self._joint_items += idx.numel()
        return terms["loss"], {"z": z}

    def joint_end(self) -> None:
        loss, rec, kl = (self._joint_totals / max(self._joint_items, 1)).tolist()
        self.loss_history_.append({"loss": loss, "reconstruction": rec, "kl": kl})
        self.eval()
        self._publish_latent(self._data_and_prior()[0])

    def joint_optimizer(self) -> torch.optim.Optimizer:
        return self.optimizer_

    def _publish_latent(self, x) -> None:
        with torch.no_grad():
            mu, logvar = self.encode(x)
            self.latent_ = mu if self.send == "mean" else reparameterised_sample(mu, logvar, self.generator)
            self.posterior_ = Gaussian(mu, logvar.exp())

    def publish(self):
        if self.latent_ is None:
            return {}
        return {"z": Samples(self.latent_)}

    def infer(self, x=None, z=None):
        """For new items: ``x`` (data) gives ``{"z": posterior means}`` (the mean, whatever
        ``send`` says: a draw would only add noise to a prediction); ``z`` alone (a Gaussian,
        such as the prior an upper module sends down) gives ``{"x": the decoder's mean}``
        (pixel probabilities or Gaussian means) at the Gaussian's mean — generation."""
        if x is not None:
            return {"z": Samples(self.encode(x.values)[0])}
        return {"x": Samples(self._data_mean(z.mean))}

    def diagnostics(self) -> dict:
        """The terms of the last update (``loss``, ``reconstruction``, ``kl``), averaged over items."""
        return dict(self.loss_history_[-1]) if self.loss_history_ else {}
