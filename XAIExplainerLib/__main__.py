"""``python -m XAIExplainerLib`` (and ``PythonSlicer -m XAIExplainerLib.cli``) run the command line."""
import sys

from .cli.main import main

sys.exit(main())
