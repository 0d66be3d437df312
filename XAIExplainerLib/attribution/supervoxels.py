"""Supervoxels: the interpretable features of perturbation methods (KernelSHAP, LIME) on 3D volumes.

A supervoxel map is a ``LongTensor (D, H, W)`` whose values are consecutive feature ids ``0 .. F-1``; all voxels
with the same id are switched on/off together, exactly like captum's ``feature_mask``.

Cube grid and the paper's code: Agg2Exp computes the cubes per axis as ``int(n_cubes ** (1/3))``, and because
``512 ** (1/3)`` is ``7.999999999999999`` in floating point, the "512 cubes" of the paper are really 7³ = 343.
Here the count per axis is ``round(n_cubes ** (1/3))``, so 512 gives the intended 8³ cubes; a value that is not a
perfect cube gives the nearest cube count (``cube_grid_size`` says which).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from ..errors import GeometryMismatchError, InvalidVolumeError

if TYPE_CHECKING:
    import torch


def cube_grid_size(n_cubes: int) -> int:
    """Cubes per axis for ``n_cubes`` (``round``, not the paper code's ``int``, so 512 → 8, not 7)."""
    if isinstance(n_cubes, bool) or not isinstance(n_cubes, int) or n_cubes < 1:
        raise ValueError(f"n_cubes must be a positive integer (e.g. 512 for 8×8×8 cubes), got {n_cubes!r}.")
    return max(1, int(round(n_cubes ** (1.0 / 3.0))))


def cube_supervoxels(shape: Sequence[int], n_cubes: int = 512) -> "torch.Tensor":
    """A regular grid of ``n³`` boxes over a ``(D, H, W)`` volume, ``n = round(n_cubes ** (1/3))``.

    Voxel ``i`` of an axis of length ``L`` goes to box ``floor(i * n / L)``, so every box is non-empty and box
    sizes differ by at most one voxel when ``L`` is not a multiple of ``n`` (no thin remainder box).
    Ids run z-major: ``id = (iz * n + iy) * n + ix``.
    """
    import torch

    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise InvalidVolumeError(f"cube_supervoxels needs a 3D shape (D, H, W) of positive sizes, got {shape}.")
    n = cube_grid_size(n_cubes)
    if n > min(shape):
        raise ValueError(
            f"{n} cubes per axis (n_cubes={n_cubes}) do not fit a volume of shape {shape}; "
            f"use n_cubes <= {min(shape) ** 3}."
        )
    idx = [torch.div(torch.arange(size) * n, size, rounding_mode="floor") for size in shape]
    return (idx[0].view(-1, 1, 1) * n + idx[1].view(1, -1, 1)) * n + idx[2].view(1, 1, -1)


def semantic_supervoxels(label_map) -> "torch.Tensor":
    """One feature per label present in ``label_map`` (e.g. the predicted segmentation), ids made consecutive.

    Feature ``j`` is the ``j``-th smallest label value present, so a map with labels {0, 2, 5} gives ids {0, 1, 2}.
    The input (tensor or numpy array) is not modified.
    """
    import numpy as np
    import torch

    if isinstance(label_map, np.ndarray):
        label_map = torch.from_numpy(np.ascontiguousarray(label_map))
    if not isinstance(label_map, torch.Tensor):
        raise InvalidVolumeError(f"label_map must be a tensor or numpy array, got {type(label_map).__name__}.")
    if label_map.ndim == 5 and label_map.shape[:2] == (1, 1):
        label_map = label_map[0, 0]
    if label_map.ndim != 3:
        raise InvalidVolumeError(f"label_map must be a 3D (D, H, W) label volume, got shape {tuple(label_map.shape)}.")
    if label_map.is_floating_point():
        if not torch.equal(label_map, label_map.round()):
            raise InvalidVolumeError("label_map holds non-integer values; pass an integer label volume.")
    _, inverse = torch.unique(label_map.detach().cpu(), return_inverse=True)
    return inverse.long().reshape(label_map.shape)


def validate_supervoxels(supervoxels, spatial_shape: Sequence[int]) -> "tuple[torch.Tensor, int]":
    """Check a feature map against the input grid and return it as consecutive ids with the feature count.

    Non-consecutive ids (e.g. raw atlas labels) are renumbered in increasing order, like :func:`semantic_supervoxels`.
    """
    import numpy as np
    import torch

    if isinstance(supervoxels, np.ndarray):
        supervoxels = torch.from_numpy(np.ascontiguousarray(supervoxels))
    if not isinstance(supervoxels, torch.Tensor):
        raise InvalidVolumeError(f"supervoxels must be a (D, H, W) integer tensor, got {type(supervoxels).__name__}.")
    if supervoxels.ndim == 5 and supervoxels.shape[:2] == (1, 1):
        supervoxels = supervoxels[0, 0]
    spatial_shape = tuple(int(s) for s in spatial_shape)
    if tuple(supervoxels.shape) != spatial_shape:
        raise GeometryMismatchError(
            f"supervoxel map has shape {tuple(supervoxels.shape)} but the input volume is {spatial_shape}; "
            "build it on the model-space grid (cube_supervoxels(x.shape[2:]) or the predicted label map)."
        )
    ids = semantic_supervoxels(supervoxels)
    n_features = int(ids.max()) + 1
    if n_features < 2:
        raise ValueError("The supervoxel map has a single feature; KernelSHAP needs at least 2 supervoxels.")
    return ids, n_features
