"""pipeline.tools.registry against an in-memory OCI registry behind an httpx MockTransport.

The fake speaks the distribution API closely enough to catch ordering, auth and
digest bugs: it enforces Basic or Bearer auth with scopes, checks that a
manifest's blobs and children exist before it is put, verifies upload digests
and Content-Range offsets, paginates with Link headers, and can be told to fail.
"""

from __future__ import annotations

import base64
import io
import json
import os
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog

from pipeline import log
from pipeline.errors import EXIT_INFRA
from pipeline.retry import RetryPolicy
from pipeline.tools import registry as R
from pipeline.tools.registry import (
    OCI_INDEX,
    OCI_MANIFEST,
    Credentials,
    Descriptor,
    NotFound,
    Registry,
    RegistryError,
    copy_blob,
    copy_manifest_tree,
    credentials_from_docker_config,
    credentials_from_env,
    digest_of,
    parse_challenge,
)
from tests.support.fakeregistry import (
    FAST,
    HOST,
    PASSWORD,
    REALM,
    USER,
    FakeRegistry,
    LazyTransport,
    _basic,
    _error,
    client,
)

CREDS = Credentials(USER, PASSWORD)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """tenacity sleeps through time.sleep: record instead of waiting."""
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", lambda s: slept.append(s))
    return slept


@pytest.fixture(autouse=True)
def logs() -> Iterator[io.StringIO]:
    """Capture every log line (debug included) and check no secret leaked into it."""
    saved, was_configured = structlog.get_config(), log._configured
    buf = io.StringIO()
    log.configure("json", stream=buf, level="debug")
    R._helper_cache.clear()
    try:
        yield buf
    finally:
        structlog.configure(**saved)
        log._configured = was_configured
    assert PASSWORD not in buf.getvalue()
    assert "tok-" not in buf.getvalue()


def events(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]


def assert_clean(exc: BaseException, *extra: str) -> None:
    text = str(exc) + repr(exc.args)
    assert PASSWORD not in text
    assert "tok-" not in text
    for secret in extra:
        assert secret not in text
    assert "\n" not in str(exc)


# --------------------------------------------------------------------------- images


def image(fake: FakeRegistry, repo: str, *, layers: tuple[bytes, ...] = (b"layer-one", b"layer-two"),
          arch: str = "amd64") -> tuple[str, bytes]:
    cfg = json.dumps({"architecture": arch, "os": "linux"}).encode()
    for blob in (cfg, *layers):
        fake.seed_blob(repo, blob)
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest_of(cfg),
                           "size": len(cfg)},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest_of(b),
                            "size": len(b)} for b in layers]}
    body = json.dumps(manifest).encode()
    fake.manifests.setdefault(repo, {})[digest_of(body)] = (body, OCI_MANIFEST)
    return digest_of(body), body


def index(fake: FakeRegistry, repo: str) -> tuple[str, list[str]]:
    children = [image(fake, repo, arch="amd64", layers=(b"amd64 layer", b"shared")),
                image(fake, repo, arch="arm64", layers=(b"arm64 layer", b"shared"))]
    idx = {"schemaVersion": 2, "mediaType": OCI_INDEX,
           "manifests": [{"mediaType": OCI_MANIFEST, "digest": d, "size": len(b),
                          "platform": {"os": "linux", "architecture": a}}
                         for (d, b), a in zip(children, ("amd64", "arm64"), strict=True)]}
    body = json.dumps(idx).encode()
    fake.manifests[repo][digest_of(body)] = (body, OCI_INDEX)
    fake.tag_map.setdefault(repo, {})["v1"] = digest_of(body)
    return digest_of(body), [d for d, _ in children]


# --------------------------------------------------------------------------- challenges and credentials


def test_parse_challenge_bearer_and_basic():
    scheme, params = parse_challenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
                                     'scope="repository:library/alpine:pull,push",error="insufficient_scope"')
    assert scheme == "bearer"
    assert params == {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                      "scope": "repository:library/alpine:pull,push", "error": "insufficient_scope"}
    assert parse_challenge('Basic realm="Registry Realm"') == ("basic", {"realm": "Registry Realm"})
    assert parse_challenge("") == ("", {})


def test_merge_scopes_keeps_order_and_dedups():
    assert R._merge_scopes("repository:a:pull", "repository:a:pull repository:b:pull") == \
        "repository:a:pull repository:b:pull"


def write_config(tmp_path: Path, data: dict[str, Any]) -> dict[str, str]:
    d = tmp_path / "docker"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(json.dumps(data))
    return {"DOCKER_CONFIG": str(d)}


def b64(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def test_docker_config_auths_base64_and_normalised_keys(tmp_path: Path):
    env = write_config(tmp_path, {"auths": {
        "ghcr.io": {"auth": b64("bob", PASSWORD)},
        "https://quay.example:8443/v1/": {"auth": b64("carol", PASSWORD)},
        "empty.example": {},
    }})
    creds = credentials_from_docker_config("ghcr.io", env)
    assert creds == Credentials("bob", PASSWORD)
    assert credentials_from_docker_config("quay.example:8443", env) == Credentials("carol", PASSWORD)
    assert credentials_from_docker_config("empty.example", env) is None
    assert credentials_from_docker_config("other.example", env) is None
    assert PASSWORD not in repr(creds)


def test_docker_config_missing_or_broken_is_anonymous(tmp_path: Path):
    assert credentials_from_docker_config("ghcr.io", {"DOCKER_CONFIG": str(tmp_path / "nope")}) is None
    (tmp_path / "config.json").write_text("{not json")
    assert credentials_from_docker_config("ghcr.io", {"DOCKER_CONFIG": str(tmp_path)}) is None
    (tmp_path / "home" / ".docker").mkdir(parents=True)
    auths = {"auths": {"h.io": {"auth": b64("u", "pw1")}}}
    (tmp_path / "home" / ".docker" / "config.json").write_text(json.dumps(auths))
    assert credentials_from_docker_config("h.io", {"HOME": str(tmp_path / "home")}) == Credentials("u", "pw1")


@pytest.mark.parametrize("host", ["docker.io", "index.docker.io", "registry-1.docker.io"])
@pytest.mark.parametrize("key", ["https://index.docker.io/v1/", "docker.io", "index.docker.io"])
def test_docker_hub_aliases(tmp_path: Path, host: str, key: str):
    env = write_config(tmp_path, {"auths": {key: {"auth": b64("hubuser", PASSWORD)}}})
    assert credentials_from_docker_config(host, env) == Credentials("hubuser", PASSWORD)
    assert Registry(host).host == "registry-1.docker.io"
    assert Registry(host).name == host


def test_identity_token_in_auths(tmp_path: Path):
    env = write_config(tmp_path, {"auths": {"acr.example": {"auth": b64("00000000-0000", ""),
                                                            "identitytoken": "refresh-" + PASSWORD}}})
    creds = credentials_from_docker_config("acr.example", env)
    assert creds is not None and creds.identity_token == "refresh-" + PASSWORD
    assert PASSWORD not in repr(creds)


@pytest.fixture
def helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``docker-credential-fake`` on PATH: answers from a JSON table, logs what it was asked."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    table = tmp_path / "helper-table.json"
    calls = tmp_path / "helper-calls.txt"
    script = bindir / "docker-credential-fake"
    script.write_text(f"""#!{sys.executable}
import json, sys
server = sys.stdin.read()
with open({str(calls)!r}, "a") as f:
    f.write(sys.argv[1] + " " + server + "\\n")
table = json.load(open({str(table)!r}))
if server in table:
    print(json.dumps(table[server]))
else:
    print("credentials not found in native keychain")
    sys.exit(1)
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    table.write_text("{}")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path


def helper_table(tmp: Path, table: dict[str, Any]) -> None:
    (tmp / "helper-table.json").write_text(json.dumps(table))


def helper_calls(tmp: Path) -> list[str]:
    path = tmp / "helper-calls.txt"
    return path.read_text().splitlines() if path.exists() else []


def test_cred_helpers_asks_the_helper_with_host_on_stdin(helper: Path):
    helper_table(helper, {"ghcr.io": {"ServerURL": "ghcr.io", "Username": "dave", "Secret": PASSWORD}})
    env = write_config(helper, {"credHelpers": {"ghcr.io": "fake"}, "auths": {"ghcr.io": {"auth": b64("x", "y")}}})
    assert credentials_from_docker_config("ghcr.io", env) == Credentials("dave", PASSWORD)
    assert helper_calls(helper) == ["get ghcr.io"]
    # asked again in the same process: served from the cache (proc.run would scrub the known secret)
    assert credentials_from_docker_config("ghcr.io", env) == Credentials("dave", PASSWORD)
    assert helper_calls(helper) == ["get ghcr.io"]


def test_creds_store_used_for_hub_with_the_hub_key(helper: Path):
    helper_table(helper, {"https://index.docker.io/v1/": {"Username": "hubby", "Secret": PASSWORD}})
    env = write_config(helper, {"credsStore": "fake", "auths": {"https://index.docker.io/v1/": {}}})
    assert credentials_from_docker_config("docker.io", env) == Credentials("hubby", PASSWORD)
    assert helper_calls(helper)[0] == "get https://index.docker.io/v1/"


def test_creds_store_without_entry_falls_back_to_auths(helper: Path):
    env = write_config(helper, {"credsStore": "fake", "auths": {"reg.example": {"auth": b64("erin", PASSWORD)}}})
    assert credentials_from_docker_config("reg.example", env) == Credentials("erin", PASSWORD)
    assert helper_calls(helper)[0] == "get reg.example"
    assert credentials_from_docker_config("unknown.example", env) is None


def test_helper_identity_token(helper: Path):
    helper_table(helper, {"acr.example": {"Username": "<token>", "Secret": "refresh-" + PASSWORD}})
    env = write_config(helper, {"credHelpers": {"acr.example": "fake"}})
    creds = credentials_from_docker_config("acr.example", env)
    assert creds is not None and creds.identity_token == "refresh-" + PASSWORD and creds.password == ""


def test_missing_helper_is_a_clear_tool_error(tmp_path: Path):
    from pipeline.errors import ToolError
    env = write_config(tmp_path, {"credHelpers": {"ghcr.io": "does-not-exist-xyz"}})
    with pytest.raises(ToolError, match="docker-credential-does-not-exist-xyz.*not installed"):
        credentials_from_docker_config("ghcr.io", env)


def test_credentials_from_env():
    assert credentials_from_env("r", "U", "P", {"U": "me", "P": PASSWORD}) == Credentials("me", PASSWORD)
    with pytest.raises(RegistryError, match="registry r: environment variable P is not set") as info:
        credentials_from_env("r", "U", "P", {"U": "me"})
    assert info.value.exit_code == EXIT_INFRA


# --------------------------------------------------------------------------- auth flows


def test_anonymous_registry_sends_no_authorization():
    fake = FakeRegistry()
    digest, body = image(fake, "app")
    reg = client(fake)
    assert reg.manifest_get("app", digest) == (body, OCI_MANIFEST, digest)
    assert fake.token_requests == []
    assert fake.requests("GET", "/v2/") and all(s == 200 for _, _, s in fake.log)


def test_basic_auth_when_the_challenge_says_basic():
    fake = FakeRegistry(auth="basic")
    digest, body = image(fake, "app")
    reg = client(fake, credentials=CREDS)
    reg.ping()
    assert reg.manifest_get("app", digest)[0] == body
    assert reg.blob_exists("app", digest_of(b"layer-one"))
    assert fake.token_requests == [] and reg.counters["token_fetches"] == 0
    # the challenge is learnt once from GET /v2/; afterwards every request carries Basic up front
    assert [s for m, p, s in fake.log if s == 401] == [401]
    assert fake.log[0][:2] == ("GET", "/v2/")


def test_basic_wrong_password_is_one_line_auth_failure_not_retried():
    fake = FakeRegistry(auth="basic")
    image(fake, "app")
    wrong = "wrong-" + PASSWORD
    reg = client(fake, credentials=Credentials(USER, wrong))
    with pytest.raises(RegistryError) as info:
        reg.manifest_head("app", "latest")
    exc = info.value
    assert str(exc).startswith("registry fake: ")
    assert "authentication failed" in str(exc) and "alice" in str(exc)
    assert exc.exit_code == EXIT_INFRA and exc.status == 401 and not exc.temporary
    assert_clean(exc, wrong)
    assert len(fake.requests("HEAD")) == 1  # a wrong password is not retried


def test_basic_required_without_credentials():
    fake = FakeRegistry(auth="basic")
    with pytest.raises(RegistryError, match="authentication required and no credentials configured"):
        client(fake).ping()


def test_bearer_token_request_has_service_scope_and_basic_auth():
    fake = FakeRegistry(auth="bearer")
    digest, body = image(fake, "team/app")
    reg = client(fake, credentials=CREDS)
    assert reg.manifest_get("team/app", digest)[0] == body
    params, auth = fake.token_requests[-1]
    assert ("service", HOST) in params and ("scope", "repository:team/app:pull") in params
    assert auth == _basic(USER, PASSWORD)
    sent = [h for m, u, h, b in fake.bodies]
    assert sent == []  # nothing with a body was sent
    assert PASSWORD not in str(fake.token_requests[-1][0])  # the password travels only in the Basic header


def test_bearer_tokens_are_cached_per_scope():
    fake = FakeRegistry(auth="bearer")
    d1, _ = image(fake, "one")
    d2, _ = image(fake, "two")
    reg = client(fake, credentials=CREDS)
    reg.manifest_get("one", d1)
    reg.manifest_head("one", d1)
    reg.blob_exists("one", digest_of(b"layer-one"))
    assert reg.counters["token_fetches"] == 1
    reg.manifest_get("two", d2)
    assert reg.counters["token_fetches"] == 2
    reg.manifest_get("one", d1)
    assert reg.counters["token_fetches"] == 2
    scopes = [[v for k, v in p if k == "scope"] for p, _ in fake.token_requests]
    assert scopes == [["repository:one:pull"], ["repository:two:pull"]]


def test_bearer_token_refreshed_when_expired():
    now = [1000.0]
    fake = FakeRegistry(auth="bearer", token_ttl=60)
    digest, _ = image(fake, "app")
    reg = client(fake, credentials=CREDS, clock=lambda: now[0])
    reg.manifest_head("app", digest)
    now[0] += 30
    reg.manifest_head("app", digest)
    assert reg.counters["token_fetches"] == 1
    now[0] += 31
    reg.manifest_head("app", digest)
    assert reg.counters["token_fetches"] == 2


def test_revoked_cached_token_is_replaced_once():
    fake = FakeRegistry(auth="bearer")
    digest, _ = image(fake, "app")
    reg = client(fake, credentials=CREDS)
    reg.manifest_head("app", digest)
    fake.tokens.clear()  # the registry forgets every token (restart, rotation)
    assert reg.manifest_head("app", digest) is not None
    assert reg.counters["token_fetches"] == 2


def test_anonymous_token_flow_without_credentials():
    fake = FakeRegistry(auth="bearer", anonymous_pull=True)
    digest, body = image(fake, "library/alpine")
    reg = client(fake)
    assert reg.manifest_get("library/alpine", digest)[0] == body
    params, auth = fake.token_requests[-1]
    assert auth is None and ("scope", "repository:library/alpine:pull") in params
    # anonymous push is refused with a message that says what is missing
    with pytest.raises(RegistryError, match="authentication required and no credentials configured"):
        reg.manifest_put("library/alpine", "v1", fake.manifests["library/alpine"][digest][0], OCI_MANIFEST)


def test_bearer_wrong_password_token_service_refuses():
    fake = FakeRegistry(auth="bearer")
    image(fake, "app")
    wrong = "wrong-" + PASSWORD
    reg = client(fake, credentials=Credentials(USER, wrong))
    with pytest.raises(RegistryError) as info:
        reg.manifest_head("app", "latest")
    assert "authentication failed for user 'alice'" in str(info.value)
    assert info.value.exit_code == EXIT_INFRA and not info.value.temporary
    assert_clean(info.value, wrong)
    assert len(fake.token_requests) == 1


def test_401_right_after_a_fresh_token_is_auth_failed():
    fake = FakeRegistry(auth="bearer")
    image(fake, "app")
    reg = client(fake, credentials=CREDS)
    # the registry refuses every token it is shown (e.g. token service and registry disagree on the key)
    fake.fail("HEAD", r"/manifests/", lambda req: fake._challenge(set(), "invalid_token"), times=5)
    with pytest.raises(RegistryError, match="authentication failed for user 'alice'") as info:
        reg.manifest_head("app", "latest")
    assert_clean(info.value)
    assert len(fake.requests("HEAD")) == 1 and reg.counters["token_fetches"] == 1


def test_insufficient_scope_says_access_denied():
    fake = FakeRegistry(auth="bearer")
    image(fake, "app")
    reg = client(fake, credentials=CREDS)
    fake.fail("HEAD", r"/manifests/", lambda req: fake._challenge(set(), "insufficient_scope"))
    with pytest.raises(RegistryError, match="access denied: user 'alice' may not repository:app:pull"):
        reg.manifest_head("app", "latest")


def test_challenge_asking_for_a_wider_scope_is_honoured():
    fake = FakeRegistry(auth="bearer")
    image(fake, "app")
    reg = client(fake, credentials=CREDS)
    wider = httpx.Response(401, headers={"WWW-Authenticate": f'Bearer realm="{REALM}",service="{HOST}",'
                                                             'scope="repository:app:pull repository:base:pull"'})
    fake.fail("GET", r"/tags/list", wider)
    assert reg.tags("app") == []
    scopes = [[v for k, v in p if k == "scope"] for p, _ in fake.token_requests]
    assert scopes[-1] == ["repository:app:pull", "repository:base:pull"]


def test_streamed_upload_is_authenticated_before_the_body_is_sent():
    fake = FakeRegistry(auth="bearer")
    reg = client(fake, credentials=CREDS)
    data = os.urandom(3000)
    reg.blob_upload("app", digest_of(data), iter([data[:1000], data[1000:]]), len(data))
    assert fake.blobs["app"][digest_of(data)] == data
    # the only 401 is the discovery GET /v2/; the body went out once, with a token
    assert [(m, p) for m, p, s in fake.log if s == 401] == [("GET", "/v2/")]
    (method, _, headers, body), = fake.bodies
    assert method == "PUT" and headers["Authorization"].startswith("Bearer ") and body == data


def test_token_rejected_mid_upload_restarts_the_copy():
    fake = FakeRegistry(auth="bearer")
    src_fake = FakeRegistry(host="src.test")
    data = os.urandom(5000)
    src_fake.seed_blob("app", data)
    src = Registry("src.test", name="src", policy=FAST, transport=LazyTransport(src_fake))
    dst = client(fake, credentials=CREDS)
    state = {"n": 0}

    def revoke() -> None:  # the first upload session: every token dies right after the POST
        state["n"] += 1
        if state["n"] == 1:
            fake.tokens.clear()

    fake.on_upload_start = revoke
    desc = Descriptor("application/octet-stream", digest_of(data), len(data))
    assert copy_blob(src, "app", dst, "app", desc) == "uploaded"
    assert fake.blobs["app"][desc.digest] == data
    assert len(src_fake.requests("GET", "/blobs/")) == 2  # the source was streamed again


# --------------------------------------------------------------------------- errors and retries


def test_not_found():
    fake = FakeRegistry()
    reg = client(fake)
    with pytest.raises(NotFound, match=r"registry fake: manifest app:v9: not found \(MANIFEST_UNKNOWN\)") as info:
        reg.manifest_get("app", "v9")
    assert info.value.status == 404 and info.value.exit_code == EXIT_INFRA
    assert reg.manifest_head("app", "v9") is None
    assert reg.blob_exists("app", digest_of(b"x")) is False
    assert reg.tags("never-pushed") == []
    with pytest.raises(NotFound):
        reg.blob_get("app", digest_of(b"x"))
    assert len(fake.requests("GET", "/manifests/v9")) == 1  # not retried


def test_429_retry_after_is_honoured(no_sleep: list[float], logs: io.StringIO):
    fake = FakeRegistry()
    digest, _ = image(fake, "app")
    fake.fail("HEAD", r"/manifests/", httpx.Response(429, headers={"Retry-After": "7"}))
    reg = client(fake)
    assert reg.manifest_head("app", digest) is not None
    assert no_sleep == [7.0]
    retried = [e for e in events(logs) if e["event"] == "request.retried"]
    assert retried and retried[0]["wait_seconds"] == 7.0 and "rate limited" in retried[0]["error"]


def test_retry_after_is_capped_by_the_policy(no_sleep: list[float]):
    fake = FakeRegistry()
    digest, _ = image(fake, "app")
    fake.fail("HEAD", r"/manifests/", httpx.Response(429, headers={"Retry-After": "3600"}))
    client(fake, policy=RetryPolicy(attempts=2, max_retry_after_seconds=5)).manifest_head("app", digest)
    assert no_sleep == [5.0]


def test_5xx_is_retried_then_gives_up_naming_the_registry(no_sleep: list[float]):
    fake = FakeRegistry()
    fake.fail("GET", r"/manifests/", _error(503, "UNAVAILABLE"), times=10)
    fake.fail("GET", r"^/v2/$", _error(502, "BAD_GATEWAY"))  # even the first ping may hiccup
    reg = client(fake)
    with pytest.raises(RegistryError) as info:
        reg.manifest_get("app", "v1")
    msg = str(info.value)
    assert msg.startswith("registry fake: ") and "server error 503" in msg and "gave up after 3 attempts" in msg
    assert info.value.exit_code == EXIT_INFRA and info.value.temporary is False
    assert len(fake.requests("GET", "/manifests/")) == 2  # attempt 1 failed at /v2/, then 2 tries
    assert len(no_sleep) == 2


def test_5xx_then_success():
    fake = FakeRegistry()
    digest, body = image(fake, "app")
    fake.fail("GET", r"/manifests/", _error(500, "INTERNAL"), times=2)
    assert client(fake).manifest_get("app", digest)[0] == body


def test_connection_refused_is_temporary_and_names_the_host(no_sleep: list[float]):
    calls = []

    def refuse(request: httpx.Request) -> httpx.Response:
        calls.append(request.url)
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    with pytest.raises(RegistryError) as info:
        client(refuse).ping()
    msg = str(info.value)
    assert f"cannot connect to {HOST}" in msg and "Connection refused" in msg and "gave up after 3 attempts" in msg
    assert len(calls) == 3 and len(no_sleep) == 2


def test_real_connection_refused_on_localhost_is_fast():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    reg = Registry(f"127.0.0.1:{port}", insecure=True, policy=RetryPolicy(attempts=1))
    start = time.monotonic()
    with pytest.raises(RegistryError, match=f"cannot connect to 127.0.0.1:{port}"):
        reg.ping()
    assert time.monotonic() - start < 5
    assert reg._scheme is None  # nothing learnt from a registry that was not there


def test_insecure_probe_falls_back_to_http():
    fake = FakeRegistry()
    digest, _ = image(fake, "app")
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.scheme)
        if request.url.scheme == "https":
            raise httpx.ConnectError("[SSL: WRONG_VERSION_NUMBER] wrong version number", request=request)
        return fake(request)

    reg = client(handler, insecure=True)
    assert reg.manifest_head("app", digest) is not None
    assert reg.base == f"http://{HOST}" and seen == ["https", "http", "http"]


def test_timeouts_and_resets_are_temporary():
    def reset(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadError("connection reset by peer", request=request)

    with pytest.raises(RegistryError, match=r"connection to reg.test failed \(ReadError") as info:
        client(reset, policy=RetryPolicy(attempts=1)).ping()
    assert "gave up after 1 attempt" in str(info.value)


# --------------------------------------------------------------------------- manifests


def test_manifest_put_get_head_by_tag_and_digest():
    fake = FakeRegistry(auth="bearer")
    reg = client(fake, credentials=CREDS)
    cfg, layer = b"{}", b"layer"
    for blob in (cfg, layer):
        reg.blob_upload("app", digest_of(blob), blob, len(blob))
    body = json.dumps({"schemaVersion": 2, "config": {"mediaType": "x", "digest": digest_of(cfg), "size": 2},
                       "layers": [{"mediaType": "y", "digest": digest_of(layer), "size": 5}]}).encode()
    assert reg.manifest_put("app", "v1", body, OCI_MANIFEST) == digest_of(body)
    assert reg.manifest_get("app", "v1") == (body, OCI_MANIFEST, digest_of(body))  # no mediaType in body: header
    assert reg.manifest_head("app", "v1") == Descriptor(OCI_MANIFEST, digest_of(body), len(body))
    assert reg.manifest_head("app", digest_of(body)) == Descriptor(OCI_MANIFEST, digest_of(body), len(body))
    assert reg.counters["manifest_puts"] == 1
    put_scopes = {v for p, _ in fake.token_requests for k, v in p if k == "scope"}
    assert "repository:app:pull,push" in put_scopes


def test_manifest_digest_mismatch_is_detected():
    fake = FakeRegistry()
    digest, body = image(fake, "app")
    tampered = body.replace(b"tar+gzip", b"tar+zstd")
    assert tampered != body
    fake.manifests["app"][digest] = (tampered, OCI_MANIFEST)
    reg = client(fake)
    with pytest.raises(RegistryError, match="content does not match its digest"):
        reg.manifest_get("app", digest)
    # by tag: Docker-Content-Digest is only trusted when the bytes hash to it
    fake.tag_map["app"] = {"v1": digest}
    with pytest.raises(RegistryError, match=f"the registry says {digest} but the content hashes to"):
        reg.manifest_get("app", "v1")


def test_manifest_head_by_digest_rejects_another_digest():
    fake = FakeRegistry()
    digest, _ = image(fake, "app")
    other = digest_of(b"other")
    fake.fail("HEAD", r"/manifests/", httpx.Response(200, headers={"Docker-Content-Digest": other}))
    with pytest.raises(RegistryError, match=f"answered with digest {other}"):
        client(fake).manifest_head("app", digest)


def test_manifest_head_without_digest_header_falls_back_to_get():
    fake = FakeRegistry()
    digest, body = image(fake, "app")
    fake.tag_map["app"] = {"v1": digest}
    fake.fail("HEAD", r"/manifests/v1", httpx.Response(200, headers={"Content-Type": OCI_MANIFEST}))
    assert client(fake).manifest_head("app", "v1") == Descriptor(OCI_MANIFEST, digest, len(body))


def test_manifest_put_checks_the_registrys_digest_and_the_reference():
    fake = FakeRegistry()
    _, body = image(fake, "app")
    reg = client(fake)
    with pytest.raises(RegistryError, match="the body hashes to"):
        reg.manifest_put("app", digest_of(b"something else"), body, OCI_MANIFEST)
    fake.fail("PUT", r"/manifests/", httpx.Response(201, headers={"Docker-Content-Digest": digest_of(b"x")}))
    with pytest.raises(RegistryError, match="the registry stored sha256:"):
        reg.manifest_put("app", "v1", body, OCI_MANIFEST)


def test_manifest_delete():
    fake = FakeRegistry()
    digest, _ = image(fake, "app")
    reg = client(fake)
    reg.manifest_delete("app", digest)
    assert reg.manifest_head("app", digest) is None
    with pytest.raises(RegistryError, match="deleting needs a digest"):
        reg.manifest_delete("app", "latest")
    fake.delete = False
    digest, _ = image(fake, "app")
    with pytest.raises(RegistryError, match="this registry does not allow deletes") as info:
        reg.manifest_delete("app", digest)
    assert info.value.status == 405 and not info.value.temporary


def test_oversized_manifest_is_refused():
    fake = FakeRegistry()
    big = httpx.Response(200, headers={"Content-Type": OCI_MANIFEST}, content=b" " * (R.MAX_MANIFEST_BYTES + 1))
    fake.fail("GET", r"/manifests/", big)
    with pytest.raises(RegistryError, match="larger than"):
        client(fake).manifest_get("app", "v1")


# --------------------------------------------------------------------------- blobs


def test_blob_get_checks_digest():
    fake = FakeRegistry()
    d = fake.seed_blob("app", b"config")
    reg = client(fake)
    assert reg.blob_get("app", d) == b"config"
    fake.blobs["app"][d] = b"tampered"
    with pytest.raises(RegistryError, match="content does not match its digest"):
        reg.blob_get("app", d)


def test_monolithic_upload_streams_the_iterator():
    produced: list[int] = []
    seen_at: list[int] = []

    def chunks() -> Iterator[bytes]:
        for i in range(8):
            produced.append(i)
            yield bytes([i]) * 1000

    fake = FakeRegistry()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "PUT" and "/uploads/" in request.url.path:
            assert request.headers["Content-Length"] == "8000"
            assert "Transfer-Encoding" not in request.headers
            body = b""
            for part in request.stream:  # type: ignore[union-attr]
                seen_at.append(len(produced))
                body += part
            request._content = body
        return fake(request)

    data = b"".join(bytes([i]) * 1000 for i in range(8))
    reg = client(handler)
    reg.blob_upload("app", digest_of(data), chunks(), len(data))
    assert fake.blobs["app"][digest_of(data)] == data
    assert seen_at == [1, 2, 3, 4, 5, 6, 7, 8]  # one chunk produced per chunk sent: never all in memory
    assert reg.counters["blob_uploads"] == 1


def test_chunked_upload_content_range_sequence():
    fake = FakeRegistry(auth="basic")
    reg = client(fake, credentials=CREDS)
    data = os.urandom(2 * R.CHUNK + R.CHUNK // 2)
    source = (data[i:i + 300_000] for i in range(0, len(data), 300_000))
    reg.blob_upload("app", digest_of(data), source, len(data), chunked=True)
    assert fake.blobs["app"][digest_of(data)] == data
    patches = [(h["Content-Range"], h["Content-Length"], len(b)) for m, _, h, b in fake.bodies if m == "PATCH"]
    assert patches == [("0-1048575", "1048576", 1 << 20), ("1048576-2097151", "1048576", 1 << 20),
                       ("2097152-2621439", "524288", 1 << 19)]
    ((_, url, _, body),) = [x for x in fake.bodies if x[0] == "PUT"]
    assert f"digest={digest_of(data)}" in url and "_state=s2621440" in url and body == b""
    assert all(h["Content-Type"] == "application/octet-stream" for m, _, h, b in fake.bodies if m == "PATCH")


def test_chunked_upload_honours_min_chunk_length():
    fake = FakeRegistry(chunk_min=4096)
    data = os.urandom(10_000)
    client(fake).blob_upload("app", digest_of(data), iter([data]), len(data), chunked=True, chunk_size=1000)
    ranges = [h["Content-Range"] for m, _, h, b in fake.bodies if m == "PATCH"]
    assert ranges == ["0-4095", "4096-8191", "8192-9999"]


def test_upload_size_mismatch_is_a_clear_error():
    fake = FakeRegistry()
    with pytest.raises(RegistryError, match="the blob is 3 bytes, its descriptor says 5"):
        client(fake).blob_upload("app", digest_of(b"abc"), iter([b"abc"]), 5, chunked=True)
    with pytest.raises(RegistryError, match="more than 6 bytes, its descriptor says 5"):
        client(fake).blob_upload("app", digest_of(b"abcdef"), b"abcdef", 5)


def test_upload_digest_rejected_by_the_registry():
    fake = FakeRegistry()
    with pytest.raises(RegistryError, match="400 DIGEST_INVALID"):
        client(fake).blob_upload("app", digest_of(b"other"), b"abc", 3)


def test_mount_201_inside_one_registry():
    fake = FakeRegistry(auth="bearer")
    d = fake.seed_blob("base", b"shared layer")
    reg = client(fake, credentials=CREDS)
    assert reg.blob_mount("app", d, "base") is True
    assert fake.blobs["app"][d] == b"shared layer" and reg.counters["blob_mounts"] == 1
    params, _ = fake.token_requests[-1]
    assert [v for k, v in params if k == "scope"] == ["repository:app:pull,push", "repository:base:pull"]


def test_mount_202_cancels_the_opened_session_and_copy_uploads():
    fake = FakeRegistry(mount=False)
    d = fake.seed_blob("base", b"shared layer")
    reg = client(fake)
    assert reg.blob_mount("app", d, "base") is False
    assert fake.uploads == {} and fake.requests("DELETE", "/blobs/uploads/")
    desc = Descriptor("x", d, len(b"shared layer"))
    assert copy_blob(reg, "base", reg, "app", desc) == "uploaded"
    assert copy_blob(reg, "base", reg, "app", desc) == "present"
    assert reg.counters == {**reg.counters, "blob_uploads": 1, "blob_mounts": 0, "blob_skips": 1}


def test_copy_blob_detects_a_corrupt_source():
    src_fake, dst_fake = FakeRegistry(host="src.test"), FakeRegistry()
    d = src_fake.seed_blob("app", b"good bytes")
    src_fake.blobs["app"][d] = b"evil bytes"
    src = Registry("src.test", name="src", policy=FAST, transport=LazyTransport(src_fake))
    with pytest.raises(RegistryError, match="registry src: blob app@sha256:.*content does not match its digest"):
        copy_blob(src, "app", client(dst_fake), "app", Descriptor("x", d, 10))
    assert d not in dst_fake.blobs.get("app", {})


# --------------------------------------------------------------------------- pagination


def test_tags_follow_link_pagination_across_three_pages():
    fake = FakeRegistry(auth="bearer")
    digest, _ = image(fake, "app")
    fake.tag_map["app"] = {f"t{i:02d}": digest for i in reversed(range(25))}
    reg = client(fake, credentials=CREDS)
    assert reg.tags("app", page_size=10) == [f"t{i:02d}" for i in range(25)]
    pages = [p for m, p, s in fake.requests("GET", "/tags/list") if s == 200]
    assert pages == ["/v2/app/tags/list?n=10", "/v2/app/tags/list?n=10&last=t09", "/v2/app/tags/list?n=10&last=t19"]
    assert reg.counters["token_fetches"] == 1


def test_tags_are_sorted_whatever_the_registry_order():
    fake = FakeRegistry()
    fake.fail("GET", r"/tags/list", httpx.Response(200, json={"name": "app", "tags": ["b", "a", "c", "a"]}))
    assert client(fake).tags("app") == ["a", "b", "c"]


def test_catalog_paginates():
    fake = FakeRegistry(auth="bearer")
    for name in ("a", "b", "c", "d", "e"):
        fake.seed_blob(name, b"x")
    reg = client(fake, credentials=CREDS)
    assert reg.catalog(page_size=2) == ["a", "b", "c", "d", "e"]
    assert len(fake.requests("GET", "_catalog")) == 3
    assert [v for k, v in fake.token_requests[-1][0] if k == "scope"] == ["registry:catalog:*"]


def test_pagination_survives_a_transient_error_and_a_link_loop(no_sleep: list[float]):
    fake = FakeRegistry()
    digest, _ = image(fake, "app")
    fake.tag_map["app"] = {f"t{i}": digest for i in range(5)}
    fake.fail("GET", r"last=t1", _error(503, "UNAVAILABLE"))
    assert client(fake).tags("app", page_size=2) == ["t0", "t1", "t2", "t3", "t4"]
    loop = httpx.Response(200, json={"tags": ["x"]}, headers={"Link": '</v2/app/tags/list?n=1>; rel="next"'})
    fake.fail("GET", r"/tags/list", loop, times=3)
    assert client(fake).tags("app", page_size=1) == ["x"]  # a Link back to a page already read ends the walk
    assert len(fake.requests("GET", "/tags/list?n=1")) == 1


# --------------------------------------------------------------------------- copy trees


def test_copy_manifest_tree_between_registries_children_first_and_idempotent():
    src_fake = FakeRegistry(host="src.test")
    dst_fake = FakeRegistry(auth="bearer")
    top, children = index(src_fake, "app")
    src = Registry("src.test", name="src", policy=FAST, transport=LazyTransport(src_fake))
    dst = client(dst_fake, credentials=CREDS)
    stats: dict[str, int] = {}
    assert copy_manifest_tree(src, "app", dst, "release/app", top, stats) == top
    # 2 configs + amd64 + arm64 + shared layer (shared is present the second time)
    assert stats == {"blobs_uploaded": 5, "blobs_present": 1, "manifests_copied": 3}
    assert dst_fake.manifests["release/app"][top][0] == src_fake.manifests["app"][top][0]
    puts = [p for m, p, s in dst_fake.log if m == "PUT" and "/manifests/" in p]
    assert puts == [f"/v2/release/app/manifests/{d}" for d in (*children, top)]
    assert dst_fake.tag_map.get("release/app", {}) == {}  # nothing tagged

    again: dict[str, int] = {}
    before = dict(dst.counters)
    copy_manifest_tree(src, "app", dst, "release/app", top, again)
    assert again == {"manifests_present": 1}
    assert dst.counters["blob_uploads"] == before["blob_uploads"]


def test_copy_manifest_tree_inside_one_registry_mounts():
    fake = FakeRegistry(auth="bearer")
    top, _ = index(fake, "app")
    reg = client(fake, credentials=CREDS)
    stats: dict[str, int] = {}
    copy_manifest_tree(reg, "app", reg, "mirror/app", top, stats)
    assert stats == {"blobs_mounted": 5, "blobs_present": 1, "manifests_copied": 3}
    assert reg.counters["blob_uploads"] == 0 and reg.counters["blob_mounts"] == 5


def test_copy_manifest_tree_resumes_a_partial_copy():
    src_fake, dst_fake = FakeRegistry(host="src.test"), FakeRegistry()
    top, children = index(src_fake, "app")
    src = Registry("src.test", name="src", policy=FAST, transport=LazyTransport(src_fake))
    dst = client(dst_fake)
    copy_manifest_tree(src, "app", dst, "app", children[0])  # the amd64 image made it last time
    stats: dict[str, int] = {}
    copy_manifest_tree(src, "app", dst, "app", top, stats)
    assert stats == {"manifests_present": 1, "blobs_uploaded": 2, "blobs_present": 1, "manifests_copied": 2}


def test_copy_manifest_tree_needs_a_digest():
    reg = client(FakeRegistry())
    with pytest.raises(RegistryError, match="copies go by digest"):
        copy_manifest_tree(reg, "app", reg, "b", "latest")


def test_foreign_layers_are_not_copied():
    children, blobs = R.referenced_descriptors({
        "config": {"digest": digest_of(b"c"), "size": 1},
        "layers": [{"digest": digest_of(b"l"), "size": 1},
                   {"digest": digest_of(b"f"), "size": 1, "urls": ["https://example.com/f"]}]})
    assert children == [] and [b.digest for b in blobs] == [digest_of(b"c"), digest_of(b"l")]


# --------------------------------------------------------------------------- secrets


def test_no_secret_in_errors_or_logs(logs: io.StringIO, no_sleep: list[float]):
    fake = FakeRegistry(auth="bearer")
    digest, _ = image(fake, "app")
    reg = client(fake, credentials=CREDS)
    reg.manifest_head("app", digest)
    token = fake.issued[-1]
    # a registry that echoes the token and password back in its error body
    echo = httpx.Response(503, json={"errors": [{"code": "UNAVAILABLE",
                                                 "message": f"bad {token} for {PASSWORD}"}]})
    fake.fail("GET", r"/manifests/", echo, times=3)
    with pytest.raises(RegistryError) as info:
        reg.manifest_get("app", digest)
    assert_clean(info.value, token)
    assert "***" in str(info.value)
    out = logs.getvalue()
    assert "request.retried" in out and token not in out and PASSWORD not in out
    assert PASSWORD not in repr(CREDS) and PASSWORD not in repr(reg)


def test_registry_error_is_one_line_infra_error():
    exc = RegistryError("ghcr", "first\nsecond", status=500, temporary=True, retry_after=2)
    assert str(exc) == "registry ghcr: first second" and exc.exit_code == EXIT_INFRA
    final = exc.gave_up(5)
    assert str(final) == "registry ghcr: first second (gave up after 5 attempts)" and not final.temporary
    assert isinstance(NotFound("r", "x").gave_up(1), NotFound)


def _referrers_client(handler):
    from pipeline.retry import RetryPolicy
    from pipeline.tools.registry import Registry

    def route(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v2/":
            return httpx.Response(200)
        return handler(request)

    return Registry("reg.test", policy=RetryPolicy(attempts=2, initial_seconds=0.001, max_seconds=0.001),
                    transport=httpx.MockTransport(route))


def test_referrers_returns_the_index_or_none_when_the_api_is_absent():
    index = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}'
    with _referrers_client(lambda r: httpx.Response(
            200, content=index, headers={"Content-Type": "application/vnd.oci.image.index.v1+json"})) as reg:
        assert reg.referrers("app", "sha256:" + "a" * 64) == index
    for status in (400, 404, 405):
        with _referrers_client(lambda r, s=status: httpx.Response(s, json={"errors": []})) as reg:
            assert reg.referrers("app", "sha256:" + "a" * 64) is None


def test_referrers_server_errors_are_errors_not_an_empty_answer():
    calls = []

    def fail(request):
        calls.append(request.url.path)
        return httpx.Response(503, json={"errors": [{"code": "UNAVAILABLE", "message": "down"}]})

    with _referrers_client(fail) as reg, pytest.raises(RegistryError) as exc:
        reg.referrers("app", "sha256:" + "a" * 64)
    assert len(calls) == 2 and "reg.test" in str(exc.value)


def test_a_manifest_the_registry_misread_is_put_again():
    """400 DIGEST_INVALID for a body that hashes right is what two writers of one manifest get from
    distribution's filesystem driver: a storage race, tried again under the policy."""
    fake = FakeRegistry()
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}).encode()
    fake.fail("PUT", r"/manifests/", _error(400, "DIGEST_INVALID"))
    with client(fake) as reg:
        assert reg.manifest_put("app", "v1", body, OCI_MANIFEST) == digest_of(body)
    assert [r for r in fake.requests("PUT") if "/manifests/" in r[1]][-1][2] == 201
