"""The comparison report's pictures: three orthogonal slices through one point per case, as PNG data URIs.

Why one point per case: side by side, the maps of several methods and targets are only comparable on the same
slices, so the point is chosen once per case (where the case's maps, each scaled to its own maximum, add up most)
and every map of the case is shown there, on the input's grid. PNGs are encoded here with zlib (no image library,
byte-identical output for identical input), so the page carries them as ``data:`` URIs and needs no other file.
"""
from __future__ import annotations

import base64
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from ..volume import Volume, resample_to_reference

__all__ = ["CaseImages", "case_images", "png_data_uri", "slice_panels"]

#: Largest side of one panel in pixels (a 512³ CT stays a few hundred kB per map).
MAX_PANEL = 256
_GAP = 2


def png_data_uri(rgba: np.ndarray) -> str:
    """An (H, W, 4) uint8 image as a ``data:image/png;base64,...`` URI."""
    h, w, _ = rgba.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rgba.reshape(h, w * 4)], axis=1).tobytes()

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _square_pixels(panel: np.ndarray, row_mm: float, col_mm: float) -> np.ndarray:
    """Nearest-neighbour resize so that a pixel is as tall as it is wide (anisotropic voxels), at most MAX_PANEL."""
    rows, cols = panel.shape
    pixel = min(row_mm, col_mm)
    out_rows, out_cols = rows * row_mm / pixel, cols * col_mm / pixel
    shrink = min(1.0, MAX_PANEL / max(out_rows, out_cols))
    out_rows, out_cols = max(1, round(out_rows * shrink)), max(1, round(out_cols * shrink))
    r = np.minimum((np.arange(out_rows) * rows / out_rows).astype(int), rows - 1)
    c = np.minimum((np.arange(out_cols) * cols / out_cols).astype(int), cols - 1)
    return panel[np.ix_(r, c)]


def slice_panels(array: np.ndarray, center: tuple[int, int, int], spacing_xyz: tuple[float, float, float]
                 ) -> np.ndarray:
    """Axial, coronal and sagittal slices through ``center`` (z, y, x) side by side, NaN between and around them.

    Array axes as stored (LPS for an identity direction): axial rows run anterior→posterior, coronal and sagittal
    rows superior→inferior. A plane that is one voxel thick (a 2D image) is left out.
    """
    z, y, x = center
    sx, sy, sz = spacing_xyz
    planes = [(array[z], sy, sx), (array[::-1, y, :], sz, sx), (array[::-1, :, x], sz, sy)]
    panels = [_square_pixels(p.astype(np.float32), r, c) for p, r, c in planes if min(p.shape) > 1] or \
        [_square_pixels(array[z].astype(np.float32), sy, sx)]
    height = max(p.shape[0] for p in panels)
    out = np.full((height, sum(p.shape[1] for p in panels) + _GAP * (len(panels) - 1)), np.nan, np.float32)
    col = 0
    for p in panels:
        out[: p.shape[0], col: col + p.shape[1]] = p
        col += p.shape[1] + _GAP
    return out


def _gray(panels: np.ndarray, low: float, high: float) -> np.ndarray:
    scaled = np.clip((np.nan_to_num(panels, nan=low) - low) / ((high - low) or 1.0), 0, 1)
    rgba = np.empty(panels.shape + (4,), np.uint8)
    rgba[..., :3] = (scaled * 255).round().astype(np.uint8)[..., None]
    rgba[..., 3] = np.where(np.isnan(panels), 0, 255)
    return rgba


def _heat(panels: np.ndarray, vmin: float, vmax: float, underlay: bool) -> np.ndarray:
    """Colours of a map: symmetric RdBu_r for a signed map, viridis from 0 for a non-negative one; opacity grows
    with |value| over an underlay so the anatomy stays visible where the map is near 0."""
    import matplotlib

    signed = vmin < 0
    top = max(abs(vmin), abs(vmax)) if signed else vmax
    values = np.nan_to_num(panels, nan=0.0)
    norm = (values / top + 1) / 2 if (signed and top > 0) else (values / top if top > 0 else values * 0)
    rgba = (matplotlib.colormaps["RdBu_r" if signed else "viridis"](np.clip(norm, 0, 1)) * 255).round()
    rgba = rgba.astype(np.uint8)
    weight = np.clip(np.abs(values) / top, 0, 1) ** 0.5 if top > 0 else np.zeros_like(values)
    rgba[..., 3] = ((weight if underlay else np.ones_like(values)) * 255).round().astype(np.uint8)
    rgba[np.isnan(panels), 3] = 0
    return rgba


@dataclass
class CaseImages:
    """One case's pictures: the input (or None) and per map its image, value range and whether it is blank."""

    center: tuple[int, int, int]
    underlay: str | None
    maps: list[dict]


def _peak(maps: list[np.ndarray]) -> tuple[int, int, int]:
    """The voxel where the maps, each divided by its own max |value|, add up most (ties: the first)."""
    total = np.zeros(maps[0].shape, np.float64)
    for m in maps:
        top = float(np.abs(m).max())
        if top > 0:
            total += np.abs(m) / top
    if not total.any():
        return tuple(s // 2 for s in total.shape)
    return tuple(int(i) for i in np.unravel_index(int(total.argmax()), total.shape))


def case_images(heatmaps: list[Volume], reference: Volume | None) -> CaseImages:
    """Render a case: every map on the reference grid (the input's; else the first map's), same slices for all.

    NaN/Inf voxels (a map no explainer of this package writes, but a foreign one may) are shown as 0 and counted.
    """
    grid = reference if reference is not None else heatmaps[0]
    nonfinite = [int((~np.isfinite(np.asarray(h.array, np.float32))).sum()) for h in heatmaps]
    finite = [h.with_array(np.nan_to_num(np.asarray(h.array, np.float32), nan=0.0, posinf=0.0, neginf=0.0))
              if n else h for h, n in zip(heatmaps, nonfinite)]
    arrays = [np.asarray(resample_to_reference(h, grid, "linear").array, np.float32) for h in finite]
    center = _peak(arrays)
    underlay = None
    if reference is not None:
        image = np.asarray(reference.array, np.float32)
        low, high = (float(v) for v in np.percentile(image, [1, 99]))
        underlay = png_data_uri(_gray(slice_panels(image, center, grid.spacing), low, high))
    maps = []
    for array, bad in zip(arrays, nonfinite):
        vmin, vmax = float(array.min()), float(array.max())
        panels = slice_panels(array, center, grid.spacing)
        maps.append({"img": png_data_uri(_heat(panels, vmin, vmax, reference is not None)), "vmin": vmin,
                     "vmax": vmax, "blank": bool(vmin == 0 and vmax == 0), "signed": vmin < 0, "nonfinite": bad})
    return CaseImages(center, underlay, maps)
