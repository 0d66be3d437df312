"""Coarse brain structures derived from the AAL atlas: the label table of the shipped demo model.

AAL's 116 regions are grouped into lobes per hemisphere, limbic structures, deep grey matter and the cerebellum
(AAL has no brainstem label). The grouping is by AAL region-name prefix, so it is transparent and testable.
"""
from __future__ import annotations

import numpy as np

#: Class id = index. 0 is background (everything outside the AAL cortex/subcortex labels).
STRUCTURE_NAMES: list[str] = [
    "background",
    "frontal_L", "frontal_R",
    "parietal_L", "parietal_R",
    "temporal_L", "temporal_R",
    "occipital_L", "occipital_R",
    "limbic_L", "limbic_R",
    "deep_grey_L", "deep_grey_R",
    "cerebellum",
]

_PREFIXES: dict[str, tuple[str, ...]] = {
    "frontal": ("Precentral", "Frontal_", "Rolandic_Oper", "Supp_Motor_Area", "Olfactory", "Rectus",
                "Paracentral_Lobule"),
    "parietal": ("Postcentral", "Parietal_", "SupraMarginal", "Angular", "Precuneus"),
    "temporal": ("Heschl", "Temporal_", "Fusiform"),
    "occipital": ("Calcarine", "Cuneus", "Lingual", "Occipital_"),
    "limbic": ("Insula", "Cingulum_", "Hippocampus", "ParaHippocampal", "Amygdala"),
    "deep_grey": ("Caudate", "Putamen", "Pallidum", "Thalamus"),
}


def structure_of(aal_name: str) -> str:
    """Name of the coarse structure an AAL region belongs to (e.g. 'Frontal_Sup_L' → 'frontal_L')."""
    if aal_name.startswith(("Cerebelum_", "Vermis_")):
        return "cerebellum"
    side = aal_name.rsplit("_", 1)[-1]
    if side not in ("L", "R"):
        raise ValueError(f"AAL region '{aal_name}' has no hemisphere suffix and is not cerebellar.")
    for group, prefixes in _PREFIXES.items():
        if aal_name.startswith(prefixes):
            return f"{group}_{side}"
    raise ValueError(f"AAL region '{aal_name}' is not assigned to a structure.")


def aal_to_structure_lookup(aal_names: dict[int, str]) -> np.ndarray:
    """Lookup table ``lut[aal_label] = structure id`` for every AAL label (0 stays background)."""
    lut = np.zeros(max(aal_names) + 1, dtype=np.uint8)
    for label, name in aal_names.items():
        lut[label] = STRUCTURE_NAMES.index(structure_of(name))
    return lut


def structures_from_aal(aal_labels: np.ndarray, aal_names: dict[int, str]) -> np.ndarray:
    """Map an AAL label array to structure ids (same shape, uint8)."""
    lut = aal_to_structure_lookup(aal_names)
    labels = np.asarray(aal_labels)
    if labels.max() >= lut.size:
        raise ValueError(f"Label {int(labels.max())} is not in the AAL table (max {lut.size - 1}).")
    return lut[labels]
