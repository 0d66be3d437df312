"""The package version, in a module of its own so that any layer can record it without importing the package root
(which sits on top of the import graph: see ``Testing/test_architecture.py``)."""
__version__ = "0.1.0"
