"""Targets: what an attribution explains, as a function ``model output -> (B, K) scores``.

Every target follows the :class:`Target` protocol (``names``, ``num_targets``, ``absent``, ``__call__``,
``describe``), so every method explains K scores from one set of model evaluations whatever the model kind.
:class:`ClassAggregate` (segmentation, Agg2Exp), :class:`RegressionScore` (regression: higher, lower or closeness
to a reference value) and :class:`OutputMask` (image-to-image or segmentation: the output summed inside a mask).
Targets that are a voxel-weighted sum of output channels (:class:`VoxelWeighted`) can also be explained
window by window.

Segmentation (Agg2Exp):

Agg2Exp explains a segmentation network through the *class-aggregated* model

    f̂_c(x) = Σ_{v : argmax_k F(x₀)_k(v) = c}  F(x)_c(v)

where ``F(x)`` are the logits and the voxel set (the mask of class ``c``) is taken once from the **clean**
input ``x₀`` and then kept fixed for every noisy, interpolated or perturbed input. Fixing the mask is what
makes the score a smooth function of ``x`` whose gradient is the attribution. (The public Agg2Exp code slices
``seg_prob_out[: c]`` and swaps two arguments of its aggregation; this module implements the paper's formula.)

One :class:`ClassAggregate` scores *all* requested classes in one call, so a single forward pass serves every
class of the explanation.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, Sequence, runtime_checkable

from ..errors import GeometryMismatchError, InvalidVolumeError, ModelConfigError, UnknownClassError

if TYPE_CHECKING:  # torch is imported lazily so that ``import XAIExplainerLib`` stays light
    import torch

REDUCTIONS = ("sum", "mean")
REGRESSION_MODES = ("higher", "lower", "closeness")


@runtime_checkable
class Target(Protocol):
    """What every method needs from a target: K named scores per batch item, and which are identically 0."""

    names: list[str]
    absent: list[str]

    @property
    def num_targets(self) -> int: ...

    def __call__(self, output: "torch.Tensor") -> "torch.Tensor": ...

    def describe(self) -> dict[str, Any]: ...


@runtime_checkable
class VoxelWeighted(Protocol):
    """A target ``score_k = Σ_v weights[k, v] · output[:, channels[k], v]``: linear in a dense output.

    That linearity is what lets the gradient engine explain a large volume window by window (see
    :mod:`XAIExplainerLib.models.sliding_window`) and skip windows where ``support`` is empty.
    """

    channels: list[int]
    support: "torch.Tensor"  # bool (K, D, H, W)

    def weights(self, device, dtype) -> "torch.Tensor": ...


def resolve_classes(
    classes: "Sequence[int | str] | None", names: list[str]
) -> list[int]:
    """Map user class specs (indices, names, numeric strings) to unique class indices, in the user's order."""
    n = len(names)
    if classes is None:
        return list(range(n))
    if isinstance(classes, (str, int)):
        classes = [classes]
    valid = ", ".join(f"{i}={name}" for i, name in enumerate(names))
    lower = {name.lower(): i for i, name in enumerate(names)}
    out: list[int] = []
    for spec in classes:
        index: int | None = None
        if isinstance(spec, str):
            if spec in names:
                index = names.index(spec)
            elif spec.strip().lower() in lower:
                index = lower[spec.strip().lower()]
            elif spec.strip().lstrip("-").isdigit():
                index = int(spec.strip())
        else:
            try:
                index = int(spec)  # ints, numpy integers, 0-d tensors
            except (TypeError, ValueError):
                index = None
            if index is not None and index != spec:  # reject 1.5 and the like
                index = None
        if index is None or not 0 <= index < n:
            raise UnknownClassError(
                f"Unknown class {spec!r}: the model has {n} classes. Valid classes (index=name): {valid}."
            )
        if index not in out:
            out.append(index)
    if not out:
        raise UnknownClassError(f"No class was requested. Valid classes (index=name): {valid}.")
    return out


@dataclass(eq=False)
class ClassAggregate:
    """The Agg2Exp target f̂_c for several classes at once: ``output (B,C,D,H,W) -> scores (B,K)``.

    ``masks[k]`` holds the voxels that the unperturbed prediction assigns to ``classes[k]``; it never changes
    after construction. A requested class that the prediction does not contain keeps an empty mask, its score
    is identically 0 (also for ``reduction="mean"``) and its name is listed in :attr:`absent`, so callers can
    report it instead of dividing by zero later.
    """

    classes: list[int]
    names: list[str]
    masks: "torch.Tensor" = field(repr=False)  # bool (K, D, H, W)
    reduction: str = "sum"
    absent: list[str] = field(default_factory=list, init=False)  # derived from the masks

    def __post_init__(self) -> None:
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {self.reduction!r}.")
        if self.masks.ndim != 4 or self.masks.shape[0] != len(self.classes):
            raise ValueError(
                f"masks must have shape (K, D, H, W) with K={len(self.classes)}, got {tuple(self.masks.shape)}."
            )
        if len(self.names) != len(self.classes):
            raise ValueError(f"{len(self.names)} names given for {len(self.classes)} classes.")
        self.masks = self.masks.bool()
        sizes = self.masks.flatten(1).sum(1)
        self.absent = [name for name, size in zip(self.names, sizes.tolist()) if size == 0]
        self._weights: dict = {}  # (device, dtype) -> float weights (K, D, H, W), cached for speed
        self._norm = [int(s) for s in sizes.tolist()]  # divisor of the "mean" reduction

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_logits(
        cls,
        logits: "torch.Tensor",
        classes: "Sequence[int | str] | None" = None,
        label_names: "Sequence[str] | None" = None,
        reduction: str = "sum",
    ) -> "ClassAggregate":
        """Build the target from the clean logits ``(1, C, D, H, W)``.

        ``classes`` are indices or label names (case-insensitive); ``None`` means every class, background
        included, because Agg2Exp's RoI matrix has a row per predicted segment. ``label_names`` default to
        ``class_0 .. class_{C-1}``.
        """
        import torch

        if not isinstance(logits, torch.Tensor):
            raise InvalidVolumeError(f"logits must be a torch.Tensor (1, C, D, H, W), got {type(logits).__name__}.")
        if logits.ndim != 5 or logits.shape[0] != 1:
            raise InvalidVolumeError(
                f"logits must have shape (1, C, D, H, W) (one clean volume), got {tuple(logits.shape)}."
            )
        n_classes = int(logits.shape[1])
        if label_names is None:
            names = [f"class_{i}" for i in range(n_classes)]
        else:
            names = [str(n) for n in label_names]
            if len(names) != n_classes:
                raise ModelConfigError(
                    f"{len(names)} label names were given but the model outputs {n_classes} channels; "
                    "the label names must list one name per output channel (index 0 = background)."
                )
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}.")
        indices = resolve_classes(classes, names)
        with torch.no_grad():
            labels = logits.detach()[0].argmax(0)  # (D, H, W)
            masks = torch.stack([labels == c for c in indices])
        return cls(classes=indices, names=[names[c] for c in indices], masks=masks.cpu(), reduction=reduction)

    # ------------------------------------------------------------------ helpers
    @property
    def num_targets(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> list[int]:
        """Output channel of each target (:class:`VoxelWeighted`)."""
        return list(self.classes)

    @property
    def support(self) -> "torch.Tensor":
        """Voxels each score looks at (:class:`VoxelWeighted`): the fixed class masks."""
        return self.masks

    def describe(self) -> dict[str, Any]:
        return {"kind": "class_aggregate", "definition": "sum over the clean prediction's class mask of the class "
                "logits (Agg2Exp f_c)", "reduction": self.reduction, "classes": list(self.classes),
                "names": list(self.names), "absent": list(self.absent)}

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.masks.shape[1:])  # type: ignore[return-value]

    @property
    def mask_sizes(self) -> list[int]:
        """Number of voxels in each class mask (0 for an absent class)."""
        return [int(s) for s in self.masks.flatten(1).sum(1).tolist()]

    def weights(self, device, dtype) -> "torch.Tensor":
        """Per-voxel weights ``(K, D, H, W)``: 1 (sum) or 1/|mask| (mean) inside the mask, 0 elsewhere."""
        import torch

        key = (str(device), dtype)
        if key not in self._weights:
            w = self.masks.to(device=device, dtype=dtype)
            if self.reduction == "mean":
                sizes = torch.tensor(self._norm, device=device, dtype=dtype).clamp_min(1)
                w = w / sizes.view(-1, 1, 1, 1)
            self._weights[key] = w
        return self._weights[key]

    # ------------------------------------------------------------------ scoring
    def __call__(self, output: "torch.Tensor") -> "torch.Tensor":
        """Scores ``(B, K)``: sum (or mean) of class-``c`` logits over the fixed mask of ``c``.

        Low-precision outputs (bf16/fp16 from autocast) are summed in float32 so that large masks do not lose
        the score to rounding.
        """
        import torch

        if output.ndim != 5:
            raise InvalidVolumeError(f"model output must have shape (B, C, D, H, W), got {tuple(output.shape)}.")
        if tuple(output.shape[2:]) != self.spatial_shape:
            raise GeometryMismatchError(
                f"model output has spatial shape {tuple(output.shape[2:])} but the class masks were computed on "
                f"{self.spatial_shape}; build the target from the logits of the same (unpadded) volume."
            )
        if max(self.classes) >= output.shape[1]:
            raise UnknownClassError(
                f"class index {max(self.classes)} does not exist in a model output with {output.shape[1]} channels."
            )
        if output.dtype in (torch.float16, torch.bfloat16):
            output = output.float()
        selected = output[:, self.classes]  # (B, K, D, H, W)
        w = self.weights(output.device, output.dtype)
        return (selected * w.unsqueeze(0)).flatten(2).sum(2)


def _weighted_channel_sum(output: "torch.Tensor", channels: list[int], weights_of, shape) -> "torch.Tensor":
    """``(B, K)``: Σ_v w_k(v)·output[:, channels[k], v], low-precision outputs summed in float32."""
    import torch

    if output.ndim != 5:
        raise InvalidVolumeError(f"model output must have shape (B, C, D, H, W), got {tuple(output.shape)}.")
    if tuple(output.shape[2:]) != tuple(shape):
        raise GeometryMismatchError(
            f"model output has spatial shape {tuple(output.shape[2:])} but the target was built on {tuple(shape)}."
        )
    if max(channels) >= output.shape[1]:
        raise UnknownClassError(f"channel {max(channels)} does not exist in an output with {output.shape[1]} channels.")
    if output.dtype in (torch.float16, torch.bfloat16):
        output = output.float()
    w = weights_of(output.device, output.dtype)
    return (output[:, channels] * w.unsqueeze(0)).flatten(2).sum(2)


@dataclass(eq=False)
class OutputMask:
    """IBIX's M^f: ``score_k = Σ_{v ∈ mask_k} output[:, channel_k, v]``, one score per output channel.

    ``mask`` is ``(D, H, W)`` (the same region for every channel) or ``(K, D, H, W)`` (one per channel), boolean
    or weights. ``channels`` default to all channels of ``n_channels``. An empty mask gives a score of 0 and is
    listed in :attr:`absent`.
    """

    mask: "torch.Tensor" = field(repr=False)
    channels: list[int]
    names: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        import torch

        if not isinstance(self.mask, torch.Tensor) or self.mask.ndim not in (3, 4):
            raise InvalidVolumeError("mask must be a (D, H, W) or (K, D, H, W) tensor.")
        self.channels = [int(c) for c in self.channels]
        if not self.channels or min(self.channels) < 0:
            raise UnknownClassError(f"channels must be non-negative output channels, got {self.channels}.")
        if self.mask.ndim == 3:
            self.mask = self.mask.unsqueeze(0).expand(len(self.channels), *self.mask.shape)
        if self.mask.shape[0] != len(self.channels):
            raise GeometryMismatchError(f"{self.mask.shape[0]} masks for {len(self.channels)} channels.")
        self.mask = self.mask.detach().cpu()
        self.mask = self.mask.float() if self.mask.dtype == torch.bool else self.mask
        if not self.names:
            self.names = [f"channel_{c}" for c in self.channels]
        if len(self.names) != len(self.channels):
            raise ValueError(f"{len(self.names)} names given for {len(self.channels)} channels.")
        nonzero = (self.mask != 0).flatten(1).any(1).tolist()
        self.absent = [n for n, any_voxel in zip(self.names, nonzero) if not any_voxel]
        self._cache: dict = {}

    @property
    def num_targets(self) -> int:
        return len(self.channels)

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.mask.shape[1:])  # type: ignore[return-value]

    @property
    def support(self) -> "torch.Tensor":
        return self.mask != 0

    def weights(self, device, dtype) -> "torch.Tensor":
        key = (str(device), dtype)
        if key not in self._cache:
            self._cache[key] = self.mask.to(device=device, dtype=dtype)
        return self._cache[key]

    def __call__(self, output: "torch.Tensor") -> "torch.Tensor":
        return _weighted_channel_sum(output, self.channels, self.weights, self.spatial_shape)

    def describe(self) -> dict[str, Any]:
        return {"kind": "output_mask", "definition": "sum of each output channel inside its mask",
                "channels": list(self.channels), "names": list(self.names), "mask_voxels":
                [int(v) for v in self.support.flatten(1).sum(1).tolist()], "absent": list(self.absent)}


@dataclass(eq=False)
class RegressionScore:
    """Scores of a regression output ``(B, T)``: ``higher`` = ŷ, ``lower`` = −ŷ, ``closeness`` = −(ŷ − a*)².

    ``target`` picks one output (index or name) or, with None, all T. ``reference`` a* (closeness only) is one
    number or one per explained output. "What makes the prediction closer to a*" is the closeness gradient.
    """

    mode: str
    names: list[str]
    indices: list[int]
    reference: list[float] = field(default_factory=list)
    absent: list[str] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if self.mode not in REGRESSION_MODES:
            raise ValueError(f"mode must be one of {REGRESSION_MODES}, got {self.mode!r}.")
        if len(self.names) != len(self.indices):
            raise ValueError(f"{len(self.names)} names given for {len(self.indices)} outputs.")
        if self.mode == "closeness":
            if len(self.reference) == 1:
                self.reference = self.reference * len(self.indices)
            if len(self.reference) != len(self.indices):
                raise ValueError("closeness needs a reference value a* (one, or one per explained output).")
            self.reference = [float(r) for r in self.reference]

    @classmethod
    def build(cls, mode: str, output_names: Sequence[str], target: "int | str | None" = None,
              reference: "float | Sequence[float] | None" = None) -> "RegressionScore":
        """The score of output ``target`` (index or name; None = all) of a model with ``output_names``."""
        names = [str(n) for n in output_names]
        indices = resolve_classes(None if target is None else [target], names)
        refs = [] if reference is None else ([float(reference)] if isinstance(reference, (int, float))
                                             else [float(r) for r in reference])
        return cls(mode, [names[i] for i in indices], indices, refs)

    @property
    def num_targets(self) -> int:
        return len(self.indices)

    def __call__(self, output: "torch.Tensor") -> "torch.Tensor":
        import torch

        if output.ndim != 2 or max(self.indices) >= output.shape[1]:
            raise InvalidVolumeError(f"a regression output must be (B, T) with T > {max(self.indices)}, got "
                                     f"{tuple(output.shape)}.")
        if output.dtype in (torch.float16, torch.bfloat16):
            output = output.float()
        y = output[:, self.indices]
        if self.mode == "higher":
            return y
        if self.mode == "lower":
            return -y
        reference = torch.tensor(self.reference, dtype=y.dtype, device=y.device)
        return -((y - reference) ** 2)

    def describe(self) -> dict[str, Any]:
        return {"kind": "regression_score", "mode": self.mode, "outputs": list(self.names),
                "reference": list(self.reference) if self.mode == "closeness" else None}
