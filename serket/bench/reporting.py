"""Figures people would rather see than read, and the tables and files beside them.

Graph drawings live in :mod:`serket.bench.drawing`.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import numpy as np

from serket.files import atomic_write

__all__ = ["mean_sd", "format_mean_sd", "write_json", "write_text", "plot_rounds", "rounds_figure",
           "plot_confusion", "plot_latent", "plot_image_grid"]


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


def write_json(path, payload) -> Path:
    """``payload`` as indented JSON, written atomically (:func:`serket.files.atomic_write`)."""
    return atomic_write(path, json.dumps(payload, indent=2, default=float) + "\n")


def write_text(path, text: str) -> Path:
    """``text`` written atomically (:func:`serket.files.atomic_write`), as readable as any file."""
    return atomic_write(path, text)


def wrap_text(text: str, width_in: float, fontsize: float) -> str:
    """``text`` broken into lines that fit ``width_in`` inches at ``fontsize`` points."""
    import textwrap

    chars = max(20, int(width_in * 72 / (0.56 * fontsize)))
    return "\n".join(textwrap.fill(part, chars) for part in text.split("\n"))


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only, no window), imported when first needed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _is_nested(curves) -> bool:
    return bool(curves) and all(isinstance(v, dict) for v in curves.values())


def _round_ticks(n_rounds: int) -> list[int]:
    """Whole rounds only: every round up to 15, else 1 and multiples of a round step."""
    if n_rounds <= 15:
        return list(range(1, n_rounds + 1))
    step = next(s for s in (2, 5, 10, 20, 25, 50, 100, 200, 500, 1000) if n_rounds / s <= 10)
    return [1] + list(range(step, n_rounds + 1, step))


def rounds_figure(curves: dict, *, title: str = "", ylabel: str = "accuracy (%)", references: dict | None = None,
                  ylim: tuple[float, float] | None = None, panel_titles: dict[str, str] | None = None,
                  reference_label: str = "published"):
    """The figure of :func:`plot_rounds`, not yet saved (the caller closes it).

    ``curves``: ``{panel: {line: [per-seed lists of values per round]}}`` — one panel per scored
    node, one line per configuration — or ``{line: [per-seed lists]}`` for a single panel.
    ``references``: ``{panel: {line: value}}`` (or ``{line: value}`` for a single panel): the
    published figure of a line, drawn as a star in the line's colour beside its last round and
    labelled with its value. A reference whose name is no line's is drawn as a grey dashed level.
    """
    plt = pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    nested = _is_nested(curves)
    panels = dict(curves) if nested else {"": dict(curves)}
    refs = dict(references or {})
    refs = {k: dict(refs.get(k) or {}) for k in panels} if nested else {"": refs}
    lines = list(dict.fromkeys(line for by_line in panels.values() for line in by_line))
    palette = plt.get_cmap("tab10").colors
    colour = {line: palette[i % len(palette)] for i, line in enumerate(lines)}
    # configurations that share a half give identical curves: each its own marker, the earlier ones
    # larger and wider, so that a curve under another still shows
    n_max = max((len(r) for by_line in panels.values() for runs in by_line.values() for r in runs if r is not None),
                default=1)
    shrink = 1.0 if n_max <= 15 else 0.75
    ticks = _round_ticks(n_max)
    marker = {line: "osDpPX^v"[i % 8] for i, line in enumerate(lines)}
    size = {line: shrink * max(7.0, 9.0 - 1.0 * i) for i, line in enumerate(lines)}
    line_width = {line: max(1.6, 2.9 - 0.45 * i) for i, line in enumerate(lines)}
    # and, over a few rounds, each nudged sideways a little (position dodge) so none hides another
    dodge = {line: (0.05 * (i - (len(lines) - 1) / 2) if n_max <= 15 else 0.0) for i, line in enumerate(lines)}

    n_panels = max(1, len(panels))
    fig, axes = plt.subplots(1, n_panels, figsize=(1.2 + 4.6 * n_panels, 4.6), sharey=True, squeeze=False,
                             layout="constrained")
    axes = axes[0]
    n_seeds, n_rounds_all = 0, 1
    for ax, (panel, by_line) in zip(axes, panels.items()):
        n_rounds = 1
        for line, runs in by_line.items():
            runs = [list(r) for r in runs if r is not None and len(r)]
            if not runs:
                continue
            width = max(len(r) for r in runs)
            arr = np.full((len(runs), width), np.nan)
            for k, r in enumerate(runs):
                arr[k, :len(r)] = r
            n_seeds, n_rounds = max(n_seeds, len(runs)), max(n_rounds, width)
            x = np.arange(1, width + 1) + dodge[line]
            m = np.nanmean(arr, 0)
            counts = np.sum(~np.isnan(arr), 0)  # every round has at least one run
            s = np.sqrt(np.nansum((arr - m) ** 2, 0) / np.maximum(counts - 1, 1))  # sd across seeds
            ax.plot(x, m, marker=marker[line], ms=size[line], lw=line_width[line], color=colour[line], label=line,
                    zorder=3, mec="white", mew=0.6,
                    markevery=None if width <= 15 else [t - 1 for t in ticks if t <= width])
            if len(runs) > 1:
                ax.fill_between(x, m - s, m + s, color=colour[line], alpha=0.18, lw=0, zorder=2)
        n_rounds_all = max(n_rounds_all, n_rounds)
        ax.set_title(panel_titles.get(panel, panel) if panel_titles else panel, fontsize=10)
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
    # the published figures: a column of stars beside the last round, their values de-overlapped
    pad = max(0.5, 0.04 * n_rounds_all)
    any_marker = False
    for ax, panel in zip(axes, panels):
        matched = sorted(((line, float(v)) for line, v in refs[panel].items() if line in colour and v is not None),
                         key=lambda lv: lv[1])
        for label, value in refs[panel].items():
            if label not in colour and value is not None:  # a level with no line of its own
                ax.axhline(float(value), ls="--", lw=1, color="grey", zorder=1)
                ax.annotate(label, (1, float(value)), fontsize=7, color="grey", va="bottom")
        if not matched:
            continue
        any_marker = True
        if ylim is None:
            ax.autoscale_view()
            lo, hi = ax.get_ylim()
            lo, hi = min(lo, matched[0][1]), max(hi, matched[-1][1])
        else:
            lo, hi = ylim
        close = 0.05 * (hi - lo)  # about a star's and a label's height
        groups: list[list[tuple[str, float]]] = []
        for lv in matched:  # stars closer than their height stand side by side
            if groups and lv[1] - groups[-1][-1][1] < close:
                groups[-1].append(lv)
            else:
                groups.append([lv])
        widest = max(len(g) for g in groups)
        # the column's width in points (stars side by side, then a label), in rounds at this panel's scale
        fig.get_layout_engine().execute(fig)
        axes_pt = ax.get_window_extent().width * 72 / fig.dpi
        column_pt = 8 + 15 * (widest - 1) + 9 + 26 + 6  # gap, stars, gap, a label, margin
        span = (n_rounds_all - 1 + 1.5 * pad) / (1 - column_pt / axes_pt)
        per_pt = span / axes_pt
        x0, step = n_rounds_all + pad + 8 * per_pt, 15 * per_pt
        texts = []  # one label per distinct value, in its configuration's colour (grey when shared)
        for g in groups:
            for k, (line, value) in enumerate(g):
                ax.plot([x0 + k * step], [value], marker="*", ms=13, color=colour[line], mec="black", mew=0.6,
                        ls="none", zorder=4, clip_on=False)
            for value in dict.fromkeys(v for _, v in g):
                owners = [line for line, v in g if v == value]
                texts.append([value, value, colour[owners[0]] if len(owners) == 1 else "0.25",
                              x0 + (len(g) - 1) * step + 10 * per_pt])
        for k in range(1, len(texts)):  # push labels apart, upward
            texts[k][1] = max(texts[k][1], texts[k - 1][1] + close * 0.8)
        for value, y, c, text_x in texts:
            ax.annotate(f"{value:.1f}", (text_x, y), fontsize=8, va="center", color=c, annotation_clip=False)
        right = 1 - 0.5 * pad + span
        ax.set_xlim(1 - 0.5 * pad, right)
        # the column is not a round: a pale band of its own, named at its foot
        ax.axvspan(n_rounds_all + 0.5 * pad, right, color="0.94", lw=0, zorder=0)
        ax.text((n_rounds_all + 0.5 * pad + right) / 2, 0.015, reference_label, transform=ax.get_xaxis_transform(),
                ha="center", va="bottom", fontsize=7.5, color="0.35", style="italic")
    for ax in axes:
        ax.set_xticks(_round_ticks(n_rounds_all))
        if not any_marker or ax.get_xlim()[1] <= n_rounds_all:
            ax.set_xlim(1 - 0.5 * pad, n_rounds_all + 0.5 * pad)
    if ylim is not None:
        axes[0].set_ylim(*ylim)
    axes[0].set_ylabel(ylabel)

    handles = [Line2D([], [], color=colour[line], marker=marker[line], ms=min(size[line], 6), lw=line_width[line],
                      mec="white", mew=0.6, label=line) for line in lines]
    if n_seeds > 1:
        handles.append(Patch(color="0.5", alpha=0.3, label=f"± 1 sd across {n_seeds} seeds"))
    if any_marker:
        handles.append(Line2D([], [], ls="none", marker="*", ms=11, color="0.6", mec="black", mew=0.6,
                              label=f"{reference_label} figure, in its configuration's colour"))
    seeds_text = f"mean of {n_seeds} seeds" if n_seeds > 1 else "one seed"
    heading = f"{title} ({seeds_text})" if title else seeds_text
    fig.suptitle(wrap_text(heading, fig.get_figwidth() - 0.3, 11), fontsize=11)
    ncol = min(len(handles), 6) if n_panels > 1 else (2 if len(handles) == 4 else min(len(handles), 3))
    fig.legend(handles=handles, loc="outside lower center", ncol=ncol, fontsize=8, frameon=False)
    return fig


def plot_rounds(curves: dict, path, *, title: str = "", ylabel: str = "accuracy (%)",
                references: dict | None = None, ylim: tuple[float, float] | None = None,
                panel_titles: dict[str, str] | None = None) -> Path:
    """Mean ± sd across seeds per round: one panel per scored node, one line per configuration,
    each configuration's published figure a labelled star in its colour beside the last round.

    ``curves``: ``{panel: {line: [per-seed lists]}}``, or ``{line: [per-seed lists]}`` for one
    panel; ``references`` likewise (see :func:`rounds_figure`). Rounds are whole numbers on the
    axis; the legend sits below the panels, clear of the data.
    """
    plt = pyplot()
    fig = rounds_figure(curves, title=title, ylabel=ylabel, references=references, ylim=ylim,
                        panel_titles=panel_titles)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)

def plot_confusion(matrix, path, *, title: str = "", xlabel: str = "cluster, named by its matched class",
                   ylabel: str = "true class", classes=None) -> Path:
    """A confusion matrix (rows: true classes; columns: clusters renamed to their matched class, as
    :func:`serket.metrics.confusion_matrix` returns it, with its extra column of unmatched
    clusters if any). Every class is ticked; the share of items on the diagonal is printed."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    matrix = np.asarray(matrix)
    n_rows, n_cols = matrix.shape
    classes = [str(c) for c in (classes if classes is not None else range(n_rows))]
    columns = classes[:n_cols] + ["none"] * max(0, n_cols - len(classes))
    fig, ax = plt.subplots(figsize=(5.0, 4.4))
    im = ax.imshow(matrix, cmap="Blues", vmin=0)
    for (i, j), v in np.ndenumerate(matrix):
        if v:
            ax.text(j, i, int(v), ha="center", va="center", fontsize=7,
                    color="white" if v > matrix.max() / 2 else "black")
    ax.set_xticks(range(n_cols), columns)
    ax.set_yticks(range(n_rows), classes)
    ax.tick_params(labelsize=8)
    ax.set_xlabel(xlabel + (" ('none': no class left)" if n_cols > n_rows else ""))
    ax.set_ylabel(ylabel)
    total = matrix.sum()
    on_diagonal = np.trace(matrix[:, :n_rows]) / total if total else float("nan")
    summary = f"accuracy {100 * on_diagonal:.1f}%: the diagonal's share of {int(total)} items"
    ax.set_title(f"{title}\n{summary}" if title else summary, fontsize=9)
    bar = fig.colorbar(im, ax=ax, fraction=0.046)
    bar.set_label("items", fontsize=8)
    bar.locator = MaxNLocator(integer=True)
    bar.update_ticks()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_latent(points, clusters, path, *, title: str = "", colour_label: str = "cluster") -> Path:
    """A 2-D projection (first two principal components) of a latent space, coloured by cluster
    (one colour per cluster index, each ticked on the colour bar)."""
    plt = pyplot()
    from matplotlib.colors import BoundaryNorm, ListedColormap

    pts = np.asarray(points, dtype=float)
    pts = pts - pts.mean(0)
    _, sv, vt = np.linalg.svd(pts, full_matrices=False)
    share = sv ** 2 / max(float((sv ** 2).sum()), 1e-12)
    proj = pts @ vt[:2].T
    if proj.shape[1] < 2:
        proj = np.hstack([proj, np.zeros((proj.shape[0], 2 - proj.shape[1]))])
        share = np.concatenate([share, np.zeros(2)])
    clusters = np.asarray(clusters).astype(int)
    k = int(clusters.max()) + 1 if clusters.size else 1
    base = plt.get_cmap("tab10" if k <= 10 else "tab20").colors
    cmap = ListedColormap([base[i % len(base)] for i in range(k)])
    norm = BoundaryNorm(np.arange(-0.5, k + 0.5), k)
    fig, ax = plt.subplots(figsize=(5.4, 4.6))
    sc = ax.scatter(proj[:, 0], proj[:, 1], c=clusters, cmap=cmap, norm=norm, s=10, alpha=0.85, linewidths=0)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(f"PC 1 ({100 * share[0]:.0f}% of variance)")
    ax.set_ylabel(f"PC 2 ({100 * share[1]:.0f}% of variance)")
    bar = fig.colorbar(sc, ax=ax, fraction=0.046, ticks=range(k))
    bar.set_label(colour_label, fontsize=8)
    bar.ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_image_grid(rows, path, *, row_labels=None, title: str = "") -> Path:
    """Rows of small grey images (each row a sequence of (H, W) arrays) in one figure."""
    plt = pyplot()
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
    fig.suptitle(wrap_text(title, fig.get_figwidth() - 0.3, 9), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
