"""Model configuration: what the network is, what its outputs mean and how its input must be prepared.

It travels as a small JSON next to the weights (``<weights>.json`` or ``model.json`` in the same folder), or is
read from a MONAI bundle's ``configs/metadata.json`` / ``inference.json``, so that a weights file is never
interpreted with the wrong output names, voxel size or intensity scale. One dataclass serves every model kind;
``kind`` says which fields are required (label names for segmentation/classification, target names for
regression), because a JSON that silently lacks them would give unlabelled or mislabelled results.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import ModelConfigError

SUPPORTED_MODALITIES = ("CT", "MRI")
MODEL_KINDS = ("segmentation", "regression", "image_to_image", "classifier")
OUTPUT_TYPES = ("logits", "probabilities")
#: Sliding-window ROI of a segmentation config that does not name one (the Agg2Exp Swin UNETR's).
DEFAULT_SEGMENTATION_ROI = (96, 96, 96)


@dataclass
class ModelConfig:
    """Everything needed to rebuild the network, feed it correctly and name its outputs."""

    #: Segmentation: one name per output channel (index = class id, 0 = background). Classifier: one per class.
    label_names: list[str] = field(default_factory=list)
    modality: str = "CT"
    #: "segmentation" | "regression" | "image_to_image" | "classifier".
    kind: str = "segmentation"
    #: A ``monai.networks.nets`` class name (e.g. "SwinUNETR", "UNet", "DenseNet121") or "package.module:callable".
    architecture: str = "SwinUNETR"
    #: Keyword arguments of the architecture (merged over the defaults derived from the fields below).
    network_kwargs: dict[str, Any] = field(default_factory=dict)
    in_channels: int = 1
    feature_size: int = 48
    depths: tuple[int, ...] = (2, 2, 2, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    use_v2: bool = False
    #: Voxel size (x, y, z) in mm the network expects (used by the "ct"/"mri" preprocessing presets).
    spacing: tuple[float, float, float] = (1.5, 1.5, 1.5)
    #: Axis codes (DICOM letters, as MONAI's Orientation) the network expects (used by the presets).
    orientation: str = "RAS"
    #: Order of the spatial tensor axes the network was trained with: "xyz" (MONAI's LoadImage, the default for
    #: user models) or "zyx" (numpy/SimpleITK array order, used by the shipped demo model).
    axis_order: str = "xyz"
    #: Sliding-window ROI; ``None`` runs the network on the whole preprocessed volume (classifiers, regressors,
    #: networks fed a fixed-size resize). Segmentation defaults to (96, 96, 96).
    roi_size: tuple[int, int, int] | None = None
    overlap: float = 0.25
    sw_batch_size: int = 1
    #: CT preset: HU window clipped and scaled to [0, 1]. MRI preset: foreground percentiles for robust scaling.
    intensity_range: tuple[float, float] = (-1024.0, 1024.0)
    mri_percentiles: tuple[float, float] = (0.5, 99.5)
    #: ``None`` = the preset of ``modality`` ("ct" / "mri"); a preset name; "package.module:callable"; or an
    #: ordered list of steps ``{"transform": <name>, <keyword arguments>...}`` (see models/preprocessing.py).
    preprocessing: list[dict[str, Any]] | str | None = None
    #: What the network returns for segmentation/classification: "logits" or "probabilities".
    output: str = "logits"
    #: Regression: one name (and unit) per output target.
    target_names: list[str] = field(default_factory=list)
    target_units: list[str] = field(default_factory=list)
    #: Image-to-image: one name per output channel (optional).
    channel_names: list[str] = field(default_factory=list)
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._normalise_fields()
        self._check_outputs()
        if self.roi_size is None and self.kind == "segmentation":
            self.roi_size = DEFAULT_SEGMENTATION_ROI
        if self.roi_size is not None:
            self.roi_size = tuple(int(r) for r in self.roi_size)  # type: ignore[assignment]
            if len(self.roi_size) != 3 or min(self.roi_size) < 1:
                raise ModelConfigError(f"roi_size must be 3 positive integers, got {self.roi_size}.")
        if not 0 <= self.overlap < 1:
            raise ModelConfigError(f"overlap must be in [0, 1), got {self.overlap}.")

    def _normalise_fields(self) -> None:
        self.kind = str(self.kind).lower()
        if self.kind not in MODEL_KINDS:
            raise ModelConfigError(f"Unknown model kind '{self.kind}'; use one of {MODEL_KINDS}.")
        self.modality = str(self.modality).upper()
        if self.modality == "MR":
            self.modality = "MRI"
        if self.modality not in SUPPORTED_MODALITIES:
            raise ModelConfigError(f"Unknown modality '{self.modality}'; use one of {SUPPORTED_MODALITIES}.")
        if self.axis_order not in ("xyz", "zyx"):
            raise ModelConfigError(f"axis_order must be 'xyz' or 'zyx', got '{self.axis_order}'.")
        if self.output not in OUTPUT_TYPES:
            raise ModelConfigError(f"output must be one of {OUTPUT_TYPES}, got '{self.output}'.")
        if not isinstance(self.network_kwargs, Mapping):
            raise ModelConfigError(f"network_kwargs must be a JSON object, got {type(self.network_kwargs).__name__}.")
        self.network_kwargs = dict(self.network_kwargs)
        for name in ("label_names", "target_names", "target_units", "channel_names"):
            setattr(self, name, [str(n) for n in getattr(self, name)])
        self.depths = tuple(int(d) for d in self.depths)
        self.num_heads = tuple(int(h) for h in self.num_heads)
        self.spacing = tuple(float(s) for s in self.spacing)  # type: ignore[assignment]
        self.intensity_range = tuple(float(v) for v in self.intensity_range)  # type: ignore[assignment]
        self.mri_percentiles = tuple(float(v) for v in self.mri_percentiles)  # type: ignore[assignment]

    def _check_outputs(self) -> None:
        """The names that give the output channels their meaning, as each kind needs them."""
        if self.kind in ("segmentation", "classifier"):
            what = "segmentation model needs at least 2 labels (background and one class)" \
                if self.kind == "segmentation" else "classifier needs at least 2 class names"
            if len(self.label_names) < 2:
                raise ModelConfigError(f"A {what}: set 'label_names' in the model JSON.")
            _unique(self.label_names, "Label names")
        if self.kind == "regression":
            if not self.target_names:
                raise ModelConfigError("A regression model needs 'target_names' (one per output value).")
            _unique(self.target_names, "Target names")
            if self.target_units and len(self.target_units) != len(self.target_names):
                raise ModelConfigError(f"target_units has {len(self.target_units)} entries but there are "
                                       f"{len(self.target_names)} targets; give one unit per target (\"\" if none).")
            self.target_units = self.target_units or [""] * len(self.target_names)
        if self.channel_names:
            _unique(self.channel_names, "Channel names")
        if self.kind in ("regression", "classifier") and self.roi_size is not None:
            raise ModelConfigError(f"A {self.kind} network sees the whole volume, so roi_size (a sliding window) does "
                                   "not apply; remove it and give the input size with a 'Resize' preprocessing step.")

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    @property
    def num_outputs(self) -> int | None:
        """Output channels (segmentation, image-to-image) or values (classifier, regression) the names promise."""
        if self.kind == "regression":
            return len(self.target_names)
        if self.kind == "image_to_image":
            return len(self.channel_names) or None
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
        if str(data.get("kind", "segmentation")) == "segmentation" and "label_names" not in data:
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
        if not isinstance(data, dict):
            raise ModelConfigError(f"'{p}' must hold a JSON object, got {type(data).__name__}.")
        return cls.from_dict(data)


def _unique(names: Sequence[str], what: str) -> None:
    if len(set(names)) != len(names):
        raise ModelConfigError(f"{what} must be unique, got {list(names)}.")


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
