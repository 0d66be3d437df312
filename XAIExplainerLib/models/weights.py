"""Load user weights in the three forms users have: a state dict / checkpoint, a MONAI bundle, a TorchScript file.

Every failure names what was wrong: missing and unexpected parameter names (a file for another architecture or
another feature size), a file that is no torch file at all, or a bundle without its metadata.
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..errors import ModelConfigError, WeightsError
from ..provenance import sha256_file as file_sha256  # the one hashing routine family
from .config import ModelConfig, config_path_for

#: Keys under which training frameworks nest the state dict in a checkpoint dict.
CHECKPOINT_KEYS = ("state_dict", "model", "network", "model_state_dict", "net")
#: Prefixes that DataParallel / Lightning / wrappers add to parameter names.
STRIPPED_PREFIXES = ("module.", "model.", "network.", "net.")


@dataclass
class LoadedWeights:
    """A ready network plus where it came from (for provenance)."""

    network: Any
    config: ModelConfig
    source: Path
    kind: str  # "state_dict" | "bundle" | "torchscript"
    sha256: str


def is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files with a ``code/`` folder; plain ``torch.save`` files have none."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name or name.startswith("code/") for name in archive.namelist())


def extract_state_dict(obj: Any, source: Path) -> dict[str, Any]:
    """Find the parameter dict in a checkpoint and strip wrapper prefixes (``module.``, ``model.``)."""
    import torch

    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        raise WeightsError(f"'{source}' holds a {type(obj).__name__}, not a state dict or checkpoint dict.")
    for key in CHECKPOINT_KEYS:
        if key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise WeightsError(
            f"'{source}' has no tensors at the top level nor under any of {list(CHECKPOINT_KEYS)}; "
            f"its keys are {list(obj)[:10]}."
        )
    for prefix in STRIPPED_PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_into(network: Any, state: Mapping[str, Any], source: Path) -> None:
    """``load_state_dict`` that reports missing/unexpected/mismatched keys as one readable error."""
    own = network.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [f"{k}: file {tuple(state[k].shape)} vs network {tuple(own[k].shape)}"
                  for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or mismatched:
        def show(items: list[str]) -> str:
            return ", ".join(items[:8]) + (f" … (+{len(items) - 8} more)" if len(items) > 8 else "") if items else "none"

        raise WeightsError(
            f"The weights in '{source}' do not fit the configured network (is it another architecture or "
            f"feature_size?). Missing keys: {show(missing)}. Unexpected keys: {show(unexpected)}. "
            f"Shape mismatches: {show(mismatched)}. Check the model JSON next to the weights."
        )
    network.load_state_dict(state, strict=True)


def _torch_load(path: Path) -> Any:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for non-torch files
        raise WeightsError(
            f"'{path}' could not be read as PyTorch weights ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). "
            "Expected a state dict / checkpoint saved with torch.save, a TorchScript file, or a MONAI bundle folder."
        ) from None


def load_weights(path: str | Path, config: ModelConfig | None = None) -> LoadedWeights:
    """Load ``path`` (file or bundle folder) into a network in eval mode on the CPU."""
    source = Path(path)
    if not source.exists():
        raise WeightsError(f"No weights at '{source}'. Pass a .pt/.pth/.ts file or a MONAI bundle folder.")
    if source.is_dir():
        return _load_bundle(source, config)
    if source.stat().st_size == 0:
        raise WeightsError(f"'{source}' is empty (0 bytes).")
    config = config or _config_beside(source)
    if is_torchscript(source):
        return LoadedWeights(_load_torchscript(source), config, source, "torchscript", file_sha256(source))
    from .network import build_network

    network = build_network(config)
    load_into(network, extract_state_dict(_torch_load(source), source), source)
    network.eval()
    return LoadedWeights(network, config, source, "state_dict", file_sha256(source))


def _config_beside(weights: Path) -> ModelConfig:
    found = config_path_for(weights)
    if found is None:
        raise ModelConfigError(
            f"No model configuration found for '{weights.name}': put '{weights.name.split('.')[0]}.json' or "
            "'model.json' next to it, listing at least 'label_names' (and modality, spacing, roi_size, feature_size)."
        )
    return ModelConfig.load(found)


def _load_torchscript(path: Path) -> Any:
    import torch

    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise WeightsError(f"'{path}' looks like TorchScript but could not be loaded: {str(exc).splitlines()[0]}") from None
    module.eval()
    return module


# ---- MONAI bundles ---------------------------------------------------------------------------------------------
def _load_bundle(folder: Path, config: ModelConfig | None) -> LoadedWeights:
    """A MONAI bundle: ``configs/metadata.json`` (+ ``inference.json``) and ``models/model.pt`` or ``model.ts``."""
    config = config or bundle_config(folder)
    models = folder / "models"
    for name in ("model.ts", "model.pt", "model.pth"):
        weights = models / name
        if weights.is_file():
            break
    else:
        raise WeightsError(f"The bundle '{folder}' has no models/model.pt or models/model.ts.")
    if is_torchscript(weights):
        network = _load_torchscript(weights)
    else:
        from .network import build_network

        network = build_network(config)
        load_into(network, extract_state_dict(_torch_load(weights), weights), weights)
        network.eval()
    return LoadedWeights(network, config, weights, "bundle", file_sha256(weights))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as exc:
        raise ModelConfigError(f"'{path}' is not valid JSON ({exc}).") from None


def _find(node: Any, predicate) -> Any:
    """Depth-first search of a JSON tree for the first dict that satisfies ``predicate``."""
    if isinstance(node, dict):
        if predicate(node):
            return node
        children = node.values()
    elif isinstance(node, list):
        children = node
    else:
        return None
    for child in children:
        hit = _find(child, predicate)
        if hit is not None:
            return hit
    return None


def bundle_config(folder: Path) -> ModelConfig:
    """Derive a :class:`ModelConfig` from a bundle's metadata and inference configuration.

    Label names come from ``network_data_format.outputs.pred.channel_def``; the architecture from
    ``network_def``; spacing and ROI from the ``Spacingd`` transform and the sliding-window inferer. A
    ``"xai_explainer"`` object in ``metadata.json`` overrides any field (for bundles whose preprocessing cannot be
    read off the transforms).
    """
    metadata = _read_json(folder / "configs" / "metadata.json")
    if not metadata:
        raise ModelConfigError(f"'{folder}' is not a MONAI bundle: configs/metadata.json is missing.")
    inference = _read_json(folder / "configs" / "inference.json")
    outputs = metadata.get("network_data_format", {}).get("outputs", {})
    channel_def = next((o.get("channel_def") for o in outputs.values() if isinstance(o, dict) and o.get("channel_def")), None)
    if not channel_def:
        raise ModelConfigError(
            f"The bundle '{folder}' does not name its output channels (network_data_format.outputs.*.channel_def)."
        )
    label_names = [str(channel_def[k]) for k in sorted(channel_def, key=int)]
    fields: dict[str, Any] = {"label_names": label_names}
    inputs = metadata.get("network_data_format", {}).get("inputs", {})
    modality = next((i.get("modality") for i in inputs.values() if isinstance(i, dict) and i.get("modality")), None)
    if modality:
        fields["modality"] = "MRI" if str(modality).upper().startswith("MR") else str(modality).upper()
    net = inference.get("network_def", {})
    if isinstance(net, dict) and "SwinUNETR" in str(net.get("_target_", "")):
        for key in ("feature_size", "depths", "num_heads", "use_v2", "in_channels"):
            if key in net and not isinstance(net[key], str):
                fields[key] = net[key]
    spacing = _find(inference, lambda d: "Spacing" in str(d.get("_target_", "")) and "pixdim" in d)
    if spacing and not isinstance(spacing["pixdim"], str):
        fields["spacing"] = spacing["pixdim"]
    inferer = _find(inference, lambda d: "SlidingWindow" in str(d.get("_target_", "")) and "roi_size" in d)
    if inferer and not isinstance(inferer["roi_size"], str):
        fields["roi_size"] = inferer["roi_size"]
        if isinstance(inferer.get("overlap"), (int, float)):
            fields["overlap"] = inferer["overlap"]
    fields.update(metadata.get("xai_explainer", {}))
    return ModelConfig.from_dict(fields)
