"""``packlab dashboard``: the panel of a store served by a Bokeh server in this process.

Bound to 127.0.0.1 by default: only this machine reaches it, which on a shared login
node still means every user of it, so binding to any other address requires a token
(generated and printed, or given): a request without it, in the query (``?token=``) or
in the cookie the first authorised page sets, gets 403, the websocket included.
The websocket accepts only the page's own origin (Bokeh's origin allow-list, fixed in
3.8.2), so another site open in the same browser cannot drive the session.

Examples
--------
>>> check_address("0.0.0.0"), check_address("localhost")
('0.0.0.0', 'localhost')
>>> needs_token("127.0.0.1"), needs_token("0.0.0.0")
(False, True)
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import socket
from dataclasses import dataclass
from typing import Any

from .. import checks
from ..clusters.security import is_loopback
from ..errors import bad_value

COOKIE = "packlab_dashboard_token"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def check_address(address: object) -> str:
    """A host name or IP address to bind to (no port)."""
    text = checks.text(address, "address", expected="a host name or IP address such as 127.0.0.1")
    if ":" in text and not _is_ip(text):
        raise bad_value(
            "address",
            address,
            "a host name or IP address without a port",
            "Give the port with --port, e.g. --address 0.0.0.0 --port 8790.",
        )
    return text


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def needs_token(address: str) -> bool:
    """Whether binding to ``address`` needs a token (anything but loopback does)."""
    return not is_loopback(address)


def origins(address: str, port: int) -> list[str]:
    """The websocket origins the page itself has (``host:port``), nothing else."""
    hosts = {address}
    if address in LOOPBACK or (not needs_token(address)):
        hosts |= {"127.0.0.1", "localhost"}
    if address in ("0.0.0.0", "::", ""):
        hosts = {socket.gethostname(), socket.getfqdn(), "127.0.0.1", "localhost"}
    return sorted(f"{h}:{port}" for h in hosts if h)


def _auth(token: str):
    """A Bokeh auth provider that lets in a request carrying ``token`` (query or cookie)."""
    from bokeh.server.auth_provider import AuthProvider
    from tornado.web import HTTPError, RequestHandler
    from tornado.websocket import WebSocketHandler

    refused = ("<!DOCTYPE html><title>packlab dashboard: token required</title>"
               "<body style='font-family:sans-serif;margin:2em'><h2>A token is required</h2>"
               "<p>This dashboard is bound to a shared address. Open the URL that "
               "<code>packlab dashboard</code> printed (it ends in <code>?token=...</code>).</p>")

    class Refused(RequestHandler):
        def get(self) -> None:
            self.set_status(403)
            self.finish(refused)

    class TokenAuth(AuthProvider):
        # Asked in every handler's prepare(), before its get() runs: a request without the
        # token is answered 403 there, a websocket before it is upgraded. (Through Bokeh's
        # @authenticated, a websocket was upgraded first and then dropped, and /autoload.js
        # failed with a TypeError after a redirect: tracebacks in the log.)
        @property
        def get_user_async(self):
            async def user(handler: Any) -> str | None:
                given = handler.get_argument("token", None) or handler.get_cookie(COOKIE)
                if given is None or not hmac.compare_digest(given.encode(), token.encode()):
                    if isinstance(handler, WebSocketHandler):
                        raise HTTPError(403, "the dashboard's token is required")
                    handler.set_status(403)
                    handler.finish(refused)  # tornado runs no get() of a finished request
                    return None
                if handler.get_argument("token", None) and not isinstance(handler, WebSocketHandler):
                    handler.set_cookie(COOKIE, token, httponly=True, samesite="Strict")
                return "packlab"

            return user

        @property
        def login_url(self) -> str:
            return "/refused"

        @property
        def login_handler(self):
            return Refused

    return TokenAuth()


@dataclass
class Dashboard:
    """A running dashboard: its ``url`` (with the token when it has one) and server."""

    url: str
    server: Any
    token: str | None

    def stop(self) -> None:
        self.server.stop()
        self.server.io_loop.stop()


def serve(
    store: str,
    *,
    port: int = 8790,
    address: str = "127.0.0.1",
    token: str | None = None,
    interval: float | str | None = None,
    io_loop: Any = None,
) -> Dashboard:
    """Start serving the panel of ``store`` at ``http://ADDRESS:PORT/`` (not blocking: run
    ``dashboard.server.io_loop.start()``). A non-loopback ``address`` requires a token:
    ``token`` or one generated here."""
    from bokeh.application import Application
    from bokeh.application.handlers.function import FunctionHandler
    from bokeh.server.server import Server

    from ..telemetry.monitor import monitor
    from .panel import make_document

    port = checks.integer(port, "port", minimum=1, maximum=65535, fix="E.g. --port 8790.")
    address = check_address(address)
    if token is not None:
        token = checks.text(token, "token", expected="a non-empty secret")
        if len(token) < 16:
            raise bad_value(
                "token",
                "<hidden>",
                "a secret of at least 16 characters",
                "Leave --token out to have one generated.",
            )
    if needs_token(address) and token is None:
        token = secrets.token_urlsafe(24)
    monitor(store)  # a bad store is refused now, not in the first page

    def page(doc: Any) -> None:
        make_document(doc, store, interval=interval)

    kw: dict[str, Any] = {}
    if token is not None:
        kw["auth_provider"] = _auth(token)
    server = Server(
        {"/": Application(FunctionHandler(page))},
        port=port,
        address=address,
        allow_websocket_origin=origins(address, port),
        io_loop=io_loop,
        **kw,
    )
    server.start()
    host = address if address not in ("0.0.0.0", "::", "") else socket.getfqdn()
    url = f"http://{host}:{port}/" + (f"?token={token}" if token else "")
    return Dashboard(url, server, token)


__all__ = ["Dashboard", "check_address", "needs_token", "origins", "serve"]
