"""The one place that knows which attribution methods exist, what they are called and which options they take.

The CLI (``--method`` choices and option flags), the Slicer module (method menu, labels, tooltips, ranges), the
pipelines (``method=`` lookup and dispatch), the demo and the quality metrics all read this registry, so adding a
method is one file that calls :func:`register_method` at import — no list elsewhere to keep in step.

Why specs instead of signature sniffing: a spec says which keyword is user-facing (with range and help), which
plumbing the method accepts (device, batch size, progress, cancel, seed) and what extra input it needs from the
pipeline (e.g. ``label_map``, the clean prediction a pipeline already has), so a typo in an option is a clear
:class:`MethodParameterError` naming the allowed range instead of a ``TypeError`` deep inside a method.
This module imports no torch: the Slicer GUI reads it at start. The built-in methods are registered by the
package's ``__init__`` (Python runs it before this module is imported), so the registry is never seen empty and
needs no import back up into the package.
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from ..errors import MethodParameterError, UnknownMethodError

#: Model kinds a method can declare (the adapters of :mod:`XAIExplainerLib.models`).
MODEL_KINDS = ("segmentation", "regression", "image_to_image", "classifier")
#: Pipeline-supplied keywords every registered method accepts unless its spec says otherwise.
DEFAULT_PLUMBING = ("device", "batch_size", "progress", "cancel")
#: Extra inputs a pipeline knows how to supply when a spec lists them in ``needs``.
KNOWN_NEEDS = ("label_map",)
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclass(frozen=True)
class OptionSpec:
    """One user-facing keyword option of a method: type, default, allowed values and how GUIs/CLIs show it."""

    name: str
    type: type
    default: Any
    help: str
    label: str = ""
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    choices: tuple | None = None
    cli_flag: str | None = None
    #: also accept a tensor/array for this option (e.g. a baseline volume); it is passed through unchecked
    allow_array: bool = False

    @property
    def flag(self) -> str:
        """The command-line flag: ``cli_flag`` or ``--`` + the name with dashes."""
        return self.cli_flag or "--" + self.name.replace("_", "-")

    @property
    def display_label(self) -> str:
        return self.label or self.name.replace("_", " ").capitalize()

    def allowed(self) -> str:
        """The allowed values in words, for error messages, ``--help`` and tooltips."""
        if self.choices is not None:
            return "one of " + ", ".join(str(c) for c in self.choices)
        kind = {int: "an integer", float: "a number", bool: "true or false", str: "text"}.get(self.type, "a value")
        bounds = []
        if self.minimum is not None:
            bounds.append(f"{'>' if self.exclusive_minimum else '>='} {self.minimum:g}")
        if self.maximum is not None:
            bounds.append(f"<= {self.maximum:g}")
        return kind + (" " + " and ".join(bounds) if bounds else "")

    def _reject(self, value: Any, method: str) -> MethodParameterError:
        where = f"{method}: " if method else ""
        return MethodParameterError(
            f"{where}option '{self.name}' got {value!r}; allowed: {self.allowed()} (default {self.default!r})."
        )

    def _coerce(self, value: Any, method: str) -> Any:
        """``value`` as ``self.type`` (numbers from strings too, as the CLI and GUIs send text)."""
        if self.type is bool:
            if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
                return bool(value)
            text = str(value).strip().lower()
            if text in _TRUE or text in _FALSE:
                return text in _TRUE
            raise self._reject(value, method)
        if isinstance(value, bool):  # True is an int to Python, never a sample count to a user
            raise self._reject(value, method)
        if self.type is int:
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise self._reject(value, method) from None
            if not math.isfinite(number) or number != int(number):
                raise self._reject(value, method)
            return int(number)
        if self.type is float:
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise self._reject(value, method) from None
            if not math.isfinite(number):
                raise self._reject(value, method)
            return number
        if self.type is str and isinstance(value, str):
            return value
        raise self._reject(value, method)

    def validate(self, value: Any, method: str = "") -> Any:
        """The coerced value; a :class:`MethodParameterError` naming option, value and allowed range otherwise."""
        if value is None and self.default is None:
            return None
        if self.allow_array and hasattr(value, "shape") and len(getattr(value, "shape", ())) > 0:
            return value
        value = self._coerce(value, method)
        if self.choices is not None and value not in self.choices:
            raise self._reject(value, method)
        if self.minimum is not None:
            if value < self.minimum or (self.exclusive_minimum and value == self.minimum):
                raise self._reject(value, method)
        if self.maximum is not None and value > self.maximum:
            raise self._reject(value, method)
        return value


@dataclass(frozen=True)
class MethodSpec:
    """An attribution method: ``function(model, x, target, **options, **plumbing) -> AttributionResult``.

    ``plumbing`` lists the pipeline keywords the function accepts (``seed`` is added for non-deterministic
    methods); ``needs`` lists extra inputs a pipeline supplies (``"label_map"``: the clean prediction's label map).
    ``accepts_any_options`` is for unregistered callables wrapped on the fly: their options cannot be checked.
    """

    name: str
    label: str
    description: str
    reference: str
    function: Callable[..., Any]
    model_kinds: tuple[str, ...]
    options: tuple[OptionSpec, ...]
    deterministic: bool
    plumbing: tuple[str, ...] = DEFAULT_PLUMBING
    needs: tuple[str, ...] = ()
    accepts_any_options: bool = False

    def defaults(self) -> dict[str, Any]:
        return {o.name: o.default for o in self.options}

    def option(self, name: str) -> OptionSpec | None:
        return next((o for o in self.options if o.name == name), None)

    def option_for_flag(self, flag: str) -> OptionSpec | None:
        """The option a command-line flag (e.g. the shared ``--samples``) sets for this method, if any."""
        return next((o for o in self.options if o.flag == flag), None)

    def accepted_plumbing(self) -> frozenset[str]:
        extra = () if self.deterministic else ("seed",)
        return frozenset(self.plumbing) | frozenset(extra) | frozenset(self.needs)

    def validate(self, params: Mapping[str, Any] | None) -> dict[str, Any]:
        """Defaults overridden by ``params``, every value checked; unknown keys raise :class:`MethodParameterError`."""
        params = dict(params or {})
        if self.accepts_any_options:
            return params
        unknown = [k for k in params if self.option(k) is None]
        if unknown:
            offered = ", ".join(f"{o.name} ({o.allowed()})" for o in self.options) or "none"
            raise MethodParameterError(
                f"{self.name} does not take option(s) {', '.join(map(str, unknown))}; its options are: {offered}."
            )
        return {o.name: o.validate(params[o.name], self.name) if o.name in params else o.default
                for o in self.options}

    @classmethod
    def from_callable(cls, function: Callable[..., Any]) -> "MethodSpec":
        """An ad-hoc spec for an unregistered method function (its options are passed through unchecked)."""
        try:
            accepted = inspect.signature(function).parameters
            takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
        except (TypeError, ValueError):
            accepted, takes_any = {}, True
        plumbing = tuple(k for k in DEFAULT_PLUMBING + ("seed",) if takes_any or k in accepted)
        name = getattr(function, "__name__", "custom")
        return cls(name=name, label=name, description=(function.__doc__ or "").strip().split("\n")[0],
                   reference="", function=function, model_kinds=MODEL_KINDS, options=(),
                   deterministic="seed" not in plumbing, plumbing=plumbing, accepts_any_options=True)


_REGISTRY: dict[str, MethodSpec] = {}


def _check_spec(spec: MethodSpec) -> None:
    """Reject a spec whose own declaration is inconsistent (at registration, not when a user runs it)."""
    if not isinstance(spec, MethodSpec):
        raise MethodParameterError(f"register_method needs a MethodSpec, got {type(spec).__name__}.")
    if not spec.name.isidentifier():
        raise MethodParameterError(f"method name {spec.name!r} must be a Python identifier (e.g. 'my_method').")
    if not callable(spec.function):
        raise MethodParameterError(f"{spec.name}: function must be callable.")
    bad_kinds = [k for k in spec.model_kinds if k not in MODEL_KINDS]
    if not spec.model_kinds or bad_kinds:
        raise MethodParameterError(f"{spec.name}: model_kinds must be among {', '.join(MODEL_KINDS)}, got "
                                   f"{spec.model_kinds!r}.")
    unknown_needs = [n for n in spec.needs if n not in KNOWN_NEEDS]
    if unknown_needs:
        raise MethodParameterError(f"{spec.name}: needs {unknown_needs} unknown; pipelines supply {KNOWN_NEEDS}.")
    names = [o.name for o in spec.options]
    flags = [o.flag for o in spec.options]
    if len(set(names)) != len(names) or len(set(flags)) != len(flags):
        raise MethodParameterError(f"{spec.name}: option names and command-line flags must be unique.")
    for option in spec.options:
        if option.type not in (int, float, str, bool) or not option.flag.startswith("--"):
            raise MethodParameterError(f"{spec.name}.{option.name}: type must be int, float, str or bool and the "
                                       "flag must start with '--'.")
        option.validate(option.default, spec.name)  # the default itself must be allowed


def register_method(spec: MethodSpec, *, replace: bool = False) -> MethodSpec:
    """Add ``spec`` to the registry (after checking it); ``replace=True`` overwrites a method of the same name."""
    _check_spec(spec)
    if spec.name in _REGISTRY and not replace:
        raise MethodParameterError(f"a method named {spec.name!r} is already registered; pass replace=True.")
    _REGISTRY[spec.name] = spec
    return spec


def unregister_method(name: str) -> None:
    """Remove a method (tests, plug-ins being unloaded); unknown names raise :class:`UnknownMethodError`."""
    get_method(name)
    del _REGISTRY[name]


def get_method(name_or_callable: "str | Callable | MethodSpec") -> MethodSpec:
    """The spec of a registered name, of a registered function, or an ad-hoc spec of any other callable."""
    if isinstance(name_or_callable, MethodSpec):
        return name_or_callable
    if callable(name_or_callable):
        for spec in _REGISTRY.values():
            if spec.function is name_or_callable:
                return spec
        return MethodSpec.from_callable(name_or_callable)
    try:
        return _REGISTRY[str(name_or_callable)]
    except KeyError:
        raise UnknownMethodError(
            f"Unknown attribution method {name_or_callable!r}; choose one of {', '.join(_REGISTRY)}."
        ) from None


def available_methods(model_kind: str | None = None) -> list[MethodSpec]:
    """Registered methods (registration order), only those applying to ``model_kind`` when given."""
    if model_kind is not None and model_kind not in MODEL_KINDS:
        raise UnknownMethodError(f"Unknown model kind {model_kind!r}; choose one of {', '.join(MODEL_KINDS)}.")
    return [s for s in _REGISTRY.values() if model_kind is None or model_kind in s.model_kinds]


def call_method(spec: "MethodSpec | str | Callable", model: Any, x: Any, target: Any,
                params: Mapping[str, Any] | None = None, **plumbing: Any) -> Any:
    """Run a method with the user's ``params`` (validated, defaults filled) and the pipeline's ``plumbing``.

    Plumbing the method does not declare (a deterministic method has no ``seed``; only a method that ``needs`` a
    ``label_map`` gets one) is dropped, so a pipeline can offer everything it has.
    """
    spec = get_method(spec)
    options = spec.validate(params)
    accepted = spec.accepted_plumbing()
    extra = {k: v for k, v in plumbing.items() if k in accepted}
    return spec.function(model, x, target, **options, **extra)


class MethodFunctions(Mapping):
    """Read-only live view ``name -> function`` of the registry (the old ``ATTRIBUTION_METHODS`` dict)."""

    def __getitem__(self, name: str) -> Callable[..., Any]:
        if name not in _REGISTRY:
            raise KeyError(name)
        return _REGISTRY[name].function

    def __iter__(self) -> Iterator[str]:
        return iter(list(_REGISTRY))

    def __len__(self) -> int:
        return len(_REGISTRY)

    def __repr__(self) -> str:
        return f"MethodFunctions({', '.join(_REGISTRY)})"


__all__ = [
    "DEFAULT_PLUMBING", "MODEL_KINDS", "MethodFunctions", "MethodSpec", "OptionSpec", "available_methods",
    "call_method", "get_method", "register_method", "unregister_method",
]
