"""Preprocessing as configuration: an ordered list of named steps, as the network was trained.

A step is ``{"transform": <name>, <keyword arguments>}``. The name is, in this order,

* one of XAIExplainer's geometry-exact steps (:data:`BUILTIN_STEPS`: ``Orient``, ``ResampleToSpacing``,
  ``ForegroundPercentileScale``), which resample in physical (LPS) space with SimpleITK;
* any MONAI *array* transform (``monai.transforms.<name>``: ``Orientation``, ``Spacing``, ``Resize``,
  ``ScaleIntensityRange``, ``ScaleIntensityRangePercentiles``, ``NormalizeIntensity``, ``SpatialPad``, ...).
  It runs on a ``MetaTensor`` carrying the volume's affine, so geometric transforms move the geometry with the
  voxels (a fixed-size ``Resize`` changes the spacing) and results map back onto the input grid correctly;
* ``"package.module:callable"``, called as ``fn(volume, **kwargs)`` and returning a Volume (or an array on the
  same grid): the escape hatch for preprocessing nothing above expresses.

The CT and MRI presets are two such lists built from the config's fields; they reproduce the preprocessing of
earlier versions exactly (orient, resample, then clip+scale Hounsfield units or scale between foreground
percentiles). Every step returns a new Volume: the user's input is never modified.
"""
from __future__ import annotations

import difflib
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import ModelConfigError
from ..volume import Volume, ensure_finite, reorient, resample_to_spacing
from .config import ModelConfig

Step = Mapping[str, Any]
PRESETS = ("ct", "mri")


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


# ---- XAIExplainer's own steps ---------------------------------------------------------------------------------
def _orient(volume: Volume, axcodes: str = "RAS") -> Volume:
    return reorient(volume, axcodes)


def _resample_to_spacing(volume: Volume, pixdim: Sequence[float], mode: str = "linear") -> Volume:
    """Same physical extent, new voxel size; outside voxels take the volume's minimum (air, not zero HU)."""
    return resample_to_spacing(volume, pixdim, mode, default_value=float(volume.array.min()))


def _clip_scale(volume: Volume, a_min: float, a_max: float) -> Volume:
    return volume.with_array(normalise_ct(volume.array, (a_min, a_max)))


def _foreground_percentile_scale(volume: Volume, lower: float = 0.5, upper: float = 99.5) -> Volume:
    return volume.with_array(normalise_mri(volume.array, (lower, upper)))


BUILTIN_STEPS: dict[str, Callable[..., Volume]] = {
    "Orient": _orient,
    "ResampleToSpacing": _resample_to_spacing,
    "ClipScaleIntensity": _clip_scale,
    "ForegroundPercentileScale": _foreground_percentile_scale,
}


def preset_steps(name: str, config: ModelConfig) -> list[dict[str, Any]]:
    """The "ct" / "mri" preset as a step list, filled from the config's orientation, spacing and intensities."""
    geometry = [{"transform": "Orient", "axcodes": config.orientation},
                {"transform": "ResampleToSpacing", "pixdim": list(config.spacing), "mode": "linear"}]
    if name.lower() == "ct":
        lo, hi = config.intensity_range
        return geometry + [{"transform": "ClipScaleIntensity", "a_min": lo, "a_max": hi}]
    if name.lower() in ("mri", "mr"):
        lo, hi = config.mri_percentiles
        return geometry + [{"transform": "ForegroundPercentileScale", "lower": lo, "upper": hi}]
    raise ModelConfigError(f"Unknown preprocessing preset '{name}'; use one of {PRESETS}, a step list or "
                           "'package.module:callable'.")


def preprocessing_steps(config: ModelConfig) -> list[dict[str, Any]]:
    """The config's preprocessing as an explicit step list (what runs, and what provenance records)."""
    spec = config.preprocessing
    if spec is None:
        return preset_steps(config.modality, config)
    if isinstance(spec, str):
        return [{"transform": spec}] if ":" in spec else preset_steps(spec, config)
    if not isinstance(spec, Sequence):
        raise ModelConfigError(f"preprocessing must be a preset name, 'module:callable' or a list of steps, "
                               f"got {type(spec).__name__}.")
    steps = []
    for i, step in enumerate(spec):
        if not isinstance(step, Mapping) or not isinstance(step.get("transform"), str):
            raise ModelConfigError(f"preprocessing step {i} must be an object with a 'transform' name, got {step!r}.")
        steps.append(dict(step))
    return steps


def build_steps(steps: Sequence[Step]) -> list[tuple[str, Callable[[Volume], Volume]]]:
    """Resolve every step once (at model load), so a bad name or argument fails before any volume is read."""
    return [(str(step["transform"]), _build_step(step)) for step in steps]


def _build_step(step: Step) -> Callable[[Volume], Volume]:
    name = str(step["transform"])
    kwargs = {k: v for k, v in step.items() if k != "transform"}
    if name in BUILTIN_STEPS:
        function = BUILTIN_STEPS[name]
        _check_kwargs(name, function, kwargs)
        return lambda volume: function(volume, **kwargs)
    if ":" in name:
        from .network import import_callable

        function = import_callable(name, "preprocessing step")
        return lambda volume: _as_volume(function(volume, **kwargs), volume, name)
    return _monai_step(name, kwargs)


def _check_kwargs(name: str, function: Callable[..., Any], kwargs: Mapping[str, Any]) -> None:
    import inspect

    try:
        inspect.signature(function).bind(None, **kwargs)
    except TypeError as exc:
        allowed = [p for p in inspect.signature(function).parameters][1:]
        raise ModelConfigError(f"Preprocessing step '{name}': {exc}; it takes {allowed}.") from None


def _monai_step(name: str, kwargs: Mapping[str, Any]) -> Callable[[Volume], Volume]:
    import monai.transforms as transforms

    cls = getattr(transforms, name, None)
    if not isinstance(cls, type) or not issubclass(cls, transforms.Transform) or issubclass(cls, transforms.MapTransform):
        close = difflib.get_close_matches(name, [*BUILTIN_STEPS, *dir(transforms)], n=3)
        raise ModelConfigError(
            f"Unknown preprocessing transform '{name}': not one of {sorted(BUILTIN_STEPS)} nor a MONAI array "
            f"transform (dictionary transforms ending in 'd' are not used here).{' Did you mean ' + str(close) + '?' if close else ''}"
        )
    if issubclass(cls, transforms.Randomizable):
        raise ModelConfigError(f"Preprocessing transform '{name}' is random; inference preprocessing must be "
                               "deterministic (use its non-random counterpart).")
    try:
        transform = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ModelConfigError(f"MONAI transform '{name}' rejected its arguments {dict(kwargs)}: {exc}") from None
    return lambda volume: _run_monai(transform, volume, name)


# ---- Volume <-> MetaTensor ------------------------------------------------------------------------------------
def to_metatensor(volume: Volume):
    """(1, x, y, z) float32 MetaTensor with the RAS affine, as MONAI's LoadImage + EnsureChannelFirst give."""
    import torch
    from monai.data import MetaTensor

    array = np.ascontiguousarray(volume.array.astype(np.float32).transpose(2, 1, 0))[None]
    return MetaTensor(torch.from_numpy(array), affine=torch.as_tensor(volume.ijk_to_ras(), dtype=torch.float64))


def from_metatensor(data: Any, like: Volume, name: str = "") -> Volume:
    """Back to a Volume; the geometry comes from the MetaTensor's affine (after Orientation, Spacing, Resize...)."""
    import torch

    array = data.detach().cpu().numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
    if array.ndim != 4 or array.shape[0] != 1:
        raise ModelConfigError(f"Preprocessing step '{name}' returned shape {array.shape}; expected one channel "
                               "(1, x, y, z).")
    voxels = np.ascontiguousarray(array[0].transpose(2, 1, 0).astype(np.float32))
    affine = getattr(data, "affine", None)
    if affine is None:
        return _as_volume(voxels, like, name)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    direction = (lps[:3, :3] / spacing).reshape(-1)
    return Volume(voxels, tuple(spacing), tuple(lps[:3, 3]), tuple(direction), dict(like.metadata))


def _run_monai(transform: Any, volume: Volume, name: str) -> Volume:
    return from_metatensor(transform(to_metatensor(volume)), volume, name)


def _as_volume(result: Any, like: Volume, name: str) -> Volume:
    if isinstance(result, Volume):
        return result
    array = np.asarray(result)
    if array.shape != like.shape:
        raise ModelConfigError(f"Preprocessing step '{name}' returned an array of shape {array.shape} without "
                               f"geometry; return a Volume when the grid changes (input {like.shape}).")
    return like.with_array(array.astype(np.float32))


# ---- the pipeline ---------------------------------------------------------------------------------------------
def run_steps(volume: Volume, steps: Sequence[tuple[str, Callable[[Volume], Volume]]], modality: str) -> Volume:
    """Input volume → model space; the input is checked for NaN/Inf first and never modified."""
    ensure_finite(volume)
    current = volume.with_array(volume.array.astype(np.float32))
    for _, step in steps:
        current = step(current)
    return current.with_array(np.asarray(current.array, dtype=np.float32), space="model", modality=modality)


def preprocess(volume: Volume, config: ModelConfig) -> Volume:
    """Input volume → model space as ``config`` prescribes (its preset or its step list)."""
    return run_steps(volume, build_steps(preprocessing_steps(config)), config.modality)
