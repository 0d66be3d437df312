"""The ``xai-explainer`` command line (``python -m XAIExplainerLib.cli``): one module per group of commands."""
from .main import add_common_options, build_parser, main

__all__ = ["add_common_options", "build_parser", "main"]
