"""An in-memory OCI distribution registry behind an httpx MockTransport, for unit tests.

It speaks the distribution API closely enough to catch ordering, auth and digest bugs: it
enforces Basic or Bearer auth with scopes, checks that a manifest's blobs and children exist
before it is put, verifies upload digests and Content-Range offsets, answers upload-status
GETs and ranged blob GETs, paginates with Link headers, and can be told to fail.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import httpx

from pipeline.retry import RetryPolicy
from pipeline.tools.registry import Credentials, Registry, digest_of

HOST = "reg.test"
REALM = "https://auth.test/token"
USER = "alice"
PASSWORD = "pw-" + secrets.token_hex(8)  # unique per run: any occurrence in output is a leak
FAST = RetryPolicy(attempts=3, initial_seconds=0.001, max_seconds=0.002, max_retry_after_seconds=60)


# --------------------------------------------------------------------------- the fake registry


class FakeRegistry:
    """An in-memory distribution registry. ``auth``: none | basic | bearer."""

    def __init__(self, *, auth: str = "none", user: str = USER, password: str = PASSWORD, host: str = HOST,
                 anonymous_pull: bool = False, delete: bool = True, mount: bool = True, token_ttl: int = 300,
                 chunk_min: int = 0, chunked: bool = True, ranges: bool = True, referrers_api: bool = False) -> None:
        self.auth, self.user, self.password, self.host = auth, user, password, host
        self.anonymous_pull, self.delete, self.mount, self.token_ttl = anonymous_pull, delete, mount, token_ttl
        self.chunk_min = chunk_min
        self.chunked, self.ranges = chunked, ranges   # PATCH uploads accepted; blob GETs honour Range
        self.referrers_api = referrers_api            # GET /v2/<name>/referrers/<digest> (OCI 1.1)
        self.blobs: dict[str, dict[str, bytes]] = {}
        self.manifests: dict[str, dict[str, tuple[bytes, str]]] = {}
        self.tag_map: dict[str, dict[str, str]] = {}
        self.uploads: dict[str, tuple[str, bytearray]] = {}
        self.log: list[tuple[str, str, int]] = []  # method, path?query, status
        self.bodies: list[tuple[str, str, httpx.Headers, bytes]] = []
        self.token_requests: list[tuple[list[tuple[str, str]], str | None]] = []
        self.tokens: dict[str, set[str]] = {}  # token → granted "repo:action"
        self.failures: list[tuple[str, str, Callable[[httpx.Request], httpx.Response]]] = []
        self.issued: list[str] = []
        self.on_upload_start: Callable[[], None] | None = None
        self.lost: list[tuple[str, str]] = []

    # ---- test controls

    def fail(self, method: str, path_re: str, response: Callable[[httpx.Request], httpx.Response] | httpx.Response,
             times: int = 1) -> None:
        factory = response if callable(response) else (lambda _req, r=response: r)
        for _ in range(times):
            self.failures.append((method, path_re, factory))

    def lose_answer(self, method: str, path_re: str, times: int = 1) -> None:
        """The request is carried out, then the connection drops before the answer (as a reset after
        the registry committed): the client must find out what happened."""
        for _ in range(times):
            self.lost.append((method, path_re))

    def seed_blob(self, repo: str, data: bytes) -> str:
        d = digest_of(data)
        self.blobs.setdefault(repo, {})[d] = data
        return d

    def requests(self, method: str | None = None, contains: str = "") -> list[tuple[str, str, int]]:
        return [e for e in self.log if (method is None or e[0] == method) and contains in e[1]]

    # ---- transport entry

    def __call__(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.host == "auth.test":
            return self._token(request)
        assert url.host == self.host, url
        path = url.path
        target = path + ("?" + url.query.decode() if url.query else "")
        for i, (method, path_re, factory) in enumerate(self.failures):
            if method == request.method and re.search(path_re, target):
                del self.failures[i]
                response = factory(request)
                self.log.append((request.method, target, response.status_code))
                return response
        response = self._route(request, path)
        self.log.append((request.method, target, response.status_code))
        for i, (method, path_re) in enumerate(self.lost):
            if method == request.method and re.search(path_re, target):
                del self.lost[i]
                raise httpx.RemoteProtocolError("peer closed connection without sending a response", request=request)
        return response

    # ---- auth

    def _token(self, request: httpx.Request) -> httpx.Response:
        params = list(parse_qs(request.url.query.decode(), keep_blank_values=True).items())
        flat = [(k, v) for k, vs in params for v in vs]
        auth = request.headers.get("Authorization")
        self.token_requests.append((flat, auth))
        authed = auth == _basic(self.user, self.password)
        if auth and not authed:
            return httpx.Response(401, json={"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]})
        granted: set[str] = set()
        for key, value in flat:
            if key != "scope":
                continue
            _kind, _, rest = value.partition(":")
            name, _, actions = rest.rpartition(":")
            for action in actions.split(","):
                if authed or (self.anonymous_pull and action == "pull"):
                    granted.add(f"{name}:{action}")
        token = "tok-" + secrets.token_hex(12)
        self.tokens[token] = granted
        self.issued.append(token)
        return httpx.Response(200, json={"token": token, "expires_in": self.token_ttl})

    def _needs(self, request: httpx.Request, path: str) -> set[str]:
        if path == "/v2/":
            return set()
        if path == "/v2/_catalog":
            return {"catalog:*"}
        m = re.match(r"^/v2/(.+)/(manifests|blobs|tags|referrers)/", path)
        assert m, path
        name = m.group(1)
        if request.method in ("GET", "HEAD"):
            out = {f"{name}:pull"}
        elif request.method == "DELETE" and m.group(2) == "manifests":
            out = {f"{name}:delete"}
        else:
            out = {f"{name}:push", f"{name}:pull"}
        mount_from = request.url.params.get("from")
        if mount_from:
            out.add(f"{mount_from}:pull")
        return out

    def _challenge(self, needs: set[str], error: str = "") -> httpx.Response:
        if self.auth == "basic":
            header = 'Basic realm="fake"'
        else:
            header = f'Bearer realm="{REALM}",service="{self.host}"'
            if error:
                header += f',error="{error}"'
        return httpx.Response(401, headers={"WWW-Authenticate": header},
                              json={"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]})

    def _authorized(self, request: httpx.Request, path: str) -> httpx.Response | None:
        if self.auth == "none":
            return None
        header = request.headers.get("Authorization")
        needs = self._needs(request, path)
        if self.auth == "basic":
            return None if header == _basic(self.user, self.password) else self._challenge(needs)
        if not header or not header.startswith("Bearer "):
            return self._challenge(needs)
        granted = self.tokens.get(header[7:])
        if granted is None:
            return self._challenge(needs, "invalid_token")
        if not needs <= granted:
            return self._challenge(needs, "insufficient_scope")
        return None

    # ---- API

    def _route(self, request: httpx.Request, path: str) -> httpx.Response:
        denied = self._authorized(request, path)
        if denied is not None:
            return denied
        if path == "/v2/":
            return httpx.Response(200, json={})
        if path == "/v2/_catalog":
            return self._page(request, sorted(set(self.blobs) | set(self.manifests)), "repositories", path)
        m = re.match(r"^/v2/(.+)/(manifests|blobs|tags|referrers)/(.*)$", path)
        assert m, path
        name, kind, rest = m.groups()
        if kind == "referrers":
            if not self.referrers_api:
                return _error(404, "NOT_FOUND")
            entries = []
            for digest, (body, media) in self.manifests.get(name, {}).items():
                doc = json.loads(body)
                if (doc.get("subject") or {}).get("digest") == rest:
                    entries.append({"mediaType": media, "digest": digest, "size": len(body),
                                    "artifactType": doc.get("artifactType") or doc["config"]["mediaType"],
                                    "annotations": doc.get("annotations") or {}})
            return httpx.Response(200, json={"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                                             "manifests": entries},
                                  headers={"Content-Type": "application/vnd.oci.image.index.v1+json"})
        if kind == "tags":
            if name not in self.manifests:
                return _error(404, "NAME_UNKNOWN")
            return self._page(request, sorted(self.tag_map.get(name, {})), "tags", path, name=name)
        if kind == "manifests":
            return self._manifest(request, name, rest)
        if rest.startswith("uploads/"):
            return self._upload(request, name, rest[len("uploads/"):])
        return self._blob(request, name, rest)

    def _page(self, request: httpx.Request, items: list[str], key: str, path: str,
              name: str | None = None) -> httpx.Response:
        n = int(request.url.params.get("n") or 0)
        last = request.url.params.get("last")
        if last:
            items = [i for i in items if i > last]
        headers = {}
        if n and len(items) > n:
            items = items[:n]
            headers["Link"] = f'<{path}?n={n}&last={items[-1]}>; rel="next"'
        body: dict[str, Any] = {key: items}
        if name:
            body["name"] = name
        return httpx.Response(200, json=body, headers=headers)

    def _manifest(self, request: httpx.Request, name: str, ref: str) -> httpx.Response:
        store = self.manifests.setdefault(name, {})
        tags = self.tag_map.setdefault(name, {})
        if request.method in ("GET", "HEAD"):
            digest = tags.get(ref, ref)
            if digest not in store:
                return _error(404, "MANIFEST_UNKNOWN")
            body, media = store[digest]
            headers = {"Docker-Content-Digest": digest, "Content-Type": media, "Content-Length": str(len(body))}
            return httpx.Response(200, headers=headers, content=b"" if request.method == "HEAD" else body)
        if request.method == "PUT":
            body = request.read()
            digest = digest_of(body)
            if ref.startswith("sha256:") and ref != digest:
                return _error(400, "DIGEST_INVALID")
            manifest = json.loads(body)
            for child in manifest.get("manifests") or []:
                if child["digest"] not in store:
                    return _error(400, "MANIFEST_BLOB_UNKNOWN")
            for blob in [manifest.get("config")] + (manifest.get("layers") or []):
                if blob and blob["digest"] not in self.blobs.get(name, {}):
                    return _error(400, "MANIFEST_BLOB_UNKNOWN")
            store[digest] = (body, request.headers["Content-Type"])
            if not ref.startswith("sha256:"):
                tags[ref] = digest
            return httpx.Response(201, headers={"Docker-Content-Digest": digest,
                                                "Location": f"/v2/{name}/manifests/{digest}"})
        if request.method == "DELETE":
            if not self.delete:
                return _error(405, "UNSUPPORTED")
            if ref not in store:
                return _error(404, "MANIFEST_UNKNOWN")
            del store[ref]
            for t in [t for t, d in tags.items() if d == ref]:
                del tags[t]
            return httpx.Response(202)
        return _error(405, "UNSUPPORTED")

    def _blob(self, request: httpx.Request, name: str, digest: str) -> httpx.Response:
        data = self.blobs.get(name, {}).get(digest)
        if data is None:
            return _error(404, "BLOB_UNKNOWN")
        ranged = re.match(r"^bytes=(\d+)-$", request.headers.get("Range", ""))
        if ranged and request.method == "GET" and self.ranges:
            start = int(ranged.group(1))
            part = data[start:]
            return httpx.Response(206, content=part, headers={
                "Docker-Content-Digest": digest, "Content-Length": str(len(part)),
                "Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"})
        headers = {"Docker-Content-Digest": digest, "Content-Length": str(len(data))}
        return httpx.Response(200, headers=headers, content=b"" if request.method == "HEAD" else data)

    def _upload(self, request: httpx.Request, name: str, rest: str) -> httpx.Response:
        if request.method == "POST" and rest == "":
            if self.on_upload_start:
                self.on_upload_start()
            mount, source = request.url.params.get("mount"), request.url.params.get("from")
            if mount and self.mount and mount in self.blobs.get(source or "", {}):
                self.blobs.setdefault(name, {})[mount] = self.blobs[source][mount]
                return httpx.Response(201, headers={"Location": f"/v2/{name}/blobs/{mount}",
                                                    "Docker-Content-Digest": mount})
            uid = str(uuid.uuid4())
            self.uploads[uid] = (name, bytearray())
            headers = {"Location": f"/v2/{name}/blobs/uploads/{uid}?_state=s0", "Range": "0-0",
                       "Docker-Upload-UUID": uid}
            if self.chunk_min:
                headers["OCI-Chunk-Min-Length"] = str(self.chunk_min)
            return httpx.Response(202, headers=headers)
        uid = rest
        if uid not in self.uploads:
            return _error(404, "BLOB_UPLOAD_UNKNOWN")
        repo, buf = self.uploads[uid]
        if request.method == "DELETE":
            del self.uploads[uid]
            return httpx.Response(204)
        if request.method == "GET":   # upload status: where the session stands
            return httpx.Response(204, headers={"Location": f"/v2/{repo}/blobs/uploads/{uid}?_state=s{len(buf)}",
                                                "Range": f"0-{len(buf) - 1}", "Docker-Upload-UUID": uid})
        if request.method == "PATCH" and not self.chunked:
            return _error(405, "UNSUPPORTED")
        body = request.read()
        self.bodies.append((request.method, str(request.url), request.headers, body))
        if request.method == "PATCH":
            start, _, end = request.headers.get("Content-Range", "").partition("-")
            if int(start) != len(buf) or int(end) != len(buf) + len(body) - 1:
                return _error(416, "BLOB_UPLOAD_INVALID")
            buf += body
            return httpx.Response(202, headers={"Location": f"/v2/{repo}/blobs/uploads/{uid}?_state=s{len(buf)}",
                                                "Range": f"0-{len(buf) - 1}"})
        if request.method == "PUT":
            buf += body
            digest = request.url.params.get("digest")
            if digest != digest_of(bytes(buf)):
                return _error(400, "DIGEST_INVALID")
            self.blobs.setdefault(repo, {})[digest] = bytes(buf)
            del self.uploads[uid]
            return httpx.Response(201, headers={"Docker-Content-Digest": digest,
                                                "Location": f"/v2/{repo}/blobs/{digest}"})
        return _error(405, "UNSUPPORTED")


class LazyTransport(httpx.MockTransport):
    """MockTransport that does not read the request body first (so streaming is observable)."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self.handler(request)  # type: ignore[attr-defined,return-value]


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _error(status: int, code: str) -> httpx.Response:
    return httpx.Response(status, json={"errors": [{"code": code, "message": code.lower().replace("_", " ")}]})


def client(fake: FakeRegistry | Callable[[httpx.Request], httpx.Response], *, credentials: Credentials | None = None,
           policy: RetryPolicy = FAST, **kw: Any) -> Registry:
    return Registry(HOST, name="fake", credentials=credentials, policy=policy, transport=LazyTransport(fake), **kw)


