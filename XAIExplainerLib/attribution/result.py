"""The value every attribution method returns: attributions for all explained classes plus provenance."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass
class AttributionResult:
    """Attributions ``(K, D, H, W)`` (float32, CPU) for the K targets, in the model input's voxel grid.

    ``n_model_evaluations`` counts forward passes per *sample* (a batch of 8 noisy volumes is 8 evaluations),
    which is what makes methods and libraries comparable. ``params`` is JSON-serialisable so it can go straight
    into the provenance sidecar.
    """

    attributions: "torch.Tensor"
    target_names: list[str]
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    n_model_evaluations: int = 0
    seconds: float = 0.0
    seed: int | None = None

    def __getitem__(self, name: str) -> "torch.Tensor":
        """Attribution map of one target, by name."""
        try:
            return self.attributions[self.target_names.index(name)]
        except ValueError:
            from ..errors import UnknownClassError

            raise UnknownClassError(
                f"No attribution for {name!r}; this result holds {', '.join(self.target_names)}."
            ) from None

    def provenance(self) -> dict[str, Any]:
        """JSON-able description of how the attributions were computed."""
        return {
            "method": self.method,
            "targets": list(self.target_names),
            "params": dict(self.params),
            "seed": self.seed,
            "n_model_evaluations": int(self.n_model_evaluations),
            "seconds": float(self.seconds),
        }
