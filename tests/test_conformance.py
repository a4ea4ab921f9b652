"""Every module in the library passes the shared conformance check."""

import torch

from serket.messages import Categorical, Gaussian, Samples
from serket.modules.gmm import GMM
from serket.modules.vae import VAE
from serket.testing import check_module


def _blobs(n=60, d=2, k=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    centres = 4 * torch.randn(k, d, generator=gen)
    return centres[torch.arange(n) % k] + torch.randn(n, d, generator=gen)


def test_gmm_conformance():
    z = _blobs()
    prior = Categorical(torch.full((60, 3), 1 / 3))
    check_module(lambda: GMM("gmm", n_clusters=3, dim=2, sweeps=3, seed=4), {"x": Samples(z)})
    check_module(lambda: GMM("gmm", n_clusters=3, dim=2, sweeps=3, block_size=1, prior_variance="cluster"),
                 {"x": Samples(z), "c": prior})


def test_vae_conformance_with_a_prior():
    x = (torch.rand(40, 12, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    check_module(lambda: VAE("vae", x_dim=12, z_dim=2, hidden=(8,), epochs=2, batch_size=16),
                 {"x": Samples(x), "z": Gaussian(torch.zeros(40, 2), torch.ones(40, 2))})


def test_the_check_catches_a_nondeterministic_module():
    class Leaky(VAE):
        def update(self):  # draws from the global generator, not the module's own stream
            super().update()
            self.latent_ = self.latent_ + torch.randn_like(self.latent_)

    x = (torch.rand(40, 12, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    try:
        check_module(lambda: Leaky("vae", x_dim=12, z_dim=2, hidden=(8,), epochs=2, batch_size=16, send="sample"),
                     {"x": Samples(x)})
    except AssertionError as err:
        assert "same seed" in str(err) or "restored" in str(err)
    else:
        raise AssertionError("the conformance check accepted a module that ignores its seed")


def test_the_module_protocol_stays_small():
    # what Module adds to torch.nn.Module, methods and attributes together: the protocol an
    # author writes to (ports, update, publish, predict) and what the base class provides
    import torch

    from serket.module import Module

    class Tiny(Module):
        def ports(self):
            return {}

    added = {n for n in set(dir(Tiny("tiny"))) - set(dir(torch.nn.Module())) if not n.startswith("_")}
    assert added == {"name", "device", "inbox", "ports", "receive", "update", "publish", "predict",
                     "infer", "seed", "generator", "n_updates", "fit"}, sorted(added)
