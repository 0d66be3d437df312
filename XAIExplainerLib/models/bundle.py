"""A MONAI bundle's own preprocessing, translated from its dictionary transforms to XAIExplainer steps.

A bundle's ``inference.json`` lists the transforms it was validated with (``Orientationd``, ``Spacingd``,
``ScaleIntensityRanged``...). Running exactly those keeps the explained network in distribution; guessing them
from the modality does not. Dictionary transforms become their array counterparts without the dictionary plumbing
(``keys``, ``meta_keys``...); loading, channel and type handling are done by XAIExplainer itself. A bundle whose
transforms use config expressions (``@``/``$`` references) or transforms without an array twin cannot be
translated faithfully: :func:`bundle_preprocessing` then returns ``None`` and the caller falls back to the preset.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

#: Steps XAIExplainer performs itself (reading, channel-first layout, dtype, device).
HANDLED_BY_XAIEXPLAINER = {"LoadImage", "EnsureChannelFirst", "AddChannel", "EnsureType", "ToTensor", "ToDevice",
                           "CastToType", "Identity", "CopyItems", "SaveImage", "ToNumpy", "DeleteItems"}
#: Keyword arguments that only address dictionary entries.
DICTIONARY_ARGUMENTS = {"keys", "allow_missing_keys", "meta_keys", "meta_key_postfix", "overwriting", "source_key",
                        "image_key", "label_key", "new_key_prefix", "_target_", "_requires_", "_disabled_"}


def bundle_preprocessing(inference: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The bundle's preprocessing as a step list, or ``None`` when it cannot be translated faithfully."""
    transforms = _transform_list(inference.get("preprocessing"))
    if transforms is None:
        return None
    steps = []
    for transform in transforms:
        step = _array_step(transform)
        if step is False:
            return None
        if step is not None:
            steps.append(step)
    return steps or None


def _transform_list(node: Any) -> Sequence[Any] | None:
    if isinstance(node, Mapping) and isinstance(node.get("transforms"), list):
        return node["transforms"]
    return node if isinstance(node, list) else None


def _array_step(transform: Any) -> dict[str, Any] | None | bool:
    """One dictionary transform → an array step; ``None`` to drop it; ``False`` when it cannot be translated."""
    import monai.transforms as transforms

    if not isinstance(transform, Mapping) or not isinstance(transform.get("_target_"), str):
        return False
    name = transform["_target_"].rsplit(".", 1)[-1]
    array_name = name[:-1] if name.endswith("d") else name
    if array_name in HANDLED_BY_XAIEXPLAINER:
        return None
    if not isinstance(getattr(transforms, array_name, None), type) or array_name.startswith("Rand"):
        return False
    arguments = {k: v for k, v in transform.items() if k not in DICTIONARY_ARGUMENTS}
    if any(_is_expression(v) for v in arguments.values()):
        return False
    return {"transform": array_name, **{k: _first_key_value(v, transform) for k, v in arguments.items()}}


def _is_expression(value: Any) -> bool:
    if isinstance(value, str):
        return value.startswith(("@", "$", "%"))
    if isinstance(value, (list, tuple)):
        return any(_is_expression(v) for v in value)
    if isinstance(value, Mapping):
        return any(_is_expression(v) for v in value.values())
    return False


def _first_key_value(value: Any, transform: Mapping[str, Any]) -> Any:
    """Per-key argument lists (``mode: ["bilinear", "nearest"]`` for image and label) → the image's entry."""
    keys = transform.get("keys")
    if isinstance(keys, list) and len(keys) > 1 and isinstance(value, list) and len(value) == len(keys):
        index = keys.index("image") if "image" in keys else 0
        return value[index]
    return value
