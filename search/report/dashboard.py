"""`digit-search dashboard`: optuna-dashboard on the study database, with the trials' artifacts browsable."""

from __future__ import annotations

import ipaddress
import socket
import sys
from socketserver import ThreadingMixIn
from typing import TextIO
from urllib.parse import urlsplit
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from search.config import DashboardSpec
from search.errors import UserError
from search.study.artifacts import artifact_location, open_artifact_store
from search.study.storage import check_database_exists, open_storage, parse_storage_url, redacted

READ_METHODS = ("GET", "HEAD", "OPTIONS")
LOCAL_NAMES = ("localhost",)


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a browser's open connection must not keep Ctrl-C from stopping it


class _IPv6ThreadingServer(_ThreadingServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass  # one line per request would bury the URL


def allowed_host(host_header: str, listen_host: str, port: int) -> bool:
    """Whether a request's Host header names this server: an IP address, localhost or the --host given,
    with the served port. A DNS name that merely points here (DNS rebinding) is refused, so a web page
    the user visits can't reach the dashboard under its own domain."""
    try:
        parts = urlsplit(f"//{host_header.strip()}")
        given_port = parts.port or 80
    except ValueError:
        return False
    name = parts.hostname or ""
    if given_port != port or not name:
        return False
    if name in LOCAL_NAMES or name == listen_host.lower().strip("[]"):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class Guard:
    """WSGI middleware in front of optuna-dashboard: refuses foreign Host headers, and writes unless allowed."""

    def __init__(self, app, listen_host: str, port: int, allow_writes: bool) -> None:
        self.app, self.listen_host, self.port, self.allow_writes = app, listen_host, port, allow_writes

    def __call__(self, environ, start_response):
        host = environ.get("HTTP_HOST", "")
        if not allowed_host(host, self.listen_host, self.port):
            return _refuse(
                start_response,
                "421 Misdirected Request",
                f"Host {host!r} is not this dashboard's address; open it by IP address or localhost",
            )
        if environ.get("REQUEST_METHOD", "GET").upper() not in READ_METHODS and not self.allow_writes:
            return _refuse(
                start_response,
                "403 Forbidden",
                "this dashboard is read-only; start it with --allow-writes to change studies",
            )
        return self.app(environ, start_response)


def _refuse(start_response, status: str, message: str) -> list[bytes]:
    body = (message + "\n").encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
    return [body]


def dashboard_app(spec: DashboardSpec):
    """The optuna-dashboard WSGI app over the study database and its artifact store."""
    import optuna_dashboard  # loaded only by this command: it brings a web framework

    check_database_exists(spec.storage)
    storage = open_storage(spec.storage)
    location = artifact_location(spec.artifacts, spec.storage)
    return optuna_dashboard.wsgi(storage, artifact_store=open_artifact_store(location)), location


def serve_dashboard(spec: DashboardSpec, out: TextIO | None = None) -> None:
    """Serve optuna-dashboard until Ctrl-C (or SIGTERM); prints the URL to open."""
    out = out or sys.stdout
    app, artifact_dir = dashboard_app(spec)
    server_class = _IPv6ThreadingServer if ":" in spec.host else _ThreadingServer
    try:
        server = make_server(spec.host, spec.port, app, server_class=server_class, handler_class=_QuietHandler)
    except OSError as err:
        reason = err.strerror or str(err)
        raise UserError(
            f"cannot listen on {spec.host}:{spec.port} ({reason}); pass another --port, or stop what is using it"
        ) from None
    server.set_app(Guard(app, spec.host, server.server_port, spec.allow_writes))
    out.write(f"optuna-dashboard on {redacted(parse_storage_url(spec.storage))}, artifacts in {artifact_dir}\n")
    if not _is_loopback(spec.host):
        out.write(f"note: listening on {spec.host}, reachable from other machines; optuna-dashboard has no login\n")
    if not spec.allow_writes:
        out.write("read-only: notes, deletions and edits are refused (--allow-writes permits them)\n")
    out.write(f"open {browser_url(spec.host, server.server_port)} (Ctrl-C stops it)\n")
    out.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        out.write("dashboard stopped\n")
    finally:
        server.server_close()


def browser_url(host: str, port: int) -> str:
    """The URL to open: a wildcard address (0.0.0.0, ::) is not one a browser can open, so this machine's."""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/dashboard/"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
