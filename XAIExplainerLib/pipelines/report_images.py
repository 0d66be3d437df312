"""The comparison report's pictures: three orthogonal slices through one point per case and target, as PNG URIs.

Why one point per case and target: side by side, the maps of several methods are only comparable on the same
slices, so the point is chosen once per case and target (where that target's maps, each scaled to its own maximum,
add up most) and every method's map of it is shown there, on the input's grid. PNGs are encoded here with zlib
(no image library, byte-identical output for identical input), so the page carries them as ``data:`` URIs and
needs no other file.
"""
from __future__ import annotations

import base64
import os
import struct
import zlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..volume import Volume, reorient, resample_to_reference

__all__ = ["CaseImages", "case_images", "display_top", "png_data_uri", "slice_panels"]

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

    For an array in LPS order (what :func:`case_images` makes) this is the radiological convention: the patient's
    right on the image's left, anterior at the top of the axial slice, superior at the top of the coronal and
    sagittal ones (anterior on the left). A plane that is one voxel thick (a 2D image) is left out.
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


def _heat(panels: np.ndarray, top: float, signed: bool, underlay: bool) -> np.ndarray:
    """Colours of a map: symmetric RdBu_r for a signed map, viridis from 0 for a non-negative one, saturated at
    ``top``; over an underlay the opacity grows with |value| so the anatomy stays visible where the map is near 0."""
    import matplotlib

    values = np.nan_to_num(panels, nan=0.0)
    ratio = np.clip(values / top, -1, 1) if top > 0 else np.zeros_like(values)
    rgba = matplotlib.colormaps["RdBu_r" if signed else "viridis"]((ratio + 1) / 2 if signed else ratio)
    rgba = (rgba * 255).round().astype(np.uint8)
    weight = np.abs(ratio) ** 0.5 if underlay else np.ones_like(values)
    rgba[..., 3] = (weight * 255).round().astype(np.uint8)
    rgba[np.isnan(panels), 3] = 0
    return rgba


def display_top(array: np.ndarray) -> float:
    """The colour scale's end: the 99.5th percentile of |value| over the non-zero voxels, so one hot voxel of a
    gradient map does not leave every other voxel invisible (captum's visualiser clips at a percentile too)."""
    magnitude = np.abs(array[array != 0])
    return float(np.percentile(magnitude, 99.5)) if magnitude.size else 0.0


@dataclass
class CaseImages:
    """One case's pictures: per target its slice point and input picture (None without an input), per map its
    picture, value range, colour scale and whether it is blank."""

    centers: dict[str, tuple[int, int, int]]
    underlays: dict[str, str | None]
    maps: list[dict]
    points_ras: dict[str, list[float]]


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


def _load(item: "Volume | str | os.PathLike[str]") -> Volume:
    from ..io import read_result_volume

    return item if isinstance(item, Volume) else read_result_volume(item)


def _on_grid(heatmap: Volume, original: Volume, grid: Volume) -> tuple[np.ndarray, int]:
    """A map on ``grid`` (the reference ``original`` reoriented to LPS) as float32: a map on the reference's own grid
    is only permuted/flipped (exact, and far faster than resampling), any other (IBIX forward maps on the output
    grid) resampled linearly. NaN/Inf voxels (no explainer of this package writes them, a foreign one may) become
    0 and are counted."""
    array = np.asarray(heatmap.array, np.float32)
    bad = int((~np.isfinite(array)).sum())
    if bad:
        heatmap = heatmap.with_array(np.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0))
    moved = reorient(heatmap, "LPS") if heatmap.same_grid(original) else resample_to_reference(heatmap, grid, "linear")
    return np.asarray(moved.array, np.float32), bad


def _render(array: np.ndarray, bad: int, center: tuple[int, int, int], grid: Volume, underlay: bool) -> dict:
    vmin, vmax, top = float(array.min()), float(array.max()), display_top(array)
    panels = slice_panels(array, center, grid.spacing)
    return {"img": png_data_uri(_heat(panels, top, vmin < 0, underlay)), "vmin": vmin, "vmax": vmax, "top": top,
            "blank": bool(vmin == 0 and vmax == 0), "signed": vmin < 0, "nonfinite": bad}


def case_images(heatmaps: "Sequence[Volume | str | os.PathLike[str]]", targets: Sequence[str],
                reference: Volume | None) -> CaseImages:
    """Render a case on the reference grid (the input's; else the first map's), axes permuted/flipped to LPS
    (no interpolation) so that every picture has one orientation whatever the file's direction matrix. The slice
    point is chosen per target, from all methods' maps of it: the methods of one target share their slices.

    ``heatmaps`` may be files: they are then read one target at a time, so a case with a hundred classes never
    holds more than one class's maps in memory.
    """
    original = reference if reference is not None else _load(heatmaps[0])
    grid = reorient(original, "LPS")
    image = np.asarray(grid.array, np.float32) if reference is not None else None
    window = tuple(float(v) for v in np.percentile(image, [1, 99])) if image is not None else (0.0, 1.0)
    centers: dict[str, tuple[int, int, int]] = {}
    underlays: dict[str, str | None] = {}
    maps: list[dict] = [{} for _ in heatmaps]
    for target in dict.fromkeys(targets):
        index = [i for i, t in enumerate(targets) if t == target]
        moved = [_on_grid(_load(heatmaps[i]), original, grid) for i in index]
        centers[target] = _peak([array for array, _ in moved])
        underlays[target] = None if image is None else \
            png_data_uri(_gray(slice_panels(image, centers[target], grid.spacing), *window))
        for i, (array, bad) in zip(index, moved):
            maps[i] = _render(array, bad, centers[target], grid, image is not None)
    to_ras = grid.ijk_to_ras()
    points = {t: [round(float(v), 1) for v in (to_ras @ np.array([c[2], c[1], c[0], 1.0]))[:3]]
              for t, c in centers.items()}
    return CaseImages(centers, underlays, maps, points)
