"""What a result needs to be reproduced: weight hashes, library versions, the model's fingerprint, the run record.

One hashing routine family serves the whole package (the weights loader, in-memory networks and the pipelines):
a network loaded from a file and the same network hashed in memory must not get digests computed two different
ways, or two result folders of the same model could not be matched. Everything here is plain Python on duck-typed
objects (no model or pipeline imports), so any layer above may record provenance.
"""
from __future__ import annotations

import hashlib
import os
import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from .volume import Volume

__all__ = ["library_versions", "model_fingerprint", "run_provenance", "sha256_file", "sha256_state_dict",
           "utc_timestamp", "volume_sha256"]

#: Libraries whose versions change results; recorded in every result folder.
VERSIONED_PACKAGES = ("torch", "monai", "SimpleITK", "sklearn", "networkx")
#: ``source`` of a model that did not come from a file (``SegmentationModel.from_network``).
IN_MEMORY = "<in-memory>"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (weights files are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_state_dict(state_dict: Mapping[str, Any]) -> str:
    """Hex sha256 of a state dict: parameter names and raw bytes, in sorted name order.

    The bytes are taken through a ``uint8`` view, so every dtype hashes (numpy has no bfloat16) and a float32
    tensor hashes exactly as ``tensor.numpy().tobytes()`` does.
    """
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(state_dict.items()):
        digest.update(name.encode())
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def volume_sha256(volume: "Volume") -> str:
    """Hex sha256 of what a volume *is*: dtype, shape, grid (spacing, origin, direction to 1e-6) and voxel bytes.

    Why not the file's hash: a scan explained from a NIfTI file, a DICOM folder or a Slicer node is the same input,
    and result folders of several methods must be matched to one case by content (the comparison report does).
    """
    import numpy as np

    array = np.ascontiguousarray(volume.array)
    digest = hashlib.sha256()
    grid = [round(float(v), 6) for v in (*volume.spacing, *volume.origin, *volume.direction)]
    digest.update(f"{array.dtype.str}|{list(array.shape)}|{grid}|".encode())
    digest.update(array.view(np.uint8).reshape(-1).data)
    return digest.hexdigest()


def library_versions(packages: tuple[str, ...] = VERSIONED_PACKAGES) -> dict[str, str]:
    """Versions of this package, Python, numpy and ``packages`` (``"not installed"`` when one is missing)."""
    import numpy as np

    from ._version import __version__

    out = {"XAIExplainerLib": __version__, "python": platform.python_version(), "numpy": np.__version__}
    for name in packages:
        try:
            out[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - a missing optional package is reported, not fatal
            out[name] = "not installed"
    return out


def model_fingerprint(model: Any) -> dict[str, str]:
    """sha256 of the weights file the model came from, or else of its state dict (names + raw bytes).

    ``{"sha256": ..., "of": what was hashed}``: an adapter's own ``sha256`` is trusted (it hashed its file at
    load time); a bare module is hashed here.
    """
    digest = getattr(model, "sha256", "")
    if isinstance(digest, str) and len(digest) == 64:
        source = str(getattr(model, "source", "") or "")
        return {"sha256": digest, "of": "state dict" if source in ("", IN_MEMORY) else f"weights {Path(source).name}"}
    for attr in ("weights_path", "source_path", "path", "source"):
        value = getattr(model, attr, None)
        if isinstance(value, (str, os.PathLike)) and Path(value).is_file():
            return {"sha256": sha256_file(value), "of": f"weights file {Path(value).name}"}
    network = getattr(model, "network", model)
    if hasattr(network, "state_dict"):
        return {"sha256": sha256_state_dict(network.state_dict()), "of": "state dict"}
    return {"sha256": "", "of": "unavailable (model exposes neither a weights file nor a state dict)"}


def utc_timestamp() -> str:
    """Now, as ISO 8601 UTC to the second (the ``created_utc`` of result folders)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _plain_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON-able options (a tensor handed to the method, e.g. a label map, is not a setting to record)."""
    return {k: v for k, v in params.items() if isinstance(v, (int, float, str, bool, list, type(None)))}


def run_provenance(
    *,
    method: str,
    result: Any,
    params: Mapping[str, Any],
    seed: int,
    volume: "Volume",
    model_space: "Volume",
    model: Any,
    device: Any,
    timings: Mapping[str, float],
    product: Mapping[str, Any] | None = None,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """The provenance record every explainer writes: what ran (method, options, seed, model hash, device,
    versions), on what (input and model grids) and how long; ``product`` adds the product's own entries.

    Options, seed, evaluation count and time come from the method's :class:`AttributionResult` when it reports
    them (what actually ran), else from what was asked.
    """
    record: dict[str, Any] = {
        "method": method,
        "params": dict(result.params) if getattr(result, "params", None) else _plain_params(params),
        "seed": getattr(result, "seed", seed),
        # automatic batch sizes follow free memory, and batched kernels round differently: a seeded run
        # reproduces bit for bit for a fixed batch size, so the one used is recorded (pass it as --batch-size)
        "batch_size": {"requested": batch_size,
                       "used": (getattr(result, "params", None) or {}).get("largest_batch", batch_size)},
        "n_model_evaluations": int(getattr(result, "n_model_evaluations", 0)),
        "attribution_seconds": float(getattr(result, "seconds", timings.get("attribution_s", 0.0))),
        "model_grid": {"shape_zyx": list(model_space.shape), "spacing_xyz": list(model_space.spacing)},
        "input": {"shape_zyx": list(volume.shape), "spacing_xyz": list(volume.spacing),
                  "source": str(volume.metadata.get("source", "")), "sha256": volume_sha256(volume)},
        "model": model_fingerprint(model),
        "device": str(device),
        # what the network ran in (the adapter owns autocast); a bare callable runs as the caller gave it
        "precision": str(getattr(model, "precision", "as given (not a ModelAdapter)")),
        "versions": library_versions(),
        "timings": dict(timings),
    }
    record.update(product or {})
    record["created_utc"] = utc_timestamp()
    return record
