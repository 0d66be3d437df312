"""``xai-explainer lime``: Image-Reg-LIME heatmaps of a regression model's prediction (issue 11).

Parses arguments and calls :func:`XAIExplainerLib.pipelines.regression.explain_regression`; the method's option
flags are read from the registry when the parser is built, so they never drift from the method. Outputs, options,
targets and the label map are all checked before the model is loaded or run.
"""
from __future__ import annotations

import argparse
from typing import Any

from .options import (add_common_options, add_registry_flags, add_result_json_option, given_registry_flags,
                      positive_int, write_result_json)

METHOD = "image_reg_lime"
_DEST = "lime_option_"
#: options the command exposes through its own flags (``--supervoxels`` also takes a label map file)
_OWN_FLAGS = ("supervoxels",)


def _method_spec() -> Any:
    from ..attribution.registry import get_method

    return get_method(METHOD)


def _params(args: argparse.Namespace) -> dict[str, Any]:
    """The option flags given, validated by the registry (unknown values and ranges fail here, before loading)."""
    spec = _method_spec()
    params = given_registry_flags(args, spec, _DEST)
    if args.supervoxels in ("slic", "cubes"):
        params["supervoxels"] = args.supervoxels
    return spec.validate(params)


def targets_from_args(values: list[str] | None) -> list[int | str] | None:
    """Target names, or indices when a value is a whole number."""
    if not values:
        return None
    return [int(v) if v.lstrip("-").isdigit() else v for v in values]


def _lime(args: argparse.Namespace) -> int:
    from ..models.outputs import RegressionModel
    from ..outputs import check_output_folder, sweep_stale_temporaries
    from ..pipelines.regression import build_target, explain_regression, save_regression_explanation
    from ..progress import cli_progress
    from ..volume import ensure_finite, read_volume, require_same_grid

    label_map_path = None if args.supervoxels in ("slic", "cubes") else args.supervoxels
    output = check_output_folder(args.output, [args.input, args.model, label_map_path], overwrite=args.overwrite)
    params = _params(args)
    volume = ensure_finite(read_volume(args.input))
    label_map = read_volume(label_map_path) if label_map_path else None
    if label_map is not None:
        require_same_grid(volume, label_map, "label map")
    model = RegressionModel.load(args.model, device=args.device)
    targets = targets_from_args(args.targets)
    build_target(model, targets, args.score, args.reference)  # bad names / reference: before any forward
    sweep_stale_temporaries(output.absolute().parent)
    report, close = cli_progress(args.progress_lines, "lime")
    try:
        expl = explain_regression(volume, model, targets=targets, score=args.score, reference=args.reference,
                                  method_params=params, label_map=label_map, seed=args.seed,
                                  batch_size=args.batch_size, progress=report)
    finally:
        close()
    save_regression_explanation(expl, output, overwrite=args.overwrite)
    for name, r2 in zip(expl.target_names, expl.r2):
        print(f"{name}: prediction {expl.predictions.get(name, float('nan')):.6g}, surrogate R² {r2:.3f}")
    print(f"wrote {output}")
    write_result_json(args.result_json, {"command": "lime", "folder": str(output), "targets": expl.target_names})
    return 0


def add_target_options(p: argparse.ArgumentParser) -> None:
    """``--targets``, ``--score`` and ``--reference``: what every regression command explains."""
    p.add_argument("--targets", nargs="+", help="target names or indices to explain (default: all)")
    p.add_argument("--score", default="higher", choices=["higher", "lower", "closeness"],
                   help="higher: the prediction; lower: its negative; closeness: 'why was --reference not "
                        "predicted?' for one target (default: higher)")
    p.add_argument("--reference", type=float, help="reference value a* (with --score closeness and one target)")


def register(subparsers) -> None:
    """Add ``lime`` to the ``xai-explainer`` command."""
    p = subparsers.add_parser("lime", help="Image-Reg-LIME: which supervoxels drive a regression model's outputs")
    p.add_argument("--input", required=True, help="NIfTI/NRRD file or DICOM folder")
    p.add_argument("--model", required=True, help="regression weights (.pt + JSON naming a MONAI network) or "
                                                  "TorchScript (+ JSON with target_names)")
    add_target_options(p)
    p.add_argument("--supervoxels", default="slic", metavar="slic|cubes|LABELMAP",
                   help="SLIC (default), a grid of cubes, or a label map file on the input's grid")
    add_registry_flags(p, _method_spec(), _DEST, "Image-Reg-LIME options", skip=_OWN_FLAGS)
    p.add_argument("--seed", type=int, default=0, help="random seed of the perturbation samples")
    p.add_argument("--batch-size", type=positive_int, help="perturbed volumes per forward (default: from memory)")
    p.add_argument("--output", required=True, help="folder to create (written atomically)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    add_result_json_option(p)
    add_common_options(p)
    p.set_defaults(func=_lime)
