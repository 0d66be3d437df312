"""The ``xai-explainer`` command line (``python -m XAIExplainerLib.cli``): one module per group of commands."""
from .main import build_parser, main
from .options import add_common_options

__all__ = ["add_common_options", "build_parser", "main"]
