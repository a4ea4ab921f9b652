"""Checkpoints written atomically, and read back with errors that say what is wrong."""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import torch

from .errors import CheckpointError

__all__ = ["save_checkpoint", "load_checkpoint"]

FORMAT = "neuro-serket-checkpoint/1"


def save_checkpoint(path, payload: dict) -> Path:
    """Write ``payload`` to ``path`` so that a crash never leaves a half-written file there.

    The data go to a temporary file in the same folder, are flushed to disk, and replace the
    old file in one ``os.replace``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save({"format": FORMAT, **payload}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path) -> dict:
    """Read a checkpoint; a missing, truncated or foreign file raises :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        # weights_only: a checkpoint holds tensors, numbers, strings and containers, never code
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as err:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({type(err).__name__}: "
                              f"{str(err).splitlines()[0][:200]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a neuro-serket checkpoint")
    return payload
