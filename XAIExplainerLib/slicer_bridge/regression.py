"""The module's Regression section as MRML operations: which command runs a regression method, what is checked
before a process starts, a segmentation exported as supervoxels, and a result folder turned into nodes.

Everything here is read from the method registry and the CLI modules, so a regression method registered elsewhere
(Image-Reg-LIME, Grad-CAM++, LayerCAM, SmoothGrad...) appears in the section and runs without a line naming it.
:func:`regression_command` is the one place that maps a registry method to its ``xai-explainer`` command. The
result folder is the one :func:`XAIExplainerLib.pipelines.regression.save_regression_explanation` writes for every
method: ``heatmap_<target>.nii.gz`` and ``provenance.json``, plus ``supervoxels.nii.gz`` and ``surrogate.json``
(LIME) or ``maps.json`` (methods without a surrogate: predictions, and which maps are blank and why). Without a
surrogate the table has no intercept and R² (NaN) and the weights table is not made.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import MethodParameterError, ModelCapabilityError, SceneInputError
from .scene import get_context

__all__ = ["INPUT_REFERENCE", "LABEL_OPTION", "check_regression_request", "export_label_segmentation",
           "load_regression_nodes", "parse_targets", "regression_cli_args", "regression_command", "regression_methods",
           "regression_scores", "regression_target_names"]

#: The registry option that a segmentation (exported as a label map) replaces when the user picks one.
LABEL_OPTION = "supervoxels"
#: Node reference from every result node to the input volume it explains (comparison views filter on it).
INPUT_REFERENCE = "XAIExplainer.input"
#: Command of every regression method that ``lime`` does not run: ``xai-explainer explain-regression --method NAME``
#: takes any option of a registered regression method as ``--param NAME=VALUE`` (Grad-CAM++, LayerCAM, SmoothGrad).
DEFAULT_REGRESSION_COMMAND = "explain-regression"


def regression_methods() -> list[Any]:
    """The registered methods that explain regression models (``MethodSpec``), in registration order."""
    from .methods import method_menu

    return method_menu("regression")


def regression_scores() -> tuple[str, ...]:
    """The score functions of a regression target: higher, lower, closeness (to a reference a*)."""
    from ..pipelines.regression import SCORES

    return tuple(SCORES)


def regression_command(spec: Any) -> list[str]:
    """The ``xai-explainer`` words that run ``spec``: ``["lime"]`` for the method the lime command runs, else
    ``["explain-regression", "--method", name]``. The one place that maps a registry method to its command."""
    from ..cli import lime

    if spec.name == lime.METHOD:
        return ["lime"]
    return [DEFAULT_REGRESSION_COMMAND, "--method", spec.name]


def _flag_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, bool) else str(value)


def regression_cli_args(spec: Any, values: Mapping[str, Any], label_map: Path | None = None) -> list[str]:
    """The command and the method's options that differ from their defaults, validated by the registry first.

    ``lime`` takes each option as its registry flag (``--samples 500``), ``explain-regression`` as
    ``--param name=value``. ``label_map`` (a file on the input's grid) replaces the choice of the
    :data:`LABEL_OPTION` option, as ``--supervoxels LABELMAP`` does on the command line.
    """
    from .methods import method_cli_args

    checked = spec.validate({k: v for k, v in values.items() if spec.option(k) is not None})
    command = regression_command(spec)
    if command[0] != "lime":
        return [*command, *method_cli_args(spec, checked)]
    args = list(command)
    for option in spec.options:
        value = checked[option.name]
        if option.name == LABEL_OPTION and label_map is not None:
            args += [option.flag, str(label_map)]
        elif not (option.allow_array and not isinstance(value, str)) and value != option.default:
            args += [option.flag, _flag_value(value)]
    return args


def regression_target_names(model_path: str | Path) -> list[str] | None:
    """The target names in the model's JSON config (no torch import); None when there is no JSON to read.

    A config of another model kind (a segmentation network) is refused here, before any process starts.
    """
    from ..models.config import ModelConfig, config_path_for

    path = Path(model_path)
    config_file = path if path.suffix == ".json" else (config_path_for(path) if path.is_file() else None)
    if config_file is None:
        return None
    config = ModelConfig.load(config_file)
    if config.kind != "regression":
        raise ModelCapabilityError(f"'{path.name}' is a {config.kind} model ({config_file.name}); the Regression "
                                   "section needs a regression model (its JSON has kind 'regression').")
    return list(config.target_names)


def parse_targets(text: str) -> list[int | str]:
    """Targets typed by a user: comma-separated (names may contain spaces), else space-separated; whole numbers
    are indices, as on the command line."""
    text = (text or "").strip()
    parts = [p.strip() for p in (text.split(",") if "," in text else text.split()) if p.strip()]
    return [int(p) if p.lstrip("-").isdigit() else p for p in parts]


def check_regression_request(spec: Any, model_path: str | Path, targets: Sequence[int | str] | None, score: str,
                             reference: float | None, values: Mapping[str, Any] | None = None,
                             label_map: bool = False) -> list[str] | None:
    """Everything the CLI would refuse, checked from the registry and the model's JSON alone (before any export
    or process): a method for another model kind, bad options, a label map for a method without supervoxels, an
    empty target list, unknown targets, a* without 'closeness' (or the reverse) or with several targets.
    Returns the target names that will be explained (None when the model has no JSON to read them from)."""
    from types import SimpleNamespace

    from ..pipelines.regression import build_target

    if "regression" not in spec.model_kinds:
        names = ", ".join(s.name for s in regression_methods())
        raise MethodParameterError(f"{spec.name} does not explain regression models; choose one of: {names}.")
    if label_map and spec.option(LABEL_OPTION) is None:
        raise MethodParameterError(f"{spec.label} takes no supervoxels, so no label segmentation; clear the "
                                   "'Supervoxels from' selection or choose a method with supervoxels.")
    regression_cli_args(spec, values or {})  # option values and ranges
    if targets is not None and len(targets) == 0:
        raise MethodParameterError("No targets given: name at least one target (or pass None for every target).")
    if reference is not None and not math.isfinite(float(reference)):
        raise MethodParameterError(f"The reference value a* must be a finite number, got {reference!r}.")
    names = regression_target_names(model_path)
    if names is None:
        return None
    return list(build_target(SimpleNamespace(target_names=names), targets, score, reference).names)


def export_label_segmentation(segmentation_node: Any, input_node: Any, work_dir: Path) -> tuple[Path, list[str]]:
    """The segments as one label map on the input's grid (label v = v-th segment) to use as supervoxels.

    Voxels in no segment form one more supervoxel (label 0). Returns the file and the segment names.
    """
    from .module_io import export_roi_segmentation

    if segmentation_node is None or not segmentation_node.IsA("vtkMRMLSegmentationNode"):
        raise SceneInputError("Supervoxels from a segmentation need a segmentation node; pick one or choose none.")
    labels = Path(work_dir) / "supervoxel_labels.nii.gz"
    names = export_roi_segmentation(segmentation_node, input_node, labels, Path(work_dir) / "supervoxel_names.csv")
    return labels, names


def _supervoxel_names(supervoxels: np.ndarray, labels: np.ndarray | None, segment_names: Sequence[str]) -> list[str]:
    """A name per supervoxel id: the segment most of its voxels carry (ids were renumbered from the labels).

    One joint histogram of (id, label) pairs, so an atlas with hundreds of segments costs one pass over the voxels.
    """
    count = int(supervoxels.max()) + 1 if supervoxels.size else 0
    if labels is None or not segment_names:
        return [f"supervoxel {j}" for j in range(count)]
    names = ["outside segments", *segment_names]
    labels = np.asarray(labels, np.int64).ravel()
    n_labels = int(labels.max()) + 1
    joint = np.bincount(supervoxels.ravel() * n_labels + labels, minlength=count * n_labels)
    majority = joint.reshape(count, n_labels).argmax(axis=1)
    return [names[v] if v < len(names) else f"supervoxel {j}" for j, v in enumerate(majority.tolist())]


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _read_folder(folder: Path) -> tuple[dict, dict, list[str]]:
    """(record, provenance, targets): ``record`` holds score, reference, reads, predictions and per-target fits
    from ``surrogate.json`` (LIME) or ``maps.json`` (methods without a surrogate: prediction, blank and why)."""
    provenance = _read_json(folder / "provenance.json")  # the product's entries (score, targets...) at the top
    record = _read_json(folder / "surrogate.json") or _read_json(folder / "maps.json")
    fits = record.get("targets") or {}
    targets = list(fits or provenance.get("targets") or [])
    if not targets:
        raise SceneInputError(f"'{folder}' names no explained targets (no surrogate.json, maps.json or provenance "
                              "'targets'); it is not a regression result folder.")
    predictions = record.get("predictions") or provenance.get("predictions") or {
        t: fits.get(t, {}).get("prediction") for t in targets}
    record = {"score": record.get("score", provenance.get("score")), "reference": record.get(
        "reference", provenance.get("reference")), "reads": record.get("reads"), "predictions": predictions,
        "targets": fits}
    return record, provenance, targets


def _summary_table(name: str, targets: list[str], record: dict, scene: Any) -> Any:
    """One row per explained target: prediction, surrogate intercept and weighted R² (NaN without a surrogate),
    and whether the map is blank (1) as the method reported."""
    from .matrix import _fill_table

    fits = record["targets"]

    def value(target: str, key: str) -> float:
        found = record["predictions"].get(target) if key == "prediction" else fits.get(target, {}).get(key)
        return math.nan if found is None else float(found)

    node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    columns = {key: np.array([value(t, key) for t in targets]) for key in ("prediction", "intercept", "r2")}
    columns["R2"] = columns.pop("r2")
    if any("blank" in fits.get(t, {}) for t in targets):
        columns["blank"] = np.array([value(t, "blank") for t in targets])
    _fill_table(node, "target", targets, columns)
    return node


def _weights_table(name: str, targets: list[str], record: dict, supervoxel_names: list[str], scene: Any) -> Any:
    """The surrogate weight of every supervoxel (rows) for every target (columns); None without a surrogate."""
    from .matrix import _fill_table

    fits = record["targets"]
    weights = {t: np.asarray(fits[t]["weights"], np.float64) for t in targets if fits.get(t, {}).get("weights")}
    if not weights:
        return None
    count = len(next(iter(weights.values())))
    labels = supervoxel_names if len(supervoxel_names) == count else [f"supervoxel {j}" for j in range(count)]
    node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    _fill_table(node, "supervoxel", labels, weights)
    return node


def load_regression_nodes(folder: Path, input_node: Any, input_file: Path, method_label: str,
                          label_map_file: Path | None = None, segment_names: Sequence[str] = ()) -> dict[str, Any]:
    """Nodes for a regression result folder, filed in one Subject Hierarchy folder per run.

    Keys: "heatmap:<target>" (signed map on the input's grid, first one shown over the input; a blank map carries
    ``XAIExplainer.blank_reason``), "table" (prediction, intercept, R², blank per target), "weights" (supervoxel x
    target surrogate weights, when the method fits one), "supervoxels" (label map of the supervoxels, when
    written) and "folder_item". Provenance paths into the
    temporary work folder become "mrml:<input node name>"; every node references the input node.
    """
    from ..io import safe_name
    from ..volume import read_volume
    from .heatmaps import heatmap_window_limit, show_heatmap
    from .module_io import detach_provenance, run_folder
    from .provenance import set_provenance
    from .volumes import add_volume_node

    folder = Path(folder)
    scene = get_context().scene
    record, provenance, targets = _read_folder(folder)
    provenance = detach_provenance(provenance, Path(input_file).parent, f"mrml:{input_node.GetName()}")
    prov = {**provenance, "score": record["score"], "reference": record["reference"],
            "reads": record["reads"] or "positive = raises the score"}
    prefix = f"{input_node.GetName()} {method_label}"
    nodes: dict[str, Any] = {}

    def tag(node: Any, role: str, **extra: Any) -> Any:
        set_provenance(node, prov, result=role, **extra)
        node.SetNodeReferenceID(INPUT_REFERENCE, input_node.GetID())
        return node

    for target in targets:
        heat = read_volume(folder / f"heatmap_{safe_name(target)}.nii.gz")
        blank = record["targets"].get(target, {}).get("blank_reason")
        node = tag(add_volume_node(heat, f"{prefix} {target}", scene=scene), "heatmap", attribution_of=target,
                   **({"blank_reason": blank} if blank else {}))
        heatmap_window_limit(node)  # the window rule, stored on the node
        nodes[f"heatmap:{target}"] = node
    show_heatmap(nodes[f"heatmap:{targets[0]}"], input_node)
    nodes["table"] = tag(_summary_table(f"{prefix} summary", targets, record, scene), "regression_summary")
    supervoxel_names: list[str] = []
    if (folder / "supervoxels.nii.gz").is_file():
        segments = read_volume(folder / "supervoxels.nii.gz")
        labels = np.asarray(read_volume(label_map_file).array) if label_map_file is not None else None
        supervoxel_names = _supervoxel_names(np.asarray(segments.array).astype(np.int64), labels, segment_names)
        nodes["supervoxels"] = tag(add_volume_node(segments, f"{prefix} supervoxels", labelmap=True, scene=scene),
                                   "supervoxels")
    weights = _weights_table(f"{prefix} surrogate weights", targets, record, supervoxel_names, scene)
    if weights is not None:
        nodes["weights"] = tag(weights, "regression_surrogate_weights")
    nodes["folder_item"] = run_folder(list(nodes.values()), method_label)
    return nodes
