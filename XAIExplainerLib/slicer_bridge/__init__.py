"""Qt-free bridge from XAIExplainerLib results to 3D Slicer (MRML) nodes.

Works inside the Slicer application (on ``slicer.mrmlScene``) and outside it with slicer-core (a headless scene
from :func:`create_headless_scene`). This is the only part of XAIExplainerLib that imports slicer or vtk;
import it only where Slicer (or slicer-core) is available.
"""
from .comparison import (
    COMPARISON_LAYOUT_ID,
    COMPARISON_VIEWS,
    ComparisonLayout,
    comparison_layout,
    comparison_layout_xml,
    render_comparison,
    show_comparison_view,
)
from .explanation import add_explanation_to_scene, add_segmentation_node, label_color_node
from .graph import RoIGraphNodes, edge_style, restore_roi_graph, show_roi_graph, update_roi_graph
from .heatmaps import (
    DIVERGING_COLORS,
    add_heatmap_volume_rendering,
    diverging_color_node,
    heatmap_window_limit,
    set_slice_layers,
    show_heatmap,
    symmetric_limit,
)
from .matrix import matrix_chart, matrix_to_table, metrics_to_table
from .provenance import ATTRIBUTE_PREFIX, get_provenance, provenance_attributes, set_provenance
from .render import (
    OffscreenSliceView,
    OffscreenThreeDView,
    offscreen_rendering_available,
    render_3d,
    render_slice,
    save_png,
    tile_images,
)
from .scene import SlicerContext, create_headless_scene, get_context, in_slicer_application
from .volumes import LPS_TO_RAS, add_volume_node, node_ijk_to_ras, update_volume_node, volume_from_node

__all__ = [
    "ATTRIBUTE_PREFIX", "COMPARISON_LAYOUT_ID", "ComparisonLayout", "comparison_layout", "comparison_layout_xml",
    "render_comparison", "COMPARISON_VIEWS", "show_comparison_view", "DIVERGING_COLORS", "LPS_TO_RAS",
    "OffscreenSliceView", "OffscreenThreeDView",
    "RoIGraphNodes", "SlicerContext", "add_explanation_to_scene", "add_heatmap_volume_rendering",
    "add_segmentation_node", "add_volume_node", "create_headless_scene", "diverging_color_node", "edge_style",
    "get_context", "get_provenance", "heatmap_window_limit", "restore_roi_graph", "in_slicer_application", "label_color_node", "matrix_chart",
    "matrix_to_table", "metrics_to_table", "node_ijk_to_ras", "offscreen_rendering_available", "provenance_attributes", "render_3d",
    "render_slice", "save_png", "set_provenance", "set_slice_layers", "show_heatmap", "show_roi_graph",
    "symmetric_limit", "tile_images", "update_roi_graph", "update_volume_node", "volume_from_node",
]
