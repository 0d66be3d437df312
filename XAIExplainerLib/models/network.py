"""Build the network that a :class:`ModelConfig` names: any ``monai.networks.nets`` class, or a user callable.

A state dict carries no architecture, so the JSON names one: a MONAI class by name with its keyword arguments,
or ``"package.module:callable"`` for a network the user wrote. Every way this can go wrong (unknown name, a
keyword the class does not take, an import that fails) is reported with what would have been accepted.
"""
from __future__ import annotations

import difflib
import importlib
import inspect
from typing import Any, Callable

from ..errors import ModelConfigError
from .config import ModelConfig


def build_network(config: ModelConfig):
    """The configured network, freshly initialised (weights are loaded afterwards)."""
    factory = resolve_architecture(config.architecture)
    kwargs = network_kwargs(config, factory)
    try:
        return factory(**kwargs)
    except TypeError as exc:
        raise ModelConfigError(
            f"Architecture '{config.architecture}' rejected its arguments {sorted(kwargs)}: {exc}. "
            f"It accepts: {_parameter_names(factory)}. Fix 'network_kwargs' in the model JSON."
        ) from None
    except (ValueError, AssertionError) as exc:
        raise ModelConfigError(f"Architecture '{config.architecture}' could not be built from {kwargs}: {exc}") from None


def resolve_architecture(name: str) -> Callable[..., Any]:
    """A ``monai.networks.nets`` class by name, or the object ``package.module:callable`` points to."""
    if not name:
        raise ModelConfigError("The model JSON names no 'architecture'; give a monai.networks.nets class name or "
                               "'package.module:callable'.")
    if ":" in name:
        return import_callable(name, "architecture")
    from monai.networks import nets

    factory = getattr(nets, name, None)
    if not inspect.isclass(factory):
        names = [n for n in dir(nets) if inspect.isclass(getattr(nets, n)) and not n.startswith("_")]
        close = difflib.get_close_matches(name, names, n=3)
        hint = f" Did you mean {close}?" if close else ""
        raise ModelConfigError(
            f"Unknown architecture '{name}': it is no class of monai.networks.nets.{hint} Use a MONAI network name "
            "(e.g. 'UNet', 'SwinUNETR', 'DenseNet121') or 'package.module:callable' for your own network."
        )
    return factory


def import_callable(reference: str, what: str) -> Callable[..., Any]:
    """Import ``package.module:attribute`` (the escape hatch for architectures and preprocessing steps)."""
    module_name, _, attribute = reference.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelConfigError(f"The {what} '{reference}' cannot be imported: {exc}.") from None
    target: Any = module
    for part in attribute.split("."):
        target = getattr(target, part, None)
    if not callable(target):
        raise ModelConfigError(f"The {what} '{reference}': module '{module_name}' has no callable '{attribute}'.")
    return target


def network_kwargs(config: ModelConfig, factory: Callable[..., Any]) -> dict[str, Any]:
    """Keyword arguments: the config's sizes where the architecture takes them, overridden by ``network_kwargs``.

    ``out_channels`` / ``num_classes`` are derived from the output names, so a JSON whose names and channels
    disagree fails here, before any weights are read.
    """
    accepted = _parameter_names(factory)
    derived: dict[str, Any] = {"spatial_dims": 3, "in_channels": config.in_channels}
    if config.num_outputs is not None:
        derived.update(out_channels=config.num_outputs, num_classes=config.num_outputs)
    if config.architecture == "SwinUNETR":
        derived.update(feature_size=config.feature_size, depths=config.depths, num_heads=config.num_heads,
                       use_v2=config.use_v2)
        if "img_size" in accepted:  # only older MONAI versions need it
            derived["img_size"] = config.roi_size
        _check_swin_roi(config)
    kwargs = {k: v for k, v in derived.items() if k in accepted}
    kwargs.update(config.network_kwargs)
    _check_output_count(config, kwargs)
    return kwargs


def _check_swin_roi(config: ModelConfig) -> None:
    if config.roi_size is None or any(r % 32 for r in config.roi_size):
        raise ModelConfigError(f"roi_size must be 3 multiples of 32 for SwinUNETR, got {config.roi_size}.")


def _check_output_count(config: ModelConfig, kwargs: dict[str, Any]) -> None:
    expected = config.num_outputs
    for key in ("out_channels", "num_classes"):
        if expected is not None and key in config.network_kwargs and int(kwargs[key]) != expected:
            names = {"regression": "target_names"}.get(config.kind, "label_names")
            names = "channel_names" if config.kind == "image_to_image" else names
            raise ModelConfigError(
                f"network_kwargs.{key} = {kwargs[key]} but the model JSON names {expected} outputs in '{names}'; "
                "give one name per output channel."
            )


def _parameter_names(factory: Callable[..., Any]) -> list[str]:
    try:
        target = factory.__init__ if inspect.isclass(factory) else factory
        return [p for p in inspect.signature(target).parameters if p not in ("self", "args", "kwargs")]
    except (TypeError, ValueError):
        return []
