"""The shared neural building blocks: the sampler, the reconstruction term, the Gaussian closed forms."""

import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal

from serket.modules.nn import (LOGVAR_RANGE, ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder,
                               gaussian_log_density, gaussian_neg_entropy, reconstruction_nll,
                               reparameterised_sample)


def test_the_reparameterised_sample_has_the_posterior_moments_and_passes_gradients():
    mu = torch.tensor([[1.5, -2.0]], requires_grad=True)
    logvar = torch.tensor([[math.log(0.25), math.log(4.0)]], requires_grad=True)
    z = reparameterised_sample(mu.expand(200_000, 2), logvar.expand(200_000, 2), torch.Generator().manual_seed(0))
    assert z.mean(0).tolist() == pytest.approx([1.5, -2.0], abs=0.015)
    assert z.var(0).tolist() == pytest.approx([0.25, 4.0], rel=0.02)
    z.mean().backward()
    assert mu.grad[0].tolist() == pytest.approx([0.5, 0.5])   # d mean(z) / d mu, per column
    assert logvar.grad.abs().max() < 0.01                      # E[eps] = 0: the mean does not move sigma


def test_the_sampler_draws_from_the_given_stream_only():
    mu, logvar = torch.zeros(4, 3), torch.zeros(4, 3)
    a = reparameterised_sample(mu, logvar, torch.Generator().manual_seed(7))
    torch.manual_seed(123)  # the global stream must not matter
    b = reparameterised_sample(mu, logvar, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert torch.equal(a, torch.randn(4, 3, generator=torch.Generator().manual_seed(7)))


def test_the_reconstruction_term_is_the_negative_log_likelihood():
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(5, 7, generator=gen) > 0.5).float()
    logits = torch.randn(5, 7, generator=gen)
    expected = -Bernoulli(logits=logits).log_prob(x).sum(-1)
    assert torch.allclose(reconstruction_nll(x, logits), expected, atol=1e-5)
    xg, mean, out_logvar = torch.randn(5, 7, generator=gen), torch.randn(5, 7, generator=gen), torch.randn(7, generator=gen)
    expected = -Normal(mean, (0.5 * out_logvar).exp()).log_prob(xg).sum(-1)
    assert torch.allclose(reconstruction_nll(xg, mean, "gaussian", out_logvar), expected, atol=1e-5)
    assert torch.allclose(gaussian_log_density(xg, mean, out_logvar), -expected, atol=1e-5)


def test_the_negative_entropy_is_the_expected_log_density_under_itself():
    logvar = torch.tensor([[0.3, -1.0, 2.0]])
    q = Normal(torch.zeros(1, 3), (0.5 * logvar).exp())
    assert torch.allclose(gaussian_neg_entropy(logvar), -q.entropy().sum(-1), atol=1e-6)


@pytest.mark.parametrize("encoder, decoder, width", [
    (MLPEncoder(16, (8, 4), 3), MLPDecoder(3, (8, 4), 16), 16),
    (MLPEncoder(16, (), 3), MLPDecoder(3, (), 16), 16),
    (ConvEncoder(8, 10, 3), ConvDecoder(3, 10, 8), 64),
])
def test_encoders_and_decoders_have_the_documented_shapes_and_a_bounded_log_variance(encoder, decoder, width):
    x = torch.rand(6, width) * 1e4  # large inputs push the raw log-variance out of range
    with torch.no_grad():
        mu, logvar = encoder(x)
    assert mu.shape == logvar.shape == (6, 3)
    assert float(logvar.min()) >= LOGVAR_RANGE[0] and float(logvar.max()) <= LOGVAR_RANGE[1]
    assert decoder(mu).shape == (6, width)
