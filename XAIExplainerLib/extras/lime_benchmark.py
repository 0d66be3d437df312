"""Benchmark of Image-Reg-LIME (issue 11): ``python -m XAIExplainerLib.extras.lime_benchmark``; prints two tables.

1. **T targets from one sample set vs captum ``Lime`` once per target.** Same seeded CNN regressor (T = 11 outputs,
   as PhaseNet's Zernike modes), same bead-like input, same SLIC supervoxels, and the SAME samples (captum's
   ``perturb_func`` replays our design rows), same kernel (``similarity_func`` returns lime's exponential kernel
   of the cosine distance) and the same surrogate (captum's ``SkLearnRidge(alpha=1)``). The weights must agree
   (captum returns float32 coefficients, hence ~1e-7 relative); ours needs S model evaluations, captum T·S.
2. **Machinery at 128³**: SLIC + building 1000 masked volumes + the 11 surrogates, ours (``keep[segments]`` table
   lookup, batched) vs lime's own ``LimeImageExplainer.data_labels`` loop (one ``segments == id`` mask per switched-off
   supervoxel per sample) + 11 ``LimeBase`` fits. The model is replaced by a trivial reduction on both sides so
   only the machinery is timed; lime's loop is measured on ``--lime-samples`` samples and scaled linearly to 1000
   (it is linear in the number of samples; the table says so). SLIC is the same call on both sides (lime's
   default quickshift does not take 3D input). In part 1 our wall time includes SLIC; captum's reuses our segments.
"""
from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

N_TARGETS = 11


def bead_volume(size: int, seed: int = 0) -> "np.ndarray":
    """A blurred point (a bead image) with a little noise, min 0: SLIC has structure to follow."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    vol = np.zeros((size,) * 3)
    c = size // 2
    vol[c - 1:c + 2, c - 2:c + 1, c:c + 2] = 1.0
    vol = gaussian_filter(vol, sigma=(size / 10, size / 14, size / 12)) + 0.02 * rng.random(vol.shape)
    return (vol / vol.max()).astype(np.float32)


def regressor(size: int, seed: int = 0) -> Any:
    """A small seeded CNN with T = 11 outputs (random weights: the benchmark needs a fixed function, not a fit)."""
    import torch

    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Conv3d(1, 8, 3, padding=1), torch.nn.Tanh(), torch.nn.MaxPool3d(2),
        torch.nn.Conv3d(8, 16, 3, padding=1), torch.nn.Tanh(), torch.nn.MaxPool3d(2),
        torch.nn.Flatten(), torch.nn.Linear(16 * (size // 4) ** 3, 64), torch.nn.Tanh(),
        torch.nn.Linear(64, N_TARGETS),
    )
    return net.eval()


class Counted:
    """Counts volumes evaluated (a batch of 16 is 16 evaluations)."""

    def __init__(self, net: Any) -> None:
        self.net, self.count = net, 0

    def __call__(self, x: Any) -> Any:
        self.count += int(x.shape[0])
        return self.net(x)


def _captum_per_target(net: Any, x: Any, ids: Any, design: np.ndarray, batch: int) -> tuple[np.ndarray, int, float]:
    """captum ``Lime`` run once per target on our samples; (weights (T, F), evaluations, seconds)."""
    import torch
    from captum._utils.models.linear_model import SkLearnRidge
    from captum.attr import Lime

    from ..attribution.lime import cosine_distances, exponential_kernel

    kernel = exponential_kernel(cosine_distances(design), 0.25)
    index = {tuple(row): k for k, row in enumerate(design.tolist())}
    counted = Counted(net)
    out = np.zeros((N_TARGETS, design.shape[1]))
    t0 = time.perf_counter()
    for t in range(N_TARGETS):
        rows = iter(design)

        def perturb(original_inp, **kwargs):  # replays our design in order
            return torch.from_numpy(next(rows)[None].copy()).long()

        def similarity(original_inp, perturbed_inp, interpretable_sample, **kwargs):
            return float(kernel[index[tuple(interpretable_sample[0].tolist())]])

        lime = Lime(counted, interpretable_model=SkLearnRidge(alpha=1.0), similarity_func=similarity,
                    perturb_func=perturb)
        with torch.no_grad():
            coef = lime.attribute(x, baselines=0.0, target=t, feature_mask=ids[None, None], n_samples=len(design),
                                  perturbations_per_eval=batch, return_input_shape=False)
        out[t] = coef.detach().double().numpy().ravel()
    return out, counted.count, time.perf_counter() - t0


def targets_table(size: int, n_samples: int, batch: int, seed: int, compactness: float) -> dict[str, Any]:
    """Part 1: ours (all T from one sample set) vs captum ``Lime`` per target on the same samples."""
    import torch

    from ..attribution.lime import image_reg_lime
    from ..attribution.targets import RegressionScore

    net = regressor(size, seed)
    x = torch.from_numpy(bead_volume(size, seed))[None, None]
    target = RegressionScore.build("higher", [f"Z{j}" for j in range(5, 5 + N_TARGETS)])
    image_reg_lime(net, x, target, n_samples=2, supervoxels="cubes", n_segments=8)  # warm-up (imports, allocator)
    counted = Counted(net)
    t0 = time.perf_counter()
    ours = image_reg_lime(counted, x, target, n_samples=n_samples, seed=seed, batch_size=batch,
                          compactness=compactness)
    ours_s = time.perf_counter() - t0
    theirs, captum_evals, captum_s = _captum_per_target(net, x, ours.segments, ours.design, batch)
    delta = float(np.abs(ours.weights.numpy() - theirs).max())
    scale = float(np.abs(theirs).max())
    return {"size": size, "segments": int(ours.weights.shape[1]), "samples": n_samples, "ours_evals": counted.count,
            "captum_evals": captum_evals, "ours_s": ours_s, "captum_s": captum_s, "max_abs_delta": delta,
            "max_abs_weight": scale}


def _trivial_scores(x: Any) -> Any:
    """Stands in for the network: 11 numbers per volume, nearly free, so only the machinery is timed."""
    return x.mean((2, 3, 4)).repeat(1, N_TARGETS)


def machinery_table(size: int, n_samples: int, lime_samples: int, seed: int, compactness: float
                    ) -> dict[str, Any]:
    """Part 2: SLIC + masks + surrogates at ``size``³, ours vs lime's loop (scaled from ``lime_samples``)."""
    import torch
    from lime.lime_base import LimeBase
    from lime.lime_image import LimeImageExplainer
    from sklearn.linear_model import Ridge

    from ..attribution.lime import (cosine_distances, exponential_kernel, fit_surrogate, sample_design,
                                    slic_supervoxels)
    from ..attribution.perturbation_engine import masked_scores

    image = bead_volume(size, seed)
    t0 = time.perf_counter()
    segments = slic_supervoxels(image, 512, compactness)
    slic_s = time.perf_counter() - t0
    n = int(segments.max()) + 1
    design = sample_design(n, n_samples, seed)
    x = torch.from_numpy(image)[None, None]
    ids = torch.from_numpy(segments)
    t0 = time.perf_counter()
    scores = masked_scores(_trivial_scores, x, torch.zeros_like(x), ids, torch.from_numpy(design),
                           lambda out: out, method="bench", batch_size=16).numpy()
    masks_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    kernel = exponential_kernel(cosine_distances(design), 0.25)
    fit_surrogate(design, scores, kernel, 1.0)
    fit_s = time.perf_counter() - t0

    explainer = LimeImageExplainer(kernel_width=0.25, random_state=seed)
    classifier = lambda batch: np.repeat(batch.reshape(len(batch), -1).mean(1, keepdims=True), N_TARGETS, 1)  # noqa
    t0 = time.perf_counter()
    data, labels = explainer.data_labels(image, np.zeros_like(image), segments, classifier, lime_samples,
                                         batch_size=10)
    lime_loop_s = (time.perf_counter() - t0) * n_samples / lime_samples
    base = LimeBase(lambda d: np.sqrt(np.exp(-(d ** 2) / 0.25 ** 2)))
    t0 = time.perf_counter()
    for t in range(N_TARGETS):
        base.explain_instance_with_data(design, scores, cosine_distances(design), t, n, feature_selection="none",
                                        model_regressor=Ridge(alpha=1.0))
    lime_fit_s = time.perf_counter() - t0
    return {"size": size, "segments": n, "samples": n_samples, "lime_measured_samples": lime_samples,
            "slic_s": slic_s, "ours_masks_s": masks_s, "ours_fit_s": fit_s, "lime_loop_s": lime_loop_s,
            "lime_fit_s": lime_fit_s}


def _print(part1: dict[str, Any], part2: dict[str, Any]) -> None:
    print(f"\n1. {N_TARGETS} targets, {part1['size']}^3 CNN regressor, {part1['segments']} SLIC supervoxels, "
          f"{part1['samples']} samples")
    print(f"{'':26}{'ours (one sample set)':>24}{'captum Lime x T':>18}{'ratio':>10}")
    print(f"{'model evaluations':26}{part1['ours_evals']:>24}{part1['captum_evals']:>18}"
          f"{part1['captum_evals'] / part1['ours_evals']:>10.1f}")
    print(f"{'wall seconds':26}{part1['ours_s']:>24.2f}{part1['captum_s']:>18.2f}"
          f"{part1['captum_s'] / part1['ours_s']:>10.1f}")
    print(f"max |weight difference| = {part1['max_abs_delta']:.3g} (max |weight| {part1['max_abs_weight']:.3g})")
    ours = part2["slic_s"] + part2["ours_masks_s"] + part2["ours_fit_s"]
    lime = part2["slic_s"] + part2["lime_loop_s"] + part2["lime_fit_s"]
    print(f"\n2. machinery at {part2['size']}^3, {part2['segments']} SLIC supervoxels, {part2['samples']} samples, "
          f"{N_TARGETS} targets (model replaced by a trivial reduction)")
    print(f"{'step':26}{'ours':>12}{'lime':>12}")
    print(f"{'SLIC (same call)':26}{part2['slic_s']:>12.2f}{part2['slic_s']:>12.2f}")
    print(f"{'masked volumes':26}{part2['ours_masks_s']:>12.2f}{part2['lime_loop_s']:>12.2f}   (lime: measured on "
          f"{part2['lime_measured_samples']} samples, scaled x{part2['samples'] / part2['lime_measured_samples']:g})")
    print(f"{'surrogates':26}{part2['ours_fit_s']:>12.3f}{part2['lime_fit_s']:>12.3f}")
    print(f"{'total':26}{ours:>12.2f}{lime:>12.2f}   ratio {lime / ours:.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=32, help="edge of the regressor's input (part 1)")
    parser.add_argument("--samples", type=int, default=200, help="LIME samples in part 1")
    parser.add_argument("--batch", type=int, default=16, help="volumes per forward, both sides")
    parser.add_argument("--big", type=int, default=128, help="edge of the volume in part 2")
    parser.add_argument("--big-samples", type=int, default=1000, help="samples in part 2")
    parser.add_argument("--lime-samples", type=int, default=20, help="samples lime's loop is measured on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compactness", type=float, default=1.0,
                        help="SLIC compactness (the paper's 0.01 gives 1-2 supervoxels on this bead at [0, 1] scaling)")
    args = parser.parse_args(argv)
    part1 = targets_table(args.size, args.samples, args.batch, args.seed, args.compactness)
    part2 = machinery_table(args.big, args.big_samples, args.lime_samples, args.seed, args.compactness)
    _print(part1, part2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
