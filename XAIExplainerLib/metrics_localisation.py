"""How well a saliency mask localises a known finding: the measures D, H, A and O of Major et al. (issue 14).

All distances are in mm (voxel indices times the spacing), on masks given as ``(z, y, x)`` arrays with the
spacing as ``(x, y, z)`` (SimpleITK's order, as :class:`~XAIExplainerLib.volume.Volume` stores it).

* **D** — for each connected component of the result mask (26-connectivity), the Euclidean distance from its
  centre (centroid) to the nearest ground-truth component centre; the per-image value is the *median* over the
  result's components, as the paper takes "their median for a robust estimation per image" when several
  components occur. Lower is better.
* **H** — the (symmetric) Hausdorff distance between the voxel centres of the two masks: the largest distance
  from a voxel of either mask to the nearest voxel of the other. Computed exactly with Euclidean distance
  transforms; it agrees with SimpleITK's ``HausdorffDistanceImageFilter`` (a test checks this).
* **A** — the result mask's volume inside the organ (brain) over the organ's volume: how much of the organ the
  explanation points at. Lower = more compact.
* **O** — the overlap coefficient |X ∩ Y| / min(|X|, |Y|) between two methods' masks (1 when one lies inside
  the other).

A continuous map becomes a mask by :func:`threshold_map`: the voxels *above* its P-th percentile, the
percentile taken over the organ's voxels when an organ mask is given (so a 90th-percentile mask covers 10 % of
the organ, as in the paper's A of SAL = .10). Undefined values (an empty mask) are NaN.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .errors import GeometryMismatchError, InvalidVolumeError

Spacing = Sequence[float]


def _as_mask(mask: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(mask)
    if array.ndim != 3:
        raise InvalidVolumeError(f"The {name} must be a 3D array (z, y, x), got shape {array.shape}.")
    return array > 0


def _same_shape(a: np.ndarray, b: np.ndarray, what: str) -> None:
    if a.shape != b.shape:
        raise GeometryMismatchError(f"The {what} have different shapes {a.shape} and {b.shape}; resample one onto "
                                    "the other's grid first.")


def _spacing_zyx(spacing: Spacing) -> np.ndarray:
    values = np.asarray(spacing, dtype=np.float64)
    if values.shape != (3,) or not np.all(values > 0):
        raise InvalidVolumeError(f"spacing must be 3 positive numbers (x, y, z) in mm, got {list(spacing)}.")
    return values[::-1]


def component_centres(mask: np.ndarray, spacing: Spacing) -> np.ndarray:
    """Centroids (mm, z y x order) of the 26-connected components of ``mask``, shape (n, 3)."""
    from scipy import ndimage

    binary = _as_mask(mask, "mask")
    labels, count = ndimage.label(binary, structure=np.ones((3, 3, 3), dtype=bool))
    if count == 0:
        return np.zeros((0, 3))
    centres = np.asarray(ndimage.center_of_mass(binary, labels, range(1, count + 1)), dtype=np.float64)
    return centres * _spacing_zyx(spacing)


def centre_distance(result: np.ndarray, truth: np.ndarray, spacing: Spacing) -> float:
    """D: median over result components of the distance (mm) from its centre to the nearest truth centre."""
    _same_shape(np.asarray(result), np.asarray(truth), "result and ground-truth masks")
    result_centres = component_centres(result, spacing)
    truth_centres = component_centres(truth, spacing)
    if len(result_centres) == 0 or len(truth_centres) == 0:
        return float("nan")
    distances = np.linalg.norm(result_centres[:, None, :] - truth_centres[None, :, :], axis=-1)
    return float(np.median(distances.min(axis=1)))


def _directed_hausdorff(a: np.ndarray, b: np.ndarray, spacing_zyx: np.ndarray) -> float:
    from scipy import ndimage

    distance_to_b = ndimage.distance_transform_edt(~b, sampling=spacing_zyx)
    return float(distance_to_b[a].max())


def hausdorff_distance(a: np.ndarray, b: np.ndarray, spacing: Spacing) -> float:
    """H: symmetric Hausdorff distance (mm) between the voxel centres of two masks; NaN if either is empty."""
    mask_a, mask_b = _as_mask(a, "first mask"), _as_mask(b, "second mask")
    _same_shape(mask_a, mask_b, "masks")
    if not mask_a.any() or not mask_b.any():
        return float("nan")
    sz = _spacing_zyx(spacing)
    return max(_directed_hausdorff(mask_a, mask_b, sz), _directed_hausdorff(mask_b, mask_a, sz))


def area_ratio(result: np.ndarray, organ: np.ndarray) -> float:
    """A: |result ∩ organ| / |organ| (a volume ratio, so the spacing cancels)."""
    mask, organ_mask = _as_mask(result, "result mask"), _as_mask(organ, "organ mask")
    _same_shape(mask, organ_mask, "result and organ masks")
    if not organ_mask.any():
        raise InvalidVolumeError("The organ mask is empty; give a mask with the organ (e.g. the brain) set to 1.")
    return float(np.count_nonzero(mask & organ_mask) / np.count_nonzero(organ_mask))


def overlap_coefficient(a: np.ndarray, b: np.ndarray) -> float:
    """O: |a ∩ b| / min(|a|, |b|) (Szymkiewicz–Simpson); NaN if either mask is empty."""
    mask_a, mask_b = _as_mask(a, "first mask"), _as_mask(b, "second mask")
    _same_shape(mask_a, mask_b, "masks")
    smaller = min(np.count_nonzero(mask_a), np.count_nonzero(mask_b))
    return float("nan") if smaller == 0 else float(np.count_nonzero(mask_a & mask_b) / smaller)


def is_binary(values: np.ndarray) -> bool:
    """Whether a map holds only 0 and 1 (a mask, used as it is) rather than continuous values."""
    return bool(np.isin(np.unique(np.asarray(values)), (0, 1)).all())


def threshold_map(values: np.ndarray, percentile: float, organ: np.ndarray | None = None) -> np.ndarray:
    """The voxels of ``values`` strictly above its ``percentile``-th percentile (over the organ if given)."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 3:
        raise InvalidVolumeError(f"The map must be a 3D array (z, y, x), got shape {array.shape}.")
    if not 0 <= percentile < 100:
        raise InvalidVolumeError(f"The percentile must be in [0, 100), got {percentile}.")
    if not np.isfinite(array).all():
        raise InvalidVolumeError("The map holds NaN or infinite values; recompute it or clean it first.")
    inside = np.ones(array.shape, dtype=bool)
    if organ is not None:
        inside = _as_mask(organ, "organ mask")
        _same_shape(array, inside, "map and organ mask")
        if not inside.any():
            raise InvalidVolumeError("The organ mask is empty; give a mask with the organ set to 1.")
    cut = np.percentile(array[inside], percentile)
    return (array > cut) & inside


def localisation_scores(result: np.ndarray, truth: np.ndarray, spacing: Spacing,
                        organ: np.ndarray | None = None) -> dict[str, float]:
    """D, H (mm) and, with an organ mask, A for one result mask against one ground-truth mask."""
    scores = {"D": centre_distance(result, truth, spacing), "H": hausdorff_distance(result, truth, spacing)}
    if organ is not None:
        scores["A"] = area_ratio(result, organ)
    return scores


def masks_at_percentiles(maps: Mapping[str, np.ndarray], percentiles: Sequence[float],
                         organ: np.ndarray | None = None) -> list[tuple[float | None, dict[str, np.ndarray]]]:
    """For each percentile, every method's mask: binary maps as they are, continuous maps thresholded.

    With no continuous map the percentiles do not apply and one set (percentile ``None``) is returned.
    """
    binary = {name: np.asarray(m) > 0 for name, m in maps.items() if is_binary(m)}
    continuous = {name: m for name, m in maps.items() if name not in binary}
    if not continuous:
        return [(None, binary)]
    return [(float(p), {**binary, **{name: threshold_map(m, p, organ) for name, m in continuous.items()}})
            for p in percentiles]


def compare_masks(masks: Mapping[str, np.ndarray], truth: np.ndarray, spacing: Spacing,
                  organ: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """Per method: D, H, A (with an organ mask) and ``O_<other>`` against every other method's mask."""
    rows: dict[str, dict[str, float]] = {}
    for name, mask in masks.items():
        row = localisation_scores(mask, truth, spacing, organ)
        for other, other_mask in masks.items():
            if other != name:
                row[f"O_{other}"] = overlap_coefficient(mask, other_mask)
        rows[name] = row
    return rows
