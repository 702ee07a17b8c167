"""A seeded, fault-injecting HTTP reverse proxy in front of one real OCI distribution registry.

Integration tests put a :class:`FaultProxy` between a client (our httpx registry client,
docker/BuildKit, cosign, Trivy, skopeo) and a real ``docker-registry`` on ``127.0.0.1``, to
prove the client survives registries that fail the way public ones do: rate limits (429 with
``Retry-After``), 503s, connections reset before or after the registry did the work (a lost
answer), truncated blob and manifest bodies, slow answers, bursts of 429s and a dead
registry. Pure standard library (``http.server`` + ``http.client``), plain HTTP only::

    with FaultProxy("http://127.0.0.1:5000", seed=7, rate=0.1) as proxy:
        push_image(f"{proxy.host}/team/app:1.0")
        assert proxy.stats()["faults"]["429"] > 0

Faults are decided per request, in arrival order, from ``random.Random(seed)``: every
request draws exactly three numbers (fault or not, which kind, reset phase) whatever the
mode, so request *n* gets the same decision in every run with the same seed, rate and kinds
(:meth:`FaultProxy.plan` computes the sequence without a proxy). With concurrent clients the
arrival order itself may vary; the multiset of decisions does not.

Fault kinds (:data:`ALL_KINDS`; ``"reset-before"``/``"reset-after"`` pin one reset phase):

``429``       answered ``429 Too Many Requests`` with ``Retry-After`` and a distribution
              error body (``TOOMANYREQUESTS``); not forwarded.
``503``       answered ``503 Service Unavailable`` (``UNAVAILABLE``); not forwarded.
``reset``     the connection is reset (RST) without any response: half of the time before
              forwarding, half after the registry processed the request and answered (only
              when the request body was read completely) - a lost answer.
``truncate``  forwarded; the status line and headers go out with the full
              ``Content-Length`` but only about half the body, then the connection closes.
              Only for answers with a length-framed body of at least 2 bytes (blob and
              manifest GETs); otherwise the client gets a 503 instead (HEAD requests are
              not forwarded for that).
``stall``     waits ``stall_seconds``, then forwards normally.

Modes: :meth:`FaultProxy.burst` (every request 429 for a while), :attr:`FaultProxy.dead`
(every request 503, or reset with ``dead_kind = "reset"``), :meth:`FaultProxy.pause_faults`
(no faults at all, modes included, inside the block); ``rate``, ``kinds``, ``retry_after``
and ``stall_seconds`` may be changed while it runs. ``/v2/`` (the ping) is faulted like
any other request.

Traps a proxy in front of a registry must avoid (each verified against docker 26, BuildKit
and ``docker-registry`` 2.8 on the project's machines; see docs in /work/shared/toolchain.md):

* Docker treats 127.0.0.0/8 registries as insecure and probes HTTPS first; it falls back to
  HTTP only if the answer to its TLS ClientHello starts with ``HTTP/``. ``http.server``
  answers an unparsable request line without a status line unless the handler sets
  ``default_request_version = "HTTP/1.0"`` (it does here).
* Registry clients send several ``Accept:`` lines; keeping headers in a dict forwards only
  the last one and the registry then refuses OCI indexes ("accept header does not support
  OCI indexes"). Header lines are forwarded as a list, in order, duplicates included.
* Bodies are streamed both ways in 64 KiB pieces (blobs may be 100 MiB): request bodies are
  read exactly by ``Content-Length`` or decoded from ``Transfer-Encoding: chunked`` and
  re-chunked upstream; upstream bodies without a length are re-chunked to HTTP/1.1
  clients. HEAD, 1xx, 204 and 304 answers carry no body (a HEAD keeps its Content-Length).
* ``Host`` is forwarded as the name the client used for the proxy (``proxy.host`` when the
  client sent none): distribution builds absolute ``Location`` URLs from it, so upload
  URLs keep pointing at the proxy. ``Location``, ``Content-Location`` and ``Link`` values
  that still name the upstream are rewritten to the proxy as well.
* Hop-by-hop headers (``Connection`` and the headers it names, ``Keep-Alive``,
  ``Transfer-Encoding``, ``TE``, ``Trailer``, ``Upgrade``, ``Proxy-*``, ``Expect``) are not
  forwarded in either direction; framing is redone by the proxy.
* Every answer carries ``Connection: close`` and the connection is closed after it (correct,
  if not the fastest, client-side keep-alive). A request body is always read to its end
  before an answer (also for injected 429/503), otherwise closing with unread data makes
  the kernel send a RST that can destroy the answer before the client reads it.

Observability: :meth:`FaultProxy.stats` (requests, faults by kind, requests by client
``User-Agent`` family, statuses), :meth:`FaultProxy.records` (one :class:`Record` per
request) and :meth:`FaultProxy.on_request` hooks, called with (method, path, headers) on
arrival before the fault decision (a hook may flip ``dead`` to fault that very request;
a hook that raises is counted in ``stats()["hook_errors"]`` and otherwise ignored).

CLI (manual experiments)::

    python -m tests.support.faultproxy --upstream http://127.0.0.1:5000 --rate 0.1 --seed 1
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http.client
import io
import json
import random
import re
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import urlsplit

__all__ = ["ALL_KINDS", "FaultProxy", "Record", "agent_of"]

#: The random fault kinds, in the order ``kinds`` indexes them.
ALL_KINDS: tuple[str, ...] = ("429", "503", "reset", "truncate", "stall")
#: Accepted in ``kinds`` besides :data:`ALL_KINDS`: a reset with a fixed phase.
PINNED_RESETS: tuple[str, ...] = ("reset-before", "reset-after")
VALID_KINDS = frozenset(ALL_KINDS + PINNED_RESETS)

CHUNK = 64 * 1024
#: Not forwarded in either direction (RFC 9110 7.6.1, plus framing the proxy redoes).
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authenticate",
                        "proxy-authorization", "te", "trailer", "trailers", "transfer-encoding",
                        "upgrade", "expect"})
#: Response headers whose upstream URLs are rewritten to the proxy.
URL_HEADERS = frozenset({"location", "content-location", "link"})

#: User-Agent families for ``stats()["by_agent"]``, matched case-insensitively, first hit wins.
AGENTS: tuple[tuple[str, str], ...] = (
    ("buildkit", "buildkit"),          # anywhere: dockerd's BuildKit says "... buildkit/v0.x ..."
    ("^docker/", "docker"),
    ("docker-client", "docker"),
    ("^cosign", "cosign"),
    ("^trivy", "trivy"),
    ("^pipeline", "pipeline"),
    ("^go-http-client", "Go-http-client"),
    ("^containerd", "containerd"),
    ("^skopeo", "skopeo"),
    ("^python-httpx", "python-httpx"),
    ("^python-urllib", "python-urllib"),
    ("^curl", "curl"),
)

Hook = Callable[[str, str, Message], object]


def agent_of(user_agent: str | None) -> str:
    """The client family of a ``User-Agent`` ("docker", "cosign", ...; the first product name
    for unknown clients, ``"-"`` when there is none)."""
    ua = (user_agent or "").strip()
    low = ua.lower()
    for pattern, family in AGENTS:
        if (low.startswith(pattern[1:]) if pattern.startswith("^") else pattern in low):
            return family
    first = re.split(r"[/\s]", ua, maxsplit=1)[0]
    return first or "-"


HUB_LIMIT_MESSAGE = ("You have reached your pull rate limit. You may increase the limit by authenticating and"
                     " upgrading: https://www.docker.com/increase-rate-limit")


@dataclasses.dataclass
class Record:
    """One request as the proxy saw it. ``status`` is what the client got (``None``: no
    status line, the connection was reset); ``upstream_status`` is what the registry
    answered (``None``: not forwarded); ``fault`` the injected fault (as counted in
    ``stats()["faults"]``), ``reason`` why ("random", "burst", "dead"), ``detail`` more
    (a reset's phase, a truncate's fallback, an upstream error). Everything but
    ``bytes_out`` and ``duration`` is final before the client can see the answer."""

    seq: int
    time: float
    method: str
    path: str
    user_agent: str
    agent: str
    fault: str | None = None
    reason: str | None = None
    detail: str | None = None
    status: int | None = None
    upstream_status: int | None = None
    bytes_out: int = 0
    duration: float = 0.0
    _counted: bool = dataclasses.field(default=False, repr=False, compare=False)


@dataclasses.dataclass(frozen=True)
class _Decision:
    kind: str | None          # "429" | "503" | "reset-before" | "reset-after" | "truncate" | "stall" | None
    reason: str | None = None
    retry_after: int = 1


class _ClientGone(Exception):
    """The client closed or broke its side of the connection."""


class _BadRequest(Exception):
    """The client's request framing is invalid."""


class _UpstreamError(Exception):
    """The upstream could not be reached or broke before answering."""


def _decide(draws: tuple[float, float, float], rate: float, kinds: tuple[str, ...]) -> str | None:
    """The random fault for one request's three draws (a reset resolved to its phase)."""
    u_fault, u_kind, u_phase = draws
    if not kinds or u_fault >= rate:
        return None
    kind = kinds[min(int(u_kind * len(kinds)), len(kinds) - 1)]
    if kind == "reset":
        return "reset-before" if u_phase < 0.5 else "reset-after"
    return kind


def _check_kinds(kinds: Iterable[str]) -> tuple[str, ...]:
    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in VALID_KINDS]
    if unknown:
        raise ValueError(f"unknown fault kinds {unknown}; valid: {sorted(VALID_KINDS)}")
    return kinds


def _check_rate(rate: float) -> float:
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be within [0, 1], got {rate}")
    return float(rate)


def _error_body(code: str, message: str) -> bytes:
    return json.dumps({"errors": [{"code": code, "message": message}]}).encode()


# --------------------------------------------------------------------------- request bodies


class _Body:
    """A request body read from the client, streamed in pieces: by ``Content-Length``,
    decoded from ``Transfer-Encoding: chunked``, or empty. Iterating resumes where the last
    iteration stopped, so :meth:`drain` after a partial read reads only the rest."""

    def __init__(self, rfile: io.BufferedIOBase, headers: Message) -> None:
        self.rfile = rfile
        te = ",".join(headers.get_all("Transfer-Encoding") or []).lower()
        lengths = headers.get_all("Content-Length") or []
        self.chunked = "chunked" in te
        self.length: int | None = None
        if not self.chunked and lengths:
            values = {v.strip() for v in ",".join(lengths).split(",")}
            if len(values) != 1 or not next(iter(values)).isdigit():
                raise _BadRequest(f"invalid Content-Length {lengths!r}")
            self.length = int(values.pop())
        self.complete = not self.chunked and not self.length     # True: read to its end (or none)
        self._pieces = self._read_pieces()

    def _read(self, n: int) -> bytes:
        try:
            data = self.rfile.read(n)
        except OSError as exc:
            raise _ClientGone(f"reading the request body: {exc}") from exc
        if len(data) != n:
            raise _ClientGone("the client closed the connection inside the request body")
        return data

    def _readline(self) -> bytes:
        try:
            line = self.rfile.readline(65537)
        except OSError as exc:
            raise _ClientGone(f"reading the request body: {exc}") from exc
        if not line:
            raise _ClientGone("the client closed the connection inside a chunked body")
        if len(line) > 65536:
            raise _BadRequest("chunk header line too long")
        return line

    def _read_pieces(self) -> Iterator[bytes]:
        if self.complete:
            return
        if not self.chunked:
            remaining = self.length or 0
            while remaining:
                piece = self._read(min(CHUNK, remaining))
                remaining -= len(piece)
                yield piece
            self.complete = True
            return
        while True:
            line = self._readline()
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BadRequest(f"invalid chunk size line {line[:40]!r}") from None
            if size < 0:
                raise _BadRequest("negative chunk size")
            if size == 0:
                while self._readline() not in (b"\r\n", b"\n"):   # trailers: dropped
                    pass
                self.complete = True
                return
            while size:
                piece = self._read(min(CHUNK, size))
                size -= len(piece)
                yield piece
            if self._readline() not in (b"\r\n", b"\n"):
                raise _BadRequest("chunk data not followed by CRLF")

    def __iter__(self) -> Iterator[bytes]:
        return self._pieces

    def drain(self) -> None:
        """Read and drop the rest of the body (so that closing the connection is graceful)."""
        for _ in self._pieces:
            pass


# --------------------------------------------------------------------------- the server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    proxy: FaultProxy

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet for what injected resets leave behind (a closed socket, a client that went away);
        anything else is printed, as socketserver would."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (OSError, ValueError)):
            return
        super().handle_error(request, client_address)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the FQDN of the address (a DNS lookup); not needed.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)


class _Handler(BaseHTTPRequestHandler):
    # Unparsable request lines (docker's TLS ClientHello probe) must get a status line.
    default_request_version = "HTTP/1.0"
    protocol_version = "HTTP/1.1"
    server_version = "faultproxy"
    timeout = 120          # per socket operation with the client
    server: _Server

    # ---- plumbing

    def setup(self) -> None:
        super().setup()
        self.server.proxy._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.proxy._track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.proxy.verbose:
            sys.stderr.write(f"faultproxy {self.address_string()} {format % args}\n")

    def _reset(self, record: Record | None = None) -> None:
        """Close the client connection with a RST, no response (counted first when ``record``
        is given: the client must not see the reset before the stats do)."""
        if record is not None:
            self.server.proxy._status(record, None)
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            self.rfile.close()       # the makefile() reference, else close() below is deferred
        with contextlib.suppress(OSError):
            self.connection.close()

    def _write(self, data: bytes) -> None:
        try:
            self.wfile.write(data)
        except OSError as exc:
            raise _ClientGone(f"writing the response: {exc}") from exc

    def _answer(self, record: Record, status: int, body: bytes, extra: Iterable[tuple[str, str]] = ()) -> None:
        """A complete answer of the proxy's own (a fault or a proxy error)."""
        self.server.proxy._status(record, status)
        self.send_response_only(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        for name, value in extra:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        try:
            self.end_headers()
        except OSError as exc:
            raise _ClientGone(str(exc)) from exc
        if self.command != "HEAD":
            self._write(body)

    # ---- dispatch: every method goes through the proxy

    def do_GET(self) -> None:
        self._proxy()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    def _proxy(self) -> None:
        proxy = self.server.proxy
        started = time.monotonic()
        self.close_connection = True
        path = self.path
        if path.startswith(("http://", "https://")):      # absolute-form request target
            parts = urlsplit(path)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        proxy._run_hooks(self.command, path, self.headers)
        record, decision = proxy._arrive(self.command, path, self.headers.get("User-Agent", ""))
        try:
            self._serve(proxy, record, decision, path)
        except _ClientGone as exc:
            record.detail = ((record.detail + "; ") if record.detail else "") + f"client gone: {exc}"
            self.close_connection = True
        except _BadRequest as exc:
            record.detail = f"bad request: {exc}"
            with contextlib.suppress(_ClientGone):
                self._answer(record, 400, _error_body("UNSUPPORTED", f"faultproxy: {exc}"))
        finally:
            record.duration = time.monotonic() - started
            proxy._done(record)

    def _serve(self, proxy: FaultProxy, record: Record, decision: _Decision, path: str) -> None:
        body = _Body(self.rfile, self.headers)
        kind = decision.kind
        quota = proxy._pull_quota(self.command, path)
        if quota is not None and quota[1]:
            body.drain()
            proxy._fault(record, "rate-limit", "pull quota")
            self._answer(record, 429, _error_body("TOOMANYREQUESTS", HUB_LIMIT_MESSAGE), quota[0])
            return
        extra = quota[0] if quota is not None else ()
        if kind in ("429", "503"):
            body.drain()
            proxy._fault(record, kind, decision.reason)
            if kind == "429":
                self._answer(record, 429, _error_body("TOOMANYREQUESTS", "too many requests (injected by faultproxy)"),
                             [("Retry-After", str(decision.retry_after))])
            else:
                self._answer(record, 503, _error_body("UNAVAILABLE", "service unavailable (injected by faultproxy)"))
            return
        if kind == "reset-before":
            proxy._fault(record, "reset", decision.reason, "before forwarding")
            self._reset(record)
            return
        if kind == "truncate" and self.command == "HEAD":
            body.drain()
            proxy._fault(record, "503", decision.reason, "truncate: a HEAD has no body")
            self._answer(record, 503, _error_body("UNAVAILABLE", "service unavailable (injected by faultproxy)"))
            return
        if kind == "stall":
            proxy._fault(record, "stall", decision.reason, f"{proxy.stall_seconds}s")
            if proxy._stopping.wait(proxy.stall_seconds):
                record.detail = "stall: proxy stopped"
                self._reset(record)
                return
        try:
            conn, resp = self._forward(proxy, body, path)
        except _UpstreamError as exc:
            body.drain()
            proxy._count("upstream_errors")
            record.detail = f"upstream error: {exc}"
            self._answer(record, 502, _error_body("UNAVAILABLE", f"faultproxy: upstream error: {exc}"))
            return
        try:
            record.upstream_status = resp.status
            if kind == "reset-after":
                if body.complete:
                    with contextlib.suppress(OSError, http.client.HTTPException):
                        while resp.read(CHUNK):
                            pass
                    proxy._fault(record, "reset", decision.reason, f"after the upstream answered {resp.status}")
                else:
                    proxy._fault(record, "reset", decision.reason, "before forwarding (body not read)")
                self._reset(record)
                return
            self._relay(proxy, record, resp, truncate=(kind == "truncate"), reason=decision.reason, extra=extra)
        finally:
            conn.close()

    # ---- upstream

    def _client_host(self, proxy: FaultProxy) -> str:
        return (self.headers.get("Host") or "").strip() or proxy.host

    def _forward(self, proxy: FaultProxy, body: _Body,
                 path: str) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send the request upstream (streaming its body) and return the upstream answer."""
        conn = http.client.HTTPConnection(proxy._up_host, proxy._up_port, timeout=proxy.upstream_timeout)
        try:
            conn.putrequest(self.command, path, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", self._client_host(proxy))
            named = {t.strip().lower() for v in self.headers.get_all("Connection") or [] for t in v.split(",")}
            for name, value in self.headers.items():          # every line, duplicates and order kept
                low = name.lower()
                if low in HOP_BY_HOP or low in named or low == "host":
                    continue
                if low == "content-length" and body.chunked:
                    continue
                conn.putheader(name, value)
            if body.chunked:
                conn.putheader("Transfer-Encoding", "chunked")
            conn.putheader("Connection", "close")
            conn.endheaders()
        except ValueError as exc:                               # an illegal header from the client
            conn.close()
            raise _BadRequest(str(exc)) from exc
        except OSError as exc:
            conn.close()
            raise _UpstreamError(exc) from exc
        sending = True
        try:
            for piece in body:
                if not sending:
                    continue                                    # keep draining the client
                try:
                    conn.send(b"%x\r\n%s\r\n" % (len(piece), piece) if body.chunked else piece)
                except OSError:
                    sending = False                             # upstream answered early; read its answer
            if body.chunked and sending:
                with contextlib.suppress(OSError):
                    conn.send(b"0\r\n\r\n")
            return conn, conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise _UpstreamError(exc) from exc
        except BaseException:
            conn.close()
            raise

    def _relay(self, proxy: FaultProxy, record: Record, resp: http.client.HTTPResponse, *,
               truncate: bool, reason: str | None, extra: Iterable[tuple[str, str]] = ()) -> None:
        """Stream the upstream answer to the client (or half of it, for a truncate)."""
        status = resp.status
        no_body = self.command == "HEAD" or 100 <= status < 200 or status in (204, 304)
        raw_length = resp.getheader("Content-Length")
        length = int(raw_length) if raw_length and raw_length.strip().isdigit() else None
        if truncate and (no_body or length is None or length < 2):
            with contextlib.suppress(OSError, http.client.HTTPException):
                while resp.read(CHUNK):
                    pass
            proxy._fault(record, "503", reason, f"truncate: upstream {status} has no body of 2+ bytes")
            self._answer(record, 503, _error_body("UNAVAILABLE", "service unavailable (injected by faultproxy)"))
            return
        client_base = f"http://{self._client_host(proxy)}"
        named = {t.strip().lower() for v in resp.msg.get_all("Connection") or [] for t in v.split(",")}
        proxy._status(record, status)
        self.send_response_only(status, resp.reason)
        for name, value in resp.msg.items():
            low = name.lower()
            if low in HOP_BY_HOP or low in named:
                continue
            if low == "content-length" and length is None:
                continue
            if low in URL_HEADERS:
                value = proxy._rewrite(value, client_base)
            self.send_header(name, value)
        for name, value in extra:
            self.send_header(name, value)
        chunked_out = not no_body and length is None and self.request_version >= "HTTP/1.1"
        if chunked_out:
            self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        try:
            self.end_headers()
        except OSError as exc:
            raise _ClientGone(str(exc)) from exc
        if no_body:
            return
        limit = length // 2 if truncate and length is not None else None
        if truncate:
            proxy._fault(record, "truncate", reason, f"{limit} of {length} bytes")
        sent = 0
        while limit is None or sent < limit:
            want = CHUNK if limit is None else min(CHUNK, limit - sent)
            try:
                piece = resp.read(want)
            except (OSError, http.client.HTTPException) as exc:
                proxy._count("upstream_errors")
                record.detail = f"upstream broke inside the body: {exc!r}"
                self._reset()
                return
            if not piece:
                break
            self._write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked_out else piece)
            sent += len(piece)
            record.bytes_out = sent
        if chunked_out:
            self._write(b"0\r\n\r\n")
        # a truncate ends here: the client holds headers promising `length` bytes and half of them;
        # finish() flushes and closes with a FIN, so the half that was sent is delivered.


# --------------------------------------------------------------------------- the proxy


class FaultProxy:
    """A fault-injecting reverse proxy for one plain-HTTP registry (see the module docstring).

    ``upstream``: ``http://HOST:PORT``; ``seed`` seeds the decisions; ``rate`` is the
    probability that a request gets a random fault, of a kind drawn uniformly from ``kinds``;
    ``stall_seconds`` is a stall's delay; ``retry_after`` the ``Retry-After`` of random 429s.
    ``port=0`` picks a free port on :meth:`start`. Thread-safe: attributes and modes may be
    changed from any thread while requests are served.
    """

    def __init__(self, upstream: str, *, seed: int, rate: float = 0.0, kinds: tuple[str, ...] = ALL_KINDS,
                 stall_seconds: float = 2.0, retry_after: int = 1, port: int = 0,
                 upstream_timeout: float = 300.0, verbose: bool = False) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be http://HOST[:PORT], got {upstream!r}")
        self.upstream = f"http://{parts.netloc}"
        self._up_host: str = parts.hostname
        self._up_port: int = parts.port or 80
        self._up_bases = self._bases(self._up_host, self._up_port, parts.netloc)
        self.seed = seed
        self.stall_seconds = stall_seconds
        self.retry_after = retry_after
        self.upstream_timeout = upstream_timeout
        self.verbose = verbose
        self._port = port
        self._lock = threading.RLock()
        self._rng = random.Random(seed)
        self._rate = _check_rate(rate)
        self._kinds = _check_kinds(kinds)
        self._dead = False
        self._dead_kind = "503"
        self._burst_until = 0.0
        self._burst_retry_after = 2
        self._paused = 0
        self._hooks: list[Hook] = []
        self._quota: tuple[int, int] | None = None
        self._quota_used = 0
        self._quota_start = 0.0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._conns: set[socket.socket] = set()
        self._reset_counters()

    # ---- life cycle

    def start(self) -> Self:
        """Bind 127.0.0.1 (a free port unless ``port`` was given) and serve in a daemon thread."""
        with self._lock:
            if self._server is not None:
                raise RuntimeError("FaultProxy already started")
            self._stopping.clear()
            server = _Server(("127.0.0.1", self._port), _Handler)
            server.proxy = self
            self._server = server
            self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                            name=f"faultproxy:{server.server_port}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: wakes stalls, closes open client connections, frees the port. Idempotent."""
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
            self._stopping.set()
            conns = list(self._conns)
        if server is None:
            return
        server.shutdown()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if thread is not None:
            thread.join(timeout=10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        server = self._server
        if server is None:
            raise RuntimeError("FaultProxy not started")
        return server.server_port

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``: the registry host to give clients."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    # ---- knobs and modes

    @property
    def rate(self) -> float:
        return self._rate

    @rate.setter
    def rate(self, value: float) -> None:
        with self._lock:
            self._rate = _check_rate(value)

    @property
    def kinds(self) -> tuple[str, ...]:
        return self._kinds

    @kinds.setter
    def kinds(self, value: Iterable[str]) -> None:
        with self._lock:
            self._kinds = _check_kinds(value)

    @property
    def dead(self) -> bool:
        """``True``: every request is answered 503 (or reset, see :attr:`dead_kind`)."""
        return self._dead

    @dead.setter
    def dead(self, value: bool) -> None:
        with self._lock:
            self._dead = bool(value)

    @property
    def dead_kind(self) -> str:
        """How a dead registry fails: ``"503"`` (default) or ``"reset"`` (before forwarding)."""
        return self._dead_kind

    @dead_kind.setter
    def dead_kind(self, value: str) -> None:
        if value not in ("503", "reset"):
            raise ValueError(f"dead_kind must be '503' or 'reset', got {value!r}")
        with self._lock:
            self._dead_kind = value

    def burst(self, seconds: float, retry_after: int = 2) -> None:
        """Answer every request 429 with ``Retry-After: retry_after`` for ``seconds`` from now."""
        with self._lock:
            self._burst_until = time.monotonic() + seconds
            self._burst_retry_after = retry_after

    @property
    def bursting(self) -> bool:
        return time.monotonic() < self._burst_until

    @contextlib.contextmanager
    def pause_faults(self) -> Iterator[Self]:
        """No faults inside the block (random ones, bursts and ``dead`` alike). Nestable.
        Decisions are still drawn, so the seeded sequence stays aligned with request numbers."""
        with self._lock:
            self._paused += 1
        try:
            yield self
        finally:
            with self._lock:
                self._paused -= 1

    def pull_quota(self, limit: int | None, window: int = 21600) -> None:
        """Behave like Docker Hub's pull limit (``None``: off): every manifest GET counts (a HEAD does not);
        manifest answers carry ``ratelimit-limit: N;w=W`` and ``ratelimit-remaining: R;w=W``; past ``limit``
        GETs in ``window`` seconds a manifest GET is answered 429 ``TOOMANYREQUESTS`` with Hub's message and
        headers and no ``Retry-After`` (counted as fault ``rate-limit``). Setting it starts a new window."""
        with self._lock:
            self._quota = None if limit is None else (limit, window)
            self._quota_used = 0
            self._quota_start = time.monotonic()

    def _pull_quota(self, method: str, path: str) -> tuple[list[tuple[str, str]], bool] | None:
        """(headers for the answer, refuse?) for a manifest request while the pull quota is on."""
        with self._lock:
            if self._quota is None or "/manifests/" not in path or method not in ("GET", "HEAD"):
                return None
            limit, window = self._quota
            if time.monotonic() - self._quota_start > window:
                self._quota_used, self._quota_start = 0, time.monotonic()
            refuse = method == "GET" and self._quota_used >= limit
            if method == "GET" and not refuse:
                self._quota_used += 1
            left = max(0, limit - self._quota_used)
        return [("ratelimit-limit", f"{limit};w={window}"), ("ratelimit-remaining", f"{left};w={window}"),
                ("docker-ratelimit-source", "127.0.0.1")], refuse

    def on_request(self, callback: Hook) -> Hook:
        """Call ``callback(method, path, headers)`` when a request arrives, before its fault
        decision. Exceptions are swallowed (and counted). Returns ``callback`` (a decorator)."""
        with self._lock:
            self._hooks.append(callback)
        return callback

    def remove_hook(self, callback: Hook) -> None:
        with self._lock:
            self._hooks.remove(callback)

    @staticmethod
    def plan(seed: int, rate: float, kinds: tuple[str, ...] = ALL_KINDS, n: int = 100) -> list[str | None]:
        """The random decisions of the first ``n`` requests (no modes), resets resolved to
        ``"reset-before"``/``"reset-after"``; a planned truncate may still become a 503."""
        rng, kinds = random.Random(seed), _check_kinds(kinds)
        return [_decide((rng.random(), rng.random(), rng.random()), _check_rate(rate), kinds) for _ in range(n)]

    # ---- observability

    def stats(self) -> dict[str, Any]:
        """``requests``; ``faults`` by kind (every kind present); ``by_reason`` (random, burst,
        dead); ``by_agent`` (requests per User-Agent family, see :func:`agent_of`);
        ``statuses`` (what clients got, ``"none"`` for resets); ``hook_errors``;
        ``upstream_errors``; ``in_flight`` (requests whose handling has not finished: it may
        lag a little behind what clients saw). Counts are final before a client can see the
        answer they count."""
        with self._lock:
            return {
                "requests": self._requests,
                "faults": {kind: self._faults.get(kind, 0) for kind in ALL_KINDS},
                "by_reason": dict(self._by_reason),
                "by_agent": dict(self._by_agent),
                "statuses": dict(self._statuses),
                "hook_errors": self._counters["hook_errors"],
                "upstream_errors": self._counters["upstream_errors"],
                "in_flight": self._in_flight,
            }

    def records(self) -> list[Record]:
        """A copy of every request's :class:`Record`, in arrival order."""
        with self._lock:
            return [dataclasses.replace(r) for r in self._records]

    def reset_stats(self) -> None:
        """Forget counts and records (the seeded decision sequence carries on)."""
        with self._lock:
            self._reset_counters()

    # ---- internals (called by the handler)

    def _reset_counters(self) -> None:
        self._requests = 0
        self._in_flight = 0
        self._faults: Counter[str] = Counter()
        self._by_reason: Counter[str] = Counter()
        self._by_agent: Counter[str] = Counter()
        self._statuses: Counter[str] = Counter()
        self._counters: Counter[str] = Counter()
        self._records: list[Record] = []

    @staticmethod
    def _bases(host: str, port: int, netloc: str) -> tuple[str, ...]:
        names = {netloc.lower(), f"{host}:{port}".lower()}
        if host in ("127.0.0.1", "localhost"):
            names |= {f"127.0.0.1:{port}", f"localhost:{port}"}
        if port == 80:
            names.add(host.lower())
        return tuple(sorted((f"http://{n}" for n in names), key=len, reverse=True))

    def _rewrite(self, value: str, client_base: str) -> str:
        """Point URLs at the upstream (in Location, Content-Location, Link) at the proxy."""
        for base in self._up_bases:
            value = re.sub(re.escape(base) + r"(?=[/?#>;,\s\"]|$)", client_base, value, flags=re.IGNORECASE)
        return value

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            (self._conns.add if add else self._conns.discard)(conn)

    def _run_hooks(self, method: str, path: str, headers: Message) -> None:
        with self._lock:
            hooks = list(self._hooks)
        for hook in hooks:
            try:
                hook(method, path, headers)
            except Exception as exc:  # noqa: BLE001  (a test's hook must not break the proxy)
                self._count("hook_errors")
                if self.verbose:
                    sys.stderr.write(f"faultproxy: on_request hook {hook!r} raised {exc!r}\n")

    def _arrive(self, method: str, path: str, user_agent: str) -> tuple[Record, _Decision]:
        """Count the request and decide its fault (three draws, whatever the mode)."""
        with self._lock:
            draws = (self._rng.random(), self._rng.random(), self._rng.random())
            self._requests += 1
            self._in_flight += 1
            agent = agent_of(user_agent)
            self._by_agent[agent] += 1
            record = Record(seq=self._requests, time=time.time(), method=method, path=path,
                            user_agent=user_agent, agent=agent)
            self._records.append(record)
            if self._paused:
                decision = _Decision(None)
            elif self._dead:
                decision = _Decision("503" if self._dead_kind == "503" else "reset-before", "dead")
            elif time.monotonic() < self._burst_until:
                decision = _Decision("429", "burst", self._burst_retry_after)
            else:
                kind = _decide(draws, self._rate, self._kinds)
                decision = _Decision(kind, "random" if kind else None, self.retry_after)
            return record, decision

    def _fault(self, record: Record, kind: str, reason: str | None, detail: str | None = None) -> None:
        with self._lock:
            record.fault, record.reason = kind, reason
            if detail is not None:
                record.detail = detail
            self._faults[kind] += 1
            if reason:
                self._by_reason[reason] += 1

    def _count(self, name: str) -> None:
        with self._lock:
            self._counters[name] += 1

    def _status(self, record: Record, status: int | None) -> None:
        """What the client gets; called before the first byte of it goes out."""
        with self._lock:
            record.status = status
            if not record._counted:
                record._counted = True
                self._statuses[str(status) if status is not None else "none"] += 1

    def _done(self, record: Record) -> None:
        with self._lock:
            self._in_flight -= 1
            if not record._counted:                 # the client left before it got anything
                record._counted = True
                self._statuses["none"] += 1
            if self.verbose:
                sys.stderr.write(f"faultproxy #{record.seq} {record.method} {record.path} -> "
                                 f"{record.status} {record.fault or ''} {record.detail or ''} [{record.agent}]\n")


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.faultproxy", description=__doc__.split("\n")[0])
    parser.add_argument("--upstream", required=True, help="http://127.0.0.1:PORT of the registry")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--kinds", default=",".join(ALL_KINDS), help="comma-separated fault kinds")
    parser.add_argument("--stall-seconds", type=float, default=2.0)
    parser.add_argument("--retry-after", type=int, default=1)
    parser.add_argument("--port", type=int, default=0, help="listen port (default: a free one)")
    parser.add_argument("--dead", action="store_true", help="answer every request 503")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)
    proxy = FaultProxy(args.upstream, seed=args.seed, rate=args.rate,
                       kinds=tuple(k for k in args.kinds.split(",") if k), stall_seconds=args.stall_seconds,
                       retry_after=args.retry_after, port=args.port, verbose=args.verbose)
    proxy.dead = args.dead
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with proxy:
        print(f"faultproxy {proxy.url} -> {proxy.upstream} (seed {args.seed}, rate {args.rate})", flush=True)
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
    print(json.dumps(proxy.stats(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
