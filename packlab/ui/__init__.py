"""Notebook widgets and panels: they draw and wire, the logic lives in the rest of packlab."""

from .document import document
from .forms import launch_arguments, scale_action
from .launcher import ClusterLauncher

__all__ = ["ClusterLauncher", "document", "launch_arguments", "scale_action"]
