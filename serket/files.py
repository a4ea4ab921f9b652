"""Files written whole or not at all, and their checksums.

Every file neuro-serket writes for keeps (checkpoints, downloaded data, bundled archives,
manifests, result tables) goes through :func:`atomic_write`: the bytes go to a temporary file in
the same folder, are flushed to disk, and replace the old file in one ``os.replace``, so a crash
or a full disk never leaves a half-written file under the real name.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Union

__all__ = ["atomic_write", "file_sha256", "temporary_files"]

Contents = Union[bytes, str, Callable[[BinaryIO], object]]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path, contents: Contents, *, mode: int = 0o666) -> Path:
    """Write ``contents`` to ``path`` so that ``path`` holds either the old file or all of the new.

    Args:
        path: the file to write; its folder is created if needed.
        contents: ``bytes``; a ``str`` (written as UTF-8); or a function that writes to the
            binary file object it is given (``lambda file: np.savez_compressed(file, **arrays)``).
        mode: permissions of the written file before the umask applies (default ``0o666``:
            ``0o644`` under the usual umask 022, as readable as any file the user makes).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    The temporary file is ``.{name}.<random>.tmp`` beside ``path`` and is removed if anything
    fails (the exception is raised again); see :func:`temporary_files`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            if isinstance(contents, str):
                file.write(contents.encode("utf-8"))
            elif isinstance(contents, (bytes, bytearray, memoryview)):
                file.write(contents)
            else:
                contents(file)
            file.flush()
            os.fsync(file.fileno())
        # mkstemp makes the file private (0600); a written file is as readable as any other
        os.chmod(temporary, mode & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def temporary_files(path) -> list[Path]:
    """The temporary files that :func:`atomic_write` of ``path`` leaves if its process is killed."""
    path = Path(path)
    return list(path.parent.glob(f".{path.name}.*.tmp"))


def file_sha256(path) -> str:
    """The sha256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
