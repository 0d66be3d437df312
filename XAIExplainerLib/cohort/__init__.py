"""Cohorts: run one explanation per scan (:mod:`.run`) and aggregate them (:mod:`.aggregate`)."""
from .aggregate import GlobalImportance, OutlierReport, RoIOutlierDetector, global_importance, load_matrix, run_cohort
from .run import explain_cohort

__all__ = ["GlobalImportance", "OutlierReport", "RoIOutlierDetector", "explain_cohort", "global_importance",
           "load_matrix", "run_cohort"]
