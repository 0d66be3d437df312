"""Model configuration: the architecture, its label table and the preprocessing it was trained with.

It travels as a small JSON next to the weights (``<weights>.json`` or ``model.json`` in the same folder), or is
read from a MONAI bundle's ``configs/metadata.json`` / ``inference.json``, so that a weights file is never
interpreted with the wrong label names or voxel size.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import ModelConfigError

SUPPORTED_MODALITIES = ("CT", "MRI")


@dataclass
class ModelConfig:
    """Everything needed to rebuild the network and feed it correctly."""

    label_names: list[str]
    modality: str = "CT"
    architecture: str = "SwinUNETR"
    in_channels: int = 1
    feature_size: int = 48
    depths: tuple[int, ...] = (2, 2, 2, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    use_v2: bool = False
    #: Voxel size (x, y, z) in mm the network expects; inputs are resampled to it.
    spacing: tuple[float, float, float] = (1.5, 1.5, 1.5)
    #: Axis codes (DICOM letters, as MONAI's Orientation) the network expects.
    orientation: str = "RAS"
    #: Order of the spatial tensor axes the network was trained with: "xyz" (MONAI's LoadImage, the default for
    #: user models) or "zyx" (numpy/SimpleITK array order, used by the shipped demo model).
    axis_order: str = "xyz"
    roi_size: tuple[int, int, int] = (96, 96, 96)
    overlap: float = 0.25
    sw_batch_size: int = 1
    #: CT: HU window clipped and scaled to [0, 1]. MRI: percentiles of the foreground used for robust scaling.
    intensity_range: tuple[float, float] = (-1024.0, 1024.0)
    mri_percentiles: tuple[float, float] = (0.5, 99.5)
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.label_names = [str(n) for n in self.label_names]
        if len(self.label_names) < 2:
            raise ModelConfigError("A segmentation model needs at least 2 labels (background and one class).")
        if len(set(self.label_names)) != len(self.label_names):
            raise ModelConfigError(f"Label names must be unique, got {self.label_names}.")
        self.modality = str(self.modality).upper()
        if self.modality == "MR":
            self.modality = "MRI"
        if self.modality not in SUPPORTED_MODALITIES:
            raise ModelConfigError(f"Unknown modality '{self.modality}'; use one of {SUPPORTED_MODALITIES}.")
        if self.axis_order not in ("xyz", "zyx"):
            raise ModelConfigError(f"axis_order must be 'xyz' or 'zyx', got '{self.axis_order}'.")
        self.depths = tuple(int(d) for d in self.depths)
        self.num_heads = tuple(int(h) for h in self.num_heads)
        self.spacing = tuple(float(s) for s in self.spacing)  # type: ignore[assignment]
        self.roi_size = tuple(int(r) for r in self.roi_size)  # type: ignore[assignment]
        self.intensity_range = tuple(float(v) for v in self.intensity_range)  # type: ignore[assignment]
        self.mri_percentiles = tuple(float(v) for v in self.mri_percentiles)  # type: ignore[assignment]
        if len(self.roi_size) != 3 or any(r % 32 for r in self.roi_size):
            raise ModelConfigError(f"roi_size must be 3 multiples of 32 for SwinUNETR, got {self.roi_size}.")
        if not 0 <= self.overlap < 1:
            raise ModelConfigError(f"overlap must be in [0, 1), got {self.overlap}.")

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    # ---- (de)serialisation ----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelConfigError(f"Unknown model configuration key(s) {unknown}; known keys: {sorted(known)}.")
        if "label_names" not in data:
            raise ModelConfigError("The model configuration must list 'label_names' (index = class id, 0 = background).")
        return cls(**dict(data))

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return p

    @classmethod
    def load(cls, path: str | Path) -> "ModelConfig":
        p = Path(path)
        try:
            data = json.loads(p.read_text())
        except FileNotFoundError:
            raise ModelConfigError(f"No model configuration at '{p}'.") from None
        except json.JSONDecodeError as exc:
            raise ModelConfigError(f"'{p}' is not valid JSON ({exc}).") from None
        return cls.from_dict(data)


def config_path_for(weights: Path) -> Path | None:
    """The JSON that describes ``weights``: ``<name>.json`` beside it, else ``model.json`` in its folder."""
    candidates: Sequence[Path] = (
        weights.with_name(weights.name.split(".")[0] + ".json"),
        weights.parent / "model.json",
    )
    for candidate in candidates:
        if candidate.is_file() and candidate != weights:
            return candidate
    return None
