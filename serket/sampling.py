"""Random draws shared by the samplers."""

from __future__ import annotations

import torch

__all__ = ["gumbel_noise"]


def gumbel_noise(shape, *, generator: torch.Generator, dtype=None, device=None, low: float | None = None,
                 high: float | None = None) -> torch.Tensor:
    """Standard Gumbel noise ``-log(-log(u))``, ``u ~ U(0, 1)`` from ``generator``: adding it to
    log probabilities and taking the argmax draws from their softmax (the Gumbel-max trick).

    ``low`` and ``high`` clamp ``u`` first (default: the smallest positive value of the dtype,
    and none), where ``log(-log(u))`` would be infinite."""
    noise = torch.rand(shape, generator=generator, dtype=dtype, device=device)
    if low is None:
        low = torch.finfo(noise.dtype).tiny
    return noise.clamp_(low, high).log_().neg_().log_().neg_()  # in place: one tensor of that shape
