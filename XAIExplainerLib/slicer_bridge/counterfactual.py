"""A folder written by ``xai-explainer counterfactual`` as Slicer nodes: the mask as a segment, the soft map as a
heatmap over the input, the inpainted volume beside the original in two linked slice views, and the probability
change in a table (and the returned status line).

Why two linked views rather than a fade: the counterfactual's claim is "this region, replaced by plausible tissue,
changes the decision"; the reader must compare the same slice before and after at a glance.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from ..errors import SceneInputError
from .scene import get_context

FILES = ("soft_map.nii.gz", "mask.nii.gz", "inpainted.nii.gz", "probabilities.json")


def _read(folder: Path) -> tuple[Any, Any, Any, dict]:
    from ..io import read_json, read_result_volume

    hint = "pass a folder written by `xai-explainer counterfactual`"
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise SceneInputError(f"'{folder}' lacks {', '.join(missing)}; {hint}.")
    return (read_result_volume(folder / "soft_map.nii.gz"), read_result_volume(folder / "mask.nii.gz"),
            read_result_volume(folder / "inpainted.nii.gz"), read_json(folder / "probabilities.json", hint))


def probability_table(record: dict, name: str, scene: Any = None) -> Any:
    """A two-column table (quantity, value): class, probability before/after, change, fill, replaced voxels."""
    scene = scene or get_context().scene
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    rows = [("class", str(record["class"])), ("probability before", f"{record['probability_before']:.6g}"),
            ("probability after", f"{record['probability_after']:.6g}"), ("change", f"{record['change']:+.6g}"),
            ("fill", str(record.get("fill", ""))), ("replaced voxels", str(record.get("mask_voxels", "")))]
    quantity, value = table.AddColumn(), table.AddColumn()
    quantity.SetName("quantity")
    value.SetName("value")
    for key, text in rows:
        row = table.AddEmptyRow()
        table.SetCellText(row, 0, key)
        table.SetCellText(row, 1, text)
    return table


def loss_table(folder: Path, name: str, scene: Any = None) -> Any | None:
    """The loss curve (step and one column per term) as a numeric table, or None without ``loss_curve.csv``."""
    path = folder / "loss_curve.csv"
    if not path.is_file():
        return None
    from vtkmodules.vtkCommonCore import vtkDoubleArray

    with path.open() as handle:
        rows = list(csv.reader(handle))
    scene = scene or get_context().scene
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    for c, header in enumerate(rows[0]):
        column = vtkDoubleArray()
        column.SetName(header)
        for row in rows[1:]:
            column.InsertNextValue(float(row[c]))
        table.AddColumn(column)
    return table


def linked_before_after(input_node: Any, inpainted_node: Any, soft_node: Any) -> Any:
    """Original (with the soft map over it) and inpainted volume side by side, scrolling together."""
    from .comparison import comparison_layout

    layout = comparison_layout([soft_node, soft_node], input_node, labels=["original", "inpainted"])
    layout.composite_nodes[1].SetBackgroundVolumeID(inpainted_node.GetID())
    layout.composite_nodes[1].SetForegroundVolumeID(None)
    return layout


def load_counterfactual_nodes(folder: Path, input_node: Any, label: str = "Counterfactual",
                              link_views: bool = True) -> dict[str, Any]:
    """Nodes for ``folder``: "soft_map", "segmentation" (one segment: the region), "inpainted", "table",
    "loss_table", "layout" (linked views) and "folder_item"; "status" is the probability change in words."""
    from .heatmaps import show_heatmap
    from .module_io import labels_to_segmentation, run_folder
    from .volumes import add_volume_node

    folder = Path(folder)
    soft, mask, inpainted, record = _read(folder)
    base = f"{input_node.GetName()} {label} '{record['class']}'"
    soft_node = add_volume_node(soft, f"{base} soft map", attributes={"XAIExplainer.result": "heatmap"})
    show_heatmap(soft_node, input_node, limit=1.0)
    segmentation = labels_to_segmentation(mask, ["background", f"counterfactual region ({record['class']})"],
                                          input_node, attributes={"XAIExplainer.result": "counterfactual_mask"})
    segmentation.SetName(f"{base} region")
    inpainted_node = add_volume_node(inpainted, f"{base} inpainted",
                                     attributes={"XAIExplainer.result": "counterfactual"})
    display, source = inpainted_node.GetDisplayNode(), input_node.GetDisplayNode()
    if display is not None and source is not None:
        display.AutoWindowLevelOff()
        display.SetWindowLevel(source.GetWindow(), source.GetLevel())  # same grey levels: differences show
    nodes: dict[str, Any] = {"soft_map": soft_node, "segmentation": segmentation, "inpainted": inpainted_node,
                             "table": probability_table(record, f"{base} probabilities")}
    losses = loss_table(folder, f"{base} loss curve")
    if losses is not None:
        nodes["loss_table"] = losses
    nodes["folder_item"] = run_folder(list(nodes.values()), label)
    if link_views:
        nodes["layout"] = linked_before_after(input_node, inpainted_node, soft_node)
    nodes["status"] = (f"p({record['class']}) {record['probability_before']:.3f} → "
                       f"{record['probability_after']:.3f} ({record['change']:+.3f}); "
                       f"{record.get('mask_voxels', 0)} voxels replaced ({record.get('fill', '')})")
    nodes["record"] = record
    return nodes


def counterfactual_cli_args(values: dict[str, Any]) -> list[str]:
    """The command's own flags (``--steps 50``) for the options that differ from the registry's defaults; every
    value (and name) is checked first, so a typo fails before anything is exported or started."""
    from ..attribution.registry import get_method

    spec = get_method("counterfactual")
    checked = spec.validate(values)
    args: list[str] = []
    for option in spec.options:
        if option.name in values and checked[option.name] != option.default:
            args += [option.flag, str(checked[option.name])]
    return args
