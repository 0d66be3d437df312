"""Intensity and geometry preprocessing per modality, as the networks were trained.

CT follows Agg2Exp (orient RAS, resample to 1.5 mm, clip HU to [-1024, 1024], scale to [0, 1]); MRI has no
absolute scale, so it is scaled robustly between foreground percentiles. Both return a new Volume: the user's
input is never modified.
"""
from __future__ import annotations

import numpy as np

from ..volume import Volume, ensure_finite, reorient, resample_to_spacing
from .config import ModelConfig


def normalise_ct(array: np.ndarray, hu_range: tuple[float, float] = (-1024.0, 1024.0)) -> np.ndarray:
    """Clip Hounsfield units to ``hu_range`` and scale linearly to [0, 1]."""
    lo, hi = hu_range
    return ((np.clip(array.astype(np.float32), lo, hi) - lo) / (hi - lo)).astype(np.float32)


def normalise_mri(array: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """Scale to [0, 1] between percentiles of the foreground (voxels above the 10th percentile of non-zeros).

    Percentiles of the foreground rather than min/max make the scale robust to bright vessels, fat and
    zero-padded backgrounds, which differ between scanners and skull-stripping tools.
    """
    data = array.astype(np.float32)
    nonzero = data[data > 0]
    if nonzero.size == 0:
        return np.zeros_like(data)
    foreground = nonzero[nonzero > np.percentile(nonzero, 10)]
    if foreground.size == 0:
        foreground = nonzero
    lo, hi = np.percentile(foreground, percentiles)
    if hi <= lo:
        hi = lo + 1.0
    return np.clip((data - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def preprocess(volume: Volume, config: ModelConfig) -> Volume:
    """Input volume → model space (orientation, spacing, intensity) as ``config`` prescribes."""
    ensure_finite(volume)
    oriented = reorient(volume.with_array(volume.array.astype(np.float32)), config.orientation)
    resampled = resample_to_spacing(oriented, config.spacing, "linear", default_value=float(oriented.array.min()))
    if config.modality == "CT":
        data = normalise_ct(resampled.array, config.intensity_range)
    else:
        data = normalise_mri(resampled.array, config.mri_percentiles)
    return resampled.with_array(data, space="model", modality=config.modality)
