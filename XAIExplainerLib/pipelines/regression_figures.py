"""Figures of regression explanations without a surrogate (Grad-CAM++, LayerCAM, SmoothGrad): per target the
input slice through the map's peak with the map over it, and a blank map said in words instead of drawn empty."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

#: Maps that are >= 0 by construction (drawn with a sequential colour map from 0).
NON_NEGATIVE_METHODS = ("gradcampp", "layercam")


def _slice_index(data: np.ndarray) -> int:
    """The axial slice holding the largest |value| (the middle one for an all-zero map)."""
    if not np.any(data):
        return data.shape[0] // 2
    return int(np.abs(data).reshape(data.shape[0], -1).max(1).argmax())


def _draw(ax: Any, underlay: np.ndarray | None, data: np.ndarray, z: int, non_negative: bool) -> Any:
    if underlay is not None and underlay.shape == data.shape:
        ax.imshow(underlay[z], cmap="gray", origin="lower", interpolation="nearest")
    vmax = float(np.abs(data).max()) or 1.0
    if non_negative:
        masked = np.ma.masked_where(data[z] <= 0.05 * vmax, data[z])
        return ax.imshow(masked, cmap="viridis", vmin=0.0, vmax=vmax, alpha=0.6, origin="lower",
                         interpolation="nearest")
    return ax.imshow(data[z], cmap="RdBu_r", vmin=-vmax, vmax=vmax, alpha=0.7 if underlay is not None else 1.0,
                     origin="lower", interpolation="nearest")


def attribution_figure(expl: Any, path: Path) -> Path:
    """One panel per target of ``expl`` (a :class:`~.regression.RegressionExplanation`): title = target,
    prediction and slice; a blank map is titled BLANK with its reason."""
    import textwrap

    from ..figures import new_figure, save_figure

    n = len(expl.heatmaps)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig = new_figure(3.4 * cols, 3.6 * rows)
    underlay = None if expl.underlay is None else np.asarray(expl.underlay.array, dtype=np.float32)
    non_negative = expl.method in NON_NEGATIVE_METHODS
    for k, (name, heat) in enumerate(zip(expl.target_names, expl.heatmaps)):
        data = np.asarray(heat.array, dtype=np.float32)
        z = _slice_index(data)
        ax = fig.add_subplot(rows, cols, k + 1)
        image = _draw(ax, underlay, data, z, non_negative)
        prediction = expl.predictions.get(name)
        title = f"{expl.method}: {name}" + (f" (ŷ={prediction:.3g})" if prediction is not None else "") + f", z={z}"
        if name in expl.blank or not np.any(data):
            reason = expl.blank.get(name, "zero everywhere")
            title += "\nBLANK: " + textwrap.shorten(reason, 110)
            ax.set_title("\n".join(textwrap.wrap(title, 46)), fontsize=7, color="darkred")
        else:
            ax.set_title(title, fontsize=8)
            fig.colorbar(image, ax=ax, fraction=0.046)
        ax.axis("off")
    return save_figure(fig, path)


__all__ = ["NON_NEGATIVE_METHODS", "attribution_figure"]
