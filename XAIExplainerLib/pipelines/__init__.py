"""Pipelines: a volume through a model adapter and an explainer to results on the input grid (one module per product)."""
