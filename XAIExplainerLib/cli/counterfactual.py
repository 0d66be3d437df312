"""``xai-explainer counterfactual``: the smallest region whose inpainted replacement makes a classifier drop a class
(Major et al., issue 14).

Parses arguments and calls :func:`XAIExplainerLib.pipelines.counterfactual.explain_counterfactual`; the method's
option flags (``--steps``, ``--lr``, ``--lambda1``...) come from the registry. Outputs, options, class, organ mask
and inpainter are checked before the optimisation starts; the result folder is written atomically.
"""
from __future__ import annotations

import argparse
from typing import Any

from .options import add_common_options, add_result_json_option, write_result_json

METHOD = "counterfactual"
_DEST = "cf_option_"
#: options the command sets through its own flags (the fill is what --inpainter names)
_OWN_FLAGS = ("fill",)


def _method_spec() -> Any:
    from ..attribution.registry import get_method

    return get_method(METHOD)


def _add_method_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("counterfactual options (the paper's defaults)")
    for option in _method_spec().options:
        if option.name in _OWN_FLAGS:
            continue
        group.add_argument(option.flag, dest=_DEST + option.name, metavar="VALUE",
                           help=f"{option.help} (default {option.default!r}; {option.allowed()})")


def _params(args: argparse.Namespace) -> dict[str, Any]:
    """Only the flags given (so the model JSON can decide ``scores``), each checked by the registry."""
    spec = _method_spec()
    given = {o.name: getattr(args, _DEST + o.name) for o in spec.options
             if getattr(args, _DEST + o.name, None) is not None}
    checked = spec.validate(given)
    return {k: checked[k] for k in given}


def _target(value: str | None) -> int | str | None:
    if value is None:
        return None
    return int(value) if value.lstrip("-").isdigit() else value


def _counterfactual(args: argparse.Namespace) -> int:
    from ..attribution.targets import resolve_classes
    from ..models.outputs import ClassifierModel
    from ..outputs import check_output_folder, sweep_stale_temporaries
    from ..pipelines.counterfactual import (FILL_NAMES, check_organ_mask, explain_counterfactual, resolve_inpainter,
                                            save_counterfactual)
    from ..progress import cli_progress
    from ..volume import ensure_finite, read_volume

    shipped = args.inpainter == "shipped"
    inpainter_path = None if args.inpainter in FILL_NAMES or shipped else args.inpainter
    output = check_output_folder(args.output, [args.input, args.model, args.organ_mask, inpainter_path],
                                 overwrite=args.overwrite)
    params = _params(args)
    volume = ensure_finite(read_volume(args.input))
    organ = read_volume(args.organ_mask) if args.organ_mask else None
    check_organ_mask(organ, volume)
    model = ClassifierModel.load(args.model, device=args.device)
    target = _target(args.target)
    if target is not None:
        resolve_classes([target], model.label_names)
    inpainter = resolve_inpainter(None if shipped else args.inpainter, model.device)[1] or args.inpainter
    sweep_stale_temporaries(output.absolute().parent)
    report, close = cli_progress(args.progress_lines, "counterfactual")
    try:
        expl = explain_counterfactual(volume, model, target=target, inpainter=inpainter, organ_mask=organ,
                                      method_params=params, seed=args.seed, progress=report)
    finally:
        close()
    if inpainter_path or shipped:
        expl.provenance["inpainter"] = inpainter_path or "shipped:Inpainter/inpainter.pt"
    save_counterfactual(expl, output, overwrite=args.overwrite)
    print(f"class '{expl.class_name}': probability {expl.prob_before:.4f} -> {expl.prob_after:.4f} "
          f"({int((expl.mask.array > 0).sum())} voxels replaced, fill {expl.fill})")
    print(f"wrote {output}")
    write_result_json(args.result_json, {
        "command": "counterfactual", "output": str(output), "class": expl.class_name,
        "probability_before": expl.prob_before, "probability_after": expl.prob_after,
        "files": {name: str(output / name) for name in ("soft_map.nii.gz", "mask.nii.gz", "inpainted.nii.gz",
                                                        "probabilities.json", "loss_curve.csv", "loss_curve.png",
                                                        "provenance.json")}})
    return 0


def register(subparsers) -> None:
    """Add ``counterfactual`` to the ``xai-explainer`` command."""
    p = subparsers.add_parser("counterfactual", help="counterfactual saliency: the smallest region whose inpainting "
                                                     "makes a classifier drop a class (Major et al.)")
    p.add_argument("--input", required=True, help="NIfTI/NRRD file or DICOM folder")
    p.add_argument("--model", required=True, help="classifier weights (.pt + JSON with kind 'classifier' and "
                                                  "label_names) or TorchScript (+ JSON)")
    p.add_argument("--inpainter", default="shipped", metavar="INPAINTER|shipped|zero|mean|blur",
                   help="partial-convolution inpainter weights (.pt + JSON from save_inpainter; default: the shipped "
                        "one, Resources/Inpainter), or a plain fill: zero, mean (of the volume) or blur "
                        "(out-of-distribution, for comparison)")
    p.add_argument("--class", dest="target", metavar="CLASS", help="class name or index (default: the predicted)")
    p.add_argument("--organ-mask", metavar="MASK", help="organ mask on the input grid: confines the region; with "
                                                        "--size-term dice the size term is the Dice with it")
    _add_method_flags(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the restart offsets (default 0)")
    p.add_argument("--output", required=True, help="folder to create (written atomically)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    add_result_json_option(p)
    add_common_options(p)
    p.set_defaults(func=_counterfactual)
