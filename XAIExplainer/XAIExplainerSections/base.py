"""What every product section of the module panel shares: a collapsible box, the run/finish/error plumbing."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, Optional

import qt

import slicer
from slicer.i18n import tr as _


class Section(ABC):
    """A collapsible product section below "Explain"; subclasses set :attr:`title` and implement :meth:`build`.

    The section uses the module's shared inputs (``widget.parameterNode``: input volume, model path, device) and
    its progress bar, status line and Cancel button, so only one computation runs at a time, whichever section
    started it.
    """

    title: str = ""

    def __init__(self, widget) -> None:
        self.widget = widget
        self.logic = widget.logic
        self.collapsible = None
        self.form = None

    @property
    def parameterNode(self):
        return self.widget._parameterNode

    def setup(self, layout, index: int) -> None:
        """Add the section's box to ``layout`` at ``index`` and build its widgets."""
        import ctk

        self.collapsible = ctk.ctkCollapsibleButton()
        self.collapsible.text = self.title
        self.collapsible.collapsed = True
        layout.insertWidget(index, self.collapsible)
        self.form = qt.QFormLayout(self.collapsible)
        self.build(self.form)

    @abstractmethod
    def build(self, form) -> None:
        """Create the section's widgets in ``form`` (a ``qt.QFormLayout``)."""

    def updateButtons(self, running: bool, ready: bool) -> None:
        """Enable or disable the section's run buttons; ``ready`` = an input volume and a model are selected."""

    def start(self, what: str, run: Callable[..., Any], **kwargs) -> None:
        """Start ``run(..., onProgress=..., onFinished=...)`` with the module's progress, status and errors."""
        with slicer.util.tryWithErrorDisplay(_("Failed to start {what}.").format(what=what), waitCursor=True):
            if not self.widget._ensureDependencies():
                return
            self.widget._rememberModelPath()
            run(**kwargs, onProgress=self.widget._onProgress, onFinished=self._finished)
            self.widget._started(what)

    def _finished(self, result, error: Optional[str]) -> None:
        if self.widget._reportFinished(error):
            message = self.showResult(result)
            self.widget.ui.statusLabel.text = message or _("Done.")

    @abstractmethod
    def showResult(self, result) -> str:
        """Show a finished computation's nodes; return the status line to display."""
