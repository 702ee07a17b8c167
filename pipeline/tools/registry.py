"""OCI distribution client on httpx: one small function per registry verb.

Credentials come from the docker config (``auths``, ``credsStore``,
``credHelpers`` via ``docker-credential-*``) or from named environment
variables. Basic and Bearer-token challenges are answered as the distribution
spec describes (``docs/spec/auth/token.md``): the challenge is learnt once per
registry from ``GET /v2/`` and credentials are attached *before* a request is
sent, so a streamed body is never sent unauthenticated. Blobs are streamed,
never held whole in memory. Every verb runs under the one retry policy; errors
are :class:`RegistryError` and say whether they are temporary.
"""

from __future__ import annotations

import base64
import email.utils
import functools
import hashlib
import json
import os
import re
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, TypeVar
from urllib.parse import urljoin, urlsplit

from pipeline import lazy, log, retry
from pipeline.errors import InfraError, ToolError
from pipeline.tools import proc
from pipeline.tools.oci import (  # noqa: F401 - the OCI vocabulary, importable from here too
    DOCKER_LIST, DOCKER_MANIFEST, INDEX_TYPES, MANIFEST_TYPES, OCI_INDEX, OCI_MANIFEST, Descriptor, digest_of,
    index_platforms, is_digest, matches_digest, platform_name, referenced_descriptors)

if TYPE_CHECKING:
    import httpx
else:
    httpx = lazy("httpx")

ACCEPT = ", ".join(MANIFEST_TYPES)
CHUNK = 1 << 20
UPLOAD_CHUNK = 32 << 20    # blobs this large and larger go in resumable PATCH chunks of this size
MAX_MANIFEST_BYTES = 4 << 20  # the distribution spec's recommended manifest size limit
DOCKER_HUB_HOSTS = {"docker.io", "index.docker.io", "registry-1.docker.io"}
DOCKER_HUB_API = "registry-1.docker.io"
DOCKER_HUB_KEY = "https://index.docker.io/v1/"  # where `docker login` stores Docker Hub credentials
DEFAULT_TOKEN_SECONDS = 60  # token.md: when expires_in is absent, the token lives 60 seconds
_LINK_NEXT = re.compile(r"<([^>]+)>\s*;\s*rel=\"?next\"?")
T = TypeVar("T")


class RegistryError(InfraError):
    """A registry said no, or could not be reached. ``temporary`` drives the retry policy.

    The message is one line, starts with ``registry <name>:`` and is scrubbed of
    every registered secret.
    """

    def __init__(self, registry: str, message: str, *, status: int | None = None, code: str | None = None,
                 temporary: bool = False, retry_after: float | None = None, restart: bool = False) -> None:
        message = " ".join(log.scrub(message).split())
        super().__init__(f"registry {registry}: {message}")
        self.registry = registry
        self.detail = message
        self.status = status
        self.code = code
        self.temporary = temporary
        self.retry_after = retry_after
        self.restart = restart   # temporary for the caller that starts the whole transfer again, not the request
        self.unreachable = False  # set for connection failures: the host did not answer at all

    def gave_up(self, attempts: int) -> RegistryError:
        """The same error after the retry policy gave up: final, so no outer retry multiplies it."""
        plural = "s" if attempts != 1 else ""
        final = type(self)(self.registry, f"{self.detail} (gave up after {attempts} attempt{plural})",
                           status=self.status, code=self.code, temporary=False)
        final.unreachable = self.unreachable
        return final


class NotFound(RegistryError):
    pass


@dataclass(frozen=True)
class Credentials:
    """Username and password, or an identity (refresh) token for the OAuth2 token flow."""

    username: str
    password: str = field(repr=False)
    identity_token: str | None = field(default=None, repr=False)
    expires_at: float | None = field(default=None, compare=False)  # epoch seconds (ECR tokens live 12 h)

    def __post_init__(self) -> None:
        log.register_secret(self.password)
        log.register_secret(self.identity_token)

    def __repr__(self) -> str:  # never show the secret, even in a debugger
        return f"Credentials(username={self.username!r}, password='***')"



# --------------------------------------------------------------------------- credentials

_helper_cache: dict[tuple[str, str], Credentials | None] = {}
_helper_lock = threading.Lock()


def docker_config_dir(env: Mapping[str, str]) -> Path:
    return Path(env.get("DOCKER_CONFIG") or Path(env.get("HOME") or Path.home()) / ".docker")


def _hostname(key: str) -> str:
    """docker's ConvertToHostname: ``https://host:5000/v1/`` → ``host:5000``."""
    return key.removeprefix("http://").removeprefix("https://").split("/", 1)[0]


def _same_registry(key: str, host: str) -> bool:
    name = _hostname(key)
    if host in DOCKER_HUB_HOSTS:
        return name in DOCKER_HUB_HOSTS
    return name == host


def _auth_keys(host: str) -> list[str]:
    """Config keys to try, in order, for ``host`` (Docker Hub has several aliases)."""
    if host in DOCKER_HUB_HOSTS:
        return [DOCKER_HUB_KEY, "index.docker.io", "docker.io", "registry-1.docker.io", "https://index.docker.io"]
    return [host, f"https://{host}", f"http://{host}", f"https://{host}/v1/", f"https://{host}/v2/"]


def _ordered_keys(mapping: Mapping[str, Any], host: str) -> list[str]:
    """Exact aliases first, then any other key that names the same host (docker normalises keys)."""
    exact = [k for k in _auth_keys(host) if k in mapping]
    return exact + [k for k in mapping if k not in exact and _same_registry(k, host)]


def _run_helper(helper: str, server: str) -> tuple[int, str]:
    """``docker-credential-<helper> get`` with ``server`` on stdin → (exit status, stdout).

    The helper's stdout is the secret itself, so it is read unscrubbed
    (``secret_output``): a password this process already knows must not read
    back as ``***``.
    """
    tool = f"docker-credential-{helper}"
    what = f"credential helper {helper} for {server}"
    if proc.which(tool) is None:
        raise ToolError(f"{what}: '{tool}' is not installed (named by the docker config)", tool=tool)
    # a credential helper reads the user's own stores (keychain, pass, cloud SDKs): the user's environment
    done = proc.run([tool, "get"], input=server, check=False, timeout=60, what=what, secret_output=True,
                    inherit_all=True)
    return done.returncode, done.stdout


def _from_helper(helper: str, server: str) -> Credentials | None:
    """The helper's credentials for ``server``; None when it has none. Cached per process."""
    key = (helper, server)
    with _helper_lock:
        if key in _helper_cache:
            return _helper_cache[key]
    code, stdout = _run_helper(helper, server)
    found: Credentials | None = None
    if code == 0:
        try:
            data = json.loads(stdout)
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict) and data.get("Secret"):
            secret = str(data["Secret"])
            if data.get("Username") == "<token>":
                found = Credentials("<token>", "", identity_token=secret)
            else:
                found = Credentials(str(data.get("Username") or ""), secret)
    with _helper_lock:
        _helper_cache[key] = found
    return found


def _from_auths_entry(entry: Mapping[str, Any]) -> Credentials | None:
    if entry.get("identitytoken"):
        return Credentials(str(entry.get("username") or "<token>"), "", identity_token=str(entry["identitytoken"]))
    if entry.get("auth"):
        try:
            user, sep, password = base64.b64decode(entry["auth"], validate=False).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        if sep and password:
            return Credentials(user, password)
    if entry.get("username") and entry.get("password"):
        return Credentials(str(entry["username"]), str(entry["password"]))
    return None


def credentials_from_docker_config(host: str, env: Mapping[str, str]) -> Credentials | None:
    """Look ``host`` up in the docker config the way the docker CLI does.

    Order: ``credHelpers`` for the host, then ``credsStore``, then the inline
    ``auths`` entry (base64 ``user:password`` or an identity token).
    """
    path = docker_config_dir(env) / "config.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    helpers = data.get("credHelpers") or {}
    for key in _ordered_keys(helpers, host):
        return _from_helper(helpers[key], key)
    if data.get("credsStore"):
        for key in _auth_keys(host):
            found = _from_helper(data["credsStore"], key)
            if found:
                return found
    auths = data.get("auths") or {}
    for key in _ordered_keys(auths, host):
        entry = auths[key]
        found = _from_auths_entry(entry) if isinstance(entry, Mapping) else None
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


def _merge_scopes(scope: str, extra: str) -> str:
    """Union of two space-separated scope lists, order kept."""
    out = scope.split()
    for s in extra.split():
        if s not in out:
            out.append(s)
    return " ".join(out)


def _error_detail(response: httpx.Response) -> tuple[str | None, str]:
    try:
        errors = response.json().get("errors") or []
    except (ValueError, AttributeError, httpx.ResponseNotRead):
        errors = []
    if errors and isinstance(errors, list) and isinstance(errors[0], dict):
        return errors[0].get("code"), str(errors[0].get("message") or errors[0].get("code") or "")
    return None, response.reason_phrase or f"HTTP {response.status_code}"


def _retry_after(response: httpx.Response) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date)."""
    value = (response.headers.get("Retry-After") or "").strip()
    if not value:
        return None
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass(frozen=True)
class RateLimit:
    """A registry's pull quota as it reports it (Docker Hub: ``ratelimit-limit: 100;w=21600`` and
    ``ratelimit-remaining: 76;w=21600``; the window ``w`` in seconds)."""

    limit: int | None
    remaining: int
    window_seconds: int | None

    @property
    def low(self) -> bool:
        """Little left: at most a tenth of the limit, and never more than 10 pulls."""
        return self.remaining <= (min(10, max(1, self.limit // 10)) if self.limit else 10)

    def describe(self) -> str:
        of = f" of {self.limit}" if self.limit is not None else ""
        per = f" per {self.window_seconds // 3600} h" if self.window_seconds and self.window_seconds % 3600 == 0 \
            else (f" per {self.window_seconds} s" if self.window_seconds else "")
        return f"{self.remaining}{of} pulls left{per}"


def _quota(value: str) -> tuple[int | None, int | None]:
    head, _, rest = value.partition(";")
    window = re.search(r"\bw=(\d+)", rest)
    return (int(head) if head.strip().isdigit() else None), (int(window.group(1)) if window else None)


def rate_limit_of(response: httpx.Response) -> RateLimit | None:
    """The quota headers of an answer, or None when it has none."""
    remaining = response.headers.get("ratelimit-remaining")
    if remaining is None:
        return None
    left, window = _quota(remaining)
    if left is None:
        return None
    limit, limit_window = _quota(response.headers.get("ratelimit-limit", ""))
    return RateLimit(limit, left, window or limit_window)


def loopback_host(host: str) -> bool:
    """``localhost``, ``127.0.0.1`` or ``[::1]`` (any port): a registry docker treats as insecure, so plain
    HTTP is tried after HTTPS."""
    return host.split(":")[0] in ("localhost", "127.0.0.1") or host.startswith("[::1]")


def _next_link(response: httpx.Response) -> str | None:
    m = _LINK_NEXT.search(response.headers.get("Link", ""))
    return m.group(1) if m else None


# --------------------------------------------------------------------------- the client


def ssl_context(verify: bool) -> ssl.SSLContext:
    """httpx's TLS context (``SSL_CERT_FILE``, ``SSL_CERT_DIR``, else certifi), made once per process and
    settings: loading the CA bundle takes ~15 ms, and a release opens a client per registry and stage."""
    return _ssl_context(verify, os.environ.get("SSL_CERT_FILE", ""), os.environ.get("SSL_CERT_DIR", ""))


@functools.lru_cache(maxsize=8)
def _ssl_context(verify: bool, _cert_file: str, _cert_dir: str) -> ssl.SSLContext:
    return httpx.create_ssl_context(verify=verify)


class Registry:
    """One registry host. Thread-safe enough for parallel copies (tokens cached per scope).

    ``clock`` (monotonic seconds) is injectable so tests can expire tokens.
    """

    def __init__(self, host: str, *, name: str | None = None, insecure: bool = False,
                 credentials: Credentials | None = None, policy: retry.RetryPolicy | None = None,
                 timeout: float = 60.0, transport: httpx.BaseTransport | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.host = DOCKER_HUB_API if host in DOCKER_HUB_HOSTS else host
        self.name = name or host
        self.insecure = insecure
        self.credentials = credentials
        self.policy = policy or retry.RetryPolicy()
        self._clock = clock
        self._scheme: str | None = None if insecure else "https"
        self._challenge: tuple[str, dict[str, str]] | None = None  # learnt from GET /v2/
        self._tokens: dict[str, tuple[str, float]] = {}  # scope → (token, expires at)
        self._wider: dict[str, str] = {}  # scope → the scope a registry's challenge asked for instead
        self._lock = threading.Lock()
        # insecure = docker's "insecure registry": HTTPS without verification, else plain HTTP
        self.client = httpx.Client(timeout=httpx.Timeout(timeout, connect=10.0), follow_redirects=True,
                                   transport=transport, verify=ssl_context(not insecure),
                                   headers={"User-Agent": "pipeline"})
        self._no_chunked = False   # the registry refused a chunked upload once: whole blobs from then on
        self.rate_limit: RateLimit | None = None   # the last pull quota the registry reported
        self._warned_low = False
        self.counters: dict[str, int] = {"blob_uploads": 0, "blob_mounts": 0, "blob_skips": 0,
                                         "manifest_puts": 0, "token_fetches": 0}

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Registry({self.host!r}, name={self.name!r})"

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counters[key] = self.counters.get(key, 0) + n

    # ---- scheme and challenge discovery

    @property
    def base(self) -> str:
        if self._scheme is None:
            self._discover()
        return f"{self._scheme}://{self.host}"

    def _discover(self) -> None:
        """``GET /v2/`` without credentials: the scheme (insecure registries) and the auth challenge.

        Insecure registries try HTTPS first and fall back to plain HTTP, as docker
        does; a TLS handshake against a plain-HTTP port fails at once. Nothing is
        remembered when the registry cannot be reached, so a retry probes again.
        """
        schemes = [self._scheme] if self._scheme else ["https", "http"]
        error: httpx.HTTPError | None = None
        for scheme in schemes:
            probing = len(schemes) > 1 and scheme == "https"
            try:
                r = self.client.get(f"{scheme}://{self.host}/v2/", timeout=3.0 if probing else httpx.USE_CLIENT_DEFAULT)
            except httpx.HTTPError as exc:
                error = exc
                continue
            challenge = self._challenge_of(r)
            with self._lock:
                self._scheme = scheme
                self._challenge = challenge
            return
        assert error is not None
        raise self._transport_error(error)

    def _challenge_of(self, r: httpx.Response) -> tuple[str, dict[str, str]]:
        if r.status_code == 401:
            scheme, params = parse_challenge(r.headers.get("WWW-Authenticate", ""))
            if scheme in ("bearer", "basic"):
                params.pop("scope", None)
                params.pop("error", None)
                return scheme, params
            return "basic", {}  # 401 without a usable challenge: Basic is all that is left
        if r.status_code < 300:
            return "none", {}
        if r.status_code == 404:
            raise RegistryError(self.name, f"{self.host} does not serve the registry API (GET /v2/ → 404)",
                                status=404)
        raise self._status_error(r, "ping")

    # ---- credentials on requests

    def _basic_header(self) -> str:
        assert self.credentials is not None
        raw = f"{self.credentials.username}:{self.credentials.password}".encode()
        value = base64.b64encode(raw).decode()
        log.register_secret(value)
        return "Basic " + value

    def _auth_headers(self, scope: str) -> tuple[dict[str, str], bool]:
        """Authorization for ``scope`` before sending; ``fresh`` when a token was just issued for it."""
        if self._challenge is None:
            self._discover()
        assert self._challenge is not None
        scheme, params = self._challenge
        if scheme == "bearer":
            scope = self._wider.get(scope, scope)
            with self._lock:
                cached = self._tokens.get(scope)
            if cached and cached[1] > self._clock():
                return {"Authorization": f"Bearer {cached[0]}"}, False
            return {"Authorization": f"Bearer {self._fetch_token(params, scope)}"}, True
        if scheme == "basic":
            if not self.credentials or not self.credentials.password:
                raise RegistryError(self.name, "authentication required and no credentials configured"
                                    " (pipeline login / docker login, or username_env/password_env in the config)",
                                    status=401)
            return {"Authorization": self._basic_header()}, False
        return {}, False

    def _forget(self, scope: str) -> None:
        with self._lock:
            self._tokens.pop(self._wider.get(scope, scope), None)

    def _fetch_token(self, params: Mapping[str, str], scope: str) -> str:
        """Ask the token service for ``scope`` (space-separated; each becomes one ``scope`` parameter)."""
        realm = params.get("realm")
        if not realm:
            raise RegistryError(self.name, "Bearer challenge without a realm")
        scopes = scope.split()
        creds = self.credentials
        try:
            if creds and creds.identity_token:  # OAuth2 refresh-token grant (docs/spec/auth/oauth.md)
                form = {"grant_type": "refresh_token", "refresh_token": creds.identity_token,
                        "client_id": "pipeline", "access_type": "offline"}
                if params.get("service"):
                    form["service"] = params["service"]
                if scopes:
                    form["scope"] = " ".join(scopes)
                r = self.client.post(realm, data=form)
            else:
                query: list[tuple[str, str | int | float | bool | None]] = (
                    [("service", params["service"])] if params.get("service") else [])
                query += [("scope", s) for s in scopes]
                auth = (creds.username, creds.password) if creds and creds.password else None
                r = self.client.get(realm, params=query, auth=auth)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, urlsplit(realm).netloc or self.host) from None
        self._count("token_fetches")
        if r.status_code in (401, 403):
            if not creds:
                raise RegistryError(self.name, "authentication required: the token service refused anonymous"
                                    " access; configure credentials (docker login, or username_env/password_env)",
                                    status=r.status_code)
            raise RegistryError(self.name, f"authentication failed for user '{creds.username}': the token service"
                                " refused the credentials (wrong username or password/token?)", status=r.status_code)
        if r.status_code >= 400:
            raise self._status_error(r, "token request")
        try:
            data = r.json()
        except ValueError:
            data = {}
        token = data.get("token") or data.get("access_token") if isinstance(data, dict) else None
        if not token or not isinstance(token, str):
            raise RegistryError(self.name, "the token service answered without a token")
        log.register_secret(token)
        try:
            lifetime = float(data.get("expires_in") or DEFAULT_TOKEN_SECONDS)
        except (TypeError, ValueError):
            lifetime = DEFAULT_TOKEN_SECONDS
        margin = min(10.0, lifetime / 4)  # renew a little early
        with self._lock:
            self._tokens[scope] = (token, self._clock() + lifetime - margin)
        log.get().debug("registry.token_fetched", registry=self.name, scope=scope)
        return token

    # ---- errors

    def _transport_error(self, exc: httpx.HTTPError, host: str | None = None) -> RegistryError:
        host = host or self.host
        kind = type(exc).__name__
        detail = log.scrub(str(exc)) or kind
        if isinstance(exc, httpx.ConnectError) and "CERTIFICATE_VERIFY_FAILED" in detail:
            return RegistryError(self.name, f"TLS certificate of {host} is not trusted ({detail}); add the CA to the"
                                 " system store or mark the registry insecure in the config")
        if isinstance(exc, httpx.ConnectError):
            # A name the resolver says does not exist is final (retrying for minutes would not make it
            # resolve); refused, unreachable and "try again" (EAI_AGAIN) are temporary.
            no_such_host = _no_such_host(exc)
            err = RegistryError(self.name, f"cannot connect to {host} ({'no such host: ' if no_such_host else ''}"
                                f"{detail})", temporary=not no_such_host)
            err.unreachable = True   # no such host, refused, no route: nothing answered at all
            return err
        if isinstance(exc, httpx.TimeoutException):
            return RegistryError(self.name, f"{host} timed out ({kind})", temporary=True)
        return RegistryError(self.name, f"connection to {host} failed ({kind}: {detail})", temporary=True)

    def _status_error(self, r: httpx.Response, what: str) -> RegistryError:
        code, message = _error_detail(r)
        status = r.status_code
        if status == 404:
            return NotFound(self.name, f"{what}: not found ({code or 'NOT_FOUND'})", status=status, code=code)
        if status == 403:
            return RegistryError(self.name, f"{what}: access denied ({code or status}); check that the credentials"
                                 " may push/pull this repository", status=status, code=code)
        if status == 429:
            quota, wait = rate_limit_of(r), _retry_after(r)
            if quota is not None and quota.remaining == 0 and wait is None:
                # a spent pull quota (Docker Hub's): the window is hours, so retrying for minutes only adds load
                return RegistryError(self.name, f"{what}: pull rate limit reached (429 {code or 'TOOMANYREQUESTS'},"
                                     f" {quota.describe()}); authenticate for a higher limit, or pull less often"
                                     " (pipeline's [mirror] keeps base images in a registry of yours)",
                                     status=status, code=code or "TOOMANYREQUESTS")
            return RegistryError(self.name, f"{what}: rate limited (429 {code or 'TOOMANYREQUESTS'})", status=status,
                                 code=code, temporary=True, retry_after=wait)
        if status == 408 or (status >= 500 and status not in (501, 505)):
            return RegistryError(self.name, f"{what}: server error {status} {message}", status=status, code=code,
                                 temporary=True, retry_after=_retry_after(r))
        return RegistryError(self.name, f"{what}: {status} {code or ''} {message}", status=status, code=code)

    def _auth_error(self, what: str, params: Mapping[str, str], sent: bool, scope: str) -> RegistryError:
        if not sent or not self.credentials:
            return RegistryError(self.name, f"{what}: authentication required and no credentials configured"
                                 " (docker login, or username_env/password_env in the config)", status=401)
        user = self.credentials.username
        if params.get("error") == "insufficient_scope":
            return RegistryError(self.name, f"{what}: access denied: user '{user}' may not {scope or 'do this'}",
                                 status=401, code="DENIED")
        return RegistryError(self.name, f"{what}: authentication failed for user '{user}' (wrong username or"
                             " password?)", status=401, code="UNAUTHORIZED")

    # ---- one request

    def request(self, method: str, path: str, *, scope: str = "", what: str = "", ok: tuple[int, ...] = (),
                stream: bool = False, headers: Mapping[str, str] | None = None, content: Any = None,
                params: Any = None) -> httpx.Response:
        """One request with credentials; no retry here (the verbs run under the policy).

        Credentials are attached *before* the request is sent: the challenge is
        learnt once from ``GET /v2/`` and Bearer tokens are fetched per scope and
        cached until they expire. A 401 on a replayable request (no body, bytes)
        is answered once from its own challenge (expired token, a scope the
        registry wants widened, a path that wants auth although ``/v2/`` did not);
        a 401 on a body that cannot be replayed (an iterator) drops the token and
        raises a *temporary* error, so the caller's retry restarts the stream from
        its source. A 401 right after fresh credentials is final: authentication failed.
        """
        what = what or f"{method} {urlsplit(path).path}"
        replayable = content is None or isinstance(content, (bytes, bytearray, str))
        url = path if "://" in path else self.base + path
        for attempt in (1, 2):
            auth, fresh = self._auth_headers(scope)
            try:
                req = self.client.build_request(method, url, headers={**(headers or {}), **auth}, content=content,
                                                params=params)
                r = self.client.send(req, stream=stream)
            except httpx.HTTPError as exc:
                raise self._transport_error(exc) from None
            self._note_quota(r)
            if r.status_code != 401:
                break
            r.close()
            scheme, challenge = parse_challenge(r.headers.get("WWW-Authenticate", ""))
            self._forget(scope)
            might_help = False
            if scheme == "bearer" and challenge.get("realm"):
                asked = self._wider.get(scope, scope)
                wider = _merge_scopes(asked, challenge.get("scope", ""))
                known = self._challenge is not None and self._challenge[0] == "bearer"
                might_help = not fresh or wider != asked or not known
                with self._lock:
                    self._challenge = ("bearer", {k: v for k, v in challenge.items() if k not in ("scope", "error")})
                    if wider != scope:
                        self._wider[scope] = wider
            elif scheme == "basic" or not scheme:
                might_help = bool(self.credentials and self.credentials.password) and "Authorization" not in auth
                if might_help:
                    with self._lock:
                        self._challenge = ("basic", {})
            if might_help and attempt == 1:
                if replayable:
                    continue
                raise RegistryError(self.name, f"{what}: the registry asked to authenticate again during a streamed"
                                    " upload; restarting it", status=401, temporary=True)
            raise self._auth_error(what, challenge, bool(auth), self._wider.get(scope, scope))
        if r.status_code < 400 or r.status_code in ok:
            return r
        if stream:
            try:
                r.read()          # the error body names the problem; a broken one is no reason to hide the status
            except httpx.HTTPError:
                pass
            finally:
                r.close()
        raise self._status_error(r, what)

    def _note_quota(self, r: httpx.Response) -> None:
        """Remember the pull quota an answer reports; say it once when little is left."""
        quota = rate_limit_of(r)
        if quota is None:
            return
        with self._lock:
            self.rate_limit = quota
            warn = quota.low and not self._warned_low
            self._warned_low = self._warned_low or warn
        if warn:
            log.get().warning("registry.rate_limit_low", registry=self.name, remaining=quota.remaining,
                              limit=quota.limit, window_seconds=quota.window_seconds,
                              note=f"{self.name}: {quota.describe()}; authenticate for a higher limit, or keep"
                                   " base images in the [mirror]")

    def _retrying(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return retry.call(self.policy, fn, *args, retry_on=_request_retryable)
        except RegistryError as exc:
            if exc.restart:
                raise
            if exc.temporary:
                raise exc.gave_up(retry.attempts_made(exc, self.policy)) from None
            raise

    def granted(self, repo: str, actions: Iterable[str]) -> set[str] | None:
        """The actions the token service grants these credentials on ``repo`` when asked for ``actions``
        (what the token's ``access`` claim lists), or None when the registry does not say (no Bearer
        tokens, or a token that is not a JWT): a preflight that learns what a token may do without doing it."""
        if self._challenge is None:
            self._retrying(self._discover)
        kind, params = self._challenge or ("", {})
        if kind.lower() != "bearer":
            return None
        wanted = f"repository:{repo}:{','.join(actions)}"
        token = self._retrying(self._fetch_token, params, wanted)
        parts = token.split(".")
        if len(parts) != 3:
            return None
        try:
            claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        except (ValueError, UnicodeDecodeError):
            return None
        access = claims.get("access") if isinstance(claims, dict) else None
        if not isinstance(access, list):
            return None
        return {str(a) for entry in access if isinstance(entry, dict) and entry.get("name") == repo
                for a in entry.get("actions") or []}

    # ---- verbs

    def ping(self) -> None:
        """The registry answers and the credentials work (a scope-less token where tokens are used)."""
        self._retrying(lambda: self.request("GET", "/v2/", what="ping"))

    def manifest_head(self, repo: str, reference: str) -> Descriptor | None:
        """The descriptor of a manifest, or None when absent.

        By digest, the registry's ``Docker-Content-Digest`` must equal the
        reference. By tag, the header is the registry's word (a HEAD has no body
        to check; use :meth:`manifest_get` for a verified digest); without the
        header the manifest is fetched and hashed.
        """
        def go() -> Descriptor | None:
            r = self.request("HEAD", f"/v2/{repo}/manifests/{reference}", scope=f"repository:{repo}:pull",
                             headers={"Accept": ACCEPT}, ok=(404,), what=f"HEAD {repo}:{reference}")
            if r.status_code == 404:
                return None
            header = r.headers.get("Docker-Content-Digest", "")
            media = r.headers.get("Content-Type", "").split(";")[0].strip()
            size = int(r.headers.get("Content-Length") or 0)
            if is_digest(reference):
                if header and header != reference:
                    raise RegistryError(self.name, f"HEAD {repo}@{reference}: the registry answered with digest"
                                        f" {header}")
                return Descriptor(media, reference, size)
            if header and is_digest(header):
                return Descriptor(media, header, size)
            body, media, digest = self._manifest_get(repo, reference)
            return Descriptor(media, digest, len(body))
        return self._retrying(go)

    def _manifest_get(self, repo: str, reference: str) -> tuple[bytes, str, str]:
        r = self.request("GET", f"/v2/{repo}/manifests/{reference}", scope=f"repository:{repo}:pull",
                         headers={"Accept": ACCEPT}, what=f"manifest {repo}:{reference}", stream=True)
        try:
            if int(r.headers.get("Content-Length") or 0) > MAX_MANIFEST_BYTES:
                raise RegistryError(self.name, f"manifest {repo}:{reference} is larger than"
                                    f" {MAX_MANIFEST_BYTES} bytes")
            body = b""
            for chunk in r.iter_bytes():
                body += chunk
                if len(body) > MAX_MANIFEST_BYTES:
                    raise RegistryError(self.name, f"manifest {repo}:{reference} is larger than"
                                        f" {MAX_MANIFEST_BYTES} bytes")
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        finally:
            r.close()
        header = r.headers.get("Docker-Content-Digest", "")
        if is_digest(reference):
            if not matches_digest(body, reference):
                raise RegistryError(self.name, f"manifest {repo}@{reference}: content does not match its digest"
                                    f" (got {digest_of(body)})")
            digest = reference
        else:
            digest = digest_of(body)
        if header and header != digest and not (is_digest(header) and matches_digest(body, header)):
            raise RegistryError(self.name, f"manifest {repo}:{reference}: the registry says {header} but the content"
                                f" hashes to {digest}")
        try:
            parsed = json.loads(body)
        except ValueError:
            raise RegistryError(self.name, f"manifest {repo}:{reference} is not JSON") from None
        if not isinstance(parsed, dict):
            raise RegistryError(self.name, f"manifest {repo}:{reference} is not a JSON object")
        media = parsed.get("mediaType") or r.headers.get("Content-Type", "").split(";")[0].strip()
        if media not in MANIFEST_TYPES and not parsed.get("mediaType"):
            media = OCI_INDEX if "manifests" in parsed else OCI_MANIFEST  # OCI leaves mediaType optional
        return body, media, digest

    def manifest_get(self, repo: str, reference: str) -> tuple[bytes, str, str]:
        """(body, media type, digest). The digest is computed from the bytes: it must equal the
        reference when that is a digest, and ``Docker-Content-Digest`` when the registry sends it."""
        return self._retrying(self._manifest_get, repo, reference)

    def manifest_find(self, repo: str, reference: str) -> tuple[bytes, str, str] | None:
        """:meth:`manifest_get`, or None when the registry has no such manifest (404, ``MANIFEST_UNKNOWN``)."""
        try:
            return self.manifest_get(repo, reference)
        except NotFound:
            return None
        except RegistryError as exc:
            if exc.status == 404:
                return None
            raise

    def manifest_put(self, repo: str, reference: str, body: bytes, media_type: str) -> str:
        """Put a manifest under a tag or its digest; returns the digest (checked against the registry's)."""
        expected = reference if is_digest(reference) else digest_of(body)
        if not matches_digest(body, expected):
            raise RegistryError(self.name, f"PUT manifest {repo}@{reference}: the body hashes to {digest_of(body)}")

        def go() -> str:
            try:
                r = self.request("PUT", f"/v2/{repo}/manifests/{reference}", scope=f"repository:{repo}:pull,push",
                                 headers={"Content-Type": media_type}, content=body,
                                 what=f"PUT manifest {repo}:{reference}")
            except RegistryError as exc:
                if exc.status == 400 and exc.code == "DIGEST_INVALID":
                    # our bytes hash right (checked above): the registry read others, which is what a storage
                    # race between two writers of the same manifest gives (distribution's filesystem driver)
                    raise RegistryError(self.name, f"{exc.detail} (the body we sent is {expected}; trying"
                                        " again)", status=400, code=exc.code, temporary=True) from None
                raise
            header = r.headers.get("Docker-Content-Digest")
            if header and header != expected:
                raise RegistryError(self.name, f"PUT manifest {repo}:{reference}: the registry stored {header},"
                                    f" not {expected}")
            self._count("manifest_puts")
            return expected
        return self._retrying(go)

    def manifest_delete(self, repo: str, digest: str) -> None:
        """Delete a manifest by digest (tags go with it)."""
        if not is_digest(digest):
            raise RegistryError(self.name, f"DELETE {repo}:{digest}: deleting needs a digest, not a tag")

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
        """A streamed blob response (not retried: a caller that retries re-opens it)."""
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
                try:
                    data = r.read()
                except httpx.HTTPError as exc:
                    raise self._transport_error(exc) from None
            if not matches_digest(data, digest):
                raise RegistryError(self.name, f"blob {repo}@{digest[:19]}: content does not match its digest")
            return data
        return self._retrying(go)

    def blob_mount(self, repo: str, digest: str, from_repo: str) -> bool:
        """Cross-repository mount inside this registry. True when mounted (201); on 202 the
        upload session the registry opened instead is cancelled and False returned."""
        def go() -> bool:
            r = self.request("POST", f"/v2/{repo}/blobs/uploads/", params={"mount": digest, "from": from_repo},
                             scope=f"repository:{repo}:pull,push repository:{from_repo}:pull",
                             what=f"mount {digest[:19]} from {from_repo} into {repo}")
            if r.status_code == 201:
                self._count("blob_mounts")
                log.get().debug("blob.mounted", registry=self.name, repo=repo, source=from_repo, digest=digest)
                return True
            if r.headers.get("Location"):
                self.blob_cancel(repo, r.headers["Location"])
            return False
        return self._retrying(go)

    def _start_upload(self, repo: str) -> tuple[str, int]:
        """(absolute upload URL, the registry's minimum chunk size or 0)."""
        r = self.request("POST", f"/v2/{repo}/blobs/uploads/", scope=f"repository:{repo}:pull,push",
                         what=f"start upload to {repo}")
        location = r.headers.get("Location")
        if not location:
            raise RegistryError(self.name, f"upload to {repo}: no Location header")
        try:
            min_chunk = int(r.headers.get("OCI-Chunk-Min-Length") or 0)
        except ValueError:
            min_chunk = 0
        return urljoin(self.base + "/", location), min_chunk

    @staticmethod
    def _with_digest(location: str, digest: str) -> str:
        return location + ("&" if "?" in location else "?") + f"digest={digest}"

    def blob_upload(self, repo: str, digest: str, chunks: Iterable[bytes] | bytes, size: int, *,
                    chunked: bool = False, chunk_size: int = CHUNK) -> None:
        """Upload one blob from an iterable of byte chunks (or bytes), never holding it whole.

        Monolithic (default): one POST, then one PUT streaming the chunks with
        ``Content-Length: size``. Chunked: PATCH pieces of ``chunk_size`` (at least
        the registry's ``OCI-Chunk-Min-Length``) with ``Content-Range``, then a PUT
        that closes the session. The registry checks ``digest``.

        Not retried here: an iterator cannot be replayed, so callers retry the
        whole copy (see :func:`copy_blob`). Credentials are settled by the POST,
        which has the same scope, before any byte of the body is sent.
        """
        location, min_chunk = self._start_upload(repo)
        scope = f"repository:{repo}:pull,push"
        source: Iterable[bytes] = _slices(chunks, CHUNK) if isinstance(chunks, (bytes, bytearray)) else chunks
        counted = _Counted(self.name, repo, digest, source, size)
        if chunked:
            offset = 0
            for piece in _rechunk(counted, max(chunk_size, min_chunk, 1)):
                end = offset + len(piece) - 1
                r = self.request("PATCH", location, scope=scope, content=piece, what=f"upload chunk to {repo}",
                                 headers={"Content-Type": "application/octet-stream",
                                          "Content-Range": f"{offset}-{end}", "Content-Length": str(len(piece))})
                got = r.headers.get("Range", "")
                if got and got.rsplit("-", 1)[-1].isdigit() and int(got.rsplit("-", 1)[-1]) != end:
                    raise RegistryError(self.name, f"upload to {repo}: the registry has bytes {got}, expected 0-{end}",
                                        temporary=True)
                offset += len(piece)
                location = urljoin(location, r.headers.get("Location") or location)
            counted.check_complete()
            r = self.request("PUT", self._with_digest(location, digest), scope=scope, content=b"",
                             what=f"finish upload of {digest[:19]} to {repo}", headers={"Content-Length": "0"})
        else:
            r = self.request("PUT", self._with_digest(location, digest), scope=scope, content=iter(counted),
                             what=f"upload {digest[:19]} to {repo}",
                             headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)})
        header = r.headers.get("Docker-Content-Digest")
        if header and header != digest:
            raise RegistryError(self.name, f"upload to {repo}: the registry stored {header}, not {digest}")
        self._count("blob_uploads")
        log.get().debug("blob.uploaded", registry=self.name, repo=repo, digest=digest, size=size, chunked=chunked)

    # ---- blobs from a replayable source (a local file): every request retried on its own

    def push_blob(self, repo: str, digest: str, size: int, read: Callable[[int, int | None], Iterable[bytes]], *,
                  chunk_size: int = UPLOAD_CHUNK) -> str:
        """Upload one blob whose bytes ``read(offset, length)`` can produce again at any offset.

        Small blobs (below ``chunk_size``) go in one PUT; a PUT that fails restarts the upload with
        a new session. Larger blobs go in PATCH chunks of ``chunk_size``: a chunk that fails is
        retried on its own from the offset the registry reports (``GET`` of the session, its
        ``Range``), and a lost session starts again. A registry that refuses chunked uploads gets
        the monolithic PUT instead (remembered for the rest of the run). After a commit whose
        answer was lost the blob is found by HEAD. Returns 'uploaded'.
        """
        if size >= chunk_size and not self._no_chunked:
            try:
                retry.call(self.policy, self._push_chunked, repo, digest, size, read, chunk_size,
                           retry_on=_session_lost)
                return "uploaded"
            except _ChunkedRefused as refused:
                log.get().info("upload.chunked_refused", registry=self.name, repo=repo, status=refused.status,
                               note="this registry refuses chunked uploads; sending whole blobs")
                with self._lock:
                    self._no_chunked = True
        self._retrying(self._push_whole, repo, digest, size, read)
        return "uploaded"

    def put_bytes(self, repo: str, data: bytes) -> Descriptor:
        """A small blob held in memory (configs, signatures, bundles): HEAD, else upload; retried per request."""
        digest = digest_of(data)
        if self.blob_exists(repo, digest):
            self._count("blob_skips")
        else:
            self.push_blob(repo, digest, len(data), lambda offset, length: [
                data[offset:] if length is None else data[offset:offset + length]])
        return Descriptor("", digest, len(data))

    def _push_whole(self, repo: str, digest: str, size: int, read: Callable[[int, int | None], Iterable[bytes]]) -> None:
        location, _ = self._start_upload(repo)
        scope = f"repository:{repo}:pull,push"
        counted = _Counted(self.name, repo, digest, read(0, None), size)
        try:
            r = self.request("PUT", self._with_digest(location, digest), scope=scope, content=iter(counted),
                             what=f"upload {digest[:19]} to {repo}",
                             headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)})
        except RegistryError as exc:
            if exc.temporary and self._blob_arrived(repo, digest):
                return
            raise
        self._check_stored(r, repo, digest)
        self._count("blob_uploads")

    def _push_chunked(self, repo: str, digest: str, size: int, read: Callable[[int, int | None], Iterable[bytes]],
                      chunk_size: int) -> None:
        scope = f"repository:{repo}:pull,push"
        location, min_chunk = self._retrying(self._start_upload, repo)
        piece = max(chunk_size, min_chunk, 1)
        state: dict[str, Any] = {"location": location, "offset": 0, "unsure": False}

        def send() -> None:
            if state["unsure"]:   # a chunk failed: ask the session where it is before sending more
                resumed = self._upload_offset(repo, state["location"])
                if resumed is None:
                    raise RegistryError(self.name, f"upload of {digest[:19]} to {repo}: the upload session was"
                                        " lost; starting again", temporary=True, restart=True)
                state["location"], state["offset"] = resumed
                state["unsure"] = False
                log.get().info("upload.resumed", registry=self.name, repo=repo, digest=digest, offset=resumed[1])
                if resumed[1] >= size:
                    return
            offset = state["offset"]
            end = min(offset + piece, size) - 1
            try:
                r = self.request("PATCH", state["location"], scope=scope, content=iter(read(offset, end - offset + 1)),
                                 what=f"upload chunk {offset}-{end} of {digest[:19]} to {repo}",
                                 headers={"Content-Type": "application/octet-stream",
                                          "Content-Range": f"{offset}-{end}", "Content-Length": str(end - offset + 1)})
            except RegistryError as exc:
                if offset == 0 and exc.status in (400, 405, 501) and not exc.temporary:
                    self.blob_cancel(repo, state["location"])
                    raise _ChunkedRefused(exc.status) from None
                if exc.temporary or exc.status == 416:
                    state["unsure"] = True
                    if not exc.temporary:
                        raise RegistryError(self.name, f"{exc.detail} (the registry has other bytes; asking it where"
                                            " the upload stands)", status=416, temporary=True) from None
                raise
            state["location"] = urljoin(state["location"], r.headers.get("Location") or state["location"])
            got = _range_end(r.headers.get("Range", ""))
            state["offset"] = end + 1 if got is None else got + 1

        while state["offset"] < size:
            self._retrying(send)
        self._retrying(self._commit_upload, repo, state["location"], digest)
        self._count("blob_uploads")

    def _upload_offset(self, repo: str, location: str) -> tuple[str, int] | None:
        """(location, next offset) of an upload session, or None when the registry forgot it."""
        r = self.request("GET", location, scope=f"repository:{repo}:pull,push", ok=(404,),
                         what=f"status of an upload to {repo}")
        if r.status_code == 404:
            return None
        end = _range_end(r.headers.get("Range", ""))
        return urljoin(location, r.headers.get("Location") or location), (0 if end is None else end + 1)

    def _commit_upload(self, repo: str, location: str, digest: str) -> None:
        try:
            r = self.request("PUT", self._with_digest(location, digest), scope=f"repository:{repo}:pull,push",
                             content=b"", headers={"Content-Length": "0"}, ok=(404,),
                             what=f"finish upload of {digest[:19]} to {repo}")
        except RegistryError as exc:
            if exc.temporary and self._blob_arrived(repo, digest):
                return
            raise
        if r.status_code == 404:  # the commit went through, its answer did not: the blob must be there
            if self._blob_arrived(repo, digest):
                return
            raise RegistryError(self.name, f"upload of {digest[:19]} to {repo}: the session is gone and the blob is"
                                " not there; starting again", temporary=True)
        self._check_stored(r, repo, digest)

    def _blob_arrived(self, repo: str, digest: str) -> bool:
        try:
            return self.blob_exists(repo, digest)
        except RegistryError:
            return False

    def _check_stored(self, r: httpx.Response, repo: str, digest: str) -> None:
        header = r.headers.get("Docker-Content-Digest")
        if header and header != digest:
            raise RegistryError(self.name, f"upload to {repo}: the registry stored {header}, not {digest}")

    def pull_blob(self, repo: str, digest: str, size: int | None, dest: Path) -> None:
        """Download one blob to ``dest`` (written through a temporary file, renamed once its digest
        checks). A body that breaks is resumed with ``Range: bytes=N-`` where the registry allows it
        (206), else fetched again; each request runs under the policy."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".pull-{digest.split(':')[-1][:16]}-", dir=dest.parent)
        os.close(fd)
        part = Path(name)
        algorithm = digest.split(":", 1)[0]
        state = {"hasher": hashlib.new(algorithm), "have": 0}

        def go() -> None:
            have = state["have"]
            headers = {"Range": f"bytes={have}-"} if have else {}
            r = self.request("GET", f"/v2/{repo}/blobs/{digest}", scope=f"repository:{repo}:pull", stream=True,
                             headers=headers, what=f"GET blob {repo}@{digest[:19]}")
            try:
                if have and r.status_code != 206:   # the registry sends it all again: start over
                    state["hasher"], state["have"] = hashlib.new(algorithm), 0
                    mode = "wb"
                else:
                    mode = "ab" if have else "wb"
                with open(part, mode) as fh:
                    for chunk in r.iter_bytes():   # as it arrives: what came before a break is kept
                        fh.write(chunk)
                        state["hasher"].update(chunk)
                        state["have"] += len(chunk)
            except httpx.HTTPError as exc:
                raise self._transport_error(exc) from None
            finally:
                r.close()
            got = f"{algorithm}:{state['hasher'].hexdigest()}"
            if size is not None and state["have"] < size:
                raise RegistryError(self.name, f"GET blob {repo}@{digest[:19]}: the body ended after"
                                    f" {state['have']} of {size} bytes", temporary=True)
            if got != digest:
                received = state["have"]
                state["hasher"], state["have"] = hashlib.new(algorithm), 0
                raise RegistryError(self.name, f"GET blob {repo}@{digest[:19]}: content does not match its digest"
                                    f" ({received} bytes)", temporary=True)

        try:
            self._retrying(go)
            os.replace(part, dest)
        finally:
            if part.exists():
                part.unlink()
        self._count("blob_downloads")

    def blob_cancel(self, repo: str, location: str) -> None:
        """Cancel an upload session (best effort: an abandoned session expires on its own)."""
        try:
            self.request("DELETE", urljoin(self.base + "/", location), scope=f"repository:{repo}:pull,push",
                         ok=(404, 405), what=f"cancel upload to {repo}")
        except RegistryError:
            pass

    def _paged(self, first: str, scope: str, what: str, key: str, missing_ok: bool) -> list[str]:
        out: list[str] = []
        seen: set[str] = set()
        url: str | None = urljoin(self.base + "/", first)
        while url and url not in seen:
            seen.add(url)
            r = self._retrying(lambda u: self.request("GET", u, scope=scope, what=what,
                                                      ok=(404,) if missing_ok else ()), url)
            if r.status_code == 404:
                return out
            try:
                items = r.json().get(key) or []
            except (ValueError, AttributeError):
                raise RegistryError(self.name, f"{what}: the answer is not the expected JSON") from None
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise RegistryError(self.name, f"{what}: '{key}' in the answer is not a list of names")
            out.extend(items)
            link = _next_link(r)
            url = urljoin(self.base + "/", link) if link else None
        return sorted(set(out))  # registries differ in order (distribution 2.8: storage order); plans must not

    def referrers(self, repo: str, digest: str) -> bytes | None:
        """The OCI 1.1 referrers index of ``digest``; None when the registry has no referrers API
        (400/404/405 or not JSON). Other failures are errors (retried), never "no referrers"."""
        def go() -> bytes | None:
            r = self.request("GET", f"/v2/{repo}/referrers/{digest}", scope=f"repository:{repo}:pull",
                             headers={"Accept": OCI_INDEX}, ok=(400, 404, 405),
                             what=f"referrers of {repo}@{digest[:19]}")
            if r.status_code != 200 or "json" not in r.headers.get("Content-Type", "json"):
                return None
            return r.content
        return self._retrying(go)

    def tags(self, repo: str, *, page_size: int = 1000) -> list[str]:
        """Every tag (sorted), following ``Link: <…>; rel="next"`` pagination; [] for an unknown repository."""
        return self._paged(f"/v2/{repo}/tags/list?n={page_size}", f"repository:{repo}:pull", f"tags of {repo}",
                           "tags", True)

    def catalog(self, *, page_size: int = 1000) -> list[str]:
        """Every repository (sorted), following Link pagination (needs the registry:catalog:* scope)."""
        return self._paged(f"/v2/_catalog?n={page_size}", "registry:catalog:*", "catalog", "repositories", False)


class _ChunkedRefused(Exception):
    def __init__(self, status: int | None) -> None:
        super().__init__(f"chunked upload refused ({status})")
        self.status = status


def _no_such_host(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, socket.gaierror) and seen.errno == socket.EAI_NONAME:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _request_retryable(exc: BaseException) -> bool:
    return retry.is_temporary(exc) and not getattr(exc, "restart", False)


def _session_lost(exc: BaseException) -> bool:
    return bool(getattr(exc, "restart", False))


def _range_end(header: str) -> int | None:
    """The last byte a ``Range: 0-<end>`` header reports (``0--1``/absent: nothing yet)."""
    value = header.strip().removeprefix("bytes=")
    start, _, end = value.partition("-")
    if not start.isdigit() or not end.lstrip("-").isdigit():
        return None
    last = int(end)
    return None if last < 0 else last


class _Counted:
    """Yields a blob's chunks, counting them; the wrong size is a clear, final error."""

    def __init__(self, registry: str, repo: str, digest: str, source: Iterable[bytes], size: int) -> None:
        self.registry, self.repo, self.digest, self.source, self.size = registry, repo, digest, source, size
        self.count = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.source:
            if not chunk:
                continue
            self.count += len(chunk)
            if self.count > self.size:
                self._fail()
            yield bytes(chunk)
        self.check_complete()

    def check_complete(self) -> None:
        if self.count != self.size:
            self._fail()

    def _fail(self) -> None:
        raise RegistryError(self.registry, f"upload {self.digest[:19]} to {self.repo}: the blob is"
                            f" {'more than ' if self.count > self.size else ''}{self.count} bytes, its descriptor"
                            f" says {self.size}")


def _slices(data: bytes | bytearray, size: int) -> Iterator[bytes]:
    view = memoryview(data)
    for i in range(0, len(data), size):
        yield bytes(view[i:i + size])


def _rechunk(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """Pieces of ``size`` bytes (the last may be shorter); holds at most about two pieces."""
    buf = bytearray()
    for chunk in chunks:
        buf += chunk
        while len(buf) >= size:
            yield bytes(buf[:size])
            del buf[:size]
    if buf:
        yield bytes(buf)


# --------------------------------------------------------------------------- copy verbs


def _same_host(a: Registry, b: Registry) -> bool:
    return a is b or a.host == b.host


def copy_blob(src: Registry, src_repo: str, dst: Registry, dst_repo: str, desc: Descriptor, *,
              chunked: bool = False) -> str:
    """Copy one blob if the destination lacks it: 'present' | 'mounted' | 'uploaded'.

    HEAD first; inside one registry a cross-repository mount; else the source is
    streamed into the destination (the whole copy retried on temporary errors,
    the content hashed on the way and checked against the digest).
    """
    if dst.blob_exists(dst_repo, desc.digest):
        dst._count("blob_skips")
        return "present"
    if _same_host(src, dst) and src_repo != dst_repo and dst.blob_mount(dst_repo, desc.digest, src_repo):
        return "mounted"

    def go() -> None:
        with src.blob_stream(src_repo, desc.digest) as r:
            algorithm = desc.digest.split(":", 1)[0]
            hasher = hashlib.new(algorithm)

            def chunks() -> Iterator[bytes]:
                try:
                    for chunk in r.iter_bytes(CHUNK):
                        hasher.update(chunk)
                        yield chunk
                except httpx.HTTPError as exc:
                    raise src._transport_error(exc) from None
                if f"{algorithm}:{hasher.hexdigest()}" != desc.digest:
                    raise RegistryError(src.name, f"blob {src_repo}@{desc.digest[:19]}: content does not match its"
                                        " digest", temporary=True)

            dst.blob_upload(dst_repo, desc.digest, chunks(), desc.size, chunked=chunked)

    dst._retrying(go)
    return "uploaded"


def copy_manifest_tree(src: Registry, src_repo: str, dst: Registry, dst_repo: str, digest: str,
                       stats: dict[str, int] | None = None, *, chunked: bool = False) -> str:
    """Copy a manifest or index by digest with everything below it, children before parents.

    Nothing is tagged: the manifest is put by digest. Present manifests and
    blobs are skipped (HEAD first), so a re-run does only the missing work.
    """
    if not is_digest(digest):
        raise RegistryError(src.name, f"copy {src_repo}:{digest}: copies go by digest, not by tag")
    stats = stats if stats is not None else {}
    if dst.manifest_head(dst_repo, digest) is not None:
        stats["manifests_present"] = stats.get("manifests_present", 0) + 1
        return digest
    body, media, _ = src.manifest_get(src_repo, digest)
    manifest = json.loads(body)
    children, blobs = referenced_descriptors(manifest)
    for child in children:
        copy_manifest_tree(src, src_repo, dst, dst_repo, child.digest, stats, chunked=chunked)
    for blob in blobs:
        outcome = copy_blob(src, src_repo, dst, dst_repo, blob, chunked=chunked)
        stats[f"blobs_{outcome}"] = stats.get(f"blobs_{outcome}", 0) + 1
    dst.manifest_put(dst_repo, digest, body, media)
    stats["manifests_copied"] = stats.get("manifests_copied", 0) + 1
    log.get().debug("manifest.copied", source=src.name, registry=dst.name, repo=dst_repo, digest=digest)
    return digest
