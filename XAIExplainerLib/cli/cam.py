"""``xai-explainer cam`` (Grad-CAM++ / LayerCAM on named layers) and ``xai-explainer explain-regression`` (every
gradient and CAM method registered for regression models, SmoothGrad by default, with ``explain``'s option flags).

Both parse arguments and call :func:`XAIExplainerLib.pipelines.regression.explain_regression`, and write the
regression pipeline's folder (``heatmap_<target>.nii.gz``, ``maps.json``, a figure, ``provenance.json``) — the
folder ``xai-explainer report`` reads, as it reads ``lime``'s. Options, targets, the score, the reference and the
layer names are all checked before any forward pass; nothing is written on bad input.
"""
from __future__ import annotations

import argparse
from typing import Any

from .explain import add_method_options, method_params_from_args
from .lime import add_target_options, targets_from_args
from .options import add_common_options, add_result_json_option, positive_int, write_result_json

KIND = "regression"
CAM_METHODS = ["gradcampp", "layercam"]
#: ``explain-regression`` offers every regression method except LIME (``xai-explainer lime`` has its own flags).
EXCLUDED = ("image_reg_lime",)


def _gradient_methods() -> list[str]:
    from ..attribution.registry import available_methods

    return [s.name for s in available_methods(KIND) if s.name not in EXCLUDED]


def _run(args: argparse.Namespace, command: str, params: dict[str, Any]) -> int:
    """Load, check (targets, layers) before the explanation's forward, explain, write, print a summary."""
    from ..models.outputs import RegressionModel
    from ..outputs import check_output_folder, sweep_stale_temporaries
    from ..pipelines.regression import build_target, explain_regression, save_regression_explanation
    from ..progress import cli_progress
    from ..volume import ensure_finite, read_volume

    output = check_output_folder(args.output, [args.input, args.model], overwrite=args.overwrite)
    volume = ensure_finite(read_volume(args.input))
    model = RegressionModel.load(args.model, device=args.device)
    targets = targets_from_args(args.targets)
    build_target(model, targets, args.score, args.reference)  # bad names / reference: before any forward
    _check_layers(model, params)
    sweep_stale_temporaries(output.absolute().parent)
    report, close = cli_progress(args.progress_lines, f"{command} ({args.method})")
    try:
        expl = explain_regression(volume, model, targets=targets, score=args.score, reference=args.reference,
                                  method=args.method, method_params=params, seed=args.seed,
                                  batch_size=getattr(args, "batch_size", None), progress=report)
    finally:
        close()
    save_regression_explanation(expl, output, overwrite=args.overwrite)
    for name, heat in zip(expl.target_names, expl.heatmaps):
        state = f"BLANK ({expl.blank[name]})" if name in expl.blank else f"map max {float(heat.array.max()):.4g}"
        print(f"{name}: prediction {expl.predictions.get(name, float('nan')):.6g}, {state}")
    print(f"wrote {output}")
    write_result_json(args.result_json, {"command": command, "folder": str(output), "method": args.method,
                                         "targets": list(expl.target_names), "blank": dict(expl.blank)})
    return 0


def _check_layers(model: Any, params: dict[str, Any]) -> None:
    """Named layers exist and can be hooked (TorchScript is refused) before anything runs."""
    layers = params.get("layers")
    if not layers:
        return
    import torch

    from ..attribution.layer_hooks import AUTO, find_layers, parse_layer_names

    if isinstance(model.network, torch.jit.ScriptModule):
        model.layer(AUTO)  # the adapter's refusal, naming what works on TorchScript
    find_layers(model, [n for n in parse_layer_names(layers) if n != AUTO])


def _cam(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"layers": " ".join(args.layers)}
    if args.tanh_gamma is not None:
        if args.method != "layercam":
            from ..errors import MethodParameterError

            raise MethodParameterError("--tanh-gamma sets LayerCAM's fusion; use it with --method layercam.")
        params["tanh_gamma"] = args.tanh_gamma
    from ..attribution.registry import get_method

    return _run(args, "cam", get_method(args.method).validate(params))


def _explain_regression(args: argparse.Namespace) -> int:
    base: dict[str, Any] = {}
    if args.settings is not None:
        if args.method != "smoothgrad":
            from ..errors import MethodParameterError

            raise MethodParameterError(f"--settings names SmoothGrad settings; {args.method} takes none.")
        from ..attribution.smoothgrad import smoothgrad_settings

        base = smoothgrad_settings(args.settings)
    params = method_params_from_args(args, args.method, KIND, _gradient_methods(), base=base)
    return _run(args, "explain-regression", params)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", required=True, help="NIfTI/NRRD file or DICOM folder")
    p.add_argument("--model", required=True, help="regression weights (.pt + JSON naming the architecture); layer "
                                                  "methods need the module (TorchScript has no hooks)")
    add_target_options(p)
    p.add_argument("--seed", type=int, default=0, help="random seed (SmoothGrad's noise)")
    p.add_argument("--output", required=True, help="folder to create (written atomically)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    add_common_options(p)
    add_result_json_option(p)


def register(subparsers) -> None:
    """Add ``cam`` and ``explain-regression`` to the ``xai-explainer`` command."""
    from ..attribution.smoothgrad import SMOOTHGRAD_SETTINGS

    p = subparsers.add_parser("cam", help="Grad-CAM++ / LayerCAM of a regression model on named layers")
    p.add_argument("--method", default="gradcampp", choices=CAM_METHODS, help="gradcampp (default) or layercam")
    p.add_argument("--layers", nargs="+", default=["auto"], metavar="LAYER",
                   help="layer names as in named_modules() (LayerCAM fuses several by element-wise max); 'auto': "
                        "the last spatial feature map before pooling (default)")
    p.add_argument("--tanh-gamma", type=float, help="LayerCAM: tanh(gamma*M/max M) before fusing (default 0: "
                                                    "M/max M)")
    _common(p)
    p.set_defaults(func=_cam)

    e = subparsers.add_parser("explain-regression", help="SmoothGrad (and the CAM methods) of a regression "
                                                         "model, every target at once")
    add_method_options(e, KIND, _gradient_methods(), default="smoothgrad")
    e.add_argument("--settings", choices=sorted(SMOOTHGRAD_SETTINGS),
                   help="SmoothGrad settings: thesis-0.2 / thesis-0.3 (n=30, sigma 0.2 / 0.3 of the range), paper "
                        "(n=50, sigma 0.15); explicit --samples / --noise-level override them")
    e.add_argument("--batch-size", type=positive_int, help="noisy samples per forward (default: from free memory)")
    e.add_argument("--param", action="append", metavar="KEY=VALUE", help="any other method option, repeatable")
    _common(e)
    e.set_defaults(func=_explain_regression)
