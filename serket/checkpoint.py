"""Checkpoints written atomically, checksummed, and read back with errors that say what is wrong.

A checkpoint file is one header line, ``neuro-serket-checkpoint/3 sha256=<hex>``, followed by the
bytes of ``torch.save(payload)``; the digest covers those bytes, so a flipped bit anywhere is
found before anything is loaded. The payload is read with ``weights_only=True``: it holds
tensors, numbers, strings and containers, never code.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import tempfile
import zipfile
from pathlib import Path

import torch

from .errors import CheckpointError
from .files import atomic_write, temporary_files

__all__ = ["save_checkpoint", "load_checkpoint", "folder_problem"]

FORMAT = "neuro-serket-checkpoint/3"
_START_FRESH = "delete it, or pass another checkpoint_dir (resume=False) to start fresh"


def folder_problem(folder) -> str | None:
    """Why ``folder`` cannot hold files written there (it is a file, cannot be created or is not
    writable), or None when it can; the folder is created."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        return f"{str(folder)!r} exists and is not a folder"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as error:
        return f"cannot write to {str(folder)!r} ({error.strerror or error})"
    return None


def save_checkpoint(path, payload: dict, *, file_format: str = FORMAT) -> Path:
    """Write ``payload`` to ``path`` so that a crash never leaves a half-written file there.

    The data go to a temporary file in the same folder, are flushed to disk, and replace the
    old file in one ``os.replace``. Temporary files left by a writer that was killed earlier
    are removed first. ``file_format`` names what the file is (a trained model is written the
    same way under its own format, :mod:`serket.model`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in temporary_files(path):
        stale.unlink(missing_ok=True)

    def write(file):
        # the body streams to the file through a hash, never held in memory whole: a header of
        # the same length goes first and is overwritten once the digest is known
        start = file.tell()
        file.write(_header(file_format, "0" * 64))
        hashed = _HashingWriter(file)
        torch.save({"format": file_format, **payload}, hashed)
        file.seek(start)
        file.write(_header(file_format, hashed.digest.hexdigest()))
        file.seek(0, io.SEEK_END)

    # private to its owner, as checkpoints have always been
    return atomic_write(path, write, mode=0o600)


def _header(file_format: str, hexdigest: str) -> bytes:
    return f"{file_format} sha256={hexdigest}\n".encode()


class _HashingWriter:
    """A write-only file that passes what it is given on to ``file`` and hashes it (sha256)."""

    def __init__(self, file):
        self.file = file
        self.digest = hashlib.sha256()

    def write(self, data) -> int:
        self.digest.update(data)
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()


def load_checkpoint(path, *, file_format: str = FORMAT, what: str = "checkpoint",
                    advice: str = _START_FRESH) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (or, with ``file_format``, another
    file written by it; ``what`` and ``advice`` word its errors).

    Raises:
        CheckpointError: naming the file: missing, a folder, empty, not a neuro-serket
            checkpoint (or one of an older format), damaged (its checksum does not match), or
            unreadable.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{what} {path} is a folder, not a {what} file")
    if not path.is_file():
        raise CheckpointError(f"{what} {path} does not exist")
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"{what} {path} cannot be read ({error.strerror or error})") from None
    if not raw:
        raise CheckpointError(f"{what} {path} is empty (0 bytes): {advice}")
    magic = file_format.rsplit("/", 1)[0].encode() + b"/"
    newline = raw.find(b"\n", 0, 200)
    header = raw[:newline] if newline > 0 else b""
    if not raw.startswith(magic) or newline < 0:
        raise CheckpointError(f"{what} {path} is not a neuro-serket {what} "
                              f"(it starts with {raw[:16]!r}): {advice}")
    fields = header.decode("ascii", "replace").split()
    if fields[0] != file_format or len(fields) != 2 or not fields[1].startswith("sha256="):
        raise CheckpointError(f"{what} {path} has format {fields[0]!r}, this version reads "
                              f"{file_format!r}: {advice}")
    body = raw[newline + 1:]
    if hashlib.sha256(body).hexdigest() != fields[1][len("sha256="):]:
        raise CheckpointError(f"{what} {path} is damaged (its sha256 does not match its "
                              f"contents: truncated or altered): {advice}")
    try:
        payload = torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as err:
        raise CheckpointError(f"{what} {path} is corrupt ({type(err).__name__}: "
                              f"{str(err).splitlines()[0][:200] if str(err) else 'no detail'})") from None
    if not isinstance(payload, dict) or payload.get("format") != file_format:
        raise CheckpointError(f"{what} {path} is not a neuro-serket {what}")
    return payload
