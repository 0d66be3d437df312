"""The Explain section's method menu, read from the method registry (no method names are listed here).

The registry (:mod:`XAIExplainerLib.attribution.registry`) says for every method its label, description,
reference and options (type, default, range, choices, help); the Slicer module builds its combo box, option
widgets and tooltips from :func:`method_menu` and stores the chosen values per method in the parameter node as
JSON (:func:`decode_options` / :func:`encode_options`), so a reloaded scene keeps them.
"""
from __future__ import annotations

import json
from typing import Any, Mapping

__all__ = ["method_menu", "method_spec", "decode_options", "encode_options", "option_values", "method_cli_args",
           "option_tooltip"]


def method_menu(model_kind: str = "segmentation") -> list[Any]:
    """The registered methods for ``model_kind`` in registration order (``MethodSpec`` objects)."""
    import XAIExplainerLib.attribution  # noqa: F401  (fills the registry)
    from ..attribution.registry import available_methods

    return list(available_methods(model_kind))


def method_spec(name: str) -> Any:
    """The ``MethodSpec`` of ``name`` (UnknownMethodError listing the registered names otherwise)."""
    import XAIExplainerLib.attribution  # noqa: F401
    from ..attribution.registry import get_method

    return get_method(name)


def decode_options(text: str | None) -> dict[str, dict[str, Any]]:
    """``{method: {option: value}}`` from the parameter node's JSON (empty or unreadable text: nothing stored)."""
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def encode_options(options: Mapping[str, Mapping[str, Any]]) -> str:
    return json.dumps({m: dict(v) for m, v in options.items()}, sort_keys=True)


def option_values(spec: Any, stored: Mapping[str, Any] | None) -> dict[str, Any]:
    """The method's defaults overridden by the stored values that are still valid (others fall back silently
    to the default: a scene saved with an older option set must still open)."""
    values = spec.defaults()
    for option in spec.options:
        if option.allow_array or option.name not in (stored or {}):
            continue
        try:
            values[option.name] = option.validate(stored[option.name], spec.name)
        except ValueError:
            pass
    return values


def method_cli_args(spec: Any, values: Mapping[str, Any]) -> list[str]:
    """``--param name=value`` for every option that differs from its default (validated first)."""
    checked = spec.validate({k: v for k, v in values.items() if spec.option(k) is not None})
    args: list[str] = []
    for option in spec.options:
        value = checked[option.name]
        if option.allow_array or value == option.default:
            continue
        args += ["--param", f"{option.name}={json.dumps(value) if not isinstance(value, str) else value}"]
    return args


def option_tooltip(option: Any) -> str:
    """One line for a GUI tooltip: the option's help, allowed values and default."""
    return f"{option.help} (allowed: {option.allowed()}; default {option.default!r})"
