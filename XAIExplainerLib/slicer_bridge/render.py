"""Offscreen pictures of slice and 3D views of the scene, as numpy RGB arrays (and PNG files).

The slice view is composited by ``vtkMRMLSliceLogic`` (background + foreground + label layers, exactly as in
Slicer) and the 3D view by Slicer's displayable managers (volume rendering, segmentations, markups), in an
offscreen OpenGL window. Outside Slicer without a display, EGL is chosen (``VTK_DEFAULT_OPENGL_WINDOW``);
:func:`offscreen_rendering_available` says whether any offscreen OpenGL context can be made here.
"""
from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import slicer
from vtkmodules.util.numpy_support import vtk_to_numpy
from vtkmodules.vtkIOImage import vtkPNGWriter
from vtkmodules.vtkRenderingCore import (
    vtkActor2D,
    vtkImageMapper,
    vtkRenderer,
    vtkRenderWindow,
    vtkRenderWindowInteractor,
    vtkTextActor,
    vtkWindowToImageFilter,
)

import vtkmodules.vtkRenderingOpenGL2  # noqa: F401  (registers the OpenGL render window factories)
import vtkmodules.vtkRenderingVolumeOpenGL2  # noqa: F401
import vtkmodules.vtkRenderingFreeType  # noqa: F401  (text actors)

from .scene import get_context

__all__ = [
    "OffscreenSliceView",
    "OffscreenThreeDView",
    "offscreen_rendering_available",
    "render_3d",
    "render_slice",
    "save_png",
    "tile_images",
]

_THREE_D_MANAGERS = (
    "vtkMRMLCameraDisplayableManager",
    "vtkMRMLViewDisplayableManager",
    "vtkMRMLModelDisplayableManager",
    "vtkMRMLVolumeRenderingDisplayableManager",
    "vtkMRMLSegmentationsDisplayableManager3D",
    "vtkMRMLMarkupsDisplayableManager",
)
_SLICE_MANAGERS = (
    "vtkMRMLSegmentationsDisplayableManager2D",
    "vtkMRMLMarkupsDisplayableManager",
)


def _choose_offscreen_backend() -> None:
    """Without an X display, VTK would try X first and warn; EGL (Mesa or NVIDIA) renders without one."""
    if not os.environ.get("DISPLAY") and "VTK_DEFAULT_OPENGL_WINDOW" not in os.environ:
        os.environ["VTK_DEFAULT_OPENGL_WINDOW"] = "vtkEGLRenderWindow"


def _render_window(size: Sequence[int], interactor: bool = True) -> tuple[vtkRenderer, vtkRenderWindow]:
    """Offscreen window; displayable managers need an (never started) interactor to attach their widgets to."""
    _choose_offscreen_backend()
    renderer = vtkRenderer()
    window = vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.AddRenderer(renderer)
    window.SetSize(int(size[0]), int(size[1]))
    if interactor:
        iren = vtkRenderWindowInteractor()
        iren.SetRenderWindow(window)
        iren.Initialize()
    return renderer, window


_availability: tuple[bool, str] | None = None
_view_counter = itertools.count(1)


def offscreen_rendering_available() -> tuple[bool, str]:
    """(True, backend class) when an offscreen OpenGL context renders here, else (False, the reason)."""
    global _availability
    if _availability is None:
        try:
            renderer, window = _render_window((8, 8), interactor=False)
            renderer.SetBackground(1.0, 0.0, 0.0)
            window.Render()
            pixel = _grab(window)[4, 4]
            ok = bool(pixel[0] > 200 and pixel[1] < 50)
            _availability = (ok, window.GetClassName() if ok else f"{window.GetClassName()} rendered {pixel}")
            window.Finalize()
        except Exception as exc:  # noqa: BLE001 - any failure means "no offscreen GL here"
            _availability = (False, f"{type(exc).__name__}: {exc}")
    return _availability


def _grab(window: vtkRenderWindow) -> np.ndarray:
    """The window's pixels as (rows top-down, cols, RGB) uint8."""
    w2i = vtkWindowToImageFilter()
    w2i.SetInput(window)
    w2i.SetInputBufferTypeToRGB()
    w2i.ReadFrontBufferOff()
    w2i.Update()
    image = w2i.GetOutput()
    width, height, _ = image.GetDimensions()
    pixels = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, -1)[:, :, :3]
    return np.ascontiguousarray(pixels[::-1])  # VTK rows run bottom-up


def save_png(rgb: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Write an (H, W, 3) uint8 array as PNG with VTK (no PIL needed inside Slicer)."""
    from vtkmodules.util.numpy_support import numpy_to_vtk
    from vtkmodules.vtkCommonDataModel import vtkImageData

    rgb = np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8)[::-1])
    height, width = rgb.shape[:2]
    image = vtkImageData()
    image.SetDimensions(width, height, 1)
    image.GetPointData().SetScalars(numpy_to_vtk(rgb.reshape(-1, 3), deep=True))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = vtkPNGWriter()
    writer.SetFileName(str(out))
    writer.SetInputData(image)
    writer.SetCompressionLevel(9)
    writer.Write()
    return out


def tile_images(images: Sequence[np.ndarray], columns: int | None = None, gap: int = 4) -> np.ndarray:
    """Tile equally sized RGB images in a grid (the headless stand-in for a multi-view layout)."""
    if not images:
        raise ValueError("tile_images needs at least one image.")
    h, w = images[0].shape[:2]
    columns = columns or len(images)
    rows = -(-len(images) // columns)
    canvas = np.zeros((rows * h + (rows - 1) * gap, columns * w + (columns - 1) * gap, 3), np.uint8)
    for n, img in enumerate(images):
        r, c = divmod(n, columns)
        canvas[r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = img[:h, :w, :3]
    return canvas


class OffscreenSliceView:
    """A slice view (like Slicer's Red/Yellow/Green) rendered offscreen.

    ``name`` is the slice node's layout name; each view has its own slice and composite node, so several views
    can show different heatmaps over the same background (the comparison layout).
    """

    def __init__(self, name: str | None = None, orientation: str = "Axial", size: Sequence[int] = (400, 400)):
        ctx = get_context()
        if name is None:  # a slice node's layout name is a singleton tag: reusing one after close() renders black
            name = f"XAIExplainerSlice{next(_view_counter)}"
        self.size = (int(size[0]), int(size[1]))
        self.renderer, self.window = _render_window(self.size)
        self.renderer.GetActiveCamera().ParallelProjectionOn()
        factory = slicer.vtkMRMLSliceViewDisplayableManagerFactory.GetInstance()
        for manager in _SLICE_MANAGERS:
            if not factory.IsDisplayableManagerRegistered(manager):
                factory.RegisterDisplayableManager(manager)
        self.managers = slicer.vtkMRMLDisplayableManagerGroup()
        self.managers.Initialize(factory, self.renderer)
        self.logic = slicer.vtkMRMLSliceLogic()
        self.logic.SetMRMLApplicationLogic(ctx.app_logic)
        ctx.app_logic.GetSliceLogics().AddItem(self.logic)
        self.logic.SetMRMLScene(ctx.scene)
        self.slice_node = self.logic.AddSliceNode(name)
        self.slice_node.SetOrientation(orientation)
        self.managers.SetMRMLDisplayableNode(self.slice_node)
        self.composite = self.logic.GetSliceCompositeNode()
        self.mapper = vtkImageMapper()
        self.mapper.SetColorWindow(255)
        self.mapper.SetColorLevel(127.5)
        actor = vtkActor2D()
        actor.SetMapper(self.mapper)
        actor.GetProperty().SetDisplayLocationToBackground()
        self.renderer.AddViewProp(actor)
        self.caption = vtkTextActor()
        self.caption.GetTextProperty().SetFontSize(16)
        self.caption.GetTextProperty().SetColor(1.0, 1.0, 0.3)
        self.caption.SetDisplayPosition(6, 6)
        self.renderer.AddViewProp(self.caption)

    def set_layers(self, background: Any = None, foreground: Any = None, opacity: float = 0.6, label: Any = None,
                   label_opacity: float = 1.0) -> "OffscreenSliceView":
        self.composite.SetBackgroundVolumeID(background.GetID() if background is not None else None)
        self.composite.SetForegroundVolumeID(foreground.GetID() if foreground is not None else None)
        self.composite.SetForegroundOpacity(float(opacity))
        self.composite.SetLabelVolumeID(label.GetID() if label is not None else None)
        self.composite.SetLabelOpacity(float(label_opacity))
        return self

    def set_caption(self, text: str) -> "OffscreenSliceView":
        self.caption.SetInput(text)
        return self

    def fit(self, offset: float | None = None) -> "OffscreenSliceView":
        """Fit the field of view to the background volume; go to ``offset`` mm along the slice normal."""
        self.logic.ResizeSliceNode(*self.size)
        self.logic.FitSliceToBackground()
        if offset is not None:
            self.logic.SetSliceOffset(float(offset))
        return self

    def xy_to_ras(self) -> np.ndarray:
        """4x4 matrix from pixel (x right, y up from the bottom-left corner, 0, 1) to RAS millimetres."""
        return slicer.util.arrayFromVTKMatrix(self.slice_node.GetXYToRAS())

    def render(self) -> np.ndarray:
        """The view as (H, W, 3) uint8, rows top-down."""
        # The slice logic rebuilds its blending pipeline when layers change: connect to the current output.
        self.mapper.SetInputConnection(self.logic.GetImageDataConnection())
        self.window.Render()
        return _grab(self.window)

    def close(self) -> None:
        """Release the window and remove the view's own nodes (slice, composite) from the scene."""
        ctx = get_context()
        ctx.app_logic.GetSliceLogics().RemoveItem(self.logic)
        self.managers.SetMRMLDisplayableNode(None)
        self.window.Finalize()
        scene = self.slice_node.GetScene()
        if scene is not None:
            scene.RemoveNode(self.composite)
            scene.RemoveNode(self.slice_node)


class OffscreenThreeDView:
    """A 3D view rendered offscreen through Slicer's 3D displayable managers."""

    def __init__(self, name: str | None = None, size: Sequence[int] = (400, 400), background=(0.0, 0.0, 0.0),
                 box: bool = False):
        ctx = get_context()
        if name is None:  # a view node's layout name is a singleton tag: a second "1" would not be added
            name = f"XAIExplainer3D{next(_view_counter)}"
        self.renderer, self.window = _render_window(size)
        factory = slicer.vtkMRMLThreeDViewDisplayableManagerFactory.GetInstance()
        for manager in _THREE_D_MANAGERS:
            if not factory.IsDisplayableManagerRegistered(manager):
                factory.RegisterDisplayableManager(manager)
        self.managers = slicer.vtkMRMLDisplayableManagerGroup()
        self.managers.Initialize(factory, self.renderer)
        self.logic = slicer.vtkMRMLViewLogic()
        self.logic.SetMRMLApplicationLogic(ctx.app_logic)
        ctx.app_logic.GetViewLogics().AddItem(self.logic)
        self.logic.SetMRMLScene(ctx.scene)
        self.view_node = self.logic.AddViewNode(name)
        self.view_node.SetBackgroundColor(*background)
        self.view_node.SetBackgroundColor2(*background)
        self.view_node.SetBoxVisible(box)
        self.view_node.SetAxisLabelsVisible(box)
        self.managers.SetMRMLDisplayableNode(self.view_node)

    def look_from(self, direction: str = "anterior", azimuth: float = 0.0, elevation: float = 0.0,
                  zoom: float = 1.0) -> "OffscreenThreeDView":
        """Point the camera at the scene from a patient direction (as Slicer's view buttons do)."""
        positions = {"anterior": (0, 1, 0), "posterior": (0, -1, 0), "right": (1, 0, 0), "left": (-1, 0, 0),
                     "superior": (0, 0, 1), "inferior": (0, 0, -1)}
        camera = self.renderer.GetActiveCamera()
        camera.SetFocalPoint(0, 0, 0)
        camera.SetPosition(*positions[direction])
        camera.SetViewUp(0, 1, 0) if direction in ("superior", "inferior") else camera.SetViewUp(0, 0, 1)
        camera.Azimuth(azimuth)
        camera.Elevation(elevation)
        camera.OrthogonalizeViewUp()
        self.renderer.ResetCamera()
        camera.Zoom(zoom)
        return self

    def render(self) -> np.ndarray:
        """The view as (H, W, 3) uint8, rows top-down."""
        self.window.Render()
        return _grab(self.window)

    def close(self) -> None:
        """Release the window and remove the view's own nodes (view, camera) from the scene."""
        ctx = get_context()
        ctx.app_logic.GetViewLogics().RemoveItem(self.logic)
        self.managers.SetMRMLDisplayableNode(None)
        self.window.Finalize()
        scene = self.view_node.GetScene()
        if scene is not None:
            name = self.view_node.GetLayoutName()
            cameras = [scene.GetNthNodeByClass(i, "vtkMRMLCameraNode")
                       for i in range(scene.GetNumberOfNodesByClass("vtkMRMLCameraNode"))]
            for camera in cameras:
                if camera.GetLayoutName() == name:
                    scene.RemoveNode(camera)
            scene.RemoveNode(self.view_node)


def render_slice(
    background: Any,
    foreground: Any = None,
    offset: float | None = None,
    orientation: str = "Axial",
    size: Sequence[int] = (400, 400),
    opacity: float = 0.6,
    label: Any = None,
    caption: str = "",
    path: str | os.PathLike[str] | None = None,
) -> np.ndarray:
    """One offscreen slice view of ``background`` with ``foreground`` (e.g. a heatmap) blended on top.

    ``offset`` is the slice position in mm along the view normal (RAS z for axial); None keeps the fitted
    centre. Returns (H, W, 3) uint8 and writes a PNG when ``path`` is given.
    """
    view = OffscreenSliceView(orientation=orientation, size=size)
    try:
        view.set_layers(background, foreground, opacity, label).fit(offset).set_caption(caption)
        rgb = view.render()
    finally:
        view.close()
    if path is not None:
        save_png(rgb, path)
    return rgb


def render_3d(
    direction: str = "anterior",
    size: Sequence[int] = (400, 400),
    azimuth: float = 0.0,
    elevation: float = 0.0,
    zoom: float = 1.0,
    background: Sequence[float] = (0.0, 0.0, 0.0),
    path: str | os.PathLike[str] | None = None,
) -> np.ndarray:
    """One offscreen 3D view of everything visible in the scene (volume renderings, segmentations, markups)."""
    view = OffscreenThreeDView(size=size, background=tuple(background))
    try:
        rgb = view.look_from(direction, azimuth, elevation, zoom).render()
    finally:
        view.close()
    if path is not None:
        save_png(rgb, path)
    return rgb
