"""The comparison report's input side: explanation folders of any product read into cases × methods × targets.

Why a reader of its own: the report compares folders that three products wrote in three layouts (the regression
pipeline's ``heatmap_<target>.nii.gz``, Agg2Exp's ``heatmaps/attribution_<k>_<class>.nii.gz``, IBIX's
``<map>.nii.gz``), all with a ``provenance.json``. Folders are grouped by the *content* of their input
(``provenance.input.sha256``, :func:`~XAIExplainerLib.provenance.volume_sha256`), so a scan explained by several
methods is one case however its file was passed. Every check runs before anything is rendered or written.
"""
from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..errors import ReportInputError, VolumeReadError
from ..io import read_json, safe_name

__all__ = ["Case", "ExplanationFolder", "MapEntry", "deltas", "group_cases", "read_explanation_folder",
           "read_ground_truth", "read_report_inputs"]

#: What the error says a folder should be.
_HINT = "pass folders written by `xai-explainer lime`, `explain`, `ibix` (or their save_* functions)"
#: Entries of ``provenance.params`` that a run *reports* (they differ run to run), not settings a user chose; they
#: never name a method variant.
_REPORTED_PARAMS = frozenset({"n_segments_obtained", "largest_batch", "windows_total", "windows_evaluated",
                              "absent_classes", "intercept", "r2", "samples", "mask_voxels", "precision",
                              "fused_attention", "grad_strategy", "n_features"})


@dataclass
class ExplanationFolder:
    """One folder: which product wrote it, its method, the input it explained and one heatmap file per target."""

    path: Path
    kind: str
    method: str
    params: dict[str, Any]
    model_sha256: str
    input_key: str
    input_sha256: str
    source: str
    maps: dict[str, Path]
    predictions: dict[str, float] = field(default_factory=dict)
    truths: dict[str, float] = field(default_factory=dict)
    label: str = ""
    notes: dict[str, str] = field(default_factory=dict)


@dataclass
class MapEntry:
    """One heatmap of the report: a case, a method (label), a target, and the numbers its card shows."""

    method: str
    target: str
    heatmap: Path
    folder: Path
    kind: str
    prediction: float | None
    truth: float | None
    note: str = ""


@dataclass
class Case:
    """All maps of one input (same content hash), named after its file."""

    key: str
    name: str
    source: str
    input_sha256: str
    entries: list[MapEntry]


def deltas(prediction: float | None, truth: float | None) -> tuple[float | None, float | None]:
    """Δ = ŷ − y and rΔ = (ŷ/y − 1)·100 (the thesis' Eq. 3.3, 3.4); rΔ is undefined (None) for y = 0."""
    if prediction is None or truth is None:
        return None, None
    delta = prediction - truth
    return delta, (None if truth == 0 else (prediction / truth - 1.0) * 100.0)


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _require_file(path: Path, root: Path) -> Path:
    if not path.is_file():
        raise ReportInputError(f"'{root}' is not a complete explanation folder: {path.relative_to(root)} is "
                               f"missing; {_HINT}.")
    return path


def _maps_of(root: Path, provenance: dict[str, Any]) -> tuple[str, dict[str, Path]]:
    """(product kind, target → heatmap file) from the layout each product writes."""
    if provenance.get("product") == "ibix":
        names = [str(n) for n in provenance.get("maps", [])] or sorted(
            p.name[:-len(".nii.gz")] for p in root.glob("*.nii.gz"))
        return "ibix", {n: _require_file(root / f"{safe_name(n)}.nii.gz", root) for n in names}
    if "classes" in provenance or (root / "matrix.json").is_file():
        classes = [str(c) for c in provenance.get("classes", [])]
        return "agg2exp", {c: _require_file(root / "heatmaps" / f"attribution_{k}_{safe_name(c)}.nii.gz", root)
                           for k, c in enumerate(classes)}
    targets = [str(t) for t in provenance.get("targets", [])] or sorted(
        p.name[len("heatmap_"):-len(".nii.gz")] for p in root.glob("heatmap_*.nii.gz"))
    return "regression", {t: _require_file(root / f"heatmap_{safe_name(t)}.nii.gz", root) for t in targets}


def read_explanation_folder(folder: str | os.PathLike[str]) -> ExplanationFolder:
    """The folder's method, input, predictions and heatmap files; a folder that is none is a named one-line error."""
    root = Path(folder)
    if not root.is_dir():
        raise ReportInputError(f"'{root}' is not a folder; {_HINT}.")
    try:
        provenance = read_json(_require_file(root / "provenance.json", root), _HINT)
    except VolumeReadError as exc:
        raise ReportInputError(str(exc)) from None
    if not isinstance(provenance, dict) or "method" not in provenance:
        raise ReportInputError(f"{root / 'provenance.json'} names no method; {_HINT}.")
    kind, maps = _maps_of(root, provenance)
    if not maps:
        raise ReportInputError(f"'{root}' holds no heatmap (no targets in provenance.json, no heatmap_*.nii.gz); "
                               f"{_HINT}.")
    given = provenance.get("input") or {}
    sha = str(given.get("sha256", ""))
    source = str(given.get("source", ""))
    # folders written before the content hash was recorded: the file and its grid stand in for the content
    key = sha or f"{source}|{given.get('shape_zyx')}|{given.get('spacing_xyz')}"
    predictions = {str(k): v for k, v in (provenance.get("predictions") or {}).items() if _number(v) is not None}
    truths = {str(k): v for k, v in (provenance.get("ground_truth") or {}).items() if _number(v) is not None}
    return ExplanationFolder(root, kind, str(provenance["method"]), dict(provenance.get("params") or {}),
                             str((provenance.get("model") or {}).get("sha256", "")), key, sha, source, maps,
                             {k: float(v) for k, v in predictions.items()}, {k: float(v) for k, v in truths.items()},
                             notes=_blank_reasons(root))


def _blank_reasons(root: Path) -> dict[str, str]:
    """Why a map is blank, where the method said so (the regression CAM folders' ``maps.json``: e.g. every channel
    weight negative), so the card states the reason instead of showing an empty picture."""
    path = root / "maps.json"
    if not path.is_file():
        return {}
    try:
        record = read_json(path, _HINT)
    except VolumeReadError as exc:
        raise ReportInputError(str(exc)) from None
    targets = record.get("targets") if isinstance(record, dict) else None
    return {str(t): str(v["blank_reason"]) for t, v in (targets or {}).items()
            if isinstance(v, dict) and v.get("blank_reason")}


def _settings(folder: ExplanationFolder) -> dict[str, str]:
    """The scalar settings that may tell two runs of one method apart (and the model, which may too)."""
    scalar = (str, int, float, bool)
    out = {k: str(v) for k, v in folder.params.items() if isinstance(v, scalar) and k not in _REPORTED_PARAMS}
    # short lists of settings (LayerCAM's layers): two runs on different layers are two methods
    out.update({k: "+".join(map(str, v)) for k, v in folder.params.items() if isinstance(v, list)
                and 0 < len(v) <= 8 and all(isinstance(x, scalar) for x in v) and k not in _REPORTED_PARAMS})
    out["model"] = folder.model_sha256[:8]
    return out


def _naming_keys(runs: Sequence[ExplanationFolder]) -> list[str]:
    """The fewest settings that tell apart the runs of one method on every case. Keys with few distinct values
    across all cases go first: a setting (σ = 0.2 of the range) repeats from case to case, a value derived from it
    (σ in intensity units) does not, and naming by it would give every case its own column."""
    settings = [_settings(f) for f in runs]
    per_case: dict[str, list[dict[str, str]]] = {}
    for f, s in zip(runs, settings):
        per_case.setdefault(f.input_key, []).append(s)
    varying = {k for group in per_case.values() if len(group) > 1 for k in set().union(*group)
               if len({s.get(k) for s in group}) > 1}
    chosen: list[str] = []
    for key in sorted(varying, key=lambda k: (len({s.get(k) for s in settings}), k)):
        if all(len({tuple(s.get(k) for k in chosen) for s in group}) == len(group) for group in per_case.values()):
            break
        chosen.append(key)
    return sorted(chosen)


def _label_methods(folders: Sequence[ExplanationFolder]) -> None:
    """One label per method variant: the method's name, plus the settings that tell its runs on one case apart
    (SmoothGrad σ = 0.2 and 0.3 of the range are two columns), the same label on every case."""
    for method in sorted({f.method for f in folders}):
        runs = [f for f in folders if f.method == method]
        keys = _naming_keys(runs)
        for f in runs:
            settings = _settings(f)
            extra = ", ".join(f"{k}={settings.get(k, '-')}" for k in keys)
            f.label = f"{method} ({extra})" if extra else method


def _case_name(source: str, key: str) -> str:
    name = Path(source).name if source else ""
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name or f"case-{key[:8]}"


def _check_sources(folders: Sequence[ExplanationFolder]) -> None:
    """One input file explained with two different contents cannot be one case, and silently making it two
    would put a changed scan beside the old one under one name: refuse."""
    seen: dict[str, ExplanationFolder] = {}
    for f in folders:
        if not f.source or not f.input_sha256:
            continue
        other = seen.setdefault(os.path.abspath(f.source), f)
        if other.input_sha256 != f.input_sha256:
            raise ReportInputError(
                f"'{other.path}' and '{f.path}' both explain '{f.source}' but of different content (input sha256 "
                f"{other.input_sha256[:12]}… vs {f.input_sha256[:12]}…): the file changed between the runs, so their "
                "maps are not of one case. Re-run the older explanation on the current file.")


def group_cases(folders: Sequence[ExplanationFolder], one_case: bool = False) -> list[Case]:
    """Folders → cases (by input content) → one entry per (method label, target); duplicates are refused.

    ``one_case``: the caller means one scan compared across methods (the thesis' *Multiple methods* page for one
    image); folders of several inputs are then an error that lists which folder explains which input.
    """
    if not folders:
        raise ReportInputError("No explanation folders given; pass at least one with --inputs DIR [DIR ...].")
    _check_sources(folders)
    _label_methods(folders)
    by_key: dict[str, list[ExplanationFolder]] = {}
    for f in folders:
        by_key.setdefault(f.input_key, []).append(f)
    names = [_case_name(fs[0].source, key) for key, fs in by_key.items()]
    if one_case and len(by_key) > 1:
        listing = "; ".join(f"{name}: {', '.join(f.path.name for f in fs)}" for name, fs in zip(names, by_key.values()))
        raise ReportInputError(f"--one-case, but the folders explain {len(by_key)} different inputs ({listing}); "
                               "pass the folders of one input, or drop --one-case to compare several cases.")
    cases = []
    for (key, fs), name in zip(by_key.items(), names):
        if names.count(name) > 1:
            name = f"{name} ({key[:8]})"
        cases.append(Case(key, name, fs[0].source, fs[0].input_sha256, _entries(fs, name)))
    return cases


def _entries(folders: Sequence[ExplanationFolder], case: str) -> list[MapEntry]:
    entries: dict[tuple[str, str], MapEntry] = {}
    for f in folders:
        for target, path in f.maps.items():
            if (f.label, target) in entries:
                raise ReportInputError(
                    f"'{entries[f.label, target].folder}' and '{f.path}' both hold {f.label} of target '{target}' "
                    f"for case '{case}' with the same settings; pass only one of them.")
            entries[f.label, target] = MapEntry(f.label, target, path, f.path, f.kind, f.predictions.get(target),
                                                f.truths.get(target), f.notes.get(target, ""))
    return list(entries.values())


def read_ground_truth(path: str | os.PathLike[str], cases: Sequence[Case]) -> list[Case]:
    """Apply a CSV with columns case,target,value (case = the case name, its input file or its input sha256);
    a row that names no case or target of the report, or a value that is no number, is a one-line error."""
    rows = _csv_rows(Path(path))
    index = {}
    for case in cases:
        for alias in (case.name, case.source, Path(case.source).name, case.input_sha256):
            if alias:
                index.setdefault(alias, case)
    for line, (name, target, value) in rows:
        case = index.get(name)
        if case is None:
            raise ReportInputError(f"{path}, line {line}: case '{name}' is none of the report's cases "
                                   f"({', '.join(c.name for c in cases)}); use one of those names.")
        hits = [e for e in case.entries if e.target == target]
        if not hits:
            raise ReportInputError(f"{path}, line {line}: case '{case.name}' has no target '{target}' (targets: "
                                   f"{', '.join(sorted({e.target for e in case.entries}))}).")
        for entry in hits:
            entry.truth = value
    return list(cases)


def _csv_rows(path: Path) -> list[tuple[int, tuple[str, str, float]]]:
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            missing = {"case", "target", "value"} - set(reader.fieldnames or [])
            if missing:
                raise ReportInputError(f"{path} needs the header case,target,value (missing: "
                                       f"{', '.join(sorted(missing))}).")
            raw = [(n + 2, row) for n, row in enumerate(reader)]
    except (FileNotFoundError, IsADirectoryError):
        raise ReportInputError(f"No ground-truth CSV at '{path}'; give a file with columns case,target,value.") \
            from None
    rows = []
    for line, row in raw:
        value = _number(row.get("value"))
        if value is None:
            raise ReportInputError(f"{path}, line {line}: value {row.get('value')!r} is not a finite number.")
        rows.append((line, (str(row["case"]).strip(), str(row["target"]).strip(), value)))
    return rows


def read_report_inputs(folders: Iterable[str | os.PathLike[str]],
                       ground_truth: str | os.PathLike[str] | None = None, one_case: bool = False) -> list[Case]:
    """Every folder read and checked, grouped into cases, ground truth applied: the report's whole input."""
    read = [read_explanation_folder(f) for f in folders]
    cases = group_cases(read, one_case)
    return read_ground_truth(ground_truth, cases) if ground_truth is not None else cases
