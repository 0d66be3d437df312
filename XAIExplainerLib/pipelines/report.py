"""``xai-explainer report``: explanation folders (cases × methods × targets) → one self-contained HTML page.

The thesis' comparison app as a file: per case the input, prediction ŷ, ground truth y, Δ = ŷ − y and
rΔ = (ŷ/y − 1)·100, heatmaps side by side, filters on target, method, |Δ| and rΔ, and its three views. Order of work:
the output path is checked, every folder read and checked, every picture rendered, and only then is the page
written (temporary file + rename), so bad input leaves nothing behind and a reader never sees half a page.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Sequence

from ..errors import OutputExistsError, OutputPathError, XAIExplainerError
from .report_folders import Case, deltas, read_report_inputs

__all__ = ["build_report", "check_report_output", "report_data", "write_report"]


def check_report_output(path: str | os.PathLike[str], inputs: Sequence[str | os.PathLike[str]] = (),
                        overwrite: bool = False) -> Path:
    """Everything about writing the page that can be known before reading a folder: an .html name, an existing
    folder to hold it (it is not created: a typo should not make folders), not inside an input, writable."""
    from ..outputs import check_not_an_input, check_writable_parent

    p = Path(path)
    if p.suffix.lower() not in (".html", ".htm"):
        raise OutputPathError(f"The report '{p}' must end in .html (it is one self-contained web page).")
    if not p.absolute().parent.is_dir():
        raise OutputPathError(f"The folder '{p.absolute().parent}' for the report does not exist; create it or "
                              "choose another --output.")
    if p.is_dir():
        raise OutputPathError(f"The report '{p}' is an existing folder; give a file name such as "
                              f"'{p / 'report.html'}'.")
    if p.exists() and not overwrite:
        raise OutputExistsError(f"The report '{p}' already exists; choose another name or pass --overwrite.")
    check_not_an_input(p, inputs, "report")
    check_writable_parent(p, "report")
    return p


def _reference(case: Case) -> tuple[Any, str]:
    """The case's input volume when its file is still there with the content that was explained, else a note."""
    from ..provenance import volume_sha256
    from ..volume import read_volume

    if not case.source or not Path(case.source).exists():
        return None, "input file not found: maps shown without it" if case.source else "no input file recorded"
    try:
        volume = read_volume(case.source)
    except XAIExplainerError as exc:
        return None, f"input not readable ({exc}): maps shown without it"
    if case.input_sha256 and volume_sha256(volume) != case.input_sha256:
        return None, "input file changed since it was explained: maps shown without it"
    return volume, ""


def _case_data(index: int, case: Case, first: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from .report_images import case_images

    reference, note = _reference(case)
    images = case_images([e.heatmap for e in case.entries], [e.target for e in case.entries], reference)
    entries = []
    for k, (entry, picture) in enumerate(zip(case.entries, images.maps)):
        delta, rdelta = deltas(entry.prediction, entry.truth)
        entries.append({"case": index, "method": entry.method, "target": entry.target, "kind": entry.kind,
                        "folder": str(entry.folder), "prediction": entry.prediction, "truth": entry.truth,
                        "delta": delta, "rdelta": rdelta, "order": first + k, "note": entry.note, **picture})
    record = {"name": case.name, "source": case.source, "sha256": case.input_sha256, "note": note,
              "centers": {t: list(c) for t, c in images.centers.items()}, "points_ras": images.points_ras,
              "underlays": images.underlays}
    return record, entries


def report_data(cases: Sequence[Case], title: str = "XAIExplainer comparison report") -> dict[str, Any]:
    """The page's JSON: cases (input picture, slice point), one entry per map (picture, ŷ, y, Δ, rΔ), the method
    and target lists in first-seen order."""
    from ..provenance import utc_timestamp

    records, entries = [], []
    for index, case in enumerate(cases):
        record, rows = _case_data(index, case, len(entries))
        records.append(record)
        entries.extend(rows)
    methods = list(dict.fromkeys(e["method"] for e in entries))
    targets = list(dict.fromkeys(e["target"] for e in entries))
    # Single target view: grouped by (method, target), cases in input order within a group
    for rank, e in enumerate(sorted(entries, key=lambda e: (methods.index(e["method"]),
                                                            targets.index(e["target"]), e["case"]))):
        e["order_single"] = rank
    return {"title": title, "created": utc_timestamp(), "cases": records, "entries": entries, "methods": methods,
            "targets": targets}


def write_report(html: str, output: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Write the page atomically: a hidden temporary file in the same folder, renamed over the final name."""
    out = Path(output).absolute()
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        tmp.write_text(html, encoding="utf-8")
        if out.exists() and not overwrite:
            raise OutputExistsError(f"The report '{out}' appeared while writing; nothing was replaced.")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def build_report(inputs: Sequence[str | os.PathLike[str]], output: str | os.PathLike[str], *,
                 ground_truth: str | os.PathLike[str] | None = None, title: str = "XAIExplainer comparison report",
                 overwrite: bool = False, one_case: bool = False) -> Path:
    """Check the output, read and group the folders, render, then write the page; returns its path.

    ``one_case``: refuse folders of more than one input (comparing methods on one scan)."""
    from .report_page import page_html

    from ..outputs import sweep_stale_temporaries

    out = check_report_output(output, [*inputs, ground_truth], overwrite)
    cases = read_report_inputs(inputs, ground_truth, one_case)
    sweep_stale_temporaries(out.absolute().parent)  # pages of runs killed while writing (older than a day)
    return write_report(page_html(report_data(cases, title)), out, overwrite)
