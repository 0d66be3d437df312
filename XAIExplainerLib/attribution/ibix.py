"""IBIX (Instance-Based Inference Explainers, Telea et al.): forward and backward mappings of image-to-image networks.

Why here and not in the method registry: IBIX answers "which output does this *input region* change?" (forward map
F(M^x), a map on the output grid) and "which input makes this *output region*?" (backward map B(M^f), a map on the
input grid). Both are tensor-level computations on a model and an input, like the other engines of this layer, so
the mathematics lives in ``attribution/`` (this file: the mappings; ``ibix_blocks.py``: the partitions and the
multiscale scheme) and the volume-level product (masks on the input grid, preprocessing, files) in
``pipelines/ibix.py``. It is not registered as an attribution method: its inputs (painted masks) and outputs (a
map on the *output* grid) do not fit ``method(model, x, target)``.

Definitions (``f`` the model, ``x`` the input, ``h_k = k·H/N`` for ``k = −N..N, k ≠ 0``, 2N jitters):

* forward map, ``variant="paper"`` (Eq. 1/5): ``F = 1/(2N) Σ_k (f(x + h_k M^x) − f(x)) / h_k`` — signed, a
  scale-space directional derivative; for a linear model it is exactly ``J·M^x`` for every H.
* forward map, ``variant="authors"`` (hisamuka/IBIX-CAE code): ``F = 1/(2N) Σ_k |f(x + h_k M^x) − f(x)|`` — not
  divided by h, so it grows with H and is never negative.
* backward map per block D_k, ``variant="eq6"`` (paper Eq. 6 on magnitudes): ``Σ_{M^f}|F(D_k)| / Σ_all|F(D_k)|``,
  the fraction of the block's output response that falls inside M^f (in [0, 1]).
* ``variant="authors"``: mean of the authors' F(D_k) inside M^f (no denominator).
* ``variant="sum"``: ``Σ_{M^f} F(D_k)`` (paper Eq. 7 generalised to blocks; signed) — the quantity whose
  small-jitter, unit-block limit is the exact vector-Jacobian product.

Exact mode (beyond the paper): the forward map as one ``torch.func.jvp`` (J·M^x) and the voxel-resolution
backward map as one vector-Jacobian product (∇_x Σ_{M^f} f). Both work on TorchScript models (no hooks).
"""
from __future__ import annotations

from typing import Any, Callable

from ..errors import GeometryMismatchError, InvalidVolumeError, MethodParameterError, ModelCapabilityError
from ._batching import run_batches

FORWARD_VARIANTS = ("paper", "authors")
BACKWARD_VARIANTS = ("eq6", "authors", "sum")
#: N as in the paper's examples ("N = H = 100"): 2N = 200 jittered runs per region.
DEFAULT_N = 100


def jitters(jitter_range: float, n_jitters: int) -> list[float]:
    """``h_k = k·H/N`` for ``k = −N..N, k ≠ 0`` (2N values); a zero range or N < 1 is refused (division by h)."""
    if isinstance(n_jitters, bool) or int(n_jitters) != n_jitters or n_jitters < 1:
        raise MethodParameterError(f"n_jitters must be a positive integer (N jitters per sign), got {n_jitters!r}.")
    if not float(jitter_range) > 0.0:
        raise MethodParameterError(f"The jitter range H must be > 0 (it divides the output change), got "
                                   f"{jitter_range!r}; use 10–20 % of the input's intensity range.")
    n = int(n_jitters)
    return [k * float(jitter_range) / n for k in range(-n, n + 1) if k != 0]


def check_region(mask: Any, shape: tuple[int, ...], what: str) -> Any:
    """A non-empty region on ``shape`` (the model input or output grid) as a float tensor; else a named error."""
    import torch

    mask = torch.as_tensor(mask)
    if tuple(mask.shape) != tuple(shape):
        raise GeometryMismatchError(f"The {what} has shape {tuple(mask.shape)} but must be on the grid {tuple(shape)};"
                                    " paint it on the volume it refers to.")
    if not bool((mask != 0).any()):
        raise InvalidVolumeError(f"The {what} is empty (no voxel selected); paint at least one voxel.")
    return (mask != 0).to(torch.float64 if mask.dtype == torch.float64 else torch.float32)


def output_of(model: Callable, x: Any) -> Any:
    """f(x) for a (1, C, D, H, W) input; refused when the output is not a batch of volumes (no grid to map)."""
    import torch

    with torch.no_grad():
        out = model(x)
    _check_volume_output(out, x)
    return out


def _check_volume_output(out: Any, x: Any) -> None:
    """An output without a spatial grid (a class vector, a tuple) cannot be related to the input's voxels."""
    import torch

    if not isinstance(out, torch.Tensor) or out.ndim != 5 or out.shape[0] != x.shape[0]:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelCapabilityError(f"IBIX needs an image-to-image output (batch, channels, D, H, W) to relate to the "
                                   f"input grid; this model returned {shape}.")


def _perturbed(x: Any, region: Any, hs: list[float]) -> Any:
    """The batch ``x + h·region`` for each h (batched on the batch axis)."""
    import torch

    h = torch.tensor(hs, dtype=x.dtype, device=x.device).view(-1, 1, 1, 1, 1)
    return x + h * region.to(x.device, x.dtype)


def default_batch(x: Any, batch_size: int | None) -> int:
    """Jittered inputs per pass. Runs are gradient-free, so the gradient engine's memory probe (bytes saved for
    backward) measures nothing; a fixed default is used instead: 16 on CUDA (out-of-memory halves it), 2 on the CPU
    (where running out of memory kills the process instead of raising)."""
    if batch_size is not None:
        return int(batch_size)
    return 16 if x.device.type == "cuda" else 2


def _response(out: Any, base: Any, hs: list[float], variant: str) -> Any:
    """Per-jitter response: (f − f0)/h (paper) or |f − f0| (authors)."""
    import torch

    delta = out - base
    if variant == "paper":
        return delta / torch.tensor(hs, dtype=delta.dtype, device=delta.device).view(-1, 1, 1, 1, 1)
    return delta.abs()


def forward_map(model: Callable, x: Any, region: Any, *, jitter_range: float, n_jitters: int = DEFAULT_N,
                variant: str = "paper", batch_size: int | None = None,
                progress: Callable[[float, str], None] | None = None) -> Any:
    """F(M^x) on the output grid, (C′, D′, H′, W′): the mean response to the 2N jitters of the region."""
    import torch

    if variant not in FORWARD_VARIANTS:
        raise MethodParameterError(f"Unknown forward-map variant '{variant}'; use one of {FORWARD_VARIANTS}.")
    hs = jitters(jitter_range, n_jitters)
    region = check_region(region, tuple(x.shape[2:]), "input mask M^x")
    base = output_of(model, x)
    total = torch.zeros_like(base[0])

    def compute(start: int, stop: int) -> Any:
        with torch.no_grad():
            return _response(model(_perturbed(x, region, hs[start:stop])), base, hs[start:stop], variant).sum(0)

    def commit(start: int, stop: int, summed: Any) -> None:
        total.add_(summed)

    run_batches(len(hs), compute, commit, device=x.device, method="IBIX forward map",
                batch_size=default_batch(x, batch_size), what="jittered runs", item="jitter", progress=progress)
    return total / len(hs)


def forward_map_exact(model: Callable, x: Any, region: Any) -> Any:
    """J·M^x as one forward-mode product: the H → 0 limit of the paper's forward map."""
    import torch

    region = check_region(region, tuple(x.shape[2:]), "input mask M^x")
    tangent = region.to(x.device, x.dtype).expand_as(x).contiguous()
    out, jvp = torch.func.jvp(model, (x,), (tangent,))  # one pass: primal and tangent together
    _check_volume_output(out, x)
    return jvp.detach()[0]


def backward_map_exact(model: Callable, x: Any, output_region: Any) -> Any:
    """∇_x Σ_{M^f} f, (C, D, H, W), as one backward pass: paper Eq. 7 at voxel resolution (signed)."""
    import torch

    xg = x.detach().clone().requires_grad_(True)
    out = model(xg)  # one forward with a graph, then one backward
    _check_volume_output(out, x)
    weights = check_region(_broadcast_output_region(output_region, out), tuple(out.shape[1:]), "output mask M^f")
    score = (out[0] * weights.to(out.device, out.dtype)).sum()
    (grad,) = torch.autograd.grad(score, xg)
    return grad.detach()[0]


def _broadcast_output_region(region: Any, base: Any) -> Any:
    """An output mask (D′, H′, W′) applies to every channel; (C′, D′, H′, W′) selects per channel."""
    import torch

    region = torch.as_tensor(region)
    if region.ndim == 3 and tuple(region.shape) == tuple(base.shape[2:]):
        return region.unsqueeze(0).expand(base.shape[1], *region.shape)
    return region
