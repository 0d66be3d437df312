"""``python -m XAIExplainerLib.cli`` (what the Slicer module starts as ``PythonSlicer -m XAIExplainerLib.cli``)."""
import sys

from .main import main

sys.exit(main())
