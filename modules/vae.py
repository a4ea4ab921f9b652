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
import torch.nn.functional as F
from torch import nn

from serket.errors import ConfigError, DataError, MessageError
from serket.messages import Gaussian, Samples
from serket.module import Module, Port, derive_seed
from serket.validation import check_choice, check_int, check_real, check_sizes

__all__ = ["VAE", "EncoderState", "gaussian_kl", "gaussian_neg_entropy", "vae_loss_terms"]

_LOG_2PI = math.log(2 * math.pi)


def gaussian_kl(mu, logvar, prior_mean=None, prior_var=None):
    """KL( N(mu, exp(logvar)) || N(prior_mean, prior_var) ), summed over the last dimension."""
    if prior_mean is None:
        return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)
    return 0.5 * (prior_var.log() - logvar + (logvar.exp() + (mu - prior_mean).pow(2)) / prior_var - 1.0).sum(-1)


def gaussian_neg_entropy(logvar):
    """E_q[log q(z)] of a diagonal Gaussian q with log-variances ``logvar``, summed over the last dimension."""
    return -0.5 * (logvar + _LOG_2PI + 1.0).sum(-1)


def vae_loss_terms(x, logits_or_mean, mu, logvar, *, likelihood="bernoulli", out_logvar=None,
                   prior_mean=None, prior_var=None, kl_weight=1.0):
    """Negative ELBO and its terms, per item averaged: ``{"loss", "reconstruction", "kl"}``."""
    if likelihood == "bernoulli":
        rec = F.binary_cross_entropy_with_logits(logits_or_mean, x, reduction="none").sum(-1)
    else:
        rec = 0.5 * (((x - logits_or_mean) ** 2) / out_logvar.exp() + out_logvar + _LOG_2PI).sum(-1)
    kl = gaussian_kl(mu, logvar, prior_mean, prior_var)
    rec, kl = rec.mean(), kl.mean()
    return {"loss": rec + kl_weight * kl, "reconstruction": rec, "kl": kl}


class _MLPEncoder(nn.Module):
    def __init__(self, x_dim, hidden, z_dim):
        super().__init__()
        layers, d = [], x_dim
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU()]
            d = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(d, 2 * z_dim)

    def forward(self, x):
        return self.head(self.body(x)).chunk(2, dim=-1)


class _MLPDecoder(nn.Module):
    def __init__(self, z_dim, hidden, x_dim):
        super().__init__()
        layers, d = [], z_dim
        for h in reversed(hidden):
            layers += [nn.Linear(d, h), nn.ReLU()]
            d = h
        layers.append(nn.Linear(d, x_dim))
        self.body = nn.Sequential(*layers)

    def forward(self, z):
        return self.body(z)


class _ConvEncoder(nn.Module):
    def __init__(self, side, hidden, z_dim):
        super().__init__()
        self.side = side
        self.conv = nn.Sequential(
            nn.Conv2d(1, 32, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Linear(64 * (side // 4) ** 2, hidden), nn.ReLU(), nn.Linear(hidden, 2 * z_dim))

    def forward(self, x):
        return self.head(self.conv(x.view(-1, 1, self.side, self.side))).chunk(2, dim=-1)


class _ConvDecoder(nn.Module):
    def __init__(self, z_dim, hidden, side):
        super().__init__()
        self.side = side
        self.fc = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, 64 * (side // 4) ** 2), nn.ReLU())
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(32, 1, 4, 2, 1),
        )

    def forward(self, z):
        h = self.fc(z).view(-1, 64, self.side // 4, self.side // 4)
        return self.deconv(h).flatten(1)


class EncoderState:
    """What an encoder module keeps beyond its weights, shared by the VAE and the multimodal
    VAEs: its optimiser, the latent it last published (``latent_``) and its loss history
    (``loss_history_``, whose last entry is its diagnostics). Mixed in before ``Module``."""

    def diagnostics(self) -> dict:
        return dict(self.loss_history_[-1]) if self.loss_history_ else {}

    def _learned_state(self):
        return {
            "optimizer": self.optimizer.state_dict(),
            "latent": None if self.latent_ is None else self.latent_.detach().cpu(),
            "loss_history": [dict(h) for h in self.loss_history_],
        }

    def _load_learned_state(self, state):
        self.optimizer.load_state_dict(state["optimizer"])
        self.latent_ = None if state["latent"] is None else state["latent"].to(self.device)
        self.loss_history_ = [dict(h) for h in state["loss_history"]]

    def _move_state(self, device):
        if getattr(self, "latent_", None) is not None:
            self.latent_ = self.latent_.to(device)


class VAE(EncoderState, Module):
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
        self._build()
        self.loss_history_: list[dict[str, float]] = []
        self.latent_: torch.Tensor | None = None
        self.posterior_: Gaussian | None = None

    # --- networks -----------------------------------------------------------------------------
    def _build(self) -> None:
        # weights come from the module's own stream, so building is reproducible whatever else
        # has drawn from torch's global generator
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed + 7919 * self.n_updates, self.name + "/weights"))
            if self.architecture == "mlp":
                self.encoder = _MLPEncoder(self.x_dim, self.hidden, self.z_dim)
                self.decoder = _MLPDecoder(self.z_dim, self.hidden, self.x_dim)
            else:
                side = int(round(math.sqrt(self.x_dim)))
                self.encoder = _ConvEncoder(side, self.hidden[0], self.z_dim)
                self.decoder = _ConvDecoder(self.z_dim, self.hidden[0], side)
            if self.likelihood == "gaussian":
                self.out_logvar = nn.Parameter(torch.zeros(self.x_dim))
            else:
                self.out_logvar = None
        self.to(self.device)
        self.optimizer = torch.optim.Adam(self.parameters(), lr=self.lr)

    def encode(self, x: torch.Tensor):
        """``(mu, logvar)`` of q(z | x), each (N, z_dim)."""
        mu, logvar = self.encoder(x)
        return mu, logvar.clamp(-12.0, 8.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder output: Bernoulli logits or Gaussian means, (N, x_dim)."""
        return self.decoder(z)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Mean reconstruction of ``x`` through the posterior means (pixel probabilities)."""
        with torch.no_grad():
            out = self.decode(self.encode(x)[0])
        return torch.sigmoid(out) if self.likelihood == "bernoulli" else out

    def _noise(self, like: torch.Tensor) -> torch.Tensor:
        return torch.randn(like.shape, generator=self.generator, device=like.device, dtype=like.dtype)

    def loss_terms(self, x, prior_mean=None, prior_var=None) -> dict[str, torch.Tensor]:
        """Negative ELBO with reconstruction and KL reported separately, from one forward pass."""
        mu, logvar = self.encode(x)
        z = mu + (0.5 * logvar).exp() * self._noise(mu)
        return vae_loss_terms(x, self.decode(z), mu, logvar, likelihood=self.likelihood,
                              out_logvar=self.out_logvar, prior_mean=prior_mean, prior_var=prior_var,
                              kl_weight=self.kl_weight)

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
        if prior is not None and prior.n_items != x.shape[0]:
            raise MessageError(f"VAE {self.name!r}: the prior on port 'z' has {prior.n_items} items "
                               f"but the data on 'x' have {x.shape[0]}")
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
                self.optimizer.zero_grad(set_to_none=True)
                terms["loss"].backward()
                self.optimizer.step()
                totals += torch.stack([terms["loss"], terms["reconstruction"], terms["kl"]]).detach() * idx.numel()
        if epochs:
            loss, rec, kl = (totals / n).tolist()
            self.loss_history_.append({"loss": loss, "reconstruction": rec, "kl": kl})
        self.eval()
        self._publish_latent(x)
        self.n_updates += 1

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
        mu, logvar = self.encode(xb)
        z = mu + (0.5 * logvar).exp() * self._noise(mu)
        if "z" in scored:
            out = self.decode(z)
            if self.likelihood == "bernoulli":
                rec = F.binary_cross_entropy_with_logits(out, xb, reduction="none").sum(-1).mean()
            else:
                rec = 0.5 * (((xb - out) ** 2) / self.out_logvar.exp() + self.out_logvar + _LOG_2PI).sum(-1).mean()
            neg_entropy = gaussian_neg_entropy(logvar).mean()
            terms = {"loss": rec + self.kl_weight * neg_entropy, "reconstruction": rec, "kl": neg_entropy}
        else:
            terms = vae_loss_terms(xb, self.decode(z), mu, logvar, likelihood=self.likelihood,
                                   out_logvar=self.out_logvar,
                                   prior_mean=None if prior is None else prior.mean[idx],
                                   prior_var=None if prior is None else prior.var[idx],
                                   kl_weight=self.kl_weight)
        self._joint_totals += torch.stack([terms["loss"], terms["reconstruction"], terms["kl"]]).detach() * idx.numel()
        self._joint_items += idx.numel()
        return terms["loss"], {"z": z}

    def joint_end(self) -> None:
        loss, rec, kl = (self._joint_totals / max(self._joint_items, 1)).tolist()
        self.loss_history_.append({"loss": loss, "reconstruction": rec, "kl": kl})
        self.eval()
        self._publish_latent(self._data_and_prior()[0])
        self.n_updates += 1

    def _publish_latent(self, x) -> None:
        with torch.no_grad():
            mu, logvar = self.encode(x)
            self.latent_ = mu if self.send == "mean" else mu + (0.5 * logvar).exp() * self._noise(mu)
            self.posterior_ = Gaussian(mu, logvar.exp())

    def publish(self):
        if self.latent_ is None:
            return {}
        return {"z": Samples(self.latent_)}

    def extra_repr(self):
        return (f"name={self.name!r}, x_dim={self.x_dim}, z_dim={self.z_dim}, hidden={self.hidden}, "
                f"architecture={self.architecture!r}, likelihood={self.likelihood!r}, kl_weight={self.kl_weight}, "
                f"epochs={self.epochs}, first_epochs={self.first_epochs}, batch_size={self.batch_size}, lr={self.lr}, restart={self.restart!r}, "
                f"send={self.send!r}, device={self.device}")
