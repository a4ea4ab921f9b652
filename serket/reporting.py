"""Figures people would rather see than read, and the tables and files beside them."""

from __future__ import annotations

import json
import math
import os
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["mean_sd", "format_mean_sd", "write_json", "write_text", "plot_rounds", "rounds_figure",
           "plot_confusion", "plot_latent", "plot_image_grid", "draw_graph", "graph_layout", "graph_to_dot",
           "layout_problems", "GraphLayout", "DrawnNode", "DrawnEdge"]


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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_write(path: Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        # mkstemp makes the file 0600; a result file is as readable as the PNGs beside it
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path, payload) -> Path:
    return _atomic_write(Path(path), json.dumps(payload, indent=2, default=float) + "\n")


def write_text(path, text: str) -> Path:
    return _atomic_write(Path(path), text)


def _wrap(text: str, width_in: float, fontsize: float) -> str:
    """``text`` broken into lines that fit ``width_in`` inches at ``fontsize`` points."""
    import textwrap

    chars = max(20, int(width_in * 72 / (0.56 * fontsize)))
    return "\n".join(textwrap.fill(part, chars) for part in text.split("\n"))


def _pyplot():
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
    plt = _pyplot()
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
    fig.suptitle(_wrap(f"{title} ({seeds_text})" if title else seeds_text, fig.get_figwidth() - 0.3, 11), fontsize=11)
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
    plt = _pyplot()
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
    plt = _pyplot()
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
    plt = _pyplot()
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
    fig.suptitle(_wrap(title, fig.get_figwidth() - 0.3, 9), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


# --- drawing a graph ---------------------------------------------------------------------------
# what a reader sees of each connection kind and node role; the PNG and the DOT text share them
_KIND_TEXT = {"head_to_tail": "head-to-tail", "tail_to_tail": "tail-to-tail", "head_to_head": "head-to-head",
              "data": "data"}
_KIND_COLOUR = {"head_to_tail": "#1d5f8a", "tail_to_tail": "#c8570a", "head_to_head": "#6a3d9a",
                "data": "#707070"}
_ROLE_STYLE = {  # role: (shape, fill, outline, legend text)
    "observation": ("ellipse", "#fff3c4", "#9c7a00", "observation (data)"),
    "module": ("box", "#d6eaf8", "#1d5f8a", "module"),
    "tailtotail": ("diamond", "#fde0c5", "#c8570a", "tail-to-tail combiner (shared category)"),
    "headtohead": ("hexagon", "#e8dcf3", "#6a3d9a", "head-to-head node (common child)"),
}
_OTHER_ROLE = ("box", "#eeeeee", "#555555", "other node")
_ROLE_TEXT = {"observation": "observation", "tailtotail": "tail-to-tail", "headtohead": "head-to-head"}
_X_GAP, _ROW_HEIGHT = 2.2, 2.2  # data units between node centres in a row, and per row
_NODE_H = 0.62


@dataclass(frozen=True)
class DrawnNode:
    """A node as :func:`draw_graph` draws it: where (``x``, ``y``; ``row`` 0 is the observations'),
    in which shape and colours, with which label."""

    name: str
    role: str
    row: float
    x: float
    y: float
    width: float
    shape: str
    fill: str
    outline: str
    label: str


@dataclass(frozen=True)
class DrawnEdge:
    """A connection as :func:`draw_graph` draws it, from ``start`` (its lower end) to ``end``.

    ``arrows``: ``"both"`` (a two-way link), ``"end"`` or ``"start"`` (the one end that messages
    reach on a one-way link); ``linestyle`` ``"dashed"`` for a link whose feedback is switched off.
    """

    parent: str
    child: str
    kind: str
    start: str
    end: str
    arrows: str
    linestyle: str
    colour: str
    label: str

    @property
    def one_way(self) -> bool:
        return self.arrows != "both"

    @property
    def arrowstyle(self) -> str:
        return {"both": "<|-|>", "end": "-|>", "start": "<|-"}[self.arrows]


@dataclass(frozen=True)
class GraphLayout:
    """What :func:`draw_graph` draws: nodes by name and edges, in the graph's order."""

    nodes: dict
    edges: list

    def style(self) -> tuple:
        """A comparable summary: each node's place and each edge's kind, arrows and line style."""
        return (tuple((n.name, n.role, n.row) for n in self.nodes.values()),
                tuple((e.parent, e.child, e.kind, e.arrows, e.linestyle) for e in self.edges))


def _rows(graph) -> dict[str, float]:
    """Observations on row 0, each module a row above what it explains, combiners on top: a
    tail-to-tail combiner a row above its members, a head-to-head node half a row above its
    proposer (the module that explains the data) and half a row below its other parent."""
    import networkx as nx

    roles = graph.roles()
    conns = graph.connections()

    def upward(lower_is_parent):
        up = nx.DiGraph()
        up.add_nodes_from(roles)
        for c in conns:
            lower, upper = (c.parent, c.child) if lower_is_parent(c) else (c.child, c.parent)
            half = "headtohead" in (roles.get(c.parent), roles.get(c.child))
            up.add_edge(lower, upper, weight=0.5 if half else 1.0)
        return up

    up = upward(lambda c: c.kind == "head_to_head" and c.child_port == "proposer")
    if not nx.is_directed_acyclic_graph(up):  # a proposer above its common child: both parents on top
        up = upward(lambda c: False)
    rows: dict[str, float] = {}
    order = {n: i for i, n in enumerate(roles)}
    for n in nx.lexicographical_topological_sort(up, key=lambda n: order[n]):
        below = [rows[p] + up.edges[p, n]["weight"] for p in up.predecessors(n)]
        rows[n] = max(below, default=0.0)
        if roles[n] == "module":
            rows[n] = max(rows[n], 1.0)
    return rows


def _isotonic_gap(desired: list[float], gap: float) -> list[float]:
    """The positions nearest ``desired`` (least squares) that keep their order ``gap`` apart."""
    shifted = [d - i * gap for i, d in enumerate(desired)]
    blocks: list[list[float]] = []  # [mean, count]
    for v in shifted:  # pool adjacent violators
        blocks.append([v, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, c2 = blocks.pop()
            m1, c1 = blocks.pop()
            blocks.append([(m1 * c1 + m2 * c2) / (c1 + c2), c1 + c2])
    out = []
    for m, c in blocks:
        out += [m] * c
    return [v + i * gap for i, v in enumerate(out)]


def _positions(levels, order, neighbours, widths) -> dict[str, float]:
    """x of each node given the order within each row: near the mean of its neighbours, rows kept apart."""
    # one gap for every row (the widest node sets it), so that columns stay straight
    gap = max([_X_GAP] + [w + 0.6 for w in widths.values()])
    x = {}
    for level in levels:
        names = order[level]
        for i, n in enumerate(names):
            x[n] = (i - (len(names) - 1) / 2) * gap
    for _ in range(3000):  # sweeps up and down until nothing moves
        moved = 0.0
        for level in list(levels) + list(reversed(levels)):
            names = order[level]
            desired = [float(np.mean([x[m] for m in neighbours[n]])) if neighbours[n] else x[n] for n in names]
            placed = _isotonic_gap(desired, gap)
            for n, v in zip(names, placed):
                moved = max(moved, abs(x[n] - v))
                x[n] = v
        if moved < 1e-7:
            break
    shift = float(np.mean(list(x.values()))) if x else 0.0
    return {n: round(v - shift, 6) for n, v in x.items()}


def _segments_cross(p1, p2, q1, q2) -> bool:
    def orient(a, b, c):
        v = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
        return 0 if abs(v) < 1e-9 else (1 if v > 0 else -1)

    o1, o2, o3, o4 = orient(p1, p2, q1), orient(p1, p2, q2), orient(q1, q2, p1), orient(q1, q2, p2)
    return o1 * o2 < 0 and o3 * o4 < 0


def _passes_through(p1, p2, centre, half_w, half_h) -> bool:
    """Whether the segment p1-p2 comes within a node's box around ``centre``."""
    ts = np.linspace(0.0, 1.0, 41)[1:-1]
    xs = p1[0] + ts * (p2[0] - p1[0])
    ys = p1[1] + ts * (p2[1] - p1[1])
    return bool(np.any((np.abs(xs - centre[0]) < half_w) & (np.abs(ys - centre[1]) < half_h)))


def layout_problems(layout: "GraphLayout") -> dict[str, list]:
    """Edges that cross each other, and edges that pass through a node they do not join."""
    pts = {n: (d.x, d.y) for n, d in layout.nodes.items()}
    segs = [(e.start, e.end) for e in layout.edges]
    crossings = [(a, b) for i, a in enumerate(segs) for b in segs[i + 1:]
                 if not set(a) & set(b) and _segments_cross(pts[a[0]], pts[a[1]], pts[b[0]], pts[b[1]])]
    through = [(s, n) for s in segs for n, d in layout.nodes.items()
               if n not in s and _passes_through(pts[s[0]], pts[s[1]], pts[n], d.width / 2 + 0.1, _NODE_H / 2 + 0.1)]
    return {"crossings": crossings, "through_nodes": through}


def _edge_label(c, rows) -> str:
    """The connection kind and the ports it joins, lower end first; the arrow as the messages go."""
    kind = _KIND_TEXT.get(c.kind, c.kind)
    if c.kind == "data":
        return f"{kind} → {c.parent_port}"
    lower_is_parent = rows[c.parent] < rows[c.child]
    lower_port, upper_port = (c.parent_port, c.child_port) if lower_is_parent else (c.child_port, c.parent_port)
    if c.blocked is None:
        arrow = "↔"
    else:
        up_flows = (c.blocked == "down") != lower_is_parent  # messages reach the upper end
        arrow = "→" if up_flows else "←"
    if c.kind == "tail_to_tail":  # the combiner's ports are named after its members: name the combiner
        ports = f"{c.child_port} {arrow} {c.parent}"
    else:
        ports = f"{lower_port} {arrow} {upper_port}"
    return f"{kind}{', one-way' if c.blocked else ''}\n{ports}"


def graph_layout(graph) -> GraphLayout:
    """Where and how :func:`draw_graph` draws each node and connection of ``graph``.

    Rows: observations at the bottom, modules above what they explain, a tail-to-tail combiner
    above its members, a head-to-head node between its two parents. Within each row the order
    with the fewest crossing edges (then the shortest) is kept. Edges: coloured and labelled by
    their connection kind (and ports), arrows where messages arrive — both ends on a two-way
    link, one end (dashed line) on a link with a blocked direction; data links solid, one arrow.
    """
    import itertools
    import math as _math

    roles = graph.roles()
    conns = graph.connections()
    rows = _rows(graph)
    kinds = {n: type(obj).__name__ for n, obj in graph.nodes.items()}
    labels, widths = {}, {}
    for n, role in roles.items():
        sub = kinds[n] if role == "module" else _ROLE_TEXT.get(role, kinds[n])
        labels[n] = f"{n}\n{sub}"
        widths[n] = max(1.25, 0.14 * max(len(n) * 1.15, len(sub)) + 0.45)
    levels = sorted(set(rows.values()))
    order = {level: [n for n in roles if rows[n] == level] for level in levels}
    neighbours = {n: [] for n in roles}
    for c in conns:
        neighbours[c.parent].append(c.child)
        neighbours[c.child].append(c.parent)

    def ends(c):
        return (c.parent, c.child) if rows[c.parent] < rows[c.child] else (c.child, c.parent)

    def build(order):
        xs = _positions(levels, order, neighbours, widths)
        nodes = {}
        for n, role in roles.items():
            shape, fill, outline, _ = _ROLE_STYLE.get(role, _OTHER_ROLE)
            nodes[n] = DrawnNode(n, role, rows[n], xs[n], rows[n] * _ROW_HEIGHT, widths[n], shape, fill, outline,
                                 labels[n])
        edges = []
        for c in conns:
            start, end = ends(c)
            if c.blocked is None:
                arrows = "both"
            else:  # messages reach the parent only ("down" blocked), or the child only ("up" blocked)
                reached = c.parent if c.blocked == "down" else c.child
                arrows = "end" if reached == end else "start"
            dashed = c.blocked is not None and c.kind != "data"
            edges.append(DrawnEdge(c.parent, c.child, c.kind, start, end, arrows, "dashed" if dashed else "solid",
                                   _KIND_COLOUR.get(c.kind, "#333333"), _edge_label(c, rows)))
        return GraphLayout(nodes, edges)

    def score(layout):
        problems = layout_problems(layout)
        length = sum(abs(layout.nodes[e.start].x - layout.nodes[e.end].x) for e in layout.edges)
        return (len(problems["crossings"]) + len(problems["through_nodes"]), length)

    sizes = [_math.factorial(len(order[level])) for level in levels]
    if _math.prod(sizes) <= 200:  # the ready-made architectures: try every order
        candidates = ({level: list(p) for level, p in zip(levels, combo)}
                      for combo in itertools.product(*(itertools.permutations(order[lv]) for lv in levels)))
    else:  # a large graph: barycentre sweeps from the insertion order
        candidates = [order]
        current = {lv: list(v) for lv, v in order.items()}
        for _ in range(4):
            for lv in list(levels[1:]) + list(reversed(levels[:-1])):
                pos = {n: i for names in current.values() for i, n in enumerate(names)}
                current[lv].sort(key=lambda n: np.mean([pos[m] for m in neighbours[n]]) if neighbours[n] else pos[n])
            candidates.append({lv: list(v) for lv, v in current.items()})
    best, best_score = None, None
    for candidate in candidates:
        layout = build(candidate)
        s = score(layout)
        if best_score is None or s < best_score:
            best, best_score = layout, s
    return best


def _check_drawing_path(path) -> Path:
    from .errors import GraphError

    trailing_slash = str(path).endswith(("/", os.sep))
    path = Path(path)
    if path.is_dir() or trailing_slash:
        raise GraphError(f"cannot draw the graph to {str(path)!r}: it is a directory; give a file name "
                         f"such as {str(path / 'graph.png')!r}")
    if path.suffix == "":
        path = path.with_name(path.name + ".png")
        if path.is_dir():
            raise GraphError(f"cannot draw the graph to {str(path)!r}: it is a directory")
    if path.suffix.lower() not in (".png", ".svg", ".pdf", ".dot"):
        raise GraphError(f"cannot draw the graph to {str(path)!r}: use a .png, .svg, .pdf or .dot file name")
    return path


def graph_to_dot(graph) -> str:
    """Graphviz text of ``graph`` with the shapes, colours, labels, rows and edge styles of
    :func:`draw_graph`. Edges are written parent -> child (the generative direction); ``dir``
    puts the arrowheads where messages arrive; a one-way link is dashed."""
    layout = graph_layout(graph)
    shapes = {"box": 'box, style="rounded,filled"', "ellipse": "ellipse, style=filled",
              "diamond": "diamond, style=filled", "hexagon": "hexagon, style=filled"}

    def q(text):
        return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    out = ["digraph serket {", "  rankdir=TB;",
           '  node [fontname="Helvetica"]; edge [fontname="Helvetica", fontsize=9];']
    for n, d in layout.nodes.items():
        out.append(f'  "{q(n)}" [shape={shapes.get(d.shape, "box")}, fillcolor="{d.fill}", color="{d.outline}", '
                   f'label="{q(d.label)}"];')
    by_row: dict[float, list[str]] = {}
    for n, d in layout.nodes.items():
        by_row.setdefault(d.row, []).append(n)
    for row, names in sorted(by_row.items()):
        if len(names) > 1:
            rank = "sink" if row == 0 else "same"
            out.append("  { rank=" + rank + "; " + " ".join(f'"{q(n)}";' for n in names) + " }")
    for e in layout.edges:
        # arrowheads where messages arrive: at the child ("forward"), the parent ("back") or both
        if e.arrows == "both":
            direction = "both"
        else:
            reached = e.end if e.arrows == "end" else e.start
            direction = "forward" if reached == e.child else "back"
        extra = ""
        if e.start == e.parent:  # drawn with the parent below the child (a head-to-head proposer)
            extra = ", constraint=false"
        out.append(f'  "{q(e.parent)}" -> "{q(e.child)}" [label="{q(e.label)}", style={e.linestyle}, '
                   f'dir={direction}, color="{e.colour}", fontcolor="{e.colour}"{extra}];')
        if extra:
            out.append(f'  "{q(e.end)}" -> "{q(e.start)}" [style=invis];')
    out.append("}")
    return "\n".join(out)


def _node_patch(d: DrawnNode):
    from matplotlib.patches import Ellipse, FancyBboxPatch, Polygon

    w, h = d.width, _NODE_H
    common = dict(facecolor=d.fill, edgecolor=d.outline, lw=1.6, zorder=3)
    if d.shape == "ellipse":
        return Ellipse((d.x, d.y), w * 1.1, h * 1.1, **common)
    if d.shape == "diamond":
        w, h = w * 1.25, h * 1.45
        return Polygon([(d.x - w / 2, d.y), (d.x, d.y + h / 2), (d.x + w / 2, d.y), (d.x, d.y - h / 2)], **common)
    if d.shape == "hexagon":
        k = 0.22
        return Polygon([(d.x - w / 2, d.y), (d.x - w / 2 + k, d.y + h / 2), (d.x + w / 2 - k, d.y + h / 2),
                        (d.x + w / 2, d.y), (d.x + w / 2 - k, d.y - h / 2), (d.x - w / 2 + k, d.y - h / 2)], **common)
    return FancyBboxPatch((d.x - w / 2, d.y - h / 2), w, h, boxstyle="round,pad=0,rounding_size=0.12", **common)


def _place_edge_labels(fig, ax, layout: GraphLayout, centre: float, node_patches: dict) -> None:
    """Each link's label where it hides no node, no other link and no other label: beside a
    vertical link (the outer side first), on a slanted one, nearer either end if need be."""
    renderer = fig.canvas.get_renderer()
    to_px = ax.transData.transform
    taken = [p.get_window_extent(renderer).padded(2) for p in node_patches.values()]
    lines = {}
    for e in layout.edges:
        a, b = layout.nodes[e.start], layout.nodes[e.end]
        ts = np.linspace(0, 1, 60)[:, None]
        lines[id(e)] = to_px(np.hstack([a.x + ts * (b.x - a.x), a.y + ts * (b.y - a.y)]))

    def clear(box, own) -> bool:
        if any(box.overlaps(t) for t in taken):
            return False
        for key, pts in lines.items():
            if key != own and np.any((pts[:, 0] > box.x0) & (pts[:, 0] < box.x1)
                                     & (pts[:, 1] > box.y0) & (pts[:, 1] < box.y1)):
                return False
        return True

    for e in layout.edges:
        a, b = layout.nodes[e.start], layout.nodes[e.end]
        vertical = abs(a.x - b.x) < 0.3
        outer = 1 if (a.x + b.x) / 2 >= centre - 1e-6 else -1
        spots = []
        for t in (0.5, 0.38, 0.62, 0.28, 0.72):
            x, y = a.x + t * (b.x - a.x), a.y + t * (b.y - a.y)
            if vertical:
                spots += [(x + 0.14 * side, y, "left" if side > 0 else "right") for side in (outer, -outer)]
            else:
                spots.append((x, y, "center"))
        text = ax.text(0, 0, e.label, fontsize=7.5, color=e.colour, linespacing=1.15, zorder=5, va="center",
                       bbox=dict(boxstyle="round,pad=0.18", facecolor="white", edgecolor="none", alpha=0.92))
        for x, y, align in spots + [spots[0]]:  # no clear spot: the first
            text.set_position((x, y))
            text.set_horizontalalignment(align)
            text.set_multialignment(align)
            box = text.get_window_extent(renderer).padded(12)  # well apart from the next label
            if clear(box, id(e)):
                break
        taken.append(text.get_window_extent(renderer))


def draw_graph(graph, path, *, title: str | None = None) -> Path:
    """Draw ``graph`` (see :func:`graph_layout`) to ``path`` and return the file written.

    ``.png`` (or no suffix, which becomes ``.png``), ``.svg`` or ``.pdf``: a figure with a legend
    of node roles, connection kinds and link styles; ``.dot``: Graphviz text (:func:`graph_to_dot`).
    A directory, or any other suffix, raises :class:`~serket.errors.GraphError` naming the path.
    """
    path = _check_drawing_path(path)
    if path.suffix.lower() == ".dot":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(graph_to_dot(graph) + "\n")
        return path
    plt = _pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.patches import FancyArrowPatch, Patch

    layout = graph_layout(graph)
    xs = [d.x for d in layout.nodes.values()]
    ys = [d.y for d in layout.nodes.values()]
    half = max((d.width for d in layout.nodes.values()), default=1.0) * 0.7
    centre = (min(xs, default=0) + max(xs, default=0)) / 2
    x0, x1 = min(xs, default=0) - half - 1.2, max(xs, default=0) + half + 1.2  # room for labels beside links
    y0, y1 = min(ys, default=0) - 0.75, max(ys, default=0) + 0.75
    scale = 0.95  # inches per data unit
    fig = plt.figure(figsize=((x1 - x0) * scale + 3.6, max((y1 - y0) * scale, 3.2) + 0.6))
    ax = fig.add_axes([0.0, 0.0, (x1 - x0) * scale / fig.get_figwidth(), 1.0 - 0.5 / fig.get_figheight()])
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal", adjustable="box")
    ax.set_axis_off()

    patches = {}
    for n, d in layout.nodes.items():
        patch = _node_patch(d)
        ax.add_patch(patch)
        patches[n] = patch
        name, sub = d.label.split("\n", 1)
        ax.text(d.x, d.y + 0.09, name, ha="center", va="center", fontsize=10, fontweight="bold", zorder=4)
        ax.text(d.x, d.y - 0.15, sub, ha="center", va="center", fontsize=7.5, color="0.25", zorder=4)
    for e in layout.edges:
        a, b = layout.nodes[e.start], layout.nodes[e.end]
        arrow = FancyArrowPatch((a.x, a.y), (b.x, b.y), patchA=patches[e.start], patchB=patches[e.end],
                                arrowstyle=e.arrowstyle, mutation_scale=16, color=e.colour, lw=1.7,
                                linestyle="--" if e.linestyle == "dashed" else "-", shrinkA=3, shrinkB=3, zorder=2)
        ax.add_patch(arrow)
    _place_edge_labels(fig, ax, layout, centre, patches)

    present = {d.role for d in layout.nodes.values()}
    roles_present = [r for r in _ROLE_STYLE if r in present] + sorted(present - set(_ROLE_STYLE))
    present = {e.kind for e in layout.edges}
    kinds_present = [k for k in ("data", "head_to_tail", "tail_to_tail", "head_to_head") if k in present]
    kinds_present += sorted(present - set(kinds_present))
    handles = [Patch(facecolor=_ROLE_STYLE.get(r, _OTHER_ROLE)[1], edgecolor=_ROLE_STYLE.get(r, _OTHER_ROLE)[2],
                     label=_ROLE_STYLE.get(r, _OTHER_ROLE)[3]) for r in roles_present]
    handles += [Line2D([], [], color=_KIND_COLOUR.get(k, "#333333"), lw=2.2, label=f"{_KIND_TEXT.get(k, k)} connection"
                       if k != "data" else "data link (observation → module)") for k in kinds_present]
    handles += [Line2D([], [], color="black", lw=1.7, label="solid, arrowheads at both ends:\n"
                                                              "two-way link, messages both ways"),
                Line2D([], [], color="black", lw=1.7, ls="--",
                       label="dashed, one arrowhead: one-way link,\nmessages only where it points "
                             "(feedback off)")]
    # the legend just right of what was drawn (labels beside links included), whatever the margins
    renderer = fig.canvas.get_renderer()
    right = max((artist.get_window_extent(renderer).x1 for artist in ax.texts + ax.patches),
                default=ax.get_window_extent(renderer).x1)
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(right / fig.bbox.width + 0.02, 0.5),
               fontsize=8, frameon=False, alignment="left", handlelength=2.6, labelspacing=0.7)
    if title:  # over the drawing and its legend together
        legend_in = 3.6
        fig.suptitle(_wrap(title, max(fig.get_figwidth(), (right / fig.dpi) + legend_in) - 0.3, 11), fontsize=11,
                     x=0.02, ha="left")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight", pad_inches=0.15)
    plt.close(fig)
    return path
