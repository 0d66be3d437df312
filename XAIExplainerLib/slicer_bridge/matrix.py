"""The RoI importance matrix (classes x RoIs) as MRML table and plot nodes.

A table node is what Slicer shows in its Tables module and saves with the scene (as .tsv); a bar chart per
class makes "which regions does this class rely on" readable at a glance in a plot view.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from vtkmodules.vtkCommonCore import vtkDoubleArray, vtkStringArray
from vtkmodules.vtkCommonDataModel import vtkTable

from ..errors import SceneInputError
from .scene import get_context

__all__ = ["METRIC_COLUMNS", "SERIES_COLORS", "matrix_chart", "matrix_to_table", "metrics_to_table"]

#: Quality-metric columns of :func:`metrics_to_table`, in the order a reader compares methods.
METRIC_COLUMNS = ("faithfulness_correlation", "average_sensitivity", "complexity")

#: Qualitative colours (matplotlib's tab10) for one bar series per class.
SERIES_COLORS = (
    (0.122, 0.467, 0.706), (1.000, 0.498, 0.055), (0.173, 0.627, 0.173), (0.839, 0.153, 0.157),
    (0.580, 0.404, 0.741), (0.549, 0.337, 0.294), (0.890, 0.467, 0.761), (0.498, 0.498, 0.498),
    (0.737, 0.741, 0.133), (0.090, 0.745, 0.812),
)


def _checked(matrix: Any, row_names: Sequence[str], col_names: Sequence[str]) -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape != (len(row_names), len(col_names)):
        raise SceneInputError(
            f"The matrix has shape {m.shape} but {len(row_names)} row names and {len(col_names)} column names were "
            "given; pass one name per class (row) and per RoI (column)."
        )
    if len(set(map(str, col_names))) != len(col_names) or len(set(map(str, row_names))) != len(row_names):
        raise SceneInputError("Row and column names must be unique: they become table column names / labels.")
    return m


def _fill_table(table_node: Any, label_header: str, labels: Sequence[str], columns: dict[str, np.ndarray]) -> None:
    table = vtkTable()
    names = vtkStringArray()
    names.SetName(label_header)
    for label in labels:
        names.InsertNextValue(str(label))
    table.AddColumn(names)
    for header, values in columns.items():
        column = vtkDoubleArray()
        column.SetName(str(header))
        for v in values:
            column.InsertNextValue(float(v))
        table.AddColumn(column)
    table_node.SetAndObserveTable(table)
    table_node.SetUseColumnTitleAsColumnHeader(True)


def matrix_to_table(
    matrix: Any,
    row_names: Sequence[str],
    col_names: Sequence[str],
    name: str = "RoI importance",
    scene: Any = None,
) -> Any:
    """A ``vtkMRMLTableNode`` with a text column "class" (the row names) and one number column per RoI.

    ``slicer.util.arrayFromTableColumn(node, roi_name)`` gives that RoI's importance for every class.
    """
    m = _checked(matrix, row_names, col_names)
    scene = scene or get_context().scene
    node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    _fill_table(node, "class", row_names, {str(c): m[:, j] for j, c in enumerate(col_names)})
    node.SetAttribute("XAIExplainer.result", "roi_importance_matrix")
    return node


def matrix_chart(
    matrix: Any,
    row_names: Sequence[str],
    col_names: Sequence[str],
    name: str = "RoI importance chart",
    scene: Any = None,
) -> Any:
    """A bar chart (``vtkMRMLPlotChartNode``): RoIs along x, one bar series per class (row).

    The series read a companion table (RoIs as rows: "index", "RoI", one column per class), reachable as
    ``chart.GetNthPlotSeriesNode(i).GetTableNode()``; each series is labelled with the RoI names.
    """
    m = _checked(matrix, row_names, col_names)
    scene = scene or get_context().scene
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", f"{name} table")
    columns = {"index": np.arange(len(col_names), dtype=np.float64)}
    columns.update({str(r): m[i] for i, r in enumerate(row_names)})
    _fill_table(table, "RoI", col_names, columns)
    chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", name)
    chart.SetTitle("RoI importance per class")
    chart.SetXAxisTitle("RoI")
    chart.SetYAxisTitle("importance")
    chart.SetLegendVisibility(True)
    for i, row in enumerate(row_names):
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{name}: {row}")
        series.SetAndObserveTableNodeID(table.GetID())
        series.SetXColumnName("index")
        series.SetYColumnName(str(row))
        series.SetLabelColumnName("RoI")
        series.SetPlotType(series.PlotTypeBar)
        series.SetColor(*SERIES_COLORS[i % len(SERIES_COLORS)])
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
    return chart


def metrics_to_table(metrics: dict, name: str = "Attribution quality", scene: Any = None) -> Any:
    """The per-class quality metrics of ``metrics.json`` as a table: faithfulness (higher is better), average
    sensitivity and complexity (lower is better); an undefined value (an absent class) is NaN, shown empty.

    The attribution's wall time and model evaluations go into node attributes, so that two methods' tables can
    be compared side by side in the Tables module.
    """
    per_class = metrics.get("classes") if isinstance(metrics, dict) else None
    if not isinstance(per_class, dict) or not per_class:
        raise SceneInputError("metrics must be the dict of metrics.json, with a non-empty 'classes' mapping.")
    scene = scene or get_context().scene
    node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    columns = {
        metric: np.array([np.nan if values.get(metric) is None else float(values[metric])
                          for values in per_class.values()])
        for metric in METRIC_COLUMNS
    }
    _fill_table(node, "class", list(per_class), columns)
    node.SetAttribute("XAIExplainer.result", "attribution_quality")
    for key in ("wall_time_s", "n_model_evaluations"):
        if metrics.get(key) is not None:
            node.SetAttribute(f"XAIExplainer.{key}", str(metrics[key]))
    return node
