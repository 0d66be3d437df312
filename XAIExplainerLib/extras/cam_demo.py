"""Grad-CAM++, LayerCAM and SmoothGrad of the shipped tissue-fraction regressor on real brain patches.

    python -m XAIExplainerLib.extras.cam_demo --output cam_demo

Takes held-out patches (right hemisphere of MNI152 at 2 mm; the network was trained on the left one) — the
patch with the most grey matter, the most white matter and the most CSF — writes each as NIfTI in its MNI
position, explains it for all three targets with Grad-CAM++ (``block3``), LayerCAM (``block1 block2 block3``,
max fusion) and SmoothGrad with the thesis' settings (n = 30, σ = 0.2 and 0.3 of the range), and writes:

* ``<patch>/<method>/``: the regression pipeline's folders (what ``xai-explainer report`` reads);
* ``ground_truth.csv`` (case,target,value: the patches' true tissue fractions, for the report's Δ and rΔ);
* ``cam_demo.png``: methods (rows) × targets (columns) over the first patch, the thesis' figure 4.2 layout;
* ``summary.json``: predictions, truths and blank maps per patch.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

#: (folder name, method, options): the four rows of the thesis' figures.
RUNS = (
    ("gradcampp", "gradcampp", {"layers": "block3"}),
    ("layercam", "layercam", {"layers": "block1 block2 block3"}),
    ("smoothgrad_sigma0.2", "smoothgrad", {"n_samples": 30, "noise_level": 0.2}),
    ("smoothgrad_sigma0.3", "smoothgrad", {"n_samples": 30, "noise_level": 0.3}),
)


def patch_volumes(count: int = 3) -> list[tuple[str, Any, dict[str, float]]]:
    """(name, patch Volume in its MNI position, true fractions) of held-out right-hemisphere patches: in turn the
    one richest in each tissue (TISSUE_NAMES order) among those at least 16 voxels from the ones already taken."""
    from ..datasets.tissue import TISSUE_NAMES, hemisphere_patches, mni152_tissues
    from ..volume import Volume

    maps = mni152_tissues(2.0)
    patches, fractions, corners = hemisphere_patches(maps, "right", 32, 8)
    chosen: list[int] = []
    order = [list(np.argsort(-fractions[:, t])) for t in range(len(TISSUE_NAMES))]

    def apart(index: int) -> bool:  # patches overlapping less than half along some axis: different anatomy
        return all(np.abs(corners[index] - corners[c]).max() >= 16 for c in chosen)

    while len(chosen) < min(count, len(patches)):
        for t in range(len(TISSUE_NAMES)):
            candidates = [i for i in order[t] if i not in chosen and apart(i)] or \
                [i for i in order[t] if i not in chosen]
            if candidates and len(chosen) < count:
                chosen.append(int(candidates[0]))
    out = []
    for i in chosen:
        z, y, x = (int(c) for c in corners[i])
        origin = (maps.t1.ijk_to_lps() @ np.array([x, y, z, 1.0]))[:3]
        volume = Volume(patches[i, 0].copy(), maps.t1.spacing, tuple(origin), maps.t1.direction,
                        {"modality": "MRI", "description": f"MNI152 T1 patch at voxel (z,y,x)=({z},{y},{x})"})
        out.append((f"patch_z{z}_y{y}_x{x}", volume, dict(zip(TISSUE_NAMES, fractions[i].astype(float).tolist()))))
    return out


def explain_patch(model: Any, input_path: Path, folder: Path) -> dict[str, Any]:
    """All four runs on one patch file; returns {run: explanation}."""
    from ..pipelines.regression import explain_regression, save_regression_explanation
    from ..volume import read_volume

    volume = read_volume(input_path)
    results = {}
    for run, method, options in RUNS:
        expl = explain_regression(volume, model, method=method, method_params=options, seed=0)
        save_regression_explanation(expl, folder / run, overwrite=True)
        results[run] = expl
    return results


def overview_figure(results: dict[str, Any], truths: dict[str, float], path: Path) -> Path:
    """Methods × targets over the patch's axial slice through its centre (the same slice in every panel)."""
    from ..figures import new_figure, save_figure

    first = next(iter(results.values()))
    names = first.target_names
    fig = new_figure(3.1 * len(names), 2.9 * len(results))
    t1 = np.asarray(first.underlay.array)
    z = t1.shape[0] // 2
    for r, (run, expl) in enumerate(results.items()):
        for c, name in enumerate(names):
            ax = fig.add_subplot(len(results), len(names), r * len(names) + c + 1)
            ax.imshow(t1[z], cmap="gray", origin="lower")
            data = np.asarray(expl.heatmaps[c].array)[z]
            peak = float(np.abs(np.asarray(expl.heatmaps[c].array)).max()) or 1.0
            if expl.method in ("gradcampp", "layercam"):
                ax.imshow(np.ma.masked_where(data <= 0.05 * peak, data), cmap="viridis", vmin=0, vmax=peak,
                          alpha=0.6, origin="lower")
            else:
                ax.imshow(data, cmap="RdBu_r", vmin=-peak, vmax=peak, alpha=0.6, origin="lower")
            y_hat, y = expl.predictions[name], truths[name]
            blank = " BLANK" if name in expl.blank else ""
            ax.set_title(f"{run}\n{name}: y={y:.3f} ŷ={y_hat:.3f} Δ={y_hat - y:+.3f}{blank}", fontsize=7)
            ax.axis("off")
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Grad-CAM++, LayerCAM and SmoothGrad of the tissue regressor on "
                                                 "held-out MNI152 patches.")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--patches", type=int, default=3, help="number of held-out patches (default 3)")
    args = parser.parse_args(argv)

    from ..io import write_csv, write_json
    from ..models.outputs import RegressionModel
    from ..volume import write_volume
    from .tissue_regressor import WEIGHTS_FILE

    model = RegressionModel.load(WEIGHTS_FILE, device="cpu")
    args.output.mkdir(parents=True, exist_ok=True)
    summary, rows = {}, []
    for index, (name, volume, truths) in enumerate(patch_volumes(args.patches)):
        input_path = write_volume(volume, args.output / "inputs" / f"{name}.nii.gz")
        results = explain_patch(model, input_path, args.output / name)
        rows += [[name, target, value] for target, value in truths.items()]
        summary[name] = {"truth": truths, "prediction": next(iter(results.values())).predictions,
                         "blank": {run: expl.blank for run, expl in results.items()}}
        if index == 0:
            overview_figure(results, truths, args.output / "cam_demo.png")
        print(f"{name}: " + ", ".join(f"{t} y={truths[t]:.3f} ŷ={summary[name]['prediction'][t]:.3f}"
                                      for t in truths))
    write_csv(args.output / "ground_truth.csv", ["case", "target", "value"], rows)
    write_json(args.output / "summary.json", summary)
    print(f"wrote {args.output}: per patch folders {', '.join(r for r, _, _ in RUNS)}; cam_demo.png; "
          "ground_truth.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
