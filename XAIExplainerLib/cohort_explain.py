"""Former home of :func:`explain_cohort`, kept because earlier READMEs documented this import.

New code imports ``from XAIExplainerLib.cohort import explain_cohort``.
"""
from .cohort.run import ScanJob, ScanOutcome, explain_cohort, explain_scan, scan_ids

__all__ = ["ScanJob", "ScanOutcome", "explain_cohort", "explain_scan", "scan_ids"]
