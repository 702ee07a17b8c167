"""pipeline.tools.registry against the real CNCF distribution registry (``docker-registry``).

Two registries on free 127.0.0.1 ports, started here and killed at teardown:
``A`` anonymous, deletes disabled; ``B`` htpasswd auth (file generated now, with a
random password), deletes enabled. An image (5 MiB + 1.5 MiB + 2-byte layers,
two platforms, an OCI index) is pushed into A with the client, then copied by
digest to B and to another repository inside A, and checked with raw HTTP.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.errors import EXIT_INFRA
from pipeline.retry import RetryPolicy
from pipeline.tools.registry import (
    ACCEPT,
    OCI_INDEX,
    OCI_MANIFEST,
    Credentials,
    Registry,
    RegistryError,
    copy_manifest_tree,
    digest_of,
)

pytestmark = pytest.mark.integration

USER = "pipeline"
POLICY = RetryPolicy(attempts=3, initial_seconds=0.05, max_seconds=0.2, max_retry_after_seconds=1)
MiB = 1 << 20


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path:
        return path
    if os.environ.get("CI") or os.environ.get("PIPELINE_REQUIRE_TOOLS"):
        pytest.fail(f"{tool} is missing: install it (apt-get install -y docker-registry apache2-utils)")
    pytest.skip(f"{tool} missing (CI fails here instead)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Served:
    host: str
    process: subprocess.Popen[bytes]
    log: Path
    auth: tuple[str, str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def raw(self, path: str, **kw: Any) -> httpx.Response:
        """A plain httpx GET, independent of the client under test."""
        return httpx.get(f"http://{self.host}{path}", auth=self.auth, timeout=30, **kw)


def _start(tmp: Path, name: str, *, password: str | None, delete: bool) -> Served:
    root = tmp / name
    root.mkdir()
    port = _free_port()
    config: dict[str, Any] = {
        "version": "0.1",
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(root / "data")}, "delete": {"enabled": delete}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16)},
    }
    if password is not None:
        htpasswd = root / "htpasswd"
        out = subprocess.run([_require("htpasswd"), "-niB", USER], input=password, capture_output=True, text=True,
                             check=True, timeout=60)
        htpasswd.write_text(out.stdout)
        config["auth"] = {"htpasswd": {"realm": "pipeline-test", "path": str(htpasswd)}}
    cfg = root / "config.yml"
    cfg.write_text(json.dumps(config, indent=2))  # JSON is YAML
    log_path = root / "registry.log"
    with log_path.open("wb") as out_f:
        process = subprocess.Popen([_require("docker-registry"), "serve", str(cfg)], stdout=out_f,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    served = Served(f"127.0.0.1:{port}", process, log_path, (USER, password) if password else None)
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"docker-registry {name} exited: {log_path.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://{served.host}/v2/", timeout=1).status_code in (200, 401):
                return served
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"docker-registry {name} did not answer on {served.host} within 30s")
        time.sleep(0.05)


def _stop(served: Served) -> None:
    if served.process.poll() is None:
        served.process.terminate()
        try:
            served.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            served.process.kill()
            served.process.wait(timeout=10)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, Served]]:
    _require("docker-registry")
    _require("htpasswd")
    tmp = tmp_path_factory.mktemp("registries")
    password = "pw-" + secrets.token_urlsafe(12)
    started: list[Served] = []
    try:
        started.append(_start(tmp, "a", password=None, delete=False))
        started.append(_start(tmp, "b", password=password, delete=True))
        yield started[0], started[1]
    finally:
        for served in started:
            _stop(served)


@pytest.fixture(scope="module")
def reg_a(servers: tuple[Served, Served]) -> Iterator[Registry]:
    with Registry(servers[0].host, name="reg-a", insecure=True, policy=POLICY) as reg:
        yield reg


@pytest.fixture(scope="module")
def reg_b(servers: tuple[Served, Served]) -> Iterator[Registry]:
    b = servers[1]
    assert b.auth
    with Registry(b.host, name="reg-b", insecure=True, policy=POLICY, credentials=Credentials(*b.auth)) as reg:
        yield reg


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


def _manifest(cfg: bytes, layers: list[bytes]) -> bytes:
    return json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest_of(cfg),
                   "size": len(cfg)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest_of(x), "size": len(x)}
                   for x in layers],
    }, separators=(",", ":")).encode()


@pytest.fixture(scope="module")
def pushed(reg_a: Registry) -> dict[str, Any]:
    """An OCI index over two image manifests, pushed into A/src/app by the client."""
    big, medium, tiny = os.urandom(5 * MiB), os.urandom(3 * MiB // 2), os.urandom(2)
    cfg_amd = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}).encode()
    cfg_arm = json.dumps({"architecture": "arm64", "os": "linux", "rootfs": {"type": "layers"}}).encode()
    repo = "src/app"
    reg_a.blob_upload(repo, digest_of(big), _chunks(big, MiB), len(big))  # monolithic, streamed
    reg_a.blob_upload(repo, digest_of(medium), _chunks(medium, 100_000), len(medium), chunked=True,
                      chunk_size=512 * 1024)
    reg_a.blob_upload(repo, digest_of(tiny), iter([tiny]), len(tiny), chunked=True)
    for cfg in (cfg_amd, cfg_arm):
        reg_a.blob_upload(repo, digest_of(cfg), cfg, len(cfg))
    amd = _manifest(cfg_amd, [big, tiny])
    arm = _manifest(cfg_arm, [medium, tiny])
    digests = [reg_a.manifest_put(repo, digest_of(m), m, OCI_MANIFEST) for m in (amd, arm)]
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": d, "size": len(m), "platform": {"os": "linux", "architecture": a}}
        for d, m, a in zip(digests, (amd, arm), ("amd64", "arm64"), strict=True)]}, separators=(",", ":")).encode()
    top = reg_a.manifest_put(repo, "v1", index, OCI_INDEX)
    return {"repo": repo, "index": top, "children": digests, "blobs": {digest_of(b): b for b in
            (big, medium, tiny, cfg_amd, cfg_arm)}}


def _raw_manifest_digest(served: Served, repo: str, reference: str) -> str:
    r = served.raw(f"/v2/{repo}/manifests/{reference}", headers={"Accept": ACCEPT})
    assert r.status_code == 200, r.text
    digest = "sha256:" + hashlib.sha256(r.content).hexdigest()
    assert r.headers["Docker-Content-Digest"] == digest
    return digest


# --------------------------------------------------------------------------- tests


def test_insecure_probe_finds_plain_http_quickly(servers: tuple[Served, Served]):
    start = time.monotonic()
    with Registry(servers[0].host, insecure=True, policy=RetryPolicy(attempts=1)) as reg:
        reg.ping()
        assert reg.base == f"http://{servers[0].host}"
    assert time.monotonic() - start < 3


def test_push_image_and_index(servers: tuple[Served, Served], reg_a: Registry, pushed: dict[str, Any]):
    a = servers[0]
    repo, top = pushed["repo"], pushed["index"]
    assert _raw_manifest_digest(a, repo, "v1") == top
    for child in pushed["children"]:
        assert _raw_manifest_digest(a, repo, child) == child
    for digest, data in pushed["blobs"].items():
        r = a.raw(f"/v2/{repo}/blobs/{digest}")
        assert r.status_code == 200 and r.content == data
    body, media, digest = reg_a.manifest_get(repo, "v1")
    assert (media, digest) == (OCI_INDEX, top)
    head = reg_a.manifest_head(repo, "v1")
    assert head is not None and head.digest == top and head.media_type == OCI_INDEX and head.size == len(body)
    assert reg_a.blob_get(repo, digest_of(b'{"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}'))


def test_copy_to_authenticated_registry_then_nothing_to_do(servers: tuple[Served, Served], reg_a: Registry,
                                                           reg_b: Registry, pushed: dict[str, Any]):
    a, b = servers
    top = pushed["index"]
    before = dict(reg_b.counters)
    stats: dict[str, int] = {}
    assert copy_manifest_tree(reg_a, pushed["repo"], reg_b, "release/app", top, stats) == top
    assert stats == {"blobs_uploaded": 5, "blobs_present": 1, "manifests_copied": 3}
    assert reg_b.counters["blob_uploads"] - before["blob_uploads"] == 5
    for digest in (top, *pushed["children"]):
        assert _raw_manifest_digest(b, "release/app", digest) == _raw_manifest_digest(a, pushed["repo"], digest)
    for digest in pushed["blobs"]:
        r = b.raw(f"/v2/release/app/blobs/{digest}")
        assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == digest.split(":")[1]
    # B requires auth: without credentials the raw API says 401
    assert httpx.get(f"http://{b.host}/v2/release/app/manifests/{top}").status_code == 401

    again: dict[str, int] = {}
    uploads = reg_b.counters["blob_uploads"]
    copy_manifest_tree(reg_a, pushed["repo"], reg_b, "release/app", top, again)
    assert again == {"manifests_present": 1}
    assert reg_b.counters["blob_uploads"] == uploads  # zero uploads the second time

    # inside B (htpasswd): the mount works with the same credentials
    mounts = reg_b.counters["blob_mounts"]
    stats = {}
    copy_manifest_tree(reg_b, "release/app", reg_b, "release/other", top, stats)
    assert stats == {"blobs_mounted": 5, "blobs_present": 1, "manifests_copied": 3}
    assert reg_b.counters["blob_mounts"] - mounts == 5 and reg_b.counters["blob_uploads"] == uploads
    assert _raw_manifest_digest(b, "release/other", top) == top


def test_copy_inside_one_registry_mounts(servers: tuple[Served, Served], reg_a: Registry, pushed: dict[str, Any]):
    top = pushed["index"]
    uploads, mounts = reg_a.counters["blob_uploads"], reg_a.counters["blob_mounts"]
    stats: dict[str, int] = {}
    copy_manifest_tree(reg_a, pushed["repo"], reg_a, "mirror/app", top, stats)
    assert stats == {"blobs_mounted": 5, "blobs_present": 1, "manifests_copied": 3}
    assert reg_a.counters["blob_mounts"] - mounts == 5
    assert reg_a.counters["blob_uploads"] == uploads  # cross-repo mount: no byte uploaded
    assert _raw_manifest_digest(servers[0], "mirror/app", top) == top

    uploads, mounts = reg_a.counters["blob_uploads"], reg_a.counters["blob_mounts"]
    assert copy_manifest_tree(reg_a, pushed["repo"], reg_a, "mirror/app", top, {}) == top
    assert (reg_a.counters["blob_uploads"], reg_a.counters["blob_mounts"]) == (uploads, mounts)


def test_wrong_password_is_a_clear_auth_failure(servers: tuple[Served, Served], pushed: dict[str, Any]):
    b = servers[1]
    assert b.auth
    wrong = b.auth[1] + "-wrong"
    reg = Registry(b.host, name="reg-b", insecure=True, policy=POLICY, credentials=Credentials(USER, wrong))
    with reg, pytest.raises(RegistryError) as info:
        reg.manifest_head("release/app", "v1")
    exc = info.value
    assert exc.exit_code == EXIT_INFRA and exc.status == 401 and not exc.temporary
    assert str(exc).startswith("registry reg-b: ") and "authentication failed" in str(exc)
    assert wrong not in str(exc) and b.auth[1] not in str(exc) and "\n" not in str(exc)

    anonymous = Registry(b.host, name="reg-b", insecure=True, policy=POLICY)
    with anonymous, pytest.raises(RegistryError, match="authentication required and no credentials configured"):
        anonymous.ping()


def test_tag_listing_with_pagination(servers: tuple[Served, Served]):
    b = servers[1]
    assert b.auth
    seen: list[str] = []

    class Counting(httpx.HTTPTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            seen.append(f"{request.method} {request.url.raw_path.decode()}")
            return super().handle_request(request)

    with Registry(b.host, name="reg-b", insecure=True, policy=POLICY, credentials=Credentials(*b.auth),
                  transport=Counting()) as reg:
        cfg, layer = b'{"architecture":"amd64","os":"linux"}', os.urandom(32)
        for blob in (cfg, layer):
            reg.blob_upload("paged/app", digest_of(blob), blob, len(blob))
        body = _manifest(cfg, [layer])
        tags = [f"t{i:02d}" for i in range(25)]
        for tag in tags:
            assert reg.manifest_put("paged/app", tag, body, OCI_MANIFEST) == digest_of(body)
        seen.clear()
        assert reg.tags("paged/app", page_size=10) == tags
        pages = [s for s in seen if "/tags/list" in s]
        first = httpx.get(f"http://{b.host}/v2/paged/app/tags/list?n=10", auth=b.auth)
        # distribution 2.8 answers the whole list (no Link); newer servers page: followed either way
        assert len(pages) == (math.ceil(25 / 10) if first.headers.get("Link") else 1)

        # the catalog does page with Link headers on distribution 2.8
        seen.clear()
        repos = reg.catalog(page_size=1)
        assert "paged/app" in repos and repos == sorted(repos) and len(set(repos)) == len(repos)
        assert len([s for s in seen if "_catalog" in s]) >= len(repos)


def test_delete_by_digest(servers: tuple[Served, Served], reg_a: Registry, reg_b: Registry):
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "note": secrets.token_hex(4)}).encode()
    layer = os.urandom(64)
    for reg in (reg_a, reg_b):
        for blob in (cfg, layer):
            reg.blob_upload("tmp/app", digest_of(blob), blob, len(blob))
    body = _manifest(cfg, [layer])
    digest = digest_of(body)
    # B allows deletes
    assert reg_b.manifest_put("tmp/app", "gone", body, OCI_MANIFEST) == digest
    reg_b.manifest_delete("tmp/app", digest)
    assert reg_b.manifest_head("tmp/app", digest) is None
    assert reg_b.manifest_head("tmp/app", "gone") is None
    assert servers[1].raw(f"/v2/tmp/app/manifests/{digest}", headers={"Accept": ACCEPT}).status_code == 404
    # A does not
    reg_a.manifest_put("tmp/app", "kept", body, OCI_MANIFEST)
    with pytest.raises(RegistryError, match="this registry does not allow deletes") as info:
        reg_a.manifest_delete("tmp/app", digest)
    assert info.value.status == 405 and info.value.exit_code == EXIT_INFRA and str(info.value).startswith(
        "registry reg-a: ")
    assert reg_a.manifest_head("tmp/app", "kept") is not None


def test_blob_stream_and_exists(reg_b: Registry, pushed: dict[str, Any], reg_a: Registry):
    big = max(pushed["blobs"], key=lambda d: len(pushed["blobs"][d]))
    assert reg_a.blob_exists(pushed["repo"], big)
    assert not reg_a.blob_exists(pushed["repo"], digest_of(b"never pushed"))
    with reg_a.blob_stream(pushed["repo"], big) as r:
        h = hashlib.sha256()
        for chunk in r.iter_bytes(MiB):
            h.update(chunk)
    assert "sha256:" + h.hexdigest() == big
