"""Cohort-level Agg2Exp: the global RoI importance matrix and per-class outlier scans.

The global matrix is the mean of the local matrices over the scans in which a class is *present* (predicted and
with attribution mass): averaging the all-zero rows of scans without the class would shrink its importances by
the fraction of scans lacking it. The per-class counts of scans say how many matrices each row averages.

Outliers: for every class, an Isolation Forest (scikit-learn) is fitted on that class's rows of a reference set
of local matrices; a new scan whose row is isolated quickly — its class relies on unusual regions — is flagged.
This is how the paper finds scans whose segmentations rest on atypical context.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..pipelines.roi_importance import RoIImportance
from ..errors import CohortError


def _check_compatible(matrices: Sequence[RoIImportance]) -> None:
    if not matrices:
        raise CohortError("No local RoI importance matrices were given; pass at least one explanation.")
    first = matrices[0]
    for i, m in enumerate(matrices[1:], start=1):
        if m.class_names != first.class_names or m.roi_names != first.roi_names:
            raise CohortError(
                f"Matrix {i} explains classes {m.class_names} over RoIs {m.roi_names}, but matrix 0 explains "
                f"{first.class_names} over {first.roi_names}. Explain every scan with the same classes and the same "
                "RoI map (label set) so that their matrices share rows and columns."
            )
        if m.variant != first.variant:
            raise CohortError(f"Matrix {i} uses variant {m.variant!r} but matrix 0 uses {first.variant!r}.")


@dataclass(frozen=True)
class GlobalImportance:
    """Mean local matrix over scans (rows averaged only over scans where the class is present)."""

    matrix: np.ndarray  # (K, R)
    counts: np.ndarray  # (K,) scans averaged per class
    class_names: list[str]
    roi_names: list[str]
    variant: str
    n_scans: int

    def as_local(self) -> RoIImportance:
        """The global matrix in the local matrix type, e.g. to draw it as a graph."""
        missing = [n for n, c in zip(self.class_names, self.counts) if c == 0]
        return RoIImportance(self.matrix, list(self.class_names), list(range(len(self.roi_names))),
                             list(self.roi_names), self.variant, np.ones(len(self.class_names)),
                             np.zeros(len(self.roi_names), dtype=np.int64), absent=missing)

    def to_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "n_scans": self.n_scans,
            "class_names": self.class_names,
            "roi_names": self.roi_names,
            "matrix": self.matrix.tolist(),
            "counts": [int(c) for c in self.counts],
        }


def global_importance(matrices: Sequence[RoIImportance]) -> GlobalImportance:
    """Mean of the local matrices per class over the scans where that class is present."""
    _check_compatible(matrices)
    stack = np.stack([m.matrix for m in matrices])  # (S, K, R)
    present = np.stack([m.present for m in matrices])  # (S, K)
    counts = present.sum(axis=0)
    sums = (stack * present[:, :, None]).sum(axis=0)
    matrix = np.divide(sums, counts[:, None], out=np.zeros_like(sums), where=counts[:, None] > 0)
    first = matrices[0]
    return GlobalImportance(matrix=matrix, counts=counts.astype(np.int64), class_names=list(first.class_names),
                            roi_names=list(first.roi_names), variant=first.variant, n_scans=len(matrices))


@dataclass
class OutlierReport:
    """Per-class Isolation Forest results for a set of scans.

    ``scores[s, k]`` is scikit-learn's ``decision_function`` (negative = outlier, lower = more abnormal) and NaN
    where class k is absent from scan s or no model could be fitted for it; ``outliers[name]`` lists the scan
    ids flagged for that class.
    """

    scan_ids: list[str]
    class_names: list[str]
    scores: np.ndarray  # (S, K)
    is_outlier: np.ndarray  # (S, K) bool
    unfitted: list[str] = field(default_factory=list)

    @property
    def outliers(self) -> dict[str, list[str]]:
        return {
            name: [sid for s, sid in enumerate(self.scan_ids) if self.is_outlier[s, k]]
            for k, name in enumerate(self.class_names)
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "scan_ids": self.scan_ids,
            "class_names": self.class_names,
            "scores": [[None if np.isnan(v) else float(v) for v in row] for row in self.scores],
            "outliers": self.outliers,
            "unfitted_classes": self.unfitted,
            "score_meaning": "Isolation Forest decision_function: negative = outlier, lower = more abnormal",
        }


class _ConstantReference:
    """Stand-in for a forest when every reference row is the same: outlier = any deviation beyond ``tol``."""

    def __init__(self, row: np.ndarray, tol: float = 1e-6) -> None:
        self.row, self.tol = np.asarray(row, float), tol

    def decision_function(self, rows: np.ndarray) -> np.ndarray:
        return self.tol - np.abs(np.asarray(rows, float) - self.row).max(axis=1)

    def predict(self, rows: np.ndarray) -> np.ndarray:
        return np.where(self.decision_function(rows) < 0, -1, 1)


class RoIOutlierDetector:
    """Per-class Isolation Forests on rows of local RoI importance matrices (fit / score, seeded).

    A class needs at least ``min_scans`` reference scans where it is present; otherwise it is listed in
    ``unfitted`` and its scores are NaN rather than the verdict of a forest trained on one or two points.
    """

    def __init__(self, n_estimators: int = 200, contamination: "float | str" = "auto", seed: int = 0,
                 min_scans: int = 5) -> None:
        self.n_estimators = n_estimators
        self.contamination = contamination
        self.seed = seed
        self.min_scans = min_scans
        self.forests: dict[str, Any] = {}
        self.class_names: list[str] = []
        self.roi_names: list[str] = []
        self.unfitted: list[str] = []

    def fit(self, reference: Sequence[RoIImportance]) -> "RoIOutlierDetector":
        from sklearn.ensemble import IsolationForest

        _check_compatible(reference)
        self.class_names = list(reference[0].class_names)
        self.roi_names = list(reference[0].roi_names)
        self.forests, self.unfitted = {}, []
        for k, name in enumerate(self.class_names):
            rows = np.array([m.matrix[k] for m in reference if m.present[k]])
            if len(rows) < self.min_scans:
                self.unfitted.append(name)
                continue
            if np.ptp(rows, axis=0).max() <= 1e-9:
                # Identical reference rows give a forest that cannot split and scores every point alike; the
                # only sensible verdict is "different from the one reference pattern or not".
                self.forests[name] = _ConstantReference(rows[0])
                continue
            forest = IsolationForest(n_estimators=self.n_estimators, contamination=self.contamination,
                                     random_state=self.seed)
            self.forests[name] = forest.fit(rows)
        return self

    def score(self, matrices: Sequence[RoIImportance], scan_ids: Sequence[str] | None = None) -> OutlierReport:
        if not self.class_names:
            raise CohortError("The outlier detector is not fitted; call fit(reference_matrices) first.")
        _check_compatible(list(matrices))
        if matrices[0].class_names != self.class_names or matrices[0].roi_names != self.roi_names:
            raise CohortError("The scored matrices do not share classes and RoIs with the reference set.")
        ids = [str(s) for s in (scan_ids or [f"scan_{i}" for i in range(len(matrices))])]
        if len(ids) != len(matrices):
            raise CohortError(f"{len(ids)} scan ids given for {len(matrices)} matrices.")
        scores = np.full((len(matrices), len(self.class_names)), np.nan)
        flags = np.zeros(scores.shape, dtype=bool)
        for k, name in enumerate(self.class_names):
            forest = self.forests.get(name)
            if forest is None:
                continue
            idx = [s for s, m in enumerate(matrices) if m.present[k]]
            if not idx:
                continue
            rows = np.array([matrices[s].matrix[k] for s in idx])
            scores[idx, k] = forest.decision_function(rows)
            flags[idx, k] = forest.predict(rows) == -1
        return OutlierReport(ids, list(self.class_names), scores, flags, list(self.unfitted))


# ---- saved explanation folders ---------------------------------------------------------------------------------
def load_matrix(folder: str | os.PathLike[str]) -> RoIImportance:
    """The local matrix of a folder written by :func:`XAIExplainerLib.pipelines.agg2exp.save_explanation`."""
    path = Path(folder) / "matrix.json"
    if not path.is_file():
        raise CohortError(f"'{folder}' holds no matrix.json; pass folders written by `xai-explainer explain`.")
    try:
        return RoIImportance.from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError) as exc:
        raise CohortError(f"'{path}' is not a valid RoI importance matrix ({exc}).") from None


def run_cohort(
    folders: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    reference: Sequence[str | os.PathLike[str]] | None = None,
    *,
    seed: int = 0,
    contamination: "float | str" = "auto",
    min_scans: int = 5,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Global matrix and per-class outliers of saved explanations, written atomically into ``output``.

    The outlier forests are fitted on ``reference`` folders when given, otherwise on the cohort itself.
    Writes ``global_matrix.csv/json``, ``outliers.csv/json``, ``global_matrix.png`` and ``global_graph.*``.
    """
    from ..io import atomic_output_folder, write_matrix_csv
    from ..figures import draw_graph, matrix_heatmap
    from ..pipelines.roi_graph import importance_graph, write_graph

    matrices = [load_matrix(f) for f in folders]
    ids = [Path(f).name or str(f) for f in folders]
    glob = global_importance(matrices)
    ref = [load_matrix(f) for f in reference] if reference else matrices
    detector = RoIOutlierDetector(contamination=contamination, seed=seed, min_scans=min_scans).fit(ref)
    report = detector.score(matrices, ids)
    with atomic_output_folder(output, overwrite=overwrite) as tmp:
        (tmp / "global_matrix.json").write_text(json.dumps(glob.to_dict(), indent=2))
        write_matrix_csv(tmp / "global_matrix.csv", glob.matrix, glob.class_names, glob.roi_names)
        (tmp / "outliers.json").write_text(json.dumps(report.to_dict(), indent=2))
        lines = ["scan,class,score,outlier"]
        for s, sid in enumerate(report.scan_ids):
            for k, name in enumerate(report.class_names):
                v = report.scores[s, k]
                lines.append(f"{sid},{name},{'' if np.isnan(v) else f'{v:.6g}'},{int(report.is_outlier[s, k])}")
        (tmp / "outliers.csv").write_text("\n".join(lines) + "\n")
        matrix_heatmap(glob.matrix, glob.class_names, glob.roi_names, tmp / "global_matrix.png",
                       title=f"Global RoI importance ({glob.n_scans} scans, {glob.variant})")
        g = importance_graph(glob.as_local(), threshold=0.8)
        write_graph(g, tmp, "global_graph")
        draw_graph(g, tmp / "global_graph.png", title="Global RoI importance graph (80 % of mass)")
    return {"global": glob, "outliers": report, "output": Path(output)}
