"""VAE epoch time through the framework against a hand-written PyTorch loop of the same network.

    python benchmarks/bench_vae_step.py [--device cpu] [--epochs 5] [--repeats 7] [--json out.json]

Alternate mode: both train a 784-128-10 Bernoulli VAE with Adam (lr 1e-3, batch 500) on the
same 3,000 MNIST images (or random binary images when MNIST cannot be had), with the same
per-item prior N(m_i, I). They run interleaved, several times each; the script prints the
median seconds per epoch of each and their ratio (framework / hand-written: 1.00 means no
overhead).

Joint mode: a graph images -> VAE -> MixturePrior trained by the JointTrainer (live latent
samples crossing the connection, the mixture scoring them, two optimisers stepped per
minibatch) against a hand-written loop of the same objective. The per-round work outside the
minibatches (the mixture's EM refit, publishing the latent) is the same fixed cost whatever the
number of epochs, so both sides are timed at 2 and at 2 + ``--epochs`` epochs and the
difference per epoch is compared: the marginal cost of an epoch.
"""

import argparse
import statistics
import time

import serket  # noqa: F401  (first: sets the thread policy before torch loads)
import torch
import torch.nn.functional as F
from torch import nn

from serket.bench.reporting import write_json
from serket.connections import Observation
from serket.graph import Graph
from serket.messages import Gaussian, Samples
from serket.modules.mixture import MixturePrior, diagonal_mixture_log_density
from serket.modules.vae import VAE
from serket.training import JointTrainer


def images(n=3000):
    try:
        from serket.datasets import load_mnist_subset

        x, _ = load_mnist_subset(per_class=n // 10, seed=0, verbose=False)
        return x, "MNIST"
    except Exception as err:  # benchmark still meaningful on random binary images
        print(f"MNIST unavailable ({err}); using random binary images")
        return (torch.rand(n, 784) > 0.8).float(), "random binary"


class HandWritten(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 20))
        self.dec = nn.Sequential(nn.Linear(10, 128), nn.ReLU(), nn.Linear(128, 784))

    def epoch(self, x, pm, pv, opt, batch=500):
        order = torch.randperm(x.shape[0], device=x.device)
        for s in range(0, x.shape[0], batch):
            idx = order[s:s + batch]
            xb = x[idx]
            mu, logvar = self.enc(xb).chunk(2, -1)
            logvar = logvar.clamp(-12, 8)
            z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
            rec = F.binary_cross_entropy_with_logits(self.dec(z), xb, reduction="none").sum(-1).mean()
            kl = 0.5 * (pv[idx].log() - logvar + (logvar.exp() + (mu - pm[idx]) ** 2) / pv[idx] - 1).sum(-1).mean()
            loss = rec + kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


class HandWrittenJoint(nn.Module):
    """The joint objective by hand: reconstruction + E_q[log q(z)] - log p_mixture(z)."""

    def __init__(self, mixture: MixturePrior):
        super().__init__()
        self.vae = HandWritten()
        self.means = nn.Parameter(mixture.means.detach().clone())
        self.log_var = nn.Parameter(mixture.log_var.detach().clone())
        self.logits = nn.Parameter(mixture.logits.detach().clone())

    def epoch(self, x, opts, batch=500):
        order = torch.randperm(x.shape[0], device=x.device)
        for s in range(0, x.shape[0], batch):
            idx = order[s:s + batch]
            xb = x[idx]
            mu, logvar = self.vae.enc(xb).chunk(2, -1)
            logvar = logvar.clamp(-12, 8)
            z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
            rec = F.binary_cross_entropy_with_logits(self.vae.dec(z), xb, reduction="none").sum(-1).mean()
            neg_entropy = (-0.5 * (logvar + 1.8378770664093453 + 1.0).sum(-1)).mean()
            log_pz, _ = diagonal_mixture_log_density(z, self.means, self.log_var.clamp_min(-6.907755278982137),
                                                     torch.log_softmax(self.logits, 0))
            loss = rec + neg_entropy - log_pz.sum() / idx.numel()
            for opt in opts:
                opt.zero_grad(set_to_none=True)
            loss.backward()
            for opt in opts:
                opt.step()


def joint_comparison(x, device, extra_epochs: int, repeats: int) -> dict:
    graph = Graph(seed=0, device=device)
    graph.add(Observation("images", x))
    graph.add(VAE("vae", epochs=1, batch_size=500, lr=1e-3))
    mixture = graph.add(MixturePrior("gmm", n_clusters=10, dim=10))
    graph.observe("images", "vae.x")
    graph.head_to_tail(upper="gmm.x", lower="vae.z")
    JointTrainer(graph, rounds=1, warmup=1, progress=False).run()  # the warmup round fits the mixture
    hand = HandWrittenJoint(mixture).to(device)
    hand_opts = [torch.optim.Adam(hand.vae.parameters(), lr=1e-3),
                 torch.optim.Adam([hand.means, hand.log_var, hand.logits], lr=1e-3)]

    def framework(epochs):
        trainer = JointTrainer(graph, rounds=1, epochs=epochs, batch_size=500, progress=False)
        sync(device); t = time.perf_counter()
        trainer._run_round(2)
        sync(device)
        return time.perf_counter() - t

    def by_hand(epochs):
        sync(device); t = time.perf_counter()
        for _ in range(epochs):
            hand.epoch(x, hand_opts)
        sync(device)
        return time.perf_counter() - t

    framework(2); by_hand(2)  # warm-up
    per_f, per_h = [], []
    for _ in range(repeats):
        per_f.append((framework(2 + extra_epochs) - framework(2)) / extra_epochs)
        per_h.append((by_hand(2 + extra_epochs) - by_hand(2)) / extra_epochs)
    m, h = statistics.median(per_f), statistics.median(per_h)
    return {"framework_s_per_epoch": m, "hand_written_s_per_epoch": h, "ratio": m / h}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--epochs", type=int, default=5, help="epochs per timed repeat")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    x, source = images()
    x = x.to(device)
    pm, pv = torch.randn(x.shape[0], 10, device=device), torch.ones(x.shape[0], 10, device=device)

    module = VAE("vae", epochs=args.epochs, batch_size=500, lr=1e-3, device=device)
    module.receive("x", Samples(x))
    module.receive("z", Gaussian(pm, pv))
    hand = HandWritten().to(device)
    opt = torch.optim.Adam(hand.parameters(), lr=1e-3)
    module.update()  # warm-up both
    hand.epoch(x, pm, pv, opt)

    t_module, t_hand = [], []
    for _ in range(args.repeats):
        sync(device); t = time.perf_counter()
        module.update()
        sync(device); t_module.append((time.perf_counter() - t) / args.epochs)
        sync(device); t = time.perf_counter()
        for _ in range(args.epochs):
            hand.epoch(x, pm, pv, opt)
        sync(device); t_hand.append((time.perf_counter() - t) / args.epochs)
    m, h = statistics.median(t_module), statistics.median(t_hand)
    result = {"data": source, "device": str(device), "threads": torch.get_num_threads(),
              "framework_s_per_epoch": m, "hand_written_s_per_epoch": h, "ratio": m / h,
              "repeats": args.repeats, "epochs_per_repeat": args.epochs}
    print(f"VAE 784-128-10, 3,000 {source} images, batch 500, {device}:")
    print(f"  framework (VAE module, messages in its inbox) {m*1000:8.1f} ms/epoch")
    print(f"  hand-written PyTorch loop                      {h*1000:8.1f} ms/epoch")
    print(f"  ratio framework / hand-written                 {m/h:8.3f}x  (median of {args.repeats})")
    joint = joint_comparison(x, device, args.epochs, args.repeats)
    result["joint"] = joint
    jm, jh = joint["framework_s_per_epoch"], joint["hand_written_s_per_epoch"]
    print(f"Joint training, VAE 784-128-10 + 10-component mixture prior scoring the live latent, {device}:")
    print(f"  framework (JointTrainer, live messages)       {jm*1000:8.1f} ms/epoch (marginal)")
    print(f"  hand-written PyTorch loop                      {jh*1000:8.1f} ms/epoch (marginal)")
    print(f"  ratio framework / hand-written                 {jm/jh:8.3f}x  (median of {args.repeats})")
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
