"""A complete module: soft k-means with a prior over its categories, tied to a GMM.

    python examples/minimal_module.py

Everything a module author writes is in the class below (see docs/writing-a-module.md): the
``__init__`` arguments are the settings, the ``_``-suffixed attributes the learned state, and
``ports``, ``update``, ``publish``, ``infer`` (new items) and ``predict`` the protocol. The
script then ties it tail-to-tail with a GMM over a second view of the same items and prints
both accuracies.
"""

import serket  # noqa: F401  (first: sets the thread policy before torch loads)
import torch

from serket import Categorical, Module, Port


class SoftKMeans(Module):
    """K spherical Gaussian clusters of unit variance, fitted by EM; a category prior per item."""

    def __init__(self, name, *, n_clusters, dim, iterations=20, seed=0, device="cpu"):
        super().__init__(name, seed=seed, device=device)
        self.n_clusters, self.dim, self.iterations = n_clusters, dim, iterations
        self.centres_ = None  # (K, D), learned

    def ports(self):
        return {"x": Port("x", accepts=("samples",), size=self.dim, doc="data in"),
                "c": Port("c", sends=("categorical",), accepts=("categorical",), size=self.n_clusters,
                          doc="P(c | x) out, without the prior; a prior over c in")}

    def _log_likelihood(self, x):  # (N, K): log N(x; centre_k, I) up to a constant
        return -0.5 * torch.cdist(x, self.centres_).square()

    def update(self):
        x = self.inbox["x"].values
        if self.centres_ is None:  # start from K distinct items drawn with the module's stream
            self.centres_ = x[torch.randperm(x.shape[0], generator=self.generator, device=x.device)[:self.n_clusters]]
        log_prior = self.inbox["c"].probs.clamp_min(1e-30).log() if "c" in self.inbox else 0.0
        for _ in range(self.iterations):
            r = torch.softmax(self._log_likelihood(x) + log_prior, 1)  # E step, prior included
            self.centres_ = (r.T @ x) / r.sum(0).clamp_min(1e-12)[:, None]  # M step

    def publish(self):  # the category message leaves out the received prior
        return {"c": Categorical(torch.softmax(self._log_likelihood(self.inbox["x"].values), 1))}

    def infer(self, x, c=None):  # new items: the same message, from the learned centres
        return {"c": Categorical(torch.softmax(self._log_likelihood(x.values), 1))}

    def predict(self):  # each item's category, its prior included
        log_prior = self.inbox["c"].probs.clamp_min(1e-30).log() if "c" in self.inbox else 0.0
        return (self._log_likelihood(self.inbox["x"].values) + log_prior).argmax(1)


def two_views(n_per_category=100, n_categories=4, seed=0):
    """Items of ``n_categories`` kinds seen twice: two 2-D views, each too noisy to separate alone."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_categories).repeat_interleave(n_per_category)
    angle = 2 * torch.pi * labels / n_categories
    first = torch.stack([angle.cos(), angle.sin()], 1) * 2 + torch.randn(len(labels), 2, generator=g)
    second = torch.stack([angle.sin(), -angle.cos()], 1) * 2 + torch.randn(len(labels), 2, generator=g)
    return first, second, labels


def main(seed=0, rounds=5):
    from serket.connections import Observation
    from serket.graph import Graph
    from serket.modules.gmm import GMM
    from serket.training import train_alternate

    first, second, labels = two_views(seed=seed)
    graph = Graph(seed=seed)
    graph.add(Observation("first", first))
    graph.add(Observation("second", second))
    graph.add(SoftKMeans("kmeans", n_clusters=4, dim=2, seed=seed))
    graph.add(GMM("gmm", n_clusters=4, dim=2, seed=seed))
    graph.observe("first", "kmeans.x")
    graph.observe("second", "gmm.x")
    graph.tail_to_tail("category", ["kmeans.c", "gmm.c"])  # one category behind both views
    graph.validate()
    history = train_alternate(graph, rounds, labels=labels, progress=False)
    accuracy = {name: metrics["accuracy"] for name, metrics in history[-1]["metrics"].items()}
    print("accuracy after", rounds, "rounds:", ", ".join(f"{k} {v * 100:.1f}%" for k, v in accuracy.items()))
    return accuracy


if __name__ == "__main__":
    main()
