"""The packlab panel served inside the Jupyter process, on Jupyter's port.

A Bokeh server application (:func:`packlab.ui.document`) is mounted into Jupyter's own
Tornado application: no second process, no second port. Only two things reach it:

* the page, ``<base_url>/packlab/panel``, a Jupyter handler behind Jupyter's login (403
  without it), which opens a Bokeh session whose id and token are signed with a secret
  made for this process and handed out only in that page;
* the session's websocket, ``<base_url>/packlab/panel/ws``, which Bokeh accepts only with a
  token signed by that secret, not yet expired, from an ``Origin`` that is Jupyter's own
  (the host that the logged-in page was served from).

Bokeh's own page, index and static routes are not mounted at all; BokehJS is inlined in
the page (a login node may not reach a CDN).
"""

from __future__ import annotations

import os
import secrets
from typing import Any

import tornado.web
from bokeh.application import Application
from bokeh.application.handlers.function import FunctionHandler
from bokeh.embed.server import server_html_page_for_session
from bokeh.resources import Resources
from bokeh.server.tornado import BokehTornado
from bokeh.util.token import generate_jwt_token, generate_session_id
from jupyter_server.utils import url_path_join
from tornado.ioloop import IOLoop

APP = "/panel"
#: BokehJS inlined in the page (no CDN on a login node): core, widgets (Div) and tables,
#: not GL or MathJax (2.3 MB less per page).
RESOURCES = Resources(mode="inline", components=["bokeh", "bokeh-widgets", "bokeh-tables"])
#: Seconds a page has to open its websocket (a reload makes a new session).
TOKEN_LIFETIME = 300


class PanelServer:
    """The Bokeh server application living in Jupyter's Tornado application."""

    def __init__(self, web_app: tornado.web.Application, base_url: str):
        self._secret = secrets.token_urlsafe(32).encode()  # this process only, never written
        self._stores: dict[str, str | None] = {}
        self.bokeh = BokehTornado(
            {APP: Application(FunctionHandler(self._make_document))},
            prefix=url_path_join(base_url, "packlab"),
            secret_key=self._secret,
            sign_sessions=True,
            generate_session_ids=False,  # a session only from the logged-in page
            use_index=False,
            redirect_root=False,
            session_token_expiration=TOKEN_LIFETIME,
            extra_websocket_origins=[],  # filled with Jupyter's own host by the page
        )
        self.websocket_path = url_path_join(base_url, "packlab", "panel", "ws")
        # Jupyter's ServerWebApplication refuses an Application as a route target: ask
        # Tornado itself. Only the websocket route is mounted.
        tornado.web.Application.add_handlers(web_app, ".*$", [(self.websocket_path, self.bokeh)])
        self._started = False

    def _start(self) -> None:
        if not self._started:  # on first use: the loop runs by then
            self.bokeh.initialize(IOLoop.current())
            self.bokeh.start()
            self._started = True

    def _make_document(self, doc: Any) -> None:
        from packlab.ui import document

        document(doc, store=self._stores.pop(doc.session_context.id, None))

    async def page(self, host: str, store: str | None) -> str:
        """The HTML page of a new panel session drawing ``store``, for a logged-in user
        whose browser reached Jupyter at ``host``."""
        self._start()
        self.bokeh.websocket_origins.add(host.lower())
        session_id = generate_session_id(secret_key=self._secret, signed=True)
        token = generate_jwt_token(session_id, secret_key=self._secret, signed=True,
                                   expiration=TOKEN_LIFETIME,
                                   extra_payload={"headers": {}, "cookies": {}, "arguments": {}})
        self._stores[session_id] = store
        context = self.bokeh.applications[APP]
        session = await context.create_session_if_needed(session_id, None, token)
        return server_html_page_for_session(session, resources=RESOURCES, title=session.document.title,
                                            template=session.document.template,
                                            template_variables=session.document.template_variables)

    def close(self) -> None:
        if self._started:
            self.bokeh.stop(wait=False)


def store_argument(value: str | None) -> str | None:
    """The ``?store=`` of a panel request as an absolute path (``~`` expanded)."""
    if not value:
        return None
    return os.path.abspath(os.path.expanduser(value))
