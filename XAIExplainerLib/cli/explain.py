"""``xai-explainer explain``, ``cohort`` and ``cohort-explain``: Agg2Exp from the command line.

The functions here only parse arguments and call :mod:`XAIExplainerLib.pipelines.agg2exp` / :mod:`XAIExplainerLib.cohort.aggregate`;
errors are raised as :class:`~XAIExplainerLib.errors.XAIExplainerError` and printed as one line by ``cli.main``.
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

from ..errors import MethodParameterError, VolumeReadError
from .options import add_common_options, add_debug_option, add_result_json_option, positive_int, share, write_result_json

#: The model kind whose registered methods ``explain`` and ``cohort-explain`` offer.
MODEL_KIND = "segmentation"
#: Prefix of the argparse destinations of method option flags (``--samples`` -> ``method_option_samples``).
_OPTION_DEST = "method_option_"


def read_roi_names(path: str | Path) -> dict[int, str]:
    """RoI names from a text/CSV table whose lines start with the label value and then the name.

    Accepts ``1 Precentral_L 2001`` (the AAL / MRIcron ``.nii.txt`` layout), ``1,liver`` and ``1<TAB>liver``;
    a header line and ``#`` comments are skipped.
    """
    p = Path(path)
    if not p.is_file():
        raise VolumeReadError(f"No RoI name table at '{p}'.")
    names: dict[int, str] = {}
    text = p.read_text(errors="replace")
    dialect_delim = "," if p.suffix.lower() == ".csv" or ("," in text and "\t" not in text) else None
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = next(csv.reader([line])) if dialect_delim == "," else line.split()
        fields = [f.strip() for f in fields if f.strip()]
        if len(fields) < 2 or not fields[0].lstrip("-").isdigit():
            if not names and number == 1:
                continue  # header
            raise VolumeReadError(
                f"{p.name} line {number} ('{line[:60]}') is not '<label value> <name>'. Write one RoI per line, "
                "e.g. '1 liver' or '1,liver'."
            )
        names[int(fields[0])] = fields[1]
    if not names:
        raise VolumeReadError(f"{p.name} lists no RoI names ('<label value> <name>' per line).")
    return names


def _parse_params(pairs: list[str] | None) -> dict:
    """``KEY=VALUE`` options for the method; values are parsed as JSON when possible (numbers, lists, true)."""
    out: dict = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise MethodParameterError(f"--param expects KEY=VALUE, got '{pair}'.")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def _flag_dest(flag: str) -> str:
    return _OPTION_DEST + flag.lstrip("-").replace("-", "_")


def _specs(kind: str = MODEL_KIND, methods: "list[str] | None" = None) -> list:
    """The registered methods for a model kind (only ``methods`` when given, in that order)."""
    from ..attribution.registry import available_methods

    specs = available_methods(kind)
    return specs if methods is None else [s for s in specs if s.name in methods]


def _option_flags(kind: str = MODEL_KIND, methods: "list[str] | None" = None,
                  skip: tuple[str, ...] = ()) -> "dict[str, list[tuple[Any, Any]]]":
    """``flag -> [(method spec, option spec)]`` over the registered methods (a flag may serve several methods);
    options named in ``skip`` have a flag of the command's own."""
    flags: dict[str, list] = {}
    for spec in _specs(kind, methods):
        for option in spec.options:
            if option.name not in skip:
                flags.setdefault(option.flag, []).append((spec, option))
    return flags


def add_method_options(parser: argparse.ArgumentParser, kind: str = MODEL_KIND, methods: "list[str] | None" = None,
                       default: str = "smoothgrad", skip: tuple[str, ...] = ()) -> None:
    """``--method`` (choices) and one flag per method option, read from the registry NOW (parser build time);
    ``kind``/``methods`` pick the methods (segmentation: all of them), ``skip`` options the command flags itself."""
    specs = _specs(kind, methods)
    names = [s.name for s in specs]
    default = default if default in names else (names[0] if names else None)
    parser.add_argument("--method", default=default, choices=names, metavar="METHOD",
                        help="attribution method: " + "; ".join(f"{s.name} ({s.label})" for s in specs)
                        + f" (default: {default})")
    group = parser.add_argument_group("method options (each applies to the methods named in its help)")
    for flag, users in _option_flags(kind, methods, skip).items():
        helps = list(dict.fromkeys(opt.help for _, opt in users))
        text = helps[0] if len(helps) == 1 else " / ".join(dict.fromkeys(o.display_label.lower() for _, o in users))
        uses = "; ".join(f"{spec.name}: {opt.name}, default {opt.default!r}, {opt.allowed()}" for spec, opt in users)
        group.add_argument(flag, dest=_flag_dest(flag), metavar="VALUE", help=f"{text} [{uses}]")


def method_params_from_args(args: argparse.Namespace, method: str, kind: str = MODEL_KIND,
                            methods: "list[str] | None" = None, skip: tuple[str, ...] = (),
                            base: "dict | None" = None) -> dict:
    """``base`` options, then ``--param KEY=VALUE`` pairs, then the method's option flags, validated against the
    method's spec (a flag of another method is refused, naming the method's own flags)."""
    from ..attribution.registry import get_method

    spec = get_method(method)
    params = dict(base or {})
    params.update(_parse_params(getattr(args, "param", None)))
    for flag in _option_flags(kind, methods, skip):
        value = getattr(args, _flag_dest(flag), None)
        if value is None:
            continue
        option = spec.option_for_flag(flag)
        if option is None:
            offered = ", ".join(o.flag for o in spec.options) or "none"
            raise MethodParameterError(f"{flag} does not apply to {spec.name} (its option flags: {offered}).")
        params[option.name] = value
    return spec.validate(params)


def _explain(args: argparse.Namespace) -> int:
    from ..pipelines.agg2exp import explain_volume, save_explanation
    from ..models import SegmentationModel
    from ..outputs import check_output_folder, sweep_stale_temporaries
    from ..progress import cli_progress
    from ..volume import ensure_finite, read_volume

    inputs = [args.input, args.model, args.rois, args.roi_names]
    output = check_output_folder(args.output, inputs, overwrite=args.overwrite)
    params = method_params_from_args(args, args.method)  # unknown options and bad ranges: before anything loads
    # the input is read and checked (size, NaN/Inf) before the model: a bad scan costs no model load
    volume = ensure_finite(read_volume(args.input))
    rois = read_volume(args.rois) if args.rois else None
    roi_names = read_roi_names(args.roi_names) if args.roi_names else None
    model = SegmentationModel.load(args.model, device=args.device)
    sweep_stale_temporaries(output.absolute().parent)
    report, close = cli_progress(args.progress_lines, f"explain ({args.method})")
    try:
        expl = explain_volume(
            volume, model, method=args.method, classes=args.classes, rois=rois, roi_names=roi_names,
            method_params=params, metrics=args.metrics, progress=report, variant=args.variant, seed=args.seed,
            batch_size=args.batch_size, graph_top_k=args.graph_top_k, graph_threshold=args.graph_threshold,
        )
    finally:
        close()
    save_explanation(expl, output, overwrite=args.overwrite)
    print(f"wrote {output}: {len(expl.class_names)} class heatmaps, matrix ({expl.matrix.shape[0]} classes x "
          f"{expl.matrix.shape[1]} RoIs) in {output / 'matrix.csv'}, graph in {output / 'graph.graphml'}")
    if expl.absent_classes:
        print(f"absent from the prediction (rows of zeros): {', '.join(expl.absent_classes)}")
    for name, ratio in expl.context_ratio.items():
        if name not in expl.absent_classes:
            print(f"  {name}: {ratio:.1%} of the attribution inside its own segment")

    write_result_json(args.result_json, {"command": "explain", "folder": str(output),
                                         "class_names": [str(n) for n in expl.class_names],
                                         "absent_classes": [str(n) for n in expl.absent_classes]})
    return 0


def _cohort(args: argparse.Namespace) -> int:
    from ..cohort.aggregate import run_cohort
    from ..outputs import check_output_folder

    check_output_folder(args.output, [*args.explanations, *(args.reference or [])], overwrite=args.overwrite)
    result = run_cohort(args.explanations, args.output, reference=args.reference, seed=args.seed,
                        min_scans=args.min_scans, overwrite=args.overwrite)
    glob, report = result["global"], result["outliers"]
    print(f"wrote {args.output}: global matrix over {glob.n_scans} scans "
          f"(scans per class: {', '.join(f'{n}={c}' for n, c in zip(glob.class_names, glob.counts))})")
    flagged = {k: v for k, v in report.outliers.items() if v}
    for name, scans in flagged.items():
        print(f"  outliers for {name}: {', '.join(scans)}")
    if report.unfitted:
        print(f"  too few scans for an outlier model: {', '.join(report.unfitted)}")
    return 0


def _cohort_explain(args: argparse.Namespace) -> int:
    from ..cohort.run import explain_cohort
    from ..progress import cli_progress

    params = method_params_from_args(args, args.method)  # refused once, up front, not per scan
    report, close = cli_progress(args.progress_lines, f"cohort ({args.method})")
    try:
        result = explain_cohort(
            args.inputs, args.model, args.output, method=args.method, classes=args.classes, method_params=params,
            variant=args.variant, seed=args.seed, batch_size=args.batch_size, metrics=args.metrics,
            device=args.device, devices=args.devices, workers=args.workers, ray_address=args.ray_address,
            cpus_per_scan=args.cpus_per_scan, gpus_per_scan=args.gpus_per_scan, reference=args.reference,
            min_scans=args.min_scans, progress=report,
        )
    finally:
        close()
    failed = [o for o in result["scans"] if o.error]
    glob = result["global"]
    print(f"wrote {args.output}: {len(result['scans']) - len(failed)} scan explanations in scans/, global matrix "
          f"over {glob.n_scans} scans and outliers in cohort/")
    for outcome in failed:
        print(f"  FAILED {outcome.scan_id}: {outcome.error}")
    flagged = {k: v for k, v in result["outliers"].outliers.items() if v}
    for name, scans in flagged.items():
        print(f"  outliers for {name}: {', '.join(scans)}")
    return 1 if failed else 0


def register(subparsers) -> None:
    """Add ``explain`` and ``cohort`` to the ``xai-explainer`` command."""
    p = subparsers.add_parser("explain", help="Agg2Exp: voxel attributions, RoI importance matrix and graph")
    p.add_argument("--input", required=True, help="NIfTI/NRRD file or DICOM folder")
    p.add_argument("--model", required=True, help="weights (.pt + JSON), MONAI bundle folder or TorchScript")
    add_method_options(p)
    p.add_argument("--classes", nargs="+", help="class names or indices to explain (default: all)")
    p.add_argument("--rois", help="label map on the input's grid (atlas, ground truth); default: predicted segments")
    p.add_argument("--roi-names", help="table '<label value> <name>' per line (TXT/CSV, e.g. AAL's .nii.txt)")
    p.add_argument("--variant", default="absolute", choices=["absolute", "positive", "negative", "mean"],
                   help="RoI importance variant (default: absolute)")
    p.add_argument("--metrics", action="store_true", help="also compute faithfulness, sensitivity and complexity")
    p.add_argument("--seed", type=int, default=0, help="random seed of noise, coalitions and metrics")
    p.add_argument("--batch-size", type=positive_int,
                   help="samples per forward pass (default: chosen from free memory; results reproduce bit for bit "
                        "for a fixed batch size, and provenance.json records the one used)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="any other method option, repeatable")
    p.add_argument("--graph-top-k", type=positive_int, help="keep at most K edges per class in the graph")
    p.add_argument("--graph-threshold", type=share, default=0.8,
                   help="keep the smallest edge set per class reaching this share of its mass (default 0.8)")
    p.add_argument("--output", required=True, help="folder to create (written atomically)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    add_common_options(p)
    add_result_json_option(p)
    p.set_defaults(func=_explain)

    c = subparsers.add_parser("cohort", help="global RoI importance and per-class outlier scans of saved explanations")
    c.add_argument("--explanations", nargs="+", required=True, help="folders written by 'xai-explainer explain'")
    c.add_argument("--reference", nargs="+", help="explanation folders to fit the outlier model on (default: the cohort)")
    c.add_argument("--min-scans", type=positive_int, default=5, help="fewest scans with a class to fit its outlier model")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--output", required=True)
    c.add_argument("--overwrite", action="store_true")
    add_debug_option(c)
    c.set_defaults(func=_cohort)

    ce = subparsers.add_parser("cohort-explain", help="explain many scans with one model, then aggregate them")
    ce.add_argument("--inputs", nargs="+", required=True, help="NIfTI/NRRD files or DICOM folders, one per scan")
    ce.add_argument("--model", required=True, help="weights (.pt + JSON), MONAI bundle folder or TorchScript")
    add_method_options(ce)
    ce.add_argument("--classes", nargs="+", help="class names or indices to explain (default: all)")
    ce.add_argument("--variant", default="absolute", choices=["absolute", "positive", "negative", "mean"])
    ce.add_argument("--metrics", action="store_true", help="also compute the quality metrics per scan")
    ce.add_argument("--seed", type=int, default=0)
    ce.add_argument("--batch-size", type=positive_int, help="samples per forward pass (default: from free memory)")
    ce.add_argument("--param", action="append", metavar="KEY=VALUE", help="any other method option, repeatable")
    ce.add_argument("--workers", type=positive_int, default=1,
                    help="local worker processes (default 1: one scan at a time, torch uses every core)")
    ce.add_argument("--devices", nargs="+", help="spread scans round-robin over these devices (e.g. cuda:0 cuda:1)")
    ce.add_argument("--ray-address", help="run the scans as Ray tasks: 'auto' (running cluster), 'local', or an address")
    ce.add_argument("--cpus-per-scan", type=float, default=1.0, help="Ray: CPUs reserved per scan")
    ce.add_argument("--gpus-per-scan", type=float, default=0.0, help="Ray: GPUs reserved per scan")
    ce.add_argument("--reference", nargs="+", help="explanation folders to fit the outlier model on")
    ce.add_argument("--min-scans", type=positive_int, default=5, help="fewest scans with a class to fit its outlier model")
    ce.add_argument("--output", required=True, help="folder: scans/<id>/, cohort/ and cohort_summary.json")
    add_common_options(ce)
    ce.set_defaults(func=_cohort_explain)
