"""Where the datasets are looked for and where downloads are kept.

Every loader in :mod:`serket.datasets` looks first in the data folder (:func:`data_dir`), then
in the cache folder (:func:`cache_dir`), which holds what an earlier run downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["data_dir", "cache_dir"]


def _repository_root() -> Path:
    # serket/datasets/folders.py -> the folder holding serket/ (a checkout's root)
    return Path(__file__).resolve().parents[2]


def _is_source_checkout(root: Path) -> bool:
    # An installed package sits in site-packages, which has neither of these.
    return (root / ".git").exists() or (root / "pyproject.toml").is_file()


def data_dir() -> Path | None:
    """The folder of local data files, or None.

    ``$SERKET_DATA_DIR`` if set (and not empty); else ``../shared/data`` seen from the
    repository root, when running from a source checkout and that folder exists; else None.
    """
    configured = os.environ.get("SERKET_DATA_DIR")
    if configured:
        return Path(configured).expanduser()
    root = _repository_root()
    shared = root.parent / "shared" / "data"
    if _is_source_checkout(root) and shared.is_dir():
        return shared
    return None


def cache_dir() -> Path:
    """Where downloads are kept: ``$SERKET_CACHE_DIR`` or ``~/.cache/neuro-serket``."""
    configured = os.environ.get("SERKET_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "neuro-serket"
