"""packlab's routes in the Jupyter server, all under ``<base_url>/packlab/`` and all
behind Jupyter's login: a request without it is refused with 403.

``GET  api/health``            the extension answers, and with which versions
``GET  api/options``           backends and profiles for the New cluster form
``GET  api/clusters``          the user's running clusters (the owner-only registry)
``POST api/clusters``          start one in this server process (backend, profile, workers)
``DELETE api/clusters/NAME``   stop one that this server started
``GET  api/stores``            recent queue stores, their queue depth and workers
``GET  panel?store=PATH``      the live panel (a Bokeh session; see :mod:`.panel`)
"""

from __future__ import annotations

import json
from typing import Any

import tornado.web
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.utils import url_path_join

import packlab
from packlab import PacklabError, PacklabRuntimeError

from . import __version__
from .clusters import Clusters, NotStartedHere
from .panel import PanelServer, store_argument


class State:
    """What the handlers share: the clusters this server runs and the panel server."""

    def __init__(self, web_app: tornado.web.Application, base_url: str):
        self.clusters = Clusters()
        self.panel = PanelServer(web_app, base_url)

    def close(self) -> None:
        self.clusters.close()
        self.panel.close()


class _Base(APIHandler):
    @property
    def state(self) -> State:
        return self.settings["packlab"]

    def reply(self, value: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(value))

    def refuse(self, e: Exception, status: int = 400) -> None:
        field = getattr(e, "field", None)
        self.reply({"error": str(e), "field": field, "kind": type(e).__name__}, status)


class HealthHandler(_Base):
    @tornado.web.authenticated
    def get(self) -> None:
        self.reply({"status": "ok", "extension": __version__, "packlab": packlab.__version__,
                    "panel": "packlab.ui.document"})


class OptionsHandler(_Base):
    @tornado.web.authenticated
    def get(self) -> None:
        from packlab import PROFILES, config
        from packlab.clusters import BACKENDS

        self.reply({"backends": sorted(BACKENDS), "backend": config.get("backend"),
                    "profiles": [{"name": n, "summary": PROFILES[n].summary()} for n in sorted(PROFILES)],
                    "profile": config.get("profile")})


class ClustersHandler(_Base):
    @tornado.web.authenticated
    async def get(self) -> None:
        self.reply({"clusters": await self.state.clusters.listing()})

    @tornado.web.authenticated
    async def post(self) -> None:
        try:
            body = json.loads(self.request.body or b"{}")
            self.reply(await self.state.clusters.start(body), 201)
        except json.JSONDecodeError as e:
            self.refuse(PacklabError(f"the request body is not JSON ({e}): send the form's fields."))
        except PacklabError as e:
            self.refuse(e)
        except PacklabRuntimeError as e:  # e.g. ClusterStartError: the cause is in the message
            self.refuse(e, 500)


class ClusterHandler(_Base):
    @tornado.web.authenticated
    async def delete(self, name: str) -> None:
        try:
            await self.state.clusters.stop(name)
        except NotStartedHere as e:
            self.refuse(e, 409)
            return
        except PacklabError as e:  # no running cluster of that name
            self.refuse(e, 404)
            return
        self.set_status(204)
        self.finish()


class StoresHandler(_Base):
    @tornado.web.authenticated
    async def get(self) -> None:
        clusters = await self.state.clusters.listing()
        self.reply({"stores": self.state.clusters.stores(clusters)})


class PanelHandler(JupyterHandler):
    """The panel page: a fresh Bokeh session, for a logged-in user only."""

    def get_login_url(self) -> str:
        raise tornado.web.HTTPError(403)  # refused, not redirected: it is loaded in an iframe

    @tornado.web.authenticated
    async def get(self) -> None:
        state: State = self.settings["packlab"]
        store = store_argument(self.get_argument("store", None))
        if store is None and self.get_argument("cluster", None):
            from packlab.clusters import registry

            try:
                store = registry.lookup(self.get_argument("cluster")).store
            except PacklabError as e:
                raise tornado.web.HTTPError(404, str(e)) from None
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.finish(await state.panel.page(self.request.host, store))


def setup(web_app: tornado.web.Application, log: Any) -> State:
    """Mount packlab's routes on Jupyter's application; returns their shared state."""
    base = web_app.settings["base_url"]
    state = State(web_app, base)
    web_app.settings["packlab"] = state

    def route(path: str) -> str:
        return url_path_join(base, "packlab", path)

    web_app.add_handlers(".*$", [
        (route("api/health"), HealthHandler),
        (route("api/options"), OptionsHandler),
        (route("api/clusters"), ClustersHandler),
        (route(r"api/clusters/([A-Za-z0-9][A-Za-z0-9_.-]{0,63})"), ClusterHandler),
        (route("api/stores"), StoresHandler),
        (route("panel/?"), PanelHandler),
    ])
    return state
