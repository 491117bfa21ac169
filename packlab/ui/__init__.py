"""Notebook widgets and the panel: they draw and wire, the logic lives in the rest of packlab.

``packlab.ui.panel`` loads Bokeh on first use. It is both the panel's module and callable
as its function: ``packlab.ui.panel(source)`` is :func:`packlab.ui.panel.panel`, and
``packlab.ui.panel.make_document(doc, source)`` is what the JupyterLab extension and
``packlab dashboard`` serve.
"""

from .forms import launch_arguments, scale_action
from .launcher import ClusterLauncher


def __getattr__(name: str):
    if name == "panel":
        import importlib

        return importlib.import_module(".panel", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ClusterLauncher", "launch_arguments", "panel", "scale_action"]
