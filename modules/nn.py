"""Neural building blocks the deep modules share: encoders, decoders and the terms of an ELBO.

* Encoders map data to the parameters ``(mu, logvar)`` of a diagonal Gaussian q(z | x):
  :class:`MLPEncoder` (any data) and :class:`ConvEncoder` (square single-channel images).
  Their log-variances are clamped to ``LOGVAR_RANGE``.
* Decoders map a latent to Bernoulli logits or Gaussian means: :class:`MLPDecoder`,
  :class:`ConvDecoder`.
* :func:`reparameterised_sample` — the one way a module draws ``z ~ q(z | x)`` so that the
  gradient flows through ``mu`` and ``logvar``, from the module's own random stream.
* :func:`reconstruction_nll` — ``-log p(x | decoder output)`` per item, Bernoulli or Gaussian;
  :func:`gaussian_log_density`, :func:`gaussian_kl` and :func:`gaussian_neg_entropy` — the closed
  forms for diagonal Gaussians the objectives are built from.

Example::

    encoder, decoder = MLPEncoder(784, (128,), 10), MLPDecoder(10, (128,), 784)
    mu, logvar = encoder(x)
    z = reparameterised_sample(mu, logvar, generator)
    loss = (reconstruction_nll(x, decoder(z)) + gaussian_kl(mu, logvar)).mean()
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LOGVAR_RANGE", "MLPEncoder", "MLPDecoder", "ConvEncoder", "ConvDecoder", "reparameterised_sample",
    "reconstruction_nll", "gaussian_log_density", "gaussian_kl", "gaussian_neg_entropy",
]

_LOG_2PI = math.log(2 * math.pi)
# the encoders' log-variances stay in [-12, 8]: exp() neither underflows to a zero variance
# (an infinite precision in a product of experts) nor overflows in float32
LOGVAR_RANGE = (-12.0, 8.0)


# --- encoders and decoders ---------------------------------------------------------------------
class MLPEncoder(nn.Module):
    """``x (N, x_dim) -> (mu, logvar)``, each (N, z_dim): ReLU layers of widths ``hidden``
    (``()``: linear), then one linear head."""

    def __init__(self, x_dim: int, hidden, z_dim: int):
        super().__init__()
        layers, d = [], x_dim
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU()]
            d = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(d, 2 * z_dim)

    def forward(self, x):
        mu, logvar = self.head(self.body(x)).chunk(2, dim=-1)
        return mu, logvar.clamp(*LOGVAR_RANGE)


class MLPDecoder(nn.Module):
    """``z (N, z_dim) -> (N, x_dim)``: the mirror of :class:`MLPEncoder` (widths reversed)."""

    def __init__(self, z_dim: int, hidden, x_dim: int):
        super().__init__()
        layers, d = [], z_dim
        for h in reversed(hidden):
            layers += [nn.Linear(d, h), nn.ReLU()]
            d = h
        layers.append(nn.Linear(d, x_dim))
        self.body = nn.Sequential(*layers)

    def forward(self, z):
        return self.body(z)


class ConvEncoder(nn.Module):
    """``x (N, side * side) -> (mu, logvar)``: two stride-2 convolutions (32 and 64 channels),
    a fully connected layer of width ``hidden``, a linear head. ``side`` divisible by 4."""

    def __init__(self, side: int, hidden: int, z_dim: int):
        super().__init__()
        self.side = side
        self.conv = nn.Sequential(
            nn.Conv2d(1, 32, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Linear(64 * (side // 4) ** 2, hidden), nn.ReLU(), nn.Linear(hidden, 2 * z_dim))

    def forward(self, x):
        mu, logvar = self.head(self.conv(x.view(-1, 1, self.side, self.side))).chunk(2, dim=-1)
        return mu, logvar.clamp(*LOGVAR_RANGE)


class ConvDecoder(nn.Module):
    """``z (N, z_dim) -> (N, side * side)``: the mirror of :class:`ConvEncoder`."""

    def __init__(self, z_dim: int, hidden: int, side: int):
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


# --- sampling and the terms of the objective ---------------------------------------------------
def reparameterised_sample(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One draw of ``z ~ N(mu, diag(exp(logvar)))`` per row, as ``mu + sigma * eps`` with
    ``eps ~ N(0, I)`` from ``generator``, so that gradients reach ``mu`` and ``logvar``."""
    noise = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + (0.5 * logvar).exp() * noise


def gaussian_log_density(x, mean, logvar):
    """``log N(x; mean, diag(exp(logvar)))``, summed over the last dimension (broadcasting)."""
    return -0.5 * ((x - mean).pow(2) / logvar.exp() + logvar + _LOG_2PI).sum(-1)


def reconstruction_nll(x, decoded, likelihood: str = "bernoulli", out_logvar=None):
    """``-log p(x | decoded)`` per item, summed over the data's dimensions: Bernoulli with
    logits ``decoded``, or Gaussian with means ``decoded`` and log-variances ``out_logvar``."""
    if likelihood == "bernoulli":
        return F.binary_cross_entropy_with_logits(decoded, x, reduction="none").sum(-1)
    return -gaussian_log_density(x, decoded, out_logvar)


def gaussian_kl(mu, logvar, prior_mean=None, prior_var=None):
    """KL( N(mu, exp(logvar)) || N(prior_mean, prior_var) ), summed over the last dimension
    (the prior N(0, I) when ``prior_mean`` is None)."""
    if prior_mean is None:
        return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)
    return 0.5 * (prior_var.log() - logvar + (logvar.exp() + (mu - prior_mean).pow(2)) / prior_var - 1.0).sum(-1)


def gaussian_neg_entropy(logvar):
    """``E_q[log q(z)]`` of a diagonal Gaussian q with log-variances ``logvar``, summed over the
    last dimension: the KL term's share when an upper module scores ``-log p(z)`` itself."""
    return -0.5 * (logvar + _LOG_2PI + 1.0).sum(-1)
