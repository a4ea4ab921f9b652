"""Paired multimodal data: several observations of the same items, and pairing two datasets
by their classes (an image with an utterance of the same digit).

Labels are carried for evaluation and pairing only: no module is ever given them.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from serket.errors import DataError

__all__ = ["PairedDataset", "pair_by_digit", "held_out_images"]


def pair_by_digit(image_labels: torch.Tensor, speech_labels: torch.Tensor, *, seed: int = 0):
    """Indices ``(images, utterances)`` pairing each image with an utterance of the same digit.

    Within each digit the utterances are shuffled by ``seed``; each digit contributes as many
    pairs as the smaller side has items.
    """
    gen = torch.Generator().manual_seed(seed)
    image_idx, speech_idx = [], []
    for digit in torch.unique(image_labels).tolist():
        imgs = (image_labels == digit).nonzero().squeeze(1)
        utts = (speech_labels == digit).nonzero().squeeze(1)
        utts = utts[torch.randperm(len(utts), generator=gen)]
        n = min(len(imgs), len(utts))
        image_idx.append(imgs[:n])
        speech_idx.append(utts[:n])
    return torch.cat(image_idx), torch.cat(speech_idx)


def held_out_images(speech_labels: torch.Tensor, *, seed: int = 0, data_dir=None):
    """MNIST *test* images paired by digit with held-out utterances (their ``speech_labels``):
    ``(images (N, 784), utterance indices (N,), labels (N,))``, as many images per digit as the
    utterances have, drawn by ``seed``. The benchmarks score trained graphs on these pairs."""
    from .mnist import load_mnist_subset

    per_digit = int(torch.bincount(speech_labels).max())
    x, y = load_mnist_subset(per_class=per_digit, seed=seed, split="test", data_dir=data_dir)
    images_idx, speech_idx = pair_by_digit(y, speech_labels, seed=seed)
    return x[images_idx], speech_idx, y[images_idx]


class PairedDataset:
    """Several observations of the same N items (e.g. an image and an utterance of one digit).

    Args:
        modalities: ``{name: tensor}``, each with the items along the first dimension.
        labels: int tensor (N,) of true classes, or None. Labels are kept for metrics only:
            graphs and modules must never be given them.
        metadata: optional ``{field: list of N values}`` (e.g. the speaker of each utterance).
        source: optional description of where each modality came from, e.g.
            ``{"images": "MNIST (real)", "speech": "synthetic (espeak-ng)"}``.

    Raises:
        DataError: no modality, no items, modalities of different N (naming the modality and
            its N), non-finite values in a float modality (naming it), labels or metadata of
            the wrong length.

    Example::

        pairs = PairedDataset({"images": x, "speech": s}, labels, source={"images": "MNIST (real)"})
        pairs.subset(torch.arange(100)).to("cuda")
    """

    def __init__(self, modalities: Mapping, labels=None, *, metadata: Mapping | None = None,
                 source: Mapping | None = None):
        if not isinstance(modalities, Mapping) or not modalities:
            raise DataError("a PairedDataset needs at least one modality ({name: tensor})")
        checked = {}
        n_items = None
        first = None
        for name, values in modalities.items():
            if not isinstance(name, str):
                raise DataError(f"modality names must be strings, got {name!r}")
            if isinstance(values, np.ndarray):
                values = torch.from_numpy(values)
            if not isinstance(values, torch.Tensor):
                raise DataError(f"modality {name!r} must be a tensor, got {type(values).__name__}")
            if values.ndim == 0:
                raise DataError(f"modality {name!r} is a scalar: items go along dimension 0")
            if n_items is None:
                n_items, first = values.shape[0], name
            elif values.shape[0] != n_items:
                raise DataError(
                    f"modality {name!r} has N={values.shape[0]} items but {first!r} has N={n_items}"
                )
            if values.is_floating_point() or values.is_complex():
                finite = torch.isfinite(values)
                if not bool(finite.all()):
                    position = tuple((~finite).nonzero()[0].tolist())
                    raise DataError(
                        f"modality {name!r} has a non-finite value (NaN or inf) at {position}"
                    )
            checked[name] = values
        if n_items == 0:
            raise DataError("a PairedDataset cannot be empty (N=0)")
        if labels is not None:
            if isinstance(labels, np.ndarray):
                labels = torch.from_numpy(labels)
            labels = torch.as_tensor(labels)
            integers = not (labels.is_floating_point() or labels.dtype == torch.bool)
            if labels.shape != (n_items,) or not integers:
                raise DataError(
                    f"labels must be integers of shape ({n_items},), "
                    f"got {labels.dtype} of shape {tuple(labels.shape)}"
                )
        fields = {}
        for field, values in (metadata or {}).items():
            values = list(values)
            if len(values) != n_items:
                raise DataError(
                    f"metadata {field!r} has {len(values)} entries, expected N={n_items}"
                )
            fields[field] = values
        self._modalities = checked
        self._labels = labels
        self._metadata = fields
        self._source = dict(source or {})
        self._n_items = n_items

    @property
    def modalities(self) -> dict[str, torch.Tensor]:
        """``{name: tensor}`` (a new dict each time; the tensors are shared)."""
        return dict(self._modalities)

    @property
    def labels(self) -> torch.Tensor | None:
        """True classes, for metrics only."""
        return self._labels

    @property
    def metadata(self) -> dict[str, list]:
        return {field: list(values) for field, values in self._metadata.items()}

    @property
    def source(self) -> dict:
        return dict(self._source)

    @property
    def names(self) -> list[str]:
        return list(self._modalities)

    def __len__(self) -> int:
        return self._n_items

    def __getitem__(self, name: str) -> torch.Tensor:
        try:
            return self._modalities[name]
        except KeyError:
            raise DataError(f"no modality {name!r}; this dataset has {self.names}") from None

    def subset(self, indices) -> PairedDataset:
        """The items at ``indices`` (ints or a boolean mask of length N), in that order."""
        if isinstance(indices, np.ndarray):
            indices = torch.from_numpy(indices)
        indices = torch.as_tensor(indices)
        if indices.dtype == torch.bool:
            if indices.shape != (self._n_items,):
                raise DataError(
                    f"a boolean mask must have shape ({self._n_items},), "
                    f"got {tuple(indices.shape)}"
                )
            indices = indices.nonzero().flatten()
        if indices.ndim != 1 or indices.is_floating_point():
            raise DataError(
                f"indices must be a 1-D integer sequence, "
                f"got {indices.dtype} of shape {tuple(indices.shape)}"
            )
        indices = indices.to(torch.int64).cpu()
        if len(indices) and (indices.min() < -self._n_items or indices.max() >= self._n_items):
            raise DataError(f"indices out of range for a dataset of N={self._n_items}")
        picked = indices.tolist()
        return PairedDataset(
            {name: values[indices.to(values.device)] for name, values in self._modalities.items()},
            None if self._labels is None else self._labels[indices.to(self._labels.device)],
            metadata={
                field: [values[i] for i in picked] for field, values in self._metadata.items()
            },
            source=self._source,
        )

    def to(self, device) -> PairedDataset:
        """The same data with every tensor (labels included) on ``device``."""
        return PairedDataset(
            {name: values.to(device) for name, values in self._modalities.items()},
            None if self._labels is None else self._labels.to(device),
            metadata=self._metadata,
            source=self._source,
        )

    def __repr__(self) -> str:
        parts = [f"N={self._n_items}"]
        for name, values in self._modalities.items():
            dtype = str(values.dtype).removeprefix("torch.")
            parts.append(f"{name}={tuple(values.shape)} {dtype}")
        if self._labels is not None:
            parts.append("labels")
        if self._source:
            parts.append(f"source={self._source}")
        return f"PairedDataset({', '.join(parts)})"
