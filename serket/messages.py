"""Typed, batched messages: what crosses a connection, one row per data item.

Every message checks itself when it is made (shape, finiteness, normalisation), knows its
device and its number of items, and prints briefly. Messages are immutable; ``to(device)``
returns a new one.

Shapes (``N`` items):

==================  ==========================================  =========================
kind                fields                                      meaning
==================  ==========================================  =========================
``categorical``     ``probs`` (N, K)                            a posterior or prior over K
``samples``         ``values`` (N, D)                           draws or observed vectors
``gaussian``        ``mean`` (N, D), ``var`` (N, D)             diagonal Gaussians
``counts``          ``counts`` (N, V)                           bags of words / histograms
``nbest``           ``hypotheses`` (N, B, L) int,               B hypotheses per item, each a
                    ``log_scores`` (N, B)                       word sequence padded with -1
``sequences``       ``values`` (N, T, D), ``lengths`` (N,) int  padded frame sequences
                                                                (speech features)
==================  ==========================================  =========================
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import ClassVar

import torch

from .errors import DataError, MessageError

__all__ = [
    "as_float_data",
    "Message",
    "Categorical",
    "Samples",
    "Gaussian",
    "Counts",
    "NBest",
    "Sequences",
    "MESSAGE_KINDS",
]

# Rows of a categorical message must sum to one within this tolerance (float32 sums of K terms).
_SUM_TOLERANCE = 1e-4


def _check_matrix(kind: str, name: str, tensor, ndim: int = 2) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor):
        raise MessageError(f"{kind} message: {name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.ndim != ndim:
        raise MessageError(
            f"{kind} message: {name} must have {ndim} dimensions, got shape {tuple(tensor.shape)}"
        )
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        bad = (~torch.isfinite(tensor)).nonzero()[0].tolist()
        raise MessageError(f"{kind} message: {name} has a non-finite value at index {bad}")
    return tensor


@dataclass(frozen=True, eq=False, repr=False)
class Message:
    """Base class: a batch of payloads, one per data item."""

    kind: ClassVar[str] = "message"

    def __post_init__(self):
        try:
            self._validate()
        except MessageError as error:
            error.kind = self.kind  # so that whoever sent it can tell which port it was for
            raise

    def _validate(self) -> None:  # overridden by each kind
        pass

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def n_items(self) -> int:
        return next(iter(self._tensors().values())).shape[0]

    @property
    def size(self) -> int:
        """The width of one item's payload (K, D or V)."""
        return next(iter(self._tensors().values())).shape[-1]

    @property
    def device(self) -> torch.device:
        return next(iter(self._tensors().values())).device

    def to(self, device) -> "Message":
        return replace(self, **{k: v.to(device) for k, v in self._tensors().items()})

    def astype(self, dtype: torch.dtype) -> "Message":
        """The message with its floating tensors in ``dtype`` (integer tensors, such as word ids
        or lengths, stay as they are)."""
        tensors = self._tensors()
        if all(v.dtype == dtype for v in tensors.values() if v.is_floating_point()):
            return self
        return replace(self, **{k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()})

    def detach(self) -> "Message":
        return replace(self, **{k: v.detach() for k, v in self._tensors().items()})

    def index(self, items) -> "Message":
        """The message restricted to some items (a minibatch)."""
        return replace(self, **{k: v[items] for k, v in self._tensors().items()})

    def state(self) -> dict:
        """A plain dictionary for checkpoints."""
        return {"kind": self.kind, **{k: v.detach().cpu() for k, v in self._tensors().items()}}

    @staticmethod
    def from_state(state: dict) -> "Message":
        state = dict(state)
        kind = state.pop("kind")
        if kind not in MESSAGE_KINDS:
            raise MessageError(f"unknown message kind {kind!r} in saved state")
        return MESSAGE_KINDS[kind](**state)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}={tuple(v.shape)}" for k, v in self._tensors().items())
        return f"{type(self).__name__}({shapes}, device={self.device})"


@dataclass(frozen=True, eq=False, repr=False)
class Categorical(Message):
    """Per-item distributions over K categories; each row sums to one."""

    kind: ClassVar[str] = "categorical"
    probs: torch.Tensor

    def _validate(self):
        p = _check_matrix(self.kind, "probs", self.probs)
        if p.shape[1] == 0:
            raise MessageError("categorical message: probs has zero categories")
        if bool((p < 0).any()):
            raise MessageError("categorical message: probs has negative entries")
        sums = p.sum(dim=1)
        bad = (sums - 1).abs() > _SUM_TOLERANCE
        if bool(bad.any()):
            i = int(bad.nonzero()[0])
            raise MessageError(f"categorical message: row {i} sums to {float(sums[i]):.6f}, not 1")

    @classmethod
    def from_logits(cls, logits: torch.Tensor) -> "Categorical":
        return cls(torch.softmax(logits, dim=-1))

    def argmax(self) -> torch.Tensor:
        return self.probs.argmax(dim=1)


@dataclass(frozen=True, eq=False, repr=False)
class Samples(Message):
    """Per-item vectors: draws of a latent variable, or observed data."""

    kind: ClassVar[str] = "samples"
    values: torch.Tensor

    def _validate(self):
        _check_matrix(self.kind, "values", self.values)


@dataclass(frozen=True, eq=False, repr=False)
class Gaussian(Message):
    """Per-item diagonal Gaussians, e.g. the prior a cluster gives the item it owns."""

    kind: ClassVar[str] = "gaussian"
    mean: torch.Tensor
    var: torch.Tensor

    def _validate(self):
        _check_matrix(self.kind, "mean", self.mean)
        _check_matrix(self.kind, "var", self.var)
        if self.mean.shape != self.var.shape:
            raise MessageError(
                f"gaussian message: mean {tuple(self.mean.shape)} and var {tuple(self.var.shape)} differ"
            )
        if bool((self.var <= 0).any()):
            raise MessageError("gaussian message: var must be positive")


@dataclass(frozen=True, eq=False, repr=False)
class Counts(Message):
    """Per-item non-negative counts over a vocabulary (bags of words, histograms)."""

    kind: ClassVar[str] = "counts"
    counts: torch.Tensor

    def _validate(self):
        _check_matrix(self.kind, "counts", self.counts)
        if bool((self.counts < 0).any()):
            raise MessageError("counts message: counts has negative entries")


@dataclass(frozen=True, eq=False, repr=False)
class NBest(Message):
    """Per-item lists of B hypotheses (word-id sequences padded with -1) and their log scores."""

    kind: ClassVar[str] = "nbest"
    hypotheses: torch.Tensor
    log_scores: torch.Tensor

    def _validate(self):
        _check_matrix(self.kind, "hypotheses", self.hypotheses, ndim=3)
        if self.hypotheses.is_floating_point():
            raise MessageError("nbest message: hypotheses must be integer word ids")
        scores = self.log_scores
        if not isinstance(scores, torch.Tensor) or scores.ndim != 2:
            raise MessageError("nbest message: log_scores must be a (N, B) tensor")
        if scores.shape != self.hypotheses.shape[:2]:
            raise MessageError(
                f"nbest message: log_scores {tuple(scores.shape)} does not match "
                f"hypotheses {tuple(self.hypotheses.shape)}"
            )
        if bool(torch.isnan(scores).any()) or bool(torch.isposinf(scores).any()):
            raise MessageError("nbest message: log_scores has NaN or +inf")

    @property
    def size(self) -> None:
        # the vocabulary is not visible in the hypotheses; ports check word ids themselves
        return None


@dataclass(frozen=True, eq=False, repr=False)
class Sequences(Message):
    """Per-item sequences of D-dim frames, padded to T, with each item's number of valid frames."""

    kind: ClassVar[str] = "sequences"
    values: torch.Tensor
    lengths: torch.Tensor

    def _validate(self):
        _check_matrix(self.kind, "values", self.values, ndim=3)
        lengths = self.lengths
        if not isinstance(lengths, torch.Tensor) or lengths.ndim != 1 or lengths.is_floating_point():
            raise MessageError("sequences message: lengths must be a 1-D integer tensor")
        if lengths.shape[0] != self.values.shape[0]:
            raise MessageError(f"sequences message: {lengths.shape[0]} lengths for {self.values.shape[0]} items")
        if lengths.numel() and (int(lengths.min()) < 1 or int(lengths.max()) > self.values.shape[1]):
            raise MessageError(f"sequences message: lengths must lie in [1, {self.values.shape[1]}], "
                               f"got [{int(lengths.min())}, {int(lengths.max())}]")

    def mask(self) -> torch.Tensor:
        """Bool (N, T): which frames are real."""
        return torch.arange(self.values.shape[1], device=self.values.device)[None, :] < self.lengths[:, None]


MESSAGE_KINDS: dict[str, type[Message]] = {
    cls.kind: cls for cls in (Categorical, Samples, Gaussian, Counts, NBest, Sequences)
}


def as_float_data(data: torch.Tensor, owner: str) -> torch.Tensor:
    """Data at the door: float32 and float64 pass as they are, half precision (float16,
    bfloat16) becomes float32, booleans become 0/1; integers are refused, since a module that
    models real values would read 0-255 pixels or category codes as if they were measurements.
    (A module with parameters then takes its inputs in its parameters' dtype: see
    :meth:`serket.module.Module.receive`.)"""
    if data.dtype == torch.bool:
        return data.to(torch.get_default_dtype())
    if data.is_complex():
        raise DataError(f"{owner}: complex data ({data.dtype}) where real values are meant")
    if not data.is_floating_point():
        raise DataError(f"{owner}: integer data ({data.dtype}) where real values are meant; convert "
                        f"it to floats first (images: x.float() / 255; bags of words: pass Counts(x))")
    if data.dtype in (torch.float16, torch.bfloat16):
        return data.to(torch.float32)
    return data
