"""`relaymd dashboard`: the report's views on a local web page (stdlib http.server, a
thread per connection: a browser's idle pre-connections never block it), re-read from the
state file on every request and reloading itself. Read-only: it answers GET only and never
writes the state file."""

from __future__ import annotations

import hmac
import ipaddress
import sqlite3
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from relaymd.logging import get_logger
from relaymd.state.errors import StateStoreError
from relaymd.views.page import PageOptions, render_page
from relaymd.views.plotly_js import plotly_js
from relaymd.views.snapshot import RelaySnapshot

log = get_logger("relaymd.views.dashboard")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


def make_server(
    host: str,
    port: int,
    take: Callable[[], RelaySnapshot],
    token: str | None,
    refresh_s: int,
) -> ThreadingHTTPServer:
    """A server bound to host:port (port 0: any free one) that serves the page at / and
    plotly.js beside it; with a token, only to requests carrying `?token=`."""
    suffix = f"?token={token}" if token else ""
    options = PageOptions(
        title="RelayMD dashboard", plotly_src=f"plotly.min.js{suffix}", refresh_s=refresh_s
    )

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            given = parse_qs(url.query).get("token", [""])[0]
            if token and not hmac.compare_digest(given.encode(), token.encode()):
                self._send(HTTPStatus.FORBIDDEN, "text/plain", b"give ?token=<the token>\n")
            elif url.path in ("/", "/index.html"):
                self._page()
            elif url.path == "/plotly.min.js":
                self._send(HTTPStatus.OK, "text/javascript", plotly_js().encode(), cache_s=3600)
            else:
                self._send(HTTPStatus.NOT_FOUND, "text/plain", b"not found\n")

        def _page(self) -> None:
            try:
                page = render_page(take(), options).encode()
            except (OSError, sqlite3.Error, StateStoreError) as exc:  # e.g. the file was moved
                log.warning("dashboard_state_unreadable", error=str(exc))
                message = f"cannot read the state file: {exc}\n".encode()
                self._send(HTTPStatus.SERVICE_UNAVAILABLE, "text/plain; charset=utf-8", message)
                return
            self._send(HTTPStatus.OK, "text/html; charset=utf-8", page)

        def _send(self, status: HTTPStatus, kind: str, body: bytes, cache_s: int = 0) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", f"max-age={cache_s}" if cache_s else "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("dashboard_request", client=self.client_address[0], line=format % args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True  # Ctrl-C never waits for a browser's idle connection
    return server
