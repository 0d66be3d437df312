"""PNG figures of an explanation: the RoI matrix heatmap, the RoI graph, and attribution slices.

Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas, never through ``pyplot``: no global
figure registry, no GUI backend, nothing left open in the Slicer Python console or a long-running worker.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np


def new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", bbox_inches="tight")
    return path


def matrix_heatmap(matrix: np.ndarray, class_names: Sequence[str], roi_names: Sequence[str],
                   path: str | os.PathLike[str], title: str = "RoI importance", annotate: bool | None = None) -> Path:
    """Classes (rows) × RoIs (columns) heatmap; values printed in the cells when the matrix is small."""
    m = np.asarray(matrix, dtype=float)
    k, r = m.shape
    fig = new_figure(max(4.0, 0.55 * r + 2.5), max(3.0, 0.45 * k + 1.8))
    ax = fig.add_subplot(1, 1, 1)
    signed = m.min() < 0
    vmax = float(np.abs(m).max()) or 1.0
    im = ax.imshow(m, cmap="RdBu_r" if signed else "viridis", vmin=-vmax if signed else 0.0, vmax=vmax,
                   aspect="auto", interpolation="nearest")
    ax.set_xticks(range(r), labels=list(roi_names), rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(k), labels=list(class_names), fontsize=8)
    ax.set_xlabel("RoI b (where the attribution lies)")
    ax.set_ylabel("class a (what is explained)")
    ax.set_title(title, fontsize=10)
    if annotate if annotate is not None else k * r <= 400:
        for i in range(k):
            for j in range(r):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if abs(m[i, j]) < 0.6 * vmax and not signed else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return save_figure(fig, path)


def draw_graph(g, path: str | os.PathLike[str], title: str = "RoI importance graph") -> Path:
    """Draw the RoI graph: edge width ∝ importance; nodes at their centroids (coronal view, RAS x/z) when known.

    Drawn by hand on the Agg figure (networkx's drawing helpers go through pyplot).
    """
    import networkx as nx

    # RoIs without a kept edge carry no information in the picture; classes are always shown
    nodes = [n for n in g.nodes if g.degree(n) > 0 or "class" in str(g.nodes[n].get("kind", ""))]
    placed = [n for n in nodes if "x" in g.nodes[n]]
    if len(placed) >= 2:
        pos = {n: (g.nodes[n]["x"], g.nodes[n]["z"]) for n in placed}
        xs, zs = [p[0] for p in pos.values()], [p[1] for p in pos.values()]
        rest = [n for n in nodes if n not in pos]  # RoIs absent from this scan: a row below the anatomy
        span = max(max(xs) - min(xs), 1.0)
        for i, n in enumerate(rest):
            pos[n] = (min(xs) + span * (i + 0.5) / len(rest), min(zs) - 0.25 * max(max(zs) - min(zs), span))
    else:
        sub = g.subgraph(nodes)
        pos = nx.circular_layout(sub) if len(nodes) > 2 else {n: (i, 0) for i, n in enumerate(nodes)}
    fig = new_figure(7, 6)
    ax = fig.add_subplot(1, 1, 1)
    weights = [d.get("weight", 0.0) for _, _, d in g.edges(data=True)]
    wmax = max(weights, default=1.0) or 1.0
    size, font = (300, 7) if len(nodes) <= 30 else (110, 5)
    for u, v, d in g.edges(data=True):
        (x0, y0), (x1, y1) = pos[u], pos[v]
        w = d.get("weight", 0.0) / wmax
        if u == v:  # context: ring around the node
            ax.scatter([x0], [y0], s=900, facecolors="none", edgecolors="tab:orange", linewidths=0.5 + 4 * w,
                       zorder=1)
            continue
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0), zorder=1,
                    arrowprops=dict(arrowstyle="-|>", color="tab:blue", lw=0.5 + 4 * w, alpha=0.35 + 0.6 * w,
                                    shrinkA=12, shrinkB=12, connectionstyle="arc3,rad=0.12"))
    colours = {"roi": "lightgrey", "class": "tab:green", "roi+class": "tab:olive"}
    for n in nodes:
        x, y = pos[n]
        ax.scatter([x], [y], s=size, color=colours.get(g.nodes[n].get("kind"), "grey"), edgecolors="black",
                   zorder=2, alpha=0.4 if g.nodes[n].get("absent") else 1.0)
        ax.text(x, y, str(n), fontsize=font, ha="center", va="bottom", zorder=3)
    ax.set_title(title + "\n(arrow b → a: share of class a's attribution in RoI b; ring: context ratio)", fontsize=9)
    ax.set_axis_off()
    ax.margins(0.15)
    return save_figure(fig, path)


def _slice_index(mask: np.ndarray, heat: np.ndarray, axis: int) -> int:
    """Slice through the centre of mass of the segment, or of |heat| when the class is absent."""
    weights = mask.astype(float) if mask.any() else np.abs(heat)
    total = weights.sum()
    if total == 0:
        return mask.shape[axis] // 2
    profile = weights.sum(axis=tuple(i for i in range(3) if i != axis))
    return int(round(float((profile * np.arange(len(profile))).sum() / total)))


def attribution_slices(image: np.ndarray, heat: np.ndarray, labels: np.ndarray, label_id: int | None,
                       path: str | os.PathLike[str], spacing: Sequence[float] = (1.0, 1.0, 1.0),
                       title: str = "", all_outlines: bool = True) -> Path:
    """Axial, coronal and sagittal slices of ``heat`` over ``image`` with segment outlines.

    Arrays are (z, y, x) on one grid; ``spacing`` is (x, y, z) mm. The heatmap uses a symmetric diverging scale
    (red = evidence for the class, blue = against); the explained class's segment is outlined in yellow and the
    other segments in white.
    """
    image, heat, labels = (np.asarray(a) for a in (image, heat, labels))
    mask = labels == label_id if label_id is not None else np.zeros(labels.shape, bool)
    sx, sy, sz = (float(s) for s in spacing)
    # A robust symmetric scale: single extreme voxels (gradient checkerboards at patch borders) would wash out
    # the map; voxels under 10 % of it are left transparent so the anatomy stays visible.
    vmax = float(np.percentile(np.abs(heat), 99.5)) or float(np.abs(heat).max()) or 1.0
    lo, hi = np.percentile(image, [1, 99]) if image.size else (0, 1)
    fig = new_figure(12, 4.4)
    views = [
        ("axial", 0, lambda a, i: a[i], sy / sx),
        ("coronal", 1, lambda a, i: a[:, i, :], sz / sx),
        ("sagittal", 2, lambda a, i: a[:, :, i], sz / sy),
    ]
    im = None
    for col, (name, axis, take, aspect) in enumerate(views):
        ax = fig.add_subplot(1, 3, col + 1)
        i = min(max(_slice_index(mask, heat, axis), 0), image.shape[axis] - 1)
        ax.imshow(take(image, i), cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, origin="lower",
                  aspect=aspect, interpolation="nearest")
        h = take(heat, i)
        im = ax.imshow(np.ma.masked_where(np.abs(h) < 0.1 * vmax, h), cmap="RdBu_r", vmin=-vmax, vmax=vmax,
                       alpha=0.8, origin="lower", aspect=aspect, interpolation="nearest")
        lab = take(labels, i)
        if all_outlines:
            for value in np.unique(lab):
                if value != 0 and value != label_id:
                    ax.contour(lab == value, levels=[0.5], colors="white", linewidths=0.3, alpha=0.6,
                               origin="lower")
        m = take(mask, i)
        if m.any() and not m.all():
            ax.contour(m, levels=[0.5], colors="yellow", linewidths=1.0, origin="lower")
        ax.set_title(f"{name} {i}", fontsize=9)
        ax.set_axis_off()
    fig.suptitle(title, fontsize=10)
    if im is not None:
        fig.colorbar(im, ax=fig.axes, fraction=0.02, pad=0.02, label="attribution")
    return save_figure(fig, path)
