"""packlab in JupyterLab: a jupyter-server extension and a prebuilt JupyterLab extension.

The server extension serves, under ``<base_url>/packlab/`` and behind Jupyter's own
login, the packlab panel (a Bokeh document made by :func:`packlab.ui.document`, served
inside the Jupyter process on Jupyter's port) and a small JSON API of the user's running
clusters and recent queue stores, which JupyterLab's packlab sidebar reads.
"""

from __future__ import annotations

try:
    from ._version import __version__
except ImportError:  # a source tree that was never built
    __version__ = "0+unknown"


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "packlab-jupyterlab"}]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "packlab_jupyterlab"}]


def _load_jupyter_server_extension(server_app) -> None:
    """Add packlab's routes to the running Jupyter server (called by jupyter_server)."""
    from .routes import setup

    server_app.web_app.settings["packlab"] = setup(server_app.web_app, server_app.log)
    server_app.log.info("packlab: panel and API at %spacklab/", server_app.web_app.settings["base_url"])


def _unload_jupyter_server_extension(server_app) -> None:
    """Stop the clusters started from JupyterLab, when the server stops."""
    state = server_app.web_app.settings.get("packlab")
    if state is not None:
        state.close()
