"""Drawing a graph: where each node and connection goes, as a figure or as Graphviz text.

A graph holds data; drawing is a function that takes the graph (:class:`~serket.graph.Graph`
does not draw itself)::

    from serket.bench.drawing import draw_graph, graph_to_dot

    draw_graph(graph, "graph.png", title="VAE+GMM")     # or .svg, .pdf, .dot
    print(graph_to_dot(graph))

:func:`graph_layout` computes what is drawn (rows, positions, shapes, arrows, labels) without
drawing it, so that tests can check a layout (:func:`layout_problems`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serket.errors import GraphError

from .reporting import pyplot, wrap_text, write_text

__all__ = ["draw_graph", "graph_to_dot", "graph_layout", "layout_problems", "GraphLayout", "DrawnNode",
           "DrawnEdge"]

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
        return write_text(path, graph_to_dot(graph) + "\n")
    plt = pyplot()
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
        fig.suptitle(wrap_text(title, max(fig.get_figwidth(), (right / fig.dpi) + legend_in) - 0.3, 11), fontsize=11,
                     x=0.02, ha="left")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight", pad_inches=0.15)
    plt.close(fig)
    return path
