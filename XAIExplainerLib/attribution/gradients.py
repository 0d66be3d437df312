"""The gradient methods' old import path (``XAIExplainerLib.attribution.gradients``), kept for users' code.

The methods live one per file on :mod:`.gradient_engine`: :mod:`.vanilla_gradient`, :mod:`.smoothgrad`,
:mod:`.integrated_gradients`; the sliding window in :mod:`XAIExplainerLib.models.sliding_window`.
"""
from ..models.sliding_window import SlidingWindow
from .gradient_engine import GRAD_STRATEGIES
from .integrated_gradients import IG_RULES, integrated_gradients, integration_rule
from .smoothgrad import smoothgrad, smoothgrad_noise_std
from .vanilla_gradient import vanilla_gradient

__all__ = ["GRAD_STRATEGIES", "IG_RULES", "SlidingWindow", "integrated_gradients", "integration_rule", "smoothgrad",
           "smoothgrad_noise_std", "vanilla_gradient"]
