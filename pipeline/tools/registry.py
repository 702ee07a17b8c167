"""OCI distribution client on httpx: one small function per registry verb.

Credentials come from the docker config (``auths``, ``credsStore``,
``credHelpers`` via ``docker-credential-*``) or from named environment
variables. Basic and Bearer-token challenges are answered as the distribution
spec describes. Blobs are streamed, never held whole in memory. Every call runs
under the one retry policy; errors are :class:`RegistryError` and say whether
they are temporary.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx

from pipeline import log, retry
from pipeline.errors import InfraError
from pipeline.tools import proc

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST)
ACCEPT = ", ".join(MANIFEST_TYPES)
CHUNK = 1 << 20
DOCKER_HUB_HOSTS = {"docker.io", "index.docker.io", "registry-1.docker.io"}


class RegistryError(InfraError):
    """A registry said no, or could not be reached. ``temporary`` drives the retry policy."""

    def __init__(self, registry: str, message: str, *, status: int | None = None, code: str | None = None,
                 temporary: bool = False, retry_after: float | None = None) -> None:
        super().__init__(f"registry {registry}: {message}")
        self.registry = registry
        self.status = status
        self.code = code
        self.temporary = temporary
        self.retry_after = retry_after


class NotFound(RegistryError):
    pass


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def __post_init__(self) -> None:
        log.register_secret(self.password)

    def __repr__(self) -> str:  # never show the secret, even in a debugger
        return f"Credentials(username={self.username!r}, password='***')"


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int


# --------------------------------------------------------------------------- credentials


def docker_config_dir(env: Mapping[str, str]) -> Path:
    return Path(env.get("DOCKER_CONFIG") or Path(env.get("HOME") or Path.home()) / ".docker")


def _auth_keys(host: str) -> list[str]:
    if host in DOCKER_HUB_HOSTS:
        return ["https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io"]
    return [host, f"https://{host}", f"http://{host}", f"https://{host}/v1/", f"https://{host}/v2/"]


def _from_helper(helper: str, host: str) -> Credentials | None:
    result = proc.run([f"docker-credential-{helper}", "get"], input=host, check=False,
                      what=f"credential helper {helper} for {host}", timeout=60)
    if result.returncode != 0:
        return None
    try:
        data = json.loads(result.stdout)
    except json.JSONDecodeError:
        return None
    if data.get("Username") == "<token>":
        return None  # identity tokens need an OAuth exchange; treat as anonymous
    return Credentials(data.get("Username", ""), data.get("Secret", ""))


def credentials_from_docker_config(host: str, env: Mapping[str, str]) -> Credentials | None:
    """Look ``host`` up in the docker config the way the docker CLI does."""
    path = docker_config_dir(env) / "config.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    keys = _auth_keys(host)
    helpers = data.get("credHelpers") or {}
    for key in keys:
        if key in helpers:
            return _from_helper(helpers[key], key)
    auths = data.get("auths") or {}
    for key in keys:
        entry = auths.get(key)
        if entry and entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                continue
            return Credentials(user, password)
    if data.get("credsStore"):
        for key in keys:
            found = _from_helper(data["credsStore"], key)
            if found:
                return found
    return None


def credentials_from_env(registry: str, username_env: str, password_env: str,
                         env: Mapping[str, str]) -> Credentials:
    user, password = env.get(username_env), env.get(password_env)
    if not user or not password:
        missing = username_env if not user else password_env
        raise RegistryError(registry, f"environment variable {missing} is not set (named by the config)")
    return Credentials(user, password)


# --------------------------------------------------------------------------- challenges


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="…",service="…",scope="…"`` → ("bearer", {...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
              for m in re.finditer(r'(\w+)=(?:"([^"]*)"|([^,\s]*))', rest)}
    return scheme.lower(), params


def _error_detail(response: httpx.Response) -> tuple[str | None, str]:
    try:
        errors = response.json().get("errors") or []
    except (ValueError, AttributeError):
        errors = []
    if errors and isinstance(errors, list) and isinstance(errors[0], dict):
        return errors[0].get("code"), str(errors[0].get("message") or errors[0].get("code") or "")
    return None, response.reason_phrase or f"HTTP {response.status_code}"


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value and value.strip().isdigit():
        return float(value)
    return None


# --------------------------------------------------------------------------- the client


class Registry:
    """One registry host. Thread-safe enough for parallel copies (tokens cached per scope)."""

    def __init__(self, host: str, *, name: str | None = None, insecure: bool = False,
                 credentials: Credentials | None = None, policy: retry.RetryPolicy | None = None,
                 timeout: float = 60.0, transport: httpx.BaseTransport | None = None) -> None:
        self.host = "registry-1.docker.io" if host in ("docker.io", "index.docker.io") else host
        self.name = name or host
        self.insecure = insecure
        self.credentials = credentials
        self.policy = policy or retry.RetryPolicy()
        self._scheme: str | None = None if insecure else "https"
        self._tokens: dict[str, str] = {}
        self._basic = False
        self._lock = threading.Lock()
        self.client = httpx.Client(timeout=httpx.Timeout(timeout, connect=10.0), follow_redirects=True,
                                   transport=transport, headers={"User-Agent": "pipeline"})
        self.counters: dict[str, int] = {"blob_uploads": 0, "blob_mounts": 0, "blob_skips": 0,
                                         "manifest_puts": 0}

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- transport

    @property
    def base(self) -> str:
        if self._scheme is None:
            self._scheme = self._probe_scheme()
        return f"{self._scheme}://{self.host}"

    def _probe_scheme(self) -> str:
        """Insecure registries: HTTPS when it answers, else plain HTTP (docker's behaviour)."""
        try:
            self.client.get(f"https://{self.host}/v2/", timeout=3.0)
            return "https"
        except httpx.HTTPError:
            return "http"

    def _auth_header(self, scope: str) -> dict[str, str]:
        with self._lock:
            token = self._tokens.get(scope)
        if token:
            return {"Authorization": f"Bearer {token}"}
        if self._basic and self.credentials:
            raw = f"{self.credentials.username}:{self.credentials.password}".encode()
            return {"Authorization": "Basic " + base64.b64encode(raw).decode()}
        return {}

    def _fetch_token(self, params: dict[str, str], scope: str) -> str:
        realm = params.get("realm")
        if not realm:
            raise RegistryError(self.name, "Bearer challenge without a realm")
        query: list[tuple[str, str]] = []
        if params.get("service"):
            query.append(("service", params["service"]))
        for s in scope.split(" "):
            if s:
                query.append(("scope", s))
        auth = (self.credentials.username, self.credentials.password) if self.credentials else None
        try:
            r = self.client.get(realm, params=query, auth=auth)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        if r.status_code in (401, 403):
            raise RegistryError(self.name, "authentication failed: the token service refused the credentials"
                                " (check the username/password or token for this registry)", status=r.status_code)
        if r.status_code >= 400:
            raise self._status_error(r, "token request")
        data = r.json()
        token = data.get("token") or data.get("access_token")
        if not token:
            raise RegistryError(self.name, "token service answered without a token")
        log.register_secret(token)
        with self._lock:
            self._tokens[scope] = token
        return token

    def _transport_error(self, exc: httpx.HTTPError) -> RegistryError:
        kind = type(exc).__name__
        if isinstance(exc, httpx.ConnectError):
            return RegistryError(self.name, f"cannot connect to {self.host} ({log.scrub(str(exc)) or kind})",
                                 temporary=True)
        if isinstance(exc, httpx.TimeoutException):
            return RegistryError(self.name, f"{self.host} timed out ({kind})", temporary=True)
        return RegistryError(self.name, f"connection to {self.host} failed ({kind})", temporary=True)

    def _status_error(self, r: httpx.Response, what: str) -> RegistryError:
        code, message = _error_detail(r)
        status = r.status_code
        if status == 404:
            return NotFound(self.name, f"{what}: not found ({code or 'NOT_FOUND'})", status=status, code=code)
        if status in (401, 403):
            return RegistryError(self.name, f"{what}: access denied ({code or status}); check the credentials"
                                 " and that they may push/pull this repository", status=status, code=code)
        if status == 429:
            return RegistryError(self.name, f"{what}: rate limited (429 TOOMANYREQUESTS)", status=status,
                                 code=code, temporary=True, retry_after=_retry_after(r))
        if status >= 500:
            return RegistryError(self.name, f"{what}: server error {status} {message}", status=status, code=code,
                                 temporary=True, retry_after=_retry_after(r))
        return RegistryError(self.name, f"{what}: {status} {code or ''} {message}".strip(), status=status, code=code)

    def request(self, method: str, path: str, *, scope: str = "", what: str = "", ok: tuple[int, ...] = (),
                stream: bool = False, **kwargs: Any) -> httpx.Response:
        """One request with the auth dance; no retry here (callers wrap verbs in the policy)."""
        url = path if path.startswith("http") else self.base + path
        for attempt in range(2):
            headers = dict(kwargs.pop("headers", {}) or {})
            headers.update(self._auth_header(scope))
            try:
                req = self.client.build_request(method, url, headers=headers, **kwargs)
                r = self.client.send(req, stream=stream)
            except httpx.HTTPError as exc:
                raise self._transport_error(exc) from None
            kwargs["headers"] = {k: v for k, v in headers.items() if k != "Authorization"}
            if r.status_code == 401 and attempt == 0 and "content" not in kwargs or (
                    r.status_code == 401 and attempt == 0 and isinstance(kwargs.get("content"), (bytes, str))):
                challenge = r.headers.get("WWW-Authenticate", "")
                if stream:
                    r.close()
                scheme, params = parse_challenge(challenge)
                if scheme == "bearer":
                    self._fetch_token(params, scope or params.get("scope", ""))
                    continue
                if scheme == "basic":
                    if not self.credentials:
                        raise RegistryError(self.name, "authentication required and no credentials configured"
                                            " (docker login, or username_env/password_env in the config)",
                                            status=401)
                    if self._basic:
                        break
                    self._basic = True
                    continue
            if r.status_code < 400 or r.status_code in ok:
                return r
            if stream:
                r.read()
                r.close()
            if r.status_code == 401:
                raise RegistryError(self.name, f"{what or method}: authentication failed (wrong username or"
                                    " password?)", status=401)
            raise self._status_error(r, what or f"{method} {path}")
        raise RegistryError(self.name, f"{what or method}: authentication failed (wrong username or password?)",
                            status=401)

    def _retrying(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return retry.call(self.policy, fn, *args, **kwargs)

    # ---- verbs

    def ping(self) -> None:
        """Check the registry answers and the credentials work (a pull-scoped token where tokens are used)."""
        def go() -> None:
            self.request("GET", "/v2/", what="ping")
        self._retrying(go)

    def manifest_head(self, repo: str, reference: str) -> Descriptor | None:
        def go() -> Descriptor | None:
            r = self.request("HEAD", f"/v2/{repo}/manifests/{reference}", scope=f"repository:{repo}:pull",
                             headers={"Accept": ACCEPT}, ok=(404,), what=f"HEAD {repo}:{reference}")
            if r.status_code == 404:
                return None
            digest = r.headers.get("Docker-Content-Digest", "")
            media = r.headers.get("Content-Type", "").split(";")[0]
            if not digest:  # some registries omit it on HEAD: fall back to GET
                _, media, digest = self.manifest_get(repo, reference)
            return Descriptor(media, digest, int(r.headers.get("Content-Length") or 0))
        return self._retrying(go)

    def manifest_get(self, repo: str, reference: str) -> tuple[bytes, str, str]:
        """(body, media type, digest). The digest is computed from the bytes, and checked when by digest."""
        def go() -> tuple[bytes, str, str]:
            r = self.request("GET", f"/v2/{repo}/manifests/{reference}", scope=f"repository:{repo}:pull",
                             headers={"Accept": ACCEPT}, what=f"manifest {repo}:{reference}")
            body = r.content
            digest = "sha256:" + hashlib.sha256(body).hexdigest()
            if reference.startswith("sha256:") and digest != reference:
                raise RegistryError(self.name, f"manifest {repo}@{reference}: content does not match its digest")
            media = r.headers.get("Content-Type", "").split(";")[0]
            if media not in MANIFEST_TYPES:
                media = json.loads(body).get("mediaType") or media
            return body, media, digest
        return self._retrying(go)

    def manifest_put(self, repo: str, reference: str, body: bytes, media_type: str) -> str:
        def go() -> str:
            r = self.request("PUT", f"/v2/{repo}/manifests/{reference}", scope=f"repository:{repo}:pull,push",
                             headers={"Content-Type": media_type}, content=body,
                             what=f"PUT manifest {repo}:{reference}")
            self.counters["manifest_puts"] += 1
            return r.headers.get("Docker-Content-Digest") or "sha256:" + hashlib.sha256(body).hexdigest()
        return self._retrying(go)

    def manifest_delete(self, repo: str, digest: str) -> None:
        def go() -> None:
            r = self.request("DELETE", f"/v2/{repo}/manifests/{digest}", scope=f"repository:{repo}:delete,pull,push",
                             ok=(405,), what=f"DELETE {repo}@{digest}")
            if r.status_code == 405:
                raise RegistryError(self.name, f"DELETE {repo}@{digest}: this registry does not allow deletes"
                                    " (registry:2 needs storage.delete.enabled: true)", status=405,
                                    code="UNSUPPORTED")
        self._retrying(go)

    def blob_exists(self, repo: str, digest: str) -> bool:
        def go() -> bool:
            r = self.request("HEAD", f"/v2/{repo}/blobs/{digest}", scope=f"repository:{repo}:pull", ok=(404,),
                             what=f"HEAD blob {repo}@{digest[:19]}")
            return r.status_code == 200
        return self._retrying(go)

    @contextmanager
    def blob_stream(self, repo: str, digest: str) -> Iterator[httpx.Response]:
        r = self.request("GET", f"/v2/{repo}/blobs/{digest}", scope=f"repository:{repo}:pull", stream=True,
                         what=f"GET blob {repo}@{digest[:19]}")
        try:
            yield r
        finally:
            r.close()

    def blob_get(self, repo: str, digest: str) -> bytes:
        """Small blobs only (configs): the whole body, checked against its digest."""
        def go() -> bytes:
            with self.blob_stream(repo, digest) as r:
                data = r.read()
            if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
                raise RegistryError(self.name, f"blob {repo}@{digest[:19]}: content does not match its digest")
            return data
        return self._retrying(go)

    def blob_mount(self, repo: str, digest: str, from_repo: str) -> bool:
        """Cross-repository mount inside this registry. True when mounted (no upload needed)."""
        def go() -> bool:
            r = self.request("POST", f"/v2/{repo}/blobs/uploads/", params={"mount": digest, "from": from_repo},
                             scope=f"repository:{repo}:pull,push repository:{from_repo}:pull",
                             what=f"mount {digest[:19]} into {repo}")
            if r.status_code == 201:
                self.counters["blob_mounts"] += 1
                return True
            location = r.headers.get("Location")
            if location:  # the registry opened an upload instead: cancel it
                try:
                    self.request("DELETE", urljoin(self.base + "/", location), scope=f"repository:{repo}:pull,push",
                                 ok=(404, 405), what="cancel upload")
                except RegistryError:
                    pass
            return False
        return self._retrying(go)

    def _start_upload(self, repo: str) -> str:
        r = self.request("POST", f"/v2/{repo}/blobs/uploads/", scope=f"repository:{repo}:pull,push",
                         what=f"start upload to {repo}")
        location = r.headers.get("Location")
        if not location:
            raise RegistryError(self.name, f"upload to {repo}: no Location header")
        return urljoin(self.base + "/", location)

    def _with_digest(self, location: str, digest: str) -> str:
        return location + ("&" if "?" in location else "?") + f"digest={digest}"

    def blob_upload(self, repo: str, digest: str, chunks: Iterator[bytes] | bytes, size: int, *,
                    chunked: bool = False) -> None:
        """Upload one blob: monolithic streamed PUT (default) or PATCH chunks then PUT.

        Not retried here: a stream cannot be replayed, so callers retry the
        whole copy (see :func:`copy_blob`).
        """
        location = self._start_upload(repo)
        scope = f"repository:{repo}:pull,push"
        if isinstance(chunks, bytes):
            data = chunks
            chunks = iter([data[i:i + CHUNK] for i in range(0, len(data), CHUNK)] or [b""])
        if chunked:
            offset = 0
            for chunk in chunks:
                if not chunk:
                    continue
                r = self.request("PATCH", location, scope=scope, content=chunk, what=f"upload chunk to {repo}",
                                 headers={"Content-Type": "application/octet-stream",
                                          "Content-Range": f"{offset}-{offset + len(chunk) - 1}",
                                          "Content-Length": str(len(chunk))})
                offset += len(chunk)
                location = urljoin(self.base + "/", r.headers.get("Location") or location)
            self.request("PUT", self._with_digest(location, digest), scope=scope, content=b"",
                         what=f"finish upload to {repo}", headers={"Content-Length": "0"})
        else:
            self.request("PUT", self._with_digest(location, digest), scope=scope, content=chunks,
                         what=f"upload {digest[:19]} to {repo}",
                         headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)})
        self.counters["blob_uploads"] += 1

    def tags(self, repo: str, *, page_size: int = 1000) -> list[str]:
        """Every tag, following Link pagination."""
        def page(url: str) -> httpx.Response:
            return self.request("GET", url, scope=f"repository:{repo}:pull", ok=(404,), what=f"tags of {repo}")

        out: list[str] = []
        url: str | None = f"/v2/{repo}/tags/list?n={page_size}"
        while url:
            r = self._retrying(page, url)
            if r.status_code == 404:
                return out
            out.extend(r.json().get("tags") or [])
            link = r.headers.get("Link", "")
            m = re.search(r"<([^>]+)>\s*;\s*rel=\"?next\"?", link)
            url = urljoin(self.base + "/", m.group(1)) if m else None
        return out

    def catalog(self) -> list[str]:
        out: list[str] = []
        url: str | None = "/v2/_catalog?n=1000"
        while url:
            r = self._retrying(lambda u: self.request("GET", u, scope="registry:catalog:*", what="catalog"), url)
            out.extend(r.json().get("repositories") or [])
            m = re.search(r"<([^>]+)>\s*;\s*rel=\"?next\"?", r.headers.get("Link", ""))
            url = urljoin(self.base + "/", m.group(1)) if m else None
        return out


# --------------------------------------------------------------------------- copy verbs


def copy_blob(src: Registry, src_repo: str, dst: Registry, dst_repo: str, desc: Descriptor) -> str:
    """Copy one blob if the destination lacks it: 'present' | 'mounted' | 'uploaded'."""
    if dst.blob_exists(dst_repo, desc.digest):
        dst.counters["blob_skips"] += 1
        return "present"
    if src is dst and src_repo != dst_repo and dst.blob_mount(dst_repo, desc.digest, src_repo):
        return "mounted"

    def go() -> None:
        with src.blob_stream(src_repo, desc.digest) as r:
            hasher = hashlib.sha256()

            def chunks() -> Iterator[bytes]:
                for chunk in r.iter_bytes(CHUNK):
                    hasher.update(chunk)
                    yield chunk

            dst.blob_upload(dst_repo, desc.digest, chunks(), desc.size)
            if "sha256:" + hasher.hexdigest() != desc.digest:
                raise RegistryError(src.name, f"blob {src_repo}@{desc.digest[:19]} changed while copying")

    retry.call(dst.policy, go)
    return "uploaded"


def referenced_descriptors(manifest: Mapping[str, Any]) -> tuple[list[Descriptor], list[Descriptor]]:
    """(child manifests, blobs) that a manifest or index points at."""
    children = [Descriptor(m.get("mediaType", ""), m["digest"], int(m.get("size", 0)))
                for m in manifest.get("manifests") or []]
    blobs: list[Descriptor] = []
    if manifest.get("config"):
        c = manifest["config"]
        blobs.append(Descriptor(c.get("mediaType", ""), c["digest"], int(c.get("size", 0))))
    for layer in manifest.get("layers") or []:
        blobs.append(Descriptor(layer.get("mediaType", ""), layer["digest"], int(layer.get("size", 0))))
    return children, blobs


def copy_manifest_tree(src: Registry, src_repo: str, dst: Registry, dst_repo: str, digest: str,
                       stats: dict[str, int] | None = None) -> str:
    """Copy a manifest or index by digest with everything below it, children before parents.

    Nothing is tagged: the manifest is put by digest. Present manifests and
    blobs are skipped (HEAD first), so a re-run does only the missing work.
    """
    stats = stats if stats is not None else {}
    existing = dst.manifest_head(dst_repo, digest)
    if existing is not None:
        stats["manifests_present"] = stats.get("manifests_present", 0) + 1
        return digest
    body, media, got = src.manifest_get(src_repo, digest)
    manifest = json.loads(body)
    children, blobs = referenced_descriptors(manifest)
    for child in children:
        copy_manifest_tree(src, src_repo, dst, dst_repo, child.digest, stats)
    for blob in blobs:
        outcome = copy_blob(src, src_repo, dst, dst_repo, blob)
        stats[f"blobs_{outcome}"] = stats.get(f"blobs_{outcome}", 0) + 1
    put = dst.manifest_put(dst_repo, digest, body, media or manifest.get("mediaType", OCI_MANIFEST))
    if put != digest:
        raise RegistryError(dst.name, f"{dst_repo}@{digest}: the registry stored it as {put} (digest changed)")
    stats["manifests_copied"] = stats.get("manifests_copied", 0) + 1
    return digest


def env_for_tools() -> dict[str, str]:
    return dict(os.environ)
