"""``make demo``: segment a real T1 MRI with the shipped Swin UNETR and explain the segmentation with Agg2Exp.

The input is Colin27 'ch2better' resampled to 1 mm — a reconstruction the demo model was not trained on (the
same brain as one training image, so read the Dice as a sanity check). Outputs go to one folder, and the
summary printed at the end says what each file means.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import XAIExplainerError

DEMO_MODEL_PATH = Path(__file__).resolve().parents[1] / "Resources" / "DemoModel" / "swin_unetr_brain.pt"
DEFAULT_CLASSES = ("frontal_L", "temporal_R", "deep_grey_L", "cerebellum")


def demo_input():
    """Colin27 ch2better (0.5 mm) resampled to 1 mm isotropic."""
    from ..datasets import samples as sample_data
    from ..volume import resample_to_spacing

    resampled = resample_to_spacing(sample_data.colin27_t1_hires(), (1.0, 1.0, 1.0))
    return resampled.with_array(resampled.array.astype(np.float32), description="Colin27 ch2better resampled to 1 mm")


def reference_structures(image):
    """AAL regions grouped into the demo model's structures, on ``image``'s grid (the Dice reference)."""
    from ..datasets import samples as sample_data
    from ..datasets.brain_structures import structures_from_aal
    from ..volume import resample_to_reference

    aal, names = sample_data.aal_atlas()
    return structures_from_aal(resample_to_reference(aal, image, "nearest").array.astype(np.int64), names)


def samples_params(method: str, samples: int | None) -> dict:
    """``--samples N`` as the method's own option (noise samples, steps or coalitions), from the method registry."""
    from ..attribution.registry import get_method
    from ..errors import MethodParameterError

    spec = get_method(method)
    if not samples:
        return {}
    option = spec.option_for_flag("--samples")
    if option is None:
        raise MethodParameterError(f"--samples does not apply to {spec.name} (it takes no samples or steps).")
    return {option.name: option.validate(samples, spec.name)}


def run(output: Path, method: str, classes: Sequence[str], samples: int | None, device: str) -> None:
    from ..pipelines.agg2exp import explain_volume, save_explanation
    from ..models import SegmentationModel
    from ..progress import cli_progress
    from ..volume import write_volume

    started = time.perf_counter()
    output.mkdir(parents=True, exist_ok=True)
    print(f"[1/4] loading the demo model ({DEMO_MODEL_PATH.name}) and the Colin27 T1 (ch2better, 1 mm)")
    model = SegmentationModel.load(DEMO_MODEL_PATH, device=device)
    image = demo_input()
    write_volume(image, output / "input_t1.nii.gz")

    print(f"[2/4] segmenting {len(model.label_names) - 1} brain structures on {model.device}")
    t0 = time.perf_counter()
    report, close = cli_progress(False, "segment")
    try:
        segmentation = model.segment(image, progress=report, return_probabilities=False)
    finally:
        close()
    segment_seconds = time.perf_counter() - t0
    write_volume(segmentation.labels, output / "segmentation.nii.gz")
    reference = reference_structures(image)
    dice = {}
    for c, name in enumerate(model.label_names[1:], start=1):
        p, r = segmentation.labels.array == c, reference == c
        dice[name] = 2 * float((p & r).sum()) / max(1, int(p.sum() + r.sum()))
    print(f"      done in {segment_seconds:.0f} s; mean Dice vs AAL structures {np.mean(list(dice.values())):.3f}")

    params = samples_params(method, samples)
    print(f"[3/4] explaining classes {', '.join(classes)} with {method} {params or '(paper defaults)'}")
    t0 = time.perf_counter()
    report, close = cli_progress(False, method)
    try:
        explanation = explain_volume(image, model, method=method, classes=list(classes), method_params=params,
                                     progress=report)
    finally:
        close()
    explain_seconds = time.perf_counter() - t0
    print(f"[4/4] writing the explanation ({explain_seconds:.0f} s to compute)")
    folder = save_explanation(explanation, output / "explanation", overwrite=True)
    summarise(output, folder, explanation, dice, segment_seconds, explain_seconds, time.perf_counter() - started)


def summarise(output: Path, folder: Path, explanation, dice: dict[str, float], segment_seconds: float,
              explain_seconds: float, total_seconds: float) -> None:
    print("\nXAIExplainer demo finished in %.0f s (segmentation %.0f s, explanation %.0f s)." %
          (total_seconds, segment_seconds, explain_seconds))
    print(f"Outputs in {output.resolve()}:")
    print("  input_t1.nii.gz       the MRI that was segmented (Colin27 ch2better at 1 mm)")
    print("  segmentation.nii.gz   predicted structures (label values = model classes, see explanation/README.txt)")
    print(f"  explanation/          Agg2Exp results: heatmaps/ (one voxel attribution map per class), matrix.csv/json")
    print("                        (class x RoI importance, rows sum to 1), graph.json/.graphml/.png (RoI graph),")
    print("                        figures (*.png) and provenance.json (method, parameters, seed, model hash)")
    print("Dice of the segmentation against AAL-derived structures (same brain as a training image):")
    print("  " + ", ".join(f"{name} {score:.2f}" for name, score in dice.items()))
    print("Most important RoIs per explained class (share of |attribution| mass):")
    for row, name in enumerate(explanation.class_names):
        if name in explanation.absent_classes:
            print(f"  {name:>12}: not predicted anywhere in this scan, so there is nothing to explain")
            continue
        weights = explanation.matrix[row]
        top = np.argsort(weights)[::-1][:3]
        print(f"  {name:>12}: " + ", ".join(f"{explanation.roi_names[j]} {weights[j]:.2f}" for j in top))
    print("Open input_t1.nii.gz with segmentation.nii.gz and a heatmap in 3D Slicer (or the XAIExplainer module).")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path("demo_output"))
    parser.add_argument("--method", default="smoothgrad", help="a registered attribution method (see "
                        "'xai-explainer explain --help')")
    parser.add_argument("--classes", nargs="+", default=list(DEFAULT_CLASSES))
    parser.add_argument("--samples", type=int, default=None, help="samples/steps for the method (default: paper's)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    try:
        run(args.output, args.method, args.classes, args.samples, args.device)
    except XAIExplainerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
