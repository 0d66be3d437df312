"""Counterfactual saliency by inpainting (Major et al., "Interpreting medical image classifiers by optimization
based counterfactual impact analysis", ISBI 2020), in 3D and for any classifier.

We look for the smallest smooth region whose *plausible replacement* makes the classifier drop class ``c``.

Notation. ``M ∈ [0, 1]^{D×H×W}`` marks voxels to **replace** (1 = replace), so ar(M) is minimised towards a small
region; the holed image is ``I ⊙ (1 − M)``. ``π(M) = I ⊙ (1 − M) + F(M) ⊙ M`` is the composite of the image and a
fill ``F`` (the inpainting of the holed image, or a zero / mean / blur fill), so voxels with ``M = 0`` are the
input's exactly. ``p = p(c | ·)``, ``odds = p / (1 − p)``.

Loss (minimised), per volume::

    L(M) = λ1 · (φ(M) + ψ(M)) + λ2 · tv(M) + λ3 · ar(M)
    φ(M) = −log(1 − p(c | π(M)))                 ≥ 0, → 0 as the class probability of the counterfactual drops
    ψ(M) = log odds(π(M)) − log odds(I)           < 0 when the probability drops; the larger the drop, the lower

Why these signs: the paper prints ``φ = −log p(c|π)`` and ``ψ = log odds(I) − log odds(π)``; minimising those
would *raise* p(c|π), contradicting the paper's stated aim ("the first term enforces the class probability to
drop", "healthy images, and large score differences will be favoured"). We therefore use the reading in which
both terms reward a drop: φ is the negative log-probability of *not c* (of "healthy", for c = pathological), and
ψ is the log-odds difference taken so that a larger drop gives a lower loss.

tv(M): mean absolute difference of neighbouring voxels, summed over the three axes. ar(M): the mean of M
(``size_term="mean"``) or, with an organ mask O, the soft Dice ``2 Σ M·O / (Σ M + Σ O)`` (``size_term="dice"``,
the paper's preference). With an organ mask the region is confined to the organ (``M ⊙ O``).

Optimisation. ``M`` is the parameter itself, projected onto [0, 1] (clamped) after every Adam step (no sigmoid:
a sigmoid would shrink the steps near 0 and 1). It starts from a regular grid: cubes of ``grid_cell`` voxels
alternate between 0.5 + a and 0.5 − a (a = ``init_amplitude``); restart r > 0 shifts the grid by a seeded random
offset, and the restart with the lowest final loss is kept. With the paper's lr 2e-3 and 100 steps each voxel
moves at most ~0.2, so the threshold θ = 0.5 keeps the voxels whose (Adam-normalised) gradient pushed them up
consistently. Each step fills the *binary* hole ``M ≥ θ`` (the inpainter sees holes as in training; its fill is
recomputed every step, without a graph) and blends with the soft ``M``; the gradient reaches ``M`` through the
composite. Zero / mean / blur fills do not depend on ``M``.

Caveat: ψ has no lower bound, and Adam moves each voxel by the sign of its gradient, so tv and ar (per voxel
λ/N) only win where the classifier's gradient is nearly zero: what keeps the region small is a plausible fill
(replacing healthy tissue by healthy tissue changes nothing), or a larger λ3.

Classifier scores (``scores``): "softmax" (default; the output are logits of mutually exclusive classes),
"sigmoid" (each output is an independent logit) or "probabilities" (the output already is p, checked to lie in
[0, 1]). Several volumes (a batch ``x``) and restarts are optimised in one batch; each has its own loss and Adam
is element-wise, so the result equals one-by-one runs up to the rounding of batched kernels (which Adam's
normalisation can amplify for voxels whose gradient is ~0). Nothing is random except the restart offsets
(``seed``): a run repeats bit for bit for the same batch and seed.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..errors import (CancelledError, GeometryMismatchError, InvalidVolumeError, MethodParameterError,
                      ModelCapabilityError, NonFiniteLossError, UnknownClassError)
from .registry import MethodSpec, OptionSpec, register_method
from .result import AttributionResult

if TYPE_CHECKING:
    import torch

FILLS = ("inpainter", "zero", "mean", "blur")
SCORES = ("softmax", "sigmoid", "probabilities")
SIZE_TERMS = ("mean", "dice")
TERMS = ("phi", "psi", "tv", "ar", "total")


@dataclass
class CounterfactualResult(AttributionResult):
    """``attributions`` (B, D, H, W): the soft map; ``mask`` the thresholded region (bool); ``counterfactual``
    (B, C, D, H, W) the image with the final mask filled (known voxels exact); ``losses[term]`` (steps, B);
    ``prob_before`` / ``prob_after`` (B,) the class probability of the image and of the counterfactual."""

    mask: Any = None
    counterfactual: Any = None
    losses: dict[str, Any] = field(default_factory=dict)
    prob_before: list[float] = field(default_factory=list)
    prob_after: list[float] = field(default_factory=list)
    classes: list[int] = field(default_factory=list)
    restart_losses: list[list[float]] = field(default_factory=list)


# ---- scores -------------------------------------------------------------------------------------------------------
def _classifier_output(model: Any, x: "torch.Tensor") -> "torch.Tensor":
    """``model(x)`` as float (B, K); anything else is refused with what was received."""
    out = model(x)
    if not hasattr(out, "shape") or out.ndim != 2 or out.shape[0] != x.shape[0]:
        got = tuple(out.shape) if hasattr(out, "shape") else type(out).__name__
        raise ModelCapabilityError(
            f"counterfactual needs a classifier returning (batch, classes) scores; for input {tuple(x.shape)} it "
            f"returned {got}. Wrap the network so it returns one score per class (a segmentation map is not one).")
    return out.float()


def log_probabilities(out: "torch.Tensor", c: "torch.Tensor", scores: str) -> tuple["torch.Tensor", "torch.Tensor"]:
    """``(log p_c, log(1 − p_c))`` per row, computed stably from logits (``c``: (B,) class indices)."""
    import torch
    import torch.nn.functional as F

    idx = c.view(-1, 1)
    if scores == "softmax":
        total = torch.logsumexp(out, dim=1)
        own = out.gather(1, idx)[:, 0]
        others = torch.logsumexp(out.scatter(1, idx, float("-inf")), dim=1)
        return own - total, others - total
    if scores == "sigmoid":
        z = out.gather(1, idx)[:, 0]
        return F.logsigmoid(z), F.logsigmoid(-z)
    p = out.gather(1, idx)[:, 0]
    tiny = torch.finfo(out.dtype).tiny
    return torch.log(p.clamp_min(tiny)), torch.log((1 - p).clamp_min(tiny))


def _check_scores(out: "torch.Tensor", scores: str) -> None:
    if scores == "softmax" and out.shape[1] < 2:
        raise MethodParameterError("scores='softmax' over a single output is always 1; use scores='sigmoid' for "
                                   "a one-logit classifier or 'probabilities' if it outputs p.")
    if scores == "probabilities" and bool(((out < 0) | (out > 1)).any()):
        raise MethodParameterError(
            f"scores='probabilities' but the classifier returned values in [{float(out.min()):.3g}, "
            f"{float(out.max()):.3g}]; these look like logits: use scores='softmax' (or 'sigmoid').")


def _resolve_targets(target: Any, n_classes: int, batch: int, names: Sequence[str] | None) -> list[int]:
    """One class per volume: an index, a name (of an adapter's label names) or one per volume; None = predicted."""
    from .targets import resolve_classes

    names = list(names) if names else [str(i) for i in range(n_classes)]
    if len(names) != n_classes:
        names = [str(i) for i in range(n_classes)]
    wanted = list(target) if isinstance(target, (list, tuple)) else [target] * batch
    if len(wanted) != batch:
        raise UnknownClassError(f"{len(wanted)} classes were given for {batch} volumes; give one, or one each.")
    if any(w is None for w in wanted):
        raise UnknownClassError("internal: None targets must be replaced by the predicted class first.")
    return [resolve_classes([w], names)[0] for w in wanted]


# ---- fills and regularisers ------------------------------------------------------------------------------------------
def _gaussian_blur(x: "torch.Tensor", sigma: float) -> "torch.Tensor":
    """Separable Gaussian blur of (B, C, D, H, W) with replicate padding (the blur fill of Fong & Vedaldi)."""
    import torch
    import torch.nn.functional as F

    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    b, ch = x.shape[:2]
    y = x.reshape(b * ch, 1, *x.shape[2:])
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = k.numel()
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
        y = F.conv3d(F.pad(y, pad, mode="replicate"), k.view(shape))
    return y.reshape(x.shape)


Fill = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]


def make_fill(kind: str, inpainter: Any, blur_sigma: float) -> Fill:
    """``fill(image, hole) -> values`` for replaced voxels; ``hole`` is binary (1 = replace)."""
    import torch

    if kind == "zero":
        return lambda image, hole: torch.zeros_like(image)
    if kind == "mean":
        return lambda image, hole: image.mean(dim=(2, 3, 4), keepdim=True).expand_as(image)
    if kind == "blur":
        return lambda image, hole: _gaussian_blur(image, blur_sigma)
    if inpainter is None:
        raise MethodParameterError("fill 'inpainter' needs an inpainter (a module taking image and valid mask); "
                                   "pass one (e.g. load_inpainter(path)) or use fill zero, mean or blur.")

    def inpaint(image: "torch.Tensor", hole: "torch.Tensor") -> "torch.Tensor":
        valid = 1 - hole
        with torch.no_grad():
            out = inpainter(image * valid, valid)
        if not hasattr(out, "shape") or tuple(out.shape) != tuple(image.shape):
            got = tuple(out.shape) if hasattr(out, "shape") else type(out).__name__
            raise ModelCapabilityError(f"the inpainter returned {got} for an image of {tuple(image.shape)}; it must "
                                       "return an image of the same shape (called as inpainter(holed, valid)).")
        return out.to(image.dtype)

    return inpaint


def total_variation(m: "torch.Tensor") -> "torch.Tensor":
    """Per item (B,): mean |neighbour difference| of (B, D, H, W), summed over the three axes."""
    return sum((m.diff(dim=a).abs().flatten(1).mean(1) for a in (1, 2, 3)), m.new_zeros(m.shape[0]))


def area(m: "torch.Tensor", organ: "torch.Tensor | None", size_term: str) -> "torch.Tensor":
    """Per item (B,): mean of M, or the soft Dice of M with the organ mask."""
    if size_term == "mean" or organ is None:
        return m.flatten(1).mean(1)
    inter = (m * organ).flatten(1).sum(1)
    return 2 * inter / (m.flatten(1).sum(1) + organ.flatten(1).sum(1)).clamp_min(1e-8)


def grid_init(shape: Sequence[int], cell: int, amplitude: float, offsets: "torch.Tensor") -> "torch.Tensor":
    """(R, D, H, W) regular grids: cubes of ``cell`` voxels at 0.5 ± amplitude, grid r shifted by ``offsets[r]``."""
    import torch

    axes = [torch.arange(n, dtype=torch.long) for n in shape]
    grids = []
    for off in offsets.tolist():
        z, y, x = [((a + int(o)) // cell) for a, o in zip(axes, off)]
        parity = (z.view(-1, 1, 1) + y.view(1, -1, 1) + x.view(1, 1, -1)) % 2
        grids.append(0.5 + amplitude * (1 - 2 * parity.float()))
    return torch.stack(grids)


# ---- checks --------------------------------------------------------------------------------------------------------
def _check_input(model: Any, x: "torch.Tensor") -> None:
    import torch

    if not isinstance(x, torch.Tensor) or x.ndim != 5:
        got = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
        raise InvalidVolumeError(f"counterfactual needs x of shape (batch, channels, D, H, W); got {got}.")
    if not bool(torch.isfinite(x).all()):
        raise InvalidVolumeError("the input holds NaN/Inf voxels; fix or mask them before explaining.")
    if isinstance(model, torch.nn.Module) and model.training:
        raise ModelCapabilityError("the classifier is in training mode (BatchNorm/dropout would mix the batch); "
                                   "call model.eval() first.")


def organ_tensor(organ_mask: Any, x: "torch.Tensor", size_term: str) -> "torch.Tensor | None":
    """The organ mask as float (B, D, H, W) on x's device; wrong grid or an empty organ fail before any work."""
    import torch

    if organ_mask is None:
        if size_term == "dice":
            raise MethodParameterError("size_term 'dice' needs an organ mask (Dice overlap with it); pass "
                                       "organ_mask or use size_term 'mean'.")
        return None
    organ = torch.as_tensor(organ_mask, device=x.device)
    if organ.ndim == 3:
        organ = organ[None]
    elif organ.ndim == 5 and organ.shape[1] == 1:
        organ = organ[:, 0]
    if organ.ndim != 4 or tuple(organ.shape[1:]) != tuple(x.shape[2:]) or organ.shape[0] not in (1, x.shape[0]):
        raise GeometryMismatchError(f"the organ mask has shape {tuple(organ_mask.shape)} but the volume grid is "
                                    f"{tuple(x.shape[2:])}; resample it onto the image (nearest neighbour).")
    organ = (organ > 0).float().expand(x.shape[0], -1, -1, -1)
    empty = [i for i in range(organ.shape[0]) if not bool(organ[i].any())]
    if empty:
        raise InvalidVolumeError(f"the organ mask is empty (no voxel > 0) for volume(s) {empty}; give a mask that "
                                 "covers the organ, or none.")
    return organ


def _check_options(steps: int, lr: float, threshold: float, restarts: int, grid_cell: int, fill: str,
                   scores: str, size_term: str) -> None:
    checks = [(steps >= 1, f"steps must be >= 1, got {steps}"), (lr > 0, f"lr must be > 0, got {lr}"),
              (0 < threshold < 1, f"threshold must be in (0, 1), got {threshold}"),
              (restarts >= 1, f"restarts must be >= 1, got {restarts}"),
              (grid_cell >= 1, f"grid_cell must be >= 1, got {grid_cell}"),
              (fill in FILLS, f"fill {fill!r} unknown; use one of {', '.join(FILLS)}"),
              (scores in SCORES, f"scores {scores!r} unknown; use one of {', '.join(SCORES)}"),
              (size_term in SIZE_TERMS, f"size_term {size_term!r} unknown; use one of {', '.join(SIZE_TERMS)}")]
    for ok, message in checks:
        if not ok:
            raise MethodParameterError(message + ".")


def _declared_scores(model: Any, scores: str) -> None:
    """An adapter whose JSON says it outputs probabilities must not be softmaxed again (silently wrong)."""
    declared = getattr(getattr(model, "config", None), "output", None)
    if declared == "probabilities" and scores != "probabilities":
        raise MethodParameterError("the model JSON declares output 'probabilities' but scores is "
                                   f"{scores!r}; pass scores='probabilities'.")


# ---- optimisation ---------------------------------------------------------------------------------------------------
@dataclass
class _Problem:
    """Everything one step needs (B·R items: each volume repeated once per restart)."""

    model: Any
    x: "torch.Tensor"
    classes: "torch.Tensor"
    logodds0: "torch.Tensor"
    organ: "torch.Tensor | None"
    fill: Callable
    scores: str
    size_term: str
    threshold: float
    weights: tuple[float, float, float]


def _region(problem: _Problem, m: "torch.Tensor") -> "torch.Tensor":
    return m * problem.organ if problem.organ is not None else m


def counterfactual_image(problem: _Problem, m: "torch.Tensor") -> "torch.Tensor":
    """π(M): the binary hole M ≥ θ filled, blended with the soft M (known voxels exact)."""
    from ..models.partial_conv import composite

    hole = (m >= problem.threshold).to(problem.x.dtype)[:, None]
    filled = problem.fill(problem.x, hole)
    return composite(problem.x, filled, m[:, None])


def loss_terms(problem: _Problem, m: "torch.Tensor") -> dict[str, "torch.Tensor"]:
    """The per-item terms φ, ψ, tv, ar and the weighted total (module docstring for the signs)."""
    region = _region(problem, m)
    out = _classifier_output(problem.model, counterfactual_image(problem, region))
    logp, log1mp = log_probabilities(out, problem.classes, problem.scores)
    l1, l2, l3 = problem.weights
    terms = {"phi": -log1mp, "psi": (logp - log1mp) - problem.logodds0, "tv": total_variation(region),
             "ar": area(region, problem.organ, problem.size_term)}
    terms["total"] = l1 * (terms["phi"] + terms["psi"]) + l2 * terms["tv"] + l3 * terms["ar"]
    return terms


def _check_finite(terms: dict[str, "torch.Tensor"], step: int) -> None:
    import torch

    for name in TERMS:
        bad = ~torch.isfinite(terms[name].detach())
        if bool(bad.any()):
            items = bad.nonzero().flatten().tolist()
            raise NonFiniteLossError(
                f"the counterfactual loss became {float(terms[name].detach()[items[0]])} at step {step} in term "
                f"'{name}' "
                f"(batch item(s) {items[:5]}); check the classifier's output there, or lower lr / use scores "
                "'softmax' on logits.")


def optimise_mask(problem: _Problem, m0: "torch.Tensor", steps: int, lr: float,
                  progress: Callable[[float, str], None] | None, cancel: Callable[[], bool] | None
                  ) -> tuple["torch.Tensor", dict[str, list[list[float]]]]:
    """Adam on M, projected onto [0, 1] after every step; returns M and the per-step terms (steps × items)."""
    import torch

    m = m0.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([m], lr=lr)
    curves: dict[str, list[list[float]]] = {name: [] for name in TERMS}
    for step in range(steps):
        if cancel is not None and cancel():
            raise CancelledError(f"counterfactual was cancelled at step {step} of {steps}.")
        terms = loss_terms(problem, m)
        _check_finite(terms, step)
        for name in TERMS:
            curves[name].append(terms[name].detach().cpu().tolist())
        (grad,) = torch.autograd.grad(terms["total"].sum(), [m])
        m.grad = grad
        optimiser.step()
        with torch.no_grad():
            m.clamp_(0.0, 1.0)
        if progress is not None:
            progress((step + 1) / steps, f"counterfactual step {step + 1}/{steps}")
    return m.detach(), curves


def _before(model: Any, x: "torch.Tensor", target: Any, scores: str
            ) -> tuple[list[int], "torch.Tensor", "torch.Tensor"]:
    """The classes (None = predicted), and p_c and log odds_c of the unmodified images."""
    import torch

    with torch.no_grad():
        out = _classifier_output(model, x)
    _check_scores(out, scores)
    if target is None or (isinstance(target, (list, tuple)) and any(t is None for t in target)):
        predicted = out.argmax(dim=1).tolist()
        wanted = list(target) if isinstance(target, (list, tuple)) else [None] * x.shape[0]
        target = [p if w is None else w for w, p in zip(wanted, predicted)]
    classes = _resolve_targets(target, out.shape[1], x.shape[0], getattr(model, "label_names", None))
    logp, log1mp = log_probabilities(out, torch.tensor(classes, device=out.device), scores)
    return classes, logp.exp(), logp - log1mp


def _restart_offsets(restarts: int, cell: int, seed: int) -> "torch.Tensor":
    import torch

    generator = torch.Generator().manual_seed(int(seed))
    offsets = torch.randint(0, 2 * cell, (restarts, 3), generator=generator)
    offsets[0] = 0  # the first start is the plain grid, whatever the seed
    return offsets


def counterfactual(
    model: Any, x: "torch.Tensor", target: Any = None, *, fill: str = "inpainter", inpainter: Any = None,
    organ_mask: Any = None, steps: int = 100, lr: float = 2e-3, lambda1: float = 1.0, lambda2: float = 0.1,
    lambda3: float = 0.1, threshold: float = 0.5, size_term: str = "mean", scores: str = "softmax",
    restarts: int = 1, grid_cell: int = 4, init_amplitude: float = 0.02, blur_sigma: float = 4.0,
    device: Any = None, batch_size: int | None = None, progress: Callable[[float, str], None] | None = None,
    cancel: Callable[[], bool] | None = None, seed: int = 0,
) -> CounterfactualResult:
    """Optimise the counterfactual mask of class ``target`` (index/name, one per volume, None = predicted) for
    every volume of ``x`` (B, C, D, H, W) at once; see the module docstring for the loss and its signs.

    ``fill``: "inpainter" (``inpainter(holed_image, valid) -> image``, e.g. :func:`load_inpainter`), "zero",
    "mean" (per-volume mean) or "blur" (Gaussian, ``blur_sigma`` voxels). ``organ_mask`` (D, H, W) or
    (B, D, H, W) confines the region and enables ``size_term="dice"``. ``device``/``batch_size`` are accepted
    for the registry's plumbing: everything runs where ``x`` is, all B·restarts items in one batch.
    """
    import torch

    started = time.perf_counter()
    _check_options(steps, lr, threshold, restarts, grid_cell, fill, scores, size_term)
    _check_input(model, x)
    _declared_scores(model, scores)
    organ = organ_tensor(organ_mask, x, size_term)
    fill_fn = make_fill(fill, inpainter, blur_sigma)
    x = x.detach().float()
    classes, p0, logodds0 = _before(model, x, target, scores)
    b, r = x.shape[0], restarts
    rep = lambda t: None if t is None else t.repeat_interleave(r, dim=0)  # noqa: E731 - item i*r+j: volume i, start j
    problem = _Problem(model, rep(x), rep(torch.tensor(classes, device=x.device)), rep(logodds0), rep(organ),
                       fill_fn, scores, size_term, threshold, (lambda1, lambda2, lambda3))
    grids = grid_init(x.shape[2:], grid_cell, init_amplitude, _restart_offsets(r, grid_cell, seed)).to(x.device)
    m, curves = optimise_mask(problem, grids.repeat(b, 1, 1, 1), steps, lr, progress, cancel)
    final = torch.tensor(curves["total"][-1]).view(b, r)
    best = final.argmin(dim=1)
    pick = (torch.arange(b) * r + best).to(x.device)
    return _finish(problem, m, pick, curves, classes, p0, final, started, seed, dict(
        fill=fill, steps=steps, lr=lr, lambda1=lambda1, lambda2=lambda2, lambda3=lambda3, threshold=threshold,
        size_term=size_term, scores=scores, restarts=restarts, grid_cell=grid_cell, init_amplitude=init_amplitude,
        blur_sigma=blur_sigma, organ_mask=organ is not None, parametrisation="clamp (projected Adam)"))


def _finish(problem: _Problem, m: "torch.Tensor", pick: "torch.Tensor", curves: dict, classes: list[int],
            p0: "torch.Tensor", final: "torch.Tensor", started: float, seed: int, params: dict
            ) -> CounterfactualResult:
    """Keep the best restart per volume; the counterfactual is the *binary* mask filled (known voxels exact)."""
    import torch

    soft = _region(problem, m)[pick]
    mask = soft >= problem.threshold
    best = _Problem(problem.model, problem.x[pick], problem.classes[pick], problem.logodds0[pick],
                    None if problem.organ is None else problem.organ[pick], problem.fill, problem.scores,
                    problem.size_term, problem.threshold, problem.weights)
    with torch.no_grad():
        image = counterfactual_image(best, mask.float())
        logp, _ = log_probabilities(_classifier_output(problem.model, image), best.classes, problem.scores)
    idx = pick.cpu().tolist()
    losses = {name: [[row[i] for i in idx] for row in curves[name]] for name in TERMS}
    steps = len(curves["total"])
    return CounterfactualResult(
        attributions=soft.detach().float().cpu(), target_names=[f"class {c}" for c in classes],
        method="counterfactual", params=params, n_model_evaluations=(steps * problem.x.shape[0] + 2 * len(idx)),
        seconds=time.perf_counter() - started, seed=seed, mask=mask.cpu(), counterfactual=image.cpu(),
        losses=losses, prob_before=p0.cpu().tolist(), prob_after=logp.exp().cpu().tolist(), classes=classes,
        restart_losses=final.tolist())


register_method(MethodSpec(
    "counterfactual", "Counterfactual (inpainting)",
    "The smallest smooth region whose inpainted replacement makes the classifier drop the class: a mask "
    "optimised for 100 Adam steps from a regular grid.",
    "Major et al. 2020, Interpreting Medical Image Classifiers by Optimization Based Counterfactual Impact "
    "Analysis, ISBI, arXiv:2004.01610",
    counterfactual, ("classifier",), (
        OptionSpec("fill", str, "inpainter", "what replaces the region: the partial-convolution inpainter, or "
                   "zero / mean / blur fills (out-of-distribution, for comparison)", choices=FILLS),
        OptionSpec("steps", int, 100, "Adam steps", minimum=1),
        OptionSpec("lr", float, 2e-3, "Adam learning rate", minimum=0, exclusive_minimum=True),
        OptionSpec("lambda1", float, 1.0, "weight of the class terms φ + ψ", minimum=0),
        OptionSpec("lambda2", float, 0.1, "weight of the total variation of the mask", minimum=0),
        OptionSpec("lambda3", float, 0.1, "weight of the mask size (mean, or Dice with the organ)", minimum=0),
        OptionSpec("threshold", float, 0.5, "θ: the soft map thresholded into the mask", minimum=0, maximum=1,
                   exclusive_minimum=True),
        OptionSpec("size_term", str, "mean", "ar(M): mean of M, or Dice with the organ mask", choices=SIZE_TERMS),
        OptionSpec("scores", str, "softmax", "how the classifier's output becomes p: softmax of logits, sigmoid "
                   "per logit, or already probabilities", choices=SCORES),
        OptionSpec("restarts", int, 1, "grid initialisations per volume (shifted; the lowest loss is kept)",
                   minimum=1),
        OptionSpec("grid_cell", int, 4, "edge of the initial grid's cubes (voxels)", minimum=1),
        OptionSpec("init_amplitude", float, 0.02, "initial grid values 0.5 ± this", minimum=0, maximum=0.5),
        OptionSpec("blur_sigma", float, 4.0, "Gaussian sigma (voxels) of the blur fill", minimum=0,
                   exclusive_minimum=True),
    ), deterministic=False), replace=True)
