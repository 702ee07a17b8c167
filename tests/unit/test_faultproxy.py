"""tests.support.faultproxy against real sockets: an in-process stdlib upstream that mimics a few
registry endpoints, and (marked integration) the real ``docker-registry`` behind the proxy.

The upstream records every request it receives (header lines as a list, the body's sha256 and
framing), so the tests can tell "forwarded" from "answered by the proxy" and check what
exactly arrived.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.faultproxy import ALL_KINDS, FaultProxy, agent_of

MiB = 1 << 20
BIG = random.Random(20261201).randbytes(8 * MiB)
BIG_SHA = hashlib.sha256(BIG).hexdigest()
STREAMED = random.Random(7).randbytes(300 * 1024 + 17)   # sent by the upstream without a Content-Length
REPO_ROOT = Path(__file__).resolve().parents[2]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- the upstream


@dataclass
class Seen:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body_sha: str
    body_length: int
    framing: str          # "length" | "chunked" | "none"

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


@dataclass
class Upstream:
    server: ThreadingHTTPServer
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def requests(self, method: str | None = None) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if method is None or s.method == method]


class UpstreamHandler(BaseHTTPRequestHandler):
    """A few registry-shaped endpoints:

    ``/v2/``                     200 ``{}`` (GET, HEAD)
    ``/v2/r/blobs/big``          8 MiB random bytes with a Content-Length (GET, HEAD)
    ``/v2/r/blobs/tiny``         a 1-byte body
    ``/v2/r/blobs/streamed``     ~300 KiB, chunked (no Content-Length)
    ``/v2/r/manifests/etag``     304 when If-None-Match matches
    POST ``/v2/r/blobs/uploads/``   202, Location at the upstream's own address (relative with ?relative)
    PUT/PATCH ``/v2/r/blobs/uploads/*``  201/202 with the body's sha256, length and framing
    DELETE anything              204
    ``/echo``                    the request's header lines
    """

    protocol_version = "HTTP/1.1"
    server: Any

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _body(self) -> tuple[bytes, str]:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            data = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(data), "chunked"
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if self.headers.get("Content-Length") is None:
            return b"", "none"
        return self.rfile.read(length), "length"

    def _record(self, body: bytes, framing: str) -> None:
        up: Upstream = self.server.upstream
        with up.lock:
            up.seen.append(Seen(self.command, self.path, list(self.headers.items()), sha(body), len(body), framing))

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              length: bool = True) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and status not in (204, 304):
            for i in range(0, len(body), 64 * 1024):
                self.wfile.write(body[i:i + 64 * 1024])

    def _handle(self) -> None:
        body, framing = self._body()
        self._record(body, framing)
        path, _, query = self.path.partition("?")
        me = f"http://127.0.0.1:{self.server.server_port}"
        api = {"Docker-Distribution-API-Version": "registry/2.0"}
        if self.command == "DELETE":
            self._send(204, headers=api, length=False)
        elif path == "/v2/":
            self._send(200, b"{}", {**api, "Content-Type": "application/json"})
        elif path == "/v2/r/blobs/big":
            self._send(200, BIG, {**api, "Content-Type": "application/octet-stream",
                                  "Docker-Content-Digest": f"sha256:{BIG_SHA}"})
        elif path == "/v2/r/blobs/tiny":
            self._send(200, b"x", api)
        elif path == "/v2/r/blobs/streamed":
            self._send(200, headers={**api, "Transfer-Encoding": "chunked"}, length=False)
            for i in range(0, len(STREAMED), 50_000):
                piece = STREAMED[i:i + 50_000]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/v2/r/manifests/etag":
            if self.headers.get("If-None-Match") == '"v1"':
                self._send(304, headers={"ETag": '"v1"'}, length=False)
            else:
                self._send(200, b'{"schemaVersion":2}', {"ETag": '"v1"'})
        elif path == "/v2/r/blobs/uploads/" and self.command == "POST":
            where = "/v2/r/blobs/uploads/u-1?_state=abc"
            self._send(202, headers={**api, "Location": where if "relative" in query else me + where,
                                     "Link": f'<{me}/v2/_catalog?n=1&last=r>; rel="next"',
                                     "Docker-Upload-UUID": "u-1", "Range": "0-0"})
        elif path.startswith("/v2/r/blobs/uploads/") and self.command in ("PUT", "PATCH"):
            answer = json.dumps({"sha256": sha(body), "length": len(body), "framing": framing}).encode()
            status = 201 if self.command == "PUT" else 202
            self._send(status, answer, {**api, "Content-Type": "application/json",
                                        "Location": f"{me}/v2/r/blobs/sha256:{sha(body)}"})
        elif path == "/echo":
            self._send(200, json.dumps(list(self.headers.items())).encode(), {"Content-Type": "application/json"})
        else:
            self._send(404, b'{"errors":[{"code":"NAME_UNKNOWN"}]}', api)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), UpstreamHandler)
    server.daemon_threads = True
    up = Upstream(server)
    server.upstream = up  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield up
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def proxy(upstream: Upstream) -> Iterator[FaultProxy]:
    with FaultProxy(upstream.url, seed=1) as p:
        yield p


@pytest.fixture
def client(proxy: FaultProxy) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=proxy.url, timeout=15) as c:
        yield c


def raw_conn(proxy: FaultProxy) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=15)


TRANSPORT_ERRORS = (ConnectionError, http.client.HTTPException, httpx.TransportError)


# --------------------------------------------------------------------------- a faithful proxy


def test_rate_zero_forwards_a_big_blob_byte_exactly_and_head_keeps_its_length(proxy, client, upstream):
    with client.stream("GET", "/v2/r/blobs/big") as r:
        assert r.status_code == 200
        assert r.headers["content-length"] == str(len(BIG))
        digest, n = hashlib.sha256(), 0
        for piece in r.iter_raw():
            digest.update(piece)
            n += len(piece)
    assert (n, digest.hexdigest()) == (len(BIG), BIG_SHA)
    assert r.headers["docker-content-digest"] == f"sha256:{BIG_SHA}"
    head = client.head("/v2/r/blobs/big")
    assert head.status_code == 200 and head.headers["content-length"] == str(len(BIG)) and head.content == b""
    assert [s.method for s in upstream.requests()] == ["GET", "HEAD"]
    assert all(s.header("Host") == [proxy.host] for s in upstream.requests())   # Host names the proxy
    assert proxy.stats()["faults"] == dict.fromkeys(ALL_KINDS, 0)


def test_location_and_link_pointing_at_the_upstream_are_rewritten_to_the_proxy(proxy, client, upstream):
    r = client.post("/v2/r/blobs/uploads/")
    assert r.status_code == 202
    assert r.headers["location"] == f"{proxy.url}/v2/r/blobs/uploads/u-1?_state=abc"
    assert r.headers["link"] == f'<{proxy.url}/v2/_catalog?n=1&last=r>; rel="next"'
    assert upstream.url not in json.dumps(dict(r.headers))
    relative = client.post("/v2/r/blobs/uploads/?relative=1")
    assert relative.headers["location"] == "/v2/r/blobs/uploads/u-1?_state=abc"
    # a client that names the proxy "localhost" gets "localhost" URLs back (Host is what it sent)
    named = client.post("/v2/r/blobs/uploads/", headers={"Host": f"localhost:{proxy.port}"})
    assert named.headers["location"].startswith(f"http://localhost:{proxy.port}/v2/")
    assert upstream.requests()[-1].header("Host") == [f"localhost:{proxy.port}"]


def test_a_put_body_arrives_intact_with_its_content_length(proxy, client, upstream):
    data = os.urandom(3 * MiB + 5)
    r = client.put("/v2/r/blobs/uploads/u-1?digest=x", content=data)
    assert r.status_code == 201
    assert r.json() == {"sha256": sha(data), "length": len(data), "framing": "length"}
    assert r.headers["location"] == f"{proxy.url}/v2/r/blobs/sha256:{sha(data)}"
    (put,) = upstream.requests("PUT")
    assert put.header("Content-Length") == [str(len(data))] and put.header("Transfer-Encoding") == []


def test_a_chunked_request_body_is_forwarded_intact(proxy, client, upstream):
    data = os.urandom(2 * MiB + 3)

    def pieces() -> Iterator[bytes]:
        for i in range(0, len(data), 100_003):
            yield data[i:i + 100_003]

    r = client.patch("/v2/r/blobs/uploads/u-1", content=pieces())
    assert r.status_code == 202
    assert r.json() == {"sha256": sha(data), "length": len(data), "framing": "chunked"}
    (patch,) = upstream.requests("PATCH")
    assert patch.header("Transfer-Encoding") == ["chunked"] and patch.header("Content-Length") == []


def test_chunk_extensions_and_trailers_are_decoded(proxy, upstream):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=15) as s:
        s.sendall(b"PUT /v2/r/blobs/uploads/u-1 HTTP/1.1\r\nHost: " + proxy.host.encode() +
                  b"\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 201")
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["sha256"] == sha(b"hello world")


def test_several_accept_lines_arrive_upstream_as_separate_lines_in_order(proxy, upstream):
    accepts = ["application/vnd.docker.distribution.manifest.v2+json",
               "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json"]
    conn = raw_conn(proxy)
    conn.putrequest("GET", "/echo", skip_accept_encoding=True)
    for a in accepts:
        conn.putheader("Accept", a)
    conn.endheaders()
    resp = conn.getresponse()
    echoed = json.loads(resp.read())
    conn.close()
    assert [v for k, v in echoed if k.lower() == "accept"] == accepts
    with httpx.Client(base_url=proxy.url, timeout=15) as c:
        echoed = c.get("/echo", headers=[("Accept", a) for a in accepts]).json()
    assert [v for k, v in echoed if k.lower() == "accept"] == accepts


def test_hop_by_hop_headers_are_not_forwarded_and_answers_close(proxy, client, upstream):
    r = client.get("/echo", headers={"Connection": "keep-alive, X-Hop", "Keep-Alive": "timeout=5",
                                     "X-Hop": "1", "TE": "trailers", "X-End-To-End": "kept"})
    names = {k.lower(): v for k, v in r.json()}
    assert "keep-alive" not in names and "x-hop" not in names and "te" not in names
    assert names["connection"] == "close" and names["x-end-to-end"] == "kept"
    assert r.headers["connection"] == "close" and "keep-alive" not in r.headers


def test_a_response_without_length_is_rechunked_and_http10_clients_get_it_close_delimited(proxy, client):
    r = client.get("/v2/r/blobs/streamed")
    assert r.status_code == 200 and r.content == STREAMED
    assert r.headers["transfer-encoding"] == "chunked" and "content-length" not in r.headers
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=15) as s:
        s.sendall(b"GET /v2/r/blobs/streamed HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower() and body == STREAMED


def test_204_and_304_carry_no_body(proxy, client):
    deleted = client.delete("/v2/r/manifests/sha256:abc")
    assert deleted.status_code == 204 and deleted.content == b""
    assert client.get("/v2/r/manifests/etag").status_code == 200
    cached = client.get("/v2/r/manifests/etag", headers={"If-None-Match": '"v1"'})
    assert cached.status_code == 304 and cached.content == b""
    # the connection framing stayed correct: the next request on the client still works
    assert client.get("/v2/").json() == {}


def test_a_reused_http_client_connection_keeps_working(proxy):
    conn = raw_conn(proxy)
    for _ in range(3):
        conn.request("GET", "/v2/")
        resp = conn.getresponse()
        assert (resp.status, resp.read(), resp.getheader("Connection")) == (200, b"{}", "close")
    conn.close()
    assert proxy.stats()["requests"] == 3


def test_docker_s_tls_probe_gets_an_http_status_line(proxy):
    """Docker falls back to HTTP only when its ClientHello is answered with "HTTP/..."."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    assert hello[:1] == b"\x16" and b"\n" in hello     # a TLS handshake record; http.server reads one "line"
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=15) as s:
        s.sendall(hello)
        answer = s.recv(5)
    assert answer == b"HTTP/"


def test_an_unreachable_upstream_gives_502(upstream):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    with FaultProxy(f"http://127.0.0.1:{dead_port}", seed=0) as p:
        r = httpx.put(f"{p.url}/v2/r/blobs/uploads/x", content=b"body", timeout=15)
        assert r.status_code == 502 and r.json()["errors"][0]["code"] == "UNAVAILABLE"
        assert p.stats()["upstream_errors"] == 1


def test_bad_arguments_are_refused(upstream):
    with pytest.raises(ValueError):
        FaultProxy("https://127.0.0.1:1", seed=0)
    with pytest.raises(ValueError):
        FaultProxy(upstream.url, seed=0, rate=1.5)
    with pytest.raises(ValueError):
        FaultProxy(upstream.url, seed=0, kinds=("404",))
    p = FaultProxy(upstream.url, seed=0)
    with pytest.raises(RuntimeError):
        _ = p.host
    with pytest.raises(ValueError):
        p.dead_kind = "truncate"
    with pytest.raises(ValueError):
        p.kinds = ("teapot",)


# --------------------------------------------------------------------------- seeded decisions


def statuses(url: str, n: int) -> list[int]:
    with httpx.Client(base_url=url, timeout=15) as c:
        return [c.get("/v2/").status_code for _ in range(n)]


def test_a_seed_reproduces_the_fault_sequence_across_proxies(upstream):
    runs = []
    for seed in (42, 42, 43):
        with FaultProxy(upstream.url, seed=seed, rate=0.5, kinds=("429", "503")) as p:
            runs.append(statuses(p.url, 40))
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    expected = [{None: 200, "429": 429, "503": 503}[k] for k in FaultProxy.plan(42, 0.5, ("429", "503"), 40)]
    assert runs[0] == expected
    assert set(runs[0]) == {200, 429, 503}
    # only the forwarded requests reached the upstream
    assert len(upstream.requests()) == sum(run.count(200) for run in runs)


def test_changing_rate_and_kinds_does_not_shift_the_sequence(upstream):
    plan = FaultProxy.plan(9, 0.4, ("503",), 30)
    with FaultProxy(upstream.url, seed=9, rate=0.4, kinds=("503",)) as p:
        first = statuses(p.url, 10)
        p.rate = 0.0
        assert statuses(p.url, 10) == [200] * 10
        p.rate, p.kinds = 0.4, ("429",)
        last = statuses(p.url, 10)
    assert first == [503 if k else 200 for k in plan[:10]]
    assert last == [429 if k else 200 for k in plan[20:]]


def test_concurrent_clients_get_exactly_the_planned_multiset_of_faults(upstream):
    n_threads, per_thread = 8, 25
    results: list[int] = []
    lock = threading.Lock()
    with FaultProxy(upstream.url, seed=5, rate=0.3, kinds=("429", "503")) as p:
        def work() -> None:
            got = statuses(p.url, per_thread)
            with lock:
                results.extend(got)

        threads = [threading.Thread(target=work) for _ in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        stats = p.stats()
    plan = FaultProxy.plan(5, 0.3, ("429", "503"), n_threads * per_thread)
    assert Counter(results) == Counter({None: 200, "429": 429, "503": 503}[k] for k in plan)
    assert stats["requests"] == n_threads * per_thread
    assert stats["faults"]["429"] == results.count(429) and stats["faults"]["503"] == results.count(503)
    assert len(upstream.requests()) == results.count(200)


# --------------------------------------------------------------------------- each kind


def test_429_has_retry_after_and_a_distribution_error_and_is_not_forwarded(upstream):
    with FaultProxy(upstream.url, seed=0, rate=1.0, kinds=("429",), retry_after=7) as p:
        r = httpx.put(f"{p.url}/v2/r/blobs/uploads/u-1", content=os.urandom(MiB), timeout=15)
        ping = httpx.get(f"{p.url}/v2/", timeout=15)        # the ping is faulted too
    assert r.status_code == 429 and r.headers["retry-after"] == "7"
    assert r.json() == {"errors": [{"code": "TOOMANYREQUESTS", "message": "too many requests (injected by faultproxy)"}]}
    assert ping.status_code == 429
    assert upstream.requests() == []


def test_503_is_not_forwarded(upstream):
    with FaultProxy(upstream.url, seed=0, rate=1.0, kinds=("503",)) as p:
        r = httpx.get(f"{p.url}/v2/r/blobs/big", timeout=15)
        assert p.stats()["faults"]["503"] == 1
    assert r.status_code == 503 and r.json()["errors"][0]["code"] == "UNAVAILABLE"
    assert upstream.requests() == []


def test_reset_closes_without_an_answer_half_before_and_half_after_forwarding(upstream):
    plan = FaultProxy.plan(3, 1.0, ("reset",), 12)
    assert {"reset-before", "reset-after"} <= set(plan)
    with FaultProxy(upstream.url, seed=3, rate=1.0, kinds=("reset",)) as p:
        for i in range(12):
            if i % 2:
                with pytest.raises(httpx.TransportError):
                    httpx.get(f"{p.url}/v2/", timeout=15)
            else:
                conn = raw_conn(p)
                with pytest.raises((ConnectionError, http.client.HTTPException)):
                    conn.request("GET", "/v2/")
                    conn.getresponse().read()
                conn.close()
        records = p.records()
        stats = p.stats()
    assert [r.status for r in records] == [None] * 12
    after = [r for r in records if r.upstream_status is not None]
    assert [r.seq for r in after] == [i + 1 for i, k in enumerate(plan) if k == "reset-after"]
    assert all(r.detail == "after the upstream answered 200" for r in after)
    assert len(upstream.requests()) == len(after)
    assert stats["faults"]["reset"] == 12 and stats["statuses"] == {"none": 12}


def test_a_reset_after_forwarding_is_a_lost_answer(upstream):
    data = os.urandom(MiB + 1)
    with FaultProxy(upstream.url, seed=0, rate=1.0, kinds=("reset-after",)) as p:
        with pytest.raises(httpx.TransportError):
            httpx.put(f"{p.url}/v2/r/blobs/uploads/u-1?digest=x", content=data, timeout=15)
        (rec,) = p.records()
    (put,) = upstream.requests("PUT")
    assert (put.body_sha, put.body_length) == (sha(data), len(data))   # the registry did the work
    assert rec.upstream_status == 201 and rec.status is None and rec.fault == "reset"


def test_a_reset_before_forwarding_reaches_nothing_even_with_a_large_body(upstream):
    with FaultProxy(upstream.url, seed=0, rate=1.0, kinds=("reset-before",)) as p:
        with pytest.raises(httpx.TransportError):
            httpx.put(f"{p.url}/v2/r/blobs/uploads/u-1", content=BIG, timeout=15)
        assert p.stats()["faults"]["reset"] == 1
    assert upstream.requests() == []


def test_truncate_sends_the_full_content_length_and_half_the_body(upstream):
    with FaultProxy(upstream.url, seed=0, rate=1.0, kinds=("truncate",)) as p:
        conn = raw_conn(p)
        conn.request("GET", "/v2/r/blobs/big")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("Content-Length") == str(len(BIG))
        with pytest.raises(http.client.IncompleteRead) as short:
            resp.read()
        conn.close()
        assert short.value.partial == BIG[:len(BIG) // 2]

        got = 0
        with pytest.raises(httpx.RemoteProtocolError), httpx.stream("GET", f"{p.url}/v2/r/blobs/big", timeout=15) as r:
            assert r.headers["content-length"] == str(len(BIG))
            for piece in r.iter_raw():
                got += len(piece)
        assert 0 < got < len(BIG)

        ping = httpx.Client(timeout=15)
        with pytest.raises(httpx.RemoteProtocolError):
            ping.get(f"{p.url}/v2/")                                   # "{}": 2 bytes, 1 sent
        head = ping.head(f"{p.url}/v2/r/blobs/big")                     # no body: a 503, not forwarded
        tiny = ping.get(f"{p.url}/v2/r/blobs/tiny")                     # 1 byte: a 503 after forwarding
        ping.close()
        assert head.status_code == 503 and tiny.status_code == 503
        stats, records = p.stats(), p.records()
    assert stats["faults"]["truncate"] == 3 and stats["faults"]["503"] == 2
    assert [r.upstream_status for r in records] == [200, 200, 200, None, 200]
    assert [s.method for s in upstream.requests()] == ["GET", "GET", "GET", "GET"]


def test_stall_delays_then_forwards(upstream):
    with FaultProxy(upstream.url, seed=0, rate=1.0, kinds=("stall",), stall_seconds=0.3) as p:
        t0 = time.monotonic()
        r = httpx.get(f"{p.url}/v2/r/blobs/big", timeout=15)
        elapsed = time.monotonic() - t0
        assert p.stats()["faults"]["stall"] == 1
    assert elapsed >= 0.3
    assert r.status_code == 200 and sha(r.content) == BIG_SHA


# --------------------------------------------------------------------------- modes


def test_a_burst_answers_429_for_its_window_then_forwards_again(proxy, client, upstream):
    t0 = time.monotonic()
    proxy.burst(0.5)
    during: list[httpx.Response] = []
    while True:
        r = client.get("/v2/")
        if r.status_code != 429:
            break
        during.append(r)
        assert time.monotonic() - t0 < 10, "the burst did not end"
        time.sleep(0.02)          # the polling interval
    assert r.status_code == 200 and time.monotonic() - t0 >= 0.5
    assert during and all(x.headers["retry-after"] == "2" for x in during)
    assert not proxy.bursting
    assert len(upstream.requests()) == 1
    assert proxy.stats()["by_reason"] == {"burst": len(during)}


def test_dead_answers_503_always_or_resets(proxy, client, upstream):
    proxy.dead = True
    assert [client.get(path).status_code for path in ("/v2/", "/v2/r/blobs/big", "/v2/r/blobs/tiny")] == [503] * 3
    assert client.put("/v2/r/blobs/uploads/u", content=b"abc").status_code == 503
    proxy.dead_kind = "reset"
    for _ in range(3):
        with pytest.raises(httpx.TransportError):
            client.get("/v2/")
    assert upstream.requests() == []
    proxy.dead = False
    assert client.get("/v2/").status_code == 200
    stats = proxy.stats()
    assert stats["faults"]["503"] == 4 and stats["faults"]["reset"] == 3 and stats["by_reason"] == {"dead": 7}


def test_pause_faults_turns_every_fault_off_for_the_block(upstream):
    with FaultProxy(upstream.url, seed=0, rate=1.0, kinds=("503",)) as p, httpx.Client(timeout=15) as c:
        assert c.get(f"{p.url}/v2/").status_code == 503
        with p.pause_faults():
            with p.pause_faults():
                assert c.get(f"{p.url}/v2/").status_code == 200
            p.dead = True
            p.burst(30)
            assert c.get(f"{p.url}/v2/").status_code == 200
        assert c.get(f"{p.url}/v2/").status_code == 503
        assert p.records()[-1].reason == "dead"


# --------------------------------------------------------------------------- observability


def test_stats_count_requests_faults_and_user_agents(upstream):
    agents = {
        "pipeline": "pipeline",
        "docker/26.1.5 go/go1.22.2 git-commit/411e817 kernel/6.1 os/linux arch/amd64 "
        "UpstreamClient(Docker-Client/26.1.5 \\(linux\\))": "docker",
        "buildkit/v0.13.2": "buildkit",
        "docker/26.1.5 go/go1.22 UpstreamClient(buildkit/v0.13.2)": "buildkit",
        "cosign/v2.2.4 (linux; amd64) go-containerregistry/v0.19.1": "cosign",
        "trivy/0.50.1 go-containerregistry/v0.19.1": "trivy",
        "Go-http-client/1.1": "Go-http-client",
        "skopeo/1.9.3": "skopeo",
        "weird-tool/3": "weird-tool",
        "": "-",
    }
    for ua, family in agents.items():
        assert agent_of(ua) == family
    with FaultProxy(upstream.url, seed=11, rate=0.5, kinds=("429", "503")) as p, httpx.Client(timeout=15) as c:
        got = [c.get(f"{p.url}/v2/", headers={"User-Agent": ua}).status_code for ua in agents for _ in range(2)]
        stats, records = p.stats(), p.records()
    assert stats["requests"] == 2 * len(agents) == len(records)
    assert stats["faults"] == {**dict.fromkeys(ALL_KINDS, 0), "429": got.count(429), "503": got.count(503)}
    assert stats["statuses"] == {str(s): n for s, n in Counter(got).items()}
    assert stats["by_agent"] == {"pipeline": 2, "docker": 2, "buildkit": 4, "cosign": 2, "trivy": 2,
                                 "Go-http-client": 2, "skopeo": 2, "weird-tool": 2, "-": 2}
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    assert [r.status for r in records] == got
    assert all(r.method == "GET" and r.path == "/v2/" and r.time > 0 for r in records)
    assert [r.fault for r in records] == [None if s == 200 else str(s) for s in got]


def test_on_request_fires_before_the_decision_and_a_raising_hook_is_harmless(proxy, client, upstream):
    seen: list[tuple[str, str, list[str]]] = []

    @proxy.on_request
    def log(method: str, path: str, headers: Any) -> None:
        seen.append((method, path, headers.get_all("Accept") or []))

    @proxy.on_request
    def explode(method: str, path: str, headers: Any) -> None:
        raise RuntimeError("a broken test hook")

    @proxy.on_request
    def kill_on_first_put(method: str, path: str, headers: Any) -> None:
        if method == "PUT" and "/blobs/uploads/" in path:
            proxy.dead = True          # acts on this very request: the hook runs before the decision

    assert client.get("/v2/", headers=[("Accept", "a/b"), ("Accept", "c/d")]).status_code == 200
    assert client.put("/v2/r/blobs/uploads/u-1?digest=x", content=b"data").status_code == 503
    assert seen == [("GET", "/v2/", ["a/b", "c/d"]), ("PUT", "/v2/r/blobs/uploads/u-1?digest=x", ["*/*"])]
    assert [s.method for s in upstream.requests()] == ["GET"]
    stats = proxy.stats()
    assert stats["hook_errors"] == 2 and stats["requests"] == 2
    proxy.remove_hook(explode)
    proxy.dead = False
    client.get("/v2/")
    assert proxy.stats()["hook_errors"] == 2    # explode is gone


# --------------------------------------------------------------------------- life cycle, CLI


def test_stop_interrupts_a_stall_and_frees_the_port(upstream):
    p = FaultProxy(upstream.url, seed=0, rate=1.0, kinds=("stall",), stall_seconds=60).start()
    port = p.port
    arrived = threading.Event()
    p.on_request(lambda *_: arrived.set())
    outcome: dict[str, BaseException] = {}

    def call() -> None:
        try:
            httpx.get(f"{p.url}/v2/", timeout=30)
        except httpx.TransportError as exc:
            outcome["error"] = exc

    t = threading.Thread(target=call)
    t.start()
    assert arrived.wait(10)
    t0 = time.monotonic()
    p.stop()
    t.join(10)
    assert not t.is_alive() and "error" in outcome and time.monotonic() - t0 < 10
    assert upstream.requests() == []
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=5)
    p.stop()                                   # idempotent


def test_the_cli_serves_and_prints_stats_on_sigterm(upstream):
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.faultproxy", "--upstream", upstream.url,
                             "--rate", "0", "--seed", "1"], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        url = banner.split()[1]
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(f"{url}/v2/", timeout=15).json() == {}
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert json.loads(out)["requests"] == 1


# --------------------------------------------------------------------------- the real registry


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def real_registry(tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("docker-registry") or ("/usr/bin/docker-registry"
                                                 if os.access("/usr/bin/docker-registry", os.X_OK) else None)
    if binary is None:
        if os.environ.get("CI") or os.environ.get("PIPELINE_REQUIRE_TOOLS"):
            pytest.fail("docker-registry is missing (apt-get install -y docker-registry); "
                        "CI and PIPELINE_REQUIRE_TOOLS require it", pytrace=False)
        pytest.skip("docker-registry missing (the distribution registry; CI fails here instead)")
    port = _free_port()
    config = {"version": "0.1", "log": {"level": "warn", "accesslog": {"disabled": True}},
              "storage": {"filesystem": {"rootdirectory": str(tmp_path / "data")}},
              "http": {"addr": f"127.0.0.1:{port}", "secret": os.urandom(16).hex()}}
    cfg = tmp_path / "config.yml"
    cfg.write_text(json.dumps(config, indent=2))        # JSON is YAML
    log = tmp_path / "registry.log"
    with log.open("wb") as out:
        process = subprocess.Popen([binary, "serve", str(cfg)], stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    host = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, f"docker-registry exited: {log.read_text()[-2000:]}"
            try:
                if httpx.get(f"http://{host}/v2/", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"docker-registry did not answer on {host} within 30s"
            time.sleep(0.05)          # the polling interval
        yield f"http://{host}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def with_digest(location: str, digest: str) -> str:
    """The upload URL plus ``digest=`` (httpx's ``params=`` would replace the ``_state`` query)."""
    return f"{location}{'&' if '?' in location else '?'}digest={digest}"


OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


@pytest.mark.integration
def test_the_real_registry_behind_the_proxy_pushes_and_pulls_byte_exactly(real_registry):
    blob = os.urandom(5 * MiB + 123)
    digest = f"sha256:{sha(blob)}"
    repo = "/v2/team/app"
    with FaultProxy(real_registry, seed=0) as p, httpx.Client(base_url=p.url, timeout=60) as c:
        assert c.get("/v2/").status_code == 200

        # monolithic: POST, then PUT the whole blob with ?digest=
        start = c.post(f"{repo}/blobs/uploads/")
        assert start.status_code == 202
        where = start.headers["location"]
        assert where.startswith(f"{p.url}/") and real_registry not in where   # upload URLs name the proxy
        put = c.put(with_digest(where, digest), content=blob,
                    headers={"Content-Type": "application/octet-stream"})
        assert put.status_code == 201, put.text
        assert put.headers["docker-content-digest"] == digest

        # chunked upload: POST, PATCH with a Content-Length, PATCH with Transfer-Encoding: chunked, PUT
        other = os.urandom(3 * MiB + 7)
        other_digest = f"sha256:{sha(other)}"
        where = c.post(f"{repo}/blobs/uploads/").headers["location"]
        first = c.patch(where, content=other[:MiB], headers={"Content-Type": "application/octet-stream",
                                                            "Content-Range": f"0-{MiB - 1}"})
        assert first.status_code == 202, first.text
        assert first.headers["range"] == f"0-{MiB - 1}" and first.headers["location"].startswith(p.url)

        def rest() -> Iterator[bytes]:
            for i in range(MiB, len(other), 256 * 1024):
                yield other[i:i + 256 * 1024]

        second = c.patch(first.headers["location"], content=rest(),
                         headers={"Content-Type": "application/octet-stream"})
        assert second.status_code == 202, second.text
        assert second.headers["range"] == f"0-{len(other) - 1}"
        done = c.put(with_digest(second.headers["location"], other_digest))
        assert done.status_code == 201, done.text

        # pull both back through the proxy, byte-exactly
        for d, data in ((digest, blob), (other_digest, other)):
            head = c.head(f"{repo}/blobs/{d}")
            assert head.status_code == 200 and head.headers["content-length"] == str(len(data))
            got = c.get(f"{repo}/blobs/{d}")
            assert got.status_code == 200 and sha(got.content) == sha(data)

        # an OCI index, read with several Accept lines (a dict-keeping proxy makes this fail)
        config = b"{}"
        where = c.post(f"{repo}/blobs/uploads/").headers["location"]
        assert c.put(with_digest(where, f"sha256:{sha(config)}"), content=config).status_code == 201
        manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                               "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                          "digest": f"sha256:{sha(config)}", "size": len(config)},
                               "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                                           "digest": digest, "size": len(blob)}]}).encode()
        r = c.put(f"{repo}/manifests/sha256:{sha(manifest)}", content=manifest,
                  headers={"Content-Type": OCI_MANIFEST})
        assert r.status_code == 201, r.text
        index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": f"sha256:{sha(manifest)}", "size": len(manifest),
             "platform": {"architecture": "amd64", "os": "linux"}}]}).encode()
        r = c.put(f"{repo}/manifests/v1", content=index, headers={"Content-Type": OCI_INDEX})
        assert r.status_code == 201, r.text
        got = c.get(f"{repo}/manifests/v1", headers=[("Accept", DOCKER_MANIFEST), ("Accept", OCI_INDEX),
                                                      ("Accept", OCI_MANIFEST)])
        assert got.status_code == 200, got.text
        assert got.headers["content-type"] == OCI_INDEX and got.content == index
        stats = p.stats()
    assert stats["faults"] == dict.fromkeys(ALL_KINDS, 0) and stats["upstream_errors"] == 0
    assert set(stats["statuses"]) <= {"200", "201", "202"}
