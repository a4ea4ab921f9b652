import pytest
import torch
from torch.distributions import Normal, kl_divergence

from serket.errors import DataError, MessageError, PortError
from serket.messages import Gaussian, Samples
from serket.modules.nn import gaussian_kl
from serket.modules.vae import VAE, vae_loss_terms
from serket.testing import check_module


def _binary_data(n=120, d=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    protos = (torch.rand(3, d, generator=gen) > 0.5).float()
    labels = torch.randint(3, (n,), generator=gen)
    flips = (torch.rand(n, d, generator=gen) < 0.05).float()
    return (protos[labels] - flips).abs(), labels


def test_gaussian_kl_matches_torch_distributions():
    gen = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(7, 5, generator=gen), torch.randn(7, 5, generator=gen)
    pm, pv = torch.randn(7, 5, generator=gen), torch.rand(7, 5, generator=gen) + 0.2
    expected = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(pm, pv.sqrt())).sum(-1)
    assert torch.allclose(gaussian_kl(mu, logvar, pm, pv), expected, atol=1e-5)
    standard = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(-1)
    assert torch.allclose(gaussian_kl(mu, logvar), standard, atol=1e-5)


def test_loss_terms_are_the_elbo_terms():
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(4, 6, generator=gen) > 0.5).float()
    logits = torch.randn(4, 6, generator=gen)
    mu, logvar = torch.randn(4, 2, generator=gen), torch.zeros(4, 2)
    terms = vae_loss_terms(x, logits, mu, logvar, kl_weight=0.5)
    rec = -(x * torch.log(torch.sigmoid(logits)) + (1 - x) * torch.log(1 - torch.sigmoid(logits))).sum(1).mean()
    kl = (0.5 * mu.pow(2).sum(1)).mean()
    assert torch.allclose(terms["reconstruction"], rec, atol=1e-5)
    assert torch.allclose(terms["kl"], kl, atol=1e-6)
    assert torch.allclose(terms["loss"], rec + 0.5 * kl, atol=1e-5)


def test_training_lowers_the_loss_and_the_prior_message_moves_the_latent():
    x, _ = _binary_data()
    vae = VAE("vae", x_dim=16, z_dim=2, hidden=(32,), epochs=30, batch_size=40, lr=3e-3)
    vae.fit(x=x)
    first = vae.loss_history_[0]["loss"]
    vae.fit(x=x)
    assert vae.loss_history_[-1]["loss"] < first
    free = vae.publish()["z"].values.mean(0)
    target = torch.full((120, 2), 4.0)
    vae.receive("z", Gaussian(target, torch.full((120, 2), 0.05)))
    for _ in range(3):
        vae.update()
    pulled = vae.publish()["z"].values.mean(0)
    assert (pulled - 4.0).abs().max() < 1.0 < (free - 4.0).abs().max()


def test_conv_architecture_round_trip_shapes():
    vae = VAE("vae", x_dim=64, z_dim=3, hidden=(16,), architecture="conv", epochs=1, batch_size=10)
    x = torch.rand(20, 64)
    vae.fit(x=x)
    assert vae.publish()["z"].values.shape == (20, 3)
    assert vae.reconstruct(x).shape == (20, 64)


def test_vae_passes_the_conformance_check():
    x, _ = _binary_data(n=60)
    check_module(lambda: VAE("vae", x_dim=16, z_dim=2, hidden=(8,), epochs=2, batch_size=20),
                 {"x": Samples(x)})
    check_module(lambda: VAE("vae", x_dim=16, z_dim=2, hidden=(8,), epochs=2, batch_size=20, send="sample",
                             restart="reinit", likelihood="gaussian"),
                 {"x": Samples(x), "z": Gaussian(torch.zeros(60, 2), torch.ones(60, 2))})


def test_bad_input_gives_clear_errors():
    vae = VAE("img", x_dim=16, z_dim=2, epochs=1)
    with pytest.raises(DataError, match=r"'img'.*\[0, 1\].*\[255, 255\]"):
        vae.receive("x", torch.full((5, 16), 255.0))
    with pytest.raises(MessageError, match="non-finite"):
        vae.receive("x", torch.full((5, 16), float("nan")))
    with pytest.raises(MessageError, match="width 15 does not match the port's size 16"):
        vae.receive("x", torch.zeros(5, 15))
    with pytest.raises(DataError, match="empty"):
        vae.receive("x", torch.zeros(0, 16))
    with pytest.raises(PortError, match="no port 'y'"):
        vae.receive("y", torch.zeros(5, 16))
    with pytest.raises(DataError, match="no data received"):
        vae.update()
    vae.receive("x", torch.zeros(5, 16))
    vae.receive("z", Gaussian(torch.zeros(4, 2), torch.ones(4, 2)))
    with pytest.raises(MessageError, match="the prior on port 'z' has 4 items but the data on 'x' has 5"):
        vae.update()
    with pytest.raises(ValueError, match="architecture must be"):
        VAE("v", architecture="rnn")
    with pytest.raises(ValueError, match="side divisible by 4"):
        VAE("v", x_dim=50, architecture="conv")
