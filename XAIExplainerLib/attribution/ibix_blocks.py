"""IBIX backward mapping over blocks: partitions (SLIC supervoxels, cubes, a label map), Eq. 6 and multiscale.

Why blocks: a perturbation backward map needs one forward map per block (2N runs each), so the input is cut into K
blocks D_k and every block gets one number. SLIC (scikit-image) follows image edges, as the paper's superpixels do.

Intensity scale of SLIC: ``compactness`` trades intensity distance against spatial distance, so its meaning depends
on the intensity unit. We run SLIC on the model-space input rescaled to [0, 1] between its 0.5 and 99.5 percentiles
(clipped), so the paper's compactness 0.1 means the same on MRI, CT or z-scored input.

Blocks × jitters are one item list for the batching loop; responses are accumulated per block and a block's score is
taken as soon as its 2N jitters are in, so memory holds a batch of outputs and at most two partial block sums.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..errors import InvalidVolumeError, MethodParameterError
from ._batching import run_batches
from .ibix import (BACKWARD_VARIANTS, DEFAULT_N, _broadcast_output_region, output_of, _response, check_region,
                   default_batch, jitters)
from .supervoxels import cube_supervoxels, semantic_supervoxels

DEFAULT_BLOCKS = 500
DEFAULT_COMPACTNESS = 0.1


def slic_blocks(image: np.ndarray, n_blocks: int = DEFAULT_BLOCKS, compactness: float = DEFAULT_COMPACTNESS,
                region: np.ndarray | None = None) -> np.ndarray:
    """SLIC supervoxels of a (D, H, W) image on the [0, 1] percentile scale; ids 0..K−1, −1 outside ``region``."""
    from skimage.segmentation import slic

    lo, hi = np.percentile(image, [0.5, 99.5])
    scaled = np.clip((image - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(image, dtype=float)
    mask = None if region is None or bool(region.all()) else region.astype(bool)
    labels = slic(scaled.astype(np.float64), n_segments=int(n_blocks), compactness=float(compactness),
                  channel_axis=None, start_label=1, mask=mask)
    out = np.full(image.shape, -1, dtype=np.int64)
    inside = labels > 0
    out[inside] = np.unique(labels[inside], return_inverse=True)[1]
    return out


def make_blocks(kind: str, image: np.ndarray, n_blocks: int = DEFAULT_BLOCKS,
                compactness: float = DEFAULT_COMPACTNESS, label_map: np.ndarray | None = None) -> np.ndarray:
    """The partition: ``"slic"``, ``"cubes"`` (≈ n_blocks regular boxes) or ``"labels"`` (one block per label)."""
    if kind == "slic":
        return slic_blocks(image, n_blocks, compactness)
    if kind == "cubes":
        return cube_supervoxels(image.shape, int(n_blocks)).numpy()
    if kind == "labels":
        if label_map is None or label_map.shape != image.shape:
            raise InvalidVolumeError("Label-map blocks need a label map on the model input grid.")
        return semantic_supervoxels(label_map).numpy()
    raise MethodParameterError(f"Unknown block kind '{kind}'; use 'slic', 'cubes' or 'labels'.")


def _block_score(field: Any, inside: Any, variant: str) -> float:
    """One block's value from its jitter-averaged forward map ``field`` (C′, D′, H′, W′)."""
    if variant == "eq6":
        total = float(field.abs().sum())
        return float((field.abs() * inside).sum()) / total if total > 0 else 0.0
    if variant == "authors":
        return float((field * inside).sum() / inside.sum())
    return float((field * inside).sum())


def block_scores(model: Callable, x: Any, output_region: Any, blocks: np.ndarray, *, jitter_range: float,
                 n_jitters: int = DEFAULT_N, variant: str = "eq6", batch_size: int | None = None,
                 progress: Callable[[float, str], None] | None = None) -> np.ndarray:
    """B(D_k) for every block id 0..K−1 of ``blocks`` (ids < 0 are not perturbed): Eq. 6 or a variant."""
    import torch

    if variant not in BACKWARD_VARIANTS:
        raise MethodParameterError(f"Unknown backward-map variant '{variant}'; use one of {BACKWARD_VARIANTS}.")
    hs = jitters(jitter_range, n_jitters)
    base = output_of(model, x)
    inside = check_region(_broadcast_output_region(output_region, base), tuple(base.shape[1:]), "output mask M^f")
    inside = inside.to(base.device, base.dtype)
    ids = torch.as_tensor(blocks, device=x.device)
    n_blocks, n_h = int(ids.max()) + 1, len(hs)
    forward_variant = "authors" if variant == "authors" else "paper"
    scores, partial = np.zeros(n_blocks), {}

    def compute(start: int, stop: int) -> Any:
        items = range(start, stop)
        regions = torch.stack([(ids == i // n_h) for i in items]).to(x.dtype)[:, None]
        h = torch.tensor([hs[i % n_h] for i in items], dtype=x.dtype, device=x.device).view(-1, 1, 1, 1, 1)
        with torch.no_grad():
            return _response(model(x + h * regions), base, [hs[i % n_h] for i in items], forward_variant)

    def commit(start: int, stop: int, responses: Any) -> None:
        for item, response in zip(range(start, stop), responses):
            block = item // n_h
            partial[block] = partial.get(block, 0) + response
            if item % n_h == n_h - 1:
                scores[block] = _block_score(partial.pop(block) / n_h, inside, variant)

    run_batches(n_blocks * n_h, compute, commit, device=x.device, method="IBIX backward map",
                batch_size=default_batch(x, batch_size), what="jittered runs", item="jitter", progress=progress)
    return scores


def block_scores_exact(model: Callable, x: Any, output_region: Any, blocks: np.ndarray, *, variant: str = "eq6",
                       batch_size: int | None = None,
                       progress: Callable[[float, str], None] | None = None) -> np.ndarray:
    """Eq. 6 per block in the small-jitter limit: block D_k's forward map is the JVP J·1_{D_k} (exact, no H, N).

    Why: the jittered score of a block needs 2N model runs; its H → 0 limit needs one forward-mode product, and the
    products of a batch of blocks run as one batched ``torch.func.jvp`` (the input repeated on the batch axis, one
    block indicator per tangent). ``variant`` "eq6" gives Σ_{M^f}|J·1_D| / Σ|J·1_D|, "sum" Σ_{M^f} J·1_D (the block
    sum of the voxel-resolution VJP); the authors' variant is not h-normalised and has no H → 0 limit.
    """
    import torch

    if variant not in ("eq6", "sum"):
        raise MethodParameterError(f"The exact block backward map supports the variants 'eq6' and 'sum', not "
                                   f"'{variant}' (the authors' variant is not divided by h, so it has no exact limit).")
    base = output_of(model, x)
    inside = check_region(_broadcast_output_region(output_region, base), tuple(base.shape[1:]), "output mask M^f")
    inside = inside.to(base.device, base.dtype)
    ids = torch.as_tensor(blocks, device=x.device)
    n_blocks = int(ids.max()) + 1
    scores = np.zeros(n_blocks)

    def compute(start: int, stop: int) -> Any:
        tangents = torch.stack([(ids == k) for k in range(start, stop)]).to(x.dtype)[:, None]
        primal = x.detach().expand(stop - start, *x.shape[1:]).contiguous()
        _, fields = torch.func.jvp(model, (primal,), (tangents,))  # one batched pass: J·1_{D_k} for each block
        return fields.detach()

    def commit(start: int, stop: int, fields: Any) -> None:
        for block, field_ in zip(range(start, stop), fields):
            scores[block] = _block_score(field_, inside, variant)

    run_batches(n_blocks, compute, commit, device=x.device, method="IBIX exact block backward map",
                batch_size=default_batch(x, batch_size), what="block JVPs", item="block", progress=progress)
    return scores


def paint_blocks(blocks: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """A voxel map giving every voxel its block's score (0 where no block)."""
    out = np.zeros(blocks.shape, dtype=np.float64)
    valid = blocks >= 0
    out[valid] = scores[blocks[valid]]
    return out


def multiscale_backward_map(model: Callable, x: Any, output_region: Any, image: np.ndarray, *, jitter_range: float,
                            n_jitters: int = DEFAULT_N, n_blocks: int = DEFAULT_BLOCKS,
                            compactness: float = DEFAULT_COMPACTNESS, threshold: float = 0.0,
                            variant: str = "eq6", batch_size: int | None = None, exact: bool = False) -> np.ndarray:
    """The authors' two-scale scheme: K_c = max(10, K/10) coarse SLIC blocks, keep those scoring ≥ ``threshold``,
    re-partition only them finely (K scaled by the kept fraction of the volume) and score the fine blocks.

    Coarse scores stay where blocks were dropped. With threshold 0 every block is kept, the fine partition covers
    the whole volume with K blocks and the result equals the single-scale map. ``exact`` scores the blocks with
    :func:`block_scores_exact` (JVPs) instead of jitters (``jitter_range`` and ``n_jitters`` are then unused).
    """
    if exact:
        def score(blocks: np.ndarray) -> np.ndarray:
            return block_scores_exact(model, x, output_region, blocks, variant=variant, batch_size=batch_size)
    else:
        def score(blocks: np.ndarray) -> np.ndarray:
            return block_scores(model, x, output_region, blocks, jitter_range=jitter_range, n_jitters=n_jitters,
                                variant=variant, batch_size=batch_size)
    coarse = slic_blocks(image, max(10, int(0.1 * n_blocks)), compactness)
    coarse_scores = score(coarse)
    kept = np.isin(coarse, np.flatnonzero(coarse_scores >= threshold))
    result = paint_blocks(coarse, coarse_scores)
    if not kept.any():
        return result
    n_fine = max(2, int(round(n_blocks * kept.mean())))
    fine = slic_blocks(image, n_fine, compactness, region=kept)
    if fine.max() < 0:
        return result
    fine_scores = score(fine)
    result[fine >= 0] = paint_blocks(fine, fine_scores)[fine >= 0]
    return result
