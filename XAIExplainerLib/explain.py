"""Public entry point for explaining one scan (the README's Python API).

The Agg2Exp pipeline lives in :mod:`XAIExplainerLib.pipelines.agg2exp`; this module keeps the documented import
``from XAIExplainerLib.explain import explain_volume, save_explanation`` stable while the pipelines move.
"""
from .pipelines.agg2exp import Explanation, explain_volume, save_explanation
from .pipelines.agg2exp_io import load_explanation

__all__ = ["Explanation", "explain_volume", "load_explanation", "save_explanation"]
