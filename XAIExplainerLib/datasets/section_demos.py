"""Inputs for the Regression and IBIX section demos, made from the shipped Colin27 T1 alone (no nilearn, no
mricron-data: both are missing inside Slicer).

The two tissue networks were trained on the MNI152 2009a template (skull-stripped, 2 mm, scaled so its 99.5th
percentile is 1). Colin27 is a different subject (one person scanned 27 times, not a 152-subject average), so the
demos show the networks on a brain they never saw. To match the training input, the demo T1 is

1. masked with the shipped Colin27 brain mask (``Colin27_brainmask_3mm.nii.gz``, from MRIcron's ch2bet), because
   MNI152 has no skull or scalp;
2. resampled (linear) from 3 mm to 2 mm on the same physical extent and first voxel centre;
3. divided by its 99.5th percentile and clipped at 0, the rule of :func:`datasets.tissue.mni152_tissues`.

The regression demo is the 32³ patch of that brain at :data:`REGRESSION_PATCH_CORNER`: wholly in the right
hemisphere (LPS x < 0; the regressor was trained on left-hemisphere patches only) and holding cortex, white matter
and the right lateral ventricle. The IBIX demo is the brain cropped to the mask's bounding box (a smaller grid, so
the tissue U-Net runs in seconds on a CPU).

The counterfactual demo (:func:`counterfactual_demo`) is a 32³ patch of the same 2 mm brain rescaled as the lesion
classifier's training input (:mod:`.lesions`: divided by the median of the brain's tissue, tissue being the brain
above the Otsu threshold of its intensities) with one synthetic lesion from :func:`.lesions.add_lesion` (fixed seed,
in tissue); its mask is the ground truth the counterfactual region can be compared with.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..volume import Volume, read_volume, resample_to_reference, resample_to_spacing

DEMO_DATA = Path(__file__).resolve().parents[1] / "Resources" / "DemoData"
DEMO_T1 = DEMO_DATA / "Colin27_T1_3mm.nii.gz"
DEMO_BRAIN_MASK = DEMO_DATA / "Colin27_brainmask_3mm.nii.gz"
REGRESSOR_SPACING_MM = 2.0
REGRESSOR_PATCH = 32
#: (z, y, x) voxel of the 2 mm Colin27 brain where the regression demo patch starts (see :func:`regression_demo_patch`).
REGRESSION_PATCH_CORNER = (20, 38, 46)
#: Voxels of margin around the brain mask's bounding box in the IBIX demo crop.
IBIX_MARGIN = 2


def colin27_brain_2mm() -> Volume:
    """The shipped Colin27 T1, skull-stripped, at 2 mm, scaled as the tissue networks' training input (float32)."""
    t1 = read_volume(DEMO_T1)
    mask = resample_to_reference(read_volume(DEMO_BRAIN_MASK), t1, "nearest").array > 0
    brain = t1.with_array(np.where(mask, t1.array, 0).astype(np.float32))
    resampled = resample_to_spacing(brain, (REGRESSOR_SPACING_MM,) * 3, "linear")
    data = resampled.array.astype(np.float32)
    scaled = np.clip(data / max(float(np.percentile(data, 99.5)), 1e-6), 0.0, None).astype(np.float32)
    return resampled.with_array(scaled, modality="MRI",
                                description="Colin27 T1 brain at 2 mm, scaled to its 99.5th percentile")


def crop(volume: Volume, corner_zyx: tuple[int, int, int], size_zyx: tuple[int, int, int]) -> Volume:
    """The box ``[corner, corner + size)`` of ``volume`` with its geometry (first voxel centre moved there)."""
    z, y, x = (int(c) for c in corner_zyx)
    dz, dy, dx = (int(s) for s in size_zyx)
    if min(z, y, x) < 0 or z + dz > volume.shape[0] or y + dy > volume.shape[1] or x + dx > volume.shape[2]:
        raise ValueError(f"Crop {corner_zyx} + {size_zyx} leaves the volume of shape {volume.shape}.")
    origin = (volume.ijk_to_lps() @ np.array([x, y, z, 1.0]))[:3]
    return Volume(volume.array[z:z + dz, y:y + dy, x:x + dx].copy(), volume.spacing, tuple(float(o) for o in origin),
                  volume.direction, dict(volume.metadata))


def regression_demo_patch(brain: Volume | None = None) -> Volume:
    """The 32³ regression demo patch (right hemisphere: cortex, white matter, lateral ventricle) at 2 mm."""
    brain = colin27_brain_2mm() if brain is None else brain
    size = (REGRESSOR_PATCH,) * 3
    patch = crop(brain, REGRESSION_PATCH_CORNER, size)
    return patch.with_array(patch.array, description=f"Colin27 T1 brain patch at 2 mm, voxel (z,y,x)="
                                                     f"{REGRESSION_PATCH_CORNER} of the 2 mm brain")


def ibix_demo_brain(brain: Volume | None = None) -> Volume:
    """The 2 mm Colin27 brain cropped to its bounding box plus :data:`IBIX_MARGIN` voxels (tissue U-Net demo)."""
    brain = colin27_brain_2mm() if brain is None else brain
    inside = np.argwhere(brain.array > 0)
    low = np.maximum(inside.min(0) - IBIX_MARGIN, 0)
    high = np.minimum(inside.max(0) + 1 + IBIX_MARGIN, brain.shape)
    cropped = crop(brain, tuple(low), tuple(high - low))
    return cropped.with_array(cropped.array, description="Colin27 T1 brain at 2 mm (bounding box)")


#: The IBIX demo's painted input region M^x: a ball in the right corona radiata (white matter), as in
#: extras/ibix_demo.py's tissue demo (MNI RAS (26, -10, 30) mm = LPS (-26, 10, 30); Colin27 lies in MNI space).
IBIX_REGION_LPS, IBIX_REGION_RADIUS_MM = (-26.0, 10.0, 30.0), 6.0


def ibix_demo_region(image: Volume) -> np.ndarray:
    """M^x of the IBIX demo on ``image``'s grid: brain voxels (image > 0) within the ball (bool, z, y, x)."""
    nz, ny, nx = image.shape
    k, j, i = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    ijk = np.stack([i.ravel(), j.ravel(), k.ravel(), np.ones(i.size)])
    lps = (image.ijk_to_lps() @ ijk)[:3].T.reshape(nz, ny, nx, 3)
    ball = np.linalg.norm(lps - np.asarray(IBIX_REGION_LPS), axis=-1) <= IBIX_REGION_RADIUS_MM
    return ball & (image.array > 0)


#: (z, y, x) voxel of the 2 mm Colin27 brain where the counterfactual demo patch starts, and the seed of its lesion
#: (chosen so the shipped lesion classifier says "lesion" with p ≈ 1.0 and says "healthy" without the lesion).
COUNTERFACTUAL_PATCH_CORNER, COUNTERFACTUAL_LESION_SEED = (36, 36, 48), 3


@dataclass(frozen=True)
class CounterfactualDemo:
    """The counterfactual demo: patch with a lesion, lesion mask (ground truth), brain mask, lesion parameters."""

    image: Volume
    lesion: Volume
    brain: Volume
    lesion_parameters: dict
    healthy: Volume  # the same patch without the lesion


def lesion_scaled_brain(brain: Volume | None = None) -> tuple[Volume, np.ndarray, np.ndarray]:
    """(T1 / tissue median, brain mask, tissue mask) of the 2 mm Colin27 brain: the rule of
    :func:`.lesions.load_subject`, so the lesion classifier sees intensities as in training."""
    from .lesions import _otsu

    brain = colin27_brain_2mm() if brain is None else brain
    mask = brain.array > 0
    tissue = mask & (brain.array > _otsu(brain.array[mask]))
    scaled = np.clip(brain.array / float(np.median(brain.array[tissue])), 0.0, None).astype(np.float32)
    return brain.with_array(scaled, description="Colin27 T1 brain at 2 mm / tissue median"), mask, tissue


def counterfactual_demo(brain: Volume | None = None) -> CounterfactualDemo:
    """The counterfactual demo patch at :data:`COUNTERFACTUAL_PATCH_CORNER` with its lesion (deterministic)."""
    from .lesions import add_lesion

    scaled, mask, tissue = lesion_scaled_brain(brain)
    size = (REGRESSOR_PATCH,) * 3
    patch = crop(scaled, COUNTERFACTUAL_PATCH_CORNER, size)
    brain_patch = crop(scaled.with_array(mask.astype(np.uint8)), COUNTERFACTUAL_PATCH_CORNER, size)
    tissue_patch = crop(scaled.with_array(tissue.astype(np.uint8)), COUNTERFACTUAL_PATCH_CORNER, size).array
    made = add_lesion(patch.array, tissue_patch, REGRESSOR_SPACING_MM,
                      np.random.default_rng(COUNTERFACTUAL_LESION_SEED))
    if made is None:  # cannot happen for the shipped data; guards a changed corner or seed
        raise ValueError(f"No lesion fits the patch at {COUNTERFACTUAL_PATCH_CORNER}; choose another corner or seed.")
    image, lesion, parameters = made
    where = f"voxel (z,y,x)={COUNTERFACTUAL_PATCH_CORNER} of the 2 mm brain"
    return CounterfactualDemo(
        patch.with_array(image, description=f"Colin27 T1 patch / tissue median with a synthetic lesion, {where}"),
        patch.with_array(lesion, description="synthetic lesion (ground truth)"),
        brain_patch.with_array(brain_patch.array, description="brain mask"),
        parameters, patch.with_array(patch.array, description=f"Colin27 T1 patch / tissue median, {where}"))
