"""Evaluation helpers of the benchmarks: a digit classifier for judging generated images, the
cross-modal coherence it measures, and the records of graphs trained side by side taken as one.

Nothing here is given to a module: the classifier is trained on labelled data that the
benchmarks never show their graphs (the MNIST *test* split), for evaluation only.
"""

from __future__ import annotations

import torch

from serket.errors import DataError

__all__ = ["DigitClassifier", "coherence", "merge_histories", "held_out_figures"]


class DigitClassifier(torch.nn.Module):
    """A small convolutional digit classifier, for evaluating generated images only.

    Trained on the MNIST *test* split (10,000 images that the benchmarks, which draw from the
    train split, never use); :meth:`fit` reports its accuracy on a held-out part of that split.
    """

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(1, 16, 5, padding=2), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(16, 32, 5, padding=2), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Flatten(), torch.nn.Linear(32 * 7 * 7, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))

    def forward(self, x):
        return self.net(x.view(-1, 1, 28, 28))

    def fit(self, images, labels, *, epochs: int = 3, seed: int = 0, held_out: int = 1000) -> float:
        gen = torch.Generator(device=images.device).manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.__init__()
        self.to(images.device)
        order = torch.randperm(images.shape[0], generator=gen, device=images.device)
        test, train_idx = order[:held_out], order[held_out:]
        opt = torch.optim.Adam(self.parameters(), lr=1e-3)
        for _ in range(epochs):
            perm = train_idx[torch.randperm(len(train_idx), generator=gen, device=images.device)]
            for start in range(0, len(perm), 128):
                idx = perm[start:start + 128]
                loss = torch.nn.functional.cross_entropy(self(images[idx]), labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        self.eval()
        return float((self.predict(images[test]) == labels[test]).float().mean())

    @torch.no_grad()
    def predict(self, images) -> torch.Tensor:
        return torch.cat([self(images[i:i + 1000]).argmax(1) for i in range(0, images.shape[0], 1000)])


def coherence(model, images, speech, labels, classifier: DigitClassifier) -> dict[str, float]:
    """Share of generated images whose classified digit is the input's digit: from speech alone,
    from the image alone, and from both."""
    labels = labels.to(images.device)
    out = {}
    for key, batch in (("speech_to_image", {"speech": speech}), ("image_to_image", {"image": images}),
                       ("both_to_image", {"image": images, "speech": speech})):
        generated = model.cross_generate(batch, "image")
        out[key] = float((classifier.predict(generated) == labels).float().mean())
    return out


def merge_histories(*histories: list[dict]) -> list[dict]:
    """Per-round records of graphs trained side by side, as one: metrics, step times and memory
    per node joined, seconds added (the cost of training them one after the other)."""
    if len({len(h) for h in histories}) != 1:
        raise DataError(f"histories of different lengths cannot be merged: {[len(h) for h in histories]}")
    merged = []
    for records in zip(*histories):
        per_node = ("node_seconds", "node_peak_rss_mib", "node_peak_rss_growth_mib")
        record = {**records[0], "metrics": {}, "seconds": 0.0, **{key: {} for key in per_node}}
        for r in records:
            record["metrics"].update(r["metrics"])
            record["seconds"] += r["seconds"]
            for key in per_node:
                record[key].update(r.get(key, {}))
        merged.append(record)
    return merged


def held_out_figures(graphs, subsets: dict, labels, trained: dict, train_labels) -> dict[str, dict[str, float]]:
    """How trained graphs categorise held-out items: ``{key: {"accuracy", "ari", "nmi"}}``.

    ``graphs``: one trained graph, or several trained side by side (a benchmark's halves);
    ``subsets``: ``{name: {observation: new data}}``, e.g. ``{"both": {...}, "speech only":
    {...}}``, each graph given the observations of a subset that it has;
    ``labels``: the held-out items' classes (N,); ``trained``: ``{node: its categories on the
    training items}``, for the nodes to score; ``train_labels``: their classes.

    Each node's categories are named by the digit they were matched to on the *training* items
    (Hungarian matching there, never on the held-out items), so the accuracy is that of the
    trained model used as a classifier. Keys: the node name for the subset ``"both"``, else
    ``"node (subset)"``.
    """
    from serket.metrics import adjusted_rand_index, match_clusters, normalized_mutual_info

    graphs = graphs if isinstance(graphs, (list, tuple)) else [graphs]
    labels = torch.as_tensor(labels).cpu()
    naming = {node: match_clusters(train_labels, categories.cpu()) for node, categories in trained.items()}
    figures = {}
    for subset, data in subsets.items():
        for graph in graphs:
            given = {name: values for name, values in data.items() if name in graph.roles()}
            if not given:
                continue
            for node, categories in graph.predict(given).items():
                if node not in naming:
                    continue
                categories = categories.cpu()
                named = torch.tensor([naming[node].get(int(c), -1) for c in categories])
                key = node if subset == "both" else f"{node} ({subset})"
                figures[key] = {"accuracy": float((named == labels).float().mean()),
                                "ari": adjusted_rand_index(labels, categories),
                                "nmi": normalized_mutual_info(labels, categories)}
    return figures
