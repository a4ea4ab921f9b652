"""Figures people would rather see than read, and the tables and files beside them."""

from __future__ import annotations

import json
import math
import os
import statistics
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["mean_sd", "format_mean_sd", "write_json", "write_text", "plot_rounds", "plot_confusion",
           "plot_latent", "plot_image_grid"]


def mean_sd(values) -> tuple[float, float]:
    values = [float(v) for v in values]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def format_mean_sd(values, scale: float = 100.0, digits: int = 1) -> str:
    m, s = mean_sd(values)
    if math.isnan(m):
        return "-"
    return f"{m * scale:.{digits}f} ± {s * scale:.{digits}f}"


def _atomic_write(path: Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)
    return path


def write_json(path, payload) -> Path:
    return _atomic_write(Path(path), json.dumps(payload, indent=2, default=float) + "\n")


def write_text(path, text: str) -> Path:
    return _atomic_write(Path(path), text)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_rounds(curves: dict[str, list[list[float]]], path, *, title: str = "", ylabel: str = "accuracy (%)",
                references: dict[str, float] | None = None) -> Path:
    """Mean ± sd across seeds per round, one line per curve (``{label: [per-seed lists]}``)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, runs in curves.items():
        arr = np.array([r for r in runs if r], dtype=float)
        if arr.size == 0:
            continue
        x = np.arange(1, arr.shape[1] + 1)
        m, s = arr.mean(0), arr.std(0)
        ax.plot(x, m, marker="o", ms=3, label=label)
        ax.fill_between(x, m - s, m + s, alpha=0.2)
    for label, value in (references or {}).items():
        ax.axhline(value, ls="--", lw=1, color="grey")
        ax.annotate(label, (1, value), fontsize=7, color="grey", va="bottom")
    ax.set_xlabel("round")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_confusion(matrix, path, *, title: str = "", xlabel: str = "cluster (matched)", ylabel: str = "true label") -> Path:
    plt = _pyplot()
    matrix = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    im = ax.imshow(matrix, cmap="Blues")
    for (i, j), v in np.ndenumerate(matrix):
        if v:
            ax.text(j, i, int(v), ha="center", va="center", fontsize=6,
                    color="white" if v > matrix.max() / 2 else "black")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_latent(points, clusters, path, *, title: str = "") -> Path:
    """A 2-D projection (first two principal components) of a latent space, coloured by cluster."""
    plt = _pyplot()
    pts = np.asarray(points, dtype=float)
    pts = pts - pts.mean(0)
    _, _, vt = np.linalg.svd(pts, full_matrices=False)
    proj = pts @ vt[:2].T
    fig, ax = plt.subplots(figsize=(5, 4.5))
    sc = ax.scatter(proj[:, 0], proj[:, 1], c=np.asarray(clusters), cmap="tab10", s=4)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    fig.colorbar(sc, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_image_grid(rows, path, *, row_labels=None, title: str = "") -> Path:
    """Rows of small grey images (each row a sequence of (H, W) arrays) in one figure."""
    plt = _pyplot()
    rows = [np.asarray(r, dtype=float) for r in rows]
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(n_cols * 0.9, n_rows * 0.9 + 0.4), squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j < len(row):
                ax.imshow(row[j], cmap="gray", vmin=0.0, vmax=1.0)
        if row_labels is not None:
            axes[i][0].set_ylabel(row_labels[i], rotation=0, labelpad=10, fontsize=9)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
