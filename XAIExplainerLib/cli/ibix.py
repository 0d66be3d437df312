"""``xai-explainer ibix``: forward map of a painted input region, or backward map of a painted output region.

Outputs are checked before the model loads (nothing is computed for a run that could not write), the mask is
checked against the input grid before the model runs, and the folder is written atomically.
"""
from __future__ import annotations

import argparse

from .options import add_common_options, add_result_json_option, positive_int, write_result_json


def _ibix(args: argparse.Namespace) -> int:
    from ..io import safe_name
    from ..outputs import check_output_folder, sweep_stale_temporaries
    from ..pipelines.ibix import (backward_resolution, channel_index, ibix_backward, ibix_forward,
                                  load_image_to_image, save_ibix, select_region)
    from ..progress import cli_progress
    from ..volume import ensure_finite, read_volume

    inputs = [args.input, args.model, args.mask, args.config, args.block_labels]
    out = check_output_folder(args.output, inputs, overwrite=args.overwrite)
    if args.jitter_range is not None and not args.jitter_range > 0:
        from ..errors import MethodParameterError

        raise MethodParameterError(f"--jitter-range must be > 0, got {args.jitter_range}.")
    if args.mode == "backward":
        backward_resolution(args.exact, args.resolution)  # refused before anything is read
    volume = ensure_finite(read_volume(args.input))
    mask = read_volume(args.mask)
    what = "input mask M^x" if args.mode == "forward" else "output mask M^f"
    select_region(mask, volume, args.label, what)  # grid, label and emptiness, before the model loads
    block_labels = _block_labels(args, volume)
    model = load_image_to_image(args.model, device=args.device, config=args.config)
    if args.mode == "backward" and args.channel is not None and model.channel_names:
        channel_index(model, len(model.channel_names), args.channel)  # a wrong name fails before any work
    sweep_stale_temporaries(out.absolute().parent)
    # progress lines for the Slicer module only: a terminal bar would precede a one-line error on stderr
    report, close = cli_progress(True, "ibix") if args.progress_lines else (None, lambda: None)
    common = dict(label=args.label, exact=args.exact, jitter_range=args.jitter_range, n_jitters=args.jitters,
                  batch_size=args.batch_size, progress=report)
    try:
        if args.mode == "forward":
            result = ibix_forward(volume, model, mask, variant=args.forward_variant, **common)
        else:
            result = ibix_backward(volume, model, mask, resolution=args.resolution, channel=args.channel,
                                   multiscale=args.multiscale, blocks=args.blocks, n_blocks=args.blocks_count,
                                   compactness=args.compactness, threshold=args.threshold,
                                   variant=args.backward_variant, block_labels=block_labels, **common)
    finally:
        close()
    save_ibix(result, out, overwrite=args.overwrite)
    print(f"wrote {', '.join(sorted(result.maps))} and provenance.json to {out} "
          f"({result.provenance['timings']['map_s']:.1f} s)")
    write_result_json(args.result_json, {"command": "ibix", "mode": args.mode, "folder": str(out),
                                         "maps": {name: str(out / f"{safe_name(name)}.nii.gz")
                                                  for name in result.maps}})
    return 0


def _block_labels(args: argparse.Namespace, volume):
    """``--blocks labels`` needs ``--block-labels`` on the input's grid; checked before the model loads."""
    from ..errors import MethodParameterError
    from ..volume import read_volume, require_same_grid

    if args.blocks != "labels":
        if args.block_labels:
            raise MethodParameterError("--block-labels is used only with --blocks labels; add it or drop the file.")
        return None
    if not args.block_labels:
        raise MethodParameterError("--blocks labels needs --block-labels FILE (a label map on the input's grid).")
    labels = read_volume(args.block_labels)
    require_same_grid(volume, labels, "block label map")
    return labels


def _ibix_output(args: argparse.Namespace) -> int:
    """The network's output channels on the input grid: what the user sees, and paints M^f on, in Slicer."""
    from ..io import atomic_output_folder, safe_name
    from ..outputs import check_output_folder, sweep_stale_temporaries
    from ..pipelines.ibix import load_image_to_image
    from ..volume import ensure_finite, read_volume, write_volume

    out = check_output_folder(args.output, [args.input, args.model, args.config], overwrite=args.overwrite)
    volume = ensure_finite(read_volume(args.input))
    model = load_image_to_image(args.model, device=args.device, config=args.config)
    sweep_stale_temporaries(out.absolute().parent)
    channels = model.predict(volume)
    with atomic_output_folder(out, overwrite=args.overwrite) as tmp:
        for name, channel in channels.items():
            write_volume(channel.with_array(channel.array.astype("float32")), tmp / f"{safe_name(name)}.nii.gz")
    print(f"wrote {len(channels)} output channel(s) ({', '.join(channels)}) to {out}")
    write_result_json(args.result_json, {"command": "ibix-output", "folder": str(out),
                                         "channels": {name: str(out / f"{safe_name(name)}.nii.gz")
                                                      for name in channels}})
    return 0


def register(subparsers) -> None:
    """Add ``ibix`` to the ``xai-explainer`` command."""
    p = subparsers.add_parser("ibix", help="IBIX forward / backward mapping of painted regions (image-to-image)")
    p.add_argument("--input", required=True, help="NIfTI/NRRD file or DICOM folder")
    p.add_argument("--model", required=True, help="weights (.pt + JSON), bundle folder or TorchScript")
    p.add_argument("--config", help="model JSON when it is not beside the weights (e.g. Testing/deepbet_model.json)")
    p.add_argument("--mode", required=True, choices=["forward", "backward"],
                   help="forward: M^x on the input -> map on the output grid; backward: M^f -> map on the input grid")
    p.add_argument("--mask", required=True, help="label map on the input's grid (M^x or M^f)")
    p.add_argument("--label", type=int, help="label value selecting the region (default: every non-zero voxel)")
    p.add_argument("--exact", action="store_true", help="exact derivatives: one JVP (forward) / one VJP (backward)")
    p.add_argument("--resolution", choices=["voxels", "blocks"],
                   help="backward: voxels (exact mode only, one VJP; its default) or blocks (Eq. 6 per block; exact "
                        "mode: one JVP per block)")
    p.add_argument("--channel", help="backward: restrict M^f to this output channel (name or index)")
    p.add_argument("--multiscale", action="store_true", help="backward: coarse SLIC pass, refine kept blocks")
    p.add_argument("--threshold", type=float, default=0.0, help="multiscale: keep coarse blocks scoring >= this")
    p.add_argument("--blocks", default="slic", choices=["slic", "cubes", "labels"],
                   help="backward partition (default slic; labels: one block per label of --block-labels)")
    p.add_argument("--block-labels", help="label map on the input's grid whose labels are the blocks")
    p.add_argument("--blocks-count", type=positive_int, default=500, help="K blocks (default 500)")
    p.add_argument("--compactness", type=float, default=0.1, help="SLIC compactness on the [0, 1] scale")
    p.add_argument("--jitter-range", type=float, help="H (default: 15%% of the model-space intensity range)")
    p.add_argument("--jitters", type=positive_int, default=100, help="N jitters per sign (2N runs per region)")
    p.add_argument("--forward-variant", default="paper", choices=["paper", "authors"])
    p.add_argument("--backward-variant", default="eq6", choices=["eq6", "authors", "sum"])
    p.add_argument("--batch-size", type=positive_int, help="jittered inputs per forward pass (default: automatic)")
    p.add_argument("--output", required=True, help="folder to create (written atomically)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    add_result_json_option(p)
    add_common_options(p)
    p.set_defaults(func=_ibix)

    q = subparsers.add_parser("ibix-output", help="write an image-to-image network's output channels on the input "
                                                  "grid (to view them and paint M^f on them)")
    q.add_argument("--input", required=True, help="NIfTI/NRRD file or DICOM folder")
    q.add_argument("--model", required=True, help="weights (.pt + JSON), bundle folder or TorchScript")
    q.add_argument("--config", help="model JSON when it is not beside the weights")
    q.add_argument("--output", required=True, help="folder to create: one <channel>.nii.gz per output channel")
    q.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    add_result_json_option(q)
    add_common_options(q)
    q.set_defaults(func=_ibix_output)
