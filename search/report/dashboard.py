"""`digit-search dashboard`: optuna-dashboard on the study database, with the trials' artifacts browsable."""

from __future__ import annotations

import ipaddress
import socket
import sys
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import TextIO
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from search.errors import UserError
from search.config import DashboardSpec
from search.study.storage import check_database_exists, parse_storage_url, redacted


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a browser's open connection must not keep Ctrl-C from stopping it


class _IPv6ThreadingServer(_ThreadingServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass  # one line per request would bury the URL


def dashboard_app(spec: DashboardSpec):
    """The optuna-dashboard WSGI app over the study database and its artifact store."""
    import optuna_dashboard

    from search.study.artifacts import artifact_location, open_artifact_store
    from search.study.storage import open_storage

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
        raise UserError(f"cannot listen on {spec.host}:{spec.port} ({reason}); pass another --port, or --host 127.0.0.1") from None
    shown = f"[{spec.host}]" if ":" in spec.host else spec.host
    out.write(f"optuna-dashboard on {redacted(parse_storage_url(spec.storage))}, artifacts in {artifact_dir}\n")
    if not _is_loopback(spec.host):
        out.write(f"note: listening on {spec.host}, reachable from other machines; optuna-dashboard has no login\n")
    out.write(f"open http://{shown}:{server.server_port}/dashboard/ (Ctrl-C stops it)\n")
    out.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        out.write("dashboard stopped\n")
    finally:
        server.server_close()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
