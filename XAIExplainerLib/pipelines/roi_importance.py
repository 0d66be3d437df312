"""Agg2Exp aggregation: how much of a class's attribution lies in each region of interest (RoI).

For the attribution map ``e_a`` of class ``a`` and a RoI ``b`` (a predicted segment, an atlas region, a
ground-truth structure...) the *local RoI importance* is the mass accuracy

    e_{b→a} = ‖e_a restricted to b‖₁ / ‖e_a‖₁

(Chrabaszcz, Baniecki et al., "Aggregated Attributions for Explanatory Analysis of 3D Segmentation Models",
WACV 2025). Voxels outside every labelled RoI form their own column (label 0: "background" for predicted
segments, "unlabelled" for an atlas), so that each row of a mass variant sums to exactly 1 and nothing is lost.

Variants: ``absolute`` (|e_a|, the paper's default), ``positive`` (only evidence *for* class a), ``negative``
(only evidence against it), and ``mean`` (mean signed attribution per RoI, which does not sum to 1 but shows the
direction of the effect independently of the RoI's size).

Only numpy is used here: the aggregation runs on saved attribution maps as well as fresh ones.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import GeometryMismatchError, InvalidVolumeError, UnknownClassError

VARIANTS = ("absolute", "positive", "negative", "mean")
#: Variants whose rows are a distribution over RoIs (sum to 1 for a class with non-zero mass).
MASS_VARIANTS = ("absolute", "positive", "negative")


@dataclass(frozen=True)
class RoIImportance:
    """A local RoI importance matrix: one row per explained class, one column per RoI.

    ``absent`` lists classes the prediction does not contain (the Agg2Exp target is identically 0) and
    ``zero_mass`` classes whose attribution has no mass under the chosen variant. Both have a row of zeros
    (never NaN) and ``present`` is False for them, so averages over scans can leave them out.
    """

    matrix: np.ndarray  # (K, R) float64
    class_names: list[str]
    roi_ids: list[int]
    roi_names: list[str]
    variant: str = "absolute"
    mass: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (K,) L1 mass of each row's map
    roi_voxels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # (R,)
    absent: list[str] = field(default_factory=list)
    zero_mass: list[str] = field(default_factory=list)

    @property
    def present(self) -> np.ndarray:
        """Boolean (K,): rows that carry information (class predicted and attribution mass > 0)."""
        missing = set(self.absent) | set(self.zero_mass)
        return np.array([name not in missing for name in self.class_names], dtype=bool)

    def row(self, class_name: str) -> dict[str, float]:
        """Importance of every RoI for one class, by RoI name."""
        if class_name not in self.class_names:
            raise UnknownClassError(
                f"No row for class {class_name!r}; the matrix explains {', '.join(self.class_names)}."
            )
        k = self.class_names.index(class_name)
        return {name: float(v) for name, v in zip(self.roi_names, self.matrix[k])}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (``matrix`` as nested lists, row-major: classes × RoIs)."""
        return {
            "variant": self.variant,
            "class_names": list(self.class_names),
            "roi_ids": [int(i) for i in self.roi_ids],
            "roi_names": list(self.roi_names),
            "matrix": self.matrix.tolist(),
            "mass": [float(m) for m in self.mass],
            "roi_voxels": [int(n) for n in self.roi_voxels],
            "absent": list(self.absent),
            "zero_mass": list(self.zero_mass),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RoIImportance":
        matrix = np.asarray(data["matrix"], dtype=np.float64)
        k = len(data["class_names"])
        r = len(data["roi_names"])
        matrix = matrix.reshape(k, r)
        return cls(
            matrix=matrix,
            class_names=[str(c) for c in data["class_names"]],
            roi_ids=[int(i) for i in data.get("roi_ids", range(r))],
            roi_names=[str(n) for n in data["roi_names"]],
            variant=str(data.get("variant", "absolute")),
            mass=np.asarray(data.get("mass", np.zeros(k)), dtype=np.float64),
            roi_voxels=np.asarray(data.get("roi_voxels", np.zeros(r)), dtype=np.int64),
            absent=[str(a) for a in data.get("absent", [])],
            zero_mass=[str(a) for a in data.get("zero_mass", [])],
        )


def _as_label_array(labels: np.ndarray) -> np.ndarray:
    """Integer label map; float maps (e.g. after a resampling) must hold whole numbers."""
    arr = np.asarray(labels)
    if np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool:
        return arr.astype(np.int64, copy=False)
    if not np.issubdtype(arr.dtype, np.floating):
        raise InvalidVolumeError(f"The RoI label map must hold integers, got dtype {arr.dtype}.")
    rounded = np.rint(arr)
    if not np.all(np.isfinite(arr)) or np.max(np.abs(arr - rounded), initial=0.0) > 1e-3:
        raise InvalidVolumeError(
            "The RoI label map holds non-integer values; it looks like an intensity image or a linearly resampled "
            "label map. Pass a label map (resample it with the 'nearest' interpolator)."
        )
    return rounded.astype(np.int64)


def default_roi_names(roi_ids: Sequence[int], names: "Mapping[int, str] | Sequence[str] | None" = None,
                      zero_name: str = "unlabelled") -> list[str]:
    """Names for RoI ids: from a mapping id → name, a list indexed by id, or ``roi_<id>`` (0 → ``zero_name``)."""
    out = []
    for rid in roi_ids:
        name = None
        if isinstance(names, Mapping):
            name = names.get(int(rid))
        elif names is not None and 0 <= int(rid) < len(names):
            name = names[int(rid)]
        if name is None:
            name = zero_name if int(rid) == 0 else f"roi_{int(rid)}"
        out.append(str(name))
    # Duplicate names would merge graph nodes silently; make them unique and say which id they come from.
    seen: dict[str, int] = {}
    for i, name in enumerate(out):
        if name in seen:
            out[i] = f"{name}_{int(roi_ids[i])}"
        seen[out[i]] = i
    return out


def _checked_inputs(attributions: np.ndarray, roi_labels: np.ndarray, class_names: Sequence[str], variant: str,
                    absent: Sequence[str]) -> tuple[np.ndarray, list[str], np.ndarray]:
    """``(attributions (K, D, H, W), class names, integer label map)`` after every check that names what is wrong."""
    if variant not in VARIANTS:
        raise ValueError(f"Unknown RoI importance variant {variant!r}; choose one of {', '.join(VARIANTS)}.")
    a = np.asarray(attributions)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4:
        raise InvalidVolumeError(f"attributions must have shape (K, D, H, W), got {a.shape}.")
    names = [str(c) for c in class_names]
    if len(names) != a.shape[0]:
        raise ValueError(f"{len(names)} class names given for {a.shape[0]} attribution maps.")
    unknown = [c for c in absent if c not in names]
    if unknown:
        raise UnknownClassError(f"Absent class(es) {unknown} are not among the explained classes {names}.")
    labels = _as_label_array(roi_labels)
    if labels.shape != a.shape[1:]:
        raise GeometryMismatchError(
            f"The RoI label map has shape {labels.shape} but the attributions were computed on a grid of shape "
            f"{a.shape[1:]}. Resample the RoI map onto the attribution grid with nearest-neighbour interpolation."
        )
    if not np.all(np.isfinite(a)):
        raise InvalidVolumeError("The attribution maps contain NaN or Inf values; the method failed numerically.")
    return a, names, labels


def _row_shares(flat: np.ndarray, column: np.ndarray, voxels: np.ndarray, variant: str) -> tuple[np.ndarray, np.ndarray]:
    """``(matrix, mass)``: each class's share of attribution mass per RoI column (per-voxel mean for ``mean``)."""
    n_roi = len(voxels)
    matrix = np.zeros((flat.shape[0], n_roi))
    mass = np.zeros(flat.shape[0])
    for k in range(flat.shape[0]):
        row = flat[k]
        if variant == "absolute":
            weights = np.abs(row)
        elif variant == "positive":
            weights = np.clip(row, 0.0, None)
        elif variant == "negative":
            weights = np.clip(-row, 0.0, None)
        else:
            weights = row
        sums = np.bincount(column, weights=weights, minlength=n_roi)
        mass[k] = float(np.abs(weights).sum()) if variant == "mean" else float(weights.sum())
        if variant == "mean":
            matrix[k] = np.divide(sums, voxels, out=np.zeros(n_roi), where=voxels > 0)
        elif mass[k] > 0:
            matrix[k] = sums / mass[k]
    return matrix, mass


def roi_importance(
    attributions: np.ndarray,
    roi_labels: np.ndarray,
    class_names: Sequence[str],
    *,
    variant: str = "absolute",
    roi_ids: Sequence[int] | None = None,
    roi_names: "Mapping[int, str] | Sequence[str] | None" = None,
    absent: Sequence[str] = (),
    zero_name: str = "unlabelled",
) -> RoIImportance:
    """Local RoI importance of ``attributions`` (K, D, H, W) over the label map ``roi_labels`` (D, H, W).

    Both must lie on the *same* voxel grid: attribution mass is measured where it was computed (resampling a
    heatmap changes voxel volumes and smears mass across RoI borders). ``roi_ids`` adds RoIs that may be missing
    from this scan (their column is 0) so that matrices of a cohort share columns; ids found in the map but not
    listed are still added. ``absent`` names classes that the prediction lacks; their rows are set to 0.
    """
    a, names, labels = _checked_inputs(attributions, roi_labels, class_names, variant, absent)
    ids = np.unique(labels)
    if roi_ids is not None:
        ids = np.union1d(ids, np.asarray(list(roi_ids), dtype=np.int64))
    if 0 not in ids:  # the "outside every RoI" column exists even when empty, so rows always sum to 1
        ids = np.union1d(ids, [0])
    column = np.searchsorted(ids, labels.ravel())
    voxels = np.bincount(column, minlength=len(ids)).astype(np.int64)
    matrix, mass = _row_shares(a.reshape(a.shape[0], -1).astype(np.float64, copy=False), column, voxels, variant)
    absent_set = set(absent)
    for k, name in enumerate(names):
        if name in absent_set:
            matrix[k] = 0.0
    zero_mass = [name for k, name in enumerate(names) if mass[k] == 0 and name not in absent_set]
    return RoIImportance(
        matrix=matrix,
        class_names=names,
        roi_ids=[int(i) for i in ids],
        roi_names=default_roi_names(ids, roi_names, zero_name),
        variant=variant,
        mass=mass,
        roi_voxels=voxels,
        absent=[n for n in names if n in absent_set],
        zero_mass=zero_mass,
    )


def context_ratios(importance: RoIImportance, class_to_roi: Mapping[str, str] | None = None) -> dict[str, float]:
    """Share of each class's attribution mass inside its own segment (the paper's *context ratio*, inverted:
    1 means the model looks only at the structure itself, 0 means only at its context).

    ``class_to_roi`` maps a class to the RoI holding its own segment; by default the RoI of the same name (which
    is what the predicted-segment RoIs are called). Absent or zero-mass classes get 0.0 and stay listed in
    ``importance.absent`` / ``zero_mass``.
    """
    if importance.variant not in MASS_VARIANTS:
        raise ValueError("Context ratios are defined for the mass variants (absolute, positive, negative), not 'mean'.")
    out: dict[str, float] = {}
    for k, name in enumerate(importance.class_names):
        roi = (class_to_roi or {}).get(name, name)
        if roi not in importance.roi_names:
            raise UnknownClassError(
                f"Class {name!r} has no RoI named {roi!r}; RoIs are {', '.join(importance.roi_names)}. Pass "
                "class_to_roi, or compute context ratios against the predicted segments."
            )
        out[name] = float(importance.matrix[k, importance.roi_names.index(roi)])
    return out
