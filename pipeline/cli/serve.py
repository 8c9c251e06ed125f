"""``sulphur edit FILE --serve``: the editor in a browser, for its owner only.

textual-serve on its own serves anyone who can reach the port, and any web page the
user visits can open a websocket to ``localhost`` (browsers do not apply the same-origin
rule to websockets): a page claiming ``Origin: http://evil.example`` could type into the
editor and save. So, as Jupyter does:

- a random token per launch (``secrets.token_urlsafe``), printed once in the URL; the
  page, the websocket and downloads all need it (compared in constant time);
- the websocket's ``Origin`` (when a browser sends one) and the ``Host`` header must
  name this server (a foreign page, or a DNS-rebinding name, is refused with 403);
- ``--host``/``--port`` are checked here, and a busy or bad port is one line.

textual-serve is the ``serve`` extra (``pip install 'sulphur[serve]'``).
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import hmac
import ipaddress
import os
import secrets
import shlex
import socket
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

# Deferred imports: aiohttp, aiohttp_jinja2, textual_serve — the optional `serve` extra; its absence is reported
#   in one line

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def parse_port(text: str | int | None) -> int:
    """A TCP port from a flag or the environment; ``ValueError`` with the reason."""
    raw = str(text if text is not None else os.environ.get("SULPHUR_SERVE_PORT", "8000")).strip()
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise ValueError(f"--port {raw!r}: expected a number from 1 to 65535")
    return int(raw)


def _host_names(host: str) -> set[str]:
    """Names a browser may use to reach a server bound to ``host``."""
    bare = host.strip("[]")
    names = {bare}
    try:
        if ipaddress.ip_address(bare).is_loopback:
            names |= LOOPBACK_NAMES
    except ValueError:
        if bare == "localhost":
            names |= LOOPBACK_NAMES
    return names


def origin_allowed(origin: str | None, host_header: str | None, names: set[str], port: int) -> bool:
    """Whether a request's ``Origin`` and ``Host`` both name this server.

    No ``Origin`` is allowed (a script or ``curl`` with the token is the user's own); a
    browser always sends one on a websocket, and it must be ``http(s)://NAME:PORT``.
    Bound to every address (``0.0.0.0``, ``::``), any name reaches the server, so the
    ``Origin`` must then name the same host and port as the ``Host`` header.
    """
    if names & {"0.0.0.0", "::", ""}:
        if origin is None:
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and parts.netloc.lower() == (host_header or "").lower()
    for value, need_scheme in ((host_header, False), (origin, True)):
        if value is None:
            continue
        parts = urlsplit(value if need_scheme else f"//{value}")
        if need_scheme and parts.scheme not in ("http", "https"):
            return False
        try:
            value_port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return False
        if (parts.hostname or "") not in names or value_port != port:
            return False
    return True


def _family(host: str) -> int:
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host.strip("[]")).version == 6 else socket.AF_INET
    except ValueError:
        return socket.AF_INET  # a name: localhost and friends resolve to IPv4 first


def make_server(command: str, host: str, port: int, title: str, token: str) -> Any:
    """A textual-serve ``Server`` that demands ``token`` and a same-origin websocket."""
    import aiohttp_jinja2
    from aiohttp import web
    from textual_serve.server import Server

    names = _host_names(host)

    class GuardedServer(Server):
        async def _make_app(self) -> web.Application:
            app = await super()._make_app()
            app.middlewares.append(guard)
            return app

        @aiohttp_jinja2.template("app_index.html")
        async def handle_index(self, request: web.Request) -> dict[str, Any]:
            context = await Server.handle_index.__wrapped__(self, request)  # the template's data
            context["app_websocket_url"] += f"?token={token}"  # the page's websocket carries it too
            return context

        def serve(self, debug: bool = False) -> None:
            """Bind first (a busy port fails before anything is printed), then serve until ctrl+c."""
            sock = socket.create_server((host.strip("[]"), port), family=_family(host))
            web.run_app(self._make_app(), sock=sock, handle_signals=True, print=lambda *a: None,
                        loop=asyncio.new_event_loop())

        async def on_startup(self, app: web.Application) -> None:
            # Printed once, as Jupyter does: whoever has this URL can edit the storyboard.
            print(f"Serving the Sulphur editor — open this URL (it holds this launch's token):\n"
                  f"    {self.public_url}/?token={token}", file=sys.stderr, flush=True)

    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/static/"):
            return await handler(request)  # textual-serve's own JS and CSS: nothing of the user's
        given = request.query.get("token", "")
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise web.HTTPForbidden(text="sulphur: this URL needs the token printed when the editor started\n")
        if not origin_allowed(request.headers.get("Origin"), request.headers.get("Host"), names, port):
            raise web.HTTPForbidden(text="sulphur: requests from another origin are refused\n")
        return await handler(request)

    return GuardedServer(command, host=host, port=port, title=title)


def main(args: argparse.Namespace) -> int:
    """Serve the editor of ``args.storyboard``; one line and exit 2 for a bad flag, 1 for a busy port."""
    path = Path(args.storyboard)
    try:
        port = parse_port(getattr(args, "port", None))
    except ValueError as exc:
        print(f"sulphur edit --serve: {exc}", file=sys.stderr)
        return 2
    host = getattr(args, "host", None) or os.environ.get("SULPHUR_SERVE_HOST", "localhost")
    if not path.is_file():
        print(f"sulphur edit --serve: {path}: not a storyboard file", file=sys.stderr)
        return 2
    try:
        import textual_serve  # noqa: F401  (the optional extra)
    except ImportError:
        print("sulphur edit --serve needs textual-serve: pip install 'sulphur[serve]'", file=sys.stderr)
        return 2
    command = shlex.join([sys.executable, "-m", "pipeline.cli.main", "edit", str(path.resolve())])
    server = make_server(command, host, port, f"Sulphur — {path.name}", secrets.token_urlsafe(24))
    try:
        server.serve()
    except OSError as exc:
        reason = "in use by another program" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
        print(f"sulphur edit --serve: cannot listen on {host}:{port}: {reason}", file=sys.stderr)
        return 1
    return 0
