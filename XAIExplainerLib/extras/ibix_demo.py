"""IBIX on a real network nobody here trained: deepbet (PyPI, TorchScript brain extraction) on Colin27 T1; and on the
shipped three-channel tissue network (T1 → grey / white / CSF fractions) on the MNI152 T1.

    python -m XAIExplainerLib.extras.ibix_demo --output DIR [--jitters N]
    python -m XAIExplainerLib.extras.ibix_demo --model tissue --output DIR [--jitters N]

Writes, on the input grid of Colin27: the brain probability, the two painted masks (M^f: the brain-mask border at the
frontal pole; M^x: a skull/scalp patch in front of it), the exact backward map of M^f (one VJP), the exact forward
map of M^x (one JVP) and, with ``--jitters N``, the jittered forward map (paper Eq. 5) next to it, plus a figure.
"""
from __future__ import annotations

import argparse
import glob
import sys
import sysconfig
from pathlib import Path
from typing import Any

import numpy as np

COLIN27 = Path("/usr/share/mricron/templates/ch2.nii.gz")
TISSUE_MODEL = Path(__file__).resolve().parents[1] / "Resources" / "TissueModel" / "tissue_unet.pt"
#: Painted regions of the tissue demo (MNI mm, RAS), all in the right hemisphere the network never saw in training:
#: M^x in the white matter of the corona radiata, M^f on the grey-matter channel at the right putamen.
TISSUE_MX_RAS, TISSUE_MF_RAS, TISSUE_RADIUS_MM = (26.0, -10.0, 30.0), (24.0, 4.0, 2.0), 6.0
DEEPBET_CONFIG = Path(__file__).resolve().parents[2] / "Testing" / "deepbet_model.json"


def deepbet_weights() -> Path:
    """``<site-packages>/data/models/model.pt`` as installed by ``pip install deepbet``."""
    found = glob.glob(str(Path(sysconfig.get_paths()["purelib"]) / "data" / "models" / "model.pt"))
    if not found:
        raise FileNotFoundError("deepbet is not installed (pip install deepbet).")
    return Path(found[0])


def physical_points(volume) -> np.ndarray:
    """LPS coordinates (z, y, x, 3) of every voxel centre."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in volume.size_xyz], indexing="ij"), -1).astype(float)
    matrix = volume.ijk_to_lps()
    points = grid @ matrix[:3, :3].T + matrix[:3, 3]
    return points.transpose(2, 1, 0, 3)


def painted_masks(image, brain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """M^f = brain-mask border within 15 mm of the frontal pole; M^x = non-brain voxels within 8 mm of a point 10 mm
    in front of the frontal pole (skull and scalp)."""
    from scipy.ndimage import binary_erosion

    lps = physical_points(image)
    anterior = -lps[..., 1]  # LPS: +y is posterior
    pole = anterior[brain].max()
    border = brain & ~binary_erosion(brain, iterations=2)
    m_f = border & (anterior > pole - 15.0)
    tip = lps[brain & (anterior > pole - 1.5)].mean(0) + np.array([0.0, -10.0, 0.0])
    m_x = (np.linalg.norm(lps - tip, axis=-1) < 8.0) & ~brain
    return m_f, m_x


def more_masks(image, brain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """M^f = brain voxels within 12 mm of the right cerebellar hemisphere (MNI 20, −65, −35); M^x = a ventricle:
    the dark brain voxels (T1 below the brain's 5th percentile) within 30 mm of the brain's centroid, largest
    connected piece, cut to 5 mm around its centre."""
    from scipy.ndimage import label as connected

    m_f = brain & _ball(image, (20.0, -65.0, -35.0), 12.0)
    lps = physical_points(image)
    values = image.array.astype(np.float64)
    dark = brain & (values < np.percentile(values[brain], 5.0))
    dark &= np.linalg.norm(lps - lps[brain].mean(0), axis=-1) < 30.0
    pieces, n = connected(dark)
    if n == 0:
        return m_f, np.zeros_like(brain)
    largest = pieces == (np.argmax(np.bincount(pieces.ravel())[1:]) + 1)
    centre = lps[largest].mean(0)
    return m_f, largest & (np.linalg.norm(lps - centre, axis=-1) < 5.0)


def run_demo(output: Path, n_jitters: int = 0, device: str = "cpu") -> dict[str, Any]:
    """All maps of the demo; returns summary numbers for the report."""
    from ..pipelines.ibix import ibix_backward, ibix_forward, load_image_to_image
    from ..volume import read_volume, write_volume

    image = read_volume(COLIN27)
    model = load_image_to_image(deepbet_weights(), device=device, config=DEEPBET_CONFIG)
    brain_p = model.predict(image)["brain"]
    brain = brain_p.array > 0.5
    m_f, m_x = painted_masks(image, brain)
    m_f_cb, m_x_vent = more_masks(image, brain)
    output.mkdir(parents=True, exist_ok=True)
    write_volume(brain_p, output / "brain_probability.nii.gz")
    for name, mask in (("mask_output_Mf", m_f), ("mask_input_Mx", m_x), ("mask_output_Mf_cerebellum", m_f_cb),
                       ("mask_input_Mx_ventricle", m_x_vent)):
        write_volume(image.with_array(mask.astype(np.uint8)), output / f"{name}.nii.gz")
    # M^f on the brain channel only: deepbet's two softmax channels sum to one, so both together have derivative 0
    maps = {"backward_exact": ibix_backward(image, model, image.with_array(m_f.astype(np.uint8)), exact=True,
                                            channel="brain"),
            "backward_exact_cerebellum": ibix_backward(image, model, image.with_array(m_f_cb.astype(np.uint8)),
                                                       exact=True, channel="brain")}
    maps["forward_exact"] = ibix_forward(image, model, image.with_array(m_x.astype(np.uint8)), exact=True)
    maps["forward_exact_ventricle"] = ibix_forward(image, model, image.with_array(m_x_vent.astype(np.uint8)),
                                                   exact=True)
    if n_jitters:
        maps["forward_jittered"] = ibix_forward(image, model, image.with_array(m_x.astype(np.uint8)),
                                                n_jitters=n_jitters)
    summary = {"Mf_voxels": int(m_f.sum()), "Mx_voxels": int(m_x.sum()), "Mf_cerebellum_voxels": int(m_f_cb.sum()),
               "Mx_ventricle_voxels": int(m_x_vent.sum())}
    for key, result in maps.items():
        for name, volume in result.maps.items():
            write_volume(volume, output / f"{key}_{name}.nii.gz")
        summary[f"{key}_seconds"] = round(result.provenance["timings"]["map_s"], 2)
    summary.update(describe_maps(image, brain, m_f, m_x, maps))
    summary.update(describe_more_maps(image, brain, m_f_cb, m_x_vent, maps))
    figure(image, brain, m_f, m_x, maps, output / "ibix_deepbet.png")
    return summary


def _on_input(image, volume) -> np.ndarray:
    from ..volume import resample_to_reference

    return resample_to_reference(volume, image, "linear").array.astype(np.float64)


def _mass_near(values: np.ndarray, region: np.ndarray, spacing_mm: float, radius_mm: float) -> float:
    """Share of Σ|values| within ``radius_mm`` of ``region``."""
    from scipy.ndimage import distance_transform_edt

    near = distance_transform_edt(~region, sampling=spacing_mm) <= radius_mm
    total = np.abs(values).sum()
    return float(np.abs(values[near]).sum() / total) if total > 0 else 0.0


def describe_maps(image, brain: np.ndarray, m_f: np.ndarray, m_x: np.ndarray, maps: dict) -> dict[str, float]:
    """Numbers that say what the maps show: how local they are, and signs."""
    spacing = float(np.mean(image.spacing))
    back = maps["backward_exact"].maps["backward"].array.astype(np.float64)
    fwd = _on_input(image, maps["forward_exact"].maps["forward_brain"])
    out = {"backward_share_within_10mm_of_Mf": _mass_near(back, m_f, spacing, 10.0),
           "backward_share_inside_brain": float(np.abs(back[brain]).sum() / np.abs(back).sum()),
           "backward_positive_share": float(back[back > 0].sum() / np.abs(back).sum()),
           "forward_brain_share_within_10mm_of_Mx": _mass_near(fwd, m_x, spacing, 10.0),
           "forward_brain_mean_on_near_brain_border": float(fwd[m_f].mean()),
           "forward_brain_min": float(fwd.min()), "forward_brain_max": float(fwd.max())}
    if "forward_jittered" in maps:
        jit = _on_input(image, maps["forward_jittered"].maps["forward_brain"])
        out["forward_jittered_vs_exact_rel_error"] = float(np.linalg.norm(jit - fwd) / np.linalg.norm(fwd))
    return out


def describe_more_maps(image, brain: np.ndarray, m_f: np.ndarray, m_x: np.ndarray, maps: dict) -> dict[str, float]:
    """Locality and sign of the cerebellum backward map and of the ventricle forward map (brain channel)."""
    from scipy.ndimage import binary_erosion

    spacing = float(np.mean(image.spacing))
    back = maps["backward_exact_cerebellum"].maps["backward"].array.astype(np.float64)
    fwd = _on_input(image, maps["forward_exact_ventricle"].maps["forward_brain"])
    border = brain & ~binary_erosion(brain, iterations=2)
    return {"cerebellum_backward_share_within_10mm_of_Mf": _mass_near(back, m_f, spacing, 10.0),
            "cerebellum_backward_positive_share": float(back[back > 0].sum() / np.abs(back).sum()),
            "ventricle_forward_share_within_10mm_of_Mx": _mass_near(fwd, m_x, spacing, 10.0),
            "ventricle_forward_share_on_brain_border": float(np.abs(fwd[border]).sum() / np.abs(fwd).sum()),
            "ventricle_forward_max_abs": float(np.abs(fwd).max())}


def figure(image, brain: np.ndarray, m_f: np.ndarray, m_x: np.ndarray, maps: dict, path: Path) -> Path:
    """Sagittal slice through M^f: input with masks, |backward map|, forward map (brain channel)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = int(np.round(np.argwhere(m_f).mean(0)[2]))
    back = np.abs(maps["backward_exact"].maps["backward"].array[:, :, x])
    fwd = _on_input(image, maps["forward_exact"].maps["forward_brain"])[:, :, x]
    base = image.array[:, :, x]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.5))
    panels = ((None, "Colin27: M^f (red), M^x (blue)"), (back, "|B(M^f)| exact (VJP)"),
              (fwd, "F(M^x) exact (JVP), brain channel"))
    for ax, (overlay, title) in zip(axes, panels):
        ax.imshow(base, cmap="gray", origin="lower")
        if overlay is None:
            ax.contour(m_f[:, :, x], [0.5], colors="red")
            ax.contour(m_x[:, :, x], [0.5], colors="blue")
            ax.contour(brain[:, :, x], [0.5], colors="yellow", linewidths=0.5)
        else:
            limit = np.abs(overlay).max() or 1.0
            shown = np.ma.masked_where(np.abs(overlay) < 0.02 * limit, overlay)
            cmap = "hot" if overlay.min() >= 0 else "coolwarm"
            image_ = ax.imshow(shown, cmap=cmap, origin="lower", alpha=0.8,
                               vmin=0 if cmap == "hot" else -limit, vmax=limit)
            fig.colorbar(image_, ax=ax, fraction=0.04)
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _ball(image, centre_ras: tuple[float, float, float], radius_mm: float) -> np.ndarray:
    """Voxels of ``image`` within ``radius_mm`` of an RAS point (MNI coordinates)."""
    centre_lps = np.array([-centre_ras[0], -centre_ras[1], centre_ras[2]])
    return np.linalg.norm(physical_points(image) - centre_lps, axis=-1) <= radius_mm


def run_tissue_demo(output: Path, n_jitters: int = 0, device: str = "cpu") -> dict[str, Any]:
    """Multi-channel IBIX on the shipped tissue network and the MNI152 T1 (right hemisphere: never trained on).

    Writes the three output channels, the two masks, the exact forward map of M^x per channel (one JVP), the exact
    voxel backward map of M^f painted on the grey-matter channel (one VJP), its exact Eq. 6 block version (cubes,
    one JVP per block) and, with ``--jitters N``, the jittered forward map beside the exact one; plus a figure.
    """
    from ..datasets.samples import mni152_t1
    from ..pipelines.ibix import ibix_backward, ibix_forward, load_image_to_image
    from ..volume import write_volume

    image = mni152_t1()
    image = image.with_array(image.array.astype(np.float32))
    model = load_image_to_image(TISSUE_MODEL, device=device)
    outputs = model.predict(image)
    m_x, m_f = _ball(image, TISSUE_MX_RAS, TISSUE_RADIUS_MM), _ball(image, TISSUE_MF_RAS, TISSUE_RADIUS_MM)
    output.mkdir(parents=True, exist_ok=True)
    for name, volume in outputs.items():
        write_volume(volume, output / f"output_{name}.nii.gz")
    for name, mask in (("mask_input_Mx", m_x), ("mask_output_Mf_grey_matter", m_f)):
        write_volume(image.with_array(mask.astype(np.uint8)), output / f"{name}.nii.gz")
    mx, mf = image.with_array(m_x.astype(np.uint8)), image.with_array(m_f.astype(np.uint8))
    maps = {"forward_exact": ibix_forward(image, model, mx, exact=True),
            "backward_exact": ibix_backward(image, model, mf, exact=True, channel="grey_matter"),
            "backward_blocks_exact": ibix_backward(image, model, mf, exact=True, resolution="blocks",
                                                   channel="grey_matter", blocks="cubes", n_blocks=64)}
    if n_jitters:
        maps["forward_jittered"] = ibix_forward(image, model, mx, n_jitters=n_jitters)
    summary: dict[str, Any] = {"Mx_voxels": int(m_x.sum()), "Mf_voxels": int(m_f.sum())}
    for key, result in maps.items():
        for name, volume in result.maps.items():
            write_volume(volume, output / f"{key}_{name}.nii.gz")
        summary[f"{key}_seconds"] = round(result.provenance["timings"]["map_s"], 2)
    summary.update(describe_tissue_maps(image, outputs, m_x, m_f, maps))
    tissue_figure(image, outputs, m_x, m_f, maps, output / "ibix_tissue.png")
    return summary


def describe_tissue_maps(image, outputs: dict, m_x: np.ndarray, m_f: np.ndarray, maps: dict) -> dict[str, float]:
    """Per channel: the forward response's mean inside M^x (sign: does brighter WM raise this tissue?) and its
    locality; for the backward maps, locality around M^f and the sign of the grey-matter VJP inside M^f."""
    spacing = float(np.mean(image.spacing))
    out: dict[str, float] = {}
    for name in outputs:
        fwd = _on_input(image, maps["forward_exact"].maps[f"forward_{name}"])
        out[f"forward_{name}_mean_in_Mx"] = float(fwd[m_x].mean())
        out[f"forward_{name}_share_within_10mm_of_Mx"] = _mass_near(fwd, m_x, spacing, 10.0)
        if "forward_jittered" in maps:
            jit = _on_input(image, maps["forward_jittered"].maps[f"forward_{name}"])
            out[f"forward_{name}_jittered_vs_exact_rel_error"] = float(np.linalg.norm(jit - fwd) / np.linalg.norm(fwd))
    back = maps["backward_exact"].maps["backward"].array.astype(np.float64)
    out["backward_share_within_10mm_of_Mf"] = _mass_near(back, m_f, spacing, 10.0)
    out["backward_mean_in_Mf"] = float(back[m_f].mean())
    blocks = maps["backward_blocks_exact"].maps["backward"].array.astype(np.float64)
    out["blocks_eq6_max"] = float(blocks.max())
    out["blocks_eq6_at_Mf_centre"] = float(blocks[tuple(np.round(np.argwhere(m_f).mean(0)).astype(int))])
    return out


def tissue_figure(image, outputs: dict, m_x: np.ndarray, m_f: np.ndarray, maps: dict, path: Path) -> Path:
    """Row 1: the input and the three output channels (axial slices through M^x and M^f); row 2: the forward map
    of M^x per channel; row 3: the voxel and block backward maps of M^f (grey-matter channel)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    zx, zf = (int(np.round(np.argwhere(m).mean(0)[0])) for m in (m_x, m_f))
    names = list(outputs)
    fig, axes = plt.subplots(3, 4, figsize=(14, 10.5))
    rows = [[(image.array[zx], None, "T1 (M^x blue)", m_x[zx], m_f[zx])]
            + [(outputs[n].array[zx], None, f"output {n}", None, None) for n in names],
            [(image.array[zx], None, "T1", m_x[zx], None)]
            + [(image.array[zx], _on_input(image, maps["forward_exact"].maps[f"forward_{n}"])[zx],
                f"F(M^x) exact, {n}", m_x[zx], None) for n in names],
            [(image.array[zf], None, "T1", None, m_f[zf]),
             (image.array[zf], maps["backward_exact"].maps["backward"].array[zf], "B(M^f) exact VJP (grey matter)",
              None, m_f[zf]),
             (image.array[zf], maps["backward_blocks_exact"].maps["backward"].array[zf],
              "Eq. 6 per block, exact (JVPs)", None, m_f[zf]),
             (outputs[names[0]].array[zf], None, f"output {names[0]} (M^f)", None, m_f[zf])]]
    for row, panels in zip(axes, rows):
        for ax, (base, overlay, title, blue, red) in zip(row, panels):
            ax.imshow(base, cmap="gray", origin="lower")
            if overlay is not None:
                limit = float(np.abs(overlay).max()) or 1.0
                cmap = "hot" if overlay.min() >= 0 else "coolwarm"
                shown = np.ma.masked_where(np.abs(overlay) < 0.02 * limit, overlay)
                handle = ax.imshow(shown, cmap=cmap, origin="lower", alpha=0.85,
                                   vmin=0 if cmap == "hot" else -limit, vmax=limit)
                fig.colorbar(handle, ax=ax, fraction=0.04)
            for mask, colour in ((blue, "blue"), (red, "red")):
                if mask is not None and mask.any():
                    ax.contour(mask, [0.5], colors=colour, linewidths=0.8)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--model", choices=["deepbet", "tissue"], default="deepbet")
    parser.add_argument("--jitters", type=int, default=0, help="also the jittered forward map with N jitters per sign")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    run = run_demo if args.model == "deepbet" else run_tissue_demo
    summary = run(args.output, args.jitters, args.device)
    for key, value in summary.items():
        print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
