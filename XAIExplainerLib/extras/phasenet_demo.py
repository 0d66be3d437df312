"""The Image-Reg-LIME paper's demo on its own problem: a PhaseNet-simulated bead with oblique astigmatism.

    python -m XAIExplainerLib.extras.phasenet_demo --output DIR [--samples 1000] [--compactness 0.01]

The bead carries oblique astigmatism (Noll 5) of 0.093 µm and no other aberration, as the paper's Figure 1 example
(ground truth 0.093 µm). The shipped PhaseNet network (Resources/PhaseNet) predicts all 11 modes; the demo then

1. explains the prediction of all 11 modes from ONE set of perturbed forwards (score "higher");
2. asks "why was the ground truth 0.093 not predicted for oblique astigmatism?" (score "closeness", reference
   mode: positive = supports not-0.093),

both through :func:`XAIExplainerLib.pipelines.regression.explain_regression` with the paper's settings (SLIC,
512 segments asked, fill 0, 1000 samples), and writes the bead, both result folders, a figure and a summary JSON
with the predictions, the surrogate R², the supervoxel count SLIC actually returned, and where the weight lies
(on the bead's bright supervoxels or on the dark background).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

WEIGHTS = Path(__file__).resolve().parents[1] / "Resources" / "PhaseNet" / "phasenet_beads.pt"
GROUND_TRUTH = 0.093  # µm of oblique astigmatism, the paper's example
TARGET = "oblique_astigmatism"


def weight_locations(expl: Any, bead: np.ndarray, target: int = 0, top: int = 10) -> dict[str, Any]:
    """Where a map's weight lies relative to the bead's light: the brightness ranks (0 = brightest supervoxel by
    mean intensity) of the ``top`` supervoxels with the largest |weight|, and the summed weight on the ``top``
    brightest supervoxels against the summed weight on all the others (the dark, noisy background)."""
    seg = np.asarray(expl.segments.array).astype(np.int64)
    counts = np.bincount(seg.ravel(), minlength=expl.weights.shape[1])
    means = np.bincount(seg.ravel(), bead.ravel().astype(np.float64), minlength=counts.size) / np.maximum(counts, 1)
    rank = np.empty(counts.size, np.int64)
    rank[np.argsort(-means)] = np.arange(counts.size)
    w = np.asarray(expl.weights[target], dtype=np.float64)
    largest = np.argsort(-np.abs(w))[:top]
    bright = rank < top
    return {"n_supervoxels": int(counts.size),
            f"brightness_ranks_of_the_{top}_largest_weights": sorted(int(r) for r in rank[largest]),
            f"weight_sum_on_the_{top}_brightest": round(float(w[bright].sum()), 6),
            "weight_sum_on_the_rest": round(float(w[~bright].sum()), 6),
            "largest_weight": round(float(w[largest[0]]), 6)}


def deletion_check(model: Any, bead: Any, segments: np.ndarray, target: int, counts: Sequence[int] = (3, 10, 30)
                   ) -> dict[str, float]:
    """The target's prediction with the ``k`` brightest supervoxels switched to 0 (the demo's fill), and with
    everything but the 10 brightest switched off: which way does the light move the prediction?"""
    import torch

    x = model.to_tensor(model.preprocess(bead))
    seg = torch.from_numpy(np.asarray(segments, dtype=np.int64))
    image = np.asarray(bead.array, dtype=np.float64)
    means = np.bincount(segments.ravel(), image.ravel()) / np.bincount(segments.ravel())
    order = torch.from_numpy(np.argsort(-means).copy())
    masks = {f"{k}_brightest_off": ~torch.isin(seg, order[:k]) for k in counts}
    masks["all_but_10_brightest_off"] = torch.isin(seg, order[:10])
    with torch.no_grad():
        return {name: round(float(model.forward(x * keep.to(x.dtype))[0, target]), 5) for name, keep in masks.items()}


def demo_figure(bead: np.ndarray, plain: np.ndarray, why_not: np.ndarray, path: Path, titles: Sequence[str]) -> Path:
    """Rows: bead, LIME map of oblique astigmatism, "why not 0.093" map; columns: planes below, at and above
    focus (where astigmatism shows as perpendicular focal lines) and an x–z section."""
    from ..figures import new_figure, save_figure

    centre = bead.shape[0] // 2
    planes = [centre - 6, centre, centre + 6]
    fig = new_figure(13, 9.5)
    for row, (data, title, cmap) in enumerate([(bead, titles[0], "magma"), (plain, titles[1], "RdBu_r"),
                                               (why_not, titles[2], "RdBu_r")]):
        vmax = float(np.abs(data).max()) or 1.0
        vmin = float(data.min()) if cmap == "magma" else -vmax
        views = [(data[z], f"z = {z - centre:+d} planes") for z in planes] + [(data[:, centre], "x–z section")]
        for col, (image, label) in enumerate(views):
            ax = fig.add_subplot(3, 4, row * 4 + col + 1)
            im = ax.imshow(image, cmap=cmap, vmin=vmin, vmax=vmax, origin="lower", interpolation="nearest")
            ax.set_title(f"{title}\n{label}" if col == 0 else label, fontsize=8)
            ax.axis("off")
        fig.colorbar(im, ax=ax, fraction=0.046)
    return save_figure(fig, path)


def run_demo(output: str | Path, weights: str | Path = WEIGHTS, n_samples: int = 1000, compactness: float = 0.01,
             snr: float = 3.0, bead_seed: int = 0, seed: int = 0, overwrite: bool = False) -> dict[str, Any]:
    """Both explanations of one simulated bead, written to ``output`` atomically; returns the summary."""
    from ..datasets.phasenet import TARGET_NAMES, bead_volume
    from ..io import atomic_output_folder, write_json
    from ..models.outputs import RegressionModel
    from ..outputs import check_output_folder
    from ..pipelines.regression import explain_regression, save_regression_explanation
    from ..volume import write_volume

    check_output_folder(output, [weights], overwrite=overwrite)  # before the model is loaded or run
    model = RegressionModel.load(weights, device="cpu", precision="float32")
    truth = np.zeros(len(TARGET_NAMES))
    truth[TARGET_NAMES.index(TARGET)] = GROUND_TRUTH
    bead, _ = bead_volume(truth, seed=bead_seed, snr=snr, jitter=False)
    params = {"n_samples": n_samples, "n_segments": 512, "compactness": compactness, "fill": "zero"}
    t0 = time.perf_counter()
    plain = explain_regression(bead, model, method_params=params, seed=seed)
    t1 = time.perf_counter()
    why_not = explain_regression(bead, model, targets=[TARGET], score="closeness", reference=GROUND_TRUTH,
                                 method_params=params, seed=seed)
    t2 = time.perf_counter()
    k = plain.target_names.index(TARGET)
    summary = {
        "bead": {"ground_truth_um": dict(zip(TARGET_NAMES, truth.tolist())), "snr": snr, "seed": bead_seed,
                 "shape_zyx": list(bead.shape), "spacing_xyz_um": list(bead.spacing)},
        "weights": str(weights), "settings": {**params, "seed": seed},
        "predictions_um": {n: round(v, 5) for n, v in plain.predictions.items()},
        "supervoxels_obtained": int(plain.weights.shape[1]),
        "all_modes": {"surrogate_r2": {n: round(float(r), 4) for n, r in zip(plain.target_names, plain.r2)},
                      "where_oblique_astigmatism": weight_locations(plain, bead.array, k),
                      "seconds": round(t1 - t0, 1)},
        "prediction_with_supervoxels_off_um": deletion_check(model, bead, np.asarray(plain.segments.array), k),
        "why_not_ground_truth": {"target": TARGET, "reference_um": GROUND_TRUTH,
                                 "prediction_um": round(plain.predictions[TARGET], 5),
                                 "surrogate_r2": round(float(why_not.r2[0]), 4),
                                 "sum_of_weights": round(float(why_not.weights[0].sum()), 6),
                                 "reads": "positive = supports not-0.093 (keeping it keeps the prediction away)",
                                 "where": weight_locations(why_not, bead.array, 0),
                                 "seconds": round(t2 - t1, 1)},
    }
    with atomic_output_folder(output, overwrite=overwrite) as tmp:
        write_volume(bead, tmp / "bead.nii.gz")
        save_regression_explanation(plain, tmp / "all_modes")
        save_regression_explanation(why_not, tmp / "why_not_ground_truth")
        demo_figure(bead.array, np.asarray(plain.heatmaps[k].array), np.asarray(why_not.heatmaps[0].array),
                    tmp / "phasenet_lime.png",
                    [f"bead (oblique astig. {GROUND_TRUTH} µm)",
                     f"LIME: oblique astig. = {plain.predictions[TARGET]:.3f} µm (R² {plain.r2[k]:.2f})",
                     f"why not {GROUND_TRUTH}? (+ = supports not-{GROUND_TRUTH}, R² {why_not.r2[0]:.2f})"])
        write_json(tmp / "summary.json", summary)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Image-Reg-LIME on a PhaseNet-simulated bead (the paper's demo).")
    p.add_argument("--output", required=True, help="folder to create")
    p.add_argument("--weights", default=str(WEIGHTS), help="PhaseNet weights (.pt with its JSON beside it)")
    p.add_argument("--samples", type=int, default=1000, help="perturbed samples (default 1000, lime's)")
    p.add_argument("--compactness", type=float, default=0.01, help="SLIC compactness (paper: 0.01)")
    p.add_argument("--snr", type=float, default=3.0, help="bead signal-to-noise factor (PhaseNet: 1-5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the perturbation samples")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    summary = run_demo(args.output, args.weights, args.samples, args.compactness, args.snr, seed=args.seed,
                       overwrite=args.overwrite)
    why = summary["why_not_ground_truth"]
    print(f"oblique astigmatism: ground truth {GROUND_TRUTH} µm, predicted {why['prediction_um']} µm; "
          f"{summary['supervoxels_obtained']} supervoxels; wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
