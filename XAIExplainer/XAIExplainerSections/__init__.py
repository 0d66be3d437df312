"""The module's product sections beyond Segment and Explain: one file per product (Regression, IBIX, Counterfactual).

Each product file holds two classes:

- a Logic mixin (``<Product>Logic``): the Python-console API of that product. Its methods export the inputs with
  ``self._prepare``, run one ``xai-explainer`` command through ``self._start`` (background process, progress,
  cancel) and load the results with :mod:`XAIExplainerLib.slicer_bridge`; they are tested headless with slicer-core.
- a :class:`~XAIExplainerSections.base.Section` subclass: the widgets of that product, built in code (a collapsible
  section placed below "Explain"), sharing the module's input volume, model, device, progress bar and Cancel.

Why separate files: the module file stays a readable shell, and each product's GUI can change without touching the
others. ``XAIExplainerLogic`` inherits :class:`ProductLogic`; the widget builds every class in :data:`SECTIONS`.
"""
from __future__ import annotations

from .base import Section
from .counterfactual import CounterfactualLogic, CounterfactualSection

#: Section classes, in the order they appear in the module panel.
SECTIONS: tuple[type[Section], ...] = (CounterfactualSection,)


class ProductLogic(CounterfactualLogic):
    """All product Logic mixins together; ``XAIExplainerLogic`` inherits this class."""
