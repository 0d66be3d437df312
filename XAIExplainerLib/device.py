"""Compute-device choice shared by every entry point: ``auto | cpu | cuda | cuda:N``."""
from __future__ import annotations

from .errors import DeviceError


def resolve_device(device: "str | object" = "auto"):
    """Return a ``torch.device`` for the user's choice, with a clear error when it does not exist.

    ``auto`` picks the first CUDA GPU when one is usable and the CPU otherwise, so the same command works on a
    workstation and on a laptop.
    """
    import torch

    if isinstance(device, torch.device):
        return device
    name = str(device or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"Device '{device}' was requested but no CUDA GPU is usable here. Use --device cpu or auto.")
        index = 0 if name == "cuda" else name.partition(":")[2]
        try:
            index = int(index)
        except ValueError:
            raise DeviceError(f"Cannot parse device '{device}'; write cuda:N with N a GPU index.") from None
        if not 0 <= index < torch.cuda.device_count():
            raise DeviceError(
                f"GPU cuda:{index} does not exist; this machine has {torch.cuda.device_count()} GPU(s) (cuda:0..)."
            )
        return torch.device(f"cuda:{index}")
    raise DeviceError(f"Unknown device '{device}'. Use auto, cpu, cuda or cuda:N.")
