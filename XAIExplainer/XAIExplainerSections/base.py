"""What every product section of the module panel shares: a collapsible box, the run/finish/error plumbing."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, Optional

import qt

import slicer
from slicer.i18n import tr as _


def optionWidget(option, onChange: Callable[[str, Any], None]):
    """A spin box, check box or combo box for one registry option; ``onChange(name, value)`` gets the user's edits.

    Range, choices and step come from the registry entry, so every section shows a method's options alike.
    """
    if option.choices is not None:
        widget = qt.QComboBox()
        for choice in option.choices:
            widget.addItem(str(choice), choice)
        widget.connect("activated(int)", lambda i, o=option, w=widget: onChange(o.name, w.itemData(i)))
    elif option.type is bool:
        widget = qt.QCheckBox()
        widget.connect("toggled(bool)", lambda v, o=option: onChange(o.name, bool(v)))
    elif option.type is int:
        widget = qt.QSpinBox()
        widget.setRange(int(option.minimum if option.minimum is not None else 0),
                        int(option.maximum if option.maximum is not None else 1000000))
        widget.connect("valueChanged(int)", lambda v, o=option: onChange(o.name, int(v)))
    elif option.type is str:
        widget = qt.QLineEdit()
        widget.connect("editingFinished()", lambda o=option, w=widget: onChange(o.name, w.text))
    else:
        widget = qt.QDoubleSpinBox()
        widget.decimals = 3
        widget.singleStep = 0.01
        low = option.minimum if option.minimum is not None else -1e6
        widget.setRange(low + (0.001 if option.exclusive_minimum else 0.0),
                        option.maximum if option.maximum is not None else 1e6)
        widget.connect("valueChanged(double)", lambda v, o=option: onChange(o.name, float(v)))
    return widget


def showOptionValue(widget, value) -> None:
    """Show ``value`` in a widget made by :func:`optionWidget` without sending it back as an edit.

    A widget that already shows the value is left alone: re-setting a spin box the user is typing in would
    reformat its text ("0.09" -> "0.0900") and move the cursor on every keystroke.
    """
    wasBlocked = widget.blockSignals(True)
    if isinstance(widget, qt.QComboBox):
        widget.currentIndex = max(0, widget.findData(value))
    elif isinstance(widget, qt.QCheckBox):
        widget.checked = bool(value)
    elif isinstance(widget, qt.QLineEdit):
        if not widget.hasFocus():
            widget.text = "" if value is None else str(value)
    elif widget.value != value:
        widget.value = value
    widget.blockSignals(wasBlocked)


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
