"""IBIX as a product: painted masks on the user's input grid → forward map on the output grid / backward map on the
input grid, with provenance.

The mathematics is in :mod:`XAIExplainerLib.attribution.ibix` / ``ibix_blocks``; this module only relates grids:
masks are painted on the input volume (or on the network's output shown on the input grid, which is the same grid),
go to model space with nearest-neighbour resampling (labels stay labels), and from there to the output grid of an
:class:`~XAIExplainerLib.models.outputs.ImageToImageModel` (same field of view, possibly coarser). A segmentation
network's output (logits or probabilities) is read as image-to-image output, one channel per class.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidVolumeError, UnknownClassError
from ..volume import Volume, require_same_grid, resample_to_reference

#: Default H: this share of the model-space input's intensity range (the paper recommends 10–20 %).
DEFAULT_JITTER_SHARE = 0.15


@dataclass
class IBIXResult:
    """Maps (name → volume) and what produced them."""

    mode: str
    maps: dict[str, Volume]
    provenance: dict[str, Any] = field(default_factory=dict)


def load_image_to_image(path: str | Path, device: Any = "auto", config: Any = None):
    """An :class:`ImageToImageModel` from weights; a segmentation config is read as image-to-image (channels = classes)."""
    from ..models.config import ModelConfig
    from ..models.outputs import ImageToImageModel
    from ..models.weights import load_weights

    if isinstance(config, (str, Path)):
        config = ModelConfig.load(config)
    loaded = load_weights(path, config)
    cfg = loaded.config
    if cfg.kind == "segmentation":
        data = {**cfg.to_dict(), "kind": "image_to_image", "channel_names": list(cfg.label_names)}
        cfg = ModelConfig.from_dict(data)
    return ImageToImageModel(loaded.network, cfg, device, str(loaded.source), loaded.sha256, loaded.kind)


def select_region(mask: Volume, image: Volume, label: int | None, what: str) -> Volume:
    """The voxels of ``mask`` equal to ``label`` (any non-zero voxel without one), on the image's grid, as 0/1."""
    require_same_grid(image, mask, what)
    values = np.asarray(mask.array)
    if label is None:
        selected = values != 0
    else:
        present = np.unique(values)
        if label not in present:
            raise UnknownClassError(f"Label {label} is not in the {what} (values present: "
                                    f"{[int(v) for v in present[:20]]}); pass one of them with --label.")
        selected = values == label
    if not selected.any():
        raise InvalidVolumeError(f"The {what} is empty (no voxel selected); paint at least one voxel.")
    return mask.with_array(selected.astype(np.uint8))


def region_tensor(model: Any, region: Volume, grid: Volume, what: str):
    """A 0/1 region resampled (nearest) onto ``grid`` as a (D, H, W) tensor in the network's axis order."""
    on_grid = resample_to_reference(region, grid.with_array(np.zeros(grid.shape, np.uint8)), "nearest")
    array = (np.asarray(on_grid.array) > 0).astype(np.float32)
    if not array.any():
        raise InvalidVolumeError(f"The {what} vanished on the network's grid {grid.shape} (it is smaller than one "
                                 "voxel there); paint a larger region.")
    return model.to_tensor(grid.with_array(array))[0, 0]


def default_jitter_range(x) -> float:
    """H = 15 % of the model-space input's intensity range (max − min)."""
    span = float(x.max() - x.min())
    return DEFAULT_JITTER_SHARE * span if span > 0 else 1.0


def _output_grid(model: Any, model_space: Volume, x) -> tuple[Any, Volume]:
    """The clean output and the zero volume on its grid."""
    from ..attribution.ibix import output_of

    out = output_of(model, x)
    return out, model.output_grid(model_space, tuple(model.to_array(out[0, 0]).shape))


def _names(model: Any, n: int) -> list[str]:
    names = list(getattr(model, "channel_names", []) or [])
    return names if len(names) == n else [f"channel_{c}" for c in range(n)]


def _provenance(mode: str, volume: Volume, model_space: Volume, model: Any, params: dict[str, Any],
                timings: dict[str, float], evaluations: int) -> dict[str, Any]:
    from ..provenance import run_provenance

    record = run_provenance(method=f"ibix-{mode}", result=None, params=params, seed=0, volume=volume,
                            model_space=model_space, model=model, device=getattr(model, "device", "cpu"),
                            timings=timings, product={"product": "ibix", "mode": mode,
                                                      "reference": "Telea et al., IBIX (Instance-Based Inference "
                                                                   "Explainers)"})
    record["n_model_evaluations"] = int(evaluations)
    record["attribution_seconds"] = float(timings.get("map_s", 0.0))
    return record


def ibix_forward(volume: Volume, model: Any, mask: Volume, *, label: int | None = None, exact: bool = False,
                 jitter_range: float | None = None, n_jitters: int = 100, variant: str = "paper",
                 batch_size: int | None = None, progress: Any = None) -> IBIXResult:
    """F(M^x): how each output voxel responds to the painted input region; maps on the output grid (model space)."""
    from ..attribution.ibix import forward_map, forward_map_exact

    region = select_region(mask, volume, label, "input mask M^x")
    started = time.perf_counter()
    model_space = model.preprocess(volume)
    x = model.to_tensor(model_space)
    region_x = region_tensor(model, region, model_space, "input mask M^x")
    _, grid = _output_grid(model, model_space, x)
    params: dict[str, Any] = {"exact": bool(exact), "label": label, "mask_voxels": int(region_x.sum())}
    prepared = time.perf_counter()
    if exact:
        fmap, evaluations = forward_map_exact(model, x, region_x), 2
    else:
        h = float(jitter_range) if jitter_range is not None else default_jitter_range(x)
        params.update(jitter_range=h, n_jitters=n_jitters, variant=variant)
        fmap = forward_map(model, x, region_x, jitter_range=h, n_jitters=n_jitters, variant=variant,
                           batch_size=batch_size, progress=progress)
        evaluations = 2 * n_jitters + 1
    timings = {"preprocess_s": prepared - started, "map_s": time.perf_counter() - prepared}
    arrays = model.to_array(fmap)
    maps = {f"forward_{name}": grid.with_array(arrays[c].astype(np.float32))
            for c, name in enumerate(_names(model, arrays.shape[0]))}
    return IBIXResult("forward", maps, _provenance("forward", volume, model_space, model, params, timings,
                                                   evaluations))


def _backward_scores(model: Any, x, region_f, *, exact: bool, resolution: str, multiscale: bool, blocks: str,
                     n_blocks: int, compactness: float, threshold: float, jitter_range: float, n_jitters: int,
                     variant: str, batch_size: int | None, params: dict[str, Any], progress: Any = None,
                     label_map: np.ndarray | None = None):
    """The backward map as a (D, H, W) tensor-order array, and the number of model evaluations (None: unknown)."""
    from ..attribution.ibix import backward_map_exact
    from ..attribution.ibix_blocks import (block_scores, block_scores_exact, make_blocks, multiscale_backward_map,
                                           paint_blocks)

    if exact and resolution == "voxels":
        return backward_map_exact(model, x, region_f)[0].cpu().numpy(), 2
    image = x[0, 0].detach().cpu().numpy()
    options = dict(variant=variant, batch_size=batch_size)
    params.update(blocks="slic" if multiscale else blocks, n_blocks=n_blocks, compactness=compactness, **options)
    if not exact:
        params.update(jitter_range=jitter_range, n_jitters=n_jitters)
    if multiscale:
        params["threshold"] = threshold
        return multiscale_backward_map(model, x, region_f, image, n_blocks=n_blocks, compactness=compactness,
                                       threshold=threshold, jitter_range=jitter_range, n_jitters=n_jitters,
                                       exact=exact, **options), None
    partition = make_blocks(blocks, image, n_blocks, compactness, label_map=label_map)
    k = int(partition.max()) + 1
    if exact:
        return paint_blocks(partition, block_scores_exact(model, x, region_f, partition, progress=progress,
                                                          **options)), k + 1
    scores = block_scores(model, x, region_f, partition, jitter_range=jitter_range, n_jitters=n_jitters,
                          progress=progress, **options)
    return paint_blocks(partition, scores), k * 2 * n_jitters + 1


def backward_resolution(exact: bool, resolution: str | None) -> str:
    """Exact mode defaults to voxels (one VJP); the jitter scheme always scores blocks."""
    from ..errors import MethodParameterError

    chosen = resolution or ("voxels" if exact else "blocks")
    if chosen not in ("voxels", "blocks"):
        raise MethodParameterError(f"Unknown resolution '{chosen}'; use 'voxels' or 'blocks'.")
    if chosen == "voxels" and not exact:
        raise MethodParameterError("A voxel-resolution backward map needs the exact mode (--exact); the jitter "
                                   "scheme scores blocks.")
    return chosen


def _output_region(model: Any, region: Volume, grid: Volume, n_channels: int, channel: str | int | None):
    """M^f as a (D′, H′, W′) tensor (every channel) or (C′, D′, H′, W′) with only ``channel`` selected."""
    region_f = region_tensor(model, region, grid, "output mask M^f")
    if channel is None:
        return region_f
    index = channel_index(model, n_channels, channel)
    selected = region_f.new_zeros((n_channels, *region_f.shape))
    selected[index] = region_f
    return selected


def _block_label_map(model: Any, volume: Volume, model_space: Volume, labels: Volume | None) -> np.ndarray:
    """User blocks (a label map on the input grid) on the model-space grid (nearest), in the network's axis order."""
    if labels is None:
        raise InvalidVolumeError("Label-map blocks need a label map on the input's grid (--block-labels FILE).")
    require_same_grid(volume, labels, "block label map")
    on_grid = resample_to_reference(labels.with_array(np.asarray(labels.array).astype(np.int32)),
                                    model_space.with_array(np.zeros(model_space.shape, np.int32)), "nearest")
    return model.to_tensor(on_grid.with_array(on_grid.array.astype(np.float32)))[0, 0].cpu().numpy().astype(np.int64)


def channel_index(model: Any, n_channels: int, channel: str | int) -> int:
    """An output channel by name or index; an unknown one is a named error listing the channels."""
    names = _names(model, n_channels)
    if str(channel) in names:
        return names.index(str(channel))
    if str(channel).lstrip("-").isdigit() and 0 <= int(channel) < n_channels:
        return int(channel)
    raise UnknownClassError(f"Output channel '{channel}' does not exist; use one of {names} or an index "
                            f"0..{n_channels - 1}.")


def ibix_backward(volume: Volume, model: Any, mask: Volume, *, label: int | None = None, exact: bool = False,
                  resolution: str | None = None, channel: str | int | None = None, multiscale: bool = False,
                  blocks: str = "slic", n_blocks: int = 500, compactness: float = 0.1, threshold: float = 0.0,
                  jitter_range: float | None = None, n_jitters: int = 100, variant: str = "eq6",
                  batch_size: int | None = None, progress: Any = None,
                  block_labels: Volume | None = None) -> IBIXResult:
    """B(M^f): how much each input voxel (exact mode) or block makes the painted output region; map on the input grid.

    ``mask`` is painted on the input's grid (where the output is shown after :meth:`ImageToImageModel.predict`).
    Exact mode gives Σ_{M^f} ∂f/∂x per voxel (paper Eq. 7, signed; ``resolution="voxels"``) or Eq. 6 per block
    from one JVP per block (``resolution="blocks"``); the jitter scheme gives Eq. 6 or a variant per block.
    ``channel`` (name or index) restricts M^f to one output channel; by default it covers every channel.
    ``blocks="labels"`` takes one block per label of ``block_labels`` (a label map on the input's grid).
    """
    resolution = backward_resolution(exact, resolution)
    region = select_region(mask, volume, label, "output mask M^f")
    started = time.perf_counter()
    model_space = model.preprocess(volume)
    x = model.to_tensor(model_space)
    label_map = _block_label_map(model, volume, model_space, block_labels) if blocks == "labels" else None
    out, grid = _output_grid(model, model_space, x)
    region_f = _output_region(model, region, grid, int(out.shape[1]), channel)
    h = float(jitter_range) if jitter_range is not None else default_jitter_range(x)
    params: dict[str, Any] = {"exact": bool(exact), "resolution": resolution, "multiscale": bool(multiscale),
                              "label": label, "channel": None if channel is None else str(channel),
                              "mask_voxels": int((region_f != 0).sum())}
    prepared = time.perf_counter()
    array, evaluations = _backward_scores(model, x, region_f, exact=exact, resolution=resolution,
                                          multiscale=multiscale, blocks=blocks, n_blocks=n_blocks,
                                          compactness=compactness, threshold=threshold, jitter_range=h,
                                          n_jitters=n_jitters, variant=variant, batch_size=batch_size,
                                          params=params, progress=progress, label_map=label_map)
    timings = {"preprocess_s": prepared - started, "map_s": time.perf_counter() - prepared}
    import torch

    in_model_space = model_space.with_array(model.to_array(torch.as_tensor(np.asarray(array)))
                                            .astype(np.float32))
    on_input = model.to_input_grid(in_model_space, volume, interpolator="linear")
    return IBIXResult("backward", {"backward": on_input.with_array(on_input.array.astype(np.float32))},
                      _provenance("backward", volume, model_space, model, params, timings, evaluations or 0))


def save_ibix(result: IBIXResult, out_dir: str | Path, overwrite: bool = False) -> Path:
    """The maps as NIfTI files and provenance.json, written atomically (all or nothing)."""
    from ..io import atomic_output_folder, safe_name, write_json
    from ..volume import write_volume

    with atomic_output_folder(out_dir, overwrite=overwrite) as tmp:
        for name, volume in result.maps.items():
            write_volume(volume, tmp / f"{safe_name(name)}.nii.gz")
        write_json(tmp / "provenance.json", {**result.provenance, "maps": sorted(result.maps)})
    return Path(out_dir)
