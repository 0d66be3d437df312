"""One MRML scene for the bridge: Slicer's own scene inside the application, a headless one elsewhere.

Inside 3D Slicer the scene, application logic and module logics already exist and are simply wrapped. Outside
(tests, the screenshot script, a cohort job on a server) slicer-core offers the same MRML classes without Qt;
:func:`create_headless_scene` wires them the way Slicer's application does (scene, application logic, colour,
volume rendering, segmentation, markups and volumes logics, displayable-manager factories), so that every other
bridge module runs unchanged in both places.
"""
from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Any

import slicer
from vtkmodules.vtkCommonCore import vtkCollection

__all__ = ["SlicerContext", "create_headless_scene", "get_context", "in_slicer_application"]

#: Module logics a headless scene registers, by the name Slicer's application logic knows them under.
_HEADLESS_LOGICS = {
    "VolumeRendering": "vtkSlicerVolumeRenderingLogic",
    "Segmentations": "vtkSlicerSegmentationsModuleLogic",
    "SubjectHierarchy": "vtkSlicerSubjectHierarchyModuleLogic",
    "Volumes": "vtkSlicerVolumesLogic",
    "Markups": "vtkSlicerMarkupsLogic",
}


@dataclass
class SlicerContext:
    """The scene plus the logics that bridge functions need (volume rendering, segmentations, markups...)."""

    scene: Any
    app_logic: Any
    logics: dict[str, Any] = field(default_factory=dict)
    headless: bool = True

    def logic(self, name: str) -> Any:
        """Module logic by Slicer name ("VolumeRendering", "Segmentations", "Markups", "Volumes")."""
        if name in self.logics:
            return self.logics[name]
        if not self.headless:
            module = getattr(slicer.modules, name.lower(), None)
            if module is not None:
                return module.logic()
        raise KeyError(f"The module logic '{name}' is not available in this scene; known: {sorted(self.logics)}.")


def in_slicer_application() -> bool:
    """True when running inside the 3D Slicer application (which has ``slicer.app``), not bare slicer-core."""
    return getattr(slicer, "app", None) is not None


_current: SlicerContext | None = None


def get_context() -> SlicerContext:
    """The context to put nodes in: Slicer's scene in the application, else the current headless scene.

    A headless scene is created on first use; :func:`create_headless_scene` replaces it (tests call it for a
    clean scene each time).
    """
    global _current
    if in_slicer_application():
        return SlicerContext(scene=slicer.mrmlScene, app_logic=slicer.app.applicationLogic(), headless=False)
    if _current is None or getattr(slicer, "mrmlScene", None) is not _current.scene:
        _current = create_headless_scene()
    return _current


def create_headless_scene() -> SlicerContext:
    """Build a fresh Qt-free scene wired like Slicer's application, and make it ``slicer.mrmlScene``.

    ``slicer.util`` helpers read the global ``slicer.mrmlScene`` and ``slicer.modules.<name>.logic()``, so both
    are set; inside the real application this function refuses to run, because replacing the scene would
    orphan the user's data.
    """
    global _current
    if in_slicer_application():
        raise RuntimeError("create_headless_scene() is for use outside 3D Slicer; inside Slicer use get_context().")
    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    app_logic.GetColorLogic().SetMRMLScene(scene)
    app_logic.GetColorLogic().AddDefaultColorNodes()
    app_logic.SetSliceLogics(vtkCollection())
    app_logic.SetViewLogics(vtkCollection())
    slicer.vtkMRMLThreeDViewDisplayableManagerFactory.GetInstance().SetMRMLApplicationLogic(app_logic)
    slicer.vtkMRMLSliceViewDisplayableManagerFactory.GetInstance().SetMRMLApplicationLogic(app_logic)
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene, True)
    interaction = slicer.vtkMRMLInteractionNode()  # displayable managers look it up (mouse mode)
    interaction.SetSingletonTag("Singleton")
    scene.AddNode(interaction)
    selection = slicer.vtkMRMLSelectionNode()
    selection.SetSingletonTag("Singleton")
    scene.AddNode(selection)
    crosshair = slicer.vtkMRMLCrosshairNode()
    crosshair.SetCrosshairName("default")
    scene.AddNode(crosshair)

    logics: dict[str, Any] = {}
    for name, class_name in _HEADLESS_LOGICS.items():
        logic = getattr(slicer, class_name)()
        logic.SetMRMLScene(scene)
        logic.SetMRMLApplicationLogic(app_logic)
        app_logic.SetModuleLogic(name, logic)
        logics[name] = logic
    # slicer.util helpers call slicer.modules.<lowercase name>.logic(); give them the headless logics.
    slicer.modules = types.SimpleNamespace(
        **{name.lower(): types.SimpleNamespace(logic=(lambda lg=lg: lg)) for name, lg in logics.items()}
    )
    _current = SlicerContext(scene=scene, app_logic=app_logic, logics=logics, headless=True)
    return _current
