"""Regenerate the README screenshots headlessly with slicer-core (no Slicer application, no display).

Colin27 (2 mm) is explained with the demo Swin UNETR (vanilla gradient, classes frontal_L and cerebellum), the
result is put in a Qt-free MRML scene by XAIExplainerLib.slicer_bridge, and three offscreen views are written to
Resources/Screenshots/: slice_overlay.png (heatmaps over the anatomy, one class per panel), volume_rendering.png
(the heatmaps volume-rendered, near-zero hidden) and roi_graph.png (the RoI graph on the semi-transparent segments).

    VTK_DEFAULT_OPENGL_WINDOW=vtkEGLRenderWindow python Testing/make_screenshots.py [--cache explanation.pkl]
"""
from __future__ import annotations

import argparse
import os
import pickle
import sys
import time
from pathlib import Path

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COLIN27 = Path("/usr/share/mricron/templates/ch2.nii.gz")
MODEL = ROOT / "XAIExplainerLib" / "Resources" / "DemoModel" / "swin_unetr_brain.pt"
CLASSES = ["frontal_L", "cerebellum"]


def compute_explanation(cache: Path | None):
    """The explanation of Colin27 (read from ``cache`` when it exists, ~1 min on a CPU otherwise)."""
    if cache is not None and cache.exists():
        return pickle.loads(cache.read_bytes())
    from XAIExplainerLib.pipelines.agg2exp import explain_volume
    from XAIExplainerLib.models.segmentation import SegmentationModel
    from XAIExplainerLib.volume import read_volume, resample_to_spacing

    image = resample_to_spacing(read_volume(COLIN27), (2.0, 2.0, 2.0))
    model = SegmentationModel.load(str(MODEL), device="cpu")
    t = time.perf_counter()
    explanation = explain_volume(image, model, method="vanilla_gradient", classes=CLASSES)
    print(f"explained in {time.perf_counter() - t:.1f} s")
    if cache is not None:
        cache.write_bytes(pickle.dumps(explanation))
    return explanation


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "Resources" / "Screenshots")
    parser.add_argument("--cache", type=Path, default=None, help="pickle of the explanation, reused if present")
    args = parser.parse_args(argv)

    from XAIExplainerLib import slicer_bridge as sb

    explanation = compute_explanation(args.cache)
    sb.create_headless_scene()
    nodes = sb.add_explanation_to_scene(explanation, threshold=0.8)
    graph = nodes["graph"]
    segmentation = nodes["segmentation"]
    heatmaps = [nodes[f"heatmap:{c}"] for c in explanation.class_names]
    limits = [sb.symmetric_limit(explanation.attributions[c].array, 99.5) for c in explanation.class_names]
    for node, limit in zip(heatmaps, limits):
        sb.show_heatmap(node, nodes["image"], opacity=0.75, limit=limit, transparent_fraction=0.15)
    args.out.mkdir(parents=True, exist_ok=True)

    # 1. slice overlays: each class's heatmap on an axial and a sagittal slice through its segment's centroid
    for line in graph.lines:
        line.GetDisplayNode().SetVisibility(False)
    graph.points.GetDisplayNode().SetVisibility(False)
    segmentation.GetDisplayNode().SetVisibility2DFill(False)
    panels = []
    for name, node in zip(explanation.class_names, heatmaps):
        r, a, s = graph.positions[name]
        for orientation, offset in (("Axial", s), ("Sagittal", r)):
            panels.append(sb.render_slice(nodes["image"], node, offset, orientation, size=(280, 280), opacity=0.75,
                                          caption=f"{name} ({orientation.lower()})"))
    sb.save_png(sb.tile_images(panels, columns=4), args.out / "slice_overlay.png")

    # 2. volume rendering of each heatmap (|value| < 30 % of the window hidden; red = for, blue = against)
    segmentation.GetDisplayNode().SetVisibility(False)
    vr_views = []
    for node in heatmaps:
        for h, limit in zip(heatmaps, limits):
            sb.add_heatmap_volume_rendering(h, limit=limit, hidden_fraction=0.3, visible=h is node)
        vr_views.append(sb.render_3d("left", size=(400, 400), azimuth=-30, elevation=15, zoom=1.3))
    for h in heatmaps:
        sb.add_heatmap_volume_rendering(h, visible=False)
    sb.save_png(sb.tile_images(vr_views, columns=2), args.out / "volume_rendering.png")

    # 3. the RoI graph on the semi-transparent segments
    segmentation.GetDisplayNode().SetVisibility(True)
    segmentation.GetDisplayNode().SetOpacity3D(0.12)  # see the lines through the segments
    graph.points.GetDisplayNode().SetVisibility(True)
    for line in graph.lines:
        line.GetDisplayNode().SetVisibility(True)
    views = [sb.render_3d("left", size=(400, 400), azimuth=-35, elevation=20, zoom=1.3),
             sb.render_3d("superior", size=(400, 400), zoom=1.3)]
    sb.save_png(sb.tile_images(views, columns=2), args.out / "roi_graph.png")
    for name in ("slice_overlay", "volume_rendering", "roi_graph"):
        path = args.out / f"{name}.png"
        print(f"{path}: {path.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
