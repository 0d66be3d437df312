"""Minimal stand-ins for the parts of 3D Slicer that slicer-core does not ship, so the module's Logic runs headless.

slicer-core (PyPI) provides the real MRML scene, module logics and ``slicer.util``; ``qt``, ``slicer.app``,
``ScriptedLoadableModule``, ``parameterNodeWrapper`` and ``slicer.i18n`` exist only inside the Slicer application.
These stand-ins implement just what ``XAIExplainer.py``'s Logic and parameter node use, the way Slicer does it
(parameters stored as strings / node references on a singleton ``vtkMRMLScriptedModuleNode``, so they are saved
with the scene for real). They live in Testing/ and never ship with the module.
"""
from __future__ import annotations

import contextlib
import importlib.util
import sys
import types
import typing
import unittest
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parents[1]
MODULE_FILE = ROOT / "XAIExplainer" / "XAIExplainer.py"


class Choice:
    def __init__(self, choices):
        self.choices = list(choices)


class WithinRange:
    def __init__(self, minimum, maximum):
        self.minimum, self.maximum = minimum, maximum


class Decimals:
    def __init__(self, decimals):
        self.decimals = decimals


def _field_property(name: str, kind: type, default: Any) -> property:
    """A parameter stored like Slicer's wrapper does: text parameter, or a node reference for MRML nodes."""
    is_node = isinstance(kind, type) and kind.__name__.startswith("vtkMRML")

    def getter(self):
        node = self.parameterNode
        if is_node:
            return node.GetNodeReference(name)
        text = node.GetParameter(name)
        if text == "" and not node.GetParameterNames().__contains__(name):
            return default
        if kind is bool:
            return text == "True"
        if kind is Path:
            return Path(text)
        return kind(text)

    def setter(self, value):
        if is_node:
            self.parameterNode.SetNodeReferenceID(name, value.GetID() if value is not None else None)
        else:
            self.parameterNode.SetParameter(name, str(value))

    return property(getter, setter)


def parameterNodeWrapper(cls):
    """Class decorator: annotated fields become properties backed by the wrapped parameter node."""
    hints = typing.get_type_hints(cls, include_extras=True)

    def __init__(self, parameterNode):
        self.parameterNode = parameterNode
        for name, hint in hints.items():  # defaults written once, as Slicer's wrapper does for new nodes
            base = typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Annotated else hint
            if not base.__name__.startswith("vtkMRML") and name not in parameterNode.GetParameterNames():
                setattr(self, name, getattr(cls, name, base()))

    namespace = {"__init__": __init__, "__doc__": cls.__doc__}
    for name, hint in hints.items():
        base = typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Annotated else hint
        namespace[name] = _field_property(name, base, getattr(cls, name, None))
    return type(cls.__name__, (), namespace)


class ScriptedLoadableModule:
    def __init__(self, parent):
        self.parent = parent


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None):
        self.parent = parent


class ScriptedLoadableModuleLogic:
    """Like Slicer's: the parameter node is the scene's singleton scripted-module node of this module."""

    moduleName = "XAIExplainer"

    def __init__(self, parent=None):
        pass

    def getParameterNode(self):
        import slicer

        node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
        if node is None:
            node = slicer.vtkMRMLScriptedModuleNode()
            node.SetSingletonTag(self.moduleName)
            node.SetAttribute("ModuleName", self.moduleName)
            node.SetName(slicer.mrmlScene.GenerateUniqueName(self.moduleName))
            node = slicer.mrmlScene.AddNode(node)
        return node


class ScriptedLoadableModuleTest(unittest.TestCase):
    def delayDisplay(self, message, msec=0):
        print(message)


class _QTimer:
    """Never fires: headless tests drive the logic with ``wait=True`` or call its poll method themselves."""

    def setInterval(self, ms):
        self.interval = ms

    def connect(self, signal, slot):
        self.slot = slot

    def start(self):
        self.active = True

    def stop(self):
        self.active = False


def install() -> None:
    """Register the stand-in modules (qt, slicer.ScriptedLoadableModule, slicer.parameterNodeWrapper, i18n)."""
    import slicer

    qt = types.ModuleType("qt")
    qt.QTimer = _QTimer
    sys.modules.setdefault("qt", qt)
    slm = types.ModuleType("slicer.ScriptedLoadableModule")
    for obj in (ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic,
                ScriptedLoadableModuleTest):
        setattr(slm, obj.__name__, obj)
    pnw = types.ModuleType("slicer.parameterNodeWrapper")
    for obj in (Choice, WithinRange, Decimals, parameterNodeWrapper):
        setattr(pnw, obj.__name__, obj)
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text
    for name, module in (("ScriptedLoadableModule", slm), ("parameterNodeWrapper", pnw), ("i18n", i18n)):
        sys.modules[f"slicer.{name}"] = module
        setattr(slicer, name, module)


def load_module():
    """Import XAIExplainer/XAIExplainer.py (under the name XAIExplainerModule) with the stand-ins installed."""
    install()
    spec = importlib.util.spec_from_file_location("XAIExplainerModule", MODULE_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["XAIExplainerModule"] = module
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def loaded_module() -> Iterator[types.ModuleType]:
    """:func:`load_module` for one test file: the stand-ins and the module are removed again afterwards, so the
    next file (or a file that needs the real modules) starts from what was there before."""
    names = ("qt", "slicer.ScriptedLoadableModule", "slicer.parameterNodeWrapper", "slicer.i18n", "XAIExplainerModule")
    saved = {name: sys.modules.get(name) for name in names}
    try:
        yield load_module()
    finally:
        for name, value in saved.items():
            if value is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = value


def headless_logic(module: types.ModuleType, work_root: Path) -> tuple[Any, Any]:
    """A fresh headless scene (slicer-core) and the module's Logic, whose background jobs run with this Python and
    keep their temporary folders under ``work_root`` (so a test can check that none is left behind)."""
    from XAIExplainerLib.slicer_bridge import create_headless_scene

    ctx = create_headless_scene()
    logic = module.XAIExplainerLogic()
    logic.pythonExecutable, logic.workRoot = sys.executable, work_root
    return ctx, logic
