"""Notebook widgets: they draw and wire, the logic lives in the rest of packlab."""

from .forms import launch_arguments, scale_action
from .launcher import ClusterLauncher

__all__ = ["ClusterLauncher", "launch_arguments", "scale_action"]
