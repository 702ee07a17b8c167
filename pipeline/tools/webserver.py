"""A small threaded HTTP server: the socket side of ``pipeline inventory --serve``.

The standard library's ``ThreadingHTTPServer`` (one thread per request, so a slow registry walk in a
refresh never blocks a page load) with every request handed, as plain data, to an application
callable: ``app(Request) -> Response``. What the server decides (who may ask, what it does) lives in
the application (:mod:`pipeline.hygiene.ui`); this module only reads and writes sockets.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

#: a request body larger than this is refused (the application's forms are a few hundred bytes)
MAX_BODY = 64 * 1024


@dataclass(frozen=True)
class Request:
    method: str
    path: str                          # without the query
    query: dict[str, str]              # first value of each parameter
    headers: dict[str, str]            # lower-case names
    body: bytes
    client: str                        # the peer's address
    local: str                         # the address the request arrived at

    def cookie(self, name: str) -> str | None:
        for part in self.headers.get("cookie", "").split(";"):
            key, _, value = part.strip().partition("=")
            if key == name:
                return value
        return None


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


App = Callable[[Request], Response]


class _ThreadingHTTPServer6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class Server:
    """Serves ``app`` on ``bind:port`` (0: any free port) in a background thread until :meth:`close`."""

    def __init__(self, app: App, bind: str, port: int) -> None:
        handler = _handler(app)
        bind = bind.strip("[]")
        server = _ThreadingHTTPServer6 if ":" in bind else ThreadingHTTPServer   # "::1", "::": an IPv6 socket
        self._httpd = server((bind, port), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="webserver", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> Server:
        self._thread.start()
        return self

    def wait(self) -> None:
        self._thread.join()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def _handler(app: App) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "pipeline"
        sys_version = ""

        timeout = 60                      # a client that stalls mid-request gives its thread back

        def _serve(self) -> None:
            raw = (self.headers.get("Content-Length") or "0").strip()
            if not raw.isdigit():
                self._send(Response(400, b"Content-Length is not a number\n"))
                return
            length = int(raw)
            if length > MAX_BODY:
                self._send(Response(413, b"request body too large\n"))
                return
            body = self.rfile.read(length) if length else b""
            try:
                url = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
                request = Request(self.command, url.path, query, {k.lower(): v for k, v in self.headers.items()},
                                  body, self.client_address[0], self.connection.getsockname()[0])
                response = app(request)
            except Exception as exc:      # the application answers errors itself; this is the last guard
                response = Response(500, f"internal error: {type(exc).__name__}\n".encode())
            self._send(response)

        def _send(self, r: Response) -> None:
            self.send_response(r.status)
            self.send_header("Content-Type", r.content_type)
            self.send_header("Content-Length", str(len(r.body)))
            self.send_header("Cache-Control", "no-store")
            for k, v in r.headers.items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(r.body)

        do_GET = do_POST = do_HEAD = do_DELETE = do_PUT = _serve

        def log_message(self, format: str, *args: object) -> None:   # the application logs what matters
            return

    return Handler
