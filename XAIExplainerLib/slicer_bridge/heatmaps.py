"""Signed attribution maps as Slicer sees them: a diverging colour table, a symmetric window, a foreground
overlay on the anatomy and a volume rendering that hides the near-zero bulk.

Attributions are signed (evidence for / against a class), so zero must look neutral: the colour table runs
blue -> white -> red and the window is always [-m, m], putting zero at its centre. In slice views the table's
alpha is 0 around zero, so unimportant voxels show the anatomy underneath instead of a white wash.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import slicer.util as su
from vtkmodules.vtkCommonDataModel import vtkPiecewiseFunction
from vtkmodules.vtkRenderingCore import vtkColorTransferFunction

from .scene import get_context

__all__ = [
    "DIVERGING_COLORS",
    "add_heatmap_volume_rendering",
    "diverging_color_node",
    "set_slice_layers",
    "show_heatmap",
    "symmetric_limit",
    "heatmap_window_limit",
    "WINDOW_ATTRIBUTE",
    "WINDOW_PERCENTILE",
]

#: (position in [0, 1], r, g, b): blue for negative, white for zero, red for positive (Moreland's cool-warm ends).
DIVERGING_COLORS = ((0.0, 0.23, 0.30, 0.75), (0.5, 1.0, 1.0, 1.0), (1.0, 0.71, 0.02, 0.15))
DIVERGING_TABLE_NAME = "XAIExplainer Diverging"


def _transfer(m: float = 1.0) -> vtkColorTransferFunction:
    ctf = vtkColorTransferFunction()
    ctf.SetColorSpaceToDiverging()
    for pos, r, g, b in DIVERGING_COLORS:
        ctf.AddRGBPoint((2.0 * pos - 1.0) * m, r, g, b)
    return ctf


def diverging_color_node(scene: Any = None, transparent_fraction: float = 0.04, n_colors: int = 256) -> Any:
    """The shared blue-white-red colour table node (created once per scene).

    Entries within ``transparent_fraction`` of the centre (|value| < fraction * m) are fully transparent and
    opacity ramps to 1 by twice that, so overlays show the anatomy where attributions are negligible.
    """
    scene = scene or get_context().scene
    name = DIVERGING_TABLE_NAME if transparent_fraction == 0.04 else f"{DIVERGING_TABLE_NAME} {transparent_fraction:g}"
    existing = scene.GetFirstNodeByName(name)
    if existing is not None and existing.IsA("vtkMRMLColorTableNode"):
        return existing
    node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", name)
    node.SetTypeToUser()
    node.SetNumberOfColors(n_colors)
    node.SetAttribute("Category", "XAIExplainer")
    ctf = _transfer(1.0)
    for i in range(n_colors):
        v = 2.0 * i / (n_colors - 1) - 1.0  # value in [-1, 1]
        r, g, b = ctf.GetColor(v)
        alpha = float(np.clip((abs(v) - transparent_fraction) / max(transparent_fraction, 1e-6), 0.0, 1.0))
        node.SetColor(i, f"{v:+.3f}", r, g, b, alpha)
    return node


def symmetric_limit(array: np.ndarray, percentile: float | None = None) -> float:
    """Window half-width m for a signed map: max |value| or that percentile of the non-zero |values|.

    A percentile (e.g. 99.5) keeps a few extreme voxels from washing out everything else. Never 0, so the window
    stays valid for an all-zero map.
    """
    magnitude = np.abs(np.asarray(array, dtype=np.float64))
    nonzero = magnitude[magnitude > 0]
    if nonzero.size == 0:
        return 1.0
    m = float(np.percentile(nonzero, percentile)) if percentile is not None else float(nonzero.max())
    return m if m > 0 else float(nonzero.max())


#: Percentile of the non-zero |values| that sets a heatmap's window: a few extreme gradient voxels must not wash
#: out the rest (±max was 4.4x wider on a real run).
WINDOW_PERCENTILE = 99.5
#: Node attribute remembering the window half-width chosen for a heatmap (saved with the scene).
WINDOW_ATTRIBUTE = "XAIExplainer.windowLimit"


def heatmap_window_limit(heatmap_node: Any, percentile: float | None = WINDOW_PERCENTILE) -> float:
    """The one display rule: m from ``percentile`` the first time, then the value stored on the node.

    Selecting a heatmap again (or after a scene reload) therefore never resets the window the user first saw.
    """
    stored = heatmap_node.GetAttribute(WINDOW_ATTRIBUTE)
    if stored:
        return float(stored)
    m = symmetric_limit(su.arrayFromVolume(heatmap_node), percentile)
    heatmap_node.SetAttribute(WINDOW_ATTRIBUTE, repr(float(m)))
    return m


def show_heatmap(
    heatmap_node: Any,
    background_node: Any = None,
    opacity: float = 0.6,
    limit: float | None = None,
    percentile: float | None = WINDOW_PERCENTILE,
    transparent_fraction: float = 0.04,
) -> Any:
    """Style ``heatmap_node`` with the diverging table and window [-m, m]; overlay it on ``background_node``.

    Returns the heatmap's display node. The overlay is set in every slice view of the scene. Values with
    |v| < ``transparent_fraction`` * m are see-through (raise it for noisy gradient maps). Without ``limit``,
    m follows :func:`heatmap_window_limit` (computed once per heatmap, then reused).
    """
    if limit is not None:
        heatmap_node.SetAttribute(WINDOW_ATTRIBUTE, repr(float(limit)))
    m = float(limit) if limit is not None else heatmap_window_limit(heatmap_node, percentile)
    if heatmap_node.GetDisplayNode() is None:
        heatmap_node.CreateDefaultDisplayNodes()
    display = heatmap_node.GetDisplayNode()
    display.SetAndObserveColorNodeID(diverging_color_node(heatmap_node.GetScene(), transparent_fraction).GetID())
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(-m, m)
    display.SetInterpolate(True)
    set_slice_layers(heatmap_node.GetScene(), background_node, heatmap_node, opacity)
    return display


#: Layout-name prefix of the comparison views (defined here, imported by :mod:`.comparison`).
COMPARISON_VIEW_PREFIX = "XAICompare"


def set_slice_layers(scene: Any, background_node: Any = None, foreground_node: Any = None, opacity: float = 0.6,
                     label_node: Any = None) -> None:
    """Put background / foreground / label volumes in every slice view except the comparison views.

    The comparison layout's views (layout names ``XAICompare*``, see :mod:`.comparison`) each show one chosen
    heatmap; selecting another heatmap for the main views must not overwrite them.
    """
    composites = [scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
                  for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode"))]
    for comp in composites:
        if (comp.GetLayoutName() or "").startswith(COMPARISON_VIEW_PREFIX):
            continue
        if background_node is not None:
            comp.SetBackgroundVolumeID(background_node.GetID())
        if foreground_node is not None:
            comp.SetForegroundVolumeID(foreground_node.GetID())
            comp.SetForegroundOpacity(float(opacity))
        if label_node is not None:
            comp.SetLabelVolumeID(label_node.GetID())


def add_heatmap_volume_rendering(
    heatmap_node: Any,
    limit: float | None = None,
    hidden_fraction: float = 0.2,
    max_opacity: float = 0.6,
    visible: bool = True,
) -> Any:
    """Volume-render a signed heatmap: |value| < hidden_fraction * m is invisible, ±m is opaque red / blue.

    Returns the volume rendering display node (its volume property holds the two transfer functions).
    """
    ctx = get_context()
    m = float(limit) if limit is not None else heatmap_window_limit(heatmap_node)
    vr_logic = ctx.logic("VolumeRendering")
    display = vr_logic.GetFirstVolumeRenderingDisplayNode(heatmap_node)
    if display is None:
        display = vr_logic.CreateDefaultVolumeRenderingNodes(heatmap_node)
    prop = display.GetVolumePropertyNode().GetVolumeProperty()
    h = hidden_fraction * m
    opacity = vtkPiecewiseFunction()
    opacity.AddPoint(-m, max_opacity)
    opacity.AddPoint(-h, 0.0)
    opacity.AddPoint(h, 0.0)
    opacity.AddPoint(m, max_opacity)
    prop.SetScalarOpacity(opacity)
    # Saturated ends from the first zero-opacity value on, so a faint red never fades into white.
    color = vtkColorTransferFunction()
    lo, hi = DIVERGING_COLORS[0][1:], DIVERGING_COLORS[-1][1:]
    color.AddRGBPoint(-m, *lo)
    color.AddRGBPoint(-h, *lo)
    color.AddRGBPoint(0.0, 1.0, 1.0, 1.0)
    color.AddRGBPoint(h, *hi)
    color.AddRGBPoint(m, *hi)
    prop.SetColor(color)
    prop.ShadeOff()
    prop.SetInterpolationTypeToLinear()
    display.SetVisibility(bool(visible))
    return display
