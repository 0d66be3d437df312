"""MNI152 2009a T1 with grey-matter, white-matter and CSF fractions: real anatomy for the regression and
image-to-image demos, read from the ``nilearn`` wheel (nothing downloaded).

nilearn ships grey- and white-matter probability maps but no CSF map. CSF is derived here as what the intracranial
space leaves over: ``csf = clip(1 - gm - wm, 0, 1)`` inside the intracranial mask, 0 outside. The intracranial
mask is ``gm + wm > 0.5`` closed with a 3 mm ball (sulci) and hole-filled (ventricles), so the ventricles and the
sulcal CSF count as CSF while air, skull and scalp do not. The rule is simple on purpose: a user can check it.

Hemispheres are told apart by the physical LPS x coordinate (MNI's mid-sagittal plane is x = 0; LPS x > 0 is
the left hemisphere), so a patch is "left" only when every voxel centre of it lies at x > 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import SimpleITK as sitk

from ..volume import Volume, resample_to_spacing
from .samples import mni152_t1, mni152_tissue_maps

TISSUE_NAMES: tuple[str, str, str] = ("grey_matter", "white_matter", "csf")


@dataclass(frozen=True)
class TissueMaps:
    """The T1 (float32, scaled so its 99.5th percentile is 1) and three tissue fractions in [0, 1], one grid."""

    t1: Volume
    grey_matter: Volume
    white_matter: Volume
    csf: Volume
    intracranial: Volume  # uint8 mask the CSF rule uses

    def fractions(self) -> np.ndarray:
        """The three tissue maps stacked as ``(3, z, y, x)`` float32, in :data:`TISSUE_NAMES` order."""
        return np.stack([self.grey_matter.array, self.white_matter.array, self.csf.array]).astype(np.float32)


def _intracranial_mask(gm: np.ndarray, wm: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    brain = sitk.GetImageFromArray(((gm + wm) > 0.5).astype(np.uint8))
    brain.SetSpacing(spacing)
    radius = [max(1, int(round(3.0 / s))) for s in spacing]
    closed = sitk.BinaryMorphologicalClosing(brain, radius, sitk.sitkBall)
    filled = sitk.BinaryFillhole(closed)
    return sitk.GetArrayFromImage(filled).astype(np.uint8)


def _as_float(volume: Volume) -> Volume:
    """float32 copy: SimpleITK keeps the pixel type, so resampling uint8 linearly would round every voxel."""
    return volume.with_array(volume.array.astype(np.float32))


def mni152_tissues(spacing_mm: float = 2.0) -> TissueMaps:
    """MNI152 T1 and GM/WM/CSF fractions resampled (linear) to isotropic ``spacing_mm``.

    2 mm gives a 94×116×98 (z, y, x) grid, small enough to train a demo network on a CPU in minutes.
    """
    if not spacing_mm > 0:
        raise ValueError(f"spacing_mm must be positive, got {spacing_mm}.")
    spacing = (float(spacing_mm),) * 3
    gm_raw, wm_raw = mni152_tissue_maps()
    t1, gm, wm = (resample_to_spacing(_as_float(v), spacing, interpolator="linear")
                  for v in (mni152_t1(), gm_raw, wm_raw))
    gm_f = np.clip(gm.array.astype(np.float32) / 255.0, 0.0, 1.0)
    wm_f = np.clip(wm.array.astype(np.float32) / 255.0, 0.0, 1.0)
    inside = _intracranial_mask(gm_f, wm_f, spacing)
    csf_f = np.where(inside > 0, np.clip(1.0 - gm_f - wm_f, 0.0, 1.0), 0.0).astype(np.float32)
    t1_f = t1.array.astype(np.float32)
    t1_f = np.clip(t1_f / max(float(np.percentile(t1_f, 99.5)), 1e-6), 0.0, None)
    return TissueMaps(
        t1=t1.with_array(t1_f, modality="MRI", description="MNI152 2009a T1, scaled to its 99.5th percentile"),
        grey_matter=gm.with_array(gm_f, description="grey-matter fraction"),
        white_matter=wm.with_array(wm_f, description="white-matter fraction"),
        csf=t1.with_array(csf_f, description="CSF fraction (1 - GM - WM inside the intracranial mask)"),
        intracranial=t1.with_array(inside, description="intracranial mask"),
    )


def _left_columns(volume: Volume) -> np.ndarray:
    """Per array column (x index): whether its voxel centres lie at LPS x > 0 (the left hemisphere)."""
    columns = np.arange(volume.shape[2], dtype=float)
    ijk = np.stack([columns, np.zeros_like(columns), np.zeros_like(columns), np.ones_like(columns)])
    return (volume.ijk_to_lps() @ ijk)[0] > 0


def hemisphere_patches(maps: TissueMaps, hemisphere: Literal["left", "right"], size: int = 32, stride: int = 8,
                       min_intracranial: float = 0.3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cubic T1 patches lying wholly in one hemisphere, with their mean tissue fractions as regression targets.

    Returns ``(patches (N, 1, s, s, s) float32, fractions (N, 3) float32 in TISSUE_NAMES order, corners (N, 3)
    as (z, y, x))``. Patches with less than ``min_intracranial`` of their voxels inside the skull are dropped.
    Left patches train and right patches test (or the reverse): the two sets share no voxel.
    """
    if hemisphere not in ("left", "right"):
        raise ValueError(f"hemisphere must be 'left' or 'right', got {hemisphere!r}.")
    left = _left_columns(maps.t1)
    wanted = left if hemisphere == "left" else ~left
    fractions = maps.fractions()
    inside = maps.intracranial.array
    nz, ny, nx = maps.t1.shape
    patches, targets, corners = [], [], []
    for z in range(0, nz - size + 1, stride):
        for y in range(0, ny - size + 1, stride):
            for x in range(0, nx - size + 1, stride):
                if not wanted[x:x + size].all():
                    continue
                box = (slice(z, z + size), slice(y, y + size), slice(x, x + size))
                if inside[box].mean() < min_intracranial:
                    continue
                patches.append(maps.t1.array[box][None])
                targets.append(fractions[(slice(None), *box)].mean(axis=(1, 2, 3)))
                corners.append((z, y, x))
    if not patches:
        raise ValueError(f"No {size}³ patch lies wholly in the {hemisphere} hemisphere; use a smaller size.")
    return (np.stack(patches).astype(np.float32), np.stack(targets).astype(np.float32),
            np.asarray(corners, dtype=np.int64))
